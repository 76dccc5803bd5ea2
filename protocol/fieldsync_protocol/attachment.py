"""Attachments: media carried through untrusted relays as chunk items (SPEC.md §16).

The author's node encrypts a file with a fresh random 32-byte key and a random 16-byte
attachment id (the *key material*), in pieces of ``PIECE`` bytes, with the STREAM
construction of the bundle file (SPEC.md §11): for piece ``i`` of ``n``::

    nonce_i = attachment id || LE64(i)
    ad_i    = "fieldsync/attachment/1" || 0x00 || attachment id || LE64(i) || final flag
    plain_i = piece_i || 0x80 || zeros        (padded to a size class minus the 16-byte tag)
    chunk item = {"c": XChaCha20-Poly1305(key, nonce_i, ad_i, plain_i), "t": "a", "v": 1}

A relay sees only version, kind and a ciphertext of one of the envelope size classes: no
attachment id, index, length or media type. The key material, the chunk item ids in order,
the media type, the original name, the size and the SHA-256 of the original file go inside
the signed, sealed report (the ``attachments`` field of SPEC.md §7), so the author's
signature covers them. HQ verifies every chunk against the signed ids and the AEAD, in
order, and the whole file against the signed SHA-256: a truncated, reordered, duplicated,
flipped or spliced chunk is caught.

``AttachmentWriter`` and ``AttachmentReader`` are sans-IO: bytes in, items or bytes out,
memory bounded by two pieces whatever the file's size.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions

from fieldsync_protocol import codec
from fieldsync_protocol.crypto import content_id
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.membership import VERSION, is_version
from fieldsync_protocol.padding import MAX_CIPHERTEXT, MAX_ITEM, SIZE_CLASSES, pad, unpad

CHUNK_KIND = "a"
KEY_SIZE = 32
ATTACHMENT_ID_SIZE = 16
ID_SIZE = 32
SHA256_SIZE = 32
AEAD_TAG = sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
#: File bytes per chunk: the largest class minus the tag, 63 bytes to spare for the mark.
PIECE = MAX_CIPHERTEXT - AEAD_TAG - 48  # 262,080
#: Most chunk ids one report names (all attachments together): 6,144 × 32 B = 192 KiB of
#: ids, which leaves 64 KiB of the largest envelope for the rest of the report.
MAX_REPORT_CHUNKS = 6144
#: Largest attachment: as many pieces as one report may name (1,610,219,520 B, ~1.5 GiB).
MAX_ATTACHMENT_SIZE = MAX_REPORT_CHUNKS * PIECE
#: Most attachments in one report.
MAX_ATTACHMENTS = 16
#: Longest original file name, in characters.
MAX_NAME = 255
_AD_PREFIX = b"fieldsync/attachment/1\0"
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
#: Characters refused in a name: path separators, NUL and other control characters.
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")


@dataclass(frozen=True)
class AttachmentKey:
    """The secret that opens one attachment: travels only inside the sealed report."""

    key: bytes
    attachment_id: bytes

    def __post_init__(self) -> None:
        if len(self.key) != KEY_SIZE or len(self.attachment_id) != ATTACHMENT_ID_SIZE:
            raise LocalProtocolError(
                f"attachment key is {KEY_SIZE} bytes and its id {ATTACHMENT_ID_SIZE} bytes"
            )


@dataclass(frozen=True)
class Attachment:
    """One entry of a report's ``attachments`` list, typed."""

    name: str
    media_type: str
    size: int
    sha256: bytes
    key: AttachmentKey
    chunk_ids: tuple[bytes, ...]

    def as_body(self) -> dict[str, Any]:
        """The entry as it goes in the report body (SPEC.md §7)."""
        return {
            "attachment_id": self.key.attachment_id,
            "chunks": b"".join(self.chunk_ids),
            "key": self.key.key,
            "media_type": self.media_type,
            "name": self.name,
            "sha256": self.sha256,
            "size": self.size,
        }


def chunk_count(size: int) -> int:
    """How many chunks a file of ``size`` bytes becomes (an empty file is one chunk)."""
    return max(1, -(-size // PIECE))


def check_name(name: Any) -> str:
    """An original file name: text of 1..255 characters, no path, NUL or control character."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise RemoteProtocolError(f"attachment name must be text of 1..{MAX_NAME} characters")
    if _BAD_NAME.search(name) or name in (".", ".."):
        raise RemoteProtocolError(
            f"attachment name {name!r:.60} has a path separator or control character"
        )
    return name


def check_media_type(media_type: Any) -> str:
    """A lowercase media type like ``image/jpeg`` (no parameters)."""
    if not isinstance(media_type, str) or not _MEDIA_TYPE.fullmatch(media_type):
        raise RemoteProtocolError(
            f"attachment media type must be like image/jpeg, got {media_type!r:.60}"
        )
    return media_type


def parse_attachment(entry: Any) -> Attachment:
    """Check one ``attachments`` entry of an untrusted report body; return it typed."""
    what = "attachment"
    fields = codec.as_map(
        entry, what, {"attachment_id", "chunks", "key", "media_type", "name", "sha256", "size"}
    )
    size = codec.get_int(fields, "size", what, 0, MAX_ATTACHMENT_SIZE)
    chunks = codec.get_bytes(fields, "chunks", what)
    if len(chunks) != chunk_count(size) * ID_SIZE:
        raise RemoteProtocolError(
            f"attachment of {size} bytes must name {chunk_count(size)} chunk ids"
            f" ({chunk_count(size) * ID_SIZE} bytes), not {len(chunks)} bytes"
        )
    key = AttachmentKey(
        codec.get_bytes(fields, "key", what, KEY_SIZE),
        codec.get_bytes(fields, "attachment_id", what, ATTACHMENT_ID_SIZE),
    )
    return Attachment(
        name=check_name(fields["name"]),
        media_type=check_media_type(fields["media_type"]),
        size=size,
        sha256=codec.get_bytes(fields, "sha256", what, SHA256_SIZE),
        key=key,
        chunk_ids=tuple(chunks[i : i + ID_SIZE] for i in range(0, len(chunks), ID_SIZE)),
    )


def parse_attachments(value: Any) -> tuple[Attachment, ...]:
    """The whole ``attachments`` list: entries, their count and the report's chunk total."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ATTACHMENTS:
        raise RemoteProtocolError(f"must list 1..{MAX_ATTACHMENTS} attachments")
    parsed = tuple(parse_attachment(entry) for entry in value)
    total = sum(len(a.chunk_ids) for a in parsed)
    if total > MAX_REPORT_CHUNKS:
        raise RemoteProtocolError(
            f"report names {total} attachment chunks; the limit is {MAX_REPORT_CHUNKS}"
            f" (about {MAX_ATTACHMENT_SIZE >> 20} MiB of media per report)"
        )
    return parsed


def _nonce(key: AttachmentKey, index: int) -> bytes:
    return key.attachment_id + index.to_bytes(8, "little")


def _ad(key: AttachmentKey, index: int, final: bool) -> bytes:
    return _AD_PREFIX + key.attachment_id + index.to_bytes(8, "little") + bytes([final])


def seal_chunk(key: AttachmentKey, index: int, piece: bytes, final: bool) -> bytes:
    """Piece ``index`` of an attachment as a chunk item (what relays store and sync)."""
    if len(piece) > PIECE or (not final and len(piece) != PIECE):
        raise LocalProtocolError(f"a chunk holds {PIECE} bytes (the last one at most that)")
    plain = pad(piece, AEAD_TAG, "attachment chunk")
    sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, _ad(key, index, final), _nonce(key, index), key.key
    )
    return codec.encode({"c": sealed, "t": CHUNK_KIND, "v": VERSION})


def parse_chunk(fields: Any) -> bytes:
    """Check a decoded chunk item (what any holder can check); return its ciphertext."""
    codec.as_map(fields, "chunk", {"c", "t", "v"})
    if fields["t"] != CHUNK_KIND or not is_version(fields["v"]):
        raise RemoteProtocolError("chunk item has the wrong type or version")
    ciphertext = codec.get_bytes(fields, "c", "chunk")
    if len(ciphertext) not in SIZE_CLASSES:
        raise RemoteProtocolError(
            f"chunk ciphertext of {len(ciphertext)} bytes is not a size class"
        )
    return ciphertext


def open_chunk(key: AttachmentKey, index: int, final: bool, ciphertext: bytes) -> bytes:
    """Decrypt piece ``index``; any change, move or splice of the ciphertext is refused."""
    try:
        plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, _ad(key, index, final), _nonce(key, index), key.key
        )
    except nacl.exceptions.CryptoError:
        raise RemoteProtocolError(
            f"attachment chunk {index} does not open (damaged, out of order or from another"
            " attachment)"
        ) from None
    piece = unpad(plain, "attachment chunk")
    if len(piece) > PIECE or (not final and len(piece) != PIECE):
        raise RemoteProtocolError(f"attachment chunk {index} holds {len(piece)} bytes")
    return piece


class AttachmentWriter:
    """Feed a file's bytes with ``write``; store every chunk item it returns; ``finish``."""

    def __init__(self, key: AttachmentKey, max_size: int = MAX_ATTACHMENT_SIZE) -> None:
        if not 0 <= max_size <= MAX_ATTACHMENT_SIZE:
            raise LocalProtocolError(f"an attachment may be at most {MAX_ATTACHMENT_SIZE} bytes")
        self._key = key
        self._max_size = max_size
        self._pending = bytearray()
        self._sha256 = hashlib.sha256()
        self._ids: list[bytes] = []
        self._finished = False
        self.size = 0

    def write(self, data: bytes) -> list[bytes]:
        """Take the next bytes of the file; return the chunk items completed by them."""
        if self._finished:
            raise LocalProtocolError("attachment already finished")
        self.size += len(data)
        if self.size > self._max_size:
            raise LocalProtocolError(
                f"attachment is larger than the limit of {self._max_size} bytes"
                f" (about {self._max_size >> 20} MiB)"
            )
        self._sha256.update(data)
        self._pending += data
        out = []
        # Strictly more than a piece pending: the final chunk is never empty unless the file is.
        while len(self._pending) > PIECE:
            out.append(self._seal(bytes(self._pending[:PIECE]), final=False))
            del self._pending[:PIECE]
        return out

    def _seal(self, piece: bytes, final: bool) -> bytes:
        item = seal_chunk(self._key, len(self._ids), piece, final)
        self._ids.append(content_id(item))
        return item

    def finish(self, name: str, media_type: str) -> tuple[bytes, Attachment]:
        """Seal the final chunk; return it and the entry for the report body."""
        if self._finished:
            raise LocalProtocolError("attachment already finished")
        try:
            check_name(name)
            check_media_type(media_type)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(str(exc)) from None
        last = self._seal(bytes(self._pending), final=True)
        self._pending.clear()
        self._finished = True
        entry = Attachment(
            name=name,
            media_type=media_type,
            size=self.size,
            sha256=self._sha256.digest(),
            key=self._key,
            chunk_ids=tuple(self._ids),
        )
        return last, entry


class AttachmentReader:
    """Verify and decrypt one attachment's chunk items, in order, against its signed entry.

    ``add`` returns each piece of the original file; ``finish`` checks the whole file against
    the signed size and SHA-256. Raises only ``RemoteProtocolError``. A caller must not keep
    the pieces of an attachment whose ``finish`` has not succeeded.
    """

    def __init__(self, entry: Attachment) -> None:
        self._entry = entry
        self._sha256 = hashlib.sha256()
        self.chunks_read = 0
        self.size = 0

    @property
    def next_id(self) -> bytes | None:
        """The item id of the chunk expected next, or None when all have been read."""
        ids = self._entry.chunk_ids
        return ids[self.chunks_read] if self.chunks_read < len(ids) else None

    def add(self, item: bytes) -> bytes:
        """Check the next chunk item (id, structure, AEAD); return its piece of the file."""
        expected = self.next_id
        index = self.chunks_read
        if expected is None:
            raise RemoteProtocolError("attachment has more chunks than its report names")
        if content_id(item) != expected:
            raise RemoteProtocolError(f"attachment chunk {index} is not the one the report names")
        ciphertext = parse_chunk(codec.decode(item, max_size=MAX_ITEM, what="chunk"))
        final = index == len(self._entry.chunk_ids) - 1
        piece = open_chunk(self._entry.key, index, final, ciphertext)
        self._sha256.update(piece)
        self.size += len(piece)
        self.chunks_read += 1
        return piece

    def finish(self) -> None:
        """Raise unless every chunk arrived and the file matches the signed size and hash."""
        missing = len(self._entry.chunk_ids) - self.chunks_read
        if missing:
            raise RemoteProtocolError(f"attachment is incomplete: {missing} chunk(s) missing")
        if self.size != self._entry.size:
            raise RemoteProtocolError(
                f"attachment is {self.size} bytes, but its report signed {self._entry.size}"
            )
        if self._sha256.digest() != self._entry.sha256:
            raise RemoteProtocolError(
                "attachment's SHA-256 differs from the one its author signed (tampered?)"
            )
