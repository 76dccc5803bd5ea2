"""Manifest updates (HQ key rotation) reach nodes as items; only newer root-signed ones win."""

from __future__ import annotations

import dataclasses
import os
import secrets
from pathlib import Path

import pytest

from fieldsync import hq as hq_module
from fieldsync.errors import InputRefused
from fieldsync.node import Node
from fieldsync_protocol import crypto, membership
from fieldsync_protocol.bundle import BundleWriter

PASSPHRASE = "manifest update test"


def _bundle(path: Path, network_key: bytes, network_id: bytes, items: list[bytes]) -> Path:
    writer = BundleWriter(network_key, network_id, os.urandom(16))
    path.write_bytes(b"".join(writer.add(item) for item in items) + writer.finish())
    return path


@pytest.fixture
def joined(tmp_path: Path) -> tuple[hq_module.HQ, Node, hq_module.HqSecrets]:
    manifest = hq_module.create_network(tmp_path / "hq", "rotation", PASSPHRASE, "interactive")
    assert manifest.epoch == 1
    headquarters = hq_module.HQ(tmp_path / "hq", passphrase=PASSPHRASE)
    node = Node(tmp_path / "a")
    request = node.init("ana", PASSPHRASE, "interactive")
    node.join(headquarters.enroll(request.read_text(), PASSPHRASE)[0])
    return headquarters, node, headquarters.unlock(PASSPHRASE)


def test_newer_manifest_is_adopted_and_new_reports_use_the_new_hq_key(
    joined: tuple[hq_module.HQ, Node, hq_module.HqSecrets], tmp_path: Path
) -> None:
    headquarters, node, keys = joined
    old = headquarters.manifest()
    new_secret = secrets.token_bytes(32)
    rotated = dataclasses.replace(
        old, epoch=2, hq_keys={**old.hq_keys, 2: crypto.box_public_key(new_secret)}
    )
    item = membership.sign_manifest(rotated, keys.root_seed)
    result = node.import_bundle(
        _bundle(tmp_path / "m.bundle", keys.network_key, old.network_id, [item])
    )
    assert result.counts.new == 1
    assert node.membership().manifest.epoch == 2
    assert node.membership().manifest.current_hq_key_id == 2

    # A replayed older manifest never rolls the keys back.
    old_item = headquarters.manifest_item()
    node.import_bundle(
        _bundle(tmp_path / "old.bundle", keys.network_key, old.network_id, [old_item])
    )
    assert node.membership().manifest.epoch == 2
    node.close()


def test_manifest_signed_by_another_root_is_refused(
    joined: tuple[hq_module.HQ, Node, hq_module.HqSecrets], tmp_path: Path
) -> None:
    headquarters, node, keys = joined
    old = headquarters.manifest()
    rogue_root = secrets.token_bytes(32)
    forged = dataclasses.replace(old, epoch=9, root_key=crypto.signing_public_key(rogue_root))
    item = membership.sign_manifest(forged, rogue_root)
    before = node.status()["items_total"]
    with pytest.raises(InputRefused, match="different root"):
        node.import_bundle(_bundle(tmp_path / "f.bundle", keys.network_key, old.network_id, [item]))
    assert node.membership().manifest.epoch == 1
    assert node.status()["items_total"] == before
    node.close()
