"""Timing privacy (issue 11 item 6, SPEC.md §14.10): a report item is offered only after a
random delay, the same for the node's own reports and for what it relays.

Real nodes and stores, real sessions over ``memory_pair``. No clock is waited on: time passes
by advancing a store's running clock (``Store.advance_clock``, what the janitor does each
minute), and each check is on what a session carried or what a store advertises.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from fieldsync import offer_hold, synthetic
from fieldsync.config import Config, load_config
from fieldsync.daemon import FieldDaemon
from fieldsync.node import STORE, Node
from fieldsync.offer_hold import OfferDelay
from fieldsync.peer import PeerContext, PeerLimits, SyncOutcome, run_peer
from fieldsync.runtime import Runtime
from fieldsync.store import Store
from fieldsync.transport import memory_pair
from fieldsync_protocol.items import ItemKind
from fieldsync_protocol.reconcile_index import INFINITY, ZERO, SortedListIndex

FAST = PeerLimits(silent_close=(0.0, 0.01))
#: Ten minutes, uniform: every hold ends within twenty (``OfferDelay.longest``).
DELAY = 600.0


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    with blockbuster_ctx() as bb:
        yield bb


@pytest.fixture
def network(tmp_path: Path) -> synthetic.SyntheticNetwork:
    return synthetic.create_network(tmp_path / "net")


def delay(seed: int = 1) -> OfferDelay:
    return OfferDelay(DELAY, "uniform", random.Random(seed))


@contextlib.asynccontextmanager
async def opened(home: Path, offer_delay: OfferDelay | None = None) -> AsyncIterator[Runtime]:
    runtime = await Runtime.open(home, limits=FAST, offer_delay=offer_delay)
    try:
        yield runtime
    finally:
        await runtime.close()


async def sync(initiator: PeerContext, responder: PeerContext) -> tuple[SyncOutcome, SyncOutcome]:
    end_i, end_r = memory_pair()
    mine, theirs = await asyncio.gather(
        run_peer(end_i, initiator, initiator=True), run_peer(end_r, responder, initiator=False)
    )
    assert mine.complete and theirs.complete, (mine.error, theirs.error)
    return mine, theirs


async def envelopes(runtime: Runtime) -> set[bytes]:
    def ids(store: Store) -> set[bytes]:
        rows = store.db.conn.execute("SELECT id FROM items WHERE kind = ?", ("e",))
        return {bytes(row[0]) for row in rows}

    return await runtime.worker.call(ids)


async def advertised(runtime: Runtime) -> tuple[set[bytes], int, int]:
    """(ids in the reconciliation index, the HELLO number ``h``, the store's high water)."""
    source = runtime.context.source

    def read(store: Store) -> tuple[set[bytes], int, int]:
        source.refresh()
        index = source.index
        assert isinstance(index, SortedListIndex)
        ids = set(index.ids(ZERO, INFINITY, len(index) + 1))
        return ids, source.horizon(), store.high_water()

    return await runtime.worker.call(read)


async def let_time_pass(runtime: Runtime, seconds: int) -> None:
    await runtime.worker.call(lambda store: store.advance_clock(seconds))


def write_report(home: Path, narrative: str) -> None:
    node = Node(home)
    try:
        node.add_report(
            {
                "narrative": narrative,
                "categories": ["threats"],
                "occurred": {"start": "2025-03-01", "precision": "day", "approximate": False},
            },
            synthetic.PASSPHRASE,
        )
    finally:
        node.close()


# --- the delay ------------------------------------------------------------------------------


def test_delays_are_drawn_within_their_bounds_and_zero_is_off() -> None:
    rng = random.Random(7)
    exponential = OfferDelay(60.0, "exponential", rng)
    uniform = OfferDelay(60.0, "uniform", rng)
    assert exponential.longest == 360 and uniform.longest == 120
    drawn = [exponential.draw() for _ in range(2000)]
    assert all(0 <= d <= 360 for d in drawn) and 45 < sum(drawn) / len(drawn) < 75
    assert len(set(drawn)) > 100  # jitter, not one delay
    assert all(0 <= uniform.draw() <= 120 for _ in range(2000))
    off = OfferDelay()
    assert not off.active and off.draw() == 0 and off.longest == 0
    with pytest.raises(ValueError, match="unknown jitter"):
        OfferDelay(60.0, "gaussian")
    with pytest.raises(ValueError, match="≥ 0"):
        OfferDelay(-1.0)
    with pytest.raises(ValueError, match="≥ 0"):
        OfferDelay(float("nan"))


# --- own reports ----------------------------------------------------------------------------


async def test_an_own_report_is_neither_offered_nor_fingerprinted_before_its_time(
    network: synthetic.SyntheticNetwork,
) -> None:
    a = await asyncio.to_thread(network.add_node, "a", author=True)
    b = await asyncio.to_thread(network.add_node, "b")
    await asyncio.to_thread(write_report, a, "held for a while")
    async with opened(a, delay()) as author, opened(b) as relay:
        [report] = await envelopes(author)
        ids, horizon, high = await advertised(author)
        assert report not in ids  # no fingerprint, no id list shows it
        assert horizon < high  # HELLO stops before it: no delta cursor passes it
        manifest = await author.worker.call(
            lambda store: store.db.conn.execute(
                "SELECT id FROM items WHERE kind = ?", (ItemKind.MANIFEST.value,)
            ).fetchone()[0]
        )
        assert bytes(manifest) in ids  # what names no author travels at once

        for _ in range(3):  # reconcile (first contact) and the contacts after it
            await sync(author.context, relay.context)
            await sync(relay.context, author.context)
        assert await envelopes(relay) == set()

        until = await author.worker.call(offer_hold.next_release)
        clock = await author.worker.call(lambda store: store.local_clock())
        assert until is not None and clock < until <= clock + delay().longest
        await let_time_pass(author, until - clock - 1)
        ids, horizon, high = await advertised(author)
        assert report not in ids and horizon < high  # a second early: still held
        await sync(relay.context, author.context)
        assert await envelopes(relay) == set()
        await let_time_pass(author, 1)  # its time has come
        ids, horizon, high = await advertised(author)
        assert report in ids and horizon == high
        await sync(relay.context, author.context)
        assert await envelopes(relay) == {report}


async def test_a_delay_of_zero_offers_at_once(network: synthetic.SyntheticNetwork) -> None:
    a = await asyncio.to_thread(network.add_node, "a", author=True)
    b = await asyncio.to_thread(network.add_node, "b")
    await asyncio.to_thread(write_report, a, "no delay")
    async with opened(a, OfferDelay(0.0)) as author, opened(b) as relay:
        [report] = await envelopes(author)
        ids, horizon, high = await advertised(author)
        assert report in ids and horizon == high
        await sync(author.context, relay.context)
        assert await envelopes(relay) == {report}


# --- relayed reports: the same rule ---------------------------------------------------------


async def test_a_relayed_report_is_held_like_an_own_one_in_reconcile_and_in_delta(
    network: synthetic.SyntheticNetwork,
) -> None:
    a = await asyncio.to_thread(network.add_node, "a", author=True)
    b = await asyncio.to_thread(network.add_node, "b")
    c = await asyncio.to_thread(network.add_node, "c")
    await asyncio.to_thread(write_report, a, "relayed, then held")
    async with (
        opened(a) as author,
        opened(b, delay(seed=2)) as relay,
        opened(c) as far,
    ):
        await sync(author.context, relay.context)  # the author offers at once here
        [report] = await envelopes(relay)
        ids, horizon, high = await advertised(relay)
        assert report not in ids and horizon < high

        modes = []
        for _ in range(3):  # first contact reconciles; later ones follow the cursor
            mine, _ = await sync(far.context, relay.context)
            modes.append(mine.stats.mode)
        assert modes[0] == "reconcile" and "delta" in modes[1:]
        assert await envelopes(far) == set()

        until = await relay.worker.call(offer_hold.next_release)
        clock = await relay.worker.call(lambda store: store.local_clock())
        assert until is not None
        await let_time_pass(relay, until - clock)
        mine, _ = await sync(far.context, relay.context)
        assert mine.stats.mode == "delta"  # the cursor stopped before it: delta carries it
        assert await envelopes(far) == {report}


async def test_holds_survive_a_restart(network: synthetic.SyntheticNetwork) -> None:
    a = await asyncio.to_thread(network.add_node, "a", author=True)
    b = await asyncio.to_thread(network.add_node, "b")
    await asyncio.to_thread(write_report, a, "held across a restart")
    async with opened(a, delay()) as author:
        _, horizon, high = await advertised(author)
        assert horizon < high
    async with opened(a, delay(seed=3)) as author, opened(b) as relay:
        _, horizon_again, _ = await advertised(author)
        assert horizon_again == horizon  # the same hold: not drawn again, not dropped
        await sync(relay.context, author.context)
        assert await envelopes(relay) == set()


# --- the daemon: no sync wave from the author, a wave when the hold ends ----------------------


async def daemon_config(home: Path, **settings: object) -> Config:
    overrides = {
        "node.home": str(home),
        "listen.addresses": ["127.0.0.1:0"],
        "discovery.enabled": False,
        "web.listen": "",
        "sync.interval_seconds": 0.5,
        "sync.backoff_initial": 0.2,
        "sync.backoff_max": 1,
        **settings,
    }
    return await asyncio.to_thread(load_config, None, {}, overrides)


def add_running_time(home: Path, seconds: int) -> None:
    """What ``seconds`` of running would add to the store's clock (SPEC.md §14.1), from
    another connection while the daemon runs (as ``let_a_day_pass`` in the netns tests)."""
    store = Store(home / STORE)
    try:
        store.advance_clock(seconds)
    finally:
        store.close()


async def wait_until(predicate, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await predicate():
        assert loop.time() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.1)


async def test_the_daemon_keeps_a_new_report_back_and_passes_it_on_when_its_hold_ends(
    network: synthetic.SyntheticNetwork,
) -> None:
    """The periodic sync is five minutes away: only the release can make the author's daemon
    sync again, and only the report's write could have made it sync in between."""
    a = await asyncio.to_thread(network.add_node, "a", author=True)
    b = await asyncio.to_thread(network.add_node, "b")
    relay = FieldDaemon(await daemon_config(b, **{"privacy.offer_delay_minutes": 0}))
    await relay.start()
    daemons = [relay]
    try:
        assert relay.server is not None
        host, port = relay.server.addresses[0]
        settings = {
            "peers.static": [f"{host}:{port}"],
            "sync.interval_seconds": 300,
            "privacy.offer_delay_minutes": DELAY / 60,
            "privacy.offer_delay_jitter": "uniform",
        }
        author = FieldDaemon(await daemon_config(a, **settings))
        await author.start()
        daemons.append(author)
        runtime, scheduler = author.runtime, author.scheduler
        assert runtime is not None and scheduler is not None

        async def syncs() -> int:
            peers = (await author.status())["peers"]
            return int(peers[0]["syncs"]) if peers else 0

        async def relay_envelopes() -> int:
            return int((await relay.status())["items"]["envelope"])

        async def first_contact_done() -> bool:
            return await syncs() == 1

        await wait_until(first_contact_done)
        await asyncio.to_thread(write_report, a, "the daemon holds it")

        async def assessed() -> bool:  # the watcher (or a session) gave it its hold
            return await runtime.worker.call(offer_hold.next_release) is not None

        await wait_until(assessed)
        [target] = scheduler.targets.values()
        assert target.next_due > scheduler.clock() + 60  # the write poked nobody
        assert await relay_envelopes() == 0
        status = await author.status()
        assert status["offer_held"] == 1 and status["offer_delay_minutes"] == DELAY / 60

        await asyncio.to_thread(add_running_time, a, OfferDelay(DELAY, "uniform").longest)

        async def delivered() -> bool:
            return await relay_envelopes() == 1

        await wait_until(delivered)  # the release poked the scheduler: one sync, at once

        async def second_sync_counted() -> bool:  # the relay stores the item before the
            return await syncs() >= 2  # author's session ends and is counted

        await wait_until(second_sync_counted)
        assert await syncs() == 2
        assert (await author.status())["offer_held"] == 0
    finally:
        for daemon in reversed(daemons):
            await daemon.stop()


async def test_a_hold_ends_with_its_item_when_the_item_is_evicted(
    network: synthetic.SyntheticNetwork,
) -> None:
    b = await asyncio.to_thread(network.add_node, "b")
    reports = await asyncio.to_thread(synthetic.sealed_reports, network.manifest, 3)
    await asyncio.to_thread(synthetic.fill_store, b, network.manifest, reports)
    async with opened(b, delay()) as relay:
        _, horizon, high = await advertised(relay)
        assert horizon < high
        assert await relay.worker.call(offer_hold.held_count) == 3
        # The disk budget evicts what others sent (the janitor's path): holds go with it.
        evicted = await relay.worker.call(lambda store: store.enforce_budget(1).items)
        assert evicted == 3
        assert await relay.worker.call(offer_hold.held_count) == 0
        _, horizon, high = await advertised(relay)  # refresh ends the orphaned holds
        assert horizon == high
        assert await relay.worker.call(offer_hold.next_release) is None


def test_counting_held_items_walks_the_holds_not_the_items(tmp_path: Path) -> None:
    """``status`` counts held items on the store thread a sync shares: the query must loop
    over the (few) holds and look items up, never scan every stored item (perf S11)."""
    store = Store(tmp_path / "store.db")
    try:
        plan = store.conn.execute("EXPLAIN QUERY PLAN " + offer_hold.HELD_COUNT_SQL).fetchall()
    finally:
        store.close()
    steps = [str(row[3]) for row in plan]
    assert steps[0].startswith("SCAN h"), steps
    assert any(step.startswith("SEARCH i USING INTEGER PRIMARY KEY") for step in steps), steps


# --- assessing: which kinds wait, and what it reads --------------------------------------


def _store_one_of_each_kind(store: Store) -> dict[bytes, ItemKind]:
    """A row of every kind, written straight into ``items`` (assessing reads nothing else);
    their ids by kind."""
    stored = {}
    with store.transaction():
        for number, kind in enumerate(ItemKind):
            item_id = bytes([number]) * 32
            store.conn.execute(
                "INSERT INTO items (id, tag, kind, data, received_at, expires_at)"
                " VALUES (?, ?, ?, ?, 0, 1000)",
                (item_id, bytes([number]) * 32, kind.value, b"x"),
            )
            stored[item_id] = kind
    return stored


@pytest.mark.parametrize("active", [True, False], ids=["holds on", "holds off"])
def test_assessing_holds_every_report_kind_and_frees_the_rest_once(
    tmp_path: Path, active: bool
) -> None:
    """With holds on, envelopes, chunks and kinds this version does not know wait, and
    receipts, manifests, revocations, key deliveries and forms are offered at once; with
    holds off everything is. Each item is assessed once, and the horizon covers it all."""
    store = Store(tmp_path / "store.db")
    try:
        stored = _store_one_of_each_kind(store)
        assert offer_hold.horizon(store) == 0  # nothing assessed: all counts as held
        offer_delay = delay() if active else OfferDelay()
        free = offer_hold.assess(store, offer_delay, now=100)
        held_kinds = {ItemKind.ENVELOPE, ItemKind.CHUNK, ItemKind.OPAQUE}
        expected = {i for i, k in stored.items() if not active or k not in held_kinds}
        assert sorted(free) == sorted(expected)
        assert offer_hold.held_count(store) == (len(held_kinds) if active else 0)
        assert offer_hold.assess(store, offer_delay, now=100) == []  # assessed once
        offerable = set(offer_hold.offerable_sorted_ids(store))
        assert offerable == expected
        if active:
            assert offer_hold.horizon(store) == 0  # the first item, an envelope, is held
            assert offer_hold.release(store, now=100 + offer_delay.longest) != []
            assert set(offer_hold.offerable_sorted_ids(store)) == set(stored)
        assert offer_hold.horizon(store) == store.high_water() == len(stored)
    finally:
        store.close()


def test_assessing_with_holds_on_reads_the_kind_index_not_the_items(tmp_path: Path) -> None:
    """A relay assesses what it received since the last look, no longer in its page cache:
    the numbers and kinds come from the kind index alone, never from the item rows (~1 KB
    each, read and decrypted for a kind), and the query covers every kind the store holds."""
    store = Store(tmp_path / "store.db")
    try:
        plan = store.conn.execute(
            "EXPLAIN QUERY PLAN " + offer_hold.NEW_KINDS_SQL,
            (*offer_hold.STORED_KINDS, 0),
        ).fetchall()
    finally:
        store.close()
    steps = [str(row[3]) for row in plan]
    assert steps == ["SEARCH items USING COVERING INDEX items_kind (kind=? AND rowid>?)"], steps
    assert set(offer_hold.STORED_KINDS) == {kind.value for kind in ItemKind}


async def test_new_items_wait_for_their_assessment_with_holds_on(
    network: synthetic.SyntheticNetwork,
) -> None:
    """A session's commit tells the index about its new items at once when holds are off;
    with holds on it adds none of them (the last assessment came before that commit): the
    next ``refresh`` assesses them and adds what may be offered."""
    b = await asyncio.to_thread(network.add_node, "b")
    async with opened(b, delay()) as relay:
        source = relay.context.source

        def commit_and_tell(store: Store) -> tuple[set[bytes], set[bytes], set[bytes]]:
            index = source.index
            assert isinstance(index, SortedListIndex)
            before = set(index.ids(ZERO, INFINITY, len(index) + 1))
            stored = _store_one_of_each_kind(store)
            source.note_changes(list(stored), [])
            told = set(index.ids(ZERO, INFINITY, len(index) + 1)) - before
            source.refresh()
            index = source.index
            assert isinstance(index, SortedListIndex)
            assessed = set(index.ids(ZERO, INFINITY, len(index) + 1)) - before
            unheld = {i for i, k in stored.items() if k.value in offer_hold.UNHELD_KINDS}
            return told, assessed, unheld

        told, assessed, unheld = await relay.worker.call(commit_and_tell)
    assert told == set()
    assert assessed == unheld and len(unheld) == len(offer_hold.UNHELD_KINDS)
