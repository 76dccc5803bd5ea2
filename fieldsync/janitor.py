"""Housekeeping on the store thread: the node's running clock, TTL expiry, the disk budget,
the truncating WAL checkpoint (so deleted rows leave no copy in the WAL file) and the
store-key rotation (so copies in freed disk blocks become noise: ``fieldsync.cipher_db``).

Receipt-driven purges happen as receipts arrive (``Store.add_checked``); the janitor only
handles what time and space decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from fieldsync.eviction import IMPORTED
from fieldsync.peer import SyncSource
from fieldsync.store import Eviction, Store
from fieldsync.store_worker import StoreWorker

log = logging.getLogger(__name__)


@dataclass
class JanitorReport:
    clock: int = 0
    expired: int = 0
    evicted: int = 0
    evicted_bytes: int = 0
    #: Peers whose items were evicted: their next session reconciles in full.
    peers_reset: int = 0
    #: Peer records deleted: not seen for ``forget_peers_after`` (issue #11).
    peers_forgotten: int = 0
    used_bytes: int = 0
    #: The store was re-encrypted under a new key and the old key destroyed.
    key_rotated: bool = False


class Janitor:
    def __init__(
        self,
        worker: StoreWorker,
        source: SyncSource,
        *,
        disk_budget_bytes: int,
        interval: float = 60.0,
        checkpoint_every: float = 300.0,
        forget_peers_after: int = 30 * 86400,
        rotate_key_every: float = 86400.0,
        rotate_after_purge_gap: float = 3600.0,
    ) -> None:
        self._worker = worker
        self._source = source
        self._budget = disk_budget_bytes
        self._interval = interval
        self._checkpoint_every = checkpoint_every
        self._forget_peers_after = forget_peers_after
        self._last_tick = time.monotonic()
        self._last_checkpoint = time.monotonic()
        self._rotate_key_every = rotate_key_every
        #: A rotation rewrites the whole store: after purges, at most this often (seconds),
        #: so steady receipts do not wear an SD card out with a full rewrite per checkpoint.
        self._rotate_after_purge_gap = rotate_after_purge_gap
        self._last_rotation = time.monotonic()
        self._nudged = asyncio.Event()
        self.last = JanitorReport()
        #: Full passes (``tick``) and budget checks a nudge caused (``fit_budget``) so far.
        self.passes = 0
        self.fits = 0
        self._counted = asyncio.Condition()

    def nudge(self) -> None:
        """New items came in: check the disk budget now rather than at the next pass, so a
        flood is evicted after the session that brought it, not up to a minute later."""
        self._nudged.set()

    async def fit_budget(self) -> int:
        """Evict for the disk budget only (cheap when within it: two pragmas); return how
        many items went."""
        budget = self._budget
        source = self._source

        def work(store: Store) -> int:
            evicted = store.enforce_budget(budget)
            if evicted.items:
                source.invalidate()
                log.info(
                    "janitor: %d evicted for the disk budget (%d bytes, from %d peers)",
                    evicted.items,
                    evicted.bytes,
                    _peers(evicted),
                )
            return evicted.items

        evicted = await self._worker.call(work, bulk=True)
        await self._count("fits")
        return evicted

    async def _count(self, what: str) -> None:
        async with self._counted:
            setattr(self, what, getattr(self, what) + 1)
            self._counted.notify_all()

    async def counted(self, *, fits: int = 0, passes: int = 0) -> None:
        """Until at least ``fits`` budget checks and ``passes`` full passes have run (so a
        caller waits for the janitor's work, never for a time)."""
        async with self._counted:
            await self._counted.wait_for(lambda: self.fits >= fits and self.passes >= passes)

    def unrecorded_seconds(self) -> int:
        """Running time the store's clock does not show yet: the next tick adds it (offer
        holds end to the second, not at the next tick, SPEC.md §14.10)."""
        return max(0, int(time.monotonic() - self._last_tick))

    async def tick(self) -> JanitorReport:
        """One pass: advance the running clock by monotonic time, expire, evict, checkpoint."""
        now = time.monotonic()
        elapsed = int(now - self._last_tick)
        self._last_tick = now - (now - self._last_tick - elapsed)  # keep the fraction
        checkpoint = now - self._last_checkpoint >= self._checkpoint_every
        if checkpoint:
            self._last_checkpoint = now
        since_rotation = now - self._last_rotation
        rotation_due = since_rotation >= self._rotate_key_every
        after_purge = checkpoint and since_rotation >= self._rotate_after_purge_gap
        budget = self._budget
        source = self._source
        forget_after = self._forget_peers_after

        def work(store: Store) -> JanitorReport:
            report = JanitorReport(clock=store.advance_clock(elapsed))
            report.expired = store.expire()
            report.peers_forgotten = store.forget_peers(forget_after)
            evicted = store.enforce_budget(budget)
            report.evicted = evicted.items
            report.evicted_bytes = evicted.bytes
            report.peers_reset = _peers(evicted)
            if report.expired or report.evicted:
                source.invalidate()
            elif checkpoint:
                store.checkpoint(purged=False)
            # Between transactions, on the store thread: nothing else runs on it meanwhile.
            if rotation_due or (after_purge and store.purged_since_rotation):
                report.key_rotated = store.rotate_key()
            report.used_bytes = store.used_bytes()
            return report

        self.last = await self._worker.call(work, bulk=True)
        await self._count("passes")
        if self.last.key_rotated:
            self._last_rotation = time.monotonic()
            log.info("janitor: store key rotated, the old key destroyed")
        if self.last.expired or self.last.evicted:
            log.info(
                "janitor: %d expired, %d evicted for the disk budget (%d bytes, from %d peers,"
                " who will reconcile in full next time)",
                self.last.expired,
                self.last.evicted,
                self.last.evicted_bytes,
                self.last.peers_reset,
            )
        if self.last.peers_forgotten:
            log.info("janitor: forgot %d peers not seen for a while", self.last.peers_forgotten)
        return self.last

    async def run(self, *, pass_first: bool = False) -> None:
        """Run until cancelled: a full pass every ``interval`` (the first at once with
        ``pass_first``), and a budget check whenever ``nudge`` was called meanwhile."""
        if pass_first:
            await self.tick()
        next_tick = time.monotonic() + self._interval
        while True:
            # asyncio.timeout: wait_for (3.11) can swallow a cancellation (scheduler.run).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_tick - time.monotonic())):
                    await self._nudged.wait()
            if self._nudged.is_set():
                self._nudged.clear()
                await self.fit_budget()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self._interval
                await self.tick()


def _peers(evicted: Eviction) -> int:
    """How many peers lost items (their next session reconciles in full)."""
    return sum(1 for key in evicted.by_contributor if key != IMPORTED)
