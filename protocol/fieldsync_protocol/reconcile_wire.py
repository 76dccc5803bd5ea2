"""The RECONCILE message (SPEC.md §13.3): a list of ranges covering the whole id space.

Each range ``[previous upper, upper)`` carries a mode: ``SKIP`` (nothing more to do here),
``FINGERPRINT`` (of the sender's ids in the range), ``IDLIST`` (every id the sender holds in
the range), ``PREFIXLIST`` (a short window of every id the sender holds in the range) or
``PREFIXWANT`` (the answer to a PREFIXLIST); or, alone over the whole space, ``CODED``
(rateless IBLT coded symbols of the sender's ids, §13.3.6) or ``MORE`` (a request for more
of them). The initiator's first message may carry ``n``, its id count, to offer the coded
stage. Bounds travel with trailing zero bytes stripped,
infinity as nil; the empty list is DONE. ``parse_message`` raises only
``RemoteProtocolError``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from fieldsync_protocol import codec
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.reconcile_index import FINGERPRINT_SIZE, ID_SIZE, INFINITY, ZERO
from fieldsync_protocol.riblt import SYMBOL_SIZE

#: Largest encoded RECONCILE message a side sends or accepts.
MAX_RECONCILE_MESSAGE = 1024 * 1024
#: Most ranges in one RECONCILE message.
MAX_RANGES = 16_384
#: Message type tag of a RECONCILE message (a session message, SPEC.md §13.2).
TYPE = "rec"

# Encoded size of one range at most, excluding its payload: a bound (bin8 header + 32 bytes),
# the mode, and the payload's bin32 header.
RANGE_OVERHEAD = 2 + ID_SIZE + 1 + 5


def range_size(upper: bytes, payload: int) -> int:
    """Encoded size of a range, at most (the bound may lose trailing zero bytes)."""
    return min(len(upper), ID_SIZE) + 3 + 5 + payload


# The map {"r": [...], "t": "rec"} around the ranges, with an array32 header.
MESSAGE_OVERHEAD = 16


class RangeMode(IntEnum):
    """What a range of a RECONCILE message carries."""

    SKIP = 0
    FINGERPRINT = 1
    IDLIST = 2
    PREFIXLIST = 3
    PREFIXWANT = 4
    CODED = 5
    MORE = 6


#: A CODED payload: the sender's whole-set fingerprint, LE16 index of its first symbol, then
#: one or more symbols (``riblt.SYMBOL_SIZE`` bytes each).
CODED_HEADER = FINGERPRINT_SIZE + 2
#: Largest id count ``n`` a first message may announce.
MAX_SET_SIZE = 2**63 - 1


#: Window lengths a PREFIXLIST may use (bytes per id).
MIN_WINDOW = 2
MAX_WINDOW = 16

_SPACE_TOP = (1 << (8 * ID_SIZE)) - 1


def window_offset(lower: bytes, upper: bytes) -> int:
    """Leading bytes every id in ``[lower, upper)`` shares (bounds of 0..32 bytes or
    ``INFINITY``): the common prefix of ``lower`` and the largest id below ``upper``."""
    low = lower.ljust(ID_SIZE, b"\x00")
    if upper == INFINITY:
        top = _SPACE_TOP
    else:
        top = int.from_bytes(upper.ljust(ID_SIZE, b"\x00"), "big") - 1
    high = top.to_bytes(ID_SIZE, "big")
    c = 0
    while c < ID_SIZE and low[c] == high[c]:
        c += 1
    return c


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


def encode_message(ranges: Sequence[Range], set_size: int | None = None) -> bytes:
    """The canonical RECONCILE message for ``ranges`` (an empty list is DONE); ``set_size``:
    the ``n`` field, the sender's id count (first message only, offering the coded stage)."""
    flat: list[Any] = []
    for r in ranges:
        flat += [_encode_bound(r.upper), int(r.mode), r.payload]
    if set_size is None:
        return codec.encode({"t": TYPE, "r": flat})
    return codec.encode({"t": TYPE, "r": flat, "n": set_size})


def parse_set_size(value: Any) -> int | None:
    """The ``n`` field of a RECONCILE message ``parse_message`` accepted (None if absent)."""
    if "n" not in value:
        return None
    return codec.get_int(value, "n", "RECONCILE message", 0, MAX_SET_SIZE)


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
    fields = codec.as_map(value, what, {"t", "r"}, {"n"})
    parse_set_size(fields)
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
        if not isinstance(raw_mode, int) or isinstance(raw_mode, bool) or not 0 <= raw_mode <= 6:
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
        elif mode is RangeMode.IDLIST:
            _check_idlist(payload, lower, upper, what)
        elif mode is RangeMode.PREFIXLIST:
            _check_prefixlist(payload, lower, upper, what)
        elif mode in (RangeMode.CODED, RangeMode.MORE):
            _check_coded(mode, payload, upper, len(flat), what)
        elif len(payload) < FINGERPRINT_SIZE:
            raise RemoteProtocolError(
                f"{what}: a PREFIXWANT starts with a {FINGERPRINT_SIZE}-byte fingerprint"
            )
        ranges.append(Range(upper, mode, payload))
        lower = upper
    if ranges and lower != INFINITY:
        raise RemoteProtocolError(f"{what}: the last range must end at infinity")
    if len(ranges) == 1 and ranges[0].mode is RangeMode.SKIP:
        raise RemoteProtocolError(f"{what}: a message of only SKIP must be sent empty (DONE)")
    return ranges


def _check_coded(mode: RangeMode, payload: bytes, upper: bytes, flat: int, what: str) -> None:
    """CODED and MORE stand alone over the whole space; their payloads are checked for
    shape here, for sequence (the first index, the count asked) by the reconciler."""
    if flat != 3 or upper != INFINITY:
        raise RemoteProtocolError(f"{what}: a CODED or MORE range is the only one, to infinity")
    if mode is RangeMode.MORE:
        if len(payload) != 2:
            raise RemoteProtocolError(f"{what}: a MORE payload is a 2-byte count")
    elif len(payload) <= CODED_HEADER or (len(payload) - CODED_HEADER) % SYMBOL_SIZE:
        raise RemoteProtocolError(
            f"{what}: a CODED payload is a fingerprint, a first index and whole symbols"
        )


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


def _check_prefixlist(payload: bytes, lower: bytes, upper: bytes, what: str) -> None:
    if not payload or not MIN_WINDOW <= payload[0] <= MAX_WINDOW:
        raise RemoteProtocolError(
            f"{what}: a PREFIXLIST starts with its window length, {MIN_WINDOW}..{MAX_WINDOW}"
        )
    size = payload[0]
    offset = window_offset(lower, upper)
    if offset + size > ID_SIZE:
        raise RemoteProtocolError(f"{what}: a PREFIXLIST window runs past the id's end")
    start = 1 + FINGERPRINT_SIZE
    if len(payload) <= start or (len(payload) - start) % size:
        raise RemoteProtocolError(
            f"{what}: a PREFIXLIST is its window length, a fingerprint and 1 or more windows"
        )
    head = lower.ljust(ID_SIZE, b"\x00")[:offset]
    windows = [payload[i : i + size] for i in range(start, len(payload), size)]
    if any(b <= a for a, b in itertools.pairwise(windows)):
        raise RemoteProtocolError(f"{what}: PREFIXLIST windows not strictly ascending")
    # The lowest and highest ids the first and last windows can stand for must lie in range.
    tail = ID_SIZE - offset - size
    if head + windows[-1] + b"\x00" * tail >= upper or head + windows[0] + b"\xff" * tail < lower:
        raise RemoteProtocolError(f"{what}: a PREFIXLIST window lies outside its range")
