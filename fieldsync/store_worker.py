"""The store's one owned thread: asyncio code never touches SQLite on the event loop.

Every call runs on a single dedicated thread, so SQLite sees one writer and the event loop
stays responsive while a batch is fsynced (perf S11). Calls wait in two lanes: interactive
(the default: local writes, the control API, the web app) and bulk (sync sessions storing or
reading a flight, the janitor). The thread always serves the interactive lane first, so a
``status`` or a report queued during a bulk flight runs after the bulk call in progress -
one bounded slice - never after the rest of the flight. Within a lane, calls run in
submission order.

Reads that must not wait even for that slice (``status``) go to a second connection on a
thread of its own (``read``; the control API's thread has one of its own,
``reader_for_this_thread``): in WAL mode a reader sees the last committed state while the
store thread writes or fsyncs. Those connections are ``query_only``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fieldsync.store import Store
from fieldsync.write_intent import IntentProbe

T = TypeVar("T")

_Job = tuple["concurrent.futures.Future[Any]", Callable[[], Any]]


def usable_cores() -> int:
    """The cores this process may run on (its affinity, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity outside Linux
        return os.cpu_count() or 1


class StoreWorker:
    def __init__(
        self, path: Path, *, cache_kib: int | None = None, local_writes: bool = False
    ) -> None:
        """``cache_kib``: the store's page cache cap (``Store``). ``local_writes``: the node
        has an author, so a report may be written (``report add``, the web app) at any
        moment, announced or not: its sync slices stay short (``peer.QUIET_STEP_SECONDS``)."""
        self.path = path
        self.local_writes = local_writes
        self._cache_kib = cache_kib
        self._store: Store | None = None
        self._intent: IntentProbe | None = None
        self._wakeup = threading.Condition()
        self._interactive: deque[_Job] = deque()
        self._bulk: deque[_Job] = deque()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="fieldsync-store", daemon=True)
        self._reader = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="fieldsync-store-reader"
        )
        self._read_on_executor = ThreadReader(path, cache_kib)
        #: One thread for pure-Python work the store thread hands off while SQLite runs
        #: without the GIL (``ahead``); started on first use. It pays only with a core to
        #: run on beside the store thread: pinned to one (a Pi Zero's share, ``bench
        #: --cores 1``) it would compete with the commit, and with the commits of another
        #: process waiting for the write lock (perf S11: ~0.5-1 ms more at the p99).
        self.spare_core = usable_cores() > 1
        self._helper = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="fieldsync-ahead", initializer=self._note_helper
        )
        self._helper_ident: int | None = None
        self._ahead: concurrent.futures.Future[None] | None = None
        #: When another process was last seen announcing or committing a write
        #: (``time.monotonic``), and the store's ``data_version`` then.
        self._writer_seen_at = -math.inf
        self._data_version = 0

    async def open(self) -> None:
        self._thread.start()
        self._store = await self._submit(
            lambda: Store(self.path, cache_kib=self._cache_kib), bulk=False
        )
        self._intent = await self._submit(lambda: IntentProbe(self.path), bulk=False)
        store = self._store
        self._data_version = await self._submit(store.data_version, bulk=False)

    async def read(self, func: Callable[[Store], T]) -> T:
        """Run the read-only ``func(store)`` on the reader connection and thread: it never
        waits for the store thread, and sees what was committed when it starts."""
        if self._store is None:
            raise RuntimeError("StoreWorker.open() was not awaited")
        reader = self._read_on_executor
        return await asyncio.get_running_loop().run_in_executor(self._reader, reader.read, func)

    def reader_for_this_thread(self) -> ThreadReader:
        """A reader connection of its own for a thread without an event loop (the control
        API's): its reads wait for no other thread, not even to be handed over (under load,
        waking another thread and being woken again cost more than the read). Only that
        thread may use and close it."""
        if self._store is None:
            raise RuntimeError("StoreWorker.open() was not awaited")
        return ThreadReader(self.path, self._cache_kib)

    def local_writer_waiting(self) -> bool:
        """Whether another process has announced a write to the store (``write_intent``):
        bulk work should let it in first. Non-blocking, for the event loop."""
        if self._intent is None or not self._intent.writer_waiting():
            return False
        self._writer_seen_at = time.monotonic()
        return True

    def watch_other_writers(self, store: Store) -> None:
        """Store thread, before bulk work: note whether another process committed since the
        last look (``data_version``), which the intent probe only sees while it writes."""
        version = store.data_version()
        if version != self._data_version:
            self._data_version = version
            self._writer_seen_at = time.monotonic()

    def writer_seen_within(self, seconds: float) -> bool:
        """Whether another process announced or committed a write in the last ``seconds``
        (as far as ``local_writer_waiting`` and ``watch_other_writers`` saw): it may well
        write again soon."""
        return time.monotonic() - self._writer_seen_at < seconds

    def others_waiting(self) -> bool:
        """Whether anything should run before more bulk work (store thread, between two
        bounded transactions of one call): a queued call in either lane, or another
        process's announced write."""
        # A deque's truth value is read atomically; a call queued right after is served
        # after the next transaction, as it would be had it come during it.
        return bool(self._interactive or self._bulk) or self.local_writer_waiting()

    def _note_helper(self) -> None:
        self._helper_ident = threading.get_ident()

    def thread_idents(self) -> dict[str, int]:
        """The ``threading`` idents of the store thread and, once started, the helper (for
        ``time.pthread_getcpuclockid``: the bench reports each one's CPU)."""
        idents = {} if self._thread.ident is None else {"store": self._thread.ident}
        if self._helper_ident is not None:
            idents["helper"] = self._helper_ident
        return idents

    def ahead(self, job: Callable[[], None]) -> None:
        """Store thread: start ``job`` (pure Python, no store) on the helper thread, to run
        while this thread is inside SQLite, which releases the GIL: a commit encrypts and
        writes for milliseconds (perf S1: a receiving relay parses and hashes the next slice
        while the last one commits). At most one job at a time: this waits for the one
        before."""
        self.settle_ahead()
        self._ahead = self._helper.submit(job)

    def settle_ahead(self) -> None:
        """Store thread: wait for the job ``ahead`` started (raising what it raised). Called
        before work that needs its result, and before bulk SQL: a Python thread running
        beside many short SQLite calls takes the GIL from each one in turn and slows it by a
        switch interval (the GIL convoy)."""
        job, self._ahead = self._ahead, None
        if job is not None:
            job.result()

    async def call(self, func: Callable[[Store], T], *, bulk: bool = False) -> T:
        """Run ``func(store)`` on the store thread and return its result; ``bulk`` calls
        wait while any interactive call is queued."""
        store = self._store
        if store is None:
            raise RuntimeError("StoreWorker.open() was not awaited")
        return await self._submit(lambda: func(store), bulk=bulk)

    def _submit(self, job: Callable[[], T], *, bulk: bool) -> asyncio.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._wakeup:
            if self._stopping:
                raise RuntimeError("the store worker is closed")
            (self._bulk if bulk else self._interactive).append((future, job))
            self._wakeup.notify()
        # wrap_future: a cancelled await cancels a call that has not started (as
        # run_in_executor does), and the result crosses back to the loop thread safely.
        return asyncio.wrap_future(future)

    def _serve(self) -> None:
        while True:
            with self._wakeup:
                while not (self._interactive or self._bulk or self._stopping):
                    self._wakeup.wait()
                if self._interactive:
                    future, job = self._interactive.popleft()
                elif self._bulk:
                    future, job = self._bulk.popleft()
                else:
                    return  # stopping, and every queued call has run
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = job()
            except BaseException as exc:  # handed to the awaiting caller, whatever it is
                future.set_exception(exc)
            else:
                future.set_result(result)
            del future, job  # a result or traceback must not outlive its caller's interest

    async def close(self) -> None:
        store, self._store = self._store, None
        intent, self._intent = self._intent, None
        if intent is not None:
            intent.close()

        await asyncio.get_running_loop().run_in_executor(self._reader, self._read_on_executor.close)
        await asyncio.to_thread(self._reader.shutdown, True)
        await asyncio.to_thread(self._helper.shutdown, True)
        if store is not None:
            await self._submit(store.close, bulk=False)
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread.is_alive():
            # Joining the (now idle) thread blocks: do it off the event loop.
            await asyncio.to_thread(self._thread.join)


class ThreadReader:
    """A ``query_only`` connection to the store for one thread: opened there on first use
    (a relay nobody asks for its status never pays for it) and closed by it (``close``)."""

    def __init__(self, path: Path, cache_kib: int | None) -> None:
        self.path = path
        self._cache_kib = cache_kib
        self._store: Store | None = None
        self._query_only: sqlite3.Connection | None = None  # the connection made read-only

    def read(self, func: Callable[[Store], T]) -> T:
        """``func(store)``, seeing what was committed when it starts; it cannot write."""
        store = self._store
        if store is None:
            # After the store thread's Store: the schema is migrated, nothing to write.
            # The store thread's page cache: SQLite's default on an author node; a relay's
            # cap, memory first, where status is rarely asked.
            store = self._store = Store(self.path, cache_kib=self._cache_kib)
        store.follow_key_rotation()  # the janitor may have re-keyed the store since
        if store.conn is not self._query_only:  # new, or reopened under a new key
            store.conn.execute("PRAGMA query_only = ON")
            self._query_only = store.conn
        return func(store)

    def close(self) -> None:
        store, self._store = self._store, None
        self._query_only = None
        if store is not None:
            store.close()
