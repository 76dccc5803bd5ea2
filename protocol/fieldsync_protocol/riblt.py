"""Rateless IBLT coded symbols over item ids (SPEC.md §13.3.6).

After Yang, Gilad and Alizadeh, "Practical Rateless Set Reconciliation" (SIGCOMM 2024).
Every id is mapped, deterministically, into an infinite sequence of coded-symbol indices
``0 = i₀ < i₁ < i₂ < …`` whose gaps grow (index ``i`` receives about ``1/(1 + i/2)`` of all
ids), so any prefix of the coded symbols of a set is a good invertible Bloom lookup table of
it. A coded symbol holds the XOR of the ids mapped into it, the XOR of their 8-byte
checksums and their count. Subtracting the peer's prefix from ours leaves the coded
symbols of the *symmetric difference*; peeling pure symbols (count ±1, checksum of the id
matches) recovers it once the prefix is about 1.35–2 times as long as the difference.

``CodedSymbols`` keeps a fixed prefix of ``MAX_SYMBOLS`` symbols of one set, updated per id
added or removed (about 14 indices each). ``peel`` decodes a received prefix against ours;
every loop in it is bounded by the prefix length, whatever the peer sent.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.reconcile_index import ID_SIZE

#: Coded symbols one side keeps and sends at most in a session (SPEC.md §13.3.6).
MAX_SYMBOLS = 1024
#: Size of a checksum (the XOR of the ids' checksums in a symbol).
CHECKSUM_SIZE = 8
#: Size of one coded symbol on the wire: id XOR, checksum XOR, count mod 2**16 (LE16).
SYMBOL_SIZE = ID_SIZE + CHECKSUM_SIZE + 2

_PERSON = b"fieldsync/riblt"
_MULTIPLIER = 0xDA942042E4DD58B5
_MASK64 = (1 << 64) - 1
_MASK256 = (1 << 256) - 1
_COUNT_MOD = 1 << 16


def id_hash(item_id: bytes) -> tuple[int, int]:
    """``(checksum, seed)`` of an id: ``BLAKE2b-128(id; person="fieldsync/riblt")`` read as
    its first 8 bytes (little-endian) and, with the lowest bit set, its last 8 bytes."""
    digest = hashlib.blake2b(item_id, digest_size=16, person=_PERSON).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1


def indices(seed: int, limit: int) -> Iterator[int]:
    """The coded-symbol indices below ``limit`` of the id whose seed is ``seed``, ascending.

    ``i₀ = 0``; then ``state ← state · 0xda942042e4dd58b5 mod 2^64``, ``s = isqrt(state) + 1``
    and ``i ← i + max(1, ⌈(2i + 3)(2^32 - s) / 2s⌉)``: a gap of about ``(i + 1.5)(1/√u - 1)``
    for ``u = state / 2^64`` uniform, as in the reference implementation, in integers only.
    """
    index = 0
    state = seed
    while index < limit:
        yield index
        state = (state * _MULTIPLIER) & _MASK64
        s = math.isqrt(state) + 1
        gap = ((2 * index + 3) * ((1 << 32) - s) + 2 * s - 1) // (2 * s)
        index += max(1, gap)


class CodedSymbols:
    """The first ``MAX_SYMBOLS`` coded symbols of a set of ids, plus its size and id sum
    (for the range fingerprint of the whole set, §13.3.2). Adding an id twice, or removing
    one it does not hold, corrupts it: the caller adds only new ids and removes only held
    ones (a reconciliation against a corrupt prefix fails its checks and falls back)."""

    __slots__ = ("cells", "count", "counts", "id_total")

    def __init__(self, ids: Iterable[bytes] = ()) -> None:
        #: Per symbol ``id XOR << 64 | checksum XOR``: one XOR and one int per index an id
        #: updates, not two (the per-item update is the daemon's hot path).
        self.cells = [0] * MAX_SYMBOLS
        self.counts = [0] * MAX_SYMBOLS
        self.count = 0
        self.id_total = 0
        self.extend(ids)

    @property
    def xors(self) -> list[int]:
        """Per symbol, the XOR of its ids (read as big-endian integers); a new list."""
        return [cell >> 64 for cell in self.cells]

    @property
    def sums(self) -> list[int]:
        """Per symbol, the XOR of its ids' checksums; a new list."""
        return [cell & _MASK64 for cell in self.cells]

    def extend(self, ids: Iterable[bytes]) -> None:
        self._apply(ids, 1)

    def add(self, item_id: bytes) -> None:
        self._apply((item_id,), 1)

    def remove(self, item_id: bytes) -> None:
        self._apply((item_id,), -1)

    def remove_all(self, ids: Iterable[bytes]) -> None:
        self._apply(ids, -1)

    def _apply(self, ids: Iterable[bytes], sign: int) -> None:
        # The hot path of every new item in the daemon (about 14 indices per id): ``id_hash``
        # and ``indices`` written out inline, with every name a local, since a generator
        # resume and global lookups per index cost as much as the arithmetic itself.
        cells, counts = self.cells, self.counts
        isqrt, multiplier, limit = math.isqrt, _MULTIPLIER, MAX_SYMBOLS
        count, total = self.count, self.id_total
        try:
            for item_id in ids:
                if len(item_id) != ID_SIZE:
                    raise LocalProtocolError("coded symbols hold 32-byte ids")
                digest = hashlib.blake2b(item_id, digest_size=16, person=_PERSON).digest()
                state = int.from_bytes(digest[8:], "little") | 1
                # id ‖ the checksum bytes reversed, big-endian: id << 64 | LE64(digest[:8]).
                cell = int.from_bytes(item_id + digest[7::-1], "big")
                index = 0
                while index < limit:
                    cells[index] ^= cell
                    counts[index] += sign
                    # ``indices`` with r = s - 1: the gap ⌈(2i + 3)(2^32 - 1 - r) / 2(r + 1)⌉
                    # as a negated floor division, 0 only when r = 2^32 - 1 (hence ``or 1``).
                    # The masks are literals: Python folds them, no lookup per index.
                    state = state * multiplier & (1 << 64) - 1
                    root = isqrt(state)
                    index += -(((2 * index + 3) * (root - ((1 << 32) - 1))) // (2 * root + 2)) or 1
                total += sign * int.from_bytes(item_id, "little")
                count += sign
        finally:
            # Ids applied before one of the wrong size stay applied and counted, as one by one.
            self.count, self.id_total = count, total & _MASK256

    def encode(self, start: int, stop: int) -> bytes:
        """Symbols ``start..stop-1``, each ``id XOR ‖ LE64 checksum XOR ‖ LE16 count``."""
        if not 0 <= start < stop <= MAX_SYMBOLS:
            raise LocalProtocolError("coded symbols out of range")
        cells, counts = self.cells, self.counts
        return b"".join(
            (cells[i] >> 64).to_bytes(ID_SIZE, "big")
            + (cells[i] & _MASK64).to_bytes(CHECKSUM_SIZE, "little")
            + (counts[i] % _COUNT_MOD).to_bytes(2, "little")
            for i in range(start, stop)
        )


@dataclass
class PeerSymbols:
    """Coded symbols received from the peer, in index order from 0."""

    xors: list[int]
    sums: list[int]
    counts: list[int]

    def __len__(self) -> int:
        return len(self.xors)

    def extend(self, blob: bytes) -> None:
        """Append the symbols encoded in ``blob`` (a whole number of symbols, checked)."""
        if len(blob) % SYMBOL_SIZE or len(self) + len(blob) // SYMBOL_SIZE > MAX_SYMBOLS:
            raise RemoteProtocolError(f"coded symbols are {SYMBOL_SIZE} bytes, {MAX_SYMBOLS} most")
        for k in range(0, len(blob), SYMBOL_SIZE):
            self.xors.append(int.from_bytes(blob[k : k + ID_SIZE], "big"))
            self.sums.append(int.from_bytes(blob[k + ID_SIZE : k + ID_SIZE + 8], "little"))
            self.counts.append(int.from_bytes(blob[k + ID_SIZE + 8 : k + SYMBOL_SIZE], "little"))


def estimate_difference(own: CodedSymbols, peer: PeerSymbols) -> int | None:
    """How many ids the two sets differ by, judged from how many of the first ``len(peer)``
    symbols differ (index ``i`` holds an id with probability about ``1/(1 + i/2)``); None
    when every one differs (the difference is too big for these symbols to tell)."""
    m = len(peer)
    own_xors, own_sums = own.xors, own.sums  # built once: each is a new list
    differing = sum(
        (peer.xors[i], peer.sums[i], peer.counts[i] % _COUNT_MOD)
        != (own_xors[i], own_sums[i], own.counts[i] % _COUNT_MOD)
        for i in range(m)
    )
    if differing >= m:
        return None
    # Expected differing symbols grow with d: the smallest d (in steps of 1/8) expecting as
    # many as seen; 4096 expects all but a fraction of one, so the loop ends well before.
    d = 0
    while d < 4 * MAX_SYMBOLS and sum(1 - (1 - 2 / (i + 2)) ** d for i in range(m)) < differing:
        d += 1 + d // 8
    return d


@dataclass(frozen=True)
class Difference:
    """A decoded symmetric difference: ids only the peer holds, ids only we hold."""

    theirs: list[bytes]
    ours: list[bytes]


def peel(own: CodedSymbols, peer: PeerSymbols) -> Difference | None:
    """Subtract our first ``len(peer)`` symbols from the peer's and peel; the difference, or
    None if those symbols do not decode (too few, or inconsistent). At most ``len(peer)``
    ids are peeled, so this ends after O(len(peer) · log len(peer)) steps on any input."""
    m = len(peer)
    own_xors, own_sums = own.xors, own.sums  # built once: each is a new list
    xors = [peer.xors[i] ^ own_xors[i] for i in range(m)]
    sums = [peer.sums[i] ^ own_sums[i] for i in range(m)]
    # The peer sends counts mod 2**16: the difference is small, read it as a signed value.
    counts = []
    for i in range(m):
        c = (peer.counts[i] - own.counts[i]) % _COUNT_MOD
        counts.append(c - _COUNT_MOD if c >= _COUNT_MOD // 2 else c)
    theirs: list[bytes] = []
    ours: list[bytes] = []
    seen: set[int] = set()
    pending = [i for i in range(m) if counts[i] in (1, -1)]
    while pending:
        i = pending.pop()
        sign = counts[i]
        if sign not in (1, -1):
            continue
        value = xors[i]
        item_id = value.to_bytes(ID_SIZE, "big")
        checksum, seed = id_hash(item_id)
        if checksum != sums[i]:
            continue
        if value in seen or len(seen) == m:
            return None  # the same id twice, or more ids than symbols: not a real difference
        seen.add(value)
        (theirs if sign == 1 else ours).append(item_id)
        for j in indices(seed, m):
            xors[j] ^= value
            sums[j] ^= checksum
            counts[j] -= sign
            if counts[j] in (1, -1):
                pending.append(j)
    if any(xors) or any(sums) or any(counts):
        return None
    return Difference(sorted(theirs), sorted(ours))
