"""Expiry on the node's running clock, the disk budget's eviction order, WAL truncation."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from fieldsync import eviction, synthetic
from fieldsync.janitor import Janitor
from fieldsync.peer import SyncSource
from fieldsync.store import EXPIRE_SQL, ImportCounts, Store
from fieldsync.store_worker import StoreWorker
from fieldsync_protocol import codec
from fieldsync_protocol.envelope import TTL_CLASSES
from fieldsync_protocol.items import check_item
from fieldsync_protocol.membership import Manifest
from tests.fieldsync.offline_support import stored


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> synthetic.SyntheticNetwork:
    return synthetic.create_network(tmp_path_factory.mktemp("janitor"))


def relayed(manifest: Manifest, count: int, ttl_class: int = 0, size: int = 512) -> list[bytes]:
    key_id = manifest.current_hq_key_id
    return [
        codec.encode({"c": os.urandom(size), "k": key_id, "l": ttl_class, "t": "e", "v": 1})
        for _ in range(count)
    ]


def add(
    store: Store, manifest: Manifest, items: list[bytes], *, own: bool = False, now: int = 0
) -> None:
    with store.transaction():
        for data in items:
            store.add_checked(check_item(data, manifest), ImportCounts(), now, own=own)


def test_expiry_follows_the_running_clock_not_the_wall_clock(
    network: synthetic.SyntheticNetwork, tmp_path: Path
) -> None:
    store = Store(tmp_path / "store.db")
    manifest = network.manifest
    # Wall-clock "now" values a year apart: a wrong clock must change nothing.
    add(store, manifest, relayed(manifest, 5, ttl_class=0), now=2_000_000_000)
    add(store, manifest, relayed(manifest, 5, ttl_class=1), now=1_000_000_000)
    seven_days = TTL_CLASSES[0]
    store.advance_clock(seven_days - 1)
    assert store.expire() == 0
    store.advance_clock(1)
    assert store.expire() == 5  # class 0 gone after 7 running days, whatever the wall clock
    assert stored(store, "envelope") == 5
    store.advance_clock(-10_000)  # a clock jumping back never un-ages anything
    assert store.local_clock() == seven_days
    store.advance_clock(TTL_CLASSES[1])
    assert store.expire() == 5
    store.close()


def test_expiry_reads_only_the_expired_rows(
    network: synthetic.SyntheticNetwork, tmp_path: Path
) -> None:
    """The janitor's expiry runs in a write transaction a local report waits for: it takes
    a range of the expiry index (migration 16), never a scan of every item (perf S11)."""
    store = Store(tmp_path / "store.db")
    add(store, network.manifest, relayed(network.manifest, 4, ttl_class=0))
    plan = " ".join(
        row[-1]
        for row in store.conn.execute(f"EXPLAIN QUERY PLAN {EXPIRE_SQL}", (1, "m", "v", "f"))
    )
    assert "USING INDEX items_expiry (expires_at<?)" in plan
    assert "SCAN items" not in plan
    store.advance_clock(TTL_CLASSES[0])
    assert store.expire() == 4
    store.close()


def test_own_unreceipted_reports_never_expire(
    network: synthetic.SyntheticNetwork, tmp_path: Path
) -> None:
    store = Store(tmp_path / "store.db")
    manifest = network.manifest
    add(store, manifest, relayed(manifest, 3, ttl_class=0), own=True)
    add(store, manifest, relayed(manifest, 3, ttl_class=0))
    store.advance_clock(10 * TTL_CLASSES[3])
    assert store.expire() == 3
    assert stored(store, "envelope") == 3  # the author's own, kept until receipted
    store.close()


def test_own_reports_stay_while_relayed_rows_that_fill_whole_pages_are_enough(
    network: synthetic.SyntheticNetwork, tmp_path: Path
) -> None:
    """Rows of just over half a page take a page each: twice what eviction estimates per
    item (its length + 160 bytes). Planned on that estimate alone, the relayed rows would
    seem too few for the excess and the author's own reports would go with them; measured
    again after each step of the order (SPEC.md §14.2), the relayed ones are enough."""
    store = Store(tmp_path / "store.db")
    manifest = network.manifest
    page = int(store.conn.execute("PRAGMA page_size").fetchone()[0])
    own = relayed(manifest, 10, ttl_class=3, size=page // 2)
    add(store, manifest, own, own=True)
    add(store, manifest, relayed(manifest, 40, ttl_class=3, size=page // 2))
    budget = store.used_bytes() - 30 * page
    estimated = 40 * (len(own[0]) + eviction.ITEM_OVERHEAD)
    assert estimated < 30 * page  # by the estimate, the relayed rows could not cover it
    evicted = store.enforce_budget(budget)
    assert store.used_bytes() <= budget
    assert 30 <= evicted.items <= 40
    own_ids = {check_item(d, manifest).item.id for d in own}
    assert own_ids <= set(store.sorted_ids())
    store.close()


def test_disk_budget_evicts_relayed_first_and_own_reports_last(
    network: synthetic.SyntheticNetwork, tmp_path: Path
) -> None:
    store = Store(tmp_path / "store.db")
    manifest = network.manifest
    own = relayed(manifest, 20, ttl_class=3, size=4096)
    add(store, manifest, own, own=True)
    add(store, manifest, relayed(manifest, 200, ttl_class=3, size=4096))
    full = store.used_bytes()
    budget = full // 2
    evicted = store.enforce_budget(budget)
    assert evicted.items > 0
    assert store.used_bytes() <= budget
    own_ids = {check_item(d, manifest).item.id for d in own}
    held = set(store.sorted_ids())
    assert own_ids <= held  # every own report survived while relayed ones were evicted
    # A budget smaller than the own reports: only then do they go, and the store still fits.
    store.enforce_budget(8192)
    assert not (set(store.sorted_ids()) - own_ids)
    store.close()


async def test_janitor_tick_advances_clock_expires_and_truncates_the_wal(
    network: synthetic.SyntheticNetwork, tmp_path: Path
) -> None:
    path = tmp_path / "store.db"

    def prepare() -> None:  # off the event loop: SQLite blocks
        store = Store(path)
        add(store, network.manifest, relayed(network.manifest, 50, ttl_class=0))
        store.advance_clock(TTL_CLASSES[0])
        store.close()

    await asyncio.to_thread(prepare)
    worker = StoreWorker(path)
    await worker.open()
    source = await worker.call(SyncSource)
    janitor = Janitor(worker, source, disk_budget_bytes=1 << 30, checkpoint_every=0.0)
    report = await janitor.tick()
    assert report.expired == 50
    assert report.clock >= TTL_CLASSES[0]
    wal = Path(str(path) + "-wal")
    size = await asyncio.to_thread(lambda: wal.stat().st_size if wal.exists() else 0)
    assert size == 0  # truncated: no copy of the deleted rows left in the WAL
    await worker.close()


async def test_a_nudge_fits_the_budget_at_once_without_waiting_for_the_pass(
    network: synthetic.SyntheticNetwork, tmp_path: Path
) -> None:
    path = tmp_path / "store.db"

    def prepare() -> int:  # off the event loop: SQLite blocks
        store = Store(path)
        add(store, network.manifest, relayed(network.manifest, 40, ttl_class=3, size=8192))
        budget = store.used_bytes() - 10 * 8192
        store.close()
        return budget

    budget = await asyncio.to_thread(prepare)
    worker = StoreWorker(path)
    await worker.open()
    source = await worker.call(SyncSource)
    # A pass only once a day: whatever happens below is the nudge's doing.
    janitor = Janitor(worker, source, disk_budget_bytes=budget, interval=86_400.0)
    task = asyncio.create_task(janitor.run())
    try:
        janitor.nudge()
        for _ in range(500):
            if await worker.call(lambda s: s.used_bytes()) <= budget:
                break
            await asyncio.sleep(0.02)
        assert await worker.call(lambda s: s.used_bytes()) <= budget
        assert 10 <= await worker.call(lambda s: 40 - s.item_count()) <= 11
        assert janitor.last.clock == 0  # no full pass ran (no clock advance, no expiry)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()
