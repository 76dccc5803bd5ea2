"""HQ's attachment files at rest: sealed under a per-file key kept in the encrypted hq.db.

A seized HQ directory without the passphrase must show no report content (issue 11 item 4),
and photographs, recordings and documents are report content. Each verified attachment is
written as ``media/ENVELOPE/NN.sealed``: a libsodium secretstream (XChaCha20-Poly1305)
header, then the file in ``BLOCK``-byte blocks, each its own authenticated record, the last
one tagged final. The random 32-byte key is stored beside the attachment's row in
``media_attachments.file_key`` (hq.db is SQLCipher under a key sealed with the HQ
passphrase), so without the passphrase the files are noise, and destroying hq.db's key
destroys them too. Reading streams block by block (memory stays bounded for a 1.5 GiB
video) and writes plaintext only where the caller asked: ``hq media --out``, an export.

A flipped, cut, reordered or extended file fails authentication: ``MediaDamaged`` names
the file and nothing of it is kept at the destination.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, BinaryIO, Final

from nacl import bindings
from nacl.exceptions import CryptoError

from fieldsync.errors import InputRefused

KEY_SIZE: Final = bindings.crypto_secretstream_xchacha20poly1305_KEYBYTES
HEADER_SIZE: Final = bindings.crypto_secretstream_xchacha20poly1305_HEADERBYTES
OVERHEAD: Final = bindings.crypto_secretstream_xchacha20poly1305_ABYTES
#: Plaintext bytes per record; every record but the final one holds exactly this many.
BLOCK: Final = 64 * 1024
SUFFIX: Final = ".sealed"
_MESSAGE: Final = bindings.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_FINAL: Final = bindings.crypto_secretstream_xchacha20poly1305_TAG_FINAL


class MediaDamaged(InputRefused):
    """A sealed attachment file does not authenticate under its key (tampered or damaged):
    exit code 3, like any forged data."""


def new_key() -> bytes:
    return secrets.token_bytes(KEY_SIZE)


class SealedWriter:
    """Seal a stream written in pieces of any size into ``sink`` (the caller fsyncs it)."""

    def __init__(self, sink: BinaryIO, key: bytes) -> None:
        self._sink = sink
        self._state = bindings.crypto_secretstream_xchacha20poly1305_state()
        sink.write(bindings.crypto_secretstream_xchacha20poly1305_init_push(self._state, key))
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        self._pending += data
        while len(self._pending) > BLOCK:  # keep the last block back: it may be the final one
            self._push(bytes(self._pending[:BLOCK]), _MESSAGE)
            del self._pending[:BLOCK]

    def finish(self) -> None:
        self._push(bytes(self._pending), _FINAL)
        self._pending.clear()

    def _push(self, block: bytes, tag: int) -> None:
        self._sink.write(
            bindings.crypto_secretstream_xchacha20poly1305_push(self._state, block, tag=tag)
        )


def write_sealed(path: Path, key: bytes, pieces: Iterable[bytes]) -> None:
    """Seal ``pieces`` into a new 0600 file ``path``, fsynced (removed if anything fails)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            writer = SealedWriter(out, key)
            for piece in pieces:
                writer.write(piece)
            writer.finish()
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def read_sealed(path: Path, key: bytes) -> Iterator[bytes]:
    """The plaintext of the sealed file ``path``, block by block; ``MediaDamaged`` as soon
    as a record fails, at a missing final record, or at bytes after it."""

    def damaged(why: str) -> MediaDamaged:
        return MediaDamaged(
            f"{path}: the HQ copy of this attachment is damaged or was tampered with ({why});"
            " it was not used. Ingest the report's bundle again to rebuild it if its chunks"
            " are still held by a node"
        )

    with open(path, "rb") as handle:
        header = handle.read(HEADER_SIZE)
        if len(header) != HEADER_SIZE:
            raise damaged("shorter than its header")
        state = bindings.crypto_secretstream_xchacha20poly1305_state()
        try:
            bindings.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
        except (CryptoError, ValueError):
            raise damaged("its header does not open") from None
        while True:
            record = handle.read(BLOCK + OVERHEAD)
            if not record:
                raise damaged("cut short: its final record is missing")
            try:
                block, tag = bindings.crypto_secretstream_xchacha20poly1305_pull(state, record)
            except (CryptoError, ValueError):
                raise damaged("a record does not authenticate") from None
            if tag == _FINAL:
                if handle.read(1):
                    raise damaged("bytes after its final record")
                if block:
                    yield block
                return
            if len(record) != BLOCK + OVERHEAD:
                raise damaged("a short record before the final one")
            yield block


def copy_out(path: Path, key: bytes | None, sink: IO[bytes]) -> None:
    """Stream the plaintext of HQ's file ``path`` into ``sink`` (the caller removes the
    output if this raises). ``key`` None: a plaintext file of an older HQ not yet sealed
    (``hq_media.seal_plaintext_files``), copied as it is."""
    if key is None:
        with open(path, "rb") as plain:
            while block := plain.read(BLOCK):
                sink.write(block)
        return
    for block in read_sealed(path, key):
        sink.write(block)
