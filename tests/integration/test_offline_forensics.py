"""Forensics (issue 2 "Must show"): after reports with a unique marker are written, relayed,
receipted and purged, a raw byte scan of every file under A's and B's homes finds no marker,
no author secret key and no deleted item id. Before delivery, nothing on A reveals a sealed
report's content without the author's passphrase (and not even with it: it is sealed to HQ).

Scans run over every file of the home trees (database, ``-wal``, ``-shm``, keys, request,
membership), both while a store is still open (WAL present) and after every node closed.
Positive controls prove each needle is findable where it does exist.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nacl.bindings as sodium
import pytest

from fieldsync.node import NODE_SECRET, Node
from fieldsync.store import connect_store
from fieldsync_protocol import crypto
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.items import ItemKind, parse_item
from tests.fieldsync.offline_support import (
    PASSPHRASE,
    Net,
    author_seed,
    build_network,
    export,
    fields,
    files_under,
    hq_db_connect,
    import_,
    ingest,
    receipts,
    stored,
)

WINDOW = 8


@dataclass
class Needles:
    """Byte strings that must not be found, each with a name for the failure message."""

    named: dict[str, bytes] = field(default_factory=dict)

    def add(self, name: str, needle: bytes) -> None:
        assert len(needle) >= WINDOW, name
        self.named[name] = needle

    def add_text(self, name: str, text: str) -> None:
        """A string in every encoding it might be stored in."""
        raw = text.encode("utf-8")
        self.add(f"{name} (UTF-8)", raw)
        self.add(f"{name} (UTF-16-LE)", text.encode("utf-16-le"))
        self.add(f"{name} (UTF-16-BE)", text.encode("utf-16-be"))
        for shift in range(3):  # base64 at each alignment: text forms (request, enrolment)
            # Only the characters made of ``raw``'s bits alone, whatever surrounds it.
            start, end = -(-8 * shift // 6), 8 * (shift + len(raw)) // 6
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                self.add(f"{name} (base64+{shift})", encode(bytes(shift) + raw)[start:end])

    def add_windows(self, name: str, text: str) -> None:
        raw = text.encode("utf-8")
        for start in range(len(raw) - WINDOW + 1):
            self.add(f"{name}[{start}:{start + WINDOW}]", raw[start : start + WINDOW])


def decrypted_contents(conn: sqlite3.Connection, out: Path) -> Path:
    """Every value of every table as stored (bytes raw, text UTF-8), in one file at ``out``:
    what an encrypted database gives to whoever holds its key (positive controls)."""
    try:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        with out.open("wb") as dump:
            for (table,) in tables:
                for row in conn.execute(f'SELECT * FROM "{table}"'):  # noqa: S608
                    for value in row:
                        dump.write(value if isinstance(value, bytes) else str(value).encode())
                        dump.write(b"\n")
    finally:
        conn.close()
    return out


def find(needles: Needles, files: Iterable[Path]) -> list[str]:
    """Every (needle, file) pair found; empty means clean."""
    found = []
    for path in files:
        data = path.read_bytes()
        for name, needle in needles.named.items():
            if needle in data:
                found.append(f"{name} in {path}")
    return found


def _seed_forms(seed: bytes) -> Needles:
    """The author's secret in every form libsodium or a careless program could store."""
    needles = Needles()
    public, expanded = sodium.crypto_sign_seed_keypair(seed)
    assert expanded[:32] == seed and expanded[32:] == public
    needles.add("author seed", seed)
    needles.add("author secret key (64 bytes)", expanded)
    digest = hashlib.sha512(seed).digest()
    scalar = bytearray(digest[:32])
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    needles.add("author scalar (clamped)", bytes(scalar))
    needles.add("author scalar (unclamped)", digest[:32])
    needles.add("author nonce prefix", digest[32:])
    needles.add("author seed (hex)", seed.hex().encode())
    needles.add("author seed (base64)", base64.b64encode(seed)[:40])
    return needles


@pytest.fixture
def net(tmp_path: Path) -> Net:
    return build_network(tmp_path / "net")


def _envelopes(home: Path) -> list[bytes]:
    node = Node(home)
    try:
        items = list(node.store().iter_items())
    finally:
        node.close()
    return [item for item in items if parse_item(item).kind is ItemKind.ENVELOPE]


def test_nothing_recoverable_after_delivery_and_nothing_readable_before(net: Net) -> None:
    marker = f"MARKER-{secrets.token_hex(12)}"
    narratives = [
        f"{marker} first: the militia seized the well at Tanguiéta at dawn.",
        f"Second account {marker}: a journalist was beaten near the ferry.",
        f"Third, {marker} — fence on the grazing commons; elders told to leave.",
    ]
    seed = author_seed(net)  # unlocked with the passphrase before any scan

    forbidden_before = Needles()
    forbidden_before.add_text("marker", marker)
    for index, text in enumerate(narratives):
        forbidden_before.add_windows(f"narrative {index}", text)
    forbidden_before.add_text("place", f"Village {marker}")
    forbidden_before.named.update(_seed_forms(seed).named)

    # --- A writes; the store stays open: scan with the WAL present -------------------------
    node_a = Node(net.a)
    try:
        for text in narratives:
            node_a.add_report(
                fields(
                    text,
                    title=f"Title {marker}",
                    location={"source": "text", "place": f"Village {marker}"},
                ),
                PASSPHRASE,
            )
        a_files_open = files_under(net.a)
        assert any(p.name.endswith("-wal") for p in a_files_open), "the WAL is part of the scan"
        assert find(forbidden_before, a_files_open) == []
        # Nothing A holds opens a sealed report: not its node key, not the network key, not even
        # the author's own key (reports are sealed to HQ only).
        member = node_a.membership()
        a_secrets = {
            "node key": (net.a / NODE_SECRET).read_bytes(),
            "network key": member.network_key,
            "author seed": seed,
        }
        envelopes_a = [
            i for i in node_a.store().iter_items() if parse_item(i).kind is ItemKind.ENVELOPE
        ]
        assert len(envelopes_a) == 3
        for item in envelopes_a:
            ciphertext = parse_item(item).fields["c"]
            for name, secret in a_secrets.items():
                with pytest.raises(RemoteProtocolError):
                    crypto.unseal(ciphertext, secret, f"envelope with {name}")
    finally:
        node_a.close()
    assert find(forbidden_before, files_under(net.a)) == [], "closed: still nothing"

    # --- A → B → HQ --------------------------------------------------------------------------
    export(net.a, net.usb / "a.bundle")
    import_(net.b, net.usb / "a.bundle")
    export(net.b, net.usb / "b.bundle")
    deleted = _envelopes(net.a)
    assert sorted(deleted) == sorted(_envelopes(net.b)) and len(deleted) == 3
    assert ingest(net, net.usb / "b.bundle").new == 3
    assert receipts(net, net.usb / "receipts.bundle")["envelopes_receipted"] == 3

    forbidden_after = Needles(dict(forbidden_before.named))
    for index, item in enumerate(deleted):
        forbidden_after.add(f"deleted item id {index}", crypto.content_id(item))
        forbidden_after.add(
            f"deleted item id {index} (hex)", crypto.content_id(item).hex().encode()
        )
        middle = len(item) // 2
        forbidden_after.add(f"deleted item {index} bytes", item[middle : middle + 32])

    # Positive controls: the needles are findable where they do exist - given the keys, as
    # both databases are encrypted at rest (and the raw store file shows none of them).
    b_plain = decrypted_contents(connect_store(net.b / "store.db"), net.root / "b-plain")
    assert find(forbidden_after, [b_plain]), "B's store holds the items before purge"
    assert find(forbidden_after, [net.b / "store.db"]) == []
    hq_plain = decrypted_contents(hq_db_connect(net.hq), net.root / "hq-plain")
    assert any("marker" in hit for hit in find(forbidden_before, [hq_plain])), (
        "HQ's analyst database has the plaintext: the marker needle works"
    )

    # --- receipts come back: B and A purge, each scanned while its store is still open -------
    for home, delivered_own in ((net.b, 0), (net.a, 3)):
        node = Node(home)
        try:
            counts = node.import_bundle(net.usb / "receipts.bundle").counts
            assert (counts.purged, counts.delivered_own) == (3, delivered_own)
            files_open = files_under(home)
            assert any(p.name.endswith("-wal") for p in files_open)
            assert any(p.name.endswith("-shm") for p in files_open)
            assert find(forbidden_after, files_open) == []
        finally:
            node.close()

    # --- every node closed: scan every file under both homes once more ----------------------
    every_file = files_under(net.a, net.b)
    names = {p.name for p in every_file}
    assert {"store.db", "node.secret", "author.secret", "membership.bin"} <= names
    assert "request.txt" not in names  # join removes it: it names the author and their key
    assert find(forbidden_after, every_file) == []

    node = Node(net.a)
    try:
        assert {e.status for e in node.reports(PASSPHRASE)} == {"delivered"}
        assert stored(node.store(), "envelope") == 0
    finally:
        node.close()


def test_items_received_and_purged_in_one_open_session_leave_no_trace(net: Net) -> None:
    """B keeps one store open from import to purge: the items' pages were only ever in the WAL
    and the purge must still leave no copy in the WAL or the database file."""
    marker = f"MARKER-{secrets.token_hex(12)}"
    node_a = Node(net.a)
    try:
        node_a.add_report(fields(f"{marker}: the river camp was raided."), PASSPHRASE)
        node_a.export_bundle(net.usb / "a.bundle")
    finally:
        node_a.close()
    deleted = _envelopes(net.a)
    forbidden = Needles()
    forbidden.add_text("marker", marker)
    for index, item in enumerate(deleted):
        forbidden.add(f"deleted item id {index}", crypto.content_id(item))
        forbidden.add(f"deleted item {index} bytes", item[len(item) // 2 : len(item) // 2 + 32])
    assert ingest(net, net.usb / "a.bundle").new == 1
    receipts(net, net.usb / "receipts.bundle")

    node_b = Node(net.b)
    try:
        assert node_b.import_bundle(net.usb / "a.bundle").counts.new == 1
        wal = net.b / "store.db-wal"
        # Positive control: the item is in the store now (in its WAL, encrypted: read back
        # through the store key).
        assert wal.stat().st_size > 0
        b_plain = decrypted_contents(connect_store(net.b / "store.db"), net.root / "b-plain")
        assert find(forbidden, [b_plain]), "positive control: the item is in the store now"
        node_b.export_bundle(net.usb / "b.bundle")
        assert node_b.import_bundle(net.usb / "receipts.bundle").counts.purged == 1
        assert find(forbidden, files_under(net.b)) == []
    finally:
        node_b.close()
    assert find(forbidden, files_under(net.b)) == []
