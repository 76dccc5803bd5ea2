"""Synthetic networks and item loads for benchmarks, soak tests and demos.

Builds real networks (HQ directory, enrolled nodes) with the same code paths as the CLI,
and fills stores with real signed-and-sealed reports quickly by sealing with the protocol
core directly (no passphrase unlock per report). Never used by the daemon itself.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from fieldsync import hq as hq_module
from fieldsync.node import Node
from fieldsync.store import ImportCounts, Store, now_seconds
from fieldsync_protocol import crypto, envelope
from fieldsync_protocol.items import check_item
from fieldsync_protocol.membership import Manifest
from fieldsync_protocol.report import REPORT_ID_RANDOM, report_id

PASSPHRASE = "synthetic network passphrase"  # noqa: S105 - synthetic test networks only
KDF_PROFILE = "interactive"


@dataclass
class SyntheticNetwork:
    root: Path
    hq: Path
    manifest: Manifest

    def add_node(self, name: str, *, author: bool = False, role: str | None = None) -> Path:
        """Create, enrol and join a node home ``root/name``; return its path."""
        home = self.root / name
        node = Node(home)
        try:
            request = node.init(
                name if author else None, PASSPHRASE if author else None, KDF_PROFILE
            )
            headquarters = hq_module.HQ(self.hq)
            try:
                enrolment, _ = headquarters.enroll(request.read_text(), PASSPHRASE, role)
            finally:
                headquarters.close()
            node.join(enrolment)
        finally:
            node.close()
        return home


def create_network(root: Path, name: str = "synthetic") -> SyntheticNetwork:
    manifest = hq_module.create_network(root / "hq", name, PASSPHRASE, KDF_PROFILE)
    return SyntheticNetwork(root, root / "hq", manifest)


def sealed_reports(
    manifest: Manifest,
    count: int,
    *,
    author_seed: bytes | None = None,
    start: int = 1,
    text: str = "synthetic report",
) -> list[bytes]:
    """``count`` real report envelopes by one author, sequence ``start`` onwards."""
    seed = author_seed or secrets.token_bytes(32)
    key_id = manifest.current_hq_key_id
    previous = envelope.GENESIS
    items: list[bytes] = []
    now = now_seconds()
    for sequence in range(start, start + count):
        body = {
            "schema": "fieldsync.report/1",
            "id": report_id(secrets.token_bytes(REPORT_ID_RANDOM)),
            "created_at": "2025-03-01T09:30:00Z",
            "clock": {"source": "unknown", "synced": False},
            "origin": {"channel": "api"},
            "language": "en",
            "occurred": {"start": "2025-03-01", "precision": "day", "approximate": False},
            "categories": ["unclassified"],
            "narrative": f"{text} {sequence}",
            "sensitivity": "restricted",
            "consent": {"share_with_hq": True},
        }
        sealed = envelope.seal_report(
            envelope.SealInput(
                network_id=manifest.network_id,
                hq_key_id=key_id,
                hq_public_key=manifest.hq_keys[key_id],
                author_seed=seed,
                sequence=sequence,
                previous=previous,
                claimed_time=now,
                body=body,
            ),
            secrets.token_bytes(32),
        )
        previous = sealed.header_hash
        items.append(sealed.item)
    return items


def fill_store(
    home: Path, manifest: Manifest, items: list[bytes], batch: int = 5_000
) -> ImportCounts:
    """Add ``items`` to a node's store in large batches (as a sync would)."""
    store = Store(home / "store.db")
    total = ImportCounts()
    try:
        for start in range(0, len(items), batch):
            checked = [check_item(data, manifest) for data in items[start : start + batch]]
            counts = store.add_batch(checked, now_seconds())
            total.new += counts.new
            total.duplicate += counts.duplicate
    finally:
        store.close()
    return total


def author_public_key(seed: bytes) -> bytes:
    return crypto.signing_public_key(seed)
