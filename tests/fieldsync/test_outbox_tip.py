"""The outbox tip (the newest store migration, perf S11): recording an own report touches
O(1) rows of the sealed outbox, and the tip always agrees with the entries it summarises -
after a migration from the previous schema, with two authors, and after the writing process
is killed mid-stream.

Real nodes, real encrypted stores, a real process killed with SIGKILL. Shapes and counts only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldsync import synthetic
from fieldsync.errors import InputRefused
from fieldsync.node import Node
from fieldsync.outbox import Tip, chain_tip, open_all, open_tip, outbox_keys, tip_locator
from fieldsync.store import _MIGRATIONS, connect_store
from fieldsync_protocol.envelope import GENESIS

PASSPHRASE = synthetic.PASSPHRASE


@pytest.fixture(scope="module")
def base_net(tmp_path_factory: pytest.TempPathFactory) -> synthetic.SyntheticNetwork:
    network = synthetic.create_network(tmp_path_factory.mktemp("tip") / "net")
    network.add_node("author", author=True)
    return network


@pytest.fixture
def home(base_net: synthetic.SyntheticNetwork, tmp_path: Path) -> Path:
    shutil.copytree(base_net.root, tmp_path / "net")
    return tmp_path / "net" / "author"


@pytest.fixture
def node(home: Path) -> Iterator[Node]:
    opened = Node(home)
    yield opened
    opened.close()


def write(node: Node, seed: bytes, narrative: str, **extra: Any) -> str:
    now = time.time()
    fields = {
        "occurred": {"start": "2025-03-01", "precision": "day", "approximate": False},
        "categories": ["unclassified"],
        "narrative": narrative,
        **extra,
    }
    return node.seal_report(node.draft_report(fields, now), seed, (), now)


def stored_tip(home: Path, seed: bytes) -> Tip | None:
    keys = outbox_keys(seed)
    conn = connect_store(home / "store.db")
    try:
        row = conn.execute(
            "SELECT tip FROM outbox_tips WHERE locator = ?", (tip_locator(keys),)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else open_tip(bytes(row[0]), keys)


def count(home: Path, table: str) -> int:
    conn = connect_store(home / "store.db")
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
    finally:
        conn.close()


def test_a_report_after_the_first_reads_no_outbox_row(node: Node) -> None:
    seed = node.unlock_author(PASSPHRASE)
    write(node, seed, "first: builds the tip from the (empty) outbox")
    statements: list[str] = []
    node.store().conn.set_trace_callback(statements.append)
    try:
        for index in range(5):
            write(node, seed, f"report {index}")
    finally:
        node.store().conn.set_trace_callback(None)
    reads = [s for s in statements if "FROM sealed_outbox" in s]
    assert reads == []  # the tip and the id hashes answer; no entry is opened
    inserts = [s for s in statements if s.startswith("INSERT INTO sealed_outbox")]
    assert len(inserts) == 5


def test_the_tip_follows_the_chain_and_refuses_a_used_id(home: Path, node: Node) -> None:
    seed = node.unlock_author(PASSPHRASE)
    assert stored_tip(home, seed) is None  # nothing written yet: no row says an author is here
    ids = [write(node, seed, f"report {index}") for index in range(3)]
    entries = open_all(node.store().sealed_outbox(), outbox_keys(seed))
    assert [e.sequence for e in entries] == [1, 2, 3]
    assert stored_tip(home, seed) == chain_tip(entries)
    assert entries[0].header_hash != GENESIS
    with pytest.raises(InputRefused, match="already exists"):
        write(node, seed, "a second report under the first one's id", id=ids[0])
    assert len(node.store().sealed_outbox()) == 3
    assert (count(home, "outbox_tips"), count(home, "outbox_ids")) == (1, 3)


def test_two_authors_have_a_tip_each_and_their_own_chains(home: Path, node: Node) -> None:
    node.add_author("second", "second passphrase", synthetic.KDF_PROFILE)
    first = node.unlock_author(PASSPHRASE)
    second = node.unlock_author("second passphrase", "second")
    for index in range(2):
        write(node, first, f"first {index}")
        write(node, second, f"second {index}")
    write(node, first, "first 2")
    rows = node.store().sealed_outbox()
    for seed, sequences in ((first, [1, 2, 3]), (second, [1, 2])):
        mine = open_all(rows, outbox_keys(seed))
        assert [e.sequence for e in mine] == sequences
        assert stored_tip(home, seed) == chain_tip(mine)
    # What a seizer counts without a key: two authors wrote here, five reports in all.
    assert (count(home, "outbox_tips"), count(home, "outbox_ids")) == (2, 5)


def test_migration_from_the_previous_schema_keeps_the_outbox_and_continues_the_chain(
    home: Path, node: Node
) -> None:
    seed = node.unlock_author(PASSPHRASE)
    ids = [write(node, seed, f"before the migration {index}") for index in range(3)]
    before = open_all(node.store().sealed_outbox(), outbox_keys(seed))
    node.close()
    # The store as the schema before the outbox tip's migration left it: its tables and
    # those of the migrations after it (the item total) dropped, the version set back.
    # (The later removal of the insert trigger creates nothing: nothing to undo; the
    # rebuild of ``items`` with a tag prefix index rebuilds the rebuilt table the same way,
    # and the two-part tag index after it is made again from the rows; the rebuild drops
    # the expiry index, which its migration then makes again.)
    (previous,) = [n for n, sql in enumerate(_MIGRATIONS) if "CREATE TABLE outbox_tips" in sql]
    later = _MIGRATIONS[previous + 1 :]
    assert len(later) == 5 and "CREATE TABLE item_count" in later[0], (
        "a newer migration: undo what it creates here too"
    )
    assert later[1].split() == ["DROP", "TRIGGER", "items_counted_in;"]
    assert "ALTER TABLE items_v14 RENAME TO items" in later[2]
    assert "CREATE TABLE item_tags_pending" in later[3]
    assert later[4].split() == ["CREATE", "INDEX", "items_expiry", "ON", "items(expires_at);"]
    conn = connect_store(home / "store.db")
    for statement in (
        # (the rebuild of ``items`` drops the trigger on it, and recreates the index)
        "DROP TABLE item_tags",
        "DROP TABLE item_tags_pending",
        "DROP TABLE outbox_tips",
        "DROP TABLE outbox_ids",
        "DROP TRIGGER items_counted_out",
        "DROP TABLE item_count",
    ):
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {previous}")
    conn.close()

    again = Node(home)
    try:
        store = again.store()
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS)
        assert (count(home, "outbox_tips"), count(home, "outbox_ids")) == (0, 0)
        assert [r.report_id for r in again.reports(PASSPHRASE)] == ids
        with pytest.raises(InputRefused, match="already exists"):
            write(again, seed, "an old id", id=ids[1])
        assert count(home, "outbox_tips") == 0  # the refused write left nothing
        write(again, seed, "after the migration")
        after = open_all(store.sealed_outbox(), outbox_keys(seed))
    finally:
        again.close()
    assert after[:3] == before
    assert after[3].sequence == 4
    assert stored_tip(home, seed) == chain_tip(after)
    assert (count(home, "outbox_tips"), count(home, "outbox_ids")) == (1, 4)


_WRITER = """
import sys, time
from pathlib import Path
from fieldsync.node import Node
from fieldsync.synthetic import PASSPHRASE

node = Node(Path(sys.argv[1]))
seed = node.unlock_author(PASSPHRASE)
fields = {
    "occurred": {"start": "2025-03-01", "precision": "day", "approximate": False},
    "categories": ["unclassified"],
    "narrative": "written until killed",
}
written = 0
while True:
    now = time.time()
    node.seal_report(node.draft_report(fields, now), seed, (), now)
    written += 1
    print(written, flush=True)
"""


def test_the_tip_agrees_with_the_outbox_after_kill_9(home: Path) -> None:
    """A process writing reports back to back is killed with SIGKILL (no crash hooks in the
    project: at whatever point it is, often mid-transaction); the tip and the id hashes
    still describe exactly the entries that were committed, and the chain goes on."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(home)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if int(line) >= 20:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
    node = Node(home)
    try:
        seed = node.unlock_author(PASSPHRASE)
        mine = open_all(node.store().sealed_outbox(), outbox_keys(seed))
        assert len(mine) >= 20
        assert [e.sequence for e in mine] == list(range(1, len(mine) + 1))
        assert stored_tip(home, seed) == chain_tip(mine)
        assert count(home, "outbox_ids") == len(mine)
        own = node.store().conn.execute("SELECT count(*) FROM items WHERE own = 1")
        assert own.fetchone()[0] == len(mine)
        write(node, seed, "after the crash")
        mine = open_all(node.store().sealed_outbox(), outbox_keys(seed))
    finally:
        node.close()
    assert mine[-1].sequence == len(mine)
    assert stored_tip(home, seed) == chain_tip(mine)


def test_a_report_leaves_a_long_wal_to_the_daemon(home: Path, node: Node) -> None:
    """A report written while another connection (a daemon storing a flight) has left a
    long WAL does not checkpoint it: the database file does not grow by its pages."""
    seed = node.unlock_author(PASSPHRASE)
    write(node, seed, "before the flight")
    daemon = connect_store(home / "store.db")
    try:
        daemon.execute("PRAGMA wal_autocheckpoint = 0")
        daemon.execute("BEGIN IMMEDIATE")
        daemon.execute("CREATE TABLE flight (data BLOB)")
        # About 1,500 pages: more than SQLite's automatic checkpoint threshold (1,000).
        daemon.executemany("INSERT INTO flight VALUES (?)", [(os.urandom(4000),)] * 1500)
        daemon.execute("COMMIT")
        size = (home / "store.db").stat().st_size
        write(node, seed, "during the flight")
        assert (home / "store.db").stat().st_size == size
        assert node.store().conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    finally:
        daemon.close()
