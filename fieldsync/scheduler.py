"""When to sync with whom: periodic re-sync, sync on appearance and on new local items,
exponential back-off with jitter on failure, a concurrency limit and no storms.

The scheduler knows targets only as strings (``HOST:PORT`` or a WebSocket URL) and a
``sync`` coroutine to call; it knows nothing of transports or the store. Time and
randomness are injected so tests drive it with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fieldsync.lognames import address_name

log = logging.getLogger(__name__)

#: A newly seen peer is synced after a random delay up to this many seconds, so that many
#: nodes appearing at once (a meeting starts) do not all connect in the same instant.
APPEAR_JITTER = 2.0


@dataclass
class TargetState:
    target: str
    origin: str  # "static", "discovered" or "upstream"
    next_due: float = 0.0
    failures: int = 0
    in_flight: bool = False
    last_attempt: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    last_items_in: int = 0
    last_items_out: int = 0
    syncs: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "origin": self.origin,
            "failures": self.failures,
            "in_flight": self.in_flight,
            "last_attempt": self.last_attempt,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "last_items_in": self.last_items_in,
            "last_items_out": self.last_items_out,
            "syncs": self.syncs,
        }


@dataclass(frozen=True)
class SyncResult:
    ok: bool
    items_in: int = 0
    items_out: int = 0
    error: str | None = None


@dataclass
class SchedulerPolicy:
    interval: float = 300.0
    upstream_interval: float = 60.0
    max_concurrent: int = 4
    backoff_initial: float = 2.0
    backoff_max: float = 300.0


@dataclass
class Scheduler:
    sync: Callable[[str], Awaitable[SyncResult]]
    policy: SchedulerPolicy = field(default_factory=SchedulerPolicy)
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    on_new_items: Callable[[str], None] | None = None
    targets: dict[str, TargetState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        #: The attempt running for each target in flight.
        self._attempts: dict[str, asyncio.Task[None]] = {}

    # --- inputs --------------------------------------------------------------------------

    def add(self, target: str, origin: str) -> None:
        """A target appeared (discovered, configured or upstream): sync with it soon."""
        state = self.targets.get(target)
        if state is None:
            self.targets[target] = TargetState(
                target, origin, next_due=self.clock() + self.rng.uniform(0, APPEAR_JITTER)
            )
        elif state.failures:
            # It came back: forget the back-off, it is reachable again.
            state.failures = 0
            state.next_due = min(state.next_due, self.clock() + self.rng.uniform(0, APPEAR_JITTER))
        self._wake.set()

    def remove(self, target: str, even_in_flight: bool = False) -> None:
        """Forget a discovered target (not while a sync with it runs, unless told: the
        running attempt then records its result on a state nobody lists any more)."""
        state = self.targets.get(target)
        if (
            state is not None
            and state.origin == "discovered"
            and (even_in_flight or not state.in_flight)
        ):
            del self.targets[target]

    def forget_discovered(self) -> int:
        """Forget every discovered target and cancel the syncs running with them (the
        network key switched, SPEC.md §17.5: what discovery found under the previous key is
        no lead any more); return how many were forgotten. Nothing of them is recorded."""
        gone = [t for t, state in self.targets.items() if state.origin == "discovered"]
        for target in gone:
            del self.targets[target]
            attempt = self._attempts.pop(target, None)
            if attempt is not None:
                attempt.cancel()
        return len(gone)

    def poke(self, except_target: str | None = None) -> None:
        """New items arrived (locally or from a peer): pass them on soon to everyone else."""
        now = self.clock()
        for state in self.targets.values():
            if state.target != except_target and not state.failures:
                state.next_due = min(state.next_due, now + self.rng.uniform(0, APPEAR_JITTER))
        self._wake.set()

    # --- the loop ------------------------------------------------------------------------

    def due(self) -> list[TargetState]:
        now = self.clock()
        ready = [s for s in self.targets.values() if not s.in_flight and s.next_due <= now]
        ready.sort(key=lambda s: (s.origin != "upstream", s.next_due))
        free = self.policy.max_concurrent - sum(1 for s in self.targets.values() if s.in_flight)
        return ready[: max(free, 0)]

    def seconds_until_next(self) -> float | None:
        waiting = [s.next_due for s in self.targets.values() if not s.in_flight]
        return None if not waiting else max(0.0, min(waiting) - self.clock())

    async def run(self) -> None:
        """Run until cancelled; cancelling also cancels the syncs in flight."""
        try:
            while True:
                for state in self.due():
                    state.in_flight = True
                    task = asyncio.create_task(self._attempt(state))
                    self._running.add(task)
                    self._attempts[state.target] = task
                    task.add_done_callback(self._running.discard)
                    task.add_done_callback(functools.partial(self._attempt_done, state.target))
                self._wake.clear()
                delay = self.seconds_until_next()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
                # cancellation that lands while the wake-up completes, and the daemon's
                # stop then waited for this loop forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            for task in list(self._running):
                task.cancel()
            # A cancelled attempt records nothing: free its target for the next run().
            for state in self.targets.values():
                state.in_flight = False

    def _attempt_done(self, target: str, task: asyncio.Task[None]) -> None:
        if self._attempts.get(target) is task:
            del self._attempts[target]

    async def _attempt(self, state: TargetState) -> None:
        state.last_attempt = time.time()
        try:
            result = await self.sync(state.target)
        except Exception as exc:
            log.exception("sync with %s crashed", address_name(state.target))
            result = SyncResult(ok=False, error=f"internal error: {exc}")
        self.record(state, result)
        self._wake.set()

    def record(self, state: TargetState, result: SyncResult) -> None:
        now = self.clock()
        state.in_flight = False
        state.syncs += 1
        if result.ok:
            state.failures = 0
            state.last_success = time.time()
            state.last_error = None
            state.last_items_in = result.items_in
            state.last_items_out = result.items_out
            interval = (
                self.policy.upstream_interval
                if state.origin == "upstream"
                else self.policy.interval
            )
            state.next_due = now + interval * self.rng.uniform(0.9, 1.1)
            if result.items_in and self.on_new_items is not None:
                self.on_new_items(state.target)
        else:
            state.failures += 1
            state.last_error = result.error
            backoff = min(
                self.policy.backoff_max, self.policy.backoff_initial * 2 ** (state.failures - 1)
            )
            # "Full jitter" back-off: many nodes failing together spread out their retries.
            state.next_due = now + self.rng.uniform(backoff / 2, backoff)
