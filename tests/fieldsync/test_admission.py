"""The admission policy (SPEC §14.8) and the rate-limited log, then both over real sockets.

First the bookkeeping alone: the oldest pre-authentication connection is dropped for a
newcomer (unproved ones before those that proved the network key), one address cannot hold
more than its cap, lingering closes are bounded, one session per certificate (the newer
replaces the older), a session cap, a shared byte budget, and a log that summarises instead
of repeating. Then a real ``Server`` on 127.0.0.1: idle outsiders are dropped for a member,
whose sync completes; a second session of the same member replaces the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fieldsync import synthetic
from fieldsync.admission import (
    DROPPED_FOR_ADDRESS,
    DROPPED_FOR_NEWER,
    DROPPED_LINGERING,
    REPLACED,
    Admission,
    ByteBudget,
    Slot,
    source_key,
)
from fieldsync.config import Config, ConfigError, load_config
from fieldsync.daemon import peer_limits
from fieldsync.lograte import QuietLog
from fieldsync.peer import PeerLimits
from fieldsync.runtime import Runtime, Server
from fieldsync_protocol.handshake import MSG2_SIZE, PeerHandshake


def policy(
    pending: int = 4, per_address: int = 2, lingering: int = 3, sessions: int = 2
) -> Admission:
    return Admission(
        pending=pending, per_address=per_address, lingering=lingering, sessions=sessions
    )


def watch(slot: Slot, seen: list[tuple[Slot, str]]) -> Slot:
    slot.on_drop(lambda reason: seen.append((slot, reason)))
    return slot


# --- before authentication --------------------------------------------------------------


def test_when_full_the_oldest_pending_connection_is_dropped_for_the_newcomer() -> None:
    admission = policy(pending=4, per_address=4)
    seen: list[tuple[Slot, str]] = []
    slots = [watch(admission.admit(f"10.0.0.{n}"), seen) for n in range(4)]
    assert admission.pending == 4 and seen == []
    newcomer = watch(admission.admit("10.0.0.9"), seen)
    assert seen == [(slots[0], DROPPED_FOR_NEWER)]
    assert admission.pending == 4
    assert newcomer.dropped is None and all(s.dropped is None for s in slots[1:])
    # Each further newcomer drops the next oldest: nobody holds a slot against newcomers.
    admission.admit("10.0.0.10")
    assert [s for s, _ in seen] == slots[:2]
    assert admission.counters.dropped_for_newer == 2 and admission.counters.admitted == 6


def test_connections_that_proved_the_network_key_are_dropped_last() -> None:
    admission = policy(pending=3, per_address=3)
    seen: list[tuple[Slot, str]] = []
    member = watch(admission.admit("10.0.0.1"), seen)
    admission.prove(member)  # its msg1 was valid
    idle = [watch(admission.admit(f"10.0.0.{n}"), seen) for n in (2, 3)]
    admission.admit("10.0.0.4")
    admission.admit("10.0.0.5")
    assert [s for s, _ in seen] == idle  # the older member survived both newcomers
    admission.admit("10.0.0.6")
    admission.admit("10.0.0.7")
    assert member.dropped is None  # still unproved newcomers to drop before it
    assert admission.pending == 3


def test_one_address_holds_at_most_its_cap_and_churns_only_itself() -> None:
    admission = policy(pending=8, per_address=2)
    seen: list[tuple[Slot, str]] = []
    other = watch(admission.admit("192.0.2.7"), seen)
    attackers = [watch(admission.admit("198.51.100.1"), seen) for _ in range(10)]
    assert admission.pending == 3  # two of the attacker's plus the other address's one
    assert other.dropped is None
    assert [s for s, _ in seen] == attackers[:8]
    assert {reason for _, reason in seen} == {DROPPED_FOR_ADDRESS}
    assert admission.counters.dropped_for_address == 8


def test_a_burst_is_judged_after_its_grace_so_a_member_that_proved_stays() -> None:
    clock = Clock()
    timers: list[tuple[float, Callable[[], None]]] = []
    admission = Admission(
        pending=2,
        per_address=8,
        lingering=3,
        sessions=2,
        grace=0.05,
        call_later=lambda delay, callback: timers.append((delay, callback)),
        clock=clock,
    )
    seen: list[tuple[Slot, str]] = []
    old = [watch(admission.admit(f"10.0.0.{n}"), seen) for n in (1, 2)]
    clock.now += 1
    # A burst: two newcomers accepted together, one of them a member; none is read yet.
    member = watch(admission.admit("10.0.0.3"), seen)
    idle = watch(admission.admit("10.0.0.4"), seen)
    assert seen == [] and admission.pending == 4  # over the limit for a moment
    assert [delay for delay, _ in timers] == [0.05]  # one judgement scheduled, not two
    admission.prove(member)  # its msg1 was in its first packet
    clock.now += 0.06
    timers.pop()[1]()
    assert [s for s, _ in seen] == old  # the oldest that had their chance, unproved
    assert admission.pending == 2 and member.dropped is None and idle.dropped is None
    # Beyond twice the limit nothing waits: the idle one (had its chance) goes first,
    # then the proved one, then the oldest newcomer.
    burst = [watch(admission.admit(f"10.0.1.{n}"), seen) for n in range(3)]
    assert [s for s, _ in seen[2:]] == [idle, member, burst[0]]
    assert admission.pending == 2
    clock.now += 0.06
    timers.pop()[1]()  # the judgement the burst had scheduled finds nothing left to do
    assert len(seen) == 5 and timers == []


def test_ipv6_sources_are_counted_by_their_slash_64() -> None:
    admission = policy(pending=8, per_address=2)
    seen: list[tuple[Slot, str]] = []
    hosts = [watch(admission.admit(f"2001:db8:1:2::{n:x}"), seen) for n in range(1, 4)]
    assert seen == [(hosts[0], DROPPED_FOR_ADDRESS)]  # three addresses, one /64
    admission.admit("2001:db8:1:3::1")  # the next /64 is another source
    admission.admit("::ffff:192.0.2.1")
    admission.admit("192.0.2.1")  # the same IPv4 host, mapped or not
    admission.admit("192.0.2.1")
    assert admission.counters.dropped_for_address == 2 and admission.pending == 5
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert source_key("memory:a") == "memory:a"


def test_a_released_slot_is_free_again_and_never_dropped_later() -> None:
    admission = policy(pending=2, per_address=2)
    seen: list[tuple[Slot, str]] = []
    done = watch(admission.admit("10.0.0.1"), seen)
    done.release()
    done.release()  # idempotent
    assert admission.pending == 0
    for n in range(2):
        admission.admit(f"10.0.0.{n + 2}")
    assert seen == [] and done.dropped is None


def test_lingering_connections_are_bounded_oldest_cut_first() -> None:
    admission = policy(lingering=3)
    seen: list[tuple[Slot, str]] = []
    places = [watch(admission.linger("10.0.0.1"), seen) for _ in range(5)]
    assert admission.lingering == 3
    assert seen == [(places[0], DROPPED_LINGERING), (places[1], DROPPED_LINGERING)]
    assert admission.pending == 0  # lingering holds no pre-authentication slot


# --- after authentication ---------------------------------------------------------------


def test_one_session_per_certificate_the_newer_replaces_the_older() -> None:
    admission = policy(sessions=2)
    seen: list[tuple[Slot, str]] = []
    first = admission.open_session(b"K" * 32)
    assert first is not None
    watch(first, seen)
    second = admission.open_session(b"K" * 32)
    assert second is not None and second.dropped is None
    assert seen == [(first, REPLACED)]
    assert admission.sessions == 1
    first.release()  # the replaced session ends later: it must not free the new one's place
    assert admission.sessions == 1
    third = admission.open_session(b"K" * 32)
    assert third is not None
    assert getattr(second, "dropped") == REPLACED  # noqa: B009 - set by open_session
    assert admission.counters.sessions_replaced == 2


def test_sessions_beyond_the_cap_are_refused_until_one_ends() -> None:
    admission = policy(sessions=2)
    a, b = admission.open_session(b"A" * 32), admission.open_session(b"B" * 32)
    assert a is not None and b is not None
    assert admission.open_session(b"C" * 32) is None
    assert admission.counters.sessions_refused == 1
    assert admission.open_session(b"A" * 32) is not None  # a replacement still fits
    b.release()
    assert admission.open_session(b"C" * 32) is not None
    assert admission.sessions == 2


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        policy(per_address=0)
    with pytest.raises(ValueError, match="at least 1"):
        ByteBudget(0)


async def test_byte_budget_makes_readers_wait_until_bytes_are_released() -> None:
    budget = ByteBudget(100)
    await budget.reserve(60)
    waiting = asyncio.create_task(budget.reserve(50))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done() and budget.used == 60
    budget.release(60)
    await asyncio.wait_for(waiting, 5)
    assert budget.used == 50 and budget.peak == 60
    await budget.reserve(10)  # fits alongside
    budget.release(60)
    await budget.reserve(500)  # larger than the whole budget: passes when nothing is queued
    assert budget.used == 500
    with pytest.raises(ValueError, match="releasing"):
        budget.release(501)


# --- configuration ------------------------------------------------------------------------


def test_configured_limits_reach_the_peer_driver_and_defaults_agree(tmp_path: Path) -> None:
    assert peer_limits(Config()) == PeerLimits()  # one default for config and driver
    path = tmp_path / "fieldsync.toml"
    path.write_text(
        "[limits]\npending_handshakes = 128\npending_per_address = 128\n"
        "sessions = 4\nbuffer_mb = 16\n",
        encoding="utf-8",
    )
    limits = peer_limits(load_config(path, {}, {}))
    assert (limits.max_pending_handshakes, limits.max_pending_per_address) == (128, 128)
    assert limits.max_sessions == 4 and limits.max_total_queued_bytes == 16 * 1024 * 1024
    with pytest.raises(ConfigError, match="pending_per_address"):
        load_config(None, {"FIELDSYNC_LIMITS_PENDING_PER_ADDRESS": "0"}, {})


# --- the rate-limited log ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_quiet_log_writes_a_burst_then_one_summary_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.quiet")
    clock = Clock()
    quiet = QuietLog(logger, interval=60.0, burst=3, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.quiet"):
        for n in range(10_000):
            quiet.log("handshake failed", logging.INFO, "conn %d: handshake failed", n)
        quiet.log("lost", logging.INFO, "connection lost")
        assert [r.getMessage() for r in caplog.records] == [
            "conn 0: handshake failed",
            "conn 1: handshake failed",
            "conn 2: handshake failed",
            "connection lost",
        ]
        clock.now += 61
        quiet.flush()
        summary = caplog.records[-1].getMessage()
        assert summary.startswith("handshake failed: 9997 more like this in the last 61 s")
        # A new interval starts with a fresh burst.
        quiet.log("handshake failed", logging.INFO, "again")
        assert caplog.records[-1].getMessage() == "again"
        for _ in range(5):
            quiet.log("handshake failed", logging.WARNING, "again")
        quiet.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4 + 1 + 3 + 1
    assert messages[-1].startswith("handshake failed: 3 more like this")
    assert caplog.records[-1].levelno == logging.WARNING  # the worst level it stood for
    assert sum(len(m) for m in messages) < 2_000  # 10,000 events, a few hundred bytes of log


async def test_quiet_log_summarises_on_a_timer_when_the_flood_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.quiet.timer")
    quiet = QuietLog(logger, interval=0.05, burst=1)
    with caplog.at_level(logging.INFO, logger="test.quiet.timer"):
        for _ in range(20):
            quiet.log("dropped", logging.INFO, "dropped")
        for _ in range(200):  # nothing else is logged: only the timer can write the summary
            if len(caplog.records) == 2:
                break
            await asyncio.sleep(0.01)
    assert [r.getMessage().split(" more")[0] for r in caplog.records] == ["dropped", "dropped: 19"]


# --- over real sockets ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Net:
    server: Path
    member: Path
    other: Path


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    root = tmp_path_factory.mktemp("admission") / "net"
    network = synthetic.create_network(root)
    server, member = network.add_node("server"), network.add_node("member")
    other = network.add_node("other")
    synthetic.fill_store(member, network.manifest, synthetic.sealed_reports(network.manifest, 5))
    return Net(server, member, other)


@contextlib.asynccontextmanager
async def serving(home: Path, limits: PeerLimits) -> AsyncIterator[tuple[Runtime, int]]:
    runtime = await Runtime.open(home, limits=limits)
    server = Server(runtime)
    try:
        _host, port = await server.listen_tcp("127.0.0.1", 0)
        yield runtime, port
    finally:
        await server.close()
        await runtime.close()


async def until(done: Callable[[], bool], seconds: float) -> None:
    """Poll ``done`` (observable state, no sleeping to synchronise) under a deadline."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the expected state was never reached"
        await asyncio.sleep(0.01)


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (an outsider must get nothing)."""
    received = b""
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(30):
            while chunk := await reader.read(4096):
                received += chunk
    return received


async def test_idle_outsiders_are_dropped_for_a_member_who_syncs(net: Net) -> None:
    limits = PeerLimits(
        max_pending_handshakes=3,
        max_pending_per_address=4,
        first_message_timeout=60.0,  # only dropping can free a slot in this test
        handshake_timeout=60.0,
        silent_close=(0.0, 0.01),
    )
    async with serving(net.server, limits) as (server, port):
        admission = server.context.admission
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await until(lambda: admission.pending == 3, 30)
        # A fourth connection: once it had its moment to send (it sends nothing), the
        # oldest idle one is dropped for it and gets nothing, not one byte.
        idle.append(await asyncio.open_connection("127.0.0.1", port))
        await until(lambda: admission.counters.dropped_for_newer == 1, 30)
        assert await closed_by_server(idle[0][0]) == b""
        assert admission.pending == 3
        # A member's connection is judged after its msg1 was read: it proves the network
        # key, an idle one is dropped in its place if need be, and the member syncs.
        member = await Runtime.open(net.member)
        try:
            outcome = await member.sync_with(f"127.0.0.1:{port}")
        finally:
            await member.close()
        assert outcome.complete, outcome.error
        assert outcome.stats.items_sent == 5
        for _reader, writer in idle:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def silent_session(
    member: Runtime, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A member's real handshake, driven by hand, and then not one session message."""
    ctx = member.context
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    handshake = PeerHandshake(
        initiator=True,
        network_key=ctx.network_key,
        static_secret=ctx.static_secret,
        certificate=ctx.certificate,
        manifest=ctx.manifest,
        ephemeral_secret=secrets.token_bytes(32),
    )
    writer.write(handshake.data_to_send())
    handshake.receive_data(await asyncio.wait_for(reader.readexactly(MSG2_SIZE), 30))
    writer.write(handshake.data_to_send())
    return reader, writer


async def test_a_member_beyond_the_session_cap_gets_an_authenticated_refusal(net: Net) -> None:
    limits = PeerLimits(silent_close=(0.0, 0.01), max_sessions=1)
    async with serving(net.server, limits) as (server, port):
        admission = server.context.admission
        member, other = await Runtime.open(net.member), await Runtime.open(net.other)
        try:
            _reader, writer = await silent_session(member, port)
            await until(lambda: admission.sessions == 1, 30)
            refused = await other.sync_with(f"127.0.0.1:{port}")
            writer.close()
        finally:
            await member.close()
            await other.close()
        await until(lambda: len(server.outcomes) == 2, 30)
    assert not refused.complete and refused.peer is not None  # it met the real server
    assert refused.error is not None and "ended the stream" in refused.error, refused.error
    assert refused.stats.items_sent == 0
    assert "refused: already serving 1 peers" in [o.error for o in server.outcomes]
    assert admission.counters.sessions_refused == 1


async def test_a_second_session_of_the_same_member_replaces_the_first(net: Net) -> None:
    limits = PeerLimits(silent_close=(0.0, 0.01), idle_timeout=60.0)
    async with serving(net.server, limits) as (server, port):
        member = await Runtime.open(net.member)
        try:
            # Session 1: a real handshake by hand, then silence (a link that died quietly).
            reader, writer = await silent_session(member, port)
            admission = server.context.admission
            await until(lambda: admission.sessions == 1, 30)
            # Session 2 of the same certificate completes at once; session 1 is ended.
            outcome = await member.sync_with(f"127.0.0.1:{port}")
            assert outcome.complete, outcome.error
            await closed_by_server(reader)
            writer.close()
        finally:
            await member.close()
        await until(lambda: len(server.outcomes) == 2, 30)
        errors = [o.error for o in server.outcomes]
    assert errors.count(None) == 1
    assert [e for e in errors if e] == [f"session ended: {REPLACED}"]
    assert admission.counters.sessions_replaced == 1 and admission.sessions == 0
