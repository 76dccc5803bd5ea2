"""Fair eviction on a real SQLite store (SPEC.md §14.2) and byte-counted quotas (§14.4).

Over its disk budget a relay takes from the largest contributor first, newest first, never
below a protected share while anything else can go, exactly as much as needed; evicted
items leave no tombstone, can be received again, and the cursor on the peer that gave them
is dropped so the next session reconciles in full.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldsync import eviction, limits, synthetic
from fieldsync.config import SyncConfig
from fieldsync.peer import PeerLimits
from fieldsync.store import ImportCounts, Quota, QuotaExceeded, Store, evicted_origins_limit
from fieldsync_protocol import codec
from fieldsync_protocol.envelope import SIZE_CLASSES
from fieldsync_protocol.items import Checked, check_item
from fieldsync_protocol.membership import Manifest

#: Larger than a page: each item lives in its own overflow page, so freeing an item frees
#: whole pages and "pages in use" moves item by item.
BIG = 8192
FLOODER = b"F" * 32
HONEST = b"H" * 32


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return synthetic.create_network(tmp_path_factory.mktemp("eviction")).manifest


def envelopes(manifest: Manifest, count: int, size: int = BIG) -> list[Checked]:
    key_id = manifest.current_hq_key_id
    return [
        check_item(
            codec.encode({"c": os.urandom(size), "k": key_id, "l": 3, "t": "e", "v": 1}),
            manifest,
        )
        for _ in range(count)
    ]


def ids_of(items: list[Checked]) -> set[bytes]:
    return {c.item.id for c in items}


def seqs_by_id(store: Store) -> dict[bytes, int]:
    rows = store.db.execute("SELECT id, seq FROM items").fetchall()
    return {bytes(row[0]): int(row[1]) for row in rows}


def import_locally(store: Store, items: list[Checked], *, own: bool = False) -> None:
    with store.transaction():
        for checked in items:
            store.add_checked(checked, ImportCounts(), 0, own=own)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "store.db")
    yield opened
    opened.close()


def test_the_largest_contributor_loses_its_newest_items_first(
    manifest: Manifest, store: Store
) -> None:
    honest = envelopes(manifest, 10)
    imported = envelopes(manifest, 5)
    own = envelopes(manifest, 3)
    flood = envelopes(manifest, 60)
    store.add_batch(honest, 0, origin=HONEST)
    import_locally(store, imported)
    import_locally(store, own, own=True)
    store.add_batch(flood[:30], 0, origin=FLOODER)
    store.add_batch(flood[30:], 0, origin=FLOODER)
    seq = seqs_by_id(store)
    budget = store.used_bytes() - 20 * BIG
    before = set(store.sorted_ids())

    evicted = store.enforce_budget(budget)

    after = set(store.sorted_ids())
    gone = before - after
    assert store.used_bytes() <= budget
    assert gone <= ids_of(flood), "only the flooder's items go"
    assert ids_of(honest) | ids_of(imported) | ids_of(own) <= after
    # Newest first within the contributor: what is gone is the top of its arrival order.
    flood_seqs = sorted(seq[i] for i in ids_of(flood))
    assert sorted(seq[i] for i in gone) == flood_seqs[-len(gone) :]
    assert evicted.items == len(gone)
    assert evicted.bytes == sum(
        len(c.item.data) + eviction.ITEM_OVERHEAD for c in flood[-len(gone) :]
    )
    # Exactly as much as needed: 20 pages of 8 KiB need 20 items, and at most one more when
    # the pages freed by the items fall short of their estimate.
    assert 20 <= evicted.items <= 21
    assert list(evicted.by_contributor.values()) == [evicted.items]


def test_a_store_one_byte_over_its_budget_drops_one_item(manifest: Manifest, store: Store) -> None:
    store.add_batch(envelopes(manifest, 40), 0, origin=FLOODER)
    store.add_batch(envelopes(manifest, 40), 0, origin=HONEST)
    budget = store.used_bytes() - 1

    evicted = store.enforce_budget(budget)

    assert evicted.items == 1
    assert store.item_count() == 79
    assert store.used_bytes() <= budget
    assert store.enforce_budget(budget).items == 0  # within budget: nothing more goes


def test_small_items_one_byte_over_go_from_one_contributor_side_by_side(
    manifest: Manifest, store: Store
) -> None:
    """Rows of 1 KiB share pages: taking turns among equal contributors would free no page
    for many items; taking neighbours from one contributor frees a page with the fewest."""
    for peer in (FLOODER, HONEST, b"S" * 32):
        store.add_batch(envelopes(manifest, 600, size=1024), 0, origin=peer)
    budget = store.used_bytes() - 1

    evicted = store.enforce_budget(budget)

    assert store.used_bytes() <= budget
    assert len(evicted.by_contributor) == 1
    # At most two pages' rows: the contributor's newest rows may share their page with the
    # next contributor's, which stays, so the page below is the first to come free.
    page = int(store.conn.execute("PRAGMA page_size").fetchone()[0])
    assert evicted.items <= 2 * (page // 1024)


def test_contributors_are_levelled_and_the_small_ones_keep_everything(
    manifest: Manifest, store: Store
) -> None:
    small = envelopes(manifest, 4)
    medium = envelopes(manifest, 30)
    large = envelopes(manifest, 60)
    store.add_batch(small, 0, origin=b"S" * 32)
    store.add_batch(medium, 0, origin=HONEST)
    store.add_batch(large, 0, origin=FLOODER)
    budget = store.used_bytes() - 50 * BIG

    store.enforce_budget(budget)

    held = set(store.sorted_ids())
    kept_large = len(ids_of(large) & held)
    kept_medium = len(ids_of(medium) & held)
    assert ids_of(small) <= held
    # Water filling: the two large contributors end level (to within one level step).
    assert abs(kept_large - kept_medium) <= eviction.LEVEL_STEP // BIG + 1
    assert kept_medium < 30


def test_own_reports_go_only_after_every_relayed_item_and_manifests_never(
    manifest: Manifest, store: Store
) -> None:
    own = envelopes(manifest, 10)
    import_locally(store, own, own=True)
    store.add_batch(envelopes(manifest, 10), 0, origin=HONEST)
    store.add_batch(envelopes(manifest, 10), 0, origin=FLOODER)
    # Room for about 5 items: every relayed item goes, then own reports, oldest first.
    budget = store.used_bytes() - 25 * BIG

    store.enforce_budget(budget)

    assert set(store.sorted_ids()) < ids_of(own)
    assert store.used_bytes() <= budget


def test_the_protected_share_holds_against_the_other_contributors() -> None:
    """Planner alone: a contributor at its protected share is left alone in the fair pass,
    whatever the others hold; the rest of the need is left to the later passes."""
    totals = {1: 100_000, 2: 3_000, 3: 500}
    items = {
        key: [(key * 1000 + n, 100) for n in range(held // 100, 0, -1)]
        for key, held in totals.items()
    }

    def newest(key: int, below: int | None) -> list[tuple[int, int]]:
        return [item for item in items[key] if below is None or item[0] < below][:7]

    plan = eviction.Plan()
    floor = eviction.protected_share(12_000, len(totals))
    assert floor == 2_000
    contributors = eviction.Contributors(dict(totals))
    eviction.fair_share(contributors, 10**9, floor, newest, plan)

    assert contributors.held == {1: 2_000, 2: 2_000, 3: 500}
    assert plan.by_contributor == {1: 980, 2: 10}
    assert plan.freed == 99_000
    assert plan.seqs[:3] == [1000 + 1000, 1000 + 999, 1000 + 998]  # newest first


def test_evicted_items_leave_no_tombstone_and_come_back(manifest: Manifest, store: Store) -> None:
    flood = envelopes(manifest, 30)
    honest = envelopes(manifest, 5)
    store.add_batch(honest, 0, origin=HONEST)
    store.add_batch(flood, 0, origin=FLOODER)
    store.set_peer_cursor(FLOODER, b"e" * 16, 30, 0)
    store.set_peer_cursor(HONEST, b"h" * 16, 5, 0)

    budget = store.used_bytes() - 10 * BIG
    evicted = store.enforce_budget(budget)

    # About ten: a row of BIG bytes fills more than BIG of pages (its overflow page whole).
    assert evicted.items >= 5 and store.used_bytes() <= budget
    assert store.status()["tombstones"] == 0
    # The cursor on the peer that gave the evicted items is gone (next session reconciles);
    # the other peer's cursor is untouched.
    assert store.peer_cursor(FLOODER) is None
    assert store.peer_cursor(HONEST) == (b"h" * 16, 5)
    again = store.add_batch(flood, 0, origin=FLOODER)
    assert again.new == evicted.items
    assert again.already_delivered == 0
    assert ids_of(flood) <= set(store.sorted_ids())


def test_quota_error_names_bytes_when_bytes_ran_out(manifest: Manifest, store: Store) -> None:
    items = envelopes(manifest, 4, size=512)
    with pytest.raises(QuotaExceeded, match=r"bytes a day") as caught:
        store.add_batch(items, 0, origin=FLOODER, quota=Quota(FLOODER, 1, 1000, 1000))
    assert "items" not in str(caught.value)
    with pytest.raises(QuotaExceeded, match=r"3 items a day; this delivery would make 4"):
        store.add_batch(items, 0, origin=HONEST, quota=Quota(HONEST, 1, 3, 10**9))
    assert store.item_count() == 0  # refused whole


def test_one_default_quota_sized_for_a_million_item_backlog(store: Store) -> None:
    assert SyncConfig().quota_items_per_day == PeerLimits().quota_items_per_day
    assert SyncConfig().quota_bytes_per_day == PeerLimits().quota_bytes_per_day
    assert SIZE_CLASSES[0] == limits.SMALLEST_ITEM_BYTES
    # A relay hands over a backlog of 1M reports of the 4 KiB class in one day, in flights
    # of 10,000 (counted as the receiver counts them: item bytes).
    item_bytes = len(
        codec.encode({"c": bytes(SIZE_CLASSES[3]), "k": b"k" * 8, "l": 3, "t": "e", "v": 1})
    )
    peer = secrets.token_bytes(32)
    defaults = PeerLimits()
    for _ in range(100):
        assert store.charge_quota(
            peer,
            7,
            10_000,
            10_000 * item_bytes,
            defaults.quota_items_per_day,
            defaults.quota_bytes_per_day,
        )
    # ... and a peer that tries three times that in the same day is cut off.
    over = [
        store.charge_quota(
            peer,
            7,
            10_000,
            10_000 * item_bytes,
            defaults.quota_items_per_day,
            defaults.quota_bytes_per_day,
        )
        for _ in range(200)
    ]
    assert not all(over)


@st.composite
def contributors(draw: st.DrawFn) -> dict[int, list[int]]:
    """Contributor -> costs of its items, oldest first."""
    count = draw(st.integers(1, 6))
    return {
        key: draw(st.lists(st.integers(1, 20_000), min_size=0, max_size=40))
        for key in range(1, count + 1)
    }


@settings(max_examples=300, deadline=None)
@given(contributors(), st.integers(0, 1_000_000), st.integers(0, 100_000))
def test_fair_share_plan_properties(items: dict[int, list[int]], need: int, floor: int) -> None:
    """Always the newest item of the largest contributor (to within ``LEVEL_STEP``), never
    below the floor, and it stops at the first item that covers the need (minimal)."""
    seqs = {}
    next_seq = 1
    for key, costs in items.items():
        seqs[key] = list(range(next_seq, next_seq + len(costs)))
        next_seq += len(costs)
    cost_of = {seq: cost for key in items for seq, cost in zip(seqs[key], items[key], strict=True)}
    owner = {seq: key for key in items for seq in seqs[key]}

    def newest(key: int, below: int | None) -> list[tuple[int, int]]:
        chosen = [s for s in reversed(seqs[key]) if below is None or s < below]
        return [(s, cost_of[s]) for s in chosen[:3]]

    totals = {key: sum(costs) for key, costs in items.items()}
    plan = eviction.Plan()
    eviction.fair_share(eviction.Contributors(dict(totals)), need, floor, newest, plan)

    held = dict(totals)
    taken: dict[int, list[int]] = {key: [] for key in items}
    previous = None
    for seq in plan.seqs:
        key = owner[seq]
        # Among those that could still give an item: the largest, or the one it was already
        # taking from while that one is within a level step of the largest.
        eligible = [
            other
            for other in items
            if len(taken[other]) < len(items[other])
            and held[other] - cost_of[seqs[other][-1 - len(taken[other])]] >= floor
        ]
        assert key in eligible
        largest = max(held[other] for other in eligible)
        sticky = previous in eligible and held[previous] >= largest - eviction.LEVEL_STEP
        assert key == previous if sticky else held[key] == largest
        assert seq == seqs[key][-1 - len(taken[key])]  # its newest remaining item
        previous = key
        taken[key].append(seq)
        held[key] -= cost_of[seq]
        assert held[key] >= floor
    assert plan.freed == sum(cost_of[s] for s in plan.seqs)
    if plan.seqs:
        assert plan.freed - cost_of[plan.seqs[-1]] < need  # one item fewer would not do
    if plan.freed < need:  # not enough: every contributor is at its floor or empty
        for key in items:
            left = len(items[key]) - len(taken[key])
            assert left == 0 or held[key] - items[key][left - 1] < floor


@settings(max_examples=100, deadline=None)
@given(contributors(), st.integers(0, 100_000))
def test_later_passes_of_one_plan_never_take_an_item_twice(
    items: dict[int, list[int]], floor: int
) -> None:
    """Phases 1 and 3 of one plan read the same contributors before anything is deleted."""
    seqs = {}
    next_seq = 1
    for key, costs in items.items():
        seqs[key] = list(zip(range(next_seq, next_seq + len(costs)), costs, strict=True))
        next_seq += len(costs)

    def newest(key: int, below: int | None) -> list[tuple[int, int]]:
        return [item for item in reversed(seqs[key]) if below is None or item[0] < below][:3]

    contributors = eviction.Contributors({key: sum(costs) for key, costs in items.items()})
    plan = eviction.Plan()
    everything = sum(map(sum, items.values()))
    eviction.fair_share(contributors, everything, floor, newest, plan)
    eviction.fair_share(contributors, everything, 0, newest, plan)

    assert sorted(plan.seqs) == list(range(1, next_seq))  # each item exactly once
    assert plan.freed == everything
    assert set(contributors.held.values()) <= {0}


RELAY = b"R" * 32


def test_evicted_items_pushed_again_by_another_peer_stay_their_contributors(
    manifest: Manifest, store: Store
) -> None:
    """A relay that got the flood from us before we evicted it pushes it back (SPEC.md §14.2):
    those items are the flooder's again, for fair share, no echo and the quota, not the
    relay's, so the relay's own reports are not what the next eviction takes."""
    flood = envelopes(manifest, 30)
    store.add_batch(envelopes(manifest, 5), 0, origin=HONEST)
    store.add_batch(flood, 0, origin=FLOODER, quota=Quota(FLOODER, 1, 30, 10**9))
    budget = store.used_bytes() - 20 * BIG
    evicted = store.enforce_budget(budget)
    assert evicted.items >= 15 and store.used_bytes() <= budget  # about 20 (rows fill pages)
    back = [c for c in flood if c.item.id not in set(store.sorted_ids())]
    assert len(back) == evicted.items

    # The relay's quota is exactly what is not coming back: charged to it, the batch fails.
    stays = len(flood) - len(back)
    again = store.add_batch(flood, 0, origin=RELAY, quota=Quota(RELAY, 1, stays, 10**9))
    assert again.new == len(back) and again.duplicate == stays
    # ... and the flooder, who had used its 30 items, is charged for what came back.
    with pytest.raises(
        QuotaExceeded, match=rf"30 items a day; this delivery would make {31 + len(back)}"
    ):
        store.add_batch(
            envelopes(manifest, 1), 0, origin=FLOODER, quota=Quota(FLOODER, 1, 30, 10**9)
        )
    # No echo: a delta to the flooder leaves out its flood, whoever brought it back.
    assert not ids_of(flood) & {
        check_item(data, manifest).item.id for _seq, data in store.items_after(0, 1000, FLOODER)
    }

    # The relay's own reports come after the flood it pushed back, so they are the newest:
    # were the flood counted as the relay's, the relay would be the largest contributor.
    relays_own = envelopes(manifest, 5)
    store.add_batch(relays_own, 0, origin=RELAY)
    store.enforce_budget(budget)
    assert ids_of(relays_own) <= set(store.sorted_ids())


def test_the_memory_of_evicted_contributors_is_bounded_oldest_forgotten_first(
    manifest: Manifest, store: Store
) -> None:
    # Enough evicted in the first round that both rounds together are more than the
    # budget's memory holds (one row per KiB of budget), whatever the store's empty size.
    flood = envelopes(manifest, 2000, size=512)
    store.add_batch(flood, 0, origin=FLOODER)
    store.enforce_budget(store.used_bytes() - 900 * 1024)
    first = [c for c in flood if c.item.id not in set(store.sorted_ids())]
    budget = store.used_bytes() - 150 * 1024
    store.enforce_budget(budget)
    held = set(store.sorted_ids())
    later = [c for c in flood if c.item.id not in held and c not in first]
    limit = evicted_origins_limit(budget)
    assert len(first) + len(later) > limit >= len(later)
    (remembered,) = store.db.execute("SELECT count(*) FROM evicted_origins").fetchone()
    assert remembered == limit  # bounded

    # The newest evictions are remembered: all of ``later`` is the flooder's again ...
    store.add_batch(later, 0, origin=RELAY)
    assert not ids_of(later) & {
        check_item(data, manifest).item.id for _seq, data in store.items_after(0, 10**6, FLOODER)
    }
    # ... of the first round only the most recent ``limit - len(later)``; the rest, forgotten,
    # counts as the relay's (no echo to the relay then leaves them out).
    store.add_batch(first, 0, origin=RELAY)
    to_relay = {
        check_item(data, manifest).item.id for _seq, data in store.items_after(0, 10**6, RELAY)
    }
    assert len(ids_of(first) & to_relay) == limit - len(later)


def test_a_contributor_pushing_its_own_evicted_items_back_pays_for_them(
    manifest: Manifest, store: Store
) -> None:
    flood = envelopes(manifest, 30)
    store.add_batch(flood, 0, origin=FLOODER, quota=Quota(FLOODER, 1, 30, 10**9))
    budget = store.used_bytes() - 10 * BIG
    evicted = store.enforce_budget(budget)
    assert evicted.items >= 5 and store.used_bytes() <= budget  # about ten (rows fill pages)
    with pytest.raises(QuotaExceeded, match=rf"would make {30 + len(flood)}"):
        store.add_batch(flood, 0, origin=FLOODER, quota=Quota(FLOODER, 1, 30, 10**9))
