"""The sync session's messages: their limits, encoding and structural checks (SPEC.md §13.2).

Every message is a canonical msgpack map whose ``t`` names its type. The functions here check
what a message says on its own (fields, types, sizes, ranges); what it means in the session
(order, window, quota, cursors) is for the machine in ``session.py``. The RECONCILE message is
``reconcile_wire``'s. Decoders raise only ``RemoteProtocolError``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Final

from fieldsync_protocol import codec, reconcile_wire
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.items import MAX_ITEM
from fieldsync_protocol.reconcile_index import ID_SIZE

HELLO: Final = "hello"
WANT: Final = "want"
DATA: Final = "data"
ACK: Final = "ack"
END: Final = "end"
#: The RECONCILE message is encoded and checked by ``reconcile_wire``.
RECONCILE: Final = reconcile_wire.TYPE

#: Version of the sync protocol spoken inside the encrypted channel.
VERSION = 1
#: Largest message either side sends or accepts (a DATA batch of up to BATCH_BYTES plus one
#: item of up to MAX_ITEM fits; so does the largest RECONCILE message).
MAX_MESSAGE = 1024 * 1024
#: Most items in one DATA batch.
BATCH_ITEMS = 256
#: A batch closes before the item that would take it past this many payload bytes.
BATCH_BYTES = 256 * 1024
#: Most ids in one WANT message.
MAX_WANT = 16_384
#: Largest window a peer may announce.
MAX_WINDOW = 1024
#: Largest per-session quota a peer may announce.
MAX_QUOTA = 2**32
#: Largest store epoch (an opaque store identity, 16 random bytes recommended).
MAX_EPOCH = 32


@dataclass(frozen=True)
class Cursor:
    """A position in one store's arrival numbering: that store's ``epoch`` and a ``seq``."""

    epoch: bytes
    seq: int


@dataclass(frozen=True)
class Hello:
    epoch: bytes
    high: int
    quota: int
    window: int
    reconcile: bool
    after: Cursor | None


def decode(data: bytes) -> tuple[str | None, Any]:
    """The type of a message (None if it names none) and its decoded value."""
    value = codec.decode(data, max_size=MAX_MESSAGE, what="sync message")
    kind = value.get("t") if isinstance(value, dict) else None
    return (kind if isinstance(kind, str) else None), value


def _encode(kind: str, **fields: Any) -> bytes:
    return codec.encode({"t": kind, **fields})


# --- HELLO -----------------------------------------------------------------------------


def encode_hello(
    local: Cursor, *, quota: int, window: int, reconcile: bool, after: Cursor | None
) -> bytes:
    fields: dict[str, Any] = {
        "v": VERSION,
        "e": local.epoch,
        "h": local.seq,
        "q": quota,
        "w": window,
        "r": reconcile,
    }
    if after is not None:
        fields["a"] = [after.epoch, after.seq]
    return _encode(HELLO, **fields)


def parse_hello(value: Any) -> Hello:
    what = "HELLO"
    m = codec.as_map(value, what, {"t", "v", "e", "h", "q", "w", "r"}, {"a"})
    version = codec.get_int(m, "v", what)
    if version != VERSION:
        raise RemoteProtocolError(f"peer speaks sync version {version}; this node speaks {VERSION}")
    epoch = codec.get_bytes(m, "e", what)
    if len(epoch) > MAX_EPOCH:
        raise RemoteProtocolError(f"HELLO.e is longer than {MAX_EPOCH} bytes")
    reconcile = m["r"]
    if not isinstance(reconcile, bool):
        raise RemoteProtocolError("HELLO.r must be a boolean")
    after = None
    if "a" in m:
        raw = m["a"]
        if reconcile or not isinstance(raw, list) or len(raw) != 2:
            raise RemoteProtocolError("HELLO.a must be [epoch, seq], and only without r")
        pair = {"e": raw[0], "s": raw[1]}
        after_epoch = codec.get_bytes(pair, "e", "HELLO.a")
        if len(after_epoch) > MAX_EPOCH:
            raise RemoteProtocolError(f"HELLO.a epoch is longer than {MAX_EPOCH} bytes")
        after = Cursor(after_epoch, codec.get_int(pair, "s", "HELLO.a"))
    return Hello(
        epoch=epoch,
        high=codec.get_int(m, "h", what),
        quota=codec.get_int(m, "q", what, 0, MAX_QUOTA),
        window=codec.get_int(m, "w", what, 1, MAX_WINDOW),
        reconcile=reconcile,
        after=after,
    )


# --- WANT ------------------------------------------------------------------------------


def encode_want(ids: list[bytes]) -> bytes:
    """One WANT for up to MAX_WANT ascending ids."""
    return _encode(WANT, i=b"".join(ids))


def parse_want(value: Any) -> list[bytes]:
    """The ids a WANT asks for (1..MAX_WANT, strictly ascending)."""
    blob = codec.get_bytes(codec.as_map(value, "WANT", {"t", "i"}), "i", "WANT")
    if not blob or len(blob) % ID_SIZE or len(blob) > MAX_WANT * ID_SIZE:
        raise RemoteProtocolError(f"WANT lists 1..{MAX_WANT} ids of {ID_SIZE} bytes")
    ids = [blob[i : i + ID_SIZE] for i in range(0, len(blob), ID_SIZE)]
    if any(a >= b for a, b in itertools.pairwise(ids)):
        raise RemoteProtocolError("WANT ids are not strictly ascending")
    return ids


# --- DATA ------------------------------------------------------------------------------


def encode_data(n: int, items: list[bytes], through: int | None) -> bytes:
    if through is None:
        return _encode(DATA, n=n, i=items)
    return _encode(DATA, n=n, i=items, s=through)


def parse_data_number(value: Any) -> tuple[dict[str, Any], int]:
    """The checked map of a DATA message and its batch number (checked before the items, so
    a batch out of order is named as such)."""
    m = codec.as_map(value, "DATA", {"t", "n", "i"}, {"s"})
    return m, codec.get_int(m, "n", "DATA")


def parse_data_items(m: dict[str, Any]) -> list[bytes]:
    """The items of a DATA map: 1..BATCH_ITEMS, each 1..MAX_ITEM bytes."""
    items = m["i"]
    if not isinstance(items, list) or not 1 <= len(items) <= BATCH_ITEMS:
        raise RemoteProtocolError(f"DATA carries 1..{BATCH_ITEMS} items")
    for item in items:
        if not isinstance(item, bytes) or not 1 <= len(item) <= MAX_ITEM:
            raise RemoteProtocolError(f"a DATA item is 1..{MAX_ITEM} bytes")
    return items


def parse_seq(m: dict[str, Any], what: str, low: int, high: int) -> int:
    """``s`` of a DATA or END map, which must lie in ``low..high`` (the machine knows which)."""
    return codec.get_int(m, "s", what, low, high)


# --- ACK and END -----------------------------------------------------------------------


def encode_ack(n: int) -> bytes:
    return _encode(ACK, n=n)


def parse_ack(value: Any) -> int:
    m = codec.as_map(value, "ACK", {"t", "n"})
    return codec.get_int(m, "n", "ACK")


def encode_end(through: int | None) -> bytes:
    """END, with the sender's high-water mark when it sent everything it had."""
    return _encode(END) if through is None else _encode(END, s=through)


def parse_end(value: Any) -> dict[str, Any]:
    """The checked map of an END (``s`` is checked against the peer's HELLO by the machine)."""
    return codec.as_map(value, "END", {"t"}, {"s"})
