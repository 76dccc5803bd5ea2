"""Evicted items that come back in a USB bundle (SPEC.md §14.2, §14.4): real store files,
real bundle files, through ``Node.import_bundle``.

A relay over its disk budget evicts a flood and remembers who sent it. A courier who copied
the flood from this relay before (or from any holder) carries it back on a stick. Like a
peer pushing it again, the bundle must leave those items their first contributor's: were
they counted as the bundles' (one contributor for all imports), the bundles would become the
largest contributor, and the next eviction would take the newest imported items, honest
reports carried by USB among them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fieldsync.errors import InputRefused
from fieldsync.node import Node
from fieldsync.store import Quota, QuotaExceeded, Store
from fieldsync_protocol import codec
from fieldsync_protocol.bundle import SEALED_CHUNK
from fieldsync_protocol.items import Checked, check_item
from fieldsync_protocol.membership import Manifest
from tests.fieldsync.offline_support import Net, write_bundle

#: Larger than a page: freeing an item frees whole pages (as in test_eviction).
BIG = 8192
FLOODER = b"F" * 32
HONEST = b"H" * 32


@pytest.fixture
def relay(net: Net) -> Iterator[Node]:
    """Node B of the test network: a relay without an author key."""
    node = Node(net.b)
    yield node
    node.close()


def envelopes(manifest: Manifest, count: int) -> list[Checked]:
    key_id = manifest.current_hq_key_id
    return [
        check_item(
            codec.encode({"c": os.urandom(BIG), "k": key_id, "l": 3, "t": "e", "v": 1}),
            manifest,
        )
        for _ in range(count)
    ]


def held(store: Store) -> set[bytes]:
    return set(store.sorted_ids())


def imported_envelopes(store: Store) -> int:
    """Envelopes stored as the bundles' (no peer gave them)."""
    (count,) = store.conn.execute(
        "SELECT count(*) FROM items WHERE origin IS NULL AND kind = 'e'"
    ).fetchone()
    return int(count)


def remembered(store: Store) -> int:
    (count,) = store.conn.execute("SELECT count(*) FROM evicted_origins").fetchone()
    return int(count)


def quota_rows(store: Store) -> list[tuple[int, int, int]]:
    rows = store.conn.execute(
        "SELECT quota_window, quota_items, quota_bytes FROM peers ORDER BY peer"
    ).fetchall()
    return [(int(w or 0), int(i or 0), int(b or 0)) for w, i, b in rows]


def flood_then_evict(relay: Node) -> tuple[list[Checked], int]:
    """Five honest items, a flood of 30; evict 20 items' worth of bytes (about 20 items: a
    row of BIG bytes fills a little more than BIG of pages). Returns the evicted part of the
    flood and the budget."""
    store = relay.store()
    manifest = relay.membership().manifest
    store.add_batch(envelopes(manifest, 5), 0, origin=HONEST)
    # The flooder's quota record, at an old window (0) with nothing used: the flood itself is
    # stored uncharged, so what the bundle import charges is all the record will show.
    assert store.charge_quota(FLOODER, 0, 0, 0, 1, 1)
    flood = envelopes(manifest, 30)
    store.add_batch(flood, 0, origin=FLOODER)
    budget = store.used_bytes() - 20 * BIG
    evicted = store.enforce_budget(budget)
    assert evicted.items >= 15 and store.used_bytes() <= budget
    back = [c for c in flood if c.item.id not in held(store)]
    assert len(back) == evicted.items == remembered(store)
    return back, budget


def test_evicted_items_back_by_bundle_stay_their_contributors_and_charge_its_quota(
    net: Net, relay: Node
) -> None:
    back, budget = flood_then_evict(relay)
    store = relay.store()
    bundle = net.usb / "back.bundle"
    write_bundle(net, bundle, [c.item.data for c in back])

    result = relay.import_bundle(bundle)
    assert (result.counts.new, result.counts.duplicate) == (len(back), 0)
    assert {c.item.id for c in back} <= held(store)
    # The flooder's again: not the bundles', and left out of deltas to the flooder ...
    assert imported_envelopes(store) == 0
    flooder_rows = store.items_after(0, 10**6, FLOODER)
    assert not {c.item.id for c in back} & {
        check_item(data, relay.membership().manifest).item.id for _seq, data in flooder_rows
    }
    # ... the memory entries are dropped ...
    assert remembered(store) == 0
    # ... and the flooder is charged for them, in the import's quota day (read back, so a
    # test running across midnight UTC checks the same thing).
    (window,) = store.conn.execute("SELECT max(quota_window) FROM peers").fetchone()
    assert window > 0
    with pytest.raises(
        QuotaExceeded, match=rf"{len(back)} items a day; this delivery would make {len(back) + 1}"
    ):
        store.add_batch(
            envelopes(relay.membership().manifest, 1),
            0,
            origin=FLOODER,
            quota=Quota(FLOODER, window, len(back), 10**9),
        )

    # Honest reports a courier brings next are the bundles' (never evicted: nobody else's).
    before = quota_rows(store)
    honest = envelopes(relay.membership().manifest, 3)
    write_bundle(net, net.usb / "honest.bundle", [c.item.data for c in honest])
    assert relay.import_bundle(net.usb / "honest.bundle").counts.new == 3
    assert imported_envelopes(store) == 3
    assert quota_rows(store) == before, "items never evicted charge nobody"
    # The flood, back over the budget, is what the next eviction takes, not those reports:
    # counted as the bundles', the flood would have made them the largest contributor.
    store.enforce_budget(budget)
    assert {c.item.id for c in honest} <= held(store)
    assert remembered(store) > 0, "evicted again, remembered again"


def test_a_bundle_that_brings_an_evicted_item_twice_charges_it_once(net: Net, relay: Node) -> None:
    back, _budget = flood_then_evict(relay)
    store = relay.store()
    bundle = net.usb / "back.bundle"
    write_bundle(net, bundle, [c.item.data for c in back])
    relay.import_bundle(bundle)
    charged = quota_rows(store)
    again = relay.import_bundle(bundle)
    assert (again.counts.new, again.counts.duplicate) == (0, len(back))
    assert quota_rows(store) == charged


def test_a_tampered_bundle_of_evicted_items_changes_nothing(net: Net, relay: Node) -> None:
    """All or nothing: the items, the eviction memory and the quotas stay as they were."""
    back, _budget = flood_then_evict(relay)
    store = relay.store()
    items = held(store)
    quotas = quota_rows(store)
    bundle = net.usb / "back.bundle"
    write_bundle(net, bundle, [c.item.data for c in back])
    data = bytearray(bundle.read_bytes())
    assert len(data) > 16 + 2 * SEALED_CHUNK, "the flipped byte is after some items were read"
    data[-100] ^= 0x01  # in the final chunk: every earlier item was read and stored first
    bundle.write_bytes(bytes(data))

    with pytest.raises(InputRefused, match=r"refused, nothing imported: .*damaged"):
        relay.import_bundle(bundle)
    assert held(store) == items
    assert remembered(store) == len(back)
    assert quota_rows(store) == quotas

    # The same items from an intact bundle are still recognised afterwards.
    write_bundle(net, bundle, [c.item.data for c in back])
    relay.import_bundle(bundle)
    assert imported_envelopes(store) == 0 and remembered(store) == 0


def test_a_bundle_with_a_bad_item_after_evicted_ones_changes_nothing(net: Net, relay: Node) -> None:
    back, _budget = flood_then_evict(relay)
    store = relay.store()
    quotas = quota_rows(store)
    bad = b"\xc1 not an item"  # 0xc1 is never valid MessagePack
    bundle = net.usb / "bad.bundle"
    write_bundle(net, bundle, [*(c.item.data for c in back), bad])
    with pytest.raises(InputRefused, match="refused, nothing imported"):
        relay.import_bundle(bundle)
    assert not {c.item.id for c in back} & held(store)
    assert remembered(store) == len(back)
    assert quota_rows(store) == quotas


def test_an_item_evicted_from_the_bundles_comes_back_as_the_bundles(net: Net, relay: Node) -> None:
    """Imported items are evicted and remembered too (contributor: the bundles)."""
    store = relay.store()
    imported = envelopes(relay.membership().manifest, 10)
    write_bundle(net, net.usb / "in.bundle", [c.item.data for c in imported])
    relay.import_bundle(net.usb / "in.bundle")
    store.enforce_budget(store.used_bytes() - 4 * BIG)
    back = [c for c in imported if c.item.id not in held(store)]
    assert back and remembered(store) == len(back)
    quotas = quota_rows(store)
    write_bundle(net, net.usb / "back.bundle", [c.item.data for c in back])
    relay.import_bundle(net.usb / "back.bundle")
    assert imported_envelopes(store) == 10
    assert remembered(store) == 0
    assert quota_rows(store) == quotas
