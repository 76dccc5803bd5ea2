"""A seized author node after delivery (issue 11 item 3): its outbox shows nothing without
an author's passphrase, and on a node with two monitors each passphrase shows its own
reports only (issue 10 item 1).

Two authors on node A write reports (one with an attachment); everything travels to HQ and
the receipts come back. A raw byte scan of every file under A's home then finds no report
id in any encoding, no author name, no author key and no request file; the sealed outbox
rows hold no delivery tag of A's own items. Positive controls: the same needles are found
where they do exist (HQ's database, the opened outbox entries), and each author with their
passphrase sees all of their reports, delivered, with the attachment receipted.
"""

from __future__ import annotations

import secrets
import sqlite3
import uuid
from pathlib import Path

import pytest

from fieldsync import media, outbox
from fieldsync.errors import WrongPassphrase
from fieldsync.node import REQUEST, STORE, Node
from fieldsync.outbox import outbox_keys
from fieldsync.store import _MIGRATIONS, Store, connect_store
from fieldsync_protocol import crypto
from tests.fieldsync.offline_support import (
    AUTHOR_NAME,
    KDF,
    PASSPHRASE,
    Net,
    build_network,
    enroll,
    export,
    fields,
    files_under,
    hq_db_connect,
    import_,
    ingest,
    receipts,
)
from tests.integration.test_offline_forensics import Needles, find

SECOND_NAME = "Amina-of-the-river"
SECOND_PASSPHRASE = "lantern orchard quietly folding maps"


@pytest.fixture
def net(tmp_path: Path) -> Net:
    return build_network(tmp_path / "net")


def add_second_author(net: Net) -> None:
    """``author add`` through the Python API, HQ's enrolment, and ``join``."""
    node = Node(net.a)
    try:
        request = node.add_author(SECOND_NAME, SECOND_PASSPHRASE, KDF)
        node.join(enroll(net, request))
    finally:
        node.close()


def _id_forms(needles: Needles, report_id: str) -> None:
    needles.add_text(f"report id {report_id}", report_id)
    needles.add(f"report id {report_id} (16 bytes)", uuid.UUID(report_id).bytes)
    needles.add(f"report id {report_id} (hex)", uuid.UUID(report_id).hex.encode())


def test_a_seized_node_shows_no_report_and_no_author_each_author_sees_their_own(
    net: Net, tmp_path: Path
) -> None:
    add_second_author(net)
    photo = tmp_path / "photo-of-the-checkpoint.jpg"
    photo.write_bytes(secrets.token_bytes(300_000))
    node = Node(net.a)
    try:
        first_ids = [
            node.add_report(fields("first monitor, one"), PASSPHRASE, [photo]),
            node.add_report(fields("first monitor, two"), PASSPHRASE),
        ]
        second_ids = [
            node.add_report(fields("second monitor"), SECOND_PASSPHRASE, author_name=SECOND_NAME)
        ]
        first_key = node.unlock(PASSPHRASE).key
        second_key = node.unlock(SECOND_PASSPHRASE).key
        own_tags = [
            row[0] for row in node.store().db.execute("SELECT tag FROM items WHERE own = 1")
        ]
        assert len(own_tags) == 3 + 2  # three envelopes and the photo's two chunks
        # Before delivery, too, each passphrase shows its own reports only.
        assert [e.report_id for e in node.reports(PASSPHRASE)] == first_ids
        assert [e.report_id for e in node.reports(SECOND_PASSPHRASE)] == second_ids
    finally:
        node.close()

    export(net.a, net.usb / "a.bundle")
    assert ingest(net, net.usb / "a.bundle").new == 3
    receipts(net, net.usb / "receipts.bundle")
    assert import_(net.a, net.usb / "receipts.bundle").delivered_own == 3

    forbidden = Needles()
    for report_id in first_ids + second_ids:
        _id_forms(forbidden, report_id)
    for name in (AUTHOR_NAME, SECOND_NAME, photo.name):
        forbidden.add_text(name, name)
    for index, key in enumerate((first_key, second_key)):
        forbidden.add(f"author key {index}", key)
        forbidden.add(f"author outbox key {index}", outbox.outbox_public(key))

    every_file = files_under(net.a)
    assert not (net.a / REQUEST).exists()
    assert find(forbidden, every_file) == []
    # Positive control: HQ's database (encrypted at rest; read with the HQ passphrase) names
    # both authors and every report id.
    hq_conn = hq_db_connect(net.hq)
    try:
        hq_dump = net.root / "hq-dump.sql"
        hq_tables = "SELECT name FROM sqlite_master WHERE type = 'table'"
        hq_rows = [
            repr(row)
            for (table,) in hq_conn.execute(hq_tables).fetchall()
            for row in hq_conn.execute(f'SELECT * FROM "{table}"')  # noqa: S608
        ]
        hq_dump.write_text("\n".join(hq_rows), encoding="utf-8")
    finally:
        hq_conn.close()
    hq_hits = find(forbidden, [hq_dump])
    for needle in (AUTHOR_NAME, SECOND_NAME, *first_ids, *second_ids):
        assert any(needle in hit for hit in hq_hits), needle

    conn = connect_store(net.a / STORE)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        rows = [row[0] for row in conn.execute("SELECT entry FROM sealed_outbox")]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(sealed_outbox)")]
        tips = conn.execute("SELECT * FROM outbox_tips").fetchall()
        id_macs = conn.execute("SELECT * FROM outbox_ids").fetchall()
    finally:
        conn.close()
    assert not tables & {"outbox", "author_chain", "own_attachments", "own_chunks"}
    assert columns == ["entry"]  # no author, no time, no id: ciphertext only
    assert len(rows) == 3
    # The outbox tips (a later migration): one keyed locator and secret box per author who wrote
    # here, one keyed hash per report id. What they add for a seizer is the count of
    # authors; the tags and ids are nowhere in them.
    assert [len(row) for row in tips] == [2, 2] and [len(row) for row in id_macs] == [1] * 3
    assert not [tag for tag in own_tags if any(tag in b"".join(row) for row in tips)]
    assert not [tag for tag in own_tags if any(tag in row for row in rows)]

    # The authors, with their passphrases, see all of it (and only their own).
    node = Node(net.a)
    try:
        mine = node.reports(PASSPHRASE)
        theirs = node.reports(SECOND_PASSPHRASE, SECOND_NAME)
        with pytest.raises(WrongPassphrase):
            node.reports("not the passphrase of anyone here")
        opened = outbox.open_all(rows, outbox_keys(node.unlock_author(PASSPHRASE)))
    finally:
        node.close()
    assert [e.report_id for e in mine] == first_ids
    assert [e.report_id for e in theirs] == second_ids
    assert [e.sequence for e in mine] == [1, 2] and [e.sequence for e in theirs] == [1]
    assert {e.status for e in mine + theirs} == {"delivered"}
    assert all(e.delivered_at for e in mine + theirs)
    [attachment] = mine[0].attachments
    assert (attachment.name, attachment.size, attachment.receipted, attachment.chunks) == (
        photo.name,
        300_000,
        2,
        2,
    )
    assert [e.report_id for e in opened] == first_ids  # the rows do hold them, sealed


def test_a_plaintext_outbox_is_sealed_to_its_author_and_dropped(tmp_path: Path) -> None:
    """A store from before the sealed outbox (schema 6) is migrated without the passphrase:
    its author's public key (in ``author_chain``) is enough to seal each row."""
    seed = secrets.token_bytes(32)
    author = crypto.signing_public_key(seed)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    tags = {name: secrets.token_bytes(32) for name in ("r1", "r2", "c1", "c2")}
    tip = secrets.token_bytes(32)
    path = tmp_path / "store.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in _MIGRATIONS[:6]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 6")
    conn.execute("INSERT INTO author_chain VALUES (?, 2, ?)", (author, tip))
    conn.execute(
        "INSERT INTO outbox VALUES (?, ?, 1, 100, 'sealed', NULL), (?, ?, 2, 200, 'held', NULL)",
        (first, tags["r1"], second, tags["r2"]),
    )
    conn.execute(
        "INSERT INTO own_attachments VALUES (?, 0, 5000, 2, ?)",
        (first, media.seal_name("witness.ogg", author)),
    )
    conn.executemany(
        "INSERT INTO own_chunks VALUES (?, ?, 0)", [(tags["c1"], first), (tags["c2"], first)]
    )
    conn.executemany("INSERT INTO tombstones VALUES (?, 300)", [(tags["r2"],), (tags["c1"],)])
    conn.close()

    store = Store(path)
    try:
        tables = set(store.db.table_names())
        rows = store.sealed_outbox()
        receipted = store.receipted(list(tags.values()))
    finally:
        store.close()
    assert "sealed_outbox" in tables
    assert not tables & {"outbox", "author_chain", "own_attachments", "own_chunks"}
    needles = Needles()
    _id_forms(needles, first)
    _id_forms(needles, second)
    for name, tag in tags.items():
        needles.add(f"tag {name}", tag)
    needles.add("author key", author)
    # No plaintext left in the database, its WAL or free pages: the migrated store is
    # encrypted at rest, so not even the tombstones' tags (every receipted item keeps one) show.
    hits = find(needles, files_under(tmp_path))
    assert hits == []

    entries = outbox.open_all(rows, outbox_keys(seed))
    assert [(e.report_id, e.sequence, e.created_at, e.tag) for e in entries] == [
        (first, 1, 100, tags["r1"]),
        (second, 2, 200, tags["r2"]),
    ]
    assert entries[1].header_hash == tip  # the next report continues the chain
    [attachment] = entries[0].attachments
    assert attachment.size == 5000
    assert sorted(attachment.chunk_tags) == sorted([tags["c1"], tags["c2"]])
    assert media.open_name(attachment.name_sealed, outbox_keys(seed)) == "witness.ogg"
    assert receipted == {tags["r2"]: ("held", 300), tags["c1"]: ("delivered", 300)}
    assert outbox.open_all(rows, outbox_keys(secrets.token_bytes(32))) == []
