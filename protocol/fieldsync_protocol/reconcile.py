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

``ItemIndex`` is what a store implements (sorted by id; see ``SortedListIndex`` for a packed
in-memory one that holds 1M ids in ~36 MB). Bounds given to an ``ItemIndex`` are byte strings
compared as Python compares ``bytes`` (SQLite compares BLOBs the same way): a bound shorter
than 32 bytes stands for itself padded with zero bytes, ``INFINITY`` follows every id, and
``successor(x)`` (``x + b"\\0"``) is the bound just after id ``x``.
"""

from __future__ import annotations

import bisect
import hashlib
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from fieldsync_protocol import codec
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError

#: Size of an item id (BLAKE2b-256 of the item bytes).
ID_SIZE = 32
#: Size of a range fingerprint.
FINGERPRINT_SIZE = 16
#: The lowest bound (every id is >= it).
ZERO = b""
#: A bound above every id. Sent as msgpack nil.
INFINITY = b"\xff" * (ID_SIZE + 1)
#: Largest encoded RECONCILE message a side sends or accepts.
MAX_RECONCILE_MESSAGE = 1024 * 1024
#: Most ranges in one RECONCILE message.
MAX_RANGES = 16_384
#: Most RECONCILE messages one side receives in a session (a hostile peer cannot stall us).
MAX_ROUNDS = 256
#: Message type tag of a RECONCILE message (a session message, SPEC.md §13.2).
TYPE = "rec"

_MASK = (1 << 256) - 1
_PERSON = b"fieldsync/fp/v1"
# Encoded size of one range at most, excluding its payload: a bound (bin8 header + 32 bytes),
# the mode, and the payload's bin32 header.
_RANGE_OVERHEAD = 2 + ID_SIZE + 1 + 5


def _range_size(upper: bytes, payload: int) -> int:
    """Encoded size of a range, at most (the bound may lose trailing zero bytes)."""
    return min(len(upper), ID_SIZE) + 3 + 5 + payload


# The map {"r": [...], "t": "rec"} around the ranges, with an array32 header.
_MESSAGE_OVERHEAD = 16


class RangeMode(IntEnum):
    """What a range of a RECONCILE message carries."""

    SKIP = 0
    FINGERPRINT = 1
    IDLIST = 2


def successor(item_id: bytes) -> bytes:
    """The bound just above ``item_id`` (``[x, successor(x))`` holds exactly ``x``)."""
    return item_id + b"\x00"


def id_sum(ids: Iterable[bytes]) -> int:
    """Sum of ids read as little-endian 256-bit integers, mod 2**256."""
    return sum(int.from_bytes(i, "little") for i in ids) & _MASK


def fingerprint_of(total: int, count: int) -> bytes:
    """The fingerprint of a range whose ids sum to ``total`` (mod 2**256) and number ``count``.

    ``BLAKE2b(sum as 32 bytes LE || count as 8 bytes LE, digest 16, person "fieldsync/fp/v1")``.
    """
    data = (total & _MASK).to_bytes(32, "little") + count.to_bytes(8, "little")
    return hashlib.blake2b(data, digest_size=FINGERPRINT_SIZE, person=_PERSON).digest()


#: Fingerprint of an empty range.
EMPTY_FINGERPRINT = fingerprint_of(0, 0)


def separator(below: bytes, above: bytes) -> bytes:
    """The shortest bound ``s`` with ``below < s <= above`` (``below < above`` are ids)."""
    i = 0
    while below[i] == above[i]:
        i += 1
    return above[: i + 1]


class ItemIndex(Protocol):
    """The local id set, sorted by id bytes; bounds as described in the module docstring."""

    def count(self, lower: bytes, upper: bytes) -> int:
        """Number of ids in ``[lower, upper)``."""
        ...

    def fingerprint(self, lower: bytes, upper: bytes) -> bytes:
        """``fingerprint_of(sum, count)`` of the ids in ``[lower, upper)``."""
        ...

    def ids(self, lower: bytes, upper: bytes, limit: int) -> list[bytes]:
        """The first ``limit`` ids in ``[lower, upper)``, ascending."""
        ...

    def split_points(self, lower: bytes, upper: bytes, parts: int) -> list[bytes]:
        """``parts - 1`` ascending bounds cutting the ids of ``[lower, upper)`` into ``parts``
        non-empty runs of near-equal size (fewer when the range holds fewer ids), each bound
        strictly between ``lower`` and ``upper``."""
        ...


# --- the packed in-memory index ---------------------------------------------------------


def _lane_sum_portable(chunk: bytes, start: int, end: int) -> int:
    offsets = range(start * ID_SIZE, end * ID_SIZE, ID_SIZE)
    return sum(int.from_bytes(chunk[i : i + ID_SIZE], "little") for i in offsets)


def _lane_sum_le(chunk: bytes, start: int, end: int) -> int:
    # On a little-endian host each id is four native uint64 lanes: sum each lane, then carry.
    words = memoryview(chunk)[start * ID_SIZE : end * ID_SIZE].cast("Q")
    return (
        sum(words[0::4])
        + (sum(words[1::4]) << 64)
        + (sum(words[2::4]) << 128)
        + (sum(words[3::4]) << 192)
    )


#: Unreduced sum of the ids ``chunk[start:end]`` (indices in ids).
_lane_sum = _lane_sum_le if sys.byteorder == "little" else _lane_sum_portable


class SortedListIndex:
    """An ``ItemIndex`` in memory: ids packed 32 bytes apiece in chunks of ``load..2*load``.

    Per chunk it keeps its last id and (lazily) its id sum; cumulative counts and sums over
    chunks are rebuilt lazily after a change. A range fingerprint costs two bisections and
    two partial chunk sums. ``add``/``discard`` rewrite one chunk.
    """

    def __init__(self, ids: Iterable[bytes] = (), *, load: int = 64) -> None:
        if load < 2:
            raise LocalProtocolError("chunk load must be at least 2")
        self._load = load
        self._chunks: list[bytes] = []
        self._maxes: list[bytes] = []
        self._sums: list[int | None] = []
        self._len = 0
        self._cum_counts: list[int] = [0]
        self._cum_sums: list[int] = [0]
        self._stale = False
        self._extend_sorted(sorted(set(ids)))

    @classmethod
    def from_sorted(cls, ids: Iterable[bytes], *, load: int = 64) -> SortedListIndex:
        """Build from strictly ascending ids, streamed (no list of all ids is ever held)."""
        index = cls(load=load)
        index._extend_sorted(ids)
        return index

    def _extend_sorted(self, ids: Iterable[bytes]) -> None:
        buf = bytearray()
        prev = ZERO
        for item_id in ids:
            if len(item_id) != ID_SIZE:
                raise LocalProtocolError(f"an item id is {ID_SIZE} bytes, not {len(item_id)}")
            if item_id <= prev:
                raise LocalProtocolError("ids given to from_sorted are not strictly ascending")
            buf += item_id
            prev = item_id
            if len(buf) == self._load * ID_SIZE:
                self._append_chunk(bytes(buf))
                buf.clear()
        if buf:
            self._append_chunk(bytes(buf))

    def _append_chunk(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._maxes.append(chunk[-ID_SIZE:])
        self._sums.append(None)
        self._len += len(chunk) // ID_SIZE
        self._stale = True

    def __len__(self) -> int:
        return self._len

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, bytes):
            return False
        ci, off = self._find(item_id)
        return ci < len(self._chunks) and self._id(ci, off) == item_id

    # -- internals ------------------------------------------------------------------------

    def _id(self, ci: int, off: int) -> bytes:
        return self._chunks[ci][off * ID_SIZE : (off + 1) * ID_SIZE]

    def _find(self, bound: bytes) -> tuple[int, int]:
        """(chunk, offset) of the first id >= ``bound``; ``(len(chunks), 0)`` if none."""
        ci = bisect.bisect_left(self._maxes, bound)
        if ci == len(self._chunks):
            return ci, 0
        chunk = self._chunks[ci]
        lo, hi = 0, len(chunk) // ID_SIZE
        while lo < hi:
            mid = (lo + hi) // 2
            if chunk[mid * ID_SIZE : (mid + 1) * ID_SIZE] < bound:
                lo = mid + 1
            else:
                hi = mid
        return ci, lo

    def _refresh(self) -> None:
        if not self._stale:
            return
        counts = [0]
        sums = [0]
        for ci, chunk in enumerate(self._chunks):
            total = self._sums[ci]
            if total is None:
                total = _lane_sum(chunk, 0, len(chunk) // ID_SIZE)
                self._sums[ci] = total
            counts.append(counts[-1] + len(chunk) // ID_SIZE)
            sums.append(sums[-1] + total)
        self._cum_counts = counts
        self._cum_sums = sums
        self._stale = False

    def _position(self, ci: int, off: int) -> int:
        return self._cum_counts[ci] + off

    def _prefix_sum(self, ci: int, off: int) -> int:
        """Unreduced sum of every id before (chunk ``ci``, offset ``off``)."""
        if off == 0:
            return self._cum_sums[ci]
        chunk = self._chunks[ci]
        size = len(chunk) // ID_SIZE
        if off * 2 <= size:
            return self._cum_sums[ci] + _lane_sum(chunk, 0, off)
        return self._cum_sums[ci + 1] - _lane_sum(chunk, off, size)

    def _locate(self, position: int) -> tuple[int, int]:
        ci = bisect.bisect_right(self._cum_counts, position) - 1
        return ci, position - self._cum_counts[ci]

    # -- ItemIndex ------------------------------------------------------------------------

    def count(self, lower: bytes, upper: bytes) -> int:
        self._refresh()
        low = self._position(*self._find(lower))
        high = self._position(*self._find(upper))
        return max(0, high - low)

    def fingerprint(self, lower: bytes, upper: bytes) -> bytes:
        self._refresh()
        a = self._find(lower)
        b = self._find(upper)
        n = self._position(*b) - self._position(*a)
        if n <= 0:
            return EMPTY_FINGERPRINT
        return fingerprint_of(self._prefix_sum(*b) - self._prefix_sum(*a), n)

    def ids(self, lower: bytes, upper: bytes, limit: int) -> list[bytes]:
        self._refresh()
        ci, off = self._find(lower)
        end = self._position(*self._find(upper))
        want = min(limit, end - self._position(ci, off))
        out: list[bytes] = []
        while len(out) < want:
            chunk = self._chunks[ci]
            take = min(want - len(out), len(chunk) // ID_SIZE - off)
            out.extend(chunk[i : i + ID_SIZE] for i in range(off * 32, (off + take) * 32, 32))
            ci, off = ci + 1, 0
        return out

    def split_points(self, lower: bytes, upper: bytes, parts: int) -> list[bytes]:
        self._refresh()
        low = self._position(*self._find(lower))
        n = self._position(*self._find(upper)) - low
        parts = min(parts, n)
        bounds: list[bytes] = []
        for k in range(1, parts):
            at = low + (n * k) // parts
            bounds.append(separator(self._id(*self._locate(at - 1)), self._id(*self._locate(at))))
        return bounds

    # -- updates --------------------------------------------------------------------------

    def add(self, item_id: bytes) -> bool:
        """Insert ``item_id``; False if it was already present."""
        if len(item_id) != ID_SIZE:
            raise LocalProtocolError(f"an item id is {ID_SIZE} bytes, not {len(item_id)}")
        if not self._chunks:
            self._append_chunk(item_id)
            return True
        ci, off = self._find(item_id)
        if ci == len(self._chunks):
            ci, off = ci - 1, len(self._chunks[-1]) // ID_SIZE
        elif self._id(ci, off) == item_id:
            return False
        chunk = self._chunks[ci]
        chunk = chunk[: off * ID_SIZE] + item_id + chunk[off * ID_SIZE :]
        if len(chunk) > 2 * self._load * ID_SIZE:
            half = (len(chunk) // ID_SIZE // 2) * ID_SIZE
            self._chunks[ci : ci + 1] = [chunk[:half], chunk[half:]]
            self._maxes[ci : ci + 1] = [chunk[half - ID_SIZE : half], chunk[-ID_SIZE:]]
            self._sums[ci : ci + 1] = [None, None]
        else:
            self._chunks[ci] = chunk
            self._maxes[ci] = chunk[-ID_SIZE:]
            self._sums[ci] = None
        self._len += 1
        self._stale = True
        return True

    def discard(self, item_id: bytes) -> bool:
        """Remove ``item_id``; False if it was absent."""
        if item_id not in self:
            return False
        ci, off = self._find(item_id)
        chunk = self._chunks[ci]
        chunk = chunk[: off * ID_SIZE] + chunk[(off + 1) * ID_SIZE :]
        if chunk:
            self._chunks[ci] = chunk
            self._maxes[ci] = chunk[-ID_SIZE:]
            self._sums[ci] = None
        else:
            del self._chunks[ci], self._maxes[ci], self._sums[ci]
        self._len -= 1
        self._stale = True
        return True


# --- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Range:
    """One range of a message: ``[previous upper, upper)`` with its mode and payload."""

    upper: bytes
    mode: RangeMode
    payload: bytes = b""


def _encode_bound(bound: bytes) -> bytes | None:
    if bound == INFINITY:
        return None
    return bound.rstrip(b"\x00")


def encode_message(ranges: Sequence[Range]) -> bytes:
    """The canonical RECONCILE message for ``ranges`` (an empty list is DONE)."""
    flat: list[Any] = []
    for r in ranges:
        flat += [_encode_bound(r.upper), int(r.mode), r.payload]
    return codec.encode({"t": TYPE, "r": flat})


def _parse_bound(value: Any, what: str) -> bytes:
    if value is None:
        return INFINITY
    if not isinstance(value, bytes) or not 1 <= len(value) <= ID_SIZE:
        raise RemoteProtocolError(f"{what}: a bound is nil or 1..{ID_SIZE} bytes")
    if value[-1] == 0:
        raise RemoteProtocolError(f"{what}: a bound may not end with a zero byte")
    return value


def parse_message(value: Any, *, max_ranges: int = MAX_RANGES) -> list[Range]:
    """Check a decoded RECONCILE message; raises only ``RemoteProtocolError``."""
    what = "RECONCILE message"
    fields = codec.as_map(value, what, {"t", "r"})
    flat = fields["r"]
    if not isinstance(flat, list) or len(flat) % 3:
        raise RemoteProtocolError(f"{what}: ranges must be a flat list of (bound, mode, payload)")
    if len(flat) > 3 * max_ranges:
        raise RemoteProtocolError(f"{what} has more than {max_ranges} ranges")
    ranges: list[Range] = []
    lower = ZERO
    for k in range(0, len(flat), 3):
        if lower == INFINITY:
            raise RemoteProtocolError(f"{what}: a range follows the one ending at infinity")
        upper = _parse_bound(flat[k], what)
        if upper <= lower:
            raise RemoteProtocolError(f"{what}: bounds are not strictly ascending")
        raw_mode, payload = flat[k + 1], flat[k + 2]
        if not isinstance(raw_mode, int) or isinstance(raw_mode, bool) or not 0 <= raw_mode <= 2:
            raise RemoteProtocolError(f"{what}: unknown range mode {raw_mode!r:.20}")
        if not isinstance(payload, bytes):
            raise RemoteProtocolError(f"{what}: a range payload must be bytes")
        mode = RangeMode(raw_mode)
        if mode is RangeMode.SKIP:
            if payload:
                raise RemoteProtocolError(f"{what}: a SKIP range has an empty payload")
            if ranges and ranges[-1].mode is RangeMode.SKIP:
                raise RemoteProtocolError(f"{what}: adjacent SKIP ranges must be merged")
        elif mode is RangeMode.FINGERPRINT:
            if len(payload) != FINGERPRINT_SIZE:
                raise RemoteProtocolError(f"{what}: a fingerprint is {FINGERPRINT_SIZE} bytes")
        else:
            _check_idlist(payload, lower, upper, what)
        ranges.append(Range(upper, mode, payload))
        lower = upper
    if ranges and lower != INFINITY:
        raise RemoteProtocolError(f"{what}: the last range must end at infinity")
    if len(ranges) == 1 and ranges[0].mode is RangeMode.SKIP:
        raise RemoteProtocolError(f"{what}: a message of only SKIP must be sent empty (DONE)")
    return ranges


def _check_idlist(payload: bytes, lower: bytes, upper: bytes, what: str) -> None:
    if len(payload) % ID_SIZE:
        raise RemoteProtocolError(f"{what}: an id list is a multiple of {ID_SIZE} bytes")
    prev = lower
    for i in range(0, len(payload), ID_SIZE):
        item_id = payload[i : i + ID_SIZE]
        if item_id < prev or (i and item_id == prev):
            raise RemoteProtocolError(f"{what}: id list not strictly ascending inside its range")
        prev = item_id
    if payload and prev >= upper:
        raise RemoteProtocolError(f"{what}: id list not strictly ascending inside its range")


# --- the reconciler -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PushRange:
    """Our ids the peer lacks: every id we hold in ``[lower, upper)`` not in ``exclude``."""

    lower: bytes
    upper: bytes
    exclude: frozenset[bytes]


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


@dataclass(frozen=True)
class ReconcileParams:
    """Tuning; both sides may differ (nothing here must match the peer's)."""

    #: Ranges in the initiator's first message (the whole id space split this many ways).
    initial_fanout: int = 16
    #: Ranges a differing range is split into.
    fanout: int = 16
    #: A differing range holding at most this many of our ids is answered by an id list.
    idlist_threshold: int = 32
    #: Largest message we send (a bigger answer ends with one fingerprint of the rest).
    max_message: int = MAX_RECONCILE_MESSAGE
    #: Most ranges in a message we send (and accept).
    max_ranges: int = MAX_RANGES

    def __post_init__(self) -> None:
        if not 2 <= self.fanout <= 256 or not 2 <= self.initial_fanout <= 4096:
            raise LocalProtocolError("fan-outs must be 2..256 (initial 2..4096)")
        if not self.fanout <= self.idlist_threshold <= 1024:
            raise LocalProtocolError("the id-list threshold must be fanout..1024")
        if self.max_ranges < self.initial_fanout + 2 or self.max_ranges > MAX_RANGES:
            raise LocalProtocolError("max_ranges must hold the first message, at most MAX_RANGES")
        worst = _MESSAGE_OVERHEAD + (self.initial_fanout + 2) * (_RANGE_OVERHEAD + 16)
        if self.max_message < worst or self.max_message > MAX_RECONCILE_MESSAGE:
            raise LocalProtocolError("max_message is too small for the first message")


class _Builder:
    """Accumulates an outgoing message, merging adjacent SKIPs and estimating its size."""

    def __init__(self) -> None:
        self.ranges: list[Range] = []
        self.size = _MESSAGE_OVERHEAD

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
        self.size += _range_size(upper, len(payload))

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
        self, index: ItemIndex, *, initiator: bool, params: ReconcileParams | None = None
    ) -> None:
        self._index = index
        self._params = params or ReconcileParams()
        self._initiator = initiator
        self._awaiting = not initiator
        self._done = False
        self._rounds = 0
        self._offered = 0
        self._offered_lo: list[bytes] = []
        self._offered_hi: list[bytes] = []
        p = self._params
        split = (p.fanout + 1) * (_RANGE_OVERHEAD + FINGERPRINT_SIZE)
        idlist = 2 * _RANGE_OVERHEAD + p.idlist_threshold * ID_SIZE
        # Room kept free before answering one more range: its worst answer, plus a SKIP
        # and the closing fingerprint of the rest.
        self._reserve = max(split, idlist) + 2 * (_RANGE_OVERHEAD + FINGERPRINT_SIZE)

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
        return encode_message(out.finish())

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
        if not ranges:
            self._done = True
            return Step(None, [], [], True)
        have: list[bytes] = []
        need: list[PushRange] = []
        out = _Builder()
        p = self._params
        # Frame limit. Differing ranges are answered (split or listed) while the answer
        # leaves room to *echo* every fingerprint range still ahead (send our fingerprint
        # back unsplit: the peer splits it next time, nothing is lost); past that they are
        # echoed; if even echoes no longer fit, one fingerprint covers the rest. The first
        # differing range is always answered, so every message makes progress.
        fingerprints = [r for r in ranges if r.mode is RangeMode.FINGERPRINT]
        echo_left = sum(_range_size(r.upper, FINGERPRINT_SIZE) for r in fingerprints)
        fp_left = len(fingerprints)
        limit = p.max_message - 2 * _range_size(INFINITY, FINGERPRINT_SIZE)
        answered = False
        lower = ZERO
        for r in ranges:
            if r.mode is RangeMode.SKIP:
                out.skip(r.upper)
            elif r.mode is RangeMode.IDLIST:
                self._learn(lower, r.upper, r.payload, have, need)
                out.skip(r.upper)
            elif out.size > limit or len(out.ranges) + 3 > p.max_ranges:
                out.add(INFINITY, RangeMode.FINGERPRINT, self._index.fingerprint(lower, INFINITY))
                break
            else:
                echo_left -= _range_size(r.upper, FINGERPRINT_SIZE)
                fp_left -= 1
                ours = self._index.fingerprint(lower, r.upper)
                if ours == r.payload:
                    out.skip(r.upper)
                elif answered and (
                    out.size + self._reserve + echo_left > p.max_message
                    or len(out.ranges) + p.fanout + fp_left + 3 > p.max_ranges
                ):
                    out.add(r.upper, RangeMode.FINGERPRINT, ours)
                else:
                    self._answer(lower, r.upper, out, p.fanout)
                    answered = True
            lower = r.upper
        reply = out.finish()
        if not reply:
            self._done = True
        return Step(encode_message(reply), have, need, self._done)

    def _answer(self, lower: bytes, upper: bytes, out: _Builder, fanout: int) -> None:
        """Describe our ids in ``[lower, upper)``: list them, or split into fingerprints."""
        n = self._index.count(lower, upper)
        if n <= self._params.idlist_threshold:
            ids = self._index.ids(lower, upper, n)
            out.add(upper, RangeMode.IDLIST, b"".join(ids))
            self._offer(lower, upper, len(ids))
            return
        bounds = [*self._index.split_points(lower, upper, fanout), upper]
        lo = lower
        for hi in bounds:
            out.add(hi, RangeMode.FINGERPRINT, self._index.fingerprint(lo, hi))
            lo = hi

    def _learn(
        self, lower: bytes, upper: bytes, payload: bytes, have: list[bytes], need: list[PushRange]
    ) -> None:
        """The peer listed all its ids in ``[lower, upper)``: derive both differences."""
        theirs = [payload[i : i + ID_SIZE] for i in range(0, len(payload), ID_SIZE)]
        exclude = frozenset(theirs)
        n = self._index.count(lower, upper)
        if n <= 4 * len(theirs) + 64:
            ours = self._index.ids(lower, upper, n)
            held = set(ours)
            have.extend(x for x in theirs if x not in held)
            if any(x not in exclude for x in ours):
                need.append(PushRange(lower, upper, exclude))
        else:
            # Far more ids here than the peer has: look its few ids up one by one.
            have.extend(x for x in theirs if not self._index.count(x, successor(x)))
            need.append(PushRange(lower, upper, exclude))

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
        """Refuse a WANT naming an id outside every range we listed."""
        for item_id in ids:
            k = bisect.bisect_right(self._offered_lo, item_id) - 1
            if k < 0 or item_id >= self._offered_hi[k]:
                raise RemoteProtocolError("WANT names an id we never listed")
