"""Bundle files: items carried on a USB stick (SPEC.md §11).

Nothing is in clear: a bundle is a 16-byte random file nonce followed by chunks, each
exactly ``CHUNK_SIZE + 16`` bytes, sealed with XChaCha20-Poly1305 under a subkey of the
network key (the STREAM construction: nonce = file nonce || chunk index, associated data
marks the final chunk). A seized stick shows only its length; a truncated, reordered or
spliced file is detected; a file from another network does not open.

Plaintext stream: records of ``u32 big-endian length || bytes``. The first record is the
header ``{"n": network id, "v": 1}``; then one record per item; a zero length ends it, and
zeros pad the final chunk.

``BundleWriter`` and ``BundleReader`` are sans-IO: bytes in, bytes or items out.
"""

from __future__ import annotations

import contextlib
import struct
from collections import deque
from collections.abc import Iterator, Sequence

import nacl.bindings as sodium
import nacl.exceptions

from fieldsync_protocol import codec
from fieldsync_protocol.crypto import derive_key
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.membership import NETWORK_ID_SIZE, VERSION
from fieldsync_protocol.padding import MAX_ITEM

CHUNK_SIZE = 64 * 1024
SEALED_CHUNK = CHUNK_SIZE + 16
FILE_NONCE_SIZE = 16
_LENGTH = struct.Struct(">I")
_AD_MORE = b"fieldsync/bundle/1/more"
_AD_FINAL = b"fieldsync/bundle/1/final"
#: Largest header record (the header is about 25 bytes).
MAX_HEADER = 256


def _bundle_key(network_key: bytes) -> bytes:
    return derive_key(network_key, b"bundle-file")


def _nonce(file_nonce: bytes, index: int) -> bytes:
    return file_nonce + index.to_bytes(8, "little")


class BundleWriter:
    """Produce bundle bytes; write whatever ``add`` and ``finish`` return, in order."""

    def __init__(self, network_key: bytes, network_id: bytes, file_nonce: bytes) -> None:
        if len(file_nonce) != FILE_NONCE_SIZE:
            raise LocalProtocolError(f"file nonce must be {FILE_NONCE_SIZE} bytes")
        self._key = _bundle_key(network_key)
        self._file_nonce = file_nonce
        self._index = 0
        self._pending = bytearray()
        self._started = False
        self._finished = False
        self._header = codec.encode({"n": network_id, "v": VERSION})
        self.items_written = 0

    def _record(self, data: bytes) -> bytes:
        self._pending += _LENGTH.pack(len(data)) + data
        out = bytearray()
        if not self._started:
            out += self._file_nonce
            self._started = True
        while len(self._pending) > CHUNK_SIZE:
            out += self._seal(bytes(self._pending[:CHUNK_SIZE]), final=False)
            del self._pending[:CHUNK_SIZE]
        return bytes(out)

    def _seal(self, chunk: bytes, final: bool) -> bytes:
        nonce = _nonce(self._file_nonce, self._index)
        self._index += 1
        ad = _AD_FINAL if final else _AD_MORE
        return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(chunk, ad, nonce, self._key)

    def add(self, item: bytes) -> bytes:
        """Append one item; return the bytes to write now (often none)."""
        if self._finished:
            raise LocalProtocolError("bundle already finished")
        if not 0 < len(item) <= MAX_ITEM:
            raise LocalProtocolError(f"item of {len(item)} bytes cannot go in a bundle")
        out = b"" if self._started else self._record(self._header)
        self.items_written += 1
        return out + self._record(item)

    def finish(self) -> bytes:
        """End the bundle; return the last bytes to write (at least the final chunk)."""
        if self._finished:
            raise LocalProtocolError("bundle already finished")
        out = b"" if self._started else self._record(self._header)
        out += self._record(b"")
        self._finished = True
        last = bytes(self._pending) + bytes(CHUNK_SIZE - len(self._pending))
        self._pending.clear()
        return out + self._seal(last, final=True)


#: Bytes of a bundle ``sealed_by`` needs: the file nonce and the first sealed chunk.
HEAD_SIZE = FILE_NONCE_SIZE + SEALED_CHUNK


def sealed_by(head: bytes, network_keys: Sequence[bytes]) -> bytes | None:
    """Which of ``network_keys`` sealed the bundle whose first ``HEAD_SIZE`` bytes are
    ``head`` (the first whose chunk 0 opens), or None. While a network key rotates
    (SPEC.md §17.5) a member reads bundles sealed under the current or the next key."""
    if len(head) < HEAD_SIZE:
        return None
    nonce = _nonce(head[:FILE_NONCE_SIZE], 0)
    sealed = head[FILE_NONCE_SIZE:HEAD_SIZE]
    for key in network_keys:
        for ad in (_AD_MORE, _AD_FINAL):
            with contextlib.suppress(nacl.exceptions.CryptoError):
                sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                    sealed, ad, nonce, _bundle_key(key)
                )
                return key
    return None


class BundleReader:
    """Feed file bytes with ``receive_data``; iterate ``items()``; call ``end_of_file()``.

    Memory stays bounded by one chunk plus one item whatever the file holds. Raises only
    ``RemoteProtocolError``, with a message a courier can act on.
    """

    def __init__(self, network_key: bytes, network_id: bytes) -> None:
        self._key = _bundle_key(network_key)
        self._network_id = network_id
        self._file_nonce: bytes | None = None
        self._raw = bytearray()
        self._plain = bytearray()
        self._index = 0
        self._header_seen = False
        self._ended = False  # zero-length record seen
        self._final_seen = False
        self._ready: deque[bytes] = deque()
        self.items_read = 0

    def receive_data(self, data: bytes) -> None:
        """Feed the next bytes of the file, in any pieces."""
        if self._final_seen and data:
            raise RemoteProtocolError("bundle has extra bytes after its final chunk (damaged?)")
        self._raw += data
        if self._file_nonce is None:
            if len(self._raw) < FILE_NONCE_SIZE:
                return
            self._file_nonce = bytes(self._raw[:FILE_NONCE_SIZE])
            del self._raw[:FILE_NONCE_SIZE]
        while len(self._raw) >= SEALED_CHUNK and not self._final_seen:
            self._open_chunk(bytes(self._raw[:SEALED_CHUNK]))
            del self._raw[:SEALED_CHUNK]
        if self._final_seen and self._raw:
            raise RemoteProtocolError("bundle has extra bytes after its final chunk (damaged?)")

    def _decrypt(self, sealed: bytes) -> tuple[bytes, bool] | None:
        nonce = _nonce(self._file_nonce or b"", self._index)
        for ad, final in ((_AD_MORE, False), (_AD_FINAL, True)):
            with contextlib.suppress(nacl.exceptions.CryptoError):
                plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                    sealed, ad, nonce, self._key
                )
                return plain, final
        return None

    def _open_chunk(self, sealed: bytes) -> None:
        opened = self._decrypt(sealed)
        if opened is None:
            if self._index == 0:
                raise RemoteProtocolError(
                    "this file is not a bundle of this network (another network's, or damaged)"
                )
            raise RemoteProtocolError(f"bundle chunk {self._index} is damaged or out of order")
        chunk, final = opened
        self._index += 1
        self._final_seen = final
        self._plain += chunk
        self._parse_records()
        if final != self._ended:
            raise RemoteProtocolError("bundle's item stream and its chunks end in different places")

    def _parse_records(self) -> None:
        while not self._ended and len(self._plain) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._plain)
            limit = MAX_ITEM if self._header_seen else MAX_HEADER
            if length > limit:
                raise RemoteProtocolError(
                    f"bundle record of {length} bytes exceeds the {limit} allowed"
                )
            if len(self._plain) < _LENGTH.size + length:
                return
            record = bytes(self._plain[_LENGTH.size : _LENGTH.size + length])
            del self._plain[: _LENGTH.size + length]
            if not self._header_seen:
                self._check_header(record)
            elif length == 0:
                self._ended = True
                if any(self._plain):
                    raise RemoteProtocolError("bundle has data after its end marker (damaged?)")
            else:
                self._ready.append(record)
                self.items_read += 1

    def _check_header(self, record: bytes) -> None:
        what = "bundle header"
        header = codec.as_map(
            codec.decode(record, max_size=MAX_HEADER, what=what), what, {"n", "v"}
        )
        version = codec.get_int(header, "v", what)
        if version != VERSION:
            raise RemoteProtocolError(
                f"bundle format version {version} is not supported (this software reads {VERSION});"
                " upgrade fieldsync"
            )
        if codec.get_bytes(header, "n", what, NETWORK_ID_SIZE) != self._network_id:
            raise RemoteProtocolError("bundle belongs to another network")
        self._header_seen = True

    def items(self) -> Iterator[bytes]:
        """Items whose bytes are complete so far (each still unchecked: parse it)."""
        while self._ready:
            yield self._ready.popleft()

    def end_of_file(self) -> None:
        """Declare the input complete; raise if the bundle was cut short."""
        if not self._final_seen:
            raise RemoteProtocolError(
                "bundle is truncated: it ends before its final chunk"
                " (copy it again from the source)"
            )
