"""Scheduler policy on a fake clock: appearance, periodic re-sync, back-off with jitter,
concurrency limit, no storm, passing new items on."""

from __future__ import annotations

import asyncio
import random

import pytest

from fieldsync.scheduler import APPEAR_JITTER, Scheduler, SchedulerPolicy, SyncResult


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def never_called(target: str) -> SyncResult:  # pragma: no cover - policy-only tests
    raise AssertionError(f"unexpected sync with {target}")


def make(policy: SchedulerPolicy | None = None) -> tuple[Scheduler, FakeClock]:
    clock = FakeClock()
    return Scheduler(
        never_called, policy or SchedulerPolicy(), rng=random.Random(7), clock=clock
    ), clock


async def test_new_peer_is_due_within_the_appearance_jitter() -> None:
    scheduler, clock = make()
    scheduler.add("10.0.0.2:7341", "discovered")
    assert scheduler.targets["10.0.0.2:7341"].next_due <= clock.now + APPEAR_JITTER
    clock.now += APPEAR_JITTER
    assert [s.target for s in scheduler.due()] == ["10.0.0.2:7341"]


async def test_many_peers_appearing_at_once_are_spread_and_capped() -> None:
    scheduler, clock = make(SchedulerPolicy(max_concurrent=3))
    for i in range(50):
        scheduler.add(f"10.0.0.{i}:7341", "discovered")
    dues = sorted(s.next_due for s in scheduler.targets.values())
    assert dues[-1] - dues[0] > APPEAR_JITTER / 2  # not all in the same instant
    clock.now += APPEAR_JITTER
    batch = scheduler.due()
    assert len(batch) == 3  # the concurrency limit
    for state in batch:
        state.in_flight = True
    assert scheduler.due() == []  # nothing more until one finishes
    scheduler.record(batch[0], SyncResult(ok=True))
    assert len(scheduler.due()) == 1


async def test_failures_back_off_exponentially_with_jitter_up_to_the_maximum() -> None:
    policy = SchedulerPolicy(backoff_initial=2.0, backoff_max=60.0)
    scheduler, clock = make(policy)
    scheduler.add("10.0.0.9:7341", "static")
    state = scheduler.targets["10.0.0.9:7341"]
    delays = []
    for _ in range(10):
        scheduler.record(state, SyncResult(ok=False, error="refused"))
        delays.append(state.next_due - clock.now)
    for failures, delay in enumerate(delays, start=1):
        ceiling = min(60.0, 2.0 * 2 ** (failures - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert delays[-1] <= 60.0 and delays[3] > delays[0]
    assert state.last_error == "refused"


async def test_success_resets_back_off_and_schedules_the_periodic_resync() -> None:
    scheduler, clock = make(SchedulerPolicy(interval=300.0, upstream_interval=60.0))
    scheduler.add("peer:1", "static")
    scheduler.add("wss://hub/sync", "upstream")
    peer, hub = scheduler.targets["peer:1"], scheduler.targets["wss://hub/sync"]
    scheduler.record(peer, SyncResult(ok=False, error="x"))
    scheduler.record(peer, SyncResult(ok=True, items_in=0))
    assert peer.failures == 0 and peer.last_error is None
    assert 270 <= peer.next_due - clock.now <= 330
    scheduler.record(hub, SyncResult(ok=True))
    assert 54 <= hub.next_due - clock.now <= 66


async def test_new_items_from_one_peer_are_passed_on_to_the_others_soon() -> None:
    scheduler, clock = make(SchedulerPolicy(interval=300.0))
    scheduler.on_new_items = lambda target: scheduler.poke(except_target=target)
    for name in ("a:1", "b:1", "c:1"):
        scheduler.add(name, "static")
        scheduler.record(scheduler.targets[name], SyncResult(ok=True))
    scheduler.record(scheduler.targets["a:1"], SyncResult(ok=True, items_in=5))
    soon = {s.target for s in scheduler.targets.values() if s.next_due <= clock.now + APPEAR_JITTER}
    assert soon == {"b:1", "c:1"}


async def test_run_loop_syncs_due_targets_and_survives_a_crashing_sync() -> None:
    calls: list[str] = []
    done = asyncio.Event()

    async def sync(target: str) -> SyncResult:
        calls.append(target)
        if target == "bad:1":
            raise RuntimeError("boom")
        if len(calls) >= 2:
            done.set()
        return SyncResult(ok=True, items_in=1)

    scheduler = Scheduler(sync, SchedulerPolicy(), rng=random.Random(1))
    scheduler.add("bad:1", "static")
    scheduler.add("good:1", "static")
    for state in scheduler.targets.values():
        state.next_due = 0.0
    task = asyncio.create_task(scheduler.run())
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert set(calls) == {"bad:1", "good:1"}
    assert scheduler.targets["bad:1"].failures == 1
    assert "internal error" in (scheduler.targets["bad:1"].last_error or "")


async def test_discovered_targets_are_forgotten_when_gone_static_ones_are_kept() -> None:
    scheduler, _ = make()
    scheduler.add("d:1", "discovered")
    scheduler.add("s:1", "static")
    scheduler.remove("d:1")
    scheduler.remove("s:1")
    assert set(scheduler.targets) == {"s:1"}


async def test_forgetting_discovered_targets_cancels_their_syncs_in_flight() -> None:
    """The network-key switch (SPEC.md §17.5): every discovered target goes, its running sync
    is cancelled and records nothing; configured targets and their syncs go on."""
    started: dict[str, asyncio.Event] = {t: asyncio.Event() for t in ("d:1", "d:2", "s:1")}
    cancelled: list[str] = []
    release, returned = asyncio.Event(), asyncio.Event()

    async def sync(target: str) -> SyncResult:
        started[target].set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.append(target)
            raise
        returned.set()  # the scheduler records the result in the same step
        return SyncResult(ok=True)

    scheduler = Scheduler(sync, SchedulerPolicy(), rng=random.Random(1))
    for target in started:
        scheduler.add(target, "static" if target.startswith("s") else "discovered")
        scheduler.targets[target].next_due = 0.0
    task = asyncio.create_task(scheduler.run())
    try:
        for event in started.values():
            await event.wait()
        static = scheduler.targets["s:1"]
        assert scheduler.forget_discovered() == 2
        assert set(scheduler.targets) == {"s:1"}
        release.set()
        await returned.wait()  # the static sync finishes; the cancelled ones never do
        assert static.syncs == 1
        assert sorted(cancelled) == ["d:1", "d:2"]
        assert static.failures == 0 and static.in_flight is False
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_cancel_while_being_woken_stops_the_loop() -> None:
    """A stop that coincides with a wake-up ends run(): the daemon's SIGTERM must not hang.

    Python 3.11's ``asyncio.wait_for`` returns the inner result instead of raising when the
    cancellation and the wake-up land in the same loop turn; the loop then ran on forever.
    """
    scheduler, _ = make()
    scheduler.add("10.0.0.7:7341", "static")
    scheduler.targets["10.0.0.7:7341"].failures = 1  # poke() leaves it due in an hour
    scheduler.targets["10.0.0.7:7341"].next_due += 3600  # so run() waits with a timeout
    for turns in range(6):  # the cancellation lands at each step of the wake-up in turn
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0)  # run() is now waiting for a wake-up
        scheduler.poke()
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), timeout=5)
