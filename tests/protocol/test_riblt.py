"""The coded stage (SPEC.md §13.3.6): rateless IBLT symbols, peeling, and the reconciler's
CODED / MORE exchange, including what a lying or broken peer can send."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldsync_protocol import codec
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.reconcile import MAX_MORE, Reconciler, Step, first_symbols
from fieldsync_protocol.reconcile_index import INFINITY, SortedListIndex, fingerprint_of
from fieldsync_protocol.reconcile_wire import (
    Range,
    RangeMode,
    encode_message,
    parse_message,
    parse_set_size,
)
from fieldsync_protocol.riblt import (
    MAX_SYMBOLS,
    SYMBOL_SIZE,
    CodedSymbols,
    PeerSymbols,
    estimate_difference,
    id_hash,
    indices,
    peel,
)


def h(i: int) -> bytes:
    return hashlib.blake2b(i.to_bytes(8, "little"), digest_size=32).digest()


def received(coded: CodedSymbols, m: int) -> PeerSymbols:
    peer = PeerSymbols([], [], [])
    peer.extend(coded.encode(0, m))
    return peer


ids_st = st.binary(min_size=32, max_size=32)


# --- symbols and peeling ---------------------------------------------------------------------


def test_indices_start_at_zero_ascend_and_thin_out() -> None:
    seeds = [id_hash(h(i))[1] for i in range(4000)]
    hits = [0] * MAX_SYMBOLS
    for seed in seeds:
        got = list(indices(seed, MAX_SYMBOLS))
        assert got[0] == 0 and got == sorted(set(got)) and got[-1] < MAX_SYMBOLS
        assert list(indices(seed, 50)) == [i for i in got if i < 50]
        for i in got:
            hits[i] += 1
    # index i receives about 1/(1 + i/2) of the ids
    for i in (1, 10, 100):
        assert 0.7 < hits[i] / len(seeds) * (1 + i / 2) < 1.4
    # a seed whose state stays near 2**64 still moves on (gaps are at least 1)
    assert list(indices(1, 3)) == [0, 1, 2] or len(list(indices(1, 3))) <= 3


def test_incremental_updates_equal_a_rebuild() -> None:
    ids = [h(i) for i in range(300)]
    coded = CodedSymbols(ids[:200])
    for x in ids[200:]:
        coded.add(x)
    for x in ids[:50]:
        coded.remove(x)
    fresh = CodedSymbols(ids[50:])
    assert (coded.xors, coded.sums, coded.counts) == (fresh.xors, fresh.sums, fresh.counts)
    assert coded.count == 250 and coded.encode(0, MAX_SYMBOLS) == fresh.encode(0, MAX_SYMBOLS)
    # the same changes in bulk, removals first (as a relay settles what it owes the symbols)
    in_bulk = CodedSymbols(ids[:200])
    in_bulk.remove_all(ids[:50])
    in_bulk.extend(ids[200:])
    assert (in_bulk.xors, in_bulk.sums, in_bulk.counts) == (fresh.xors, fresh.sums, fresh.counts)
    assert in_bulk.count == 250 and in_bulk.id_total == fresh.id_total
    with pytest.raises(LocalProtocolError):
        coded.add(b"short")
    for start, stop in ((0, 0), (-1, 3), (5, MAX_SYMBOLS + 1)):
        with pytest.raises(LocalProtocolError):
            coded.encode(start, stop)


@settings(max_examples=60, deadline=None)
@given(
    st.sets(ids_st, max_size=60),
    st.sets(ids_st, max_size=25),
    st.sets(ids_st, max_size=25),
)
def test_peeling_finds_exactly_the_difference(
    common: set[bytes], only_a: set[bytes], only_b: set[bytes]
) -> None:
    only_b -= only_a
    a, b = CodedSymbols(common | only_a), CodedSymbols((common - only_a) | only_b)
    found = peel(a, received(b, MAX_SYMBOLS))
    assert found is not None
    assert found.theirs == sorted(only_b - common) and found.ours == sorted(only_a)


def test_too_few_symbols_do_not_decode() -> None:
    a = CodedSymbols(h(i) for i in range(100))
    b = CodedSymbols(h(i) for i in range(50, 150))
    assert peel(a, received(b, 20)) is None
    assert peel(a, received(b, MAX_SYMBOLS)) is not None


def test_peer_symbols_refuse_bad_shapes() -> None:
    peer = PeerSymbols([], [], [])
    with pytest.raises(RemoteProtocolError, match="42 bytes"):
        peer.extend(b"\x00" * (SYMBOL_SIZE + 1))
    peer.extend(b"\x00" * SYMBOL_SIZE * MAX_SYMBOLS)
    with pytest.raises(RemoteProtocolError, match="1024 most"):
        peer.extend(b"\x00" * SYMBOL_SIZE)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=SYMBOL_SIZE, max_size=SYMBOL_SIZE * 40).map(
        lambda b: b[: len(b) - len(b) % SYMBOL_SIZE]
    )
)
def test_peeling_garbage_ends_without_error(blob: bytes) -> None:
    own = CodedSymbols(h(i) for i in range(30))
    peer = PeerSymbols([], [], [])
    peer.extend(blob)
    found = peel(own, peer)
    assert found is None or len(found.theirs) + len(found.ours) <= len(peer)


def test_crafted_symbols_that_peel_an_id_twice_fail() -> None:
    # x maps below 2 only to symbol 0; symbol 1 claims x pure, and symbol 0 holds nothing
    # but a count of 2: peeling x from 1 makes 0 claim x pure again
    x = next(h(i) for i in range(1000) if list(indices(id_hash(h(i))[1], 2)) == [0])
    checksum = id_hash(x)[0]
    value = int.from_bytes(x, "big")
    assert peel(CodedSymbols(), PeerSymbols([0, value], [0, checksum], [2, 1])) is None
    # a symbol claiming a pure id with a count the rest cannot balance
    assert peel(CodedSymbols(), PeerSymbols([value], [checksum], [2])) is None


# --- wire ------------------------------------------------------------------------------------


def rec(*flat: Any, **extra: Any) -> dict[str, Any]:
    return {"t": "rec", "r": list(flat), **extra}


FP = b"\x01" * 16
CODED_OK = FP + b"\x00\x00" + b"\x00" * SYMBOL_SIZE


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (rec(b"\x05", 1, FP, None, 5, CODED_OK), "only one, to infinity"),
        (rec(b"\x05", 5, CODED_OK, None, 1, FP), "only one, to infinity"),
        (rec(None, 6, b"\x01"), "2-byte count"),
        (rec(None, 5, FP + b"\x00\x00"), "whole symbols"),
        (rec(None, 5, CODED_OK + b"x"), "whole symbols"),
        (rec(None, 1, FP, n=-1), "n"),
        (rec(None, 1, FP, n=True), "n"),
        (rec(None, 1, FP, n=2**63), "n"),
    ],
)
def test_parse_refuses_bad_coded_ranges(value: Any, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        parse_message(value)


def test_set_size_round_trips() -> None:
    data = encode_message([Range(INFINITY, RangeMode.FINGERPRINT, FP)], 12)
    value = codec.decode(data)
    assert parse_set_size(value) == 12 and parse_message(value)[0].payload == FP
    assert parse_set_size(codec.decode(encode_message([]))) is None


# --- the reconciler's coded stage ------------------------------------------------------------


def sides(a_ids: set[bytes], b_ids: set[bytes]) -> tuple[Reconciler, Reconciler]:
    ra = Reconciler(SortedListIndex(a_ids), initiator=True, coded=CodedSymbols(a_ids))
    rb = Reconciler(SortedListIndex(b_ids), initiator=False, coded=CodedSymbols(b_ids))
    return ra, rb


def run_coded(a_ids: set[bytes], b_ids: set[bytes]) -> tuple[list[int], set[bytes], set[bytes]]:
    """Reconcile to the end; (modes of each message's first range, what A and B learnt to
    hold in the end)."""
    ra, rb = sides(a_ids, b_ids)
    a_now, b_now = set(a_ids), set(b_ids)
    modes = exchange(ra, rb, ra.initial(), a_now, b_now, to_responder=True)
    assert ra.done and rb.done
    return modes, a_now, b_now


def exchange(
    ra: Reconciler,
    rb: Reconciler,
    message: bytes | None,
    a_now: set[bytes],
    b_now: set[bytes],
    *,
    to_responder: bool,
) -> list[int]:
    """Deliver ``message`` (to B when ``to_responder``, else to A) and every reply after it,
    applying what each side learns to ``a_now``/``b_now``; the mode of each message's first
    range (-1: no ranges)."""
    modes: list[int] = []
    turn = 0 if to_responder else 1
    while message is not None:
        ranges = parse_message(codec.decode(message))
        modes.append(int(ranges[0].mode) if ranges else -1)
        side, mine, other = (rb, b_now, a_now) if turn % 2 == 0 else (ra, a_now, b_now)
        step = side.receive(message)
        mine.update(step.have)
        other.update(step.push)
        for p in step.need:
            other.update(x for x in mine if p.lower <= x < p.upper and p.keeps(x))
        message = step.reply
        turn += 1
    return modes


def test_coded_stage_decodes_one_sided_differences_in_one_answer() -> None:
    base = {h(i) for i in range(3000)}
    missing = set(random.Random(3).sample(sorted(base), 40))
    modes, a_now, b_now = run_coded(base - missing, base)
    # offer (fingerprints), CODED, DONE
    assert modes == [RangeMode.FINGERPRINT, RangeMode.CODED, -1]
    assert a_now == b_now == base


def test_equal_counts_ask_for_more_then_decode() -> None:
    base = {h(i) for i in range(3000)}
    picks = random.Random(4).sample(sorted(base), 60)
    modes, a_now, b_now = run_coded(base - set(picks[:30]), base - set(picks[30:]))
    assert modes[:4] == [RangeMode.FINGERPRINT, RangeMode.CODED, RangeMode.MORE, RangeMode.CODED]
    assert modes[-1] == -1 and a_now == b_now == base


def test_too_many_differences_fall_back_to_ranges() -> None:
    base = {h(i) for i in range(5000)}
    picks = random.Random(5).sample(sorted(base), 1200)
    modes, a_now, b_now = run_coded(base - set(picks[:600]), base - set(picks[600:]))
    # 24 symbols all differ: MORE to 192; those suggest > 1024 are needed: MORE to 1024;
    # still not decoded: the initiator splits the whole space into fingerprints
    last_coded = max(k for k, mode in enumerate(modes) if mode == RangeMode.CODED)
    assert 1 <= modes[:last_coded].count(RangeMode.MORE) <= MAX_MORE
    assert modes[last_coded + 1] == RangeMode.FINGERPRINT
    assert a_now == b_now == base


def test_the_difference_is_estimated_from_the_symbols_that_differ() -> None:
    diff = [h(i) for i in range(100)]
    ours, theirs = CodedSymbols(diff[:50]), CodedSymbols(diff[50:])
    estimate = estimate_difference(ours, received(theirs, 199))
    assert estimate is not None and 60 <= estimate <= 160
    assert estimate_difference(ours, received(theirs, 24)) is None  # all 24 differ
    assert estimate_difference(ours, received(CodedSymbols(diff[:50]), 24)) == 0
    assert estimate_difference(CodedSymbols(), received(CodedSymbols(diff[:5]), 199)) in range(
        2, 12
    )


def test_a_big_count_difference_skips_the_coded_stage() -> None:
    base = {h(i) for i in range(3000)}
    modes, a_now, b_now = run_coded(set(sorted(base)[:1000]), base)
    assert RangeMode.CODED not in modes and a_now == b_now == base
    assert first_symbols(0) == 24 and first_symbols(100) == 199


def test_identical_sets_never_send_symbols() -> None:
    base = {h(i) for i in range(3000)}
    modes, _, _ = run_coded(base, set(base))
    assert modes == [RangeMode.FINGERPRINT, -1]


def coded_answer(ra: Reconciler, rb: Reconciler) -> bytes:
    step = rb.receive(ra.initial())
    assert step.reply is not None
    return step.reply


def tamper(
    reply: bytes,
    *,
    fingerprint: bytes | None = None,
    start: int | None = None,
    flip: int | None = None,
) -> bytes:
    payload = bytearray(parse_message(codec.decode(reply))[0].payload)
    if fingerprint is not None:
        payload[:16] = fingerprint
    if start is not None:
        payload[16:18] = start.to_bytes(2, "little")
    if flip is not None:
        payload[flip] ^= 0x40
    return encode_message([Range(INFINITY, RangeMode.CODED, bytes(payload))])


def test_a_lying_fingerprint_or_tampered_symbols_never_decode_wrongly() -> None:
    base = {h(i) for i in range(2000)}
    a_ids = base - {h(7), h(8)}
    for kw in ({"fingerprint": b"\x00" * 16}, {"flip": 18 + 5}, {"flip": 18 + SYMBOL_SIZE - 1}):
        ra, rb = sides(a_ids, base)
        step = ra.receive(tamper(coded_answer(ra, rb), **kw))
        assert not step.done and not step.have and not step.push
        assert step.reply is not None
        assert parse_message(codec.decode(step.reply))[0].mode is RangeMode.MORE


def test_a_lying_n_costs_round_trips_not_correctness() -> None:
    base = {h(i) for i in range(3000)}
    a_ids = base - set(sorted(base)[:200])
    ra, rb = sides(a_ids, base)
    first = codec.decode(ra.initial())
    first["n"] = len(base)  # claims equal counts: B sends only 24 symbols
    step = rb.receive(codec.encode(first))
    assert step.reply is not None and len(step.reply) < 24 * SYMBOL_SIZE + 60
    a_now, b_now = set(a_ids), set(base)
    exchange(ra, rb, step.reply, a_now, b_now, to_responder=False)
    assert a_now == b_now == base


def refused(side: Reconciler, message: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        side.receive(message)


def test_out_of_turn_and_oversized_coded_messages_are_refused() -> None:
    base = {h(i) for i in range(2000)}
    a_ids = base - {h(7)}
    more = encode_message([Range(INFINITY, RangeMode.MORE, (5).to_bytes(2, "little"))])
    # n only in the initiator's first message
    ra, rb = sides(a_ids, base)
    offer = ra.initial()
    refused(ra, offer, "carries n")
    # a CODED the initiator did not ask for
    ra, rb = sides(a_ids, base)
    reply = coded_answer(ra, rb)
    plain = Reconciler(SortedListIndex(a_ids), initiator=True)
    plain.initial()
    refused(plain, reply, "answers only an offer")
    # a MORE answering no CODED
    ra, rb = sides(a_ids, base)
    rb2 = Reconciler(SortedListIndex(base), initiator=False)
    rb2.receive(Reconciler(SortedListIndex(a_ids), initiator=True).initial())
    refused(rb2, more, "answers only a CODED")
    # symbols that do not continue the ones before
    ra, rb = sides(a_ids, base)
    refused(ra, tamper(coded_answer(ra, rb), start=3), "continue")
    # MORE past MAX_SYMBOLS, or for none
    for count in (0, MAX_SYMBOLS):
        ra, rb = sides(a_ids, base)
        coded_answer(ra, rb)
        big = encode_message([Range(INFINITY, RangeMode.MORE, count.to_bytes(2, "little"))])
        refused(rb, big, "past 1024")


def test_more_is_answered_with_the_next_symbols_and_wants_are_bounded_by_them() -> None:
    base = {h(i) for i in range(2000)}
    ra, rb = sides(base - {h(7)}, base)
    first = parse_message(codec.decode(coded_answer(ra, rb)))[0].payload
    more = encode_message([Range(INFINITY, RangeMode.MORE, (5).to_bytes(2, "little"))])
    step: Step = rb.receive(more)
    assert step.reply is not None
    payload = parse_message(codec.decode(step.reply))[0].payload
    count = (len(first) - 18) // SYMBOL_SIZE
    assert payload[:16] == first[:16] == fingerprint_of(rb._coded.id_total, 2000)  # type: ignore[union-attr]
    assert int.from_bytes(payload[16:18], "little") == count
    assert len(payload) == 18 + 5 * SYMBOL_SIZE
    assert rb.offered_count == count + 5
    rb.check_wanted([h(9), b"\xff" * 32])  # any id may have been peeled


def test_symbols_out_of_step_with_the_index_are_not_trusted() -> None:
    base = {h(i) for i in range(2000)}
    a_ids = base - {h(7)}
    # A's symbols miss an id its index holds (h(3)), or hold one its index lacks (h(7)):
    # the decoded difference disagrees with the index, so A asks for more instead
    for coded_ids in (a_ids - {h(3)}, a_ids | {h(7), h(9999)}):
        ra = Reconciler(SortedListIndex(a_ids), initiator=True, coded=CodedSymbols(coded_ids))
        rb = Reconciler(SortedListIndex(base), initiator=False, coded=CodedSymbols(base))
        step = ra.receive(coded_answer(ra, rb))
        assert not step.done and step.reply is not None
        assert parse_message(codec.decode(step.reply))[0].mode is RangeMode.MORE


def test_an_offer_of_n_with_an_id_list_gets_a_range_answer() -> None:
    base = {h(i) for i in range(2000)}
    rb = Reconciler(SortedListIndex(base), initiator=False, coded=CodedSymbols(base))
    offer = encode_message([Range(INFINITY, RangeMode.IDLIST, h(1))], 2000)
    step = rb.receive(offer)
    assert step.reply is not None
    assert RangeMode.CODED not in {r.mode for r in parse_message(codec.decode(step.reply))}


_SMALL = {h(i) for i in range(300)}
_SMALL_CODED = CodedSymbols(_SMALL)
_SMALL_LESS = CodedSymbols(_SMALL - {h(1)})


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 5, 6]),
            st.one_of(
                st.binary(max_size=120),
                st.binary(max_size=3 * SYMBOL_SIZE).map(lambda b: FP + b"\x00\x00" + b),
            ),
            st.none() | st.integers(-1, 2**64 - 1),
        ),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_fuzz_coded_stage_raises_only_remote_protocol_errors(
    sequence: list[tuple[int, bytes, int | None]], at_initiator: bool
) -> None:
    """Arbitrary CODED / MORE / fingerprint messages (with or without n) at an initiator
    waiting for symbols, or a responder that sent some: refused or answered, never a crash."""
    ra = Reconciler(SortedListIndex(_SMALL - {h(1)}), initiator=True, coded=_SMALL_LESS)
    rb = Reconciler(SortedListIndex(_SMALL), initiator=False, coded=_SMALL_CODED)
    offer = ra.initial()
    if not at_initiator:
        rb.receive(offer)
    target = ra if at_initiator else rb
    for mode, payload, n in sequence:
        value: dict[str, Any] = {"t": "rec", "r": [None, mode, payload]}
        if n is not None:
            value["n"] = n
        try:
            target.receive(codec.encode(value))
        except RemoteProtocolError:
            break
    # the shared symbols were only read
    assert _SMALL_CODED.count == 300 and _SMALL_LESS.count == 299
