"""Housekeeping on the store thread: the node's running clock, TTL expiry, the disk budget
and the truncating WAL checkpoint (so deleted rows leave no copy in the WAL file).

Receipt-driven purges happen as receipts arrive (``Store.add_checked``); the janitor only
handles what time and space decide.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from fieldsync.peer import SyncSource
from fieldsync.priority import EVICT_FIRST
from fieldsync.store import Store
from fieldsync.store_worker import StoreWorker

log = logging.getLogger(__name__)


@dataclass
class JanitorReport:
    clock: int = 0
    expired: int = 0
    evicted: int = 0
    used_bytes: int = 0


class Janitor:
    def __init__(
        self,
        worker: StoreWorker,
        source: SyncSource,
        *,
        disk_budget_bytes: int,
        interval: float = 60.0,
        checkpoint_every: float = 300.0,
    ) -> None:
        self._worker = worker
        self._source = source
        self._budget = disk_budget_bytes
        self._interval = interval
        self._checkpoint_every = checkpoint_every
        self._last_tick = time.monotonic()
        self._last_checkpoint = time.monotonic()
        self.last = JanitorReport()

    async def tick(self) -> JanitorReport:
        """One pass: advance the running clock by monotonic time, expire, evict, checkpoint."""
        now = time.monotonic()
        elapsed = int(now - self._last_tick)
        self._last_tick = now - (now - self._last_tick - elapsed)  # keep the fraction
        checkpoint = now - self._last_checkpoint >= self._checkpoint_every
        if checkpoint:
            self._last_checkpoint = now
        budget = self._budget
        source = self._source

        def work(store: Store) -> JanitorReport:
            report = JanitorReport(clock=store.advance_clock(elapsed))
            report.expired = store.expire()
            report.evicted = store.enforce_budget(budget, first=EVICT_FIRST)
            if report.expired or report.evicted:
                source.invalidate()
            elif checkpoint:
                store.checkpoint()
            report.used_bytes = store.used_bytes()
            return report

        self.last = await self._worker.call(work)
        if self.last.expired or self.last.evicted:
            log.info(
                "janitor: %d expired, %d evicted for the disk budget",
                self.last.expired,
                self.last.evicted,
            )
        return self.last

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.tick()
