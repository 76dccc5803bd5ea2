"""The sync session: paired in-memory peers, byte and round-trip targets, hostile input.

Two ``SyncSession`` objects are wired back to back in lockstep: one side processes a whole
flight (every message the other sent in one turn), stores what it received, commits, and
answers with its own flight. Round trips are responder flights (SPEC.md §13.7).
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import random
import tracemalloc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync_protocol import codec
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.reconcile import ReconcileParams
from fieldsync_protocol.reconcile_index import INFINITY, ZERO, SortedListIndex
from fieldsync_protocol.reconcile_wire import Range, RangeMode, encode_message
from fieldsync_protocol.riblt import CodedSymbols
from fieldsync_protocol.session import (
    TRANSITIONS,
    Completed,
    CursorAdvanced,
    ItemSourceError,
    ItemsReceived,
    Local,
    Mode,
    SessionConfig,
    Started,
    State,
    SyncSession,
    SyncStats,
)
from fieldsync_protocol.session_messages import BATCH_ITEMS, MAX_MESSAGE, Cursor


def item_id(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def make_items(start: int, count: int, size: int = 48) -> list[bytes]:
    return [i.to_bytes(8, "little") + b"\x5a" * (size - 8) for i in range(start, start + count)]


class MemStore:
    """A fake store: items by id, arrival numbers, origins, tombstones, a SortedListIndex."""

    def __init__(
        self, items: Iterable[bytes] = (), *, epoch: bytes = b"epoch-A", coded: bool = False
    ) -> None:
        self.epoch = epoch
        self.data: dict[bytes, bytes] = {}
        self.origin: dict[bytes, str] = {}
        self.seqs: list[int] = []
        self.ids_by_pos: list[bytes] = []
        self.tombstones: set[bytes] = set()
        self.later: dict[bytes, int] = {}  # id -> rank: held back like media (SPEC §16.5)
        self.seq = 0
        for data in items:
            self._store(data, "")
        self.index = SortedListIndex(self.data)
        # The coded-symbol prefix a node keeps for first contacts (SPEC.md §13.3.6).
        self.coded = CodedSymbols(self.data) if coded else None

    def _store(self, data: bytes, origin: str) -> bytes | None:
        key = item_id(data)
        if key in self.data or key in self.tombstones:
            return None
        self.seq += 1
        self.data[key] = data
        self.origin[key] = origin
        self.seqs.append(self.seq)
        self.ids_by_pos.append(key)
        return key

    def add(self, data: bytes, origin: str = "") -> bool:
        key = self._store(data, origin)
        if key is None:
            return False
        self.index.add(key)
        if self.coded is not None:
            self.coded.add(key)
        return True

    def delete(self, key: bytes) -> None:
        """Purge on receipt: the item goes, a tombstone stays."""
        self.tombstones.add(key)
        if key in self.data:
            del self.data[key]
            self.index.discard(key)
            if self.coded is not None:
                self.coded.remove(key)

    def cursor(self) -> Cursor:
        return Cursor(self.epoch, self.seq)

    def view(self, peer: str) -> PeerView:
        return PeerView(self, peer)

    def items_after(self, seq: int, limit: int, skip: str = "") -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        pos = bisect.bisect_right(self.seqs, seq)
        while len(out) < limit and pos < len(self.seqs):
            key = self.ids_by_pos[pos]
            if key in self.data and (not skip or self.origin[key] != skip):
                out.append((self.seqs[pos], self.data[key]))
            pos += 1
        return out

    def get(self, ids: Sequence[bytes]) -> list[bytes]:
        return [self.data[i] for i in ids if i in self.data]

    def wants(self, ids: Sequence[bytes]) -> list[bytes]:
        return [i for i in ids if i not in self.data and i not in self.tombstones]

    def send_later(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        return [(self.later[i], i) for i in ids if i in self.later and i in self.data]


class PeerView:
    """The ItemSource for a session with ``peer``: deltas skip what came from that peer."""

    def __init__(self, store: MemStore, peer: str) -> None:
        self.store = store
        self.peer = peer

    @property
    def index(self) -> SortedListIndex:
        return self.store.index

    def items_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        return self.store.items_after(seq, limit, skip=self.peer)

    def get(self, ids: Sequence[bytes]) -> list[bytes]:
        return self.store.get(ids)

    def wants(self, ids: Sequence[bytes]) -> list[bytes]:
        return self.store.wants(ids)

    def send_later(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        return self.store.send_later(ids)


@dataclass
class Side:
    session: SyncSession
    store: MemStore
    peer: str
    events: list[Any] = field(default_factory=list)
    hold: bool = False  # stop committing (simulates a slow disk / a cut link)

    def drain(self) -> None:
        while (event := self.session.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, ItemsReceived) and not self.hold:
                for data in event.items:
                    self.store.add(data, self.peer)
                self.session.commit_done(event.batch_no)

    @property
    def cursors(self) -> list[Cursor]:
        return [e.cursor for e in self.events if isinstance(e, CursorAdvanced)]

    @property
    def completed(self) -> SyncStats:
        done = [e for e in self.events if isinstance(e, Completed)]
        assert len(done) == 1
        return done[0].stats


@dataclass
class Run:
    a: Side
    b: Side
    flights: list[tuple[str, list[bytes]]]

    @property
    def round_trips(self) -> int:
        return sum(1 for who, _ in self.flights if who == "B")

    @property
    def total_bytes(self) -> int:
        return sum(len(m) for _, msgs in self.flights for m in msgs)

    @property
    def overhead(self) -> int:
        return self.a.completed.overhead_bytes


def pair(
    a: MemStore,
    b: MemStore,
    *,
    a_cursor: Cursor | None = None,
    b_cursor: Cursor | None = None,
    a_config: SessionConfig | None = None,
    b_config: SessionConfig | None = None,
) -> tuple[Side, Side]:
    sa = SyncSession(
        a.view("B"),
        initiator=True,
        local=a.cursor(),
        peer_cursor=a_cursor,
        config=a_config,
        coded=a.coded,
    )
    sb = SyncSession(
        b.view("A"),
        initiator=False,
        local=b.cursor(),
        peer_cursor=b_cursor,
        config=b_config,
        coded=b.coded,
    )
    return Side(sa, a, "B"), Side(sb, b, "A")


def run(
    a: MemStore, b: MemStore, *, max_flights: int = 10_000, check: bool = True, **kw: Any
) -> Run:
    sa, sb = pair(a, b, **kw)
    result = Run(sa, sb, [])
    sender, receiver, names = sa, sb, {id(sa): "A", id(sb): "B"}
    out = sender.session.messages_to_send()
    sender.drain()
    while out and len(result.flights) < max_flights:
        result.flights.append((names[id(sender)], out))
        for message in out:
            receiver.session.receive_message(message)
            receiver.drain()
        sender, receiver = receiver, sender
        out = sender.session.messages_to_send()
        sender.drain()
    if check:
        assert sa.session.complete and sb.session.complete
        assert sa.completed.round_trips == sb.completed.round_trips == result.round_trips
        assert set(a.data) | (b.tombstones - set(a.data)) >= set(b.data) - a.tombstones
    return result


def base_items(n: int) -> list[bytes]:
    return make_items(0, n)


@pytest.fixture(scope="module")
def base_100k() -> list[bytes]:
    return base_items(100_000)


def equal(a: MemStore, b: MemStore) -> bool:
    return set(a.data) == set(b.data)


# --- scenario targets ----------------------------------------------------------------------


def test_identical_100k_one_round_trip_under_1kb(base_100k: list[bytes]) -> None:
    a, b = MemStore(base_100k), MemStore(base_100k, epoch=b"epoch-B")
    r = run(a, b)
    assert r.round_trips == 1
    # S2 goal (issue #13): at most 400 B of session messages (4 fingerprints out, DONE back).
    assert r.total_bytes <= 400, r.total_bytes
    assert len(r.flights) == 3  # HELLO+RECONCILE / HELLO+DONE+END / END
    assert r.a.completed.items_sent == r.b.completed.items_sent == 0
    # both learnt the other's high-water mark as their new cursor
    assert r.a.cursors == [Cursor(b"epoch-B", 100_000)]
    assert r.b.cursors == [Cursor(b"epoch-A", 100_000)]
    print(f"\nidentical 100k: {r.round_trips} RT, {r.total_bytes} B")


@pytest.mark.parametrize("new_on", ["A", "B", "both"])
def test_repeat_contact_100_new_items(base_100k: list[bytes], new_on: str) -> None:
    a, b = MemStore(base_100k[:20_000]), MemStore(base_100k[:20_000], epoch=b"epoch-B")
    first = run(a, b)
    a_cur, b_cur = first.a.cursors[-1], first.b.cursors[-1]
    extra = make_items(10**6, 100, size=600)
    if new_on in ("A", "both"):
        for data in extra:
            a.add(data)
    if new_on in ("B", "both"):
        for data in make_items(2 * 10**6, 100, size=600):
            b.add(data)
    r = run(a, b, a_cursor=a_cur, b_cursor=b_cur)
    assert equal(a, b)
    assert r.a.session.mode is Mode.DELTA
    assert r.round_trips <= 2
    assert r.overhead <= 8 * 1024
    if new_on == "B":
        assert r.round_trips == 1
    print(f"\nrepeat contact, 100 new on {new_on}: {r.round_trips} RT, {r.overhead} B overhead")
    # a third contact sends nothing back (deltas skip what came from the same peer) and
    # leaves both cursors at the other's high-water mark
    a_cur = (r.a.cursors or [a_cur])[-1]
    b_cur = (r.b.cursors or [b_cur])[-1]
    again = run(a, b, a_cursor=a_cur, b_cursor=b_cur)
    assert again.round_trips == 1
    assert again.a.completed.items_sent == again.b.completed.items_sent == 0
    assert again.total_bytes < 200
    assert (again.a.cursors or [a_cur])[-1] == b.cursor()
    assert (again.b.cursors or [b_cur])[-1] == a.cursor()


@pytest.mark.parametrize("layout", ["A-extra", "B-extra", "symmetric"])
def test_first_contact_100k_100_scattered(base_100k: list[bytes], layout: str) -> None:
    rng = random.Random(7)
    picks = rng.sample(range(len(base_100k)), 100)
    a_drop = set(picks[:50] if layout == "symmetric" else picks if layout == "B-extra" else [])
    b_drop = set(picks[50:] if layout == "symmetric" else picks if layout == "A-extra" else [])
    a = MemStore([x for k, x in enumerate(base_100k) if k not in a_drop])
    b = MemStore([x for k, x in enumerate(base_100k) if k not in b_drop], epoch=b"epoch-B")
    r = run(a, b)
    assert equal(a, b) and len(a.data) == 100_000
    assert r.round_trips <= 3
    rec = r.a.completed.reconcile_bytes_sent + r.a.completed.reconcile_bytes_received
    print(
        f"\n100k first contact, 100 scattered ({layout}): {r.round_trips} RT, "
        f"{len(r.flights)} flights, reconcile {rec} B, overhead {r.overhead} B"
    )
    assert rec <= 130_000


@pytest.mark.parametrize("layout", ["A-extra", "B-extra", "symmetric", "identical"])
def test_first_contact_100k_coded_stage(base_100k: list[bytes], layout: str) -> None:
    """S4 with the coded stage (§13.3.6): 100 scattered differences decode from one CODED
    answer when the counts show them (2 round trips, under 16 KB); equal counts with
    different sets take MOREs; identical sets stay at 4 fingerprints and DONE."""
    rng = random.Random(7)
    picks = rng.sample(range(len(base_100k)), 100)
    a_drop = set(picks[:50] if layout == "symmetric" else picks if layout == "B-extra" else [])
    b_drop = set(picks[50:] if layout == "symmetric" else picks if layout == "A-extra" else [])
    a = MemStore([x for k, x in enumerate(base_100k) if k not in a_drop], coded=True)
    b = MemStore(
        [x for k, x in enumerate(base_100k) if k not in b_drop], epoch=b"epoch-B", coded=True
    )
    r = run(a, b)
    assert equal(a, b) and len(a.data) == 100_000
    print(f"\n100k coded first contact ({layout}): {r.round_trips} RT, {r.overhead} B overhead")
    if layout == "identical":
        assert r.round_trips == 1 and r.total_bytes <= 400
    elif layout == "symmetric":
        # counts equal: 24 symbols, then MORE to 72 and 216 (d = 100 needs ~150)
        assert r.round_trips <= 4 and r.overhead <= 16 * 1024
    else:
        assert r.round_trips == 2 and r.overhead <= 16 * 1024
    # the coded prefixes followed every item that arrived
    assert a.coded is not None and a.coded.count == len(a.data)
    assert a.coded.counts == CodedSymbols(a.data).counts


def test_coded_stage_on_one_side_only_reconciles_by_ranges() -> None:
    items = make_items(0, 3000)
    a = MemStore(items[:2990], coded=True)
    b = MemStore(items[5:], epoch=b"epoch-B")
    r = run(a, b)
    assert equal(a, b)
    assert b"\xa1n" in r.flights[0][1][1]  # A offered n; B, without symbols, answers by ranges
    assert all(b"\x05\xc5" not in m for _, ms in r.flights for m in ms)


def test_both_directions_unique_items() -> None:
    common = make_items(0, 3000)
    a = MemStore(common + make_items(10_000, 400))
    b = MemStore(common + make_items(20_000, 700), epoch=b"epoch-B")
    r = run(a, b)
    assert equal(a, b) and len(a.data) == 4100
    assert r.a.completed.items_sent == 400 and r.b.completed.items_sent == 700
    assert r.a.completed.items_received == 700 and r.b.completed.items_received == 400


def test_bulk_into_an_empty_store_streams_under_the_window() -> None:
    a = MemStore(make_items(0, 9000, size=200))
    b = MemStore(epoch=b"epoch-B")
    config = SessionConfig(window=2, batch_items=100)
    r = run(a, b, a_config=config, b_config=config)
    assert equal(a, b)
    assert r.a.completed.batches_sent == 90
    assert r.b.cursors[-1] == a.cursor()
    # at most two batches in any flight: the receiver's window
    assert max(sum(1 for m in msgs if codec.decode(m)["t"] == "data") for _, msgs in r.flights) <= 2


def _stepped_run(a: MemStore, b: MemStore, config: SessionConfig, step: int) -> Run:
    """``run``, but each side collects its flight ``step`` DATA batches per call."""
    sa, sb = pair(a, b, a_config=config, b_config=config)
    result = Run(sa, sb, [])
    sender, receiver, names = sa, sb, {id(sa): "A", id(sb): "B"}

    def flight(side: Side) -> list[bytes]:
        out: list[bytes] = []
        while part := side.session.messages_to_send(step):
            assert sum(1 for m in part if codec.decode(m)["t"] == "data") <= step
            out += part
        side.drain()
        return out

    out = flight(sender)
    while out:
        result.flights.append((names[id(sender)], out))
        for message in out:
            receiver.session.receive_message(message)
            receiver.drain()
        sender, receiver = receiver, sender
        out = flight(sender)
    return result


@pytest.mark.parametrize("step", [1, 3])
def test_a_flight_collected_a_few_batches_per_call_is_the_same_flight(step: int) -> None:
    """``messages_to_send(max_batches)`` only splits the work of making a flight: the
    messages, their order and the round trips are those of one call per flight."""
    config = SessionConfig(window=4, batch_items=100)
    whole = run(
        MemStore(make_items(0, 1500)), MemStore(epoch=b"epoch-B"), a_config=config, b_config=config
    )
    stepped = _stepped_run(MemStore(make_items(0, 1500)), MemStore(epoch=b"epoch-B"), config, step)
    assert stepped.flights == whole.flights
    assert stepped.a.session.complete and stepped.b.session.complete
    assert stepped.a.completed.round_trips == whole.a.completed.round_trips


def test_max_batches_must_be_positive() -> None:
    s = responder(0)
    with pytest.raises(LocalProtocolError, match="max_batches"):
        s.messages_to_send(0)


def test_both_empty() -> None:
    r = run(MemStore(), MemStore(epoch=b"epoch-B"))
    assert r.round_trips == 1
    # a cursor at 0: next time a delta ("after 0") suffices
    assert r.a.cursors == [Cursor(b"epoch-B", 0)] and r.b.cursors == [Cursor(b"epoch-A", 0)]
    again = run(
        MemStore(), MemStore(epoch=b"epoch-B"), a_cursor=r.a.cursors[0], b_cursor=r.b.cursors[0]
    )
    assert again.a.session.mode is Mode.DELTA


def test_batches_split_by_bytes() -> None:
    a = MemStore(make_items(0, 10, size=100_000))
    b = MemStore(epoch=b"epoch-B")
    r = run(a, b)
    assert equal(a, b)
    assert r.a.completed.batches_sent == 5  # two 100 kB items per 256 KiB batch


def test_tombstoned_items_are_not_wanted() -> None:
    common = make_items(0, 20)
    extra = make_items(1000, 10)
    receipted = [item_id(x) for x in extra[:5]]

    def stores() -> tuple[MemStore, MemStore]:
        a = MemStore(common + extra)
        b = MemStore(common, epoch=b"epoch-B")
        for key in receipted:
            b.delete(key)  # b held them until HQ receipted them: tombstones
        return a, b

    # a lists its 30 ids in full; b wants only the 5 it has no tombstone for
    full = SessionConfig(reconcile=ReconcileParams(prefix_bytes=0))
    a, b = stores()
    r = run(a, b, a_config=full)
    assert r.b.completed.items_received == 5
    assert not set(receipted) & set(b.data)
    # a lists windows of its ids: b can only ask for all 10 windows it lacks and drops the
    # tombstoned items on arrival, as for a push
    a, b = stores()
    r = run(a, b)
    assert r.b.completed.items_received == 10
    assert not set(receipted) & set(b.data)
    # when b lists its ids instead, a pushes all 10 it thinks b lacks; b's store drops the
    # tombstoned ones (the receipt item, pushed by b in the same session, purges them on a)
    a, b = stores()
    r = run(b, a)
    assert r.a.completed.items_received == 10
    assert not set(receipted) & set(b.data)
    # an item purged on a after a sync is simply absent next time
    gone = item_id(common[3])
    a.delete(gone)
    run(a, b)
    assert gone not in a.data and gone in b.data


#: Lists whole ids (IDLIST), never windows: the WANT path.
FULL_LISTS = SessionConfig(reconcile=ReconcileParams(prefix_bytes=0))


def test_want_for_a_purged_item_is_skipped() -> None:
    a = MemStore(make_items(0, 5))
    b = MemStore(epoch=b"epoch-B")
    sa, sb = pair(a, b, a_config=FULL_LISTS)
    for m in sa.session.messages_to_send():
        sb.session.receive_message(m)
    sb.drain()
    # a's first message listed its 5 ids; b answers WANT + DONE. a purges one before answering
    a.delete(item_id(a.data[next(iter(a.data))]))
    flight = sb.session.messages_to_send()
    assert [codec.decode(m)["t"] for m in flight] == ["hello", "want", "rec", "end"]
    for m in flight:
        sa.session.receive_message(m)
    sa.drain()
    out = sa.session.messages_to_send()
    data = [codec.decode(m) for m in out if codec.decode(m)["t"] == "data"]
    assert sum(len(d["i"]) for d in data) == 4


def test_quota_truncates_the_sender_and_keeps_the_cursor() -> None:
    a = MemStore(make_items(0, 300))
    b = MemStore(epoch=b"epoch-B")
    r = run(a, b, b_config=SessionConfig(quota_items=120))
    assert len(b.data) == 120
    assert r.a.completed.truncated
    assert r.b.cursors == []  # b did not get everything: no cursor
    # next contact (delta impossible without a cursor): reconcile fetches the rest
    run(a, b)
    assert equal(a, b)


def test_quota_truncates_a_delta_and_resumes() -> None:
    a = MemStore(make_items(0, 50))
    b = MemStore(make_items(0, 50), epoch=b"epoch-B")
    first = run(a, b)
    for data in make_items(500, 300):
        a.add(data)
    r = run(
        a,
        b,
        a_cursor=first.a.cursors[-1],
        b_cursor=first.b.cursors[-1],
        b_config=SessionConfig(quota_items=100),
    )
    assert r.a.completed.truncated and len(b.data) == 150
    assert r.b.cursors[-1] == Cursor(a.epoch, 150)
    r2 = run(a, b, a_cursor=(r.a.cursors or first.a.cursors)[-1], b_cursor=r.b.cursors[-1])
    assert r2.a.session.mode is Mode.DELTA and equal(a, b)
    assert r2.a.completed.items_sent == 200


@pytest.mark.parametrize("prefix_bytes", [0, 3])
def test_want_capped_by_quota_keeps_cursor(prefix_bytes: int) -> None:
    # b lacks 40 of a's items in one list (of ids: b wants only 15, its quota; of windows:
    # b asks for all 40 and a stops at b's quota)
    a = MemStore(make_items(0, 40))
    b = MemStore(epoch=b"epoch-B")
    lists = SessionConfig(reconcile=ReconcileParams(prefix_bytes=prefix_bytes))
    r = run(a, b, a_config=lists, b_config=SessionConfig(quota_items=15), check=False)
    assert len(b.data) == 15 and r.b.completed.items_received == 15
    assert r.b.cursors == []  # b did not take everything: its cursor on a stays put


def test_delta_cursor_advances_per_batch_and_resumes_after_a_cut() -> None:
    a = MemStore(make_items(0, 10))
    b = MemStore(make_items(0, 10), epoch=b"epoch-B")
    first = run(a, b)
    for data in make_items(100, 1000):
        a.add(data)
    config = SessionConfig(window=4, batch_items=100)
    sa, sb = pair(
        a,
        b,
        a_cursor=first.a.cursors[-1],
        b_cursor=first.b.cursors[-1],
        a_config=config,
        b_config=config,
    )
    # run three flights, then the link drops
    out = sa.session.messages_to_send()
    for _ in range(3):
        for m in out:
            sb.session.receive_message(m)
            sb.drain()
        out = sb.session.messages_to_send()
        for m in out:
            sa.session.receive_message(m)
            sa.drain()
        out = sa.session.messages_to_send()
    got = sb.cursors[-1]
    assert 10 < got.seq < 1010 and len(b.data) == got.seq
    r = run(a, b, a_cursor=first.a.cursors[-1], b_cursor=got, a_config=config, b_config=config)
    assert equal(a, b)
    assert r.a.completed.items_sent == 1010 - got.seq  # nothing re-sent


@pytest.mark.parametrize("case", ["epoch", "ahead", "responder-unknown", "initiator-epoch"])
def test_invalid_cursor_falls_back_to_reconciliation(case: str) -> None:
    a = MemStore(make_items(0, 200))
    b = MemStore(make_items(100, 200), epoch=b"epoch-B")
    a_cur: Cursor | None = Cursor(b.epoch, 50)
    b_cur: Cursor | None = Cursor(a.epoch, 50)
    if case == "epoch":
        a_cur = Cursor(b"an old store", 50)
    elif case == "ahead":
        a_cur = Cursor(b.epoch, 999)
    elif case == "responder-unknown":
        b_cur = None
    else:
        b_cur = Cursor(b"an old store", 10)
    b_at_start = b.cursor()
    r = run(a, b, a_cursor=a_cur, b_cursor=b_cur)
    assert r.a.session.mode is Mode.RECONCILE and equal(a, b)
    started = [e for e in r.a.events if isinstance(e, Started)]
    assert started == [Started(Mode.RECONCILE, b_at_start)]
    # b started the reconciliation: its first flight is HELLO(r) + RECONCILE
    assert [codec.decode(m)["t"] for m in r.flights[1][1]][:2] == ["hello", "rec"]
    if case == "initiator-epoch":
        assert r.b.cursors[-1] == Cursor(a.epoch, 200)
    if case == "ahead":  # b's store went back (restored): a's cursor moves back too
        assert r.a.cursors[-1] == b_at_start


def test_large_divergence_uses_frame_limit_continuation() -> None:
    a = MemStore(make_items(0, 3000))
    b = MemStore(make_items(2000, 3000), epoch=b"epoch-B")
    small = SessionConfig(reconcile=ReconcileParams(max_message=16_384, max_ranges=60))
    r = run(a, b, a_config=small, b_config=small)
    assert equal(a, b)
    assert r.a.completed.reconcile_messages > 6


def test_stats_count_flights_and_bytes(base_100k: list[bytes]) -> None:
    a, b = MemStore(base_100k[:2000]), MemStore(base_100k[:1990], epoch=b"epoch-B")
    r = run(a, b)
    sa, sb = r.a.completed, r.b.completed
    assert sa.bytes_sent == sb.bytes_received and sa.bytes_received == sb.bytes_sent
    assert sa.bytes_sent + sa.bytes_received == r.total_bytes
    assert sa.flights_sent + sb.flights_sent == len(r.flights)
    assert sa.reconcile_bytes_sent == sb.reconcile_bytes_received
    assert sa.payload_bytes_sent == 10 * 48 == sb.payload_bytes_received
    assert sa.mode == "reconcile" and sa.reconcile_messages == sb.reconcile_messages


# --- local misuse ---------------------------------------------------------------------------


def test_commit_done_out_of_order_is_local_error() -> None:
    a = MemStore(make_items(0, 300))
    b = MemStore(epoch=b"epoch-B")
    sa, sb = pair(a, b)
    sb.hold = True
    for m in sa.session.messages_to_send():
        sb.session.receive_message(m)
    for m in sb.session.messages_to_send():
        sa.session.receive_message(m)
    for m in sa.session.messages_to_send():
        sb.session.receive_message(m)
    sb.drain()
    batches = [e.batch_no for e in sb.events if isinstance(e, ItemsReceived)]
    assert batches == [0, 1]
    with pytest.raises(LocalProtocolError):
        sb.session.commit_done(1)
    with pytest.raises(LocalProtocolError):
        sb.session.commit_done(2)
    sb.session.commit_done(0)
    sb.session.commit_done(1)


def test_config_and_cursor_checks() -> None:
    bad_settings: tuple[dict[str, Any], ...] = (
        {"quota_items": -1},
        {"window": 0},
        {"window": 2000},
        {"batch_items": 0},
        {"batch_bytes": 10**9},
    )
    for bad in bad_settings:
        with pytest.raises(LocalProtocolError):
            SessionConfig(**bad)
    with pytest.raises(LocalProtocolError):
        SyncSession(MemStore(), initiator=True, local=Cursor(b"x" * 33, 0))
    with pytest.raises(LocalProtocolError):
        SyncSession(MemStore(), initiator=True, local=Cursor(b"x", -1))
    with pytest.raises(LocalProtocolError):
        SyncSession(
            MemStore(), initiator=True, local=Cursor(b"x", 1), peer_cursor=Cursor(b"y", 2**63)
        )


# --- hostile input -----------------------------------------------------------------------------


def msg(kind: str, **fields: Any) -> bytes:
    return codec.encode({"t": kind, **fields})


def hello(**over: Any) -> bytes:
    fields: dict[str, Any] = {"v": 1, "e": b"epoch-X", "h": 10, "q": 1000, "w": 4, "r": True}
    fields.update(over)
    return msg("hello", **{k: v for k, v in fields.items() if v is not None})


def responder(items: int = 0, **kw: Any) -> SyncSession:
    return SyncSession(
        MemStore(make_items(0, items), epoch=b"epoch-B"),
        initiator=False,
        local=Cursor(b"epoch-B", items),
        **kw,
    )


def refused(session: SyncSession, data: bytes, match: str = "") -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        session.receive_message(data)
    assert session.state is State.FAILED
    with pytest.raises(RemoteProtocolError):
        session.receive_message(data)
    assert session.messages_to_send() == []


DONE = encode_message([])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xc1", "not valid msgpack"),
        (b"\x93\x01\x02\x03", "not allowed"),
        (codec.encode({"x": 1}), "not allowed"),
        (msg("data", n=0, i=[b"x"]), "not allowed in state await-hello"),
        (msg("ack", n=0), "not allowed"),
        (msg("end"), "not allowed"),
        (DONE, "not allowed"),
        (msg("bogus"), "not allowed"),
        (b"\xc4" + b"\x00" * (MAX_MESSAGE + 1), "more than"),
        (hello(v=2), "version 2"),
        (hello(e=b"x" * 33), "HELLO.e"),
        (hello(r=1), "HELLO.r"),
        (hello(q=2**33), "HELLO.q"),
        (hello(w=0), "HELLO.w"),
        (hello(h=-1), "HELLO.h"),
        (hello(r=False), "must start reconciliation"),
        (hello(a=[b"epoch-B", 1]), "only without r"),
        (hello(r=False, a=[b"epoch-B"]), "HELLO.a"),
        (hello(r=False, a="x"), "HELLO.a"),
        (hello(r=False, a=[b"e" * 33, 1]), "HELLO.a epoch"),
        (hello(r=False, a=[1, 1]), "HELLO.a.e"),
        (hello(r=False, a=[b"epoch-B", -1]), "HELLO.a.s"),
        (hello(x=1), "unknown field"),
        (hello(v=None), "lacks field"),
    ],
)
def test_responder_refuses_bad_first_messages(data: bytes, match: str) -> None:
    refused(responder(), data, match)


def reconciling_responder(items: int = 20) -> tuple[SyncSession, list[bytes]]:
    """A responder that got HELLO(r) + a first message and listed its ids (IDLIST)."""
    s = responder(items, config=FULL_LISTS)
    s.receive_message(hello())
    peer_first = encode_message([Range(INFINITY, RangeMode.FINGERPRINT, b"\x00" * 16)])
    s.receive_message(peer_first)
    return s, s.messages_to_send()


def test_reconcile_phase_refusals() -> None:
    s, out = reconciling_responder()
    assert [codec.decode(m)["t"] for m in out] == ["hello", "rec"]
    ids = sorted(item_id(x) for x in make_items(0, 20))
    cases = [
        (msg("end"), "not allowed in state reconciling"),
        (msg("hello"), "not allowed"),
        (msg("want", i=b""), "1..16384 ids"),
        (msg("want", i=b"x" * 33), "1..16384 ids"),
        (msg("want", i=ids[1] + ids[0]), "not strictly ascending"),
        (msg("want", i=ids[0] + ids[0]), "not strictly ascending"),
        (msg("want", i=b"\x00" * 32), None),  # inside the listed range but not held: fine
        (msg("want", x=1, i=ids[0]), "unknown field"),
        (msg("data", n=1, i=[b"x"]), "out of order"),
        (msg("data", n=0, i=[]), "1..256 items"),
        (msg("data", n=0, i=[b""]), "DATA item"),
        (msg("data", n=0, i=[1]), "DATA item"),
        (msg("data", n=0, i=b"x"), "1..256 items"),
        (msg("data", n=0, i=[b"x"] * (BATCH_ITEMS + 1)), "1..256 items"),
        (msg("data", n=0, i=[b"x"], s=3), "only in delta mode"),
        (msg("ack", n=0), "no unacknowledged batch"),
        (msg("rec", r=[None, 1, b"\x00" * 16], x=1), "unknown field"),
        (msg("rec", r=[b"\x01", 1, b"\x00" * 16] * 16_385), "more than 16384 ranges"),
    ]
    for data, match in cases:
        s, _ = reconciling_responder()
        if match is None:
            s.receive_message(data)
            # having been asked once for everything we listed, asking again is too much
            s.receive_message(msg("want", i=b"".join(ids[1:])))
            refused(s, msg("want", i=ids[0]), "more ids")
        else:
            refused(s, data, match)


def test_want_for_an_id_never_listed_is_refused() -> None:
    s = responder(400)
    s.receive_message(hello())
    # a fingerprint over everything that differs: 400 ids are split into 16 fingerprints
    s.receive_message(encode_message([Range(INFINITY, RangeMode.FINGERPRINT, b"\x00" * 16)]))
    assert [codec.decode(m)["t"] for m in s.messages_to_send()] == ["hello", "rec"]
    refused(s, msg("want", i=b"\x10" * 32), "never listed")


def test_quota_exceeded_is_refused() -> None:
    s = responder(0, config=SessionConfig(quota_items=3, window=8))
    s.receive_message(hello())
    s.receive_message(encode_message([Range(INFINITY, RangeMode.IDLIST, b"")]))
    s.receive_message(msg("data", n=0, i=[b"a", b"b"]))
    refused(s, msg("data", n=1, i=[b"c", b"d"]), "quota exceeded")


def test_window_overrun_is_refused() -> None:
    s = responder(0, config=SessionConfig(window=2))
    s.receive_message(hello())
    s.receive_message(encode_message([Range(INFINITY, RangeMode.IDLIST, b"")]))
    s.receive_message(msg("data", n=0, i=[b"a"]))
    s.receive_message(msg("data", n=1, i=[b"b"]))
    refused(s, msg("data", n=2, i=[b"c"]), "window")


def transfer_pair() -> tuple[Side, Side]:
    """A pair in delta mode after the HELLO exchange, with 300 new items on A."""
    a = MemStore(make_items(0, 10))
    b = MemStore(make_items(0, 10), epoch=b"epoch-B")
    first = run(a, b)
    for data in make_items(100, 300):
        a.add(data)
    return pair(a, b, a_cursor=first.a.cursors[-1], b_cursor=first.b.cursors[-1])


def test_transfer_phase_refusals() -> None:
    def fresh() -> Side:
        # a has sent HELLO; of b's answer (HELLO, END) only the HELLO has arrived
        sa, sb = transfer_pair()
        for m in sa.session.messages_to_send():
            sb.session.receive_message(m)
        sa.session.receive_message(sb.session.messages_to_send()[0])
        sa.drain()
        assert sa.session.state is State.TRANSFER
        return sa

    a_flight_cases = [
        (msg("want", i=b"\x00" * 32), "not allowed in state transfer"),
        (DONE, "not allowed in state transfer"),
        (msg("data", n=0, i=[b"x"]), "must carry s"),
        (msg("data", n=0, i=[b"x"], s=10), "DATA.s"),  # not after our cursor (10)
        (msg("data", n=0, i=[b"x"], s=11), "DATA.s"),  # b's high-water mark is 10
        (msg("end", s=9), "END.s"),
        (msg("end", x=1), "unknown field"),
    ]
    for data, match in a_flight_cases:
        refused(fresh().session, data, match)
    sa = fresh()
    sa.session.receive_message(msg("end", s=10))
    assert sa.session.state is State.PEER_ENDED
    refused(sa.session, msg("end"), "not allowed in state peer-ended")
    sa = fresh()
    sa.session.receive_message(msg("end"))
    refused(sa.session, msg("data", n=0, i=[b"x"], s=3), "not allowed in state peer-ended")


def test_ack_rules() -> None:
    sa, sb = transfer_pair()
    for m in sa.session.messages_to_send():
        sb.session.receive_message(m)
    sb.drain()
    for m in sb.session.messages_to_send():
        sa.session.receive_message(m)
    sa.drain()
    out = sa.session.messages_to_send()
    assert sum(1 for m in out if codec.decode(m)["t"] == "data") == 2  # 300 items, 256 a batch
    sa.session.receive_message(msg("ack", n=0))
    with pytest.raises(RemoteProtocolError, match="ACK 0"):
        sa.session.receive_message(msg("ack", n=0))  # duplicate
    sa2, _ = transfer_pair()
    refused(sa2.session, msg("ack", n=0), "not allowed in state await-hello")


def test_initiator_refuses_bad_hellos() -> None:
    def initiator(cursor: Cursor | None) -> SyncSession:
        s = SyncSession(MemStore(), initiator=True, local=Cursor(b"epoch-A", 5), peer_cursor=cursor)
        s.messages_to_send()
        return s

    refused(initiator(None), hello(r=True), "must be plain")
    refused(initiator(None), hello(r=False, a=[b"epoch-A", 1]), "must be plain")
    refused(initiator(Cursor(b"B", 1)), hello(r=False, a=[b"epoch-A", 6]), "no valid cursor")
    refused(initiator(Cursor(b"B", 1)), hello(r=False, a=[b"other", 1]), "no valid cursor")
    refused(initiator(Cursor(b"B", 1)), hello(r=False), "no valid cursor")
    s = initiator(None)
    s.receive_message(hello(r=False))
    refused(s, hello(r=False), "not allowed in state reconciling")


def test_messages_after_completion_are_refused() -> None:
    r = run(MemStore(make_items(0, 5)), MemStore(epoch=b"epoch-B"))
    for side in (r.a, r.b):
        assert side.session.state is State.COMPLETE
        assert side.session.messages_to_send() == []
        refused(side.session, msg("ack", n=0), "not allowed in state complete")


def test_transition_table_shape() -> None:
    states = {s for s, _ in TRANSITIONS}
    assert State.COMPLETE not in states and State.FAILED not in states
    # Errors, not rows, lead to FAILED; only the local SETTLED event leads to COMPLETE.
    for (state, event), row in TRANSITIONS.items():
        assert row.next_state and State.FAILED not in row.next_state.values()
        assert (State.COMPLETE in row.next_state.values()) == (event is Local.SETTLED)
        assert isinstance(event, str) or state is State.PEER_ENDED


def test_a_peer_cannot_send_the_local_settled_event() -> None:
    s = responder()
    s.receive_message(hello(r=False, a=[b"epoch-B", 0]))
    refused(s, msg(Local.SETTLED.value), "not allowed in state")


class FailingStore(MemStore):
    """A store whose ``failing`` method fails as a real one does on a broken disk."""

    def __init__(self, failing: str, items: Iterable[bytes] = (), **kw: Any) -> None:
        super().__init__(items, **kw)
        self.failing = failing

    def _fail(self, name: str) -> None:
        if name == self.failing:
            raise ItemSourceError(f"{name}: disk I/O error")

    def wants(self, ids: Sequence[bytes]) -> list[bytes]:
        self._fail("wants")
        return super().wants(ids)

    def get(self, ids: Sequence[bytes]) -> list[bytes]:
        self._fail("get")
        return super().get(ids)


def test_a_store_failure_while_receiving_is_ours_not_the_peers() -> None:
    a = MemStore(make_items(0, 5))
    b = FailingStore("wants", epoch=b"epoch-B")
    sa = SyncSession(a, initiator=True, local=a.cursor(), config=FULL_LISTS)
    sb = SyncSession(b, initiator=False, local=b.cursor())
    with pytest.raises(ItemSourceError, match="disk I/O error"):
        for _ in range(10):
            for message in sa.messages_to_send():
                sb.receive_message(message)
            for message in sb.messages_to_send():
                sa.receive_message(message)
    assert sb.state is State.FAILED
    assert sb.messages_to_send() == []


def test_a_store_failure_while_sending_is_ours_not_the_peers() -> None:
    a = FailingStore("get", make_items(0, 5))
    b = MemStore(epoch=b"epoch-B")
    sa = SyncSession(a, initiator=True, local=a.cursor())
    sb = SyncSession(b, initiator=False, local=b.cursor())
    with pytest.raises(ItemSourceError, match="disk I/O error"):
        for _ in range(10):
            for message in sa.messages_to_send():
                sb.receive_message(message)
            for message in sb.messages_to_send():
                sa.receive_message(message)
    assert sa.state is State.FAILED
    assert sa.messages_to_send() == []


# Hypothesis: arbitrary bytes and arbitrary (well-formed-ish) messages in every state.

_kinds = st.sampled_from(["hello", "rec", "want", "data", "ack", "end", "zzz"])
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 2**40),
    st.binary(max_size=70),
    st.text(max_size=5),
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=6), max_leaves=20)
_fields = st.dictionaries(
    st.sampled_from(["v", "e", "h", "q", "w", "r", "a", "n", "i", "s", "x"]), _values, max_size=7
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=300))
    if choice == 1:
        return msg(draw(_kinds), **draw(_fields))
    if choice == 2:
        # plausible reconcile messages
        flat = draw(
            st.lists(st.one_of(st.none(), st.binary(max_size=40), st.integers(-1, 3)), max_size=12)
        )
        return codec.encode({"t": "rec", "r": flat})
    return draw(
        st.sampled_from(
            [
                hello(),
                hello(r=False, a=[b"epoch-B", 3]),
                DONE,
                msg("data", n=0, i=[b"x"]),
                msg("data", n=0, i=[b"x"], s=1),
                msg("ack", n=0),
                msg("end"),
                msg("end", s=10),
                msg("want", i=b"\x00" * 32),
            ]
        )
    )


def _sessions_in_every_state() -> list[SyncSession]:
    out: list[SyncSession] = [responder(30)]
    init = SyncSession(MemStore(make_items(0, 30)), initiator=True, local=Cursor(b"epoch-A", 30))
    init.messages_to_send()
    out.append(init)
    s, _ = reconciling_responder()
    out.append(s)
    sa, sb = transfer_pair()
    for m in sa.session.messages_to_send():
        sb.session.receive_message(m)
    sb.drain()
    out.append(sb.session)
    r = run(MemStore(make_items(0, 5)), MemStore(epoch=b"epoch-B"))
    out.append(r.a.session)
    # a has 300 items to send in delta mode; b's whole answer (HELLO, END) has arrived
    sa, sb = transfer_pair()
    for m in sa.session.messages_to_send():
        sb.session.receive_message(m)
    for m in sb.session.messages_to_send():
        sa.session.receive_message(m)
    out.append(sa.session)
    return out


_TEMPLATES: list[SyncSession] = []


def session_in_state(which: int) -> SyncSession:
    """A fresh copy of a session waiting for HELLO (both roles), reconciling, transferring,
    complete, or with the peer ended."""
    if not _TEMPLATES:
        _TEMPLATES.extend(_sessions_in_every_state())
    return copy.deepcopy(_TEMPLATES[which])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 5), st.lists(messages(), min_size=1, max_size=6))
def test_fuzz_only_remote_protocol_errors(which: int, sequence: list[bytes]) -> None:
    session = session_in_state(which)
    assert (
        session.state
        is [
            State.AWAIT_HELLO,
            State.AWAIT_HELLO,
            State.RECONCILING,
            State.TRANSFER,
            State.COMPLETE,
            State.PEER_ENDED,
        ][which]
    )
    for data in sequence:
        try:
            session.receive_message(data)
        except RemoteProtocolError:
            assert session.state is State.FAILED
        while (event := session.next_event()) is not None:
            if isinstance(event, ItemsReceived):
                session.commit_done(event.batch_no)
        session.messages_to_send()


# --- soak: 1M items -----------------------------------------------------------------------------


class IdOnlyStore(MemStore):
    """A 1M-item store that keeps ids only, plus the bytes of items the peer may ask for."""

    def __init__(self, index: SortedListIndex, extra: dict[bytes, bytes], epoch: bytes) -> None:
        self.epoch = epoch
        self.index = index
        self.data = extra
        self.tombstones = set()
        self.seq = len(index)
        self.seqs, self.ids_by_pos = [], []

    def add(self, data: bytes, origin: str = "") -> bool:
        if not self.index.add(item_id(data)):
            return False
        self.data[item_id(data)] = data
        self.seq += 1
        return True

    def wants(self, ids: Sequence[bytes]) -> list[bytes]:
        return [i for i in ids if i not in self.index]

    def send_later(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        return []


@pytest.fixture(scope="module")
def sorted_1m() -> list[bytes]:
    return sorted(item_id(i.to_bytes(8, "little")) for i in range(1_000_000))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["identical", "A-extra", "B-extra", "symmetric", "A-10k"])
def test_soak_1m(sorted_1m: list[bytes], layout: str) -> None:
    n = len(sorted_1m)
    d = 10_000 if layout == "A-10k" else 100
    picks = [i.to_bytes(8, "little") for i in random.Random(11).sample(range(n), d)]
    a_only = picks[:50] if layout == "symmetric" else picks if layout.startswith("A") else []
    b_only = picks[50:] if layout == "symmetric" else picks if layout == "B-extra" else []
    a_skip = {item_id(x) for x in b_only}
    b_skip = {item_id(x) for x in a_only}
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    a_index = SortedListIndex.from_sorted(k for k in sorted_1m if k not in a_skip)
    a_index.count(ZERO, INFINITY)  # build the cumulative sums too
    one_index = tracemalloc.get_traced_memory()[0] - base
    b_index = SortedListIndex.from_sorted(k for k in sorted_1m if k not in b_skip)
    a = IdOnlyStore(a_index, {item_id(x): x for x in a_only}, b"epoch-A")
    b = IdOnlyStore(b_index, {item_id(x): x for x in b_only}, b"epoch-B")
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    r = run(a, b, check=False)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    assert r.a.session.complete and r.b.session.complete
    assert len(a.index) == len(b.index) == n
    rec = r.a.completed.reconcile_bytes_sent + r.a.completed.reconcile_bytes_received
    print(
        f"\n1M {layout}: {r.round_trips} RT, {len(r.flights)} flights, reconcile {rec} B, "
        f"total {r.total_bytes} B, index {one_index / 2**20:.1f} MiB, "
        f"session peak {peak / 2**20:.1f} MiB"
    )
    assert one_index <= 64 * 2**20
    assert r.round_trips <= {"identical": 1, "A-10k": 10}.get(layout, 4)


def test_flights_count_runs_of_sends_and_receives() -> None:
    a = MemStore(make_items(0, 300))
    b = MemStore(epoch=b"epoch-B")
    sa, sb = pair(a, b)
    sb.hold = True
    for m in sa.session.messages_to_send():
        sb.session.receive_message(m)
    for m in sb.session.messages_to_send():  # HELLO + 16 empty id lists
        sa.session.receive_message(m)
    for m in sa.session.messages_to_send():  # DONE, two DATA batches, END
        sb.session.receive_message(m)
    sb.drain()
    assert [codec.decode(m)["t"] for m in sb.session.messages_to_send()] == ["end"]
    # an asyncio driver commits later and sends each ACK as it goes: still one flight
    for batch in (0, 1):
        sb.session.commit_done(batch)
        assert [codec.decode(m)["t"] for m in sb.session.messages_to_send()] == ["ack"]
    assert sb.session.stats.flights_sent == 2 and sb.session.stats.round_trips == 2
    assert sb.session.stats.flights_received == 2


def test_push_skips_a_fetch_the_peer_already_holds() -> None:
    # b lists its 150 ids in one go (a large id-list threshold); a holds those and 50 more:
    # whole fetches of a's push range are ids b listed, and are skipped
    every = sorted(make_items(0, 200), key=item_id)
    a = MemStore(every)
    b = MemStore(every[:150], epoch=b"epoch-B")
    lists = SessionConfig(reconcile=ReconcileParams(idlist_threshold=1024))
    r = run(b, a, a_config=lists)
    assert equal(a, b) and r.b.completed.items_sent == 50


@pytest.mark.parametrize("b_has", ["nothing", "half"])
def test_reconciliation_sends_media_after_every_text_and_in_rank_order(b_has: str) -> None:
    """SPEC §16.5: what ``send_later`` names waits until reconciliation is done, lowest
    rank first, so a contact cut early has carried the report texts."""
    texts = make_items(0, 400)
    media = make_items(50_000, 300, size=400)
    a = MemStore(texts + media)
    rank = {item_id(data): n for n, data in enumerate(reversed(media))}
    a.later.update(rank)
    b = MemStore(texts[::2] if b_has == "half" else [], epoch=b"epoch-B")
    before = set(b.data)
    r = run(a, b)
    assert equal(a, b)
    arrived = [
        item_id(data)
        for e in r.b.events
        if isinstance(e, ItemsReceived)
        for data in e.items
        if item_id(data) not in before
    ]
    media_ids = [i for i in arrived if i in rank]
    first_media = arrived.index(media_ids[0])
    assert len(media_ids) == 300 and first_media == len(arrived) - 300
    assert [rank[i] for i in media_ids] == sorted(rank.values())


class PurgedOnceHeld(MemStore):
    """Receipts for the media arrive the moment the session has set them aside."""

    def send_later(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        held = super().send_later(ids)
        for _, key in held:
            self.delete(key)
        return held


def test_held_back_media_purged_before_its_turn_is_not_sent() -> None:
    """A receipt that purges held-back chunks mid-session: nothing is sent for them, and the
    session still ends cleanly (SPEC §16.7)."""
    texts = make_items(0, 50)
    media = make_items(60_000, 200, size=400)
    a = PurgedOnceHeld(texts + media)
    a.later.update({item_id(data): n for n, data in enumerate(media)})
    b = MemStore([], epoch=b"epoch-B")
    run(a, b)
    assert set(b.data) == {item_id(t) for t in texts}


#: Two items whose ids share their first 3 bytes: the same window when listed over the whole
#: id space (found by a birthday search; an attacker can grind such pairs at will).
TWINS = (b"twin 2469" + bytes(30), b"twin 2785" + bytes(30))


@pytest.mark.parametrize("extra_on_a", [0, 1])
def test_window_collision_between_sides_still_converges(extra_on_a: int) -> None:
    assert item_id(TWINS[0])[:3] == item_id(TWINS[1])[:3] and TWINS[0] != TWINS[1]
    common = make_items(0, 10)
    a = MemStore([*common, TWINS[0], *make_items(500, extra_on_a)])
    b = MemStore([*common, TWINS[1]], epoch=b"epoch-B")
    r = run(a, b)
    assert equal(a, b) and item_id(TWINS[1]) in a.data and item_id(TWINS[0]) in b.data
    # a listed by window; the collision was caught (by b; by a when b lacked a window too,
    # an exchange later) and the range listed in full, which costs b's or a's WANT
    assert r.a.completed.round_trips == 2 + extra_on_a


class CountingStore(MemStore):
    """A MemStore that counts items it receives while already holding them."""

    duplicates = 0

    def add(self, data: bytes, origin: str = "") -> bool:
        stored = super().add(data, origin)
        self.duplicates += not stored
        return stored


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    only_a=st.integers(0, 1500),
    only_b=st.integers(0, 1500),
    common=st.sampled_from([0, 300, 3000]),
    prefix_bytes=st.sampled_from([2, 3]),
    seed=st.integers(0, 2**32),
)
def test_no_item_is_sent_to_a_peer_that_holds_it(
    only_a: int, only_b: int, common: int, prefix_bytes: int, seed: int
) -> None:
    """Window collisions (frequent with 2-byte windows) never make a side push an id twice
    or push an id the peer listed: each side receives exactly the items it lacked."""
    rng = random.Random(seed)
    base = rng.randrange(2**40)
    shared = make_items(base, common)
    a = CountingStore([*shared, *make_items(base + 10**7, only_a)])
    b = CountingStore([*shared, *make_items(base + 2 * 10**7, only_b)], epoch=b"epoch-B")
    config = SessionConfig(reconcile=ReconcileParams(prefix_bytes=prefix_bytes))
    r = run(a, b, a_config=config, b_config=config)
    assert equal(a, b)
    assert a.duplicates == b.duplicates == 0
    assert r.a.completed.items_received == r.b.completed.items_sent == only_b
    assert r.b.completed.items_received == r.a.completed.items_sent == only_a


@pytest.mark.parametrize("seed", range(3))
def test_10k_each_way_sends_each_item_once(seed: int) -> None:
    """Regression: disjoint 10k sets with default windows (3 bytes) collide in a few leaves;
    the side that had already pushed by window pushed those leaves again after the full list."""
    rng = random.Random(seed)
    a = CountingStore(make_items(rng.randrange(2**40), 10_000))
    b = CountingStore(make_items(2**41 + rng.randrange(2**40), 10_000), epoch=b"epoch-B")
    r = run(a, b)
    assert a.duplicates == b.duplicates == 0
    assert r.a.completed.items_received == r.b.completed.items_sent == 10_000
