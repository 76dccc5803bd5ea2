"""Range-based set reconciliation of item ids (SPEC.md §13.3), negentropy-v1 style.

Both sides hold a set of 32-byte item ids, sorted by their bytes. A *range* ``[lower, upper)``
is named by two *bounds*. A message is a list of ranges covering the whole id space in
order; each range carries a mode:

* ``SKIP``: nothing more to do here;
* ``FINGERPRINT``: BLAKE2b-128 of (sum of the ids mod 2**256, count) over the sender's ids
  in the range: equal fingerprints mean equal sets (with overwhelming probability);
* ``IDLIST``: every id the sender holds in the range.

The receiver answers a fingerprint that matches its own with ``SKIP``; one that differs by
listing its ids (few) or by splitting its range into ``fanout`` fingerprints (many). Unlike
negentropy, the receiver of an id list does not send its own list back: it now knows both
differences for that range, *wants* what it lacks (the session sends WANT) and *pushes* what
the peer lacks (DATA), and answers ``SKIP``. A side whose answer is all ``SKIP`` sends the
empty message (DONE) and reconciliation is over for both.

A small differing range is listed by *windows* instead of full ids (``PREFIXLIST``): ``k``
bytes of each id, taken after the leading bytes every id of the range shares. The receiver
pushes its ids whose window is not listed, and answers ``PREFIXWANT``: the windows it lacks
plus the fingerprint of its ids whose window is listed. The lister checks that fingerprint
against its listed ids minus the wanted ones: equal, it pushes the wanted ids and the range
is done; different (two ids of the two sides share a window), it lists the ids it listed
in full, and the peer pushes only its ids with a listed window that list lacks (it pushed
the others already).

On a first contact between large sets, a *coded stage* comes first (§13.3.6): the
initiator's first message carries its id count ``n``; a responder whose fingerprints differ
answers with a prefix of rateless IBLT coded symbols of its set (``CODED``, sized from the
difference in counts) instead of splitting. The initiator subtracts its own symbols and
peels: if that decodes (and the peer's whole-set fingerprint confirms it) it knows both
differences at once, wants and pushes them, and sends DONE; otherwise it asks for ``MORE``
symbols (a few times at most) or answers the whole space like a differing fingerprint, and
range reconciliation goes on from there.

The index and its fingerprints are in ``reconcile_index``, the coded symbols in ``riblt``,
the message format in ``reconcile_wire``; this module is the reconciler that decides each answer.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fieldsync_protocol import codec
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.reconcile_index import (
    FINGERPRINT_SIZE,
    ID_SIZE,
    INFINITY,
    ZERO,
    ItemIndex,
    fingerprint_of,
    id_sum,
    successor,
)
from fieldsync_protocol.reconcile_wire import (
    CODED_HEADER,
    MAX_RANGES,
    MAX_RECONCILE_MESSAGE,
    MAX_WINDOW,
    MESSAGE_OVERHEAD,
    MIN_WINDOW,
    RANGE_OVERHEAD,
    Range,
    RangeMode,
    encode_message,
    parse_message,
    parse_set_size,
    range_size,
    window_offset,
)
from fieldsync_protocol.riblt import (
    MAX_SYMBOLS,
    CodedSymbols,
    Difference,
    PeerSymbols,
    estimate_difference,
    peel,
)

#: Most RECONCILE messages one side receives in a session (a hostile peer cannot stall us).
MAX_ROUNDS = 256
#: Most MORE requests the initiator sends before it falls back to ranges (each costs a
#: round trip); each asks for as many symbols as the difference the last ones suggest
#: needs, at least tripling them (from 24 with equal counts: 72, 216, 648 at the least).
MAX_MORE = 3


def first_symbols(delta: int) -> int:
    """Coded symbols to send first when the two id counts differ by ``delta``.

    Peeling needs about 1.5·d symbols for d differences (1.66 at most in 40 trials of
    d = 100) and ``delta`` is a lower bound for d: 1.75·delta, and 24 more for small
    differences, decode a one-sided difference in one answer nearly always."""
    return (7 * delta + 3) // 4 + 24


@dataclass(frozen=True, slots=True)
class Windows:
    """A PREFIXLIST's windows: ``id[offset : offset + size]`` of each listed id."""

    offset: int
    size: int
    listed: frozenset[bytes]

    def holds(self, item_id: bytes) -> bool:
        return item_id[self.offset : self.offset + self.size] in self.listed


@dataclass(frozen=True, slots=True)
class PushRange:
    """Our ids the peer lacks: every id we hold in ``[lower, upper)`` not in ``exclude``
    and, if ``windows`` is set, whose window is not among the peer's listed windows (or,
    with ``listed_only``, whose window is among them: the others were pushed already)."""

    lower: bytes
    upper: bytes
    exclude: frozenset[bytes]
    windows: Windows | None = None
    listed_only: bool = False

    def keeps(self, item_id: bytes) -> bool:
        """Whether ``item_id`` (held, in the range) is to be pushed."""
        if item_id in self.exclude:
            return False
        if self.windows is None:
            return True
        return self.windows.holds(item_id) is self.listed_only


@dataclass(frozen=True, slots=True)
class _Listed:
    """A PREFIXLIST we sent, kept until the peer's answer: its window layout and ids."""

    lower: bytes
    offset: int
    size: int
    ids: list[bytes]


@dataclass(frozen=True, slots=True)
class Step:
    """What one received message taught us, and our answer."""

    #: The message to send back; None when the received message was DONE.
    reply: bytes | None
    #: Ids the peer holds that our index lacks (ascending).
    have: list[bytes]
    #: Our ids the peer lacks, as ranges to push.
    need: list[PushRange]
    #: Reconciliation is over (we sent or received DONE).
    done: bool
    #: Our ids the peer lacks, named one by one (the peer wanted their windows).
    push: list[bytes] = field(default_factory=list)
    #: Ids we asked the peer for by window in ``reply`` (they arrive without a WANT).
    asked: int = 0


@dataclass(frozen=True)
class ReconcileParams:
    """Tuning; both sides may differ (nothing here must match the peer's)."""

    #: Ranges in the initiator's first message (the whole id space split this many ways).
    #: Small, because identical sets (the common repeat case) cost about this many
    #: fingerprints each way: 4 keeps S2 at ~224 B of session messages (16 cost ~508 B);
    #: ``first_answer_fanout`` = 128 then splits the differing ones finely at once.
    initial_fanout: int = 4
    #: Ranges a differing range is split into. Leaves listed by window are cheap, so a
    #: narrower split with bigger leaves costs less than 16-way splits with 32-id leaves
    #: (S4, 100 differences at 100k: ~44 KB against ~53 KB).
    fanout: int = 8
    #: Ranges a differing range is split into in the responder's first answer. The
    #: initiator's first message is split only ``initial_fanout`` ways (cheap when nothing
    #: differs); splitting wider once here brings the leaves to list size within the same
    #: flights at 100k and 1M ids.
    first_answer_fanout: int = 128
    #: A differing range holding at most this many of our ids is listed (by window).
    #: (Smaller leaves make the lists reach the responder, not the initiator, for some
    #: layouts, and its want then costs a 4th round trip.)
    idlist_threshold: int = 64
    #: Bytes of each id a PREFIXLIST carries (0: send full IDLISTs only). With leaves of up
    #: to 64 ids, 3 bytes make a window collision (it costs a full list of the range, and
    #: one more exchange when the two sides' ids collide) rare: ~1e-4 per leaf.
    prefix_bytes: int = 3
    #: Largest message we send (a bigger answer ends with one fingerprint of the rest).
    max_message: int = MAX_RECONCILE_MESSAGE
    #: Most ranges in a message we send (and accept).
    max_ranges: int = MAX_RANGES

    def __post_init__(self) -> None:
        if (
            not 2 <= self.fanout <= 256
            or not 2 <= self.first_answer_fanout <= 256
            or not 2 <= self.initial_fanout <= 4096
        ):
            raise LocalProtocolError("fan-outs must be 2..256 (initial 2..4096)")
        if not self.fanout <= self.idlist_threshold <= 1024:
            raise LocalProtocolError("the id-list threshold must be fanout..1024")
        if self.prefix_bytes and not MIN_WINDOW <= self.prefix_bytes <= MAX_WINDOW:
            raise LocalProtocolError(f"prefix_bytes must be 0 or {MIN_WINDOW}..{MAX_WINDOW}")
        if self.max_ranges < self.initial_fanout + 2 or self.max_ranges > MAX_RANGES:
            raise LocalProtocolError("max_ranges must hold the first message, at most MAX_RANGES")
        worst = MESSAGE_OVERHEAD + (self.initial_fanout + 2) * (RANGE_OVERHEAD + 16)
        if self.max_message < worst or self.max_message > MAX_RECONCILE_MESSAGE:
            raise LocalProtocolError("max_message is too small for the first message")


class _Builder:
    """Accumulates an outgoing message, merging adjacent SKIPs and estimating its size."""

    def __init__(self) -> None:
        self.ranges: list[Range] = []
        self.size = MESSAGE_OVERHEAD

    def skip(self, upper: bytes) -> None:
        if self.ranges and self.ranges[-1].mode is RangeMode.SKIP:
            self.ranges[-1] = Range(upper, RangeMode.SKIP)
        else:
            self.add(upper, RangeMode.SKIP)

    def add(self, upper: bytes, mode: RangeMode, payload: bytes = b"") -> None:
        lower = self.ranges[-1].upper if self.ranges else ZERO
        if not lower < upper:
            raise LocalProtocolError("the item index returned bounds out of order")
        self.ranges.append(Range(upper, mode, payload))
        self.size += range_size(upper, len(payload))

    def finish(self) -> list[Range]:
        if len(self.ranges) == 1 and self.ranges[0].mode is RangeMode.SKIP:
            return []
        return self.ranges


class Reconciler:
    """One side of a reconciliation over ``index``. Synchronous and deterministic.

    The initiator calls ``initial()`` once; then each side feeds every RECONCILE message it
    receives to ``receive`` (bytes) or ``receive_value`` (already decoded) and sends back
    ``Step.reply``. Messages strictly alternate; reconciliation ends when either side
    sends DONE (the empty message).
    """

    def __init__(
        self,
        index: ItemIndex,
        *,
        initiator: bool,
        params: ReconcileParams | None = None,
        coded: CodedSymbols | None = None,
    ) -> None:
        """``coded``: the coded symbols of the same ids as ``index`` (None: no coded stage)."""
        self._index = index
        self._coded = coded
        # Coded stage: we sent n or MORE, so a CODED may answer (initiator); the symbols
        # received so far, the peer's whole-set fingerprint and MOREs sent; symbols we sent
        # and whether our last message was CODED, so a MORE may answer (responder).
        self._await_coded = False
        self._peer_symbols: PeerSymbols | None = None
        self._peer_fingerprint = b""
        self._more_sent = 0
        self._coded_sent = 0
        self._coded_last = False
        self._params = params or ReconcileParams()
        self._initiator = initiator
        self._awaiting = not initiator
        self._done = False
        self._rounds = 0
        self._offered = 0
        self._offered_lo: list[bytes] = []
        self._offered_hi: list[bytes] = []
        self._listed: dict[bytes, _Listed] = {}
        # Ranges our last message answered by PREFIXWANT, by upper bound: (lower, the
        # peer's windows). We pushed our ids whose window it did not list; if the peer's
        # check fails it lists the range in full, and we push only the rest.
        self._asked: dict[bytes, tuple[bytes, Windows]] = {}
        p = self._params
        split = (max(p.fanout, p.first_answer_fanout) + 1) * (RANGE_OVERHEAD + FINGERPRINT_SIZE)
        idlist = 2 * RANGE_OVERHEAD + p.idlist_threshold * ID_SIZE
        # Room kept free before answering one more range: its worst answer, plus a SKIP
        # and the closing fingerprint of the rest.
        self._reserve = max(split, idlist) + 2 * (RANGE_OVERHEAD + FINGERPRINT_SIZE)
        # Room for the fingerprint that closes a message cut by the frame limit.
        self._closing = 2 * range_size(INFINITY, FINGERPRINT_SIZE)

    @property
    def done(self) -> bool:
        return self._done

    @property
    def rounds(self) -> int:
        """RECONCILE messages received so far."""
        return self._rounds

    @property
    def offered_count(self) -> int:
        """Ids we have listed to the peer in IDLIST ranges (an upper bound on fair WANTs)."""
        return self._offered

    def initial(self) -> bytes:
        """The first message (initiator only, once)."""
        if not self._initiator or self._awaiting or self._done:
            raise LocalProtocolError("only the initiator sends the first message, once")
        out = _Builder()
        self._answer(ZERO, INFINITY, out, self._params.initial_fanout)
        self._awaiting = True
        ranges = out.finish()
        if self._coded is not None and all(r.mode is RangeMode.FINGERPRINT for r in ranges):
            # Fingerprints mean a set too big to list: offer the coded stage.
            self._await_coded = True
            return encode_message(ranges, self._coded.count)
        return encode_message(ranges)

    def receive(self, data: bytes) -> Step:
        """Process one received message (bytes); raises only ``RemoteProtocolError``."""
        value = codec.decode(data, max_size=MAX_RECONCILE_MESSAGE, what="RECONCILE message")
        return self.receive_value(value)

    def receive_value(self, value: Any) -> Step:
        """Process one received, already decoded message."""
        if self._done:
            raise RemoteProtocolError("RECONCILE after reconciliation finished")
        if not self._awaiting:
            raise RemoteProtocolError("RECONCILE out of turn: the initiator speaks first")
        self._rounds += 1
        if self._rounds > MAX_ROUNDS:
            raise RemoteProtocolError(f"reconciliation did not finish in {MAX_ROUNDS} rounds")
        ranges = parse_message(value)
        set_size = parse_set_size(value)
        if set_size is not None and (self._initiator or self._rounds != 1):
            raise RemoteProtocolError("only the initiator's first RECONCILE message carries n")
        # Only the message right after ours can answer the PREFIXLISTs and PREFIXWANTs it held,
        # a CODED our offer or MORE, a MORE our CODED.
        listed, self._listed = self._listed, {}
        asked, self._asked = self._asked, {}
        await_coded, self._await_coded = self._await_coded, False
        coded_last, self._coded_last = self._coded_last, False
        if ranges and ranges[0].mode is RangeMode.CODED:
            if not await_coded:
                raise RemoteProtocolError("CODED answers only an offer of n or a MORE")
            return self._receive_coded(ranges[0].payload)
        if ranges and ranges[0].mode is RangeMode.MORE:
            if not coded_last:
                raise RemoteProtocolError("MORE answers only a CODED")
            more = int.from_bytes(ranges[0].payload, "little")
            if not 1 <= more <= MAX_SYMBOLS - self._coded_sent:
                raise RemoteProtocolError(f"MORE asks past {MAX_SYMBOLS} coded symbols")
            return self._send_coded(more)
        if set_size is not None and self._coded is not None:
            first = first_symbols(abs(set_size - self._coded.count))
            if first <= MAX_SYMBOLS and self._fingerprints_differ(ranges):
                return self._send_coded(first)
        if not ranges:
            self._done = True
            return Step(None, [], [], True)
        have: list[bytes] = []
        need: list[PushRange] = []
        push: list[bytes] = []
        asked_count = 0
        out = _Builder()
        p = self._params
        first_answer = not self._initiator and self._rounds == 1
        fanout = p.first_answer_fanout if first_answer else p.fanout
        # Frame limit. Differing ranges are answered (split or listed) while the answer
        # leaves room to *echo* every fingerprint range still ahead (send our fingerprint
        # back unsplit: the peer splits it next time, nothing is lost); past that they are
        # echoed; if even echoes no longer fit, one fingerprint covers the rest. The first
        # differing range is always answered, so every message makes progress. A
        # PREFIXLIST's answer is never longer than the list, so it counts as its own echo.
        # A PREFIXWANT whose check fails is answered by an IDLIST of the ids we listed: its
        # size counts in ``echo_left`` so that room is kept for it (an echo instead would
        # make the peer reconcile ids it already pushed a second time).
        checked = self._check_all_windows(ranges, listed)
        echo_left = sum(_echo_size(r, checked, listed) for r in ranges)
        open_left = sum(r.mode not in (RangeMode.SKIP, RangeMode.IDLIST) for r in ranges)
        limit = p.max_message - self._closing
        answered = False
        lower = ZERO
        for r in ranges:
            if r.mode is RangeMode.SKIP:
                out.skip(r.upper)
                lower = r.upper
                continue
            if r.mode is RangeMode.IDLIST:
                pushed = asked.get(r.upper)
                windows = pushed[1] if pushed is not None and pushed[0] == lower else None
                self._learn(lower, r.upper, r.payload, have, need, windows)
                out.skip(r.upper)
                lower = r.upper
                continue
            # A PREFIXLIST's answer, or a PREFIXWANT's SKIP, is never longer than the range
            # itself: those are always answered (their size is in ``echo_left``).
            exempt = r.mode is RangeMode.PREFIXLIST or (
                r.mode is RangeMode.PREFIXWANT and checked[r.upper] is not None
            )
            if not exempt and (out.size > limit or len(out.ranges) + 3 > p.max_ranges):
                out.add(INFINITY, RangeMode.FINGERPRINT, self._index.fingerprint(lower, INFINITY))
                break
            echo_left -= _echo_size(r, checked, listed)
            open_left -= 1
            if r.mode is RangeMode.PREFIXLIST:
                answer = self._learn_windows(lower, r.upper, r.payload, need)
                if answer is not None and answer[0]:
                    out.add(r.upper, RangeMode.PREFIXWANT, answer[1])
                    asked_count += answer[0]
                    lower = r.upper
                    continue
                same = answer is not None
            elif r.mode is RangeMode.PREFIXWANT:
                wanted = checked[r.upper]
                if wanted is not None:
                    push += wanted
                    out.skip(r.upper)
                elif answered and (
                    out.size + _echo_size(r, checked, listed) + echo_left + self._closing
                    > p.max_message
                ):
                    fingerprint = self._index.fingerprint(lower, r.upper)
                    out.add(r.upper, RangeMode.FINGERPRINT, fingerprint)
                else:
                    # A window collision: list in full the ids we listed by window (the
                    # peer pushed its ids whose window we did not list, and pushes the rest).
                    ids = listed[r.upper].ids
                    out.add(r.upper, RangeMode.IDLIST, b"".join(ids))
                    self._offer(lower, r.upper, len(ids))
                    answered = True
                lower = r.upper
                continue
            else:
                same = self._index.fingerprint(lower, r.upper) == r.payload
            if same:
                out.skip(r.upper)
            elif answered and (
                out.size + self._reserve + echo_left > p.max_message
                or len(out.ranges) + fanout + open_left + 3 > p.max_ranges
            ):
                out.add(r.upper, RangeMode.FINGERPRINT, self._index.fingerprint(lower, r.upper))
            else:
                # A window collision the peer's PREFIXLIST shows is resolved by full ids.
                full = r.mode is RangeMode.PREFIXLIST
                self._answer(lower, r.upper, out, fanout, full=full)
                answered = True
            lower = r.upper
        reply = out.finish()
        if not reply:
            self._done = True
        return Step(encode_message(reply), have, need, self._done, push, asked_count)

    # --- coded stage (§13.3.6) ------------------------------------------------------

    def _fingerprints_differ(self, ranges: list[Range]) -> bool:
        """A first message of fingerprints only, some differing from ours."""
        lower = ZERO
        differ = False
        for r in ranges:
            if r.mode is not RangeMode.FINGERPRINT:
                return False
            differ = differ or self._index.fingerprint(lower, r.upper) != r.payload
            lower = r.upper
        return differ

    def _send_coded(self, count: int) -> Step:
        """Our next ``count`` coded symbols, after our whole-set fingerprint and first index."""
        coded = self._coded
        assert coded is not None  # noqa: S101 - only called with coded symbols
        start = self._coded_sent
        payload = (
            fingerprint_of(coded.id_total, coded.count)
            + start.to_bytes(2, "little")
            + coded.encode(start, start + count)
        )
        self._coded_sent = start + count
        self._coded_last = True
        # Every peeled id may be wanted: at most one per symbol.
        self._offered += count
        return Step(encode_message([Range(INFINITY, RangeMode.CODED, payload)]), [], [], False)

    def _receive_coded(self, payload: bytes) -> Step:
        """The peer's coded symbols: decode both differences, ask for more, or fall back."""
        coded = self._coded
        assert coded is not None  # noqa: S101 - we offered the coded stage
        check = payload[:FINGERPRINT_SIZE]
        start = int.from_bytes(payload[FINGERPRINT_SIZE:CODED_HEADER], "little")
        peer = self._peer_symbols
        if peer is None:
            peer = self._peer_symbols = PeerSymbols([], [], [])
            self._peer_fingerprint = check
        if start != len(peer) or check != self._peer_fingerprint:
            raise RemoteProtocolError("CODED symbols must continue the ones sent before")
        peer.extend(payload[CODED_HEADER:])
        found = peel(coded, peer)
        if found is not None and self._confirmed(found, check):
            self._peer_symbols = None
            self._done = True
            return Step(encode_message([]), found.theirs, [], True, found.ours)
        if len(peer) < MAX_SYMBOLS and self._more_sent < MAX_MORE:
            self._more_sent += 1
            self._await_coded = True
            # Enough for the difference the symbols suggest, at least three times as many
            # as held; eight times when every symbol differs (too many to tell how many).
            estimate = estimate_difference(coded, peer)
            total = 8 * len(peer) if estimate is None else first_symbols(estimate)
            more = min(MAX_SYMBOLS, max(3 * len(peer), total)) - len(peer)
            reply = encode_message([Range(INFINITY, RangeMode.MORE, more.to_bytes(2, "little"))])
            return Step(reply, [], [], False)
        # Not decodable within the bound: the CODED range is a differing fingerprint of the
        # whole space, answered as the responder would have answered our first message.
        self._peer_symbols = None
        out = _Builder()
        self._answer(ZERO, INFINITY, out, self._params.first_answer_fanout)
        return Step(encode_message(out.finish()), [], [], False)

    def _confirmed(self, found: Difference, check: bytes) -> bool:
        """Our ids plus ``theirs`` minus ``ours`` have the peer's whole-set fingerprint, and
        the index agrees on which ids we hold (the symbols could be wrong, not the index)."""
        coded = self._coded
        assert coded is not None  # noqa: S101 - we offered the coded stage
        if any(self._index.count(x, successor(x)) for x in found.theirs):
            return False
        if not all(self._index.count(x, successor(x)) for x in found.ours):
            return False
        total = coded.id_total + id_sum(found.theirs) - id_sum(found.ours)
        count = coded.count + len(found.theirs) - len(found.ours)
        return fingerprint_of(total, count) == check

    # --- range answers ----------------------------------------------------------------

    def _answer(
        self, lower: bytes, upper: bytes, out: _Builder, fanout: int, *, full: bool = False
    ) -> None:
        """Describe our ids in ``[lower, upper)``: list them (by window unless ``full``), or
        split into fingerprints."""
        n = self._index.count(lower, upper)
        if n <= self._params.idlist_threshold:
            ids = self._index.ids(lower, upper, n)
            if not full and ids and self._list_windows(lower, upper, ids, out):
                return
            out.add(upper, RangeMode.IDLIST, b"".join(ids))
            self._offer(lower, upper, len(ids))
            return
        bounds = [*self._index.split_points(lower, upper, fanout), upper]
        lo = lower
        for hi in bounds:
            out.add(hi, RangeMode.FINGERPRINT, self._index.fingerprint(lo, hi))
            lo = hi

    def _list_windows(self, lower: bytes, upper: bytes, ids: list[bytes], out: _Builder) -> bool:
        """Send a PREFIXLIST of ``ids`` if their windows are distinct; False if not."""
        size = self._params.prefix_bytes
        offset = window_offset(lower, upper)
        if not size or offset + size > ID_SIZE:
            return False
        windows = [i[offset : offset + size] for i in ids]
        if any(b <= a for a, b in itertools.pairwise(windows)):
            return False
        check = fingerprint_of(id_sum(ids), len(ids))
        out.add(upper, RangeMode.PREFIXLIST, bytes([size]) + check + b"".join(windows))
        self._listed[upper] = _Listed(lower, offset, size, ids)
        return True

    def _learn_windows(
        self, lower: bytes, upper: bytes, payload: bytes, need: list[PushRange]
    ) -> tuple[int, bytes] | None:
        """The peer listed the windows of its ids in ``[lower, upper)`` and their
        fingerprint. Push ours whose window is not listed; then, if we lack none of its
        windows and our ids with listed windows have its fingerprint, the range is done:
        ``(0, b"")``; if we lack some, ``(how many, PREFIXWANT payload)``; None if the
        fingerprint shows a window collision (the range is then answered by full ids)."""
        size = payload[0]
        theirs = payload[1 : 1 + FINGERPRINT_SIZE]
        offset = window_offset(lower, upper)
        listed = [payload[i : i + size] for i in range(1 + FINGERPRINT_SIZE, len(payload), size)]
        windows = Windows(offset, size, frozenset(listed))
        n = self._index.count(lower, upper)
        if n <= 4 * len(listed) + 64:
            matched = [x for x in self._index.ids(lower, upper, n) if windows.holds(x)]
        else:
            # Far more ids here than the peer has: look its windows up one by one.
            head = lower.ljust(ID_SIZE, b"\x00")[:offset]
            matched = []
            for w in listed:
                lo = max(lower, head + w)
                hi = min(upper, _prefix_end(head + w))
                matched += self._index.ids(lo, hi, self._index.count(lo, hi))
        found = {x[offset : offset + size] for x in matched}
        lacked = [w for w in listed if w not in found]
        check = fingerprint_of(id_sum(matched), len(matched))
        if not lacked and check != theirs:
            return None
        if len(matched) < n:
            need.append(PushRange(lower, upper, frozenset(), windows))
        if lacked:
            self._asked[upper] = (lower, windows)
        return len(lacked), check + b"".join(lacked)

    def _check_all_windows(
        self, ranges: list[Range], listed: dict[bytes, _Listed]
    ) -> dict[bytes, list[bytes] | None]:
        """Check every PREFIXWANT of a received message (by upper bound): the ids the peer
        wants, or None for a window collision."""
        checked: dict[bytes, list[bytes] | None] = {}
        lower = ZERO
        for r in ranges:
            if r.mode is RangeMode.PREFIXWANT:
                checked[r.upper] = self._check_windows(lower, r.upper, r.payload, listed)
            lower = r.upper
        return checked

    def _check_windows(
        self, lower: bytes, upper: bytes, payload: bytes, listed: dict[bytes, _Listed]
    ) -> list[bytes] | None:
        """The peer answered our PREFIXLIST of ``[lower, upper)``: the ids it wants, or None
        if its fingerprint shows a window collision (the range is then listed in full)."""
        entry = listed.get(upper)
        if entry is None or entry.lower != lower:
            raise RemoteProtocolError("PREFIXWANT for a range we did not list by window")
        size, offset = entry.size, entry.offset
        check, rest = payload[:FINGERPRINT_SIZE], payload[FINGERPRINT_SIZE:]
        if len(rest) % size:
            raise RemoteProtocolError("PREFIXWANT windows are not a multiple of the window size")
        by_window = {x[offset : offset + size]: x for x in entry.ids}
        lacked = [rest[i : i + size] for i in range(0, len(rest), size)]
        if any(b <= a for a, b in itertools.pairwise(lacked)):
            raise RemoteProtocolError("PREFIXWANT windows not strictly ascending")
        if any(w not in by_window for w in lacked):
            raise RemoteProtocolError("PREFIXWANT names a window we did not list")
        wanted = [by_window[w] for w in lacked]
        dropped = set(lacked)
        kept = [x for x in entry.ids if x[offset : offset + size] not in dropped]
        if fingerprint_of(id_sum(kept), len(kept)) != check:
            return None
        return wanted

    def _learn(
        self,
        lower: bytes,
        upper: bytes,
        payload: bytes,
        have: list[bytes],
        need: list[PushRange],
        pushed: Windows | None = None,
    ) -> None:
        """The peer listed all its ids in ``[lower, upper)``: derive both differences.
        ``pushed``: the windows the peer listed before, if we already pushed our ids whose
        window it did not list (we answered its PREFIXLIST by PREFIXWANT)."""
        theirs = [payload[i : i + ID_SIZE] for i in range(0, len(payload), ID_SIZE)]
        push = PushRange(lower, upper, frozenset(theirs), pushed, listed_only=True)
        n = self._index.count(lower, upper)
        if n <= 4 * len(theirs) + 64:
            ours = self._index.ids(lower, upper, n)
            held = set(ours)
            have.extend(x for x in theirs if x not in held)
            if any(push.keeps(x) for x in ours):
                need.append(push)
        else:
            # Far more ids here than the peer has: look its few ids up one by one.
            have.extend(x for x in theirs if not self._index.count(x, successor(x)))
            need.append(push)

    def _offer(self, lower: bytes, upper: bytes, count: int) -> None:
        """Remember that we listed our ids of ``[lower, upper)`` (merged, disjoint ranges)."""
        self._offered += count
        i = bisect.bisect_left(self._offered_hi, lower)
        j = bisect.bisect_right(self._offered_lo, upper)
        if i < j:
            lower = min(lower, self._offered_lo[i])
            upper = max(upper, self._offered_hi[j - 1])
        self._offered_lo[i:j] = [lower]
        self._offered_hi[i:j] = [upper]

    def check_wanted(self, ids: Iterable[bytes]) -> None:
        """Refuse a WANT naming an id outside every range we listed (any id may have been
        peeled from coded symbols we sent)."""
        if self._coded_sent:
            return
        for item_id in ids:
            k = bisect.bisect_right(self._offered_lo, item_id) - 1
            if k < 0 or item_id >= self._offered_hi[k]:
                raise RemoteProtocolError("WANT names an id we never listed")


def _prefix_end(prefix: bytes) -> bytes:
    """The bound just above every id starting with ``prefix`` (INFINITY past the top)."""
    value = int.from_bytes(prefix, "big") + 1
    if value >> (8 * len(prefix)):
        return INFINITY
    return value.to_bytes(len(prefix), "big").rstrip(b"\x00")


def _echo_size(
    r: Range, checked: dict[bytes, list[bytes] | None], listed: dict[bytes, _Listed]
) -> int:
    """Most bytes our answer to ``r`` takes when echoed (0 for ranges answered by SKIP
    whatever the room). A PREFIXWANT is answered by SKIP if its check passes, else by an
    IDLIST of the ids we listed: that is kept room for rather than echoed."""
    if r.mode is RangeMode.PREFIXLIST:
        return range_size(r.upper, len(r.payload))
    if r.mode is RangeMode.FINGERPRINT:
        return range_size(r.upper, FINGERPRINT_SIZE)
    if r.mode is RangeMode.PREFIXWANT:
        if checked[r.upper] is not None:
            return range_size(r.upper, 0)
        return range_size(r.upper, ID_SIZE * len(listed[r.upper].ids))
    return 0
