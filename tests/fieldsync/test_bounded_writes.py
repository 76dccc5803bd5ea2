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
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from fieldsync import peer, store_worker, synthetic
from fieldsync.peer import (
    QUIET_STEP_MAX_BYTES,
    STEP_MAX_BYTES,
    PeerLimits,
    SyncOutcome,
    run_peer,
)
from fieldsync.runtime import Runtime
from fieldsync.sqlite_tx import DB_ERRORS, begin_polling, immediate_transaction
from fieldsync.store import Quota, QuotaExceeded, Store
from fieldsync.store_worker import StoreWorker, ThreadReader
from fieldsync.transport import memory_pair
from fieldsync.write_intent import IntentProbe, announced
from fieldsync_protocol import codec
from fieldsync_protocol import items as items_module
from fieldsync_protocol.crypto import content_id
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.items import Checked, Item, ItemKind, check_item, parse_item
from fieldsync_protocol.session import ItemsReceived, SyncSession

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


async def flight(sender: Runtime, receiver: Runtime) -> tuple[SyncOutcome, SyncOutcome, int]:
    """One sync session from ``sender`` to ``receiver`` over memory: both outcomes and how
    many transactions the receiver's store committed meanwhile."""
    before = await commits(receiver)
    end_s, end_r = memory_pair()
    mine, theirs = await asyncio.gather(
        run_peer(end_s, sender.context, initiator=True),
        run_peer(end_r, receiver.context, initiator=False),
    )
    return mine, theirs, await commits(receiver) - before


async def test_a_bulk_flight_is_committed_in_bounded_transactions(pair: Pair) -> None:
    async with opened(pair.sender) as sender, opened(pair.receiver) as receiver:
        mine, theirs, transactions = await flight(sender, receiver)
        assert mine.complete and theirs.complete, (mine.error, theirs.error)
        assert theirs.items_new == REPORTS
        assert theirs.yielded_to_local_writers == 0  # nobody announced a write
        held = await receiver.worker.call(lambda store: store.item_count())
    assert held == REPORTS + 1  # and the manifest
    # No transaction holds more than QUIET_STEP_MAX_BYTES of items (no other process
    # announced a write): the whole flight (one window, one transaction before) takes at
    # least this many.
    assert transactions >= math.ceil(pair.report_bytes / QUIET_STEP_MAX_BYTES)


async def test_an_author_node_keeps_its_slices_short_with_no_writer_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay that has seen no local writer stores a flight in longer slices; an author
    node never does: a report may be written there at any moment (perf S11). Time bounds
    are lifted so that only the byte bound decides a slice's size."""
    monkeypatch.setattr(peer, "STEP_SECONDS", 60.0)
    monkeypatch.setattr(peer, "QUIET_STEP_SECONDS", 60.0)

    def set_up() -> tuple[Path, Path, list[bytes]]:
        network = synthetic.create_network(tmp_path / "net")
        sender_home = network.add_node("sender")
        author_home = network.add_node("author", author=True)
        reports = synthetic.sealed_reports(network.manifest, REPORTS)
        synthetic.fill_store(sender_home, network.manifest, reports)
        return sender_home, author_home, reports

    sender_home, author_home, reports = await asyncio.to_thread(set_up)
    slice_bytes: list[int] = []
    add_batch = Store.add_batch

    def measured(self: Store, checked: list[Checked], *args: Any, **kwargs: Any) -> Any:
        slice_bytes.append(sum(len(one.item.data) for one in checked))
        return add_batch(self, checked, *args, **kwargs)

    monkeypatch.setattr(Store, "add_batch", measured)
    async with opened(sender_home) as sender, opened(author_home) as author:
        assert author.worker.local_writes and not sender.worker.local_writes
        mine, theirs, _ = await flight(sender, author)
    assert mine.complete and theirs.complete, (mine.error, theirs.error)
    assert theirs.items_new == REPORTS
    assert sum(slice_bytes) == sum(map(len, reports))
    # No slice holds more than STEP_MAX_BYTES and the one item that crosses it.
    assert max(slice_bytes) <= STEP_MAX_BYTES + max(map(len, reports))


async def test_slices_follow_each_other_in_one_store_call_while_nobody_waits(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing else queued, the receiver stores several slices in one store-thread
    call (no hop through the event loop between two transactions), still each in its own
    transaction."""
    monkeypatch.setattr(peer, "CALL_SECONDS", 60.0)  # a slow machine's slices: no cap here
    slices = 0
    store_step = peer._Connection._store_step

    def counted_step(self: Any, store: Store, node_key: bytes) -> bool:
        nonlocal slices
        slices += 1
        return store_step(self, store, node_key)

    monkeypatch.setattr(peer._Connection, "_store_step", counted_step)
    async with opened(pair.sender) as sender, opened(pair.receiver) as receiver:
        per_call: list[int] = []  # slices stored by each call acting on session events
        call = receiver.worker.call

        async def counted(func: Any, *, bulk: bool = False) -> Any:
            if getattr(func, "__name__", "") != "act":
                return await call(func, bulk=bulk)

            def act(store: Store) -> Any:
                before = slices
                try:
                    return func(store)
                finally:
                    per_call.append(slices - before)

            return await call(act, bulk=bulk)

        monkeypatch.setattr(receiver.worker, "call", counted)
        mine, theirs, transactions = await flight(sender, receiver)
    assert mine.complete and theirs.complete, (mine.error, theirs.error)
    assert sum(per_call) == slices <= transactions  # a slice is one transaction
    assert max(per_call) >= 2


async def test_local_writes_interleave_with_a_bulk_flight(pair: Pair) -> None:
    """A write queued on the receiver's store thread while a flight is stored runs after at
    most one slice of it (plus a cursor update), not after the whole flight; while nothing
    is queued, one store call stores slice after slice."""
    async with opened(pair.sender) as sender, opened(pair.receiver) as receiver:
        # The receiver's Store, to read its commit count from here (an int, read whole).
        store_of_receiver = await receiver.worker.call(lambda store: store)
        queued: list[int] = []  # the store's commit count once each local write is queued
        seen: list[int] = []  # ... and as it starts
        syncing = asyncio.Event()
        syncing.set()

        def local_write(store: Store) -> None:
            seen.append(store.commits)
            with store.transaction():
                store.db.conn.execute("PRAGMA user_version")  # a write transaction, no change

        async def writer() -> None:
            while syncing.is_set():
                call = asyncio.ensure_future(receiver.worker.call(local_write))
                await asyncio.sleep(0)  # the call's task ran up to its await: it is queued
                queued.append(store_of_receiver.commits)
                await call
                await asyncio.sleep(0.001)  # a gap in which nothing waits for the store

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
    waited = [start - at_queue for at_queue, start in zip(queued, seen, strict=True)]
    bulk_between = [later - earlier - 1 for earlier, later in itertools.pairwise(seen)]
    slices = math.ceil(pair.report_bytes / QUIET_STEP_MAX_BYTES)  # (no write announced)
    assert sum(bulk_between) >= slices  # the flight was stored while the writer ran...
    # ...and a queued write never waited for more than the one slice in progress when it
    # was queued: the interactive lane goes first, and a bulk call stops between slices.
    assert max(waited) <= 1


async def test_the_worker_notes_a_commit_by_another_process(tmp_path: Path) -> None:
    """A commit by another connection since the last look counts as a local writer seen
    (short slices for a while, perf S11); its own commits do not."""
    worker = StoreWorker(tmp_path / "store.db")
    await worker.open()
    try:
        await worker.call(worker.watch_other_writers)
        assert not worker.writer_seen_within(60)

        def own_write(store: Store) -> None:
            with store.transaction():
                store.conn.execute("INSERT INTO store_meta (key, value) VALUES ('own', 1)")

        await worker.call(own_write)
        await worker.call(worker.watch_other_writers)
        assert not worker.writer_seen_within(60)

        def other_process_writes() -> None:  # another connection, as ``report add`` opens
            other = Store(tmp_path / "store.db")
            try:
                with other.transaction():
                    other.conn.execute("INSERT INTO store_meta (key, value) VALUES ('other', 1)")
            finally:
                other.close()

        await asyncio.to_thread(other_process_writes)
        assert not worker.writer_seen_within(60)  # not looked yet
        await worker.call(worker.watch_other_writers)
        assert worker.writer_seen_within(60)
        assert not worker.writer_seen_within(0)
    finally:
        await worker.close()


async def test_interactive_calls_go_before_queued_bulk_calls(tmp_path: Path) -> None:
    """While a bulk call (one slice) runs, a bulk call and two interactive calls queue:
    the interactive ones run next, in their order, and the bulk one after them."""
    worker = StoreWorker(tmp_path / "store.db")
    await worker.open()
    order: list[str] = []
    started, release = threading.Event(), threading.Event()

    def slice_in_progress(_store: Store) -> None:
        started.set()
        release.wait(10)
        order.append("bulk slice 1")

    try:
        first = asyncio.ensure_future(worker.call(slice_in_progress, bulk=True))
        await asyncio.to_thread(started.wait, 10)
        queued = [
            asyncio.ensure_future(worker.call(lambda _s: order.append("bulk slice 2"), bulk=True)),
            asyncio.ensure_future(worker.call(lambda _s: order.append("status"))),
            asyncio.ensure_future(worker.call(lambda _s: order.append("local write"))),
        ]
        await asyncio.sleep(0)  # each task submits its call in its first step
        release.set()
        await asyncio.gather(first, *queued)
    finally:
        release.set()
        await worker.close()
    assert order == ["bulk slice 1", "status", "local write", "bulk slice 2"]


async def test_a_read_is_answered_while_the_store_thread_is_busy(tmp_path: Path) -> None:
    """``status`` reads through the reader connection: it is answered while a bulk call
    still holds the store thread, sees what that call has committed, and cannot write."""
    worker = StoreWorker(tmp_path / "store.db")
    await worker.open()
    started, release = threading.Event(), threading.Event()

    def slice_in_progress(store: Store) -> None:
        store.advance_clock(7)  # committed (autocommit) before the slice stalls
        started.set()
        release.wait(10)

    try:
        stalled = asyncio.ensure_future(worker.call(slice_in_progress, bulk=True))
        await asyncio.to_thread(started.wait, 10)
        status = await worker.read(lambda store: store.status())
        clock = await worker.read(lambda store: store.local_clock())
        answered_before_the_slice_ended = not stalled.done()
        with pytest.raises(DB_ERRORS, match="readonly"):
            await worker.read(lambda store: store.conn.execute("CREATE TABLE t (v)"))
        release.set()
        await stalled
    finally:
        release.set()
        await worker.close()
    assert answered_before_the_slice_ended
    assert status["items_total"] == 0 and clock == 7


_HOLDER = """
import sys
from pathlib import Path
from fieldsync.write_intent import announced

with announced(Path(sys.argv[1])):
    print("announced", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def write_announced(store_path: Path) -> Iterator[None]:
    """Another process announces a write to ``store_path`` (as ``report add`` does while it
    waits for the write lock and writes) until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(store_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "announced"
        yield
    finally:
        holder.stdin.close()
        holder.wait(30)
        holder.stdout.close()


def test_the_intent_probe_sees_another_process_announce(tmp_path: Path) -> None:
    probe = IntentProbe(tmp_path / "store.db")
    try:
        assert not probe.writer_waiting()
        with write_announced(tmp_path / "store.db"):
            assert probe.writer_waiting()
            with announced(tmp_path / "store.db"):  # a second writer shares it
                assert probe.writer_waiting()
        assert not probe.writer_waiting()
    finally:
        probe.close()


@pytest.fixture
def receiver_write_announced(pair: Pair) -> Iterator[None]:
    with write_announced(pair.receiver / "store.db"):
        yield


@pytest.mark.usefixtures("receiver_write_announced")
async def test_an_announced_write_makes_the_receiver_wait_before_each_slice(pair: Pair) -> None:
    """While another process announces a write for the whole flight, the receiver defers
    every slice after the first (bounded: the flight still completes), and its slices are
    the short ones (at most STEP_MAX_BYTES each)."""
    async with opened(pair.sender) as sender, opened(pair.receiver) as receiver:
        mine, theirs, transactions = await flight(sender, receiver)
    assert mine.complete and theirs.complete, (mine.error, theirs.error)
    assert theirs.items_new == REPORTS
    slices = math.ceil(pair.report_bytes / STEP_MAX_BYTES)
    assert theirs.yielded_to_local_writers >= slices
    assert theirs.yielded_to_local_writers >= transactions - 2  # (the first; a cursor)


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


async def test_the_quota_still_counts_whole_batches_across_slices(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is charged whole with its first slice: the receiver keeps the batches that
    fit the quota, none of the first batch over it, and ends the connection naming it.
    Storing a refused slice batch by batch parses nothing ahead (a job one batch started
    could be writing the next batch's parsed items while it is read)."""
    quota = 400  # more than one session batch (<= 256 items), less than two
    limits = PeerLimits(silent_close=(0.0, 0.01), quota_items_per_day=quota)
    calls: list[tuple[int, bool, bool]] = []  # parts, parsing ahead, refused
    real_store_batch = peer._store_batch

    def store_batch(*args: Any, **kwargs: Any) -> int:
        parts = len(args[4])
        ahead = kwargs.get("before_commit") is not None
        try:
            result = real_store_batch(*args, **kwargs)
        except peer.QuotaViolation:
            calls.append((parts, ahead, True))
            raise
        calls.append((parts, ahead, False))
        return result

    monkeypatch.setattr(peer, "_store_batch", store_batch)
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
    refused = next(k for k, (_parts, _ahead, failed) in enumerate(calls) if failed)
    if calls[refused][0] > 1:  # a slice of several batches, then stored batch by batch
        assert calls[refused + 1 :] and not any(ahead for _p, ahead, _f in calls[refused + 1 :])


# --- relaxed slices, durable acknowledgements ----------------------------------------------


@pytest.fixture(scope="module")
def checked_reports(tmp_path_factory: pytest.TempPathFactory) -> list[Checked]:
    network = synthetic.create_network(tmp_path_factory.mktemp("relaxed") / "net")
    reports = synthetic.sealed_reports(network.manifest, 20)
    return [check_item(data, network.manifest) for data in reports]


def synchronous(store: Store) -> int:
    return int(store.db.conn.execute("PRAGMA synchronous").fetchone()[0])


def sync_points(store: Store) -> int:
    row = store.db.conn.execute("SELECT value FROM store_meta WHERE key = 'sync_points'").fetchone()
    return 0 if row is None else int(row[0])


def test_a_durable_commit_after_relaxed_ones_always_writes(
    checked_reports: list[Checked], tmp_path: Path
) -> None:
    """A relaxed slice is not fsynced; the durable commit that follows must write something
    (else SQLite skips the fsync that makes the slices durable), even when every item in it
    is a duplicate."""
    store = Store(tmp_path / "store.db")
    try:
        first = store.add_batch(checked_reports[:10], 0, durable=False)
        assert first.new == 10
        assert synchronous(store) == 2  # FULL again after the relaxed commit
        assert sync_points(store) == 0
        again = store.add_batch(checked_reports[:10], 0, durable=True)  # duplicates only
        assert again.new == 0 and again.duplicate == 10
        assert sync_points(store) == 1
        # Nothing relaxed since: a durable commit needs no marker.
        store.add_batch(checked_reports[10:], 0)
        assert sync_points(store) == 1
        assert store.item_count() == 20
    finally:
        store.close()


def test_a_refused_relaxed_slice_restores_full_synchronous(
    checked_reports: list[Checked], tmp_path: Path
) -> None:
    store = Store(tmp_path / "store.db")
    try:
        quota = Quota(b"P" * 32, 1, max_items=5, max_bytes=10**9)
        called: list[bool] = []
        with pytest.raises(QuotaExceeded):
            store.add_batch(
                checked_reports,
                0,
                origin=b"P" * 32,
                quota=quota,
                durable=False,
                before_commit=lambda: called.append(True),
            )
        assert not called  # nothing to commit
        assert synchronous(store) == 2
        assert store.item_count() == 0
        # The refused slice left nothing to make durable: no marker either.
        seen: list[tuple[bool, int]] = []  # in the transaction, and what others see then

        def before_commit() -> None:
            seen.append((store.db.conn.in_transaction, reader.read(Store.item_count)))

        reader = ThreadReader(tmp_path / "store.db", None)
        try:
            store.add_batch(checked_reports[:1], 0, before_commit=before_commit)
            assert seen == [(True, 0)]  # written, not yet committed
            assert reader.read(Store.item_count) == 1
        finally:
            reader.close()
        assert sync_points(store) == 0
    finally:
        store.close()


async def test_every_acknowledged_batch_was_made_durable_first(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver stores a flight in relaxed slices and acknowledges a batch only right
    after a durable commit (whose fsync covers the slices before it), never after a
    relaxed one; there are fewer durable commits than slices."""
    events: list[tuple[str, bool]] = []
    real_add_batch = Store.add_batch
    real_commit_done = SyncSession.commit_done

    def add_batch(self: Store, *args: Any, durable: bool = True, **kwargs: Any) -> Any:
        result = real_add_batch(self, *args, durable=durable, **kwargs)
        events.append(("commit", durable))
        return result

    def commit_done(self: SyncSession, batch_no: int) -> None:
        events.append(("ack", True))
        real_commit_done(self, batch_no)

    async with opened(pair.sender) as sender, opened(pair.receiver) as receiver:
        monkeypatch.setattr(Store, "add_batch", add_batch)
        monkeypatch.setattr(SyncSession, "commit_done", commit_done)
        end_s, end_r = memory_pair()
        mine, theirs = await asyncio.gather(
            run_peer(end_s, sender.context, initiator=True),
            run_peer(end_r, receiver.context, initiator=False),
        )
    assert mine.complete and theirs.complete, (mine.error, theirs.error)
    assert theirs.items_new == REPORTS
    batches = theirs.stats.batches_received
    acks = [i for i, (kind, _) in enumerate(events) if kind == "ack"]
    assert len(acks) == batches
    for index in acks:
        last_commit = next(e for e in reversed(events[:index]) if e[0] == "commit")
        assert last_commit == ("commit", True)
    commits = [durable for kind, durable in events if kind == "commit"]
    assert commits.count(False) > 0  # slices went without an fsync each...
    assert commits.count(True) <= batches  # ...and at most one fsync per batch
    assert commits.count(True) < len(commits)


def test_a_thread_reader_follows_a_key_rotation_and_stays_read_only(tmp_path: Path) -> None:
    """The control API's own reader: re-opened under the janitor's new key, still
    ``query_only`` after it."""
    path = tmp_path / "store.db"
    writer = Store(path)
    reader = ThreadReader(path, None)
    try:
        writer.advance_clock(3)
        assert reader.read(lambda store: store.local_clock()) == 3
        reader.read(lambda store: store.conn.execute("SELECT 1"))  # opened, rotation next
        assert writer.rotate_key()
        writer.advance_clock(5)
        assert reader.read(lambda store: store.local_clock()) == 8
        with pytest.raises(DB_ERRORS, match="readonly"):
            reader.read(lambda store: store.conn.execute("CREATE TABLE t (v)"))
    finally:
        reader.close()
        writer.close()


# --- the next slice parsed ahead while one commits ------------------------------------------


async def test_the_next_slice_is_parsed_on_the_helper_thread_during_a_commit(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a slice commits (SQLite, without the GIL), the batches the next slice takes
    are parsed and hashed on the worker's helper thread, and that slice checks them without
    parsing them again: every item is checked once, by one path or the other."""
    started_in_transaction: list[bool] = []
    helper_threads: set[str] = set()
    checked = {"inline": 0, "ahead": 0}
    real_ahead, real_parse_ahead = StoreWorker.ahead, peer._parse_ahead
    real_check_item, real_check_parsed = items_module.check_item, items_module.check_parsed

    def ahead(self: StoreWorker, job: Any) -> None:
        store = self._store
        assert store is not None
        started_in_transaction.append(store.db.conn.in_transaction)
        real_ahead(self, job)

    def parse_ahead(batches: list[Any]) -> None:
        helper_threads.add(threading.current_thread().name)
        real_parse_ahead(batches)

    def check_item(data: bytes, manifest: Any) -> Checked:
        checked["inline"] += 1
        return real_check_item(data, manifest)

    def check_parsed(item: Any, manifest: Any) -> Checked:
        checked["ahead"] += 1
        return real_check_parsed(item, manifest)

    monkeypatch.setattr(StoreWorker, "ahead", ahead)
    monkeypatch.setattr(peer, "_parse_ahead", parse_ahead)
    monkeypatch.setattr(peer, "check_item", check_item)
    monkeypatch.setattr(peer, "check_parsed", check_parsed)
    async with opened(pair.sender) as sender, opened(pair.receiver) as receiver:
        receiver.worker.spare_core = True  # as on any machine of two cores or more
        mine, theirs, _ = await flight(sender, receiver)
        held = await receiver.worker.call(lambda store: store.item_count())
    assert mine.complete and theirs.complete, (mine.error, theirs.error)
    assert theirs.items_new == REPORTS and held == REPORTS + 1
    assert started_in_transaction and all(started_in_transaction)  # from inside add_batch
    assert helper_threads and all(name.startswith("fieldsync-ahead") for name in helper_threads)
    assert checked["ahead"] > 0
    assert checked["inline"] + checked["ahead"] == REPORTS


def late_malformed_envelope(after: bytes) -> bytes:
    """An envelope whose ciphertext is no size class (refused by ``parse_item``), with an id
    above ``after``: a first contact sends it in the last batch."""
    for n in itertools.count():
        data = codec.encode({"c": n.to_bytes(4, "big") * 75, "k": 1, "l": 3, "t": "e", "v": 1})
        if content_id(data) > after:
            return data
    raise AssertionError("unreachable")


def store_unchecked_last_item(home: Path) -> bytes:
    """Put a malformed envelope in ``home``'s store behind the checks (a buggy sender):
    it sorts after every item there; returns it."""
    store = Store(home / "store.db")
    try:
        bad = late_malformed_envelope(max(store.sorted_ids()))
        assert store.add_batch([Checked(Item(ItemKind.ENVELOPE, bad, {}))], 0).new == 1
    finally:
        store.close()
    return bad


async def test_a_bad_item_in_a_later_batch_ends_the_session_naming_it(pair: Pair) -> None:
    """A malformed item in the last batch (put in the sender's store behind the checks)
    ends the session naming its batch; the slices before it are kept, nothing of its own."""
    bad = await asyncio.to_thread(store_unchecked_last_item, pair.sender)
    with pytest.raises(RemoteProtocolError, match="size class"):
        parse_item(bad)
    async with opened(pair.sender) as sender, opened(pair.receiver) as receiver:
        _mine, theirs, _ = await flight(sender, receiver)
        held_bad = await receiver.worker.call(lambda store: store.has_item(content_id(bad)))
        held = await receiver.worker.call(lambda store: store.item_count())
    assert not theirs.complete
    assert theirs.error is not None and "bad item in batch" in theirs.error
    assert "size class" in theirs.error
    assert not held_bad
    assert held == theirs.items_new + 1 and 0 < theirs.items_new < REPORTS


@pytest.mark.parametrize("parsed_ahead", [True, False])
def test_a_slice_refuses_a_bad_item_alike_parsed_ahead_or_not(
    checked_reports: list[Checked], tmp_path: Path, parsed_ahead: bool
) -> None:
    """The store thread stores a slice from items the helper parsed ahead, refusal
    included, exactly as from the raw items: the same new items, the same refusal naming
    the batch, and nothing of a refused slice stored."""
    manifest = synthetic.create_network(tmp_path / "net").manifest
    good = [c.item.data for c in checked_reports]
    bad = late_malformed_envelope(b"")
    first = peer._Unstored(ItemsReceived(0, good[:12]))
    second = peer._Unstored(ItemsReceived(1, [*good[12:], bad]))
    if parsed_ahead:
        # From where the slice before this one (4 items of the first batch) will end.
        peer._parse_ahead([(first, 4), (second, 0)])
        assert first.parsed is not None and second.parsed is not None
        assert len(first.parsed) == 8 and first.parsed_from == 4
        assert isinstance(second.parsed[-1], RemoteProtocolError)
    else:
        assert first.parsed is None and second.parsed is None
    store = Store(tmp_path / "store.db")
    try:
        source = peer.SyncSource(store, None)
        limits = PeerLimits()
        node_key = b"P" * 32
        first.stored = 4  # a slice of the batch was stored before (from raw items)
        slice_one = [(first, good[4:12]), (second, good[12:16])]
        assert peer._store_batch(store, source, manifest, node_key, slice_one, limits) == 12
        second.stored = 4
        with pytest.raises(peer.PeerViolation, match=r"bad item in batch 1: .*size class"):
            peer._store_batch(store, source, manifest, node_key, [(second, second.rest())], limits)
        assert store.item_count() == 12
        assert set(store.sorted_ids()) == {content_id(data) for data in good[4:16]}
    finally:
        store.close()


async def test_work_ahead_runs_on_the_helper_thread_one_job_at_a_time(tmp_path: Path) -> None:
    """``StoreWorker.ahead`` runs a job on the helper thread; starting the next one, or
    settling, waits for it and raises what it raised; closing the worker stops the thread."""
    worker = StoreWorker(tmp_path / "store.db")
    await worker.open()
    release = threading.Event()
    done: list[tuple[str, str]] = []
    idents: set[int] = set()

    def job(name: str) -> None:
        release.wait(10)
        done.append((name, threading.current_thread().name))
        idents.add(threading.get_ident())

    def failing() -> None:
        raise ValueError("the helper's job failed")

    def on_the_store_thread(_store: Store) -> list[tuple[str, str]]:
        worker.ahead(lambda: job("first"))
        assert done == []  # running beside this thread, held by ``release``
        release.set()
        worker.ahead(lambda: job("second"))
        seen_when_second_started = list(done)
        worker.settle_ahead()
        worker.ahead(failing)
        with pytest.raises(ValueError, match="failed"):
            worker.settle_ahead()
        worker.settle_ahead()  # nothing left to wait for
        return seen_when_second_started

    try:
        seen = await worker.call(on_the_store_thread)
    finally:
        await worker.close()
    assert [name for name, _ in seen] == ["first"]
    assert [name for name, _ in done] == ["first", "second"]
    assert all(thread.startswith("fieldsync-ahead") for _, thread in done)
    # Named for the bench, which reports each thread's CPU.
    assert set(worker.thread_idents()) == {"store", "helper"}
    assert idents == {worker.thread_idents()["helper"]}
    with pytest.raises(RuntimeError):
        worker._helper.submit(print)  # shut down with the worker


async def test_nothing_is_parsed_ahead_without_a_core_to_spare(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pinned to one core, the helper thread would only compete with the commit: the
    worker says so, and a flight is stored whole with every item parsed on the store
    thread."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert store_worker.usable_cores() == 1
    started: list[object] = []
    monkeypatch.setattr(StoreWorker, "ahead", lambda _self, job: started.append(job))
    async with opened(pair.sender) as sender, opened(pair.receiver) as receiver:
        assert not receiver.worker.spare_core
        mine, theirs, _ = await flight(sender, receiver)
    assert mine.complete and theirs.complete, (mine.error, theirs.error)
    assert theirs.items_new == REPORTS
    assert started == []


def test_usable_cores_follows_the_affinity_or_counts_the_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 3})
    assert store_worker.usable_cores() == 2
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert store_worker.usable_cores() == 4
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert store_worker.usable_cores() == 1
