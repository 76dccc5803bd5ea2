"""The peer driver in process: ``run_peer`` over ``memory_pair()`` and loopback TCP.

Real nodes (HQ, enrolled members, real sealed reports), real stores, real handshakes; no
mocks. An autouse blockbuster fixture fails any test in which something blocks the event
loop (SQLite, file or socket I/O, sleeps, lock waits): the driver must do all store work
on the store thread. Test set-up and checks that touch files therefore run in sync
fixtures or through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from fieldsync import peer as peer_module
from fieldsync import synthetic
from fieldsync.hq import HQ, IngestSummary
from fieldsync.node import Node
from fieldsync.peer import PeerContext, PeerLimits, SyncOutcome, SyncSource, run_peer
from fieldsync.runtime import Runtime, Server
from fieldsync.store import Store
from fieldsync.transport import MemoryTransport, Transport, TransportError, memory_pair
from fieldsync_protocol.crypto import box_public_key
from fieldsync_protocol.handshake import PeerHandshake
from fieldsync_protocol.items import ItemKind
from fieldsync_protocol.membership import Manifest
from fieldsync_protocol.riblt import CodedSymbols

PASSPHRASE = synthetic.PASSPHRASE
A_REPORTS = 300
B_REPORTS = 200
#: Tests must not wait seconds for the responder's deliberate silent close.
FAST = PeerLimits(silent_close=(0.0, 0.01))


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Any blocking call made on a running event loop raises ``BlockingError``."""
    with blockbuster_ctx() as bb:
        yield bb


# --- homes ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Homes:
    root: Path
    manifest: Manifest

    @property
    def hq(self) -> Path:
        return self.root / "hq"

    @property
    def a(self) -> Path:
        """An author node holding ``A_REPORTS`` of its own reports."""
        return self.root / "a"

    @property
    def b(self) -> Path:
        """A relay holding ``B_REPORTS`` reports of some other author."""
        return self.root / "b"

    @property
    def c(self) -> Path:
        """A relay holding only the manifest."""
        return self.root / "c"

    @property
    def outsider(self) -> Path:
        """A member of another network (another network key, another HQ)."""
        return self.root / "other" / "x"


@pytest.fixture(scope="session")
def base_homes(tmp_path_factory: pytest.TempPathFactory) -> Homes:
    root = tmp_path_factory.mktemp("peer") / "net"
    network = synthetic.create_network(root)
    a = network.add_node("a", author=True)
    b = network.add_node("b")
    network.add_node("c")
    synthetic.create_network(root / "other", "other").add_node("x")
    node = Node(a)
    try:
        seed = node.unlock_author(PASSPHRASE)
    finally:
        node.close()
    own = synthetic.sealed_reports(network.manifest, A_REPORTS, author_seed=seed)
    synthetic.fill_store(a, network.manifest, own)
    synthetic.fill_store(b, network.manifest, synthetic.sealed_reports(network.manifest, B_REPORTS))
    return Homes(root, network.manifest)


@pytest.fixture
def homes(base_homes: Homes, tmp_path: Path) -> Homes:
    shutil.copytree(base_homes.root, tmp_path / "net")
    return dataclasses.replace(base_homes, root=tmp_path / "net")


# --- helpers ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def opened(home: Path, limits: PeerLimits = FAST) -> AsyncIterator[Runtime]:
    runtime = await Runtime.open(home, limits=limits)
    try:
        yield runtime
    finally:
        await runtime.close()


async def ids_of(runtime: Runtime) -> set[bytes]:
    return await runtime.worker.call(lambda store: set(store.sorted_ids()))


async def kinds_of(runtime: Runtime) -> dict[str, int]:
    def count(store: Store) -> dict[str, int]:
        rows = store.db.conn.execute("SELECT kind, count(*) FROM items GROUP BY kind").fetchall()
        return {ItemKind(kind).name.lower(): n for kind, n in rows}

    return await runtime.worker.call(count)


async def over_memory(
    initiator: PeerContext, responder: PeerContext, *, wrap: type[BreakingTransport] | None = None
) -> tuple[SyncOutcome, SyncOutcome]:
    end_i, end_r = memory_pair()
    first: Transport = end_i if wrap is None else wrap(end_i)
    return await asyncio.gather(
        run_peer(first, initiator, initiator=True), run_peer(end_r, responder, initiator=False)
    )


async def over_tcp(initiator: Runtime, responder: Runtime) -> tuple[SyncOutcome, SyncOutcome]:
    server = Server(responder)
    host, port = await server.listen_tcp("127.0.0.1", 0)
    try:
        before = len(responder.outcomes)
        mine = await initiator.sync_with(f"{host}:{port}")
        deadline = time.monotonic() + 10
        while len(responder.outcomes) == before:  # the server files its outcome as it closes
            assert time.monotonic() < deadline, "the server never finished its side"
            await asyncio.sleep(0.01)
    finally:
        await server.close()
    return mine, responder.outcomes[-1]


def node_key(runtime: Runtime) -> bytes:
    return box_public_key(runtime.context.static_secret)


class BreakingTransport:
    """A real transport whose link fails after some bytes have arrived (a cable pulled)."""

    AFTER = 50_000

    def __init__(self, inner: MemoryTransport) -> None:
        self._inner = inner
        self.label = self.address = "breaking"
        self.received = 0

    async def send(self, data: bytes) -> None:
        await self._inner.send(data)

    async def receive(self) -> bytes:
        if self.received > self.AFTER:
            raise TransportError("breaking: link lost")
        data = await self._inner.receive()
        self.received += len(data)
        return data

    async def close(self) -> None:
        await self._inner.close()


# --- sync ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("link", ["memory", "tcp"])
async def test_sync_moves_everything_both_ways(homes: Homes, link: str) -> None:
    async with opened(homes.a) as a, opened(homes.b) as b:
        before_a, before_b = await ids_of(a), await ids_of(b)
        if link == "memory":
            mine, theirs = await over_memory(a.context, b.context)
        else:
            mine, theirs = await over_tcp(a, b)
        assert mine.complete and theirs.complete, (mine.error, theirs.error)
        assert mine.error is None and theirs.error is None
        assert mine.stats.mode == theirs.stats.mode == "reconcile"
        assert (mine.stats.items_sent, mine.stats.items_received) == (A_REPORTS, B_REPORTS)
        assert (theirs.stats.items_sent, theirs.stats.items_received) == (B_REPORTS, A_REPORTS)
        assert (mine.items_new, theirs.items_new) == (B_REPORTS, A_REPORTS)
        assert mine.wire_bytes_sent == theirs.wire_bytes_received > 0
        assert mine.wire_bytes_received == theirs.wire_bytes_sent > 0
        assert mine.peer is not None and theirs.peer is not None
        assert mine.peer.node_key == node_key(b)
        assert theirs.peer.node_key == node_key(a)
        after_a, after_b = await ids_of(a), await ids_of(b)
        assert after_a == after_b == before_a | before_b
        assert len(after_a) == A_REPORTS + B_REPORTS + 1  # and the shared manifest


async def build_coded_symbols(runtime: Runtime) -> Sequence[object]:
    """Step the coded-symbol build to the end as the daemon does; the states seen."""
    source = runtime.context.source
    states = [source.coded_state()["coded_symbols"]]
    while await runtime.worker.call(lambda _store: source.build_coded_step(64)):
        states.append(source.coded_state()["coded_symbols"])
    states.append(source.coded_state()["coded_symbols"])
    return states


async def rebuilt_symbols_match(runtime: Runtime) -> bool:
    source = runtime.context.source

    def check(_store: Store) -> bool:
        ready = source.coded_symbols()
        ids = source.index.ids(b"", b"\xff" * 33, 10**6)
        fresh = CodedSymbols(ids)
        return ready is not None and (ready.xors, ready.counts) == (fresh.xors, fresh.counts)

    return await runtime.worker.call(check)


@pytest.mark.parametrize("link", ["memory", "tcp"])
async def test_first_contact_with_coded_symbols_ready(homes: Homes, link: str) -> None:
    async with opened(homes.a) as a, opened(homes.b) as b:
        states = await build_coded_symbols(a)
        # 301 ids in steps of 64: not built, building (ids so far), ready
        assert states[0] == "not built" and states[-1] == "ready"
        assert states.count("building") == 4
        assert (await build_coded_symbols(b))[-1] == "ready"
        before = await ids_of(a) | await ids_of(b)
        if link == "memory":
            mine, theirs = await over_memory(a.context, b.context)
        else:
            mine, theirs = await over_tcp(a, b)
        assert mine.complete and theirs.complete, (mine.error, theirs.error)
        assert (mine.stats.items_sent, mine.stats.items_received) == (A_REPORTS, B_REPORTS)
        # B answered A's offer with coded symbols: 199 of them for a count difference of 100
        assert mine.stats.reconcile_bytes_received >= 199 * 42
        assert await ids_of(a) == await ids_of(b) == before
        # A's 200 new items are within one step of its symbols: settled when next asked for.
        # B's 300 are more: its symbols wait for the steps, and no session offers them before.
        assert await rebuilt_symbols_match(a)
        state = b.context.source.coded_state()
        assert state == {"coded_symbols": "catching up", "coded_symbols_behind": A_REPORTS}
        assert b.context.source.coded_symbols() is None
        assert (await build_coded_symbols(b))[-1] == "ready"
        assert await rebuilt_symbols_match(b)


async def test_items_arriving_during_a_coded_build_are_counted_once(homes: Homes) -> None:
    async with opened(homes.a) as a, opened(homes.b) as b:
        source = a.context.source
        # one step of the build, then a session brings 200 items in on either side of it
        assert await a.worker.call(lambda _store: source.build_coded_step(64))
        assert source.coded_state()["coded_symbols"] == "building"
        assert source.coded_symbols() is None
        mine, _ = await over_memory(a.context, b.context)
        assert mine.complete and mine.items_new == B_REPORTS
        assert (await build_coded_symbols(a))[-1] == "ready"
        assert await rebuilt_symbols_match(a)


async def test_coded_symbols_take_a_bulk_of_changes_in_steps(homes: Homes) -> None:
    """A bulk receive does not wait for the coded symbols (perf S10): the ids it added and
    the ones a receipt purged are owed to the symbols, settled a step at a time."""
    async with opened(homes.a) as a:
        source = a.context.source
        assert (await build_coded_symbols(a))[-1] == "ready"
        held = source.index.ids(b"", b"\xff" * 33, 10**6)
        new = sorted(secrets.token_bytes(32) for _ in range(700))

        def changes(_store: Store) -> None:
            source.note_changes(new, held[:50])

        assert not source.busy_within(60.0)  # nothing stored or sent since it opened
        await a.worker.call(changes)
        assert source.busy_within(60.0)  # the daemon paces its steps while this holds
        assert source.coded_state() == {"coded_symbols": "catching up", "coded_symbols_behind": 750}
        assert source.coded_symbols() is None  # three steps away: ranges only meanwhile
        steps = 0
        while await a.worker.call(lambda _store: source.build_coded_step(256)):
            steps += 1
        assert steps == 3  # 750 changes, 256 at a time
        assert source.coded_state() == {"coded_symbols": "ready"}
        assert await rebuilt_symbols_match(a)
        # A few changes are settled when a session asks for the symbols, without a step.
        await a.worker.call(lambda _store: source.note_changes([], new[:10]))
        assert source.coded_state()["coded_symbols"] == "catching up"
        assert await rebuilt_symbols_match(a)
        assert source.coded_state() == {"coded_symbols": "ready"}


async def test_symbols_far_behind_are_dropped_and_built_again(
    homes: Homes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Owed ids are held until settled: past ``MAX_OWED_IDS`` the symbols are dropped and
    built again from the index, so a relay's memory does not grow with a long receive."""
    monkeypatch.setattr(peer_module, "MAX_OWED_IDS", 100)
    async with opened(homes.a) as a:
        source = a.context.source
        assert (await build_coded_symbols(a))[-1] == "ready"
        new = [secrets.token_bytes(32) for _ in range(150)]
        await a.worker.call(lambda _store: source.note_changes(new[:100], []))
        assert source.coded_state() == {"coded_symbols": "catching up", "coded_symbols_behind": 100}
        await a.worker.call(lambda _store: source.note_changes(new[100:], []))
        assert source.coded_state() == {"coded_symbols": "not built"}
        assert source.coded_symbols() is None
        # a build under way drops too, once it is owed as much (ids below where it got to)
        assert await a.worker.call(lambda _store: source.build_coded_step(64))
        low = [b"\0\0" + secrets.token_bytes(30) for _ in range(101)]
        await a.worker.call(lambda _store: source.note_changes(low[:100], []))
        assert source.coded_state()["coded_symbols"] == "building"
        await a.worker.call(lambda _store: source.note_changes(low[100:], []))
        assert source.coded_state() == {"coded_symbols": "not built"}
        assert (await build_coded_symbols(a))[-1] == "ready"
        assert await rebuilt_symbols_match(a)
        assert {*new, *low} <= set(source.index.ids(b"", b"\xff" * 33, 10**6))


async def test_reading_items_to_send_counts_as_busy(homes: Homes) -> None:
    """A relay sending (a peer pulling from it) paces the symbols' steps too."""
    for sending in ("by id", "after a number"):
        async with opened(homes.a) as a:
            source = a.context.source
            assert not source.busy_within(60.0)

            def read(_store: Store, how: str = sending, s: SyncSource = source) -> Sequence[object]:
                if how == "by id":
                    return s.get(s.index.ids(b"", b"\xff" * 33, 3))
                return list(s.items_after(0, 3))

            found = await a.worker.call(read)
            assert len(found) == 3 and source.busy_within(60.0)


async def test_changes_owed_to_dropped_symbols_are_dropped_with_them(homes: Homes) -> None:
    async with opened(homes.a) as a:
        source = a.context.source
        assert (await build_coded_symbols(a))[-1] == "ready"
        new = [secrets.token_bytes(32) for _ in range(300)]
        await a.worker.call(lambda _store: source.note_changes(new, []))
        assert source.coded_state()["coded_symbols"] == "catching up"
        # another process changed the store: the index and its symbols are rebuilt from it
        await a.worker.call(lambda _store: source.invalidate())
        assert source.coded_state() == {"coded_symbols": "not built"}
        assert (await build_coded_symbols(a))[-1] == "ready"
        assert await rebuilt_symbols_match(a)
        assert not set(new) & set(source.index.ids(b"", b"\xff" * 33, 10**6))


async def test_repeat_contact_runs_in_delta_mode(homes: Homes) -> None:
    async with opened(homes.a) as a, opened(homes.b) as b:
        first, _ = await over_memory(a.context, b.context)
        assert first.complete and first.stats.mode == "reconcile"

        # Nothing new: both sides know each other's cursor, nothing bounces back.
        again, again_r = await over_memory(a.context, b.context)
        assert again.complete and again_r.complete
        assert again.stats.mode == again_r.stats.mode == "delta"
        assert again.stats.items_sent == again.stats.items_received == 0
        assert again.stats.round_trips == 1  # identical sets: one round trip (S2)
        assert again.stats.overhead_bytes <= 1024

        # 100 new reports written on A by another process (as `report add` does).
        extra = synthetic.sealed_reports(homes.manifest, 100)
        await asyncio.to_thread(synthetic.fill_store, homes.a, homes.manifest, extra)
        third, third_r = await over_memory(a.context, b.context)
        assert third.complete and third_r.complete
        assert third.stats.mode == "delta"
        assert third.stats.items_sent == 100 and third.stats.items_received == 0
        assert third_r.items_new == 100
        assert third.stats.round_trips <= 2
        assert third.stats.overhead_bytes <= 8 * 1024
        assert await ids_of(a) == await ids_of(b)

        # and the responder side keeps its cursor too: B initiating is also a delta
        fourth, _ = await over_memory(b.context, a.context)
        assert fourth.complete and fourth.stats.mode == "delta"
        assert fourth.stats.items_sent == fourth.stats.items_received == 0


async def test_hq_receipts_flow_back_and_purge(homes: Homes) -> None:
    async with opened(homes.a) as a, opened(homes.c) as c:
        # A's reports reach relay C ...
        first, _ = await over_memory(a.context, c.context)
        assert first.complete and first.stats.items_sent == A_REPORTS

        # ... C's items reach HQ, which ingests them and signs receipts ...
        def hq_round(c_home: Path, hq_dir: Path) -> list[bytes]:
            store = Store(c_home / "store.db")
            headquarters = HQ(hq_dir)
            try:
                summary = IngestSummary()
                keys = headquarters.unlock(PASSPHRASE)
                headquarters.ingest_items(store.iter_items(), keys, summary)
                assert summary.new == A_REPORTS, summary
                assert headquarters.issue_receipts(PASSPHRASE) >= 1
                rows = headquarters.database().execute("SELECT item FROM receipts ORDER BY serial")
                return [row[0] for row in rows]
            finally:
                headquarters.close()
                store.close()

        receipts = await asyncio.to_thread(hq_round, homes.c, homes.hq)
        # ... and come back to C (the hub's upstream sync, here a direct import).
        counts = await asyncio.to_thread(synthetic.fill_store, homes.c, homes.manifest, receipts)
        assert counts.new == len(receipts)
        assert (await kinds_of(c)).get("envelope", 0) == 0  # C purged what HQ receipted

        # The receipts flow from C to A through sync, and A deletes its copies.
        assert (await kinds_of(a))["envelope"] == A_REPORTS
        second, second_a = await over_memory(c.context, a.context)
        assert second.complete and second_a.complete
        assert second_a.items_new == len(receipts)
        kinds = await kinds_of(a)
        assert kinds.get("envelope", 0) == 0
        assert kinds["receipt"] == len(receipts)

        def tombstones(store: Store) -> int:
            return int(store.db.conn.execute("SELECT count(*) FROM tombstones").fetchone()[0])

        assert await a.worker.call(tombstones) == A_REPORTS
        assert await ids_of(a) == await ids_of(c)

        # A replay of the envelopes is refused for good: a third sync moves nothing back.
        third, _ = await over_memory(a.context, c.context)
        assert third.complete and third.stats.items_sent == third.stats.items_received == 0


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("who_revokes", ["responder", "initiator"])
async def test_revoked_peer_is_refused(homes: Homes, who_revokes: str) -> None:
    async with opened(homes.a) as a, opened(homes.b) as b:
        before_a, before_b = await ids_of(a), await ids_of(b)
        ctx_a, ctx_b = a.context, b.context
        if who_revokes == "responder":
            ctx_b = dataclasses.replace(ctx_b, revoked_nodes=frozenset({node_key(a)}))
        else:
            ctx_a = dataclasses.replace(ctx_a, revoked_nodes=frozenset({node_key(b)}))
        mine, theirs = await over_memory(ctx_a, ctx_b)
        assert not mine.complete and not theirs.complete
        assert mine.error and theirs.error
        refuser = theirs if who_revokes == "responder" else mine
        assert refuser.error == "handshake failed" and refuser.peer is None
        assert mine.stats.items_sent == theirs.stats.items_sent == 0
        assert await ids_of(a) == before_a and await ids_of(b) == before_b


async def test_member_of_another_network_is_refused(homes: Homes) -> None:
    async with opened(homes.outsider) as x, opened(homes.b) as b:
        before = await ids_of(b)
        mine, theirs = await over_memory(x.context, b.context)
        assert not mine.complete and not theirs.complete
        assert mine.error == theirs.error == "handshake failed"
        assert theirs.wire_bytes_sent == 0  # not a single byte to a non-member
        assert mine.wire_bytes_received == 0
        assert await ids_of(b) == before


async def test_idle_timeout_ends_a_stalled_session(homes: Homes) -> None:
    limits = dataclasses.replace(FAST, idle_timeout=0.5)
    async with opened(homes.a) as a, opened(homes.b, limits) as b:
        ctx = a.context
        end_a, end_b = memory_pair()

        async def handshake_then_stall() -> None:
            handshake = PeerHandshake(
                initiator=True,
                network_key=ctx.network_key,
                static_secret=ctx.static_secret,
                certificate=ctx.certificate,
                manifest=ctx.manifest,
                ephemeral_secret=secrets.token_bytes(32),
            )
            await end_a.send(handshake.data_to_send())
            while not handshake.is_complete:
                handshake.receive_data(await end_a.receive())
                if out := handshake.data_to_send():
                    await end_a.send(out)
            while await end_a.receive():  # a member that says nothing more
                pass

        started = time.monotonic()
        stalled = asyncio.create_task(handshake_then_stall())
        outcome = await run_peer(end_b, b.context, initiator=False)
        elapsed = time.monotonic() - started
        await asyncio.wait_for(stalled, 5)  # it saw the end of the stream
        assert outcome.peer is not None  # the handshake did complete
        assert not outcome.complete
        assert outcome.error is not None and "timeout" in outcome.error
        assert 0.5 <= elapsed < 5


async def test_transport_error_mid_session_is_an_outcome(homes: Homes) -> None:
    async with opened(homes.a) as a, opened(homes.b) as b:
        mine, theirs = await over_memory(a.context, b.context, wrap=BreakingTransport)
        assert not mine.complete and not theirs.complete
        assert mine.error is not None and mine.error.startswith("connection lost")
        assert "link lost" in mine.error
        assert theirs.error is not None
        assert mine.stats.mode == "reconcile"  # it broke mid-session, not in the handshake
        assert mine.stats.messages_received > 0  # and the outcome says how far it got
        # what was committed stays, and a later sync over a good link finishes the job
        again, _ = await over_memory(a.context, b.context)
        assert again.complete
        assert await ids_of(a) == await ids_of(b)


def _deny_reading_items(store: Store) -> None:
    """Make every read of the items table fail inside SQLite (an authorizer denies it)."""

    def authorize(action: int, table: str | None, *_: str | None) -> int:
        denied = action == sqlite3.SQLITE_READ and table == "items"
        return sqlite3.SQLITE_DENY if denied else sqlite3.SQLITE_OK

    store.db.conn.set_authorizer(authorize)


async def test_a_store_failure_is_a_local_error_not_the_peers(
    homes: Homes, caplog: pytest.LogCaptureFixture
) -> None:
    async with opened(homes.a) as a, opened(homes.b) as b:
        before = await ids_of(b)
        await b.worker.call(_deny_reading_items)
        mine, theirs = await over_memory(a.context, b.context)
        assert not mine.complete and not theirs.complete
        assert theirs.error is not None
        # The first read of the items table fails: the offer holds' (SPEC.md §14.10), at the
        # session's start, before the item ids are read.
        assert theirs.error.startswith("the local store failed while updating the offer holds")
        assert "access to items." in theirs.error and "is prohibited" in theirs.error
        assert "peer violated" not in theirs.error
        assert mine.error is not None and "peer violated" not in mine.error
        assert "not the peer's fault" in caplog.text
        await b.worker.call(lambda store: store.db.conn.set_authorizer(None))
        assert await ids_of(b) == before  # nothing stored was lost
