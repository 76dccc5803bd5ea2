"""A received flight is stored in bounded write transactions, and local writes get in
between them (perf S11, issue 13 item 3). Counts and order only, never timings.

Real nodes and stores, a real session over ``memory_pair``; the receiving store counts the
write transactions it commits (``Store.commits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from fieldsync import synthetic
from fieldsync.peer import STEP_MAX_BYTES, PeerLimits, run_peer
from fieldsync.runtime import Runtime
from fieldsync.sqlite_tx import begin_polling, immediate_transaction
from fieldsync.store import Store
from fieldsync.transport import memory_pair

REPORTS = 1_200  # ~1.2 MB: one flight of the session window, many slices
FAST = PeerLimits(silent_close=(0.0, 0.01))


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    with blockbuster_ctx() as bb:
        yield bb


@dataclass(frozen=True)
class Pair:
    sender: Path  # a relay holding REPORTS reports
    receiver: Path  # an empty relay
    report_bytes: int


@pytest.fixture(scope="module")
def base_pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    root = tmp_path_factory.mktemp("bounded") / "net"
    network = synthetic.create_network(root)
    sender = network.add_node("sender")
    receiver = network.add_node("receiver")
    reports = synthetic.sealed_reports(network.manifest, REPORTS)
    synthetic.fill_store(sender, network.manifest, reports)
    return Pair(sender, receiver, sum(map(len, reports)))


@pytest.fixture
def pair(base_pair: Pair, tmp_path: Path) -> Pair:
    shutil.copytree(base_pair.sender.parent, tmp_path / "net")
    return Pair(
        tmp_path / "net" / base_pair.sender.name,
        tmp_path / "net" / base_pair.receiver.name,
        base_pair.report_bytes,
    )


@contextlib.asynccontextmanager
async def opened(home: Path) -> AsyncIterator[Runtime]:
    runtime = await Runtime.open(home, limits=FAST)
    try:
        yield runtime
    finally:
        await runtime.close()


async def commits(runtime: Runtime) -> int:
    return await runtime.worker.call(lambda store: store.commits)


async def test_a_bulk_flight_is_committed_in_bounded_transactions(pair: Pair) -> None:
    async with opened(pair.sender) as sender, opened(pair.receiver) as receiver:
        before = await commits(receiver)
        end_s, end_r = memory_pair()
        mine, theirs = await asyncio.gather(
            run_peer(end_s, sender.context, initiator=True),
            run_peer(end_r, receiver.context, initiator=False),
        )
        assert mine.complete and theirs.complete, (mine.error, theirs.error)
        assert theirs.items_new == REPORTS
        transactions = await commits(receiver) - before
        held = await receiver.worker.call(lambda store: store.item_count())
    assert held == REPORTS + 1  # and the manifest
    # No transaction holds more than STEP_MAX_BYTES of items: the whole flight (one window,
    # one transaction before) takes at least this many.
    assert transactions >= math.ceil(pair.report_bytes / STEP_MAX_BYTES)


async def test_local_writes_interleave_with_a_bulk_flight(pair: Pair) -> None:
    """A write queued on the receiver's store thread while a flight is stored runs after at
    most one slice of it (plus a cursor update), not after the whole flight."""
    async with opened(pair.sender) as sender, opened(pair.receiver) as receiver:
        seen: list[int] = []  # the store's commit count as each local write starts
        syncing = asyncio.Event()
        syncing.set()

        def local_write(store: Store) -> None:
            seen.append(store.commits)
            with store.transaction():
                store.db.conn.execute("PRAGMA user_version")  # a write transaction, no change

        async def writer() -> None:
            while syncing.is_set():
                await receiver.worker.call(local_write)

        task = asyncio.create_task(writer())
        end_s, end_r = memory_pair()
        try:
            mine, theirs = await asyncio.gather(
                run_peer(end_s, sender.context, initiator=True),
                run_peer(end_r, receiver.context, initiator=False),
            )
        finally:
            syncing.clear()
            await task
        assert mine.complete and theirs.complete, (mine.error, theirs.error)
        assert theirs.items_new == REPORTS
    bulk_between = [later - earlier - 1 for earlier, later in itertools.pairwise(seen)]
    slices = math.ceil(pair.report_bytes / STEP_MAX_BYTES)
    assert sum(bulk_between) >= slices  # the flight was stored while the writer ran...
    assert max(bulk_between) <= 2  # ...and never more than a slice (+ a cursor) in a row


def test_begin_polling_waits_for_another_writer_and_restores_busy_timeout(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    waiter = sqlite3.connect(path, isolation_level=None)
    for conn in (holder, waiter):
        conn.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (v INTEGER)")
    try:
        holder.execute("BEGIN IMMEDIATE")
        # Held for good: the waiter gives up after its timeout with SQLite's own error.
        with pytest.raises(sqlite3.OperationalError) as refused:
            begin_polling(waiter, 0.02)
        assert refused.value.sqlite_errorcode == sqlite3.SQLITE_BUSY
        assert not waiter.in_transaction
        assert waiter.execute("PRAGMA busy_timeout").fetchone()[0] == 20
        # Released while the waiter polls: it gets the lock and writes.
        attempts = threading.Event()
        releaser = threading.Thread(target=lambda: (attempts.wait(5), holder.execute("COMMIT")))
        releaser.start()
        attempts.set()
        with immediate_transaction(waiter, lock_timeout=10.0):
            waiter.execute("INSERT INTO t VALUES (1)")
        releaser.join()
        assert waiter.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
        assert holder.execute("SELECT count(*) FROM t").fetchone()[0] == 1
    finally:
        holder.close()
        waiter.close()


def test_begin_polling_raises_other_errors_at_once(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    try:
        conn.execute("BEGIN")
        with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
            begin_polling(conn, 10.0)
    finally:
        conn.close()


async def test_the_quota_still_counts_whole_batches_across_slices(pair: Pair) -> None:
    """A batch is charged whole with its first slice: the receiver keeps the batches that
    fit the quota, none of the first batch over it, and ends the connection naming it."""
    quota = 400  # more than one session batch (<= 256 items), less than two
    limits = PeerLimits(silent_close=(0.0, 0.01), quota_items_per_day=quota)
    async with opened(pair.sender) as sender:
        receiver = await Runtime.open(pair.receiver, limits=limits)
        try:
            end_s, end_r = memory_pair()
            _mine, theirs = await asyncio.gather(
                run_peer(end_s, sender.context, initiator=True),
                run_peer(end_r, receiver.context, initiator=False),
            )
            held = await receiver.worker.call(lambda store: store.item_count())
        finally:
            await receiver.close()
    assert not theirs.complete
    assert theirs.error is not None and "quota" in theirs.error
    assert held == theirs.items_new + 1  # and the manifest
    # Exactly the first batch: whole (more than half the quota), nothing of the second.
    assert quota // 2 < theirs.items_new <= quota
