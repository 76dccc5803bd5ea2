"""What a node's store keeps of its peers (issue #11): what sync and quotas need, under a
keyed hash of each peer's key, forgotten after a while; each peer sees its own epoch."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldsync import synthetic
from fieldsync.janitor import Janitor
from fieldsync.peer import SyncSource
from fieldsync.store import _MIGRATIONS, LAST_SYNC_GRAIN, Quota, Store
from fieldsync.store_worker import StoreWorker
from fieldsync_protocol.membership import Manifest
from tests.fieldsync.test_eviction import envelopes

DAY = 86400
ALICE = bytes(range(32))
BOB = bytes(range(32, 64))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return synthetic.create_network(tmp_path_factory.mktemp("peers")).manifest


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "store.db")
    yield opened
    opened.close()


def quota(node_key: bytes) -> Quota:
    return Quota(node_key, window=1, max_items=10**6, max_bytes=10**12)


def raw_bytes(store: Store) -> bytes:
    store.checkpoint()
    return b"".join(p.read_bytes() for p in store.path.parent.glob(store.path.name + "*"))


def test_the_store_keeps_no_peer_key_and_no_counts(manifest: Manifest, store: Store) -> None:
    store.add_batch(envelopes(manifest, 3), 0, origin=ALICE, quota=quota(ALICE))
    store.set_peer_cursor(ALICE, b"e" * 16, 3, 1_800_000_123)
    assert store.peer_cursor(ALICE) == (b"e" * 16, 3)
    assert store.peer_cursor(BOB) is None
    (record,) = store.peers()
    assert set(record) == {"peer", "cursor", "last_sync", "seen"}
    assert record["last_sync"] == 1_800_000_123 // LAST_SYNC_GRAIN * LAST_SYNC_GRAIN
    assert record["peer"] != ALICE and len(record["peer"]) == 16  # type: ignore[arg-type]
    assert ALICE not in raw_bytes(store)  # not in the database, its WAL or free pages
    # The delta still leaves out what the peer gave us (origins match the keyed hash).
    assert store.items_after(0, 10, skip_origin=ALICE) == []
    assert len(store.items_after(0, 10, skip_origin=BOB)) == 3


def test_peer_ids_differ_between_stores(tmp_path: Path) -> None:
    one, two = Store(tmp_path / "1.db"), Store(tmp_path / "2.db")
    try:
        one.set_peer_cursor(ALICE, b"e", 1, 0)
        two.set_peer_cursor(ALICE, b"e", 1, 0)
        assert one.peers()[0]["peer"] != two.peers()[0]["peer"]
    finally:
        one.close()
        two.close()


def test_peers_not_seen_for_the_period_are_forgotten(manifest: Manifest, store: Store) -> None:
    store.add_batch(envelopes(manifest, 2), 0, origin=ALICE, quota=quota(ALICE))
    store.set_peer_cursor(ALICE, b"a", 2, 0)
    store.advance_clock(20 * DAY)
    store.set_peer_cursor(BOB, b"b", 7, 0)  # met 20 days later
    assert store.forget_peers(30 * DAY) == 0
    store.advance_clock(10 * DAY + 1)
    assert store.forget_peers(30 * DAY) == 1  # Alice: 30 days and a second
    assert store.peer_cursor(ALICE) is None and store.peer_cursor(BOB) == (b"b", 7)
    # Her items stay, no longer linked to her (they may go back to her once).
    assert len(store.items_after(0, 10, skip_origin=ALICE)) == 2
    origins = store.db.execute("SELECT peer FROM origins").fetchall()
    assert origins == [(None,)]
    # Once her items are gone too, nothing is left of her.
    store.db.execute("DELETE FROM items")
    store.advance_clock(30 * DAY)
    assert store.forget_peers(30 * DAY) == 1  # Bob now
    assert store.db.execute("SELECT count(*) FROM origins").fetchone() == (0,)
    assert store.peers() == []


def test_each_peer_is_shown_its_own_epoch(store: Store) -> None:
    alice, bob = store.epoch_for(ALICE), store.epoch_for(BOB)
    assert alice != bob and store.epoch() not in (alice, bob)
    assert store.epoch_for(ALICE) == alice and len(alice) == 16  # stable: cursors stay valid
    store.db.execute("UPDATE store_meta SET value = randomblob(16) WHERE key = 'epoch'")
    assert store.epoch_for(ALICE) != alice  # a new store epoch invalidates every cursor


def test_migration_drops_old_peer_records_and_keeps_eviction_groups(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(_MIGRATIONS[:6], start=1):
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute("INSERT INTO peers (node_key, cursor, items_received) VALUES (?, 9, 40)", (ALICE,))
    conn.execute("INSERT INTO origins (node_key) VALUES (?)", (ALICE,))
    conn.execute(
        "INSERT INTO items (id, tag, kind, data, received_at, expires_at, origin)"
        " VALUES (x'01', x'02', 'e', x'03', 0, 10, 1)"
    )
    conn.close()
    store = Store(path)
    try:
        assert store.peers() == [] and store.peer_cursor(ALICE) is None
        assert store.db.execute("SELECT ref, peer FROM origins").fetchall() == [(1, None)]
        assert store.db.execute("SELECT origin FROM items").fetchall() == [(1,)]
        assert ALICE not in raw_bytes(store)
    finally:
        store.close()


async def test_the_janitor_forgets_peers_after_the_configured_period(tmp_path: Path) -> None:
    worker = StoreWorker(tmp_path / "store.db")
    await worker.open()
    try:
        await worker.call(lambda store: store.set_peer_cursor(ALICE, b"a", 1, 0))
        await worker.call(lambda store: store.advance_clock(2 * DAY))
        source = await worker.call(SyncSource)
        janitor = Janitor(worker, source, disk_budget_bytes=10**9, forget_peers_after=DAY)
        report = await janitor.tick()
        assert report.peers_forgotten == 1
        assert await worker.call(lambda store: store.peers()) == []
    finally:
        await worker.close()


def test_each_peer_sees_its_own_numbering(manifest: Manifest, store: Store) -> None:
    """A peer learns how many items arrive between its sessions, never how many this store
    ever held: local numbers are shifted by a per-peer offset, and deltas still line up."""
    alice, bob = store.seq_offset_for(ALICE), store.seq_offset_for(BOB)
    assert alice != bob and 0 <= alice < 2**32 and 0 <= bob < 2**32
    assert store.seq_offset_for(ALICE) == alice
    store.add_batch(envelopes(manifest, 3), 0)
    source = SyncSource(store)
    seen_by_alice = source.for_peer(ALICE, alice).items_after(0, 10)
    assert [seq for seq, _ in seen_by_alice] == [alice + 1, alice + 2, alice + 3]
    # A cursor Alice holds in her numbering brings exactly what came after it.
    after = source.for_peer(ALICE, alice).items_after(alice + 2, 10)
    assert after == seen_by_alice[2:]
    # A cursor from before the offsets (below it) brings everything again: safe, once.
    assert source.for_peer(ALICE, alice).items_after(5, 10) == seen_by_alice
