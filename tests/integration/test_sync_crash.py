"""kill -9 of either side during a 20,000-item sync (issue 3 "Must show").

Node A (10,000 sealed reports) serves with ``fieldsync run``; node B (another 10,000) runs
``fieldsync sync``, so 20,000 items cross in one session. In each round one side is
SIGKILLed: alternately the server and the client, at a moment drawn (seeded) from the
measured length of a full sync, plus chosen moments: at once, as the first batch lands on
either side, and near the end. Then the dead side is restarted and one more sync runs.
Afterwards both stores are equal and hold the union of what both held at first (nothing
lost), ``integrity_check`` is ok, no id appears twice and every item's bytes hash to its id.

Each round starts from a fresh copy of one pre-built store pair. The 100-round soak is
``@pytest.mark.slow`` (``FIELDSYNC_SOAK=1``).
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.sync_support import (
    Pair,
    ServerProcess,
    check_store,
    copy_pair,
    item_count,
    run_sync,
    shared_pair,
    start_server,
    start_sync,
)

SEED = 20251125
#: Rounds run side by side (each round's two processes leave CPU idle on round trips).
PARALLEL = 2


@dataclass(frozen=True)
class Kill:
    victim: str  # "server" (the ``run`` process) or "client" (the ``sync`` process)
    what: str  # how the moment was chosen
    delay: float | None = None  # seconds after the client started, or None: ...
    poll: str | None = None  # ... as this side ("a" or "b") has stored ``stored`` new items
    stored: int = 1


def plan(rounds: int, duration: float, seed: int) -> list[Kill]:
    rng = random.Random(seed)
    chosen = [
        Kill("server", "at once", delay=0.0),
        Kill("client", "first batch stored on A", poll="a"),
        Kill("server", "first batch stored on B", poll="b"),
        Kill("client", "9,000 of 10,000 stored on B", poll="b", stored=9_000),
        Kill("server", "9,500 of 10,000 stored on A", poll="a", stored=9_500),
        Kill("client", "at once", delay=0.0),
    ]
    kills = chosen[: min(rounds, len(chosen))]
    while len(kills) < rounds:
        victim = "server" if len(kills) % 2 == 0 else "client"
        kills.append(Kill(victim, "random", delay=rng.uniform(0.0, duration)))
    return kills


def _wait_for_kill_point(kill: Kill, client: subprocess.Popen[bytes], pair: Pair) -> None:
    """Return at the chosen moment (early if the client has already finished)."""
    if kill.delay is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            client.wait(timeout=kill.delay)
        return
    home = pair.a if kill.poll == "a" else pair.b
    goal = len(pair.ids_a if kill.poll == "a" else pair.ids_b) + kill.stored
    deadline = time.monotonic() + 60
    while item_count(home) < goal:
        assert time.monotonic() < deadline, "the sync never stored enough"
        try:
            client.wait(timeout=0.005)  # the poll interval; returns at once if it finished
        except subprocess.TimeoutExpired:
            continue
        return


@dataclass
class RoundResult:
    kill: Kill
    client_exit: int
    a_at_kill: int
    b_at_kill: int
    recovery: dict[str, object]


def crash_round(base: Pair, root: Path, kill: Kill) -> RoundResult:
    started: list[ServerProcess] = []
    try:
        return _crash_round(base, root, kill, started)
    finally:
        for process in started:  # only left running if the round failed
            if process.proc.poll() is None:
                process.kill()


def _crash_round(base: Pair, root: Path, kill: Kill, started: list[ServerProcess]) -> RoundResult:
    pair = copy_pair(base, root)
    server: ServerProcess | None = start_server(pair.a, log=root / "run.log")
    assert server is not None
    started.append(server)
    client = start_sync(pair.b, server.tcp_target, root / "sync.log")
    try:
        _wait_for_kill_point(kill, client, pair)
        if kill.victim == "server":
            server.kill()
            server = None
            client_exit = client.wait(60)  # the survivor notices and gives up on its own
        else:
            client.kill()
            client_exit = client.wait(60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(60)
        if client.stdout is not None:
            client.stdout.close()
    # what each side had durably stored when the other died (the killed one is checked
    # before anything touches it again)
    a_at_kill, b_at_kill = item_count(pair.a), item_count(pair.b)
    check_store(pair.a if kill.victim == "server" else pair.b)
    try:
        if server is None:
            server = start_server(pair.a, log=root / "run.log")
            started.append(server)
        recovery = run_sync(pair.b, server.tcp_target)
        assert recovery.complete, (kill, recovery, server.log_text())
    finally:
        if server is not None:
            assert server.stop() == 0, server.log_text()
    ids_a, ids_b = check_store(pair.a), check_store(pair.b)
    assert ids_a == ids_b, kill
    assert ids_a == pair.union, kill  # nothing lost, nothing invented
    return RoundResult(kill, client_exit, a_at_kill, b_at_kill, recovery.summary)


def measure_full_sync(base: Pair, root: Path) -> float:
    pair = copy_pair(base, root)
    server = start_server(pair.a, log=root / "run.log")
    try:
        started = time.monotonic()
        result = run_sync(pair.b, server.tcp_target)
        duration = time.monotonic() - started
        assert result.complete, (result, server.log_text())
        assert result.summary["items_sent"] == result.summary["items_received"] == 10_000
    finally:
        assert server.stop() == 0
    return duration


def run_crash_rounds(tmp_path: Path, base: Pair, rounds: int, seed: int) -> list[RoundResult]:
    # Rounds run PARALLEL at a time (each its own copy, processes and ports), so the kill
    # window is measured under the same load: PARALLEL full syncs side by side.
    with ThreadPoolExecutor(PARALLEL) as pool:
        durations = list(
            pool.map(lambda n: measure_full_sync(base, tmp_path / f"measure-{n}"), range(PARALLEL))
        )
        duration = max(durations)
        print(f"\nfull sync of 20,000 items, {PARALLEL} side by side: {duration:.2f} s")
        kills = plan(rounds, duration, seed)
        results = list(
            pool.map(
                lambda n: crash_round(base, tmp_path / f"round-{n:03d}", kills[n]), range(rounds)
            )
        )
    for index, result in enumerate(results):
        kill = result.kill
        r = result.recovery
        when = f"{kill.delay:.2f} s" if kill.delay is not None else "polled"
        print(
            f"round {index:3d}: kill -9 {kill.victim:6s} ({kill.what}, {when}):"
            f" client exit {result.client_exit},"
            f" A held {result.a_at_kill}, B held {result.b_at_kill};"
            f" recovery {r['mode']}: sent {r['items_sent']}, received {r['items_received']}"
        )
        # the killed side's file never loses what it had committed: the count only grows
        assert result.a_at_kill >= len(base.ids_a) and result.b_at_kill >= len(base.ids_b)
    # at least some kills hit the middle of the transfer (else the test proves little)
    union = len(base.union)
    mid = [x for x in results if x.a_at_kill < union or x.b_at_kill < union]
    assert len(mid) >= rounds // 2, [(x.kill, x.a_at_kill, x.b_at_kill) for x in results]
    return results


@pytest.fixture
def base(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return shared_pair(tmp_path_factory.getbasetemp())


def test_kill9_either_side_at_20_points(tmp_path: Path, base: Pair) -> None:
    results = run_crash_rounds(tmp_path, base, 20, SEED)
    assert {r.kill.victim for r in results} == {"server", "client"}


@pytest.mark.slow
def test_kill9_soak_100_rounds(tmp_path: Path, base: Pair) -> None:
    run_crash_rounds(tmp_path, base, 100, SEED + 1)
