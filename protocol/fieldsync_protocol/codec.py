"""Canonical MessagePack: the one encoding of every signed or hashed structure.

Canonical means one value has exactly one byte string (SPEC.md §2):

* maps have ``str`` keys, sorted by their UTF-8 bytes, without duplicates;
* integers use the shortest MessagePack form (msgpack-python already does this);
* floats are always float64 and finite; strings are UTF-8 ``str``, binary is ``bin``;
* no ext types (so no msgpack timestamps), nesting at most ``MAX_DEPTH`` deep.

Decoding is size-capped *before* any allocation (no declared length may exceed the bytes
actually present) and then checked by re-encoding: the decoded value must encode back to
exactly the input. One walk refuses what re-encoding alone cannot see (non-``str`` or
unsorted map keys, non-finite floats, deep nesting); the comparison then refuses duplicate
keys (the dict kept one), non-minimal integers and float32.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError

#: Largest encoded value the decoder accepts at all; callers pass smaller caps.
MAX_ENCODED = 4 * 1024 * 1024
#: Deepest nesting of arrays/maps (Briar's BDF reader uses 5; our report body needs 4).
MAX_DEPTH = 8
#: Most elements in one array or map.
MAX_CONTAINER = 65_536

Value = Any


def _sort_key(key: str) -> bytes:
    return key.encode("utf-8")


def _canonicalise(value: Value, depth: int) -> Value:
    """Return ``value`` with map keys in canonical order; refuse non-canonical types.

    ``depth`` is the nesting level of ``value`` itself: the top-level container is at 0, so
    containers may sit at levels ``0 .. MAX_DEPTH - 1``, exactly what ``decode`` accepts.
    """
    kind = type(value)
    if kind is bytes or kind is str or kind is int or kind is bool or value is None:
        return value  # the common leaves, by exact type: the hot path of every item check
    if isinstance(value, dict | list | tuple) and depth >= MAX_DEPTH:
        raise LocalProtocolError(f"value nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise LocalProtocolError(f"map key {key!r:.40} is not a str")
        return {k: _canonicalise(value[k], depth + 1) for k in sorted(value, key=_sort_key)}
    if isinstance(value, list | tuple):
        return [_canonicalise(v, depth + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise LocalProtocolError(f"float {value!r} is not finite")
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    raise LocalProtocolError(f"type {type(value).__name__} cannot be encoded canonically")


def encode(value: Value) -> bytes:
    """Encode ``value`` canonically. Raises ``LocalProtocolError`` for unencodable input."""
    try:
        return msgpack.packb(_canonicalise(value, 0), use_bin_type=True)  # type: ignore[no-any-return]
    except OverflowError as exc:
        raise LocalProtocolError(f"integer out of the 64-bit range: {exc}") from exc
    except UnicodeEncodeError as exc:
        # A lone surrogate (json.loads makes one from "\\ud800") has no UTF-8 form.
        raise LocalProtocolError(f"text is not valid Unicode: {exc.reason}") from exc


class _ExtType(Exception):
    """Raised from inside the unpacker; ``decode`` turns it into a RemoteProtocolError."""


def _refuse_ext(code: int, data: bytes) -> Value:
    raise _ExtType(code)


_LEAVES = (bytes, str, int, bool, type(None))


def _decoded_problem(value: Value) -> str | None:
    """Why a freshly decoded ``value`` cannot be canonical, or None: nesting deeper than
    ``MAX_DEPTH``, a map key that is not a ``str``, map keys out of order, a float that is
    not finite. One iterative walk (never recursion on untrusted input).

    With these ruled out, re-encoding the value as it is (maps in wire order) gives the
    canonical encoding, so ``decode`` compares the input with a plain ``msgpack.packb`` and
    needs no sorted copy. Decoded text is valid UTF-8, so code point order is UTF-8 byte
    order and keys compare as ``str``.
    """
    stack: list[tuple[Value, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is dict:
            if depth >= MAX_DEPTH:
                return "depth"
            previous = None
            for key, child in item.items():
                if type(key) is not str:
                    return f"map key {key!r:.40} is not a str"
                if previous is not None and key <= previous:
                    return "order"
                previous = key
                if type(child) not in _LEAVES:
                    stack.append((child, depth + 1))
        elif kind is list:
            if depth >= MAX_DEPTH:
                return "depth"
            stack.extend((child, depth + 1) for child in item if type(child) not in _LEAVES)
        elif kind is float and not math.isfinite(item):
            return f"float {item!r} is not finite"
    return None


def decode(data: bytes, *, max_size: int = MAX_ENCODED, what: str = "value") -> Value:
    """Decode canonical MessagePack from untrusted ``data``.

    Raises only ``RemoteProtocolError``; the message names ``what`` was being decoded.
    """
    if len(data) > max_size:
        raise RemoteProtocolError(f"{what} is {len(data)} bytes, more than the {max_size} allowed")
    # Every element takes at least one byte (a map entry two), so no declared length may
    # exceed the input: a 5-byte array32 header claiming 2**32 elements allocates nothing.
    size = len(data)
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=min(MAX_CONTAINER, size),
            max_map_len=min(MAX_CONTAINER, size // 2),
            max_ext_len=0,
        )
    except _ExtType as exc:
        message = f"{what} is not valid msgpack: ext type {exc} is refused"
        raise RemoteProtocolError(message) from None
    except (ValueError, msgpack.UnpackException, RecursionError) as exc:
        # ValueError covers FormatError, StackError, ExtraData, bad UTF-8 and the caps.
        raise RemoteProtocolError(f"{what} is not valid msgpack: {type(exc).__name__}") from exc
    problem = _decoded_problem(value)
    if problem == "depth":
        raise RemoteProtocolError(f"{what} nests deeper than {MAX_DEPTH} levels")
    if problem == "order":
        raise RemoteProtocolError(f"{what} is not canonical msgpack (unsorted map keys)")
    if problem is not None:
        raise RemoteProtocolError(f"{what} is not canonical: {problem}")
    if msgpack.packb(value, use_bin_type=True) != data:
        raise RemoteProtocolError(
            f"{what} is not canonical msgpack (duplicate or unsorted keys, or a long form)"
        )
    return value


# --- typed field access for decoded maps -------------------------------------------------
# Decoded values are ``Any``; these helpers turn a missing or mistyped field into a
# RemoteProtocolError that names the field, instead of a KeyError or TypeError.


def as_map(
    value: Value, what: str, keys: set[str], optional: set[str] | None = None
) -> dict[str, Value]:
    """Check ``value`` is a map with exactly the required ``keys`` plus any ``optional``."""
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"{what} must be a map")
    present = set(value)
    missing = keys - present
    if missing:
        raise RemoteProtocolError(f"{what} lacks field(s) {', '.join(sorted(missing))}")
    unknown = present - keys - (optional or set())
    if unknown:
        raise RemoteProtocolError(f"{what} has unknown field(s) {', '.join(sorted(unknown))}")
    return value


def get_bytes(m: dict[str, Value], key: str, what: str, size: int | None = None) -> bytes:
    """``m[key]`` as bytes (of exactly ``size`` bytes when given)."""
    value = m[key]
    if not isinstance(value, bytes):
        raise RemoteProtocolError(f"{what}.{key} must be bytes")
    if size is not None and len(value) != size:
        raise RemoteProtocolError(f"{what}.{key} must be {size} bytes, not {len(value)}")
    return value


def get_int(m: dict[str, Value], key: str, what: str, low: int = 0, high: int = 2**63 - 1) -> int:
    """``m[key]`` as an integer in ``low..high`` (a bool is not an integer here)."""
    value = m[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise RemoteProtocolError(f"{what}.{key} must be an integer")
    if not low <= value <= high:
        raise RemoteProtocolError(f"{what}.{key} = {value} is outside {low}..{high}")
    return value


def get_str(m: dict[str, Value], key: str, what: str, max_len: int = 256) -> str:
    """``m[key]`` as a string of at most ``max_len`` characters."""
    value = m[key]
    if not isinstance(value, str):
        raise RemoteProtocolError(f"{what}.{key} must be a string")
    if len(value) > max_len:
        raise RemoteProtocolError(f"{what}.{key} is longer than {max_len} characters")
    return value
