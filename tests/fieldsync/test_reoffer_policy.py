"""The author's re-offer schedule (SPEC.md §14.9): when a session ignores the delta cursor."""

from __future__ import annotations

from fieldsync.reoffer import ReofferPolicy

PEER = b"p" * 32
OTHER = b"o" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def schedule(policy: ReofferPolicy, contacts: int, *, undelivered: bool = True) -> list[bool]:
    return [policy.full_reconcile(PEER, undelivered=undelivered) for _ in range(contacts)]


def test_first_contact_then_every_nth_while_reports_wait() -> None:
    policy = ReofferPolicy(every_contacts=4, interval=10.0**9, clock=FakeClock())
    assert schedule(policy, 9) == [True, False, False, False, True, False, False, False, True]


def test_each_peer_has_its_own_count() -> None:
    policy = ReofferPolicy(every_contacts=3, interval=10.0**9, clock=FakeClock())
    assert schedule(policy, 2) == [True, False]
    assert policy.full_reconcile(OTHER, undelivered=True)  # first contact with that peer
    assert schedule(policy, 2) == [False, True]


def test_the_interval_makes_it_due_whatever_the_count() -> None:
    clock = FakeClock()
    policy = ReofferPolicy(every_contacts=100, interval=3600.0, clock=clock)
    assert schedule(policy, 3) == [True, False, False]
    clock.now += 3599
    assert schedule(policy, 1) == [False]
    clock.now += 1
    assert schedule(policy, 2) == [True, False]


def test_never_when_every_report_is_receipted() -> None:
    clock = FakeClock()
    policy = ReofferPolicy(every_contacts=2, interval=60.0, clock=clock)
    assert schedule(policy, 5, undelivered=False) == [False] * 5
    clock.now += 10_000
    assert schedule(policy, 3, undelivered=False) == [False] * 3
    # A report written now waits for its receipt: the overdue peer reconciles at once.
    assert schedule(policy, 3) == [True, False, True]
