"""Shared support for the offline-loop tests (``tests/fieldsync``, ``tests/cli`` and
``tests/integration/test_offline_*.py``): a real network on disk built with the Python API.

``build_network`` makes an HQ directory, an enrolled author node A and an enrolled relay
node B with the cheap "interactive" KDF profile and a fixed passphrase. Tests copy that tree
(``copy_network``) so each one starts from the same state without paying for Argon2id again.
Nothing here is a mock: real SQLite files, real keys, real bundle files.

Import it as ``tests.fieldsync.offline_support``: ``tests`` is a package, and pytest puts the
repository root on ``sys.path``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import struct
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.bindings as sodium

from fieldsync import cipher_db
from fieldsync.hq import DATABASE, HQ, IngestSummary, create_network
from fieldsync.node import STORE, Node
from fieldsync.store import Store, connect_store
from fieldsync_protocol import codec, crypto, envelope, report
from fieldsync_protocol.bundle import CHUNK_SIZE, BundleWriter
from fieldsync_protocol.membership import Manifest

PASSPHRASE = "correct horse battery staple"
KDF = "interactive"
AUTHOR_NAME = "monitor-17"
NETWORK_NAME = "test-net"


@dataclass(frozen=True)
class Net:
    """Paths of one test network: HQ directory, author node A, relay node B, a "USB stick"."""

    root: Path

    @property
    def hq(self) -> Path:
        return self.root / "hq"

    @property
    def a(self) -> Path:
        return self.root / "node-a"

    @property
    def b(self) -> Path:
        return self.root / "node-b"

    @property
    def usb(self) -> Path:
        return self.root / "usb"


def build_network(root: Path) -> Net:
    """Create HQ, author node A and relay node B, enrol both and join them (Python API)."""
    net = Net(root)
    net.usb.mkdir(parents=True)
    create_network(net.hq, NETWORK_NAME, PASSPHRASE, KDF)
    for home, author in ((net.a, AUTHOR_NAME), (net.b, None)):
        node = Node(home)
        try:
            request = node.init(author, PASSPHRASE if author else None, KDF)
            headquarters = HQ(net.hq, passphrase=PASSPHRASE)
            try:
                enrolment, _ = headquarters.enroll(request.read_text(), PASSPHRASE)
            finally:
                headquarters.close()
            node.join(enrolment)
        finally:
            node.close()
    return net


def copy_network(base: Net, root: Path) -> Net:
    """A private copy of ``base`` (all stores must be closed)."""
    shutil.copytree(base.root, root)
    return Net(root)


# --- reports ------------------------------------------------------------------------------


def fields(narrative: str, category: str = "arbitrary-detention", **extra: Any) -> dict[str, Any]:
    """Report fields as ``Node.add_report`` takes them (the node fills in the rest)."""
    return {
        "narrative": narrative,
        "categories": [category],
        "occurred": {"start": "2025-03-01", "precision": "day", "approximate": False},
        **extra,
    }


def body(narrative: str, **extra: Any) -> dict[str, Any]:
    """A complete, valid report body for sealing envelopes directly."""
    return {
        "schema": report.SCHEMA,
        "id": str(uuid.uuid4()),
        "created_at": "2025-03-02T14:05:11Z",
        "clock": {"source": "ntp", "synced": True},
        "origin": {"channel": "cli"},
        "language": "en",
        "occurred": {"start": "2025-03-01T09:30Z", "precision": "minute", "approximate": False},
        "categories": ["arbitrary-detention"],
        "narrative": narrative,
        "sensitivity": "restricted",
        "consent": {"share_with_hq": True},
        **extra,
    }


def add_reports(home: Path, narratives: Iterable[str], **extra: Any) -> list[str]:
    node = Node(home)
    try:
        return [node.add_report(fields(text, **extra), PASSPHRASE) for text in narratives]
    finally:
        node.close()


def author_seed(net: Net) -> bytes:
    """A's author seed, unlocked with the passphrase (as a test oracle only)."""
    node = Node(net.a)
    try:
        return node.unlock_author(PASSPHRASE)
    finally:
        node.close()


def hq_manifest(net: Net) -> Manifest:
    return HQ(net.hq).manifest()


def network_key(net: Net) -> bytes:
    node = Node(net.b)
    try:
        return node.membership().network_key
    finally:
        node.close()


def seal(
    manifest: Manifest,
    seed: bytes,
    sequence: int,
    narrative: str,
    previous: bytes = envelope.GENESIS,
    **extra: Any,
) -> envelope.SealedReport:
    """An envelope sealed directly with the protocol API (for forks, gaps, bulk items)."""
    key_id = manifest.current_hq_key_id
    return envelope.seal_report(
        envelope.SealInput(
            network_id=manifest.network_id,
            hq_key_id=key_id,
            hq_public_key=manifest.hq_keys[key_id],
            author_seed=seed,
            sequence=sequence,
            previous=previous,
            claimed_time=1_740_000_000 + sequence % 1_000_000,
            body=body(narrative, **extra),
        ),
        secrets.token_bytes(32),
    )


def seal_raw(
    manifest: Manifest,
    seed: bytes,
    sequence: int,
    claimed_time: int,
    report_body: dict[str, Any],
    *,
    previous: bytes = envelope.GENESIS,
    ttl_class: int = envelope.DEFAULT_TTL_CLASS,
    key_id: int | None = None,
) -> bytes:
    """An envelope built by hand as SPEC.md §8 describes, with none of ``seal_report``'s
    checks: what a malicious author with a valid key can send (e.g. a time after 9999)."""
    key_id = manifest.current_hq_key_id if key_id is None else key_id
    header = codec.encode(
        {
            "a": crypto.signing_public_key(seed),
            "b": codec.encode(report_body),
            "hk": key_id,
            "l": ttl_class,
            "n": manifest.network_id,
            "p": previous,
            "q": sequence,
            "t": claimed_time,
            "v": 1,
        }
    )
    signed = codec.encode({"h": header, "s": crypto.sign(crypto.Domain.REPORT, seed, header)})
    size = envelope.size_class(len(signed))
    padded = signed + b"\x80" + bytes(size - crypto.SEAL_OVERHEAD - len(signed) - 1)
    public = manifest.hq_keys.get(key_id, manifest.hq_keys[manifest.current_hq_key_id])
    ciphertext = crypto.seal(padded, public, secrets.token_bytes(32))
    return codec.encode({"c": ciphertext, "k": key_id, "l": ttl_class, "t": "e", "v": 1})


def junk_envelope(size: int = 1024, key_id: int = 1) -> bytes:
    """Random bytes in a valid outer layer: relays carry it, HQ cannot open it."""
    return codec.encode({"c": secrets.token_bytes(size), "k": key_id, "l": 3, "t": "e", "v": 1})


# --- bundles ------------------------------------------------------------------------------


def export(home: Path, path: Path) -> int:
    node = Node(home)
    try:
        return node.export_bundle(path)
    finally:
        node.close()


def import_(home: Path, path: Path) -> Any:
    node = Node(home)
    try:
        return node.import_bundle(path).counts
    finally:
        node.close()


@contextmanager
def open_hq(net: Net) -> Iterator[HQ]:
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        yield headquarters
    finally:
        headquarters.close()


def enroll(net: Net, request: Path, role: str | None = None) -> str:
    with open_hq(net) as headquarters:
        return headquarters.enroll(request.read_text(), PASSPHRASE, role)[0]


def ingest(net: Net, *paths: Path) -> IngestSummary:
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        return headquarters.ingest_files(list(paths), PASSPHRASE)
    finally:
        headquarters.close()


def receipts(net: Net, path: Path) -> dict[str, int]:
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        return headquarters.write_receipts_bundle(path, PASSPHRASE)
    finally:
        headquarters.close()


def write_bundle(net: Net, path: Path, items: Iterable[bytes]) -> int:
    """A well-formed bundle of ``items`` under ``net``'s network key."""
    manifest = hq_manifest(net)
    writer = BundleWriter(network_key(net), manifest.network_id, secrets.token_bytes(16))
    with open(path, "wb") as out:
        for item in items:
            out.write(writer.add(item))
        out.write(writer.finish())
    return writer.items_written


def raw_bundle(
    key: bytes,
    records: Sequence[bytes],
    *,
    end: bool = True,
    tail: bytes = b"",
    file_nonce: bytes | None = None,
) -> bytes:
    """Bundle bytes built record by record with the same AEAD construction as SPEC.md §11,
    but with none of ``BundleWriter``'s checks: for headers and records it would refuse.

    ``records`` includes the header record. ``end`` appends the zero-length end record;
    ``tail`` is plaintext after it (where only zero padding belongs).
    """
    stream = b"".join(struct.pack(">I", len(r)) + r for r in records)
    if end:
        stream += struct.pack(">I", 0)
    stream += tail
    file_nonce = file_nonce or secrets.token_bytes(16)
    chunk_key = crypto.derive_key(key, b"bundle-file")
    chunks = [stream[i : i + CHUNK_SIZE] for i in range(0, len(stream), CHUNK_SIZE)] or [b""]
    out = bytearray(file_nonce)
    for index, chunk in enumerate(chunks):
        final = index == len(chunks) - 1
        if final:
            chunk += bytes(CHUNK_SIZE - len(chunk))
        ad = b"fieldsync/bundle/1/final" if final else b"fieldsync/bundle/1/more"
        nonce = file_nonce + index.to_bytes(8, "little")
        out += sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(chunk, ad, nonce, chunk_key)
    return bytes(out)


def header_record(network_id: bytes, version: int = 1) -> bytes:
    return codec.encode({"n": network_id, "v": version})


# --- looking at a store from outside ------------------------------------------------------


def stored(store: Store, kind: str) -> int:
    """How many items of ``kind`` (``"envelope"``, ``"receipt"``, ...) ``store`` holds."""
    items = store.status()["items"]
    assert isinstance(items, dict)
    return int(items[kind])


def store_path(home: Path) -> Path:
    return home / STORE


def snapshot(home: Path) -> dict[str, Any]:
    """Everything a store holds, compared before and after refused input."""
    node = Node(home)
    try:
        store = node.store()
        status = store.status()
        status.pop("disk_bytes")
        conn = store.db.conn
        return {
            "status": status,
            "items": sorted(conn.execute("SELECT id, tag, kind, data, own FROM items").fetchall()),
            "tombstones": sorted(conn.execute("SELECT * FROM tombstones").fetchall()),
            "outbox": sorted(conn.execute("SELECT entry FROM sealed_outbox").fetchall()),
            "integrity": store.integrity_check(),
        }
    finally:
        node.close()


def raw_connect(home: Path) -> sqlite3.Connection:
    """A plain read/write SQLite connection to a node's store (outside the Store class)."""
    return connect_store(store_path(home))


def hq_db_connect(hq_dir: Path, passphrase: str = PASSPHRASE) -> sqlite3.Connection:
    """``hq.db`` opened below the HQ API: under its key (the HQ passphrase opens it), or as
    it is while it is still a plaintext database of an older HQ."""
    path = hq_dir / DATABASE
    if cipher_db.is_plaintext(path):
        return sqlite3.connect(path, isolation_level=None)
    headquarters = HQ(hq_dir, passphrase=passphrase)
    return cipher_db.connect(path, headquarters.database_key())


def files_under(*roots: Path) -> list[Path]:
    """Every regular file under the given directories, walking the whole tree."""
    found: list[Path] = []
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            found.extend(Path(dirpath) / name for name in names)
    return sorted(p for p in found if p.is_file())
