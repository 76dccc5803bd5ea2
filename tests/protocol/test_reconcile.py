"""Range-based reconciliation: the packed index against a brute-force model, message
parsing, and two reconcilers run to the end on arbitrary sets."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldsync_protocol import codec
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.reconcile import MAX_ROUNDS, PushRange, ReconcileParams, Reconciler
from fieldsync_protocol.reconcile_index import (
    EMPTY_FINGERPRINT,
    INFINITY,
    ZERO,
    SortedListIndex,
    _lane_sum_le,
    _lane_sum_portable,
    fingerprint_of,
    id_sum,
    separator,
    successor,
)
from fieldsync_protocol.reconcile_wire import (
    MAX_RANGES,
    Range,
    RangeMode,
    encode_message,
    parse_message,
    window_offset,
)


def h(i: int) -> bytes:
    return hashlib.blake2b(i.to_bytes(8, "little"), digest_size=32).digest()


# Ids that share prefixes often (two small leading bytes), so separators get long.
ids_st = st.builds(
    lambda a, b, rest: bytes([a, b]) + rest,
    st.integers(0, 3),
    st.sampled_from([0, 1, 255]),
    st.binary(min_size=30, max_size=30),
)
bounds_st = st.one_of(
    st.just(ZERO),
    st.just(INFINITY),
    st.binary(min_size=1, max_size=33),
    ids_st,
)


class Model:
    """The obvious implementation: a sorted list."""

    def __init__(self, ids: set[bytes]) -> None:
        self.ids = sorted(ids)

    def range(self, lower: bytes, upper: bytes) -> list[bytes]:
        return [i for i in self.ids if lower <= i < upper]


# --- the index ----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.sets(ids_st, max_size=60),
    st.lists(st.tuples(bounds_st, bounds_st), min_size=1, max_size=6),
    st.integers(2, 5),
)
def test_index_matches_model(
    ids: set[bytes], queries: list[tuple[bytes, bytes]], load: int
) -> None:
    index = SortedListIndex(ids, load=load)
    model = Model(ids)
    assert len(index) == len(ids)
    for lower, upper in queries:
        inside = model.range(lower, upper)
        assert index.count(lower, upper) == len(inside)
        assert index.fingerprint(lower, upper) == fingerprint_of(id_sum(inside), len(inside))
        assert index.ids(lower, upper, 7) == inside[:7]
        assert index.ids(lower, upper, 1000) == inside
        for parts in (2, 3, 16):
            points = index.split_points(lower, upper, parts)
            assert len(points) == max(0, min(parts, len(inside)) - 1)
            edges = [lower, *points, upper]
            runs = [model.range(a, b) for a, b in itertools.pairwise(edges)]
            if inside:
                assert all(runs) and sum(map(len, runs)) == len(inside)
                assert max(map(len, runs)) - min(map(len, runs)) <= 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), ids_st), max_size=80), st.integers(2, 4))
def test_index_add_discard(ops: list[tuple[bool, bytes]], load: int) -> None:
    index = SortedListIndex(load=load)
    truth: set[bytes] = set()
    for add, item_id in ops:
        if add:
            assert index.add(item_id) == (item_id not in truth)
            truth.add(item_id)
        else:
            assert index.discard(item_id) == (item_id in truth)
            truth.discard(item_id)
        assert index.count(ZERO, INFINITY) == len(truth)
    for item_id, _ in [(x, 0) for _, x in ops]:
        assert (item_id in index) == (item_id in truth)
    assert index.ids(ZERO, INFINITY, 10**6) == sorted(truth)
    assert index.fingerprint(ZERO, INFINITY) == fingerprint_of(id_sum(truth), len(truth))
    # removing everything leaves no chunk behind
    for item_id in list(truth):
        index.discard(item_id)
    assert len(index) == 0 and index.fingerprint(ZERO, INFINITY) == EMPTY_FINGERPRINT


@settings(max_examples=150, deadline=None)
@given(
    st.sets(ids_st, max_size=60),
    st.lists(st.lists(ids_st, max_size=40), max_size=4),
    st.integers(2, 4),
)
def test_index_add_many_equals_adding_one_by_one(
    ids: set[bytes], batches: list[list[bytes]], load: int
) -> None:
    many = SortedListIndex(ids, load=load)
    one = SortedListIndex(ids, load=load)
    truth = set(ids)
    for batch in batches:
        # a batch may repeat itself and what is held; in id order or not
        added = many.add_many([*batch, *batch[:3], *sorted(truth)[:2]])
        assert added == sorted(set(batch) - truth)
        assert [x for x in sorted(set(batch)) if one.add(x)] == added
        truth |= set(batch)
    assert len(many) == len(truth)
    assert many.ids(ZERO, INFINITY, 10**6) == sorted(truth)
    assert all(0 < len(c) <= 2 * load * 32 for c in many._chunks)
    assert many._maxes == [c[-32:] for c in many._chunks]
    for lower, upper in itertools.pairwise([ZERO, *sorted(truth)[::3], INFINITY]):
        assert many.fingerprint(lower, upper) == one.fingerprint(lower, upper)
        assert many.count(lower, upper) == one.count(lower, upper)


def test_index_add_many_splits_and_refuses() -> None:
    ids = sorted(h(i) for i in range(12))
    index = SortedListIndex(load=2)
    assert index.add_many(reversed(ids[:3])) == ids[:3]  # into an empty index: chunks of 2
    # nine more past the last id, at once: the last chunk (1 + 9) split evenly in three
    assert index.add_many(ids[3:]) == ids[3:] and len(index) == 12
    assert [len(c) // 32 for c in index._chunks] == [2, 3, 3, 4]
    assert index._maxes == [c[-32:] for c in index._chunks]
    assert index.add_many([]) == [] and index.add_many([ids[5]]) == []
    with pytest.raises(LocalProtocolError):
        index.add_many([h(20), b"short"])
    assert len(index) == 12  # nothing added by the refused batch


def test_index_argument_checks() -> None:
    with pytest.raises(LocalProtocolError):
        SortedListIndex(load=1)
    with pytest.raises(LocalProtocolError):
        SortedListIndex([b"short"])
    with pytest.raises(LocalProtocolError):
        SortedListIndex.from_sorted([h(1), h(1)])
    with pytest.raises(LocalProtocolError):
        SortedListIndex().add(b"short")
    index = SortedListIndex([h(1)])
    assert "not bytes" not in index
    assert not index.discard(h(2))
    assert index.from_sorted(sorted([h(1), h(2)])).count(ZERO, INFINITY) == 2
    # the same, deterministically: duplicates, emptying a chunk, the id sum
    index = SortedListIndex([h(i) for i in range(5)], load=2)
    assert not index.add(h(3)) and len(index) == 5
    for i in range(5):
        assert index.discard(h(i))
    assert len(index) == 0
    assert fingerprint_of(id_sum([h(1), h(2)]), 2) == SortedListIndex([h(1), h(2)]).fingerprint(
        ZERO, INFINITY
    )


def test_lane_sums_agree() -> None:
    chunk = b"".join(h(i) for i in range(50)) + b"\xff" * 64
    for start, end in [(0, 52), (3, 17), (51, 52), (5, 5)]:
        assert _lane_sum_le(chunk, start, end) & ((1 << 256) - 1) == _lane_sum_portable(
            chunk, start, end
        ) & ((1 << 256) - 1)


@given(ids_st, ids_st)
def test_separator_is_shortest_between(a: bytes, b: bytes) -> None:
    if a == b:
        return
    lo, hi = sorted((a, b))
    s = separator(lo, hi)
    assert lo < s <= hi and s[-1] != 0
    assert not lo < s[:-1]
    assert lo < successor(lo) <= hi


# --- messages -------------------------------------------------------------------------------


def rec(*flat: Any, **extra: Any) -> dict[str, Any]:
    return {"t": "rec", "r": list(flat), **extra}


FP = b"\x01" * 16


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([], "must be a map"),
        (rec(x=1), "unknown field"),
        ({"t": "rec"}, "lacks field"),
        ({"t": "rec", "r": b"x"}, "flat list"),
        (rec(None, 1), "flat list"),
        (rec(None, 1, FP, None, 1, FP), "follows the one ending at infinity"),
        (rec(b"", 1, FP, None, 0, b""), "bound is nil or"),
        (rec(b"x" * 33, 1, FP), "bound is nil or"),
        (rec(1, 1, FP), "bound is nil or"),
        (rec(b"\x05\x00", 1, FP, None, 0, b""), "zero byte"),
        (rec(b"\x05", 1, FP, b"\x05", 1, FP, None, 0, b""), "strictly ascending"),
        (rec(b"\x05", 1, FP, b"\x04", 1, FP, None, 0, b""), "strictly ascending"),
        (rec(None, 7, b""), "unknown range mode"),
        (rec(None, 3, b""), "window length, 2..16"),
        (rec(None, 3, b"\x01" + FP + b"a"), "window length, 2..16"),
        (rec(None, 3, b"\x11" + FP + b"a" * 17), "window length, 2..16"),
        (rec(None, 3, b"\x03" + FP), "1 or more windows"),
        (rec(None, 3, b"\x03" + FP + b"ab"), "1 or more windows"),
        (rec(None, 3, b"\x03" + b"abcd"), "1 or more windows"),
        (rec(None, 3, b"\x03" + FP + b"bbbaaa"), "windows not strictly ascending"),
        (rec(None, 3, b"\x03" + FP + b"aaaaaa"), "windows not strictly ascending"),
        (rec(b"\x05", 3, b"\x03" + FP + b"\x06\x00\x00", None, 0, b""), "outside its range"),
        (rec(b"\x80", 0, b"", None, 3, b"\x03" + FP + b"\x10\x00\x00"), "outside its range"),
        # [05 x 20, 05 x 20 01): every id shares 21 bytes, so 16-byte windows overrun the id
        (
            rec(b"\x05" * 20, 0, b"", b"\x05" * 20 + b"\x01", 3, b"\x10" + FP + b"w" * 16),
            "runs past",
        ),
        (rec(None, 4, b"\x01" * 15), "starts with a 16-byte fingerprint"),
        (rec(None, -1, b""), "unknown range mode"),
        (rec(None, True, FP), "unknown range mode"),
        (rec(None, "1", FP), "unknown range mode"),
        (rec(None, 1, "x"), "payload must be bytes"),
        (rec(b"\x05", 0, b"x", None, 1, FP), "SKIP range has an empty payload"),
        (rec(b"\x05", 0, b"", b"\x06", 0, b"", None, 1, FP), "adjacent SKIP"),
        (rec(None, 1, b"\x01" * 15), "fingerprint is 16"),
        (rec(None, 2, b"\x01" * 33), "multiple of 32"),
        (rec(None, 2, b"\x02" * 32 + b"\x01" * 32), "strictly ascending inside"),
        (rec(None, 2, b"\x02" * 64), "strictly ascending inside"),
        (rec(b"\x05", 2, b"\x05" * 32, None, 0, b""), "strictly ascending inside"),
        (rec(b"\x05", 1, FP, b"\x06", 2, b"\x04" * 32, None, 0, b""), "strictly ascending inside"),
        (rec(b"\x05", 1, FP), "must end at infinity"),
        (rec(None, 0, b""), "only SKIP"),
        (rec(*([b"\x01", 1, FP] * (MAX_RANGES + 1))), "more than"),
    ],
)
def test_parse_refuses(value: Any, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        parse_message(value)


def test_parse_accepts_and_round_trips() -> None:
    ranges = [
        Range(b"\x05", RangeMode.SKIP),
        Range(b"\x06", RangeMode.IDLIST, b"\x05" + b"\x00" * 31 + b"\x05\xff" + b"\x00" * 30),
        Range(b"\x80", RangeMode.FINGERPRINT, FP),
        Range(b"\x90", RangeMode.PREFIXLIST, b"\x02" + FP + b"\x80\x00\x8f\xff"),
        Range(b"\xa0", RangeMode.PREFIXWANT, FP + b"\x91\x00"),
        Range(INFINITY, RangeMode.IDLIST, b""),
    ]
    data = encode_message(ranges)
    assert parse_message(codec.decode(data)) == ranges
    assert parse_message(codec.decode(encode_message([]))) == []
    # bounds are sent without trailing zero bytes
    padded = [Range(b"\x05\x00\x00", RangeMode.FINGERPRINT, FP), Range(INFINITY, RangeMode.SKIP)]
    short = [Range(b"\x05", RangeMode.FINGERPRINT, FP), Range(INFINITY, RangeMode.SKIP)]
    assert encode_message(padded) == encode_message(short)


@pytest.mark.parametrize(
    "kw",
    [
        {"fanout": 1},
        {"fanout": 300},
        {"initial_fanout": 1},
        {"initial_fanout": 5000},
        {"fanout": 16, "idlist_threshold": 8},
        {"idlist_threshold": 2000},
        {"first_answer_fanout": 1},
        {"first_answer_fanout": 300},
        {"initial_fanout": 16, "max_ranges": 10},
        {"max_ranges": MAX_RANGES + 1},
        {"max_message": 100},
        {"max_message": 10**8},
        {"prefix_bytes": 1},
        {"prefix_bytes": 17},
    ],
)
def test_params_checked(kw: dict[str, int]) -> None:
    with pytest.raises(LocalProtocolError):
        ReconcileParams(**kw)


# --- reconciliation --------------------------------------------------------------------------


def expand_list(index: SortedListIndex, need: list[PushRange]) -> list[bytes]:
    """Every id the push ranges name, as often as they name it."""
    return [i for p in need for i in index.ids(p.lower, p.upper, 10**9) if p.keeps(i)]


def expand(index: SortedListIndex, need: list[PushRange]) -> set[bytes]:
    return set(expand_list(index, need))


def reconcile(
    a_ids: set[bytes], b_ids: set[bytes], params: ReconcileParams | None = None
) -> tuple[list[int], dict[str, set[bytes]]]:
    """Run a reconciliation between two fixed sets; what each side learnt. Also checks that
    no side names an id to push twice (a duplicate item on the wire)."""
    a, b = SortedListIndex(a_ids), SortedListIndex(b_ids)
    pushed: dict[str, list[bytes]] = {"a": [], "b": []}
    ra = Reconciler(a, initiator=True, params=params)
    rb = Reconciler(b, initiator=False, params=params)
    learnt: dict[str, set[bytes]] = {
        name: set() for name in ("a_have", "a_need", "b_have", "b_need")
    }
    first = ra.initial()
    sizes = [len(first)]
    message: bytes | None = first
    turn = 0
    while message is not None:
        side, index, name = (rb, b, "b") if turn % 2 == 0 else (ra, a, "a")
        step = side.receive(message)
        learnt[name + "_have"].update(step.have)
        learnt[name + "_need"].update(expand(index, step.need), step.push)
        pushed[name] += [*expand_list(index, step.need), *step.push]
        message = step.reply
        turn += 1
        if message is not None:
            sizes.append(len(message))
    assert ra.done and rb.done
    for ids in pushed.values():
        assert len(ids) == len(set(ids)), "an id was pushed twice"
    return sizes, learnt


small = ReconcileParams(
    initial_fanout=2, fanout=2, idlist_threshold=2, max_message=400, max_ranges=8
)


@settings(max_examples=120, deadline=None)
@given(
    st.sets(ids_st, max_size=120),
    st.sets(ids_st, max_size=30),
    st.sets(ids_st, max_size=30),
    st.sampled_from([None, small]),
)
def test_reconciliation_finds_exactly_the_differences(
    common: set[bytes], only_a: set[bytes], only_b: set[bytes], params: ReconcileParams | None
) -> None:
    a_ids, b_ids = common | only_a, (common - only_a) | only_b
    _, learnt = reconcile(a_ids, b_ids, params)
    a_lacks, b_lacks = b_ids - a_ids, a_ids - b_ids
    # what each side learnt is true, and together they learnt everything
    assert learnt["a_have"] <= a_lacks and learnt["b_have"] <= b_lacks
    assert learnt["a_need"] <= b_lacks and learnt["b_need"] <= a_lacks
    assert learnt["a_have"] | learnt["b_need"] == a_lacks
    assert learnt["b_have"] | learnt["a_need"] == b_lacks


def test_identical_sets_take_one_exchange() -> None:
    ids = {h(i) for i in range(5000)}
    sizes, learnt = reconcile(ids, ids)
    assert len(sizes) == 2 and sizes[0] < 450 and sizes[1] < 12
    assert not any(learnt.values())


def test_identical_sets_cost_four_fingerprints() -> None:
    # S2: the default first message is 4 fingerprints (~100 B), whatever the set size.
    index = SortedListIndex(h(i) for i in range(5000))
    first = Reconciler(index, initiator=True).initial()
    ranges = parse_message(codec.decode(first))
    assert [r.mode for r in ranges] == [RangeMode.FINGERPRINT] * 4
    assert len(first) <= 120
    assert Reconciler(index, initiator=False).receive(first).reply == encode_message([])


def test_first_answer_splits_wider_than_later_answers() -> None:
    # Only the responder's answer to the first message uses first_answer_fanout (128); the
    # initiator's answers and the responder's later ones split fanout (8) ways.
    ours = {h(i) for i in range(200_000)}
    theirs = ours - {h(7)}
    a, b = SortedListIndex(ours), SortedListIndex(theirs)
    initiator = Reconciler(a, initiator=True)
    responder = Reconciler(b, initiator=False)

    def fingerprints(message: bytes) -> int:
        ranges = parse_message(codec.decode(message))
        return sum(r.mode is RangeMode.FINGERPRINT for r in ranges)

    first = initiator.initial()
    assert fingerprints(first) == 4
    answer = responder.receive(first).reply
    assert answer is not None and fingerprints(answer) == 128
    again = initiator.receive(answer).reply
    assert again is not None and fingerprints(again) == 8
    last = responder.receive(again).reply
    assert last is not None and fingerprints(last) == 0  # ~49 ids left: listed


def test_empty_peer_gets_everything_pushed_in_one_exchange() -> None:
    ids = {h(i) for i in range(5000)}
    sizes, learnt = reconcile(ids, set())
    assert len(sizes) == 3
    assert learnt["a_need"] == ids


def test_few_ids_against_many_uses_lookups() -> None:
    # the peer lists 2 ids against our 200 in the whole space: one we lack, one we hold
    ours = {h(i) for i in range(200)}
    index = SortedListIndex(ours)
    r = Reconciler(index, initiator=False)
    theirs = sorted([h(1), h(10**6)])
    step = r.receive(encode_message([Range(INFINITY, RangeMode.IDLIST, b"".join(theirs))]))
    assert step.have == [h(10**6)]
    assert expand(index, step.need) == ours - {h(1)}
    assert step.done and step.reply == encode_message([])


def test_turns_and_rounds() -> None:
    index = SortedListIndex(h(i) for i in range(100))
    initiator = Reconciler(index, initiator=True)
    with pytest.raises(RemoteProtocolError, match="out of turn"):
        initiator.receive(encode_message([]))
    initiator.initial()
    with pytest.raises(LocalProtocolError):
        initiator.initial()
    with pytest.raises(LocalProtocolError):
        Reconciler(index, initiator=False).initial()
    responder = Reconciler(index, initiator=False)
    mismatch = encode_message([Range(INFINITY, RangeMode.FINGERPRINT, FP)])
    for _ in range(MAX_ROUNDS):
        step = responder.receive(mismatch)
        assert step.reply is not None and not step.done
    assert responder.rounds == MAX_ROUNDS
    with pytest.raises(RemoteProtocolError, match="did not finish"):
        responder.receive(mismatch)
    done = Reconciler(index, initiator=False)
    done.receive(encode_message([]))
    with pytest.raises(RemoteProtocolError, match="finished"):
        done.receive(mismatch)
    with pytest.raises(RemoteProtocolError, match="not valid msgpack"):
        Reconciler(index, initiator=False).receive(b"\xc1")


def test_frame_limit_answers_the_rest_with_one_fingerprint() -> None:
    a_ids = {h(i) for i in range(3000)}
    b_ids = {h(i) for i in range(1500, 4500)}
    params = ReconcileParams(
        max_message=2000, max_ranges=40, fanout=16, first_answer_fanout=16, idlist_threshold=32
    )
    sizes, learnt = reconcile(a_ids, b_ids, params)
    assert max(sizes) <= 2000
    assert learnt["a_have"] | learnt["b_need"] == b_ids - a_ids
    assert learnt["b_have"] | learnt["a_need"] == a_ids - b_ids


class BadIndex(SortedListIndex):
    def split_points(self, lower: bytes, upper: bytes, parts: int) -> list[bytes]:
        return list(reversed(super().split_points(lower, upper, parts)))


def test_bad_index_bounds_are_a_local_error() -> None:
    r = Reconciler(BadIndex(h(i) for i in range(100)), initiator=True)
    with pytest.raises(LocalProtocolError, match="out of order"):
        r.initial()


def test_wanted_ids_must_lie_in_listed_ranges() -> None:
    r = Reconciler(SortedListIndex(), initiator=False)
    r._offer(b"\x10", b"\x20", 3)
    r._offer(b"\x40", b"\x50", 2)
    r._offer(b"\x18", b"\x44", 1)  # overlaps both: merged into [0x10, 0x50)
    r._offer(b"\x60", b"\x70", 1)
    assert r.offered_count == 7
    r.check_wanted([b"\x10" + b"\x00" * 31, b"\x30" * 32, b"\x6f" * 32])
    for bad in (b"\x01" * 32, b"\x55" * 32, b"\x70" + b"\x00" * 31, b"\xff" * 32):
        with pytest.raises(RemoteProtocolError, match="never listed"):
            r.check_wanted([bad])


# --- windows (PREFIXLIST / PREFIXWANT) --------------------------------------------------------


def test_window_offset_skips_the_bytes_a_range_shares() -> None:
    assert window_offset(ZERO, INFINITY) == 0
    assert window_offset(b"\xab\x12", b"\xab\x13") == 2  # every id starts ab 12
    assert window_offset(b"\xab\x12", b"\xab\x14") == 1
    assert window_offset(b"\xab", b"\xab\x00\x00\x01") == 4  # ab 00 00 00 ...
    # the reconciler lists a narrow range by the bytes after the shared ones
    ids = sorted(b"\xab\x12" + bytes([i]) + h(i)[3:] for i in range(5))
    r = Reconciler(SortedListIndex(ids), initiator=False)
    step = r.receive(
        encode_message(
            [
                Range(b"\xab\x12", RangeMode.SKIP),
                Range(b"\xab\x13", RangeMode.FINGERPRINT, FP),
                Range(INFINITY, RangeMode.SKIP),
            ]
        )
    )
    assert step.reply is not None
    listed = parse_message(codec.decode(step.reply))[1]
    assert listed.mode is RangeMode.PREFIXLIST
    assert listed.payload[17:] == b"".join(i[2:5] for i in ids)


def twin(item_id: bytes) -> bytes:
    """Another id with the same first 24 bytes: the same window at any offset below 22."""
    return item_id[:24] + hashlib.blake2b(item_id, digest_size=8).digest()


@settings(max_examples=120, deadline=None)
@given(
    st.sets(ids_st, max_size=100),
    st.sets(ids_st, max_size=20),
    st.sets(ids_st, max_size=15),
    st.sets(ids_st, max_size=15),
    st.sampled_from(
        [None, ReconcileParams(prefix_bytes=2), small, ReconcileParams(prefix_bytes=16)]
    ),
)
def test_reconciliation_converges_with_window_collisions(
    common: set[bytes],
    twins: set[bytes],
    only_a: set[bytes],
    only_b: set[bytes],
    params: ReconcileParams | None,
) -> None:
    # a holds each id of ``twins``, b its twin: same window, different ids (adversarial).
    a_ids = common | twins | only_a
    b_ids = (common - twins) | {twin(t) for t in twins} | only_b
    _, learnt = reconcile(a_ids, b_ids, params)
    a_lacks, b_lacks = b_ids - a_ids, a_ids - b_ids
    assert learnt["a_need"] <= b_lacks and learnt["b_need"] <= a_lacks
    assert learnt["a_have"] <= a_lacks and learnt["b_have"] <= b_lacks
    assert learnt["a_have"] | learnt["b_need"] == a_lacks
    assert learnt["b_have"] | learnt["a_need"] == b_lacks


def lister(ids: list[bytes]) -> tuple[Reconciler, bytes]:
    r = Reconciler(SortedListIndex(ids), initiator=True)
    first = r.initial()
    assert parse_message(codec.decode(first))[0].mode is RangeMode.PREFIXLIST
    return r, first


def test_twin_on_the_receiver_that_lacks_nothing_is_caught_there() -> None:
    y = sorted(h(i) for i in range(3))
    _, first = lister(y)
    # the receiver holds y[0], y[1] and a twin of y[2]: every window matches, the check fails
    theirs = SortedListIndex([y[0], y[1], twin(y[2])])
    step = Reconciler(theirs, initiator=False).receive(first)
    assert step.reply is not None and not step.need and not step.asked
    ranges = parse_message(codec.decode(step.reply))
    assert [r.mode for r in ranges] == [RangeMode.IDLIST]  # full ids
    assert ranges[0].payload == b"".join(sorted([y[0], y[1], twin(y[2])]))


def test_twin_on_a_receiver_that_lacks_a_window_is_caught_by_the_lister() -> None:
    y = sorted(h(i) for i in range(3))
    ours, first = lister(y)
    theirs = Reconciler(SortedListIndex([y[0], twin(y[1])]), initiator=False)
    step = theirs.receive(first)
    assert step.asked == 1 and step.reply is not None
    assert parse_message(codec.decode(step.reply))[0].mode is RangeMode.PREFIXWANT
    back = ours.receive(step.reply)
    assert not back.push and back.reply is not None  # nothing pushed on a failed check
    ranges = parse_message(codec.decode(back.reply))
    assert [r.mode for r in ranges] == [RangeMode.IDLIST]
    last = theirs.receive(back.reply)
    assert set(last.have) == {y[1], y[2]}
    # the receiver had pushed its ids whose window was not listed (none): now it pushes
    # only its id with a listed window that the full list lacks, the twin
    assert expand(SortedListIndex([y[0], twin(y[1])]), last.need) == {twin(y[1])}


def test_window_collision_answers_keep_to_the_frame_limit() -> None:
    """Failed PREFIXWANT checks are answered by IDLISTs of the listed ids while they fit;
    past that the range is echoed as a fingerprint, and the message stays under the limit."""
    ids = sorted(h(i) for i in range(300))
    low = [i for i in ids if i < b"\x80"]
    high = [i for i in ids if i >= b"\x80"]
    # room to list both ranges by window, but for one IDLIST of ~150 ids only
    params = ReconcileParams(idlist_threshold=200, max_message=8400)
    r = Reconciler(SortedListIndex(ids), initiator=False, params=params)
    both = [Range(b"\x80", RangeMode.FINGERPRINT, FP), Range(INFINITY, RangeMode.FINGERPRINT, FP)]
    step = r.receive(encode_message(both))
    assert step.reply is not None
    assert [x.mode for x in parse_message(codec.decode(step.reply))] == [RangeMode.PREFIXLIST] * 2
    # the peer lacks the first window of each range and claims a fingerprint that fails
    wants = [
        Range(b"\x80", RangeMode.PREFIXWANT, FP + low[0][:3]),
        Range(INFINITY, RangeMode.PREFIXWANT, FP + high[0][:3]),
    ]
    step = r.receive(encode_message(wants))
    assert step.reply is not None and not step.push and len(step.reply) <= 8400
    ranges = parse_message(codec.decode(step.reply))
    assert [x.mode for x in ranges] == [RangeMode.IDLIST, RangeMode.FINGERPRINT]
    assert ranges[0].payload == b"".join(low)
    assert ranges[1].payload == fingerprint_of(id_sum(high), len(high))


def test_receiver_with_many_ids_looks_windows_up() -> None:
    ours = sorted(h(i) for i in range(400))
    index = SortedListIndex(ours)
    top = b"\xff\xff\xff" + b"\x00" * 29
    listed = [ours[5], top]  # one we hold, one we lack (its window ends the id space)
    payload = b"\x03" + fingerprint_of(id_sum(listed), 2) + b"".join(i[:3] for i in listed)
    step = Reconciler(index, initiator=False).receive(
        encode_message([Range(INFINITY, RangeMode.PREFIXLIST, payload)])
    )
    assert step.asked == 1
    assert expand(index, step.need) == set(ours) - {ours[5]}
    assert step.reply == encode_message(
        [Range(INFINITY, RangeMode.PREFIXWANT, fingerprint_of(id_sum([ours[5]]), 1) + top[:3])]
    )


def test_identical_windows_settle_without_an_answer() -> None:
    ids = sorted(h(i) for i in range(30))
    _, first = lister(ids)
    step = Reconciler(SortedListIndex(ids), initiator=False).receive(first)
    assert step.done and step.reply == encode_message([]) and not step.need


def test_ids_sharing_a_window_are_listed_in_full() -> None:
    ids = sorted([h(1), twin(h(1)), h(2)])
    first = Reconciler(SortedListIndex(ids), initiator=True).initial()
    assert parse_message(codec.decode(first))[0].mode is RangeMode.IDLIST
    # and a range too narrow for a window (offset + size > 32) too
    narrow = [b"\x07" * 31 + b"\x01", b"\x07" * 31 + b"\x02"]
    r = Reconciler(SortedListIndex(narrow), initiator=False)
    step = r.receive(
        encode_message(
            [
                Range(b"\x07" * 31, RangeMode.SKIP),
                Range(b"\x07" * 31 + b"\x03", RangeMode.FINGERPRINT, FP),
                Range(INFINITY, RangeMode.SKIP),
            ]
        )
    )
    assert step.reply is not None
    assert parse_message(codec.decode(step.reply))[1].mode is RangeMode.IDLIST


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        ([Range(INFINITY, RangeMode.PREFIXWANT, FP + b"ab")], "multiple of the window size"),
        ([Range(INFINITY, RangeMode.PREFIXWANT, FP + b"zzzyyy")], "not strictly ascending"),
        ([Range(INFINITY, RangeMode.PREFIXWANT, FP + b"zzz")], "did not list"),
        (
            [Range(b"\x80", RangeMode.SKIP), Range(INFINITY, RangeMode.PREFIXWANT, FP)],
            "range we did not list",
        ),
    ],
)
def test_bad_prefixwant_is_refused(answer: list[Range], match: str) -> None:
    ours, _ = lister(sorted(h(i) for i in range(10)))
    with pytest.raises(RemoteProtocolError, match=match):
        ours.receive(encode_message(answer))


def test_prefixwant_answers_only_the_message_right_before() -> None:
    ids = sorted(h(i) for i in range(20))
    low = [i for i in ids if i < b"\x80"]
    r = Reconciler(SortedListIndex(ids), initiator=False)
    both = [Range(b"\x80", RangeMode.FINGERPRINT, FP), Range(INFINITY, RangeMode.FINGERPRINT, FP)]
    step = r.receive(encode_message(both))
    assert step.reply is not None
    assert [x.mode for x in parse_message(codec.decode(step.reply))] == [RangeMode.PREFIXLIST] * 2
    # the peer holds our ids below 80 (it wants none) and still differs above
    settled = Range(b"\x80", RangeMode.PREFIXWANT, fingerprint_of(id_sum(low), len(low)))
    step = r.receive(encode_message([settled, both[1]]))
    assert step.reply is not None and not step.push
    assert [x.mode for x in parse_message(codec.decode(step.reply))] == [
        RangeMode.SKIP,
        RangeMode.PREFIXLIST,
    ]
    # a second answer to the first listing comes too late
    with pytest.raises(RemoteProtocolError, match="did not list"):
        r.receive(encode_message([settled, Range(INFINITY, RangeMode.SKIP)]))
