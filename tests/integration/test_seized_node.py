"""Forensics on a seized author node after delivery (issue #11 "Must show").

The author node A keeps its home on an ext4 image the test formats and loop-mounts; the log
its daemon writes (stderr, at the default level) is on the same disk. Everything runs as a
user would run it, in real processes: ``network create``, ``init``/``hq enroll``/``join``,
``report add``, a relay B and A each under ``fieldsync run`` syncing over loopback TCP
(B → bundle → ``hq ingest`` → ``hq receipts`` → bundle → B → sync → A purges). Then the
image is unmounted and scanned byte for byte, every block including the free ones, and so
is every file of A's home (the needles in every encoding ``test_offline_forensics`` uses).

What must not be found:

* a peer's address (B's ``127.0.0.1:PORT``) or a peer's node key, in the home, the log or
  the disk (``test_no_peer_address_or_peer_key_on_the_seized_disk``);
* a report id or the author's name, in the home or the disk — needs the sealed outbox and
  the removal of ``request.txt`` (branch ``authors``);
* the id or bytes of an item purged after delivery, in the free blocks of the disk — needs
  the encrypted store (branch ``cryptoerase``; today truncated WAL pages keep them);
* after ``fieldsync wipe``: nothing but ciphertext, and nothing the keys left on the disk
  open; positive control: before the wipe the same reading, given the passphrase, finds
  the ids (``cryptoerase`` and ``authors``).

The static peer list is the user's own configuration; it lives off the image, like the
HQ directory and the bundles (a USB stick).
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fieldsync.node import Node
from fieldsync_protocol import crypto
from fieldsync_protocol.keytext import KeyKind, key_to_text
from tests.fieldsync.offline_support import files_under
from tests.integration.field_support import (
    PASSPHRASE,
    Deployment,
    clean_env,
    cli,
    fieldsync_command,
    status,
    wait_for,
)
from tests.integration.sync_support import ServerProcess, start_server
from tests.integration.test_offline_forensics import Needles, _envelopes, find

pytestmark = pytest.mark.loopmount

AUTHOR = "Amina Ouedraogo-Seized"
IMAGE_MB = 64
REPORTS = 3
#: In every narrative: only HQ may ever read it.
MARKER = f"MARKER-{secrets.token_hex(12)}"
SYNC_TIMEOUT = 30.0


@dataclass
class Seized:
    """A's disk after delivery, and what must not be on it."""

    root: Path
    image: Path
    mount: Path
    home: Path
    log: Path
    deployment: Deployment
    report_ids: list[str]
    #: Needles by what they would give away.
    peer: Needles = field(default_factory=Needles)
    authorship: Needles = field(default_factory=Needles)
    purged: Needles = field(default_factory=Needles)
    #: A's own node key: what B's log must not show of A.
    author_node: Needles = field(default_factory=Needles)
    #: Item ids (hex) A held before the purge, for the positive control.
    purged_hex: list[str] = field(default_factory=list)

    def mounted(self) -> bool:
        return os.path.ismount(self.mount)

    def unmount(self) -> None:
        if self.mounted():
            subprocess.run(["umount", str(self.mount)], check=True, timeout=60)

    def remount(self) -> None:
        if not self.mounted():
            subprocess.run(
                ["mount", "-o", "loop", str(self.image), str(self.mount)], check=True, timeout=60
            )

    def scan_disk(self, needles: Needles) -> list[str]:
        """Raw bytes of the whole image, unmounted (every block, the free ones too)."""
        self.unmount()
        data = self.image.read_bytes()
        return [f"{name} in the raw image" for name, n in needles.named.items() if n in data]

    def scan_home(self, needles: Needles) -> list[str]:
        self.remount()
        return find(needles, files_under(self.home, self.log.parent))


def _report_id_needles(needles: Needles, report_id: str) -> None:
    needles.add_text(f"report id {report_id}", report_id)
    raw = uuid.UUID(report_id).bytes
    needles.add(f"report id {report_id} (16 bytes)", raw)
    needles.add_text(f"report id {report_id} (hex)", raw.hex())


def _key_needles(needles: Needles, name: str, key: bytes, kind: KeyKind) -> None:
    needles.add(f"{name} (32 bytes)", key)
    needles.add_text(f"{name} (hex)", key.hex())
    needles.add_text(f"{name} (key text)", key_to_text(kind, key))
    needles.add(f"{name} (base64)", base64.b64encode(key)[:40])


def _write_config(path: Path, peer: str) -> None:
    path.write_text(
        f'[peers]\nstatic = ["{peer}"]\n[web]\nlisten = ""\n'
        "[sync]\ninterval_seconds = 1.0\nbackoff_initial = 0.5\nbackoff_max = 1.0\n",
        encoding="utf-8",
    )


def _sync_once(seized_root: Path, home: Path, relay: Path, log: Path, until: str) -> str:
    """B and A each under ``fieldsync run`` (A dials B) until ``until`` holds; B's address."""
    server_b = start_server(relay, log=seized_root / "b-run.log")
    config = seized_root / "a.toml"
    _write_config(config, server_b.tcp_target)
    server_a: ServerProcess | None = None
    try:
        server_a = start_server(home, log=log, extra_args=["--config", str(config)])
        conditions = {
            "B holds A's reports": lambda: status(relay)["items"]["envelope"] == REPORTS,
            "A purged its delivered reports": lambda: (
                status(home)["items"]["envelope"] == 0
                and status(home)["outbox"]["sealed"] == 0  # nothing of its own waits for HQ
            ),
        }
        wait_for(conditions[until], SYNC_TIMEOUT, until, explain=lambda: log.read_text())
    finally:
        if server_a is not None:
            assert server_a.stop() == 0, server_a.log_text()
        assert server_b.stop() == 0, server_b.log_text()
    return server_b.tcp_target


def _node_key(home: Path) -> bytes:
    node = Node(home)
    try:
        return crypto.box_public_key(node.node_secret())
    finally:
        node.close()


@pytest.fixture(scope="module")
def seized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seized]:
    root = tmp_path_factory.mktemp("seized")
    image, mount = root / "disk.img", root / "disk"
    mount.mkdir()
    with image.open("wb") as disk:
        disk.truncate(IMAGE_MB * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=60)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True, timeout=60)
    try:
        (mount / "home").mkdir(mode=0o700)
        (mount / "log").mkdir()
        (root / "node-a").symlink_to(mount / "home")
        deployment = Deployment.create(root, "seized-net")
        home = deployment.add_node("node-a", "author", author=AUTHOR)
        relay = deployment.add_node("node-b", "relay")
        report_ids = [
            cli(
                "--home",
                str(home),
                "report",
                "add",
                "--narrative",
                f"Report {n} {MARKER}: the checkpoint at the river was closed at night.",
                "--category",
                "arbitrary-detention",
                "--occurred",
                "2025-03-01",
                "--json",
            )["id"]
            for n in range(REPORTS)
        ]
        seized = Seized(
            root, image, mount, home, mount / "log" / "fieldsync.log", deployment, report_ids
        )
        for report_id in report_ids:
            _report_id_needles(seized.authorship, report_id)
        seized.authorship.add_text("author name", AUTHOR)
        for item in _envelopes(home):
            item_id = crypto.content_id(item)
            seized.purged_hex.append(item_id.hex())
            seized.purged.add(f"purged item id {item_id.hex()[:8]}", item_id)
            seized.purged.add_text(f"purged item id {item_id.hex()[:8]} (hex)", item_id.hex())
            middle = len(item) // 2
            seized.purged.add(f"purged item {item_id.hex()[:8]} bytes", item[middle : middle + 32])
        assert len(seized.purged_hex) == REPORTS

        # A → B by sync; B → HQ by bundle; receipts → B by bundle; B → A by sync: A purges.
        first = _sync_once(root, home, relay, seized.log, "B holds A's reports")
        usb = root / "usb"
        usb.mkdir()
        cli("--home", str(relay), "bundle", "export", str(usb / "b.bundle"), "--json")
        hq = str(deployment.hq)
        cli("hq", "ingest", "--hq", hq, str(usb / "b.bundle"), "--json", ok=(0, 8))
        cli("hq", "receipts", "--hq", hq, "--out", str(usb / "receipts.bundle"), "--json")
        cli("--home", str(relay), "bundle", "import", str(usb / "receipts.bundle"), "--json")
        second = _sync_once(root, home, relay, seized.log, "A purged its delivered reports")

        for address in {first, second}:
            seized.peer.add_text(f"peer address {address}", address)
        _key_needles(seized.peer, "peer node key", _node_key(relay), KeyKind.NODE)
        _key_needles(seized.author_node, "author node key", _node_key(home), KeyKind.NODE)
        yield seized
    finally:
        if os.path.ismount(mount):
            subprocess.run(["umount", str(mount)], check=False, timeout=60)


# --- what this branch guarantees --------------------------------------------------------------


def test_no_peer_address_or_peer_key_on_the_seized_disk(seized: Seized) -> None:
    # Positive controls: the needles find B's key and address where they are.
    assert find(seized.peer, files_under(seized.root / "node-b")), "B's own key is in B's home"
    assert any("peer address" in hit for hit in find(seized.peer, [seized.root / "a.toml"]))
    assert seized.scan_home(seized.peer) == []  # the home and the log
    assert seized.scan_disk(seized.peer) == []


def test_the_default_log_names_peers_only_by_pseudonym(seized: Seized) -> None:
    """Both daemons ran at the default level: neither log names the other's address, port
    or node key (A dialled B; B saw A's address and source port)."""
    seized.remount()
    logs = {
        "A": (seized.log.read_text(encoding="utf-8"), seized.peer),
        "B": ((seized.root / "b-run.log").read_text(encoding="utf-8"), seized.author_node),
    }
    # A's own listening address is its own (a user's choice); no other address appears.
    own = ("listening on 127.0.0.1:", "serving sync on tcp 127.0.0.1:")
    for who, (text, keys) in logs.items():
        assert "synced with peer-" in text, text  # positive control: sessions were logged
        others = [line for line in text.splitlines() if not any(o in line for o in own)]
        assert [line for line in others if "127.0.0.1" in line] == [], who
        assert [name for name, needle in keys.named.items() if needle in text.encode()] == []


def test_the_home_holds_no_purged_item(seized: Seized) -> None:
    assert seized.scan_home(seized.purged) == []


def test_no_report_text_anywhere_on_the_disk(seized: Seized) -> None:
    content = Needles()
    content.add_text("narrative marker", MARKER)
    # Positive control: HQ reads it (its export).
    assert MARKER in cli("hq", "export", "--hq", str(seized.deployment.hq), "--format", "jsonl")
    assert seized.scan_home(content) == []
    assert seized.scan_disk(content) == []


# --- the sealed outbox and the encrypted store (issue #11 items 3 and 4) --------------------


def test_no_report_id_or_author_name_on_the_seized_disk(seized: Seized) -> None:
    # Positive control: the ids are the ones HQ received (its export with --device-ids).
    exported = cli(
        "hq", "export", "--hq", str(seized.deployment.hq), "--format", "jsonl", "--device-ids"
    )
    assert all(report_id in exported for report_id in seized.report_ids)
    assert seized.scan_home(seized.authorship) == []
    assert seized.scan_disk(seized.authorship) == []


def test_no_purged_item_in_the_free_blocks(seized: Seized) -> None:
    assert seized.scan_disk(seized.purged) == []


def test_after_wipe_only_ciphertext_and_nothing_left_decrypts(seized: Seized) -> None:
    seized.remount()
    env = {**clean_env(), "FIELDSYNC_PASSPHRASE": PASSPHRASE}

    def listed() -> str:
        done = subprocess.run(
            [*fieldsync_command(), "--home", str(seized.home), "report", "list", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        return done.stdout + done.stderr

    # Positive control: given the passphrase, the node's own reading finds every id.
    before = listed()
    assert all(report_id in before for report_id in seized.report_ids), before
    cli("--home", str(seized.home), "wipe", "--yes", "--json")
    after = listed()
    assert not any(report_id in after for report_id in seized.report_ids), after
    everything = Needles({**seized.authorship.named, **seized.purged.named})
    assert seized.scan_home(everything) == []
    assert seized.scan_disk(everything) == []
