"""Bundle files (SPEC.md §11): sealed chunks; truncation, reordering and splicing are caught."""

from __future__ import annotations

import itertools
import random
import struct

import nacl.bindings as sodium
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync_protocol import codec, crypto
from fieldsync_protocol.bundle import (
    CHUNK_SIZE,
    FILE_NONCE_SIZE,
    MAX_HEADER,
    SEALED_CHUNK,
    BundleReader,
    BundleWriter,
)
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.items import MAX_ITEM
from tests.protocol.protocol_support import DETERMINISTIC, make_net, seed

NET = make_net("bundle")
OTHER = make_net("bundle-other")
NONCE = bytes(range(16))
HEADER = codec.encode({"n": NET.network_id, "v": 1})


def write(items: list[bytes], nonce: bytes = NONCE, net_id: bytes = NET.network_id) -> bytes:
    writer = BundleWriter(NET.network_key, net_id, nonce)
    out = b"".join(writer.add(item) for item in items) + writer.finish()
    assert writer.items_written == len(items)
    return out


def read(data: bytes, cuts: list[int] | None = None, key: bytes = NET.network_key) -> list[bytes]:
    """Feed ``data`` split at ``cuts``; collect items as they complete; declare end of file."""
    reader = BundleReader(key, NET.network_id)
    items: list[bytes] = []
    points = [0, *sorted(cuts or []), len(data)]
    for start, end in itertools.pairwise(points):
        reader.receive_data(data[start:end])
        items.extend(reader.items())
    reader.end_of_file()
    assert reader.items_read == len(items)
    return items


def chunks_of(data: bytes) -> list[bytes]:
    body = data[FILE_NONCE_SIZE:]
    return [body[i : i + SEALED_CHUNK] for i in range(0, len(body), SEALED_CHUNK)]


def raw_bundle(stream: bytes, final_at: int | None = None, nonce: bytes = NONCE) -> bytes:
    """Seal an arbitrary plaintext ``stream`` (zero-padded to whole chunks) like a writer.

    Written from SPEC.md §11, not from the module: this checks the construction itself.
    """
    key = crypto.derive_key(NET.network_key, b"bundle-file")
    stream += bytes(-len(stream) % CHUNK_SIZE or (0 if stream else CHUNK_SIZE))
    count = len(stream) // CHUNK_SIZE
    final_index = count - 1 if final_at is None else final_at
    out = nonce
    for index in range(count):
        ad = b"fieldsync/bundle/1/final" if index == final_index else b"fieldsync/bundle/1/more"
        chunk = stream[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE]
        nonce24 = nonce + index.to_bytes(8, "little")
        out += sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(chunk, ad, nonce24, key)
    return out


def records(*parts: bytes, end: bool = True) -> bytes:
    out = b"".join(struct.pack(">I", len(p)) + p for p in parts)
    return out + (b"\0\0\0\0" if end else b"")


def refuse(data: bytes, message: str, key: bytes = NET.network_key) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        read(data, key=key)


# --- round trips -------------------------------------------------------------------------

item_bytes = st.one_of(
    st.binary(min_size=1, max_size=2000),
    st.integers(1, MAX_ITEM).map(lambda n: bytes([n % 251]) * n),
)


@settings(
    DETERMINISTIC,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(item_bytes, max_size=6), st.data())
def test_round_trip_with_random_chunkings(items: list[bytes], data: st.DataObject) -> None:
    file = write(items)
    assert (len(file) - FILE_NONCE_SIZE) % SEALED_CHUNK == 0
    cuts = data.draw(st.lists(st.integers(0, len(file)), max_size=12))
    assert read(file, cuts) == items


def test_reconstruction_by_the_spec_matches_the_writer() -> None:
    items = [b"one", b"two" * 1000]
    assert write(items) == raw_bundle(records(HEADER, *items))


def test_empty_bundle() -> None:
    file = write([])
    assert len(file) == FILE_NONCE_SIZE + SEALED_CHUNK
    assert read(file) == []


@pytest.mark.parametrize("slack", range(10))
def test_end_marker_near_a_chunk_boundary(slack: int) -> None:
    """The end marker may straddle chunks; it only ever completes in the final chunk."""
    length = CHUNK_SIZE - slack - 8 - len(HEADER)
    items = [bytes([7]) * length]
    file = write(items)
    assert read(file) == items
    assert read(file, [FILE_NONCE_SIZE + SEALED_CHUNK]) == items


def test_items_in_order_across_many_chunks() -> None:
    rng = random.Random(1)
    items = [rng.randbytes(rng.randrange(1, 40_000)) for _ in range(30)]
    file = write(items)
    assert len(chunks_of(file)) > 5
    assert read(file, list(range(0, len(file), 4099))) == items


def test_writer_emits_chunks_as_they_fill() -> None:
    writer = BundleWriter(NET.network_key, NET.network_id, NONCE)
    first = writer.add(b"x")
    assert first == NONCE  # nothing sealed yet: less than one chunk of plaintext
    second = writer.add(bytes(CHUNK_SIZE))
    assert len(second) == SEALED_CHUNK
    assert len(writer.finish()) == SEALED_CHUNK


# --- damage ------------------------------------------------------------------------------

FILE = write([bytes([i]) * 50_000 for i in range(4)])  # four chunks


def test_truncated_at_every_chunk_boundary_and_at_random_points() -> None:
    rng = random.Random(2)
    boundaries = [FILE_NONCE_SIZE + i * SEALED_CHUNK for i in range(len(chunks_of(FILE)))]
    points = [0, 1, FILE_NONCE_SIZE - 1, *boundaries, len(FILE) - 1]
    points += [rng.randrange(len(FILE)) for _ in range(60)]
    for point in points:
        with pytest.raises(RemoteProtocolError, match="truncated"):
            read(FILE[:point])


def test_extra_bytes_after_the_final_chunk() -> None:
    refuse(FILE + b"\0", "extra bytes after its final chunk")
    refuse(FILE + chunks_of(FILE)[-1], "extra bytes after its final chunk")
    reader = BundleReader(NET.network_key, NET.network_id)
    reader.receive_data(FILE)
    reader.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="extra bytes after its final chunk"):
        reader.receive_data(b"x")


def test_reordered_dropped_and_duplicated_chunks() -> None:
    c = chunks_of(FILE)
    refuse(NONCE + c[0] + c[2] + c[1] + c[3], "chunk 1 is damaged or out of order")
    refuse(NONCE + c[1] + c[0] + c[2] + c[3], "not a bundle of this network")
    refuse(NONCE + c[0] + c[2] + c[3], "chunk 1 is damaged or out of order")
    refuse(NONCE + c[0] + c[1] + c[1] + c[2] + c[3], "chunk 2 is damaged or out of order")
    refuse(NONCE + c[0] + c[1] + c[3], "chunk 2 is damaged or out of order")


def test_chunk_spliced_from_another_bundle() -> None:
    other = chunks_of(write([bytes([i]) * 50_000 for i in range(4)], nonce=seed("n")[:16]))
    c = chunks_of(FILE)
    refuse(NONCE + c[0] + other[1] + c[2] + c[3], "chunk 1 is damaged or out of order")
    # Same items, same network, another file nonce: every chunk differs.
    assert all(a != b for a, b in zip(c, other, strict=True))


def test_flipped_bit_anywhere_in_a_chunk() -> None:
    rng = random.Random(3)
    for _ in range(40):
        position = rng.randrange(FILE_NONCE_SIZE, len(FILE))
        damaged = bytearray(FILE)
        damaged[position] ^= 1 << rng.randrange(8)
        with pytest.raises(RemoteProtocolError, match=r"damaged|not a bundle"):
            read(bytes(damaged))


def test_damaged_file_nonce() -> None:
    refuse(bytes([FILE[0] ^ 1]) + FILE[1:], "not a bundle of this network")


def test_wrong_network_key() -> None:
    refuse(FILE, "not a bundle of this network", key=OTHER.network_key)


def test_wrong_network_id_in_header() -> None:
    refuse(write([b"x"], net_id=OTHER.network_id), "bundle belongs to another network")


def test_random_files() -> None:
    rng = random.Random(4)
    for length in (16 + SEALED_CHUNK, 16 + 3 * SEALED_CHUNK, 16 + SEALED_CHUNK + 5):
        refuse(rng.randbytes(length), "not a bundle of this network")
    for length in (0, 10, 16, 100, 16 + SEALED_CHUNK - 1):
        refuse(rng.randbytes(length), "truncated")


# --- hostile plaintext (only a member could make these) ----------------------------------


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (records(codec.encode({"n": NET.network_id, "v": 2})), "format version 2 is not supported"),
        (
            records(codec.encode({"n": NET.network_id, "v": True})),
            "bundle header.v must be an integer",
        ),
        (records(codec.encode({"n": NET.network_id})), "bundle header lacks field"),
        (records(codec.encode({"n": NET.network_id, "v": 1, "x": 0})), "bundle header has unknown"),
        (records(codec.encode({"n": bytes(15), "v": 1})), "bundle header.n must be 16 bytes"),
        (records(codec.encode([1])), "bundle header must be a map"),
        (records(b""), "bundle header is not valid msgpack"),
        (records(b"\0" * (MAX_HEADER + 1)), "record of 257 bytes exceeds the 256 allowed"),
        (struct.pack(">I", 2**32 - 1), "exceeds the 256 allowed"),
        (
            records(HEADER, end=False) + struct.pack(">I", MAX_ITEM + 1),
            "exceeds the 262208 allowed",
        ),
        (records(HEADER, b"item") + b"\x01", "data after its end marker"),
        (
            records(HEADER, b"item", end=False) + struct.pack(">I", 200_000) + b"cut",
            "end in different",
        ),
        (b"", "bundle header is not valid msgpack"),
    ],
)
def test_hostile_streams(stream: bytes, message: str) -> None:
    refuse(raw_bundle(stream), message)


def test_end_marker_in_a_non_final_chunk() -> None:
    stream = records(HEADER, b"item")
    stream += bytes(-len(stream) % CHUNK_SIZE) + bytes(CHUNK_SIZE)
    refuse(raw_bundle(stream), "end in different places")


def test_final_chunk_before_the_last() -> None:
    stream = records(HEADER, bytes(CHUNK_SIZE), end=True)
    refuse(raw_bundle(stream, final_at=0), "end in different places")


def test_hostile_stream_helper_accepts_a_good_stream() -> None:
    assert read(raw_bundle(records(HEADER, b"a", b"bc"))) == [b"a", b"bc"]


# --- the writer's own misuse -------------------------------------------------------------


def test_writer_local_errors() -> None:
    with pytest.raises(LocalProtocolError, match="file nonce must be 16 bytes"):
        BundleWriter(NET.network_key, NET.network_id, bytes(24))
    writer = BundleWriter(NET.network_key, NET.network_id, NONCE)
    with pytest.raises(LocalProtocolError, match="cannot go in a bundle"):
        writer.add(b"")
    with pytest.raises(LocalProtocolError, match="cannot go in a bundle"):
        writer.add(bytes(MAX_ITEM + 1))
    writer.add(bytes(MAX_ITEM))
    writer.finish()
    with pytest.raises(LocalProtocolError, match="already finished"):
        writer.add(b"x")
    with pytest.raises(LocalProtocolError, match="already finished"):
        writer.finish()
