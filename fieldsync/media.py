"""The author's side of attachments (SPEC.md §16): stream a file into chunk items.

A file is read in blocks of ``READ_BLOCK`` bytes, hashed and encrypted piece by piece
(``AttachmentWriter``) and every chunk item is committed to the store as it is made, so
memory stays bounded whatever the file's size and no plaintext is ever written anywhere.

Chunks are stored as relayed items (``own = 0``) while the file streams, and become the
author's own (``own = 1``, never evicted before their receipt) in the one transaction that
records the report naming them. A crash or a refused report leaves only ciphertext that no
report names, which expires like any relayed item; a chunk evicted before the report
commits makes the report fail, never a report with an attachment that cannot arrive.

The node keeps, per own attachment, in the report's entry of the author's sealed outbox
(fieldsync.outbox), its size and chunk delivery tags (for "chunks receipted / total") and
its original name, itself sealed to the author's own key: a seized device shows nothing of
them without the author's passphrase.
"""

from __future__ import annotations

import mimetypes
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions

from fieldsync.errors import InputRefused, NotFound
from fieldsync.outbox import OutboxKeys, OwnAttachment
from fieldsync.store import ImportCounts, Store
from fieldsync_protocol.attachment import (
    MAX_ATTACHMENT_SIZE,
    Attachment,
    AttachmentKey,
    AttachmentWriter,
)
from fieldsync_protocol.crypto import content_id
from fieldsync_protocol.errors import LocalProtocolError

#: Bytes read from the file at a time (a few chunks: bounded memory, few transactions).
READ_BLOCK = 1024 * 1024
FALLBACK_MEDIA_TYPE = "application/octet-stream"


Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class AttachmentStatus:
    ordinal: int
    size: int
    chunks: int
    receipted: int
    name: str


@dataclass(frozen=True)
class PreparedAttachment:
    entry: Attachment
    chunk_ids: tuple[bytes, ...]


def media_type_of(path: Path) -> str:
    guessed, encoding = mimetypes.guess_type(path.name, strict=False)
    return guessed.lower() if guessed and encoding is None else FALLBACK_MEDIA_TYPE


class AttachmentStream:
    """One attachment written block by block (a file, or an upload read in pieces): every
    chunk item is committed to ``store`` as it is made, so nothing plaintext is kept.

    Call ``write`` on the thread that owns ``store``; ``finish`` seals the last chunk and
    returns the entry for the report. ``max_size`` bounds what one writer accepts.
    """

    def __init__(self, store: Store, now: int, max_size: int = MAX_ATTACHMENT_SIZE) -> None:
        self._store = store
        self._now = now
        self._writer = AttachmentWriter(
            AttachmentKey(secrets.token_bytes(32), secrets.token_bytes(16)), max_size
        )
        self._stored: list[bytes] = []  # ids of the chunks committed so far

    @property
    def size(self) -> int:
        return self._writer.size

    def write(self, block: bytes) -> None:
        items = self._writer.write(block)
        _store_chunks(self._store, items, self._now)
        self._stored.extend(content_id(item) for item in items)

    def finish(self, name: str, media_type: str) -> PreparedAttachment:
        last, entry = self._writer.finish(name, media_type)
        _store_chunks(self._store, [last], self._now)
        self._stored.append(content_id(last))
        return PreparedAttachment(entry, entry.chunk_ids)

    def discard(self) -> None:
        """Remove the chunks stored so far (an upload that broke off or was refused)."""
        with self._store.transaction():
            self._store.db.conn.executemany(
                "DELETE FROM items WHERE id = ? AND own = 0", [(i,) for i in self._stored]
            )
        self._stored.clear()


def encrypt_file(
    store: Store, path: Path, now: int, progress: Progress | None = None
) -> PreparedAttachment:
    """Stream ``path`` into chunk items committed to ``store``; return the report entry."""
    stream = AttachmentStream(store, now)
    try:
        total = path.stat().st_size
        with open(path, "rb") as source:
            while block := source.read(READ_BLOCK):
                stream.write(block)
                if progress:
                    progress(stream.size, total)
        return stream.finish(path.name, media_type_of(path))
    except FileNotFoundError:
        raise NotFound(f"attachment {path} does not exist") from None
    except IsADirectoryError:
        raise InputRefused(f"attachment {path} is a directory; attach files one by one") from None
    except PermissionError:
        raise InputRefused(f"attachment {path} cannot be read (permission denied)") from None
    except LocalProtocolError as exc:
        raise InputRefused(f"attachment {path}: {exc}") from exc


def _store_chunks(store: Store, items: Sequence[bytes], now: int) -> None:
    # Here, not at the top: ``report list`` imports this module for ``attachment_status``
    # and parses no item (issue 13 item 6).
    from fieldsync_protocol.items import Checked, parse_item

    if not items:
        return
    counts = ImportCounts()
    with store.transaction():
        for data in items:
            store.add_checked(Checked(parse_item(data)), counts, now)


def seal_name(name: str, author_public: bytes) -> bytes:
    """The original name sealed to the author's own key (ed25519 -> X25519)."""
    box_public = sodium.crypto_sign_ed25519_pk_to_curve25519(author_public)
    return sodium.crypto_box_seal(name.encode(), box_public)


def open_name(sealed: bytes, keys: OutboxKeys) -> str:
    try:
        return sodium.crypto_box_seal_open(sealed, keys.public, keys.secret).decode()
    except (nacl.exceptions.CryptoError, UnicodeDecodeError):
        return "(sealed to another author key)"


def claim_for_report(
    conn: sqlite3.Connection,
    prepared: Sequence[PreparedAttachment],
    author_public: bytes,
) -> list[OwnAttachment]:
    """Inside the report's transaction, after its envelope is stored: make its chunks the
    author's own, number them after the envelope; return what the outbox entry keeps."""
    claimed = []
    for attachment in prepared:
        rows = [(chunk_id,) for chunk_id in attachment.chunk_ids]
        marked = conn.executemany("UPDATE items SET own = 1 WHERE id = ?", rows).rowcount
        if marked != len(rows):
            raise InputRefused(
                f"attachment {attachment.entry.name!r}: {len(rows) - marked} of its chunks were"
                " removed while it was being stored (disk budget too small?); nothing was"
                " recorded, raise storage.disk_budget_mb or free space and add the report again"
            )
        _renumber_after_envelope(conn, attachment.chunk_ids)
        tags = tuple(
            conn.execute("SELECT tag FROM items WHERE id = ?", row).fetchone()[0] for row in rows
        )
        claimed.append(
            OwnAttachment(
                attachment.entry.size, seal_name(attachment.entry.name, author_public), tags
            )
        )
    return claimed


def _renumber_after_envelope(conn: sqlite3.Connection, chunk_ids: Sequence[bytes]) -> None:
    """Give the chunks arrival numbers after their report's envelope, in chunk order.

    They were stored while the file streamed, before the envelope existed; sync sends in
    arrival order (SPEC.md §13, §16.7), so renumbering makes the report's text travel before
    its media. Numbers only grow, so a peer's cursor never skips them (it may get them twice).
    """
    high = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()[0]
    conn.executemany(
        "UPDATE items SET seq = ? WHERE id = ?",
        [(high + offset, chunk_id) for offset, chunk_id in enumerate(chunk_ids, start=1)],
    )
    conn.execute(
        "UPDATE sqlite_sequence SET seq = ? WHERE name = 'items'", (high + len(chunk_ids),)
    )


def attachment_status(
    store: Store, attachments: Sequence[OwnAttachment], keys: OutboxKeys
) -> list[AttachmentStatus]:
    """Each attachment of one own report (from its opened outbox entry): size, chunks
    receipted of total, and its name."""
    return [
        AttachmentStatus(
            ordinal=ordinal,
            size=attachment.size,
            chunks=len(attachment.chunk_tags),
            receipted=len(store.receipted(list(attachment.chunk_tags))),
            name=open_name(attachment.name_sealed, keys),
        )
        for ordinal, attachment in enumerate(attachments)
    ]


def discard_chunks(store: Store, prepared: Sequence[PreparedAttachment]) -> None:
    """Remove the chunks of a report that was refused (they hold only ciphertext)."""
    with store.transaction():
        for attachment in prepared:
            store.db.conn.executemany(
                "DELETE FROM items WHERE id = ? AND own = 0",
                [(chunk_id,) for chunk_id in attachment.chunk_ids],
            )
