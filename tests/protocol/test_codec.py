"""Canonical MessagePack (SPEC.md §2): one value, one byte string; hostile input refused cheaply."""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync_protocol import codec
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from tests.protocol.protocol_support import DETERMINISTIC

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


def depth(value: Any) -> int:
    """Container nesting levels (a scalar has 0)."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def nested(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


# --- round trips -------------------------------------------------------------------------


@DETERMINISTIC
@given(values)
def test_round_trip(value: Any) -> None:
    if depth(value) > codec.MAX_DEPTH:
        with pytest.raises(LocalProtocolError, match="nests deeper"):
            codec.encode(value)
        return
    data = codec.encode(value)
    decoded = codec.decode(data)
    assert codec.encode(decoded) == data
    assert decoded == value


@DETERMINISTIC
@given(st.dictionaries(st.text(max_size=6), st.integers(0, 9), min_size=2, max_size=8))
def test_map_keys_are_sorted_by_utf8_bytes(value: dict[str, int]) -> None:
    decoded = codec.decode(codec.encode(value))
    keys = list(decoded)
    assert keys == sorted(keys, key=lambda k: k.encode("utf-8"))


@pytest.mark.parametrize(
    ("value", "hex_bytes"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "cc80"),
        (256, "cd0100"),
        (65536, "ce00010000"),
        (2**32, "cf0000000100000000"),
        (2**64 - 1, "cfffffffffffffffff"),
        (-1, "ff"),
        (-32, "e0"),
        (-33, "d0df"),
        (-129, "d1ff7f"),
        (-(2**63), "d38000000000000000"),
        (1.5, "cb3ff8000000000000"),
        (True, "c3"),
        (None, "c0"),
        ("", "a0"),
        ("a" * 32, "d920" + "61" * 32),
        (b"", "c400"),
        ((1, 2), "920102"),
        ({"b": 1, "a": 2, "é": 3, "Z": 4}, "84a15a04a16102a16201a2c3a903"),
    ],
)
def test_known_encodings(value: Any, hex_bytes: str) -> None:
    assert codec.encode(value).hex() == hex_bytes
    assert codec.encode(codec.decode(bytes.fromhex(hex_bytes))).hex() == hex_bytes


def test_depth_limit_is_the_same_both_ways() -> None:
    ok = nested(codec.MAX_DEPTH)
    assert codec.decode(codec.encode(ok)) == ok
    assert codec.encode({"a": nested(codec.MAX_DEPTH - 1)})
    with pytest.raises(LocalProtocolError, match="nests deeper"):
        codec.encode(nested(codec.MAX_DEPTH + 1))
    with pytest.raises(LocalProtocolError, match="nests deeper"):
        codec.encode({"a": nested(codec.MAX_DEPTH)})


# --- encoder refusals (local bugs) -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1: "x"}, "is not a str"),
        ({b"k": "x"}, "is not a str"),
        ({"a": {None: 1}}, "is not a str"),
        ({1, 2}, "cannot be encoded"),
        (bytearray(b"x"), "cannot be encoded"),
        (object(), "cannot be encoded"),
        (2**64, "64-bit range"),
        (-(2**63) - 1, "64-bit range"),
        (math.nan, "not finite"),
        ([math.inf], "not finite"),
        (-math.inf, "not finite"),
        ("\ud800", "not valid Unicode"),
        ({"\udfff": 1, "a": 2}, "not valid Unicode"),
    ],
)
def test_encode_refuses(value: Any, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        codec.encode(value)


# --- decoder refusals (remote input) -----------------------------------------------------

NON_CANONICAL = {
    "duplicate key": "82a16101a16102",
    "unsorted keys": "82a16201a16102",
    "unsorted keys (code points)": "82a2c3a901a17a02",
    "uint8 for a fixint": "cc05",
    "uint16 for a uint8": "cd00ff",
    "uint32 for a uint16": "ce0000ffff",
    "uint64 for a uint32": "cf00000000ffffffff",
    "int8 for a positive fixint": "d005",
    "int8 for a negative fixint": "d0e0",
    "int16 for an int8": "d1ff80",
    "int32 for an int16": "d2ffff8000",
    "int64 for an int32": "d3ffffffff80000000",
    "float32": "ca3f800000",
    "str8 for a fixstr": "d90161",
    "str16 for a str8": "da000161",
    "bin16 for a bin8": "c5000161",
    "array16 for a fixarray": "dc000101",
    "map16 for a fixmap": "de0001a16101",
    "NaN": "cb7ff8000000000000",
    "infinity": "cb7ff0000000000000",
    "bytes map key": "81c4016101",
    "nil map key": "81c001",
    "int map key": "810102",
    "array map key": "819001",
    "bad UTF-8": "a2c328",
    "lone surrogate in UTF-8": "a3eda080",
    "ext8 of length 0": "c70005",
    "fixext1": "d40100",
    "timestamp32": "d6ff00000000",
    "timestamp ext8 of length 0": "c700ff",
    "reserved byte 0xc1": "c1",
    "trailing bytes": "0101",
    "truncated str": "a3616263"[:-2],
    "truncated array": "9301",
    "empty input": "",
    "nine levels": "91" * 8 + "90",
}


@pytest.mark.parametrize("hex_bytes", NON_CANONICAL.values(), ids=NON_CANONICAL.keys())
def test_decode_refuses(hex_bytes: str) -> None:
    with pytest.raises(RemoteProtocolError, match=r"^thing (is not|nests)"):
        codec.decode(bytes.fromhex(hex_bytes), what="thing")


def test_ext_hook_refusal_names_the_type() -> None:
    with pytest.raises(RemoteProtocolError, match="ext type 5 is refused"):
        codec.decode(bytes.fromhex("c70005"))


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="not valid msgpack: StackError"):
        codec.decode(b"\x91" * 100_000 + b"\x90")
    with pytest.raises(RemoteProtocolError, match="nests deeper"):
        codec.decode(b"\x91" * 50 + b"\x90")
    with pytest.raises(RemoteProtocolError, match="nests deeper"):
        codec.decode(b"\x81\xa1a" * 9 + b"\xc0")


def test_size_cap_comes_first() -> None:
    with pytest.raises(RemoteProtocolError, match="is 11 bytes, more than the 10 allowed"):
        codec.decode(codec.encode("x" * 10), max_size=10)
    assert codec.decode(codec.encode("x" * 9), max_size=10) == "x" * 9


def peak_while_refusing(data: bytes) -> int:
    """Peak traced memory while ``data`` is refused; the refusal must also be quick.

    The time bound is three orders of magnitude above the real cost (microseconds), so a
    loaded machine cannot trip it, while touching the declared gigabytes would.
    """
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        started = time.perf_counter()
        with pytest.raises(RemoteProtocolError):
            codec.decode(data)
        assert time.perf_counter() - started < 1.0
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "header",
    [
        "ddffffffff",  # array32 of 4 billion elements
        "dfffffffff",  # map32 of 4 billion entries
        "c6ffffffff",  # bin32 of 4 GiB
        "dbffffffff",  # str32 of 4 GiB
        "dd00010000",  # array32 of 65536: more than the input holds
        "df00008000",  # map32 of 32768 entries: more than the input holds
    ],
)
@pytest.mark.parametrize("tail", [0, 1000, 50_000])
def test_declared_huge_lengths_allocate_nothing(header: str, tail: int) -> None:
    assert peak_while_refusing(bytes.fromhex(header) + bytes(tail)) <= 1024 * 1024


def test_nested_declared_lengths_stay_bounded() -> None:
    """Each level may pre-allocate one pointer per input byte, capped at MAX_CONTAINER."""
    data = bytes.fromhex("dcffff" * codec.MAX_DEPTH) + bytes(200_000)
    bound = codec.MAX_DEPTH * codec.MAX_CONTAINER * 8 + 1024 * 1024
    assert peak_while_refusing(data) <= bound


@settings(DETERMINISTIC, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_remote_protocol_error(data: bytes) -> None:
    try:
        value = codec.decode(data)
    except RemoteProtocolError:
        return
    assert codec.encode(value) == data


@settings(DETERMINISTIC, max_examples=300)
@given(values, st.data())
def test_mutated_encodings_raise_only_remote_protocol_error(
    value: Any, data: st.DataObject
) -> None:
    if depth(value) > codec.MAX_DEPTH:
        return
    encoded = bytearray(codec.encode(value))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    mutated = bytes(encoded[:cut]) + data.draw(st.binary(max_size=4))
    try:
        decoded = codec.decode(mutated)
    except RemoteProtocolError:
        return
    assert codec.encode(decoded) == mutated


# --- typed field access ----------------------------------------------------------------


def test_as_map() -> None:
    assert codec.as_map({"a": 1, "b": 2}, "m", {"a"}, {"b"}) == {"a": 1, "b": 2}
    assert codec.as_map({"a": 1}, "m", {"a"}, {"b"}) == {"a": 1}
    with pytest.raises(RemoteProtocolError, match="m must be a map"):
        codec.as_map([1], "m", {"a"})
    with pytest.raises(RemoteProtocolError, match="m lacks field"):
        codec.as_map({"b": 1}, "m", {"a", "b"})
    with pytest.raises(RemoteProtocolError, match="m has unknown field"):
        codec.as_map({"a": 1, "c": 2}, "m", {"a"})


def test_typed_getters() -> None:
    m = {"b": b"xy", "i": 5, "t": True, "s": "hey", "n": None}
    assert codec.get_bytes(m, "b", "m") == b"xy"
    assert codec.get_bytes(m, "b", "m", 2) == b"xy"
    assert codec.get_int(m, "i", "m") == 5
    assert codec.get_int(m, "i", "m", 5, 5) == 5
    assert codec.get_str(m, "s", "m") == "hey"
    assert codec.get_str(m, "s", "m", 3) == "hey"
    refusals: list[tuple[Callable[[], object], str]] = [
        (lambda: codec.get_bytes(m, "s", "m"), "m.s must be bytes"),
        (lambda: codec.get_bytes(m, "b", "m", 3), "m.b must be 3 bytes, not 2"),
        (lambda: codec.get_int(m, "t", "m"), "m.t must be an integer"),
        (lambda: codec.get_int(m, "s", "m"), "m.s must be an integer"),
        (lambda: codec.get_int(m, "i", "m", 6), r"m.i = 5 is outside 6\.\."),
        (lambda: codec.get_int(m, "i", "m", 0, 4), r"m.i = 5 is outside 0\.\.4"),
        (lambda: codec.get_str(m, "n", "m"), "m.n must be a string"),
        (lambda: codec.get_str(m, "s", "m", 2), "longer than 2 characters"),
    ]
    for call, message in refusals:
        with pytest.raises(RemoteProtocolError, match=message):
            call()
