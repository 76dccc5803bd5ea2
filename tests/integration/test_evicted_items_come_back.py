"""Evicted items come back (issue 7, Deliver 3; SPEC.md §14.2, §14.9).

Real nodes, real sessions over TCP on 127.0.0.1, real stores:

* an author whose reports were evicted from every relay — and whose relays still hold
  their delta cursors past those reports, the worst case — re-offers them by a full
  reconciliation on its schedule, and they reach HQ (by the real ``hq ingest``);
* a relay that evicted forgets its cursor on the peer that gave the items, so its next
  session with that peer reconciles and brings them back, and the one after is delta again.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from fieldsync import synthetic
from fieldsync.reoffer import ReofferPolicy
from fieldsync.runtime import Runtime
from fieldsync.store import Store
from tests.integration.evict_support import (
    export_bundle,
    hq_ingest,
    opened,
    report_ids_at_hq,
    serving,
    sync,
    write_reports,
)

EVERY = 3


async def relay_items(runtime: Runtime) -> set[bytes]:
    """The envelopes a node holds (its manifest is never evicted)."""

    def envelopes(store: Store) -> set[bytes]:
        rows = store.db.execute("SELECT id FROM items WHERE kind = 'e'").fetchall()
        return {bytes(row[0]) for row in rows}

    return await runtime.worker.call(envelopes)


async def evict_everything_relayed(relay: Runtime, *, keep_cursor_on: bytes | None) -> int:
    """The relay's budget shrinks to nothing: every relayed item goes. ``keep_cursor_on``:
    put the cursor on that peer back afterwards (a relay that does not forget it)."""

    def evict(store: Store) -> int:
        cursor = None if keep_cursor_on is None else store.peer_cursor(keep_cursor_on)
        evicted = store.enforce_budget(0).items
        if keep_cursor_on is not None and cursor is not None:
            store.set_peer_cursor(keep_cursor_on, *cursor, 0)
        relay.context.source.invalidate()
        return evicted

    return await relay.worker.call(evict)


async def test_reports_evicted_from_every_relay_are_re_offered_and_reach_hq(
    tmp_path: Path,
) -> None:
    network = await asyncio.to_thread(synthetic.create_network, tmp_path / "net")
    author_home = await asyncio.to_thread(network.add_node, "amina", author=True)
    relay_homes = [await asyncio.to_thread(network.add_node, f"relay{n}") for n in (1, 2)]
    report_ids = await asyncio.to_thread(
        write_reports, author_home, [f"report {n}" for n in range(3)]
    )

    async with contextlib.AsyncExitStack() as stack:
        author = await stack.enter_async_context(opened(author_home))
        author.context.reoffer = ReofferPolicy(every_contacts=EVERY, interval=10.0**9)
        author_key = (await asyncio.to_thread(author.node.membership)).certificate_info.node_key
        relays = [await stack.enter_async_context(serving(home)) for home in relay_homes]
        for relay, target in relays:
            first = await sync(author, target)
            assert (first.stats.mode, first.stats.items_sent) == ("reconcile", 3)
            second = await sync(author, target)  # delta now: cursors set on both sides
            assert (second.stats.mode, second.stats.items_sent) == ("delta", 0)
            # Every relay evicts the reports, and keeps its cursor past them.
            assert await evict_everything_relayed(relay, keep_cursor_on=author_key) == 3
            assert await relay_items(relay) == set()

        for relay, target in relays:
            # Delta alone never offers them again ...
            stale = await sync(author, target)
            assert (stale.stats.mode, stale.stats.items_sent) == ("delta", 0)
            assert await relay_items(relay) == set()
            # ... the author's scheduled full reconciliation does.
            again = await sync(author, target)
            assert (again.stats.mode, again.stats.items_sent) == ("reconcile", 3)
            assert len(await relay_items(relay)) == 3

    bundle = tmp_path / "relay1.fsb"
    await asyncio.to_thread(export_bundle, relay_homes[0], bundle)
    await asyncio.to_thread(hq_ingest, network.hq, bundle)
    assert await asyncio.to_thread(report_ids_at_hq, network.hq) == set(report_ids)


async def test_a_relay_that_evicted_reconciles_with_the_giver_and_gets_them_back(
    tmp_path: Path,
) -> None:
    network = await asyncio.to_thread(synthetic.create_network, tmp_path / "net")
    giver_home = await asyncio.to_thread(network.add_node, "giver")
    relay_home = await asyncio.to_thread(network.add_node, "relay")
    reports = synthetic.sealed_reports(network.manifest, 12)
    await asyncio.to_thread(synthetic.fill_store, giver_home, network.manifest, reports)

    async with serving(relay_home) as (relay, target), opened(giver_home) as giver:
        giver_key = (await asyncio.to_thread(giver.node.membership)).certificate_info.node_key
        assert (await sync(giver, target)).stats.items_sent == 12
        assert (await sync(giver, target)).stats.mode == "delta"
        assert await relay_cursor(relay, giver_key) is not None

        assert await evict_everything_relayed(relay, keep_cursor_on=None) == 12
        assert await relay_cursor(relay, giver_key) is None  # the eviction is recorded

        back = await sync(giver, target)
        assert (back.stats.mode, back.stats.items_sent) == ("reconcile", 12)
        assert len(await relay_items(relay)) == 12
        after = await sync(giver, target)
        assert (after.stats.mode, after.stats.items_sent) == ("delta", 0)


async def relay_cursor(relay: Runtime, node_key: bytes) -> tuple[bytes, int] | None:
    return await relay.worker.call(lambda store: store.peer_cursor(node_key))
