"""The id index reconciliation works over, and its range fingerprints (SPEC.md §13.3).

Item ids are 32-byte strings sorted by their bytes. A *range* ``[lower, upper)`` is named by two
*bounds*: byte strings compared as Python compares ``bytes`` (SQLite compares BLOBs the same
way); a bound shorter than 32 bytes stands for itself padded with zero bytes, ``INFINITY``
follows every id, and ``successor(x)`` (``x + b"\\0"``) is the bound just after id ``x``. The
fingerprint of a range is BLAKE2b-128 of (sum of its ids mod 2**256, count).

``ItemIndex`` is what a store implements; ``SortedListIndex`` is a packed in-memory one that
holds 1M ids in ~36 MB.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import sys
from collections.abc import Iterable
from typing import Protocol

from fieldsync_protocol.errors import LocalProtocolError

#: Size of an item id (BLAKE2b-256 of the item bytes).
ID_SIZE = 32
#: Size of a range fingerprint.
FINGERPRINT_SIZE = 16
#: The lowest bound (every id is >= it).
ZERO = b""
#: A bound above every id. Sent as msgpack nil.
INFINITY = b"\xff" * (ID_SIZE + 1)

_MASK = (1 << 256) - 1
_PERSON = b"fieldsync/fp/v1"


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


def _offset_in(chunk: bytes, bound: bytes, lo: int) -> int:
    """Offset in ``chunk`` (packed ascending ids) of the first id >= ``bound``, from ``lo``."""
    hi = len(chunk) // ID_SIZE
    while lo < hi:
        mid = (lo + hi) // 2
        if chunk[mid * ID_SIZE : (mid + 1) * ID_SIZE] < bound:
            lo = mid + 1
        else:
            hi = mid
    return lo


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
        return ci, _offset_in(self._chunks[ci], bound, 0)

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

    def add_many(self, ids: Iterable[bytes]) -> list[bytes]:
        """Insert ``ids`` (any order, repeats allowed); those that were absent, ascending.

        Each chunk the ids fall into is rewritten once, not once per id: a session stores
        its items a batch at a time, mostly in id order, so a batch lands in a few chunks
        (perf S1: ~3 us per id one by one, a tenth of that so)."""
        fresh = sorted(set(ids))
        for item_id in fresh:
            if len(item_id) != ID_SIZE:
                raise LocalProtocolError(f"an item id is {ID_SIZE} bytes, not {len(item_id)}")
        if not self._chunks:
            self._extend_sorted(fresh)
            return fresh
        added: list[bytes] = []
        start = 0
        while start < len(fresh):
            ci = min(bisect.bisect_left(self._maxes, fresh[start]), len(self._chunks) - 1)
            # The ids up to this chunk's last one go into it (all the rest into the last).
            last = ci == len(self._chunks) - 1
            end = len(fresh) if last else bisect.bisect_right(fresh, self._maxes[ci], start)
            chunk = self._chunks[ci]
            # Ids past the last chunk's last one are appended without a search each: a new
            # node's first sync receives every id in ascending order (perf S1).
            above = bisect.bisect_right(fresh, self._maxes[ci], start, end) if last else end
            pieces: list[bytes] = []
            done = 0  # ids of ``chunk`` already copied into ``pieces``
            for item_id in fresh[start:above]:
                off = _offset_in(chunk, item_id, done)
                if chunk[off * ID_SIZE : (off + 1) * ID_SIZE] == item_id:
                    continue
                pieces += (chunk[done * ID_SIZE : off * ID_SIZE], item_id)
                done = off
                added.append(item_id)
            if above < end:
                pieces += (chunk[done * ID_SIZE :], *fresh[above:end])
                done = len(chunk) // ID_SIZE
                added += fresh[above:end]
            if pieces:
                self._replace_chunk(ci, b"".join((*pieces, chunk[done * ID_SIZE :])))
            start = end
        if added:
            self._len += len(added)
            self._stale = True
        return added

    def _replace_chunk(self, ci: int, chunk: bytes) -> None:
        """Put ``chunk`` in place of chunk ``ci``, split evenly if over ``2 * load`` ids."""
        size = len(chunk) // ID_SIZE
        if size <= 2 * self._load:
            # In place: most batches add an id or two to each chunk they touch, and three
            # slice assignments would each move every later entry of their list.
            self._chunks[ci], self._maxes[ci], self._sums[ci] = chunk, chunk[-ID_SIZE:], None
            return
        parts = -(-size // (2 * self._load))
        bounds = [size * k // parts * ID_SIZE for k in range(parts + 1)]
        pieces = [chunk[a:b] for a, b in itertools.pairwise(bounds)]
        self._chunks[ci : ci + 1] = pieces
        self._maxes[ci : ci + 1] = [piece[-ID_SIZE:] for piece in pieces]
        self._sums[ci : ci + 1] = [None] * parts

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
