"""Attachments (SPEC.md §16): chunk items, STREAM sealing, the signed entry and HQ's checks."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import nacl.bindings as sodium
import pytest

from fieldsync_protocol import attachment, codec
from fieldsync_protocol.attachment import (
    MAX_ATTACHMENT_SIZE,
    MAX_ATTACHMENTS,
    MAX_REPORT_CHUNKS,
    PIECE,
    Attachment,
    AttachmentKey,
    AttachmentReader,
    AttachmentWriter,
    chunk_count,
    open_chunk,
    parse_attachment,
    parse_attachments,
    parse_chunk,
    seal_chunk,
)
from fieldsync_protocol.crypto import content_id
from fieldsync_protocol.envelope import SIZE_CLASSES, open_report
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.items import MAX_ITEM, ItemKind, check_item, parse_item
from fieldsync_protocol.report import validate_report
from tests.protocol.protocol_support import make_net, minimal_body, seed

NET = make_net("attachment")


def key(label: str) -> AttachmentKey:
    return AttachmentKey(seed(f"key-{label}"), seed(f"id-{label}")[:16])


def file_bytes(size: int, label: str = "file") -> bytes:
    rng = random.Random(label)
    return rng.randbytes(size)


def encrypt(
    data: bytes, label: str = "a", step: int = 100_003, name: str = "photo.jpg"
) -> tuple[list[bytes], Attachment]:
    """Feed ``data`` in uneven pieces, as a node reading a file would."""
    writer = AttachmentWriter(key(label))
    items: list[bytes] = []
    for start in range(0, len(data), step):
        items += writer.write(data[start : start + step])
    last, entry = writer.finish(name, "image/jpeg")
    return [*items, last], entry


def decrypt(items: list[bytes], entry: Attachment) -> bytes:
    reader = AttachmentReader(entry)
    out = b"".join(reader.add(item) for item in items)
    reader.finish()
    return out


@pytest.mark.parametrize("size", [0, 1, PIECE - 1, PIECE, PIECE + 1, 2 * PIECE + 5])
def test_round_trip_at_piece_boundaries(size: int) -> None:
    data = file_bytes(size)
    items, entry = encrypt(data)
    assert len(items) == chunk_count(size) == len(entry.chunk_ids)
    assert entry.chunk_ids == tuple(content_id(item) for item in items)
    assert entry.size == size
    assert entry.sha256 == hashlib.sha256(data).digest()
    assert decrypt(items, entry) == data
    assert parse_attachment(entry.as_body()) == entry


def test_chunk_items_show_only_kind_version_and_a_size_class() -> None:
    items, _ = encrypt(file_bytes(2 * PIECE + 700))
    for item in items:
        assert len(item) <= MAX_ITEM
        fields = codec.decode(item)
        assert set(fields) == {"c", "t", "v"}
        assert fields["t"] == "a"
        assert fields["v"] == 1
        assert len(fields["c"]) in SIZE_CLASSES
        parsed = parse_item(item)
        assert parsed.kind is ItemKind.CHUNK
        checked = check_item(item, NET.manifest)
        assert (checked.envelope, checked.receipt, checked.manifest) == (None, None, None)
    # Full chunks are all of the largest class; only the last one's class depends on the size.
    assert [len(codec.decode(i)["c"]) for i in items] == [SIZE_CLASSES[-1]] * 2 + [1024]


def test_the_same_file_twice_gives_unlinkable_chunks() -> None:
    data = file_bytes(PIECE + 10)
    first, _ = encrypt(data, label="one")
    second, _ = encrypt(data, label="two")
    assert not {content_id(i) for i in first} & {content_id(i) for i in second}


def chunk_ciphertexts(items: list[bytes]) -> list[bytes]:
    return [parse_chunk(codec.decode(item)) for item in items]


def test_every_sampled_byte_flip_of_a_chunk_is_refused() -> None:
    items, entry = encrypt(file_bytes(PIECE + 3000))
    ciphertexts = chunk_ciphertexts(items)
    rng = random.Random(5)
    for index, ciphertext in enumerate(ciphertexts):
        final = index == len(ciphertexts) - 1
        positions = {0, len(ciphertext) - 1, *rng.sample(range(len(ciphertext)), 200)}
        for position in positions:
            damaged = bytearray(ciphertext)
            damaged[position] ^= 1 << rng.randrange(8)
            with pytest.raises(RemoteProtocolError, match="does not open"):
                open_chunk(entry.key, index, final, bytes(damaged))
    # At HQ a flipped chunk is also not the item the report names.
    flipped = bytearray(items[0])
    flipped[-40] ^= 1
    with pytest.raises(RemoteProtocolError, match="chunk 0 is not the one the report names"):
        AttachmentReader(entry).add(bytes(flipped))


def test_reordered_duplicated_dropped_truncated_and_spliced_chunks_are_refused() -> None:
    items, entry = encrypt(file_bytes(3 * PIECE + 9))
    sealed = chunk_ciphertexts(items)
    k = entry.key
    with pytest.raises(RemoteProtocolError, match="chunk 0 does not open"):
        open_chunk(k, 0, False, sealed[1])  # reordered
    with pytest.raises(RemoteProtocolError, match="chunk 1 does not open"):
        open_chunk(k, 1, False, sealed[0])  # duplicated in place of the next
    with pytest.raises(RemoteProtocolError, match="chunk 2 does not open"):
        open_chunk(k, 2, True, sealed[2])  # truncated: a middle chunk presented as the last
    with pytest.raises(RemoteProtocolError, match="chunk 2 does not open"):
        open_chunk(k, 2, False, sealed[3])  # dropped: the last one moved up
    other_items, _ = encrypt(file_bytes(3 * PIECE + 9, "other"), label="b")
    with pytest.raises(RemoteProtocolError, match="chunk 1 does not open"):
        open_chunk(k, 1, False, chunk_ciphertexts(other_items)[1])  # spliced
    # The same attacks at HQ's reader, which also checks every id against the signed list.
    for attack in ([items[1]], [items[0], items[0]], [items[0], other_items[1]]):
        reader = AttachmentReader(entry)
        with pytest.raises(RemoteProtocolError, match="is not the one the report names"):
            for item in attack:
                reader.add(item)
    reader = AttachmentReader(entry)
    for item in items[:3]:
        reader.add(item)
    with pytest.raises(RemoteProtocolError, match="incomplete: 1 chunk"):
        reader.finish()
    reader.add(items[3])
    assert reader.next_id is None
    with pytest.raises(RemoteProtocolError, match="more chunks than its report names"):
        reader.add(items[3])


def replace_entry(entry: Attachment, **changes: Any) -> Attachment:
    values = {**entry.__dict__, **changes}
    return Attachment(**values)


def test_a_signed_hash_or_size_that_does_not_match_the_file_is_refused() -> None:
    items, entry = encrypt(file_bytes(PIECE + 100))
    with pytest.raises(RemoteProtocolError, match="SHA-256 differs"):
        decrypt(items, replace_entry(entry, sha256=bytes(32)))
    with pytest.raises(RemoteProtocolError, match="signed 262200"):
        decrypt(items, replace_entry(entry, size=PIECE + 120))


def raw_chunk(k: AttachmentKey, index: int, final: bool, plain: bytes) -> bytes:
    return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain,
        attachment._ad(k, index, final),
        attachment._nonce(k, index),
        k.key,
    )


def test_a_badly_formed_plaintext_is_refused_even_under_the_right_key() -> None:
    k = key("raw")
    with pytest.raises(RemoteProtocolError, match="padding is malformed"):
        open_chunk(k, 0, True, raw_chunk(k, 0, True, bytes(496)))
    with pytest.raises(RemoteProtocolError, match="chunk 0 holds 5 bytes"):
        open_chunk(k, 0, False, raw_chunk(k, 0, False, bytes(5) + b"\x80" + bytes(490)))
    too_long = bytes(PIECE + 1) + b"\x80" + bytes(SIZE_CLASSES[-1] - 16 - PIECE - 2)
    with pytest.raises(RemoteProtocolError, match="holds 262081 bytes"):
        open_chunk(k, 0, True, raw_chunk(k, 0, True, too_long))


def test_local_misuse_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="attachment key is 32 bytes"):
        AttachmentKey(bytes(31), bytes(16))
    with pytest.raises(LocalProtocolError, match="attachment key is 32 bytes"):
        AttachmentKey(bytes(32), bytes(15))
    with pytest.raises(LocalProtocolError, match="at most"):
        AttachmentWriter(key("x"), max_size=MAX_ATTACHMENT_SIZE + 1)
    with pytest.raises(LocalProtocolError, match="a chunk holds"):
        seal_chunk(key("x"), 0, bytes(10), final=False)
    with pytest.raises(LocalProtocolError, match="a chunk holds"):
        seal_chunk(key("x"), 0, bytes(PIECE + 1), final=True)
    writer = AttachmentWriter(key("x"), max_size=1000)
    writer.write(bytes(1000))
    with pytest.raises(LocalProtocolError, match="larger than the limit of 1000 bytes"):
        writer.write(b"x")
    writer = AttachmentWriter(key("x"))
    with pytest.raises(LocalProtocolError, match="path separator"):
        writer.finish("../etc/passwd", "text/plain")
    with pytest.raises(LocalProtocolError, match="media type"):
        writer.finish("notes.txt", "Text/Plain; charset=utf-8")
    writer.finish("notes.txt", "text/plain")
    with pytest.raises(LocalProtocolError, match="already finished"):
        writer.write(b"x")
    with pytest.raises(LocalProtocolError, match="already finished"):
        writer.finish("notes.txt", "text/plain")


def body_entry(**changes: Any) -> dict[str, Any]:
    _, entry = encrypt(file_bytes(600), step=600)
    return {**entry.as_body(), **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": ""}, "name must be text of 1..255"),
        ({"name": "x" * 256}, "name must be text of 1..255"),
        ({"name": 7}, "name must be text"),
        ({"name": "a/b.jpg"}, "path separator"),
        ({"name": "a\\b.jpg"}, "path separator"),
        ({"name": "a\0b.jpg"}, "path separator"),
        ({"name": "a\nb.jpg"}, "control character"),
        ({"name": ".."}, "path separator"),
        ({"media_type": "jpeg"}, "media type must be like image/jpeg"),
        ({"media_type": 5}, "media type must be like image/jpeg"),
        ({"size": -1}, "attachment.size = -1 is outside"),
        ({"size": MAX_ATTACHMENT_SIZE + 1}, "is outside"),
        ({"size": PIECE + 1}, "must name 2 chunk ids"),
        ({"chunks": bytes(31)}, "must name 1 chunk ids"),
        ({"sha256": bytes(31)}, "attachment.sha256 must be 32 bytes"),
        ({"key": bytes(16)}, "attachment.key must be 32 bytes"),
        ({"attachment_id": bytes(32)}, "attachment.attachment_id must be 16 bytes"),
        ({"extra": 1}, "attachment has unknown field"),
    ],
)
def test_attachment_entry_refusals(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        parse_attachment(body_entry(**changes))
    body = minimal_body(attachments=[body_entry(**changes)])
    with pytest.raises(RemoteProtocolError, match="report field attachments: "):
        validate_report(body)


def test_names_keep_their_own_script() -> None:
    for name in ("شهادة.ogg", "IMG 0001 (1).HEIC", "témoin.mp4", ".hidden"):
        assert parse_attachment(body_entry(name=name)).name == name


def test_attachment_list_limits() -> None:
    entry = body_entry()
    assert len(parse_attachments([entry] * MAX_ATTACHMENTS)) == MAX_ATTACHMENTS
    for value in ([], [entry] * (MAX_ATTACHMENTS + 1), entry, None):
        with pytest.raises(RemoteProtocolError, match=r"must list 1\.\.16 attachments"):
            parse_attachments(value)
    big = body_entry(size=MAX_ATTACHMENT_SIZE, chunks=bytes(32 * MAX_REPORT_CHUNKS))
    assert parse_attachments([big])[0].size == MAX_ATTACHMENT_SIZE
    with pytest.raises(RemoteProtocolError, match="names 6145 attachment chunks"):
        parse_attachments([big, entry])


def test_parse_chunk_refuses_other_kinds_and_versions() -> None:
    for fields in ({"c": bytes(512), "t": "e", "v": 1}, {"c": bytes(512), "t": "a", "v": True}):
        with pytest.raises(RemoteProtocolError, match="wrong type or version"):
            parse_chunk(fields)


def test_a_report_with_the_largest_attachment_list_still_fits_an_envelope() -> None:
    """The cap on chunk ids keeps the signed report inside the largest size class."""
    big = body_entry(size=MAX_ATTACHMENT_SIZE, chunks=bytes(32 * MAX_REPORT_CHUNKS), name="n" * 255)
    body = minimal_body("x" * 20_000, attachments=[big])
    sealed = NET.seal(seed("big-eph"), body=body)
    checked = check_item(sealed.item, NET.manifest)
    assert checked.envelope is not None
    opened = open_report(checked.envelope, NET.network_id, NET.hq_secrets, NET.authors)
    assert parse_attachments(opened.body["attachments"])[0].chunk_ids[0] == bytes(32)


def test_unknown_kinds_are_carried_unchanged() -> None:
    future = codec.encode({"t": "zz", "v": 3, "x": [1, 2, {"y": b"\x00" * 100}]})
    item = parse_item(future)
    assert item.kind is ItemKind.OPAQUE
    assert item.data == future
    assert item.fields["t"] == "zz"
    checked = check_item(future, NET.manifest)
    assert checked.item.data == future
    assert (checked.envelope, checked.receipt, checked.manifest) == (None, None, None)
    # The marker value of OPAQUE itself is just another unknown kind on the wire.
    assert parse_item(codec.encode({"t": "?", "v": 1})).kind is ItemKind.OPAQUE
    with pytest.raises(RemoteProtocolError, match="more than the"):
        parse_item(codec.encode({"t": "zz", "v": 1, "x": bytes(MAX_ITEM)}))
