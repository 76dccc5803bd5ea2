"""HQ's side of attachments (SPEC.md §16.4): hold chunks, assemble, verify, extract.

Kept apart from ``fieldsync.hq``; ``hq.py`` calls in at a few points only:

* ``store_chunk`` for every chunk item an ingest meets (inside the ingest transaction, under
  the chunk's own savepoint);
* ``record_attachments`` when a report is accepted (inside the envelope's savepoint);
* ``pending`` when an ingest starts, and ``assemble_ready`` once it (or a quarantine
  re-ingest) has committed: a failed attachment raises an ``attachment`` alert, and one
  still missing chunks that was already pending when the ingest started an ``attachment
  incomplete`` alert (resolved once it verifies; ``fieldsync.hq_alerts``);
* ``unreceipted_chunks`` / ``mark_receipted`` when receipts are issued, so every holder
  deletes the chunks HQ holds.

Chunks are kept (ciphertext) in ``media_chunks`` until an accepted report names them. An
attachment is **pending k/n** until all n of its chunks are held; then it is reassembled
streaming, chunk by chunk, into a private temporary file (0600 in a 0700 directory), every
chunk checked against the signed id list and its AEAD and the whole file against the
signed size and SHA-256. Only a file that verifies is renamed into place; anything else is
deleted and raises an alert naming the report. HQ never keeps a byte it could not verify.

Files are sealed at rest (``fieldsync.hq_media_seal``): written encrypted as they are
reassembled, under a random key kept in the attachment's row of the encrypted hq.db, so no
plaintext of an attachment ever reaches HQ's disk; ``extract`` and the exports decrypt on
the fly into the user's chosen output. ``seal_plaintext_files`` seals the plaintext files
of an older HQ the first time the passphrase opens it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from fieldsync import cipher_db, hq_alerts, hq_media_seal
from fieldsync.errors import InputRefused, NotFound
from fieldsync.hq_schema import MEDIA_SCHEMA
from fieldsync.node import utc_text
from fieldsync.sqlite_tx import immediate_transaction
from fieldsync.store import now_seconds
from fieldsync_protocol import codec
from fieldsync_protocol.attachment import Attachment, AttachmentReader, parse_attachments
from fieldsync_protocol.envelope import OpenedReport
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.items import Item

log = logging.getLogger(__name__)

MEDIA_DIR = "media"
_PARTIAL = ".partial"


@dataclass(frozen=True)
class MediaStatus:
    report_id: str
    envelope_id: str
    ordinal: int
    name: str
    media_type: str
    size: int
    sha256: str
    chunks: int
    held: int
    status: str
    path: str | None
    detail: str | None
    file_key: bytes | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "report_id": self.report_id,
            "name": self.name,
            "media_type": self.media_type,
            "size": self.size,
            "sha256": self.sha256,
            "chunks": self.chunks,
            "held": self.held,
            "status": self.status
            if self.status != "pending"
            else f"pending {self.held}/{self.chunks}",
            "path": self.path,
            "detail": self.detail,
        }


def public_body(body: dict[str, Any]) -> dict[str, Any]:
    """A report body for the analyst database and exports: each attachment as what it is
    (name, media type, size, SHA-256 in hex), never its key or chunk ids."""
    entries = body.get("attachments")
    if not entries:
        return body
    return {
        **body,
        "attachments": [
            {
                "name": a.name,
                "media_type": a.media_type,
                "size": a.size,
                "sha256": a.sha256.hex(),
            }
            for a in parse_attachments(entries)
        ],
    }


def ensure_schema(db: sqlite_utils.Database) -> None:
    for statement in MEDIA_SCHEMA:
        db.conn.execute(statement)


def store_chunk(db: sqlite_utils.Database, item: Item) -> bool:
    """Hold one chunk item durably (caller's transaction); False if it was already held."""
    return (
        db.conn.execute(
            "INSERT OR IGNORE INTO media_chunks (chunk_id, tag, data, first_seen)"
            " VALUES (?, ?, ?, ?)",
            (item.id, item.tag, item.data, now_seconds()),
        ).rowcount
        == 1
    )


def record_attachments(db: sqlite_utils.Database, opened: OpenedReport, envelope_id: str) -> int:
    """Register an accepted report's attachments as pending (caller's transaction)."""
    entries = opened.body.get("attachments") or []
    for ordinal, (raw, attachment) in enumerate(
        zip(entries, parse_attachments(entries) if entries else (), strict=True)
    ):
        db.conn.execute(
            "INSERT OR IGNORE INTO media_attachments (envelope_id, ordinal, report_id, name,"
            " media_type, size, sha256, entry, chunks, status)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
            (
                envelope_id,
                ordinal,
                opened.body["id"],
                attachment.name,
                attachment.media_type,
                attachment.size,
                attachment.sha256.hex(),
                codec.encode(raw),
                len(attachment.chunk_ids),
            ),
        )
    return len(entries)


def _entry(blob: bytes) -> Attachment:
    return parse_attachments([codec.decode(blob)])[0]


def _held(db: sqlite_utils.Database, chunk_ids: tuple[bytes, ...]) -> int:
    held = 0
    for start in range(0, len(chunk_ids), 500):
        batch = chunk_ids[start : start + 500]
        marks = ",".join("?" * len(batch))
        held += db.conn.execute(
            f"SELECT count(*) FROM media_chunks WHERE data IS NOT NULL AND chunk_id IN ({marks})",  # noqa: S608
            batch,
        ).fetchone()[0]
    return held


def statuses(db: sqlite_utils.Database, report_prefix: str | None = None) -> list[MediaStatus]:
    """Every attachment HQ knows of (of the reports whose id starts with ``report_prefix``)."""
    ensure_schema(db)
    rows = db.conn.execute(
        "SELECT report_id, envelope_id, ordinal, name, media_type, size, sha256, entry, chunks,"
        " status, path, detail, file_key FROM media_attachments WHERE report_id LIKE ? || '%'"
        " ORDER BY report_id, ordinal",
        (report_prefix or "",),
    ).fetchall()
    out = []
    for row in rows:
        status = row[9]
        held = row[8] if status == "verified" else _held(db, _entry(row[7]).chunk_ids)
        out.append(
            MediaStatus(
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                row[5],
                row[6],
                row[8],
                held,
                status,
                row[10],
                row[11],
                row[12],
            )
        )
    return out


def pending(db: sqlite_utils.Database) -> set[tuple[str, int]]:
    """(envelope id, ordinal) of every attachment still pending."""
    return {
        (str(envelope_id), int(ordinal))
        for envelope_id, ordinal in db.conn.execute(
            "SELECT envelope_id, ordinal FROM media_attachments WHERE status = 'pending'"
        )
    }


def assemble_ready(
    directory: Path, db: sqlite_utils.Database, pending_before: set[tuple[str, int]]
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Assemble and verify every pending attachment whose chunks are all held.

    One that HQ cannot write (a full disk) stays pending and is tried again next time.
    Returns the counts and the alerts that need attention now: attachments that failed,
    and those in ``pending_before`` (pending when the ingest started) still incomplete.
    """
    counts = {"verified": 0, "failed": 0, "pending": 0}
    alerts: list[dict[str, Any]] = []
    waiting = db.conn.execute(
        "SELECT envelope_id, ordinal, report_id, entry FROM media_attachments"
        " WHERE status = 'pending'"
    ).fetchall()
    for envelope_id, ordinal, report_id, blob in waiting:
        entry = _entry(blob)
        held = _held(db, entry.chunk_ids)
        if held < len(entry.chunk_ids):
            counts["pending"] += 1
            if (envelope_id, ordinal) in pending_before:
                alerts += _incomplete(db, envelope_id, ordinal, report_id, entry, held)
            continue
        try:
            ok, alert = _assemble(directory, db, envelope_id, ordinal, report_id, entry)
        except OSError as exc:
            log.warning("media: report %s attachment %d not assembled: %s", report_id, ordinal, exc)
            counts["pending"] += 1
            continue
        counts["verified" if ok else "failed"] += 1
        alerts += [alert] if alert is not None else []
    return counts, alerts


def _incomplete(
    db: sqlite_utils.Database,
    envelope_id: str,
    ordinal: int,
    report_id: str,
    entry: Attachment,
    held: int,
) -> list[dict[str, Any]]:
    """Still missing chunks after a later ingest: alerted once (then seen again quietly)."""
    detail = (
        f"report {report_id}: attachment {ordinal + 1} ({entry.name!r}) is incomplete:"
        f" {held}/{len(entry.chunk_ids)} chunks held after a later ingest"
    )
    with immediate_transaction(db.conn):
        alert = hq_alerts.raise_alert(
            db,
            _event(db, hq_alerts.ATTACHMENT_INCOMPLETE, envelope_id, ordinal, detail),
            utc_text(now_seconds()),
            reopen=False,
        )
    return [alert] if alert is not None else []


def _event(
    db: sqlite_utils.Database, kind: str, envelope_id: str, ordinal: int, detail: str
) -> hq_alerts.Event:
    row = db.conn.execute(
        "SELECT author_key, sequence FROM envelopes WHERE envelope_id = ?", (envelope_id,)
    ).fetchone()
    author_key, sequence = (row[0], row[1]) if row is not None else (None, None)
    return hq_alerts.Event(
        kind,
        f"{envelope_id}:{ordinal}",
        detail,
        author_key=author_key,
        sequence=sequence,
        envelope_id=envelope_id,
    )


def _media_root(directory: Path) -> Path:
    root = directory / MEDIA_DIR
    root.mkdir(mode=0o700, exist_ok=True)
    os.chmod(root, 0o700)
    return root


def _pieces(db: sqlite_utils.Database, reader: AttachmentReader) -> Iterator[bytes]:
    while (chunk_id := reader.next_id) is not None:
        row = db.conn.execute(
            "SELECT data FROM media_chunks WHERE chunk_id = ?", (chunk_id,)
        ).fetchone()
        if row is None or row[0] is None:
            raise RemoteProtocolError(f"attachment chunk {reader.chunks_read} is missing")
        yield reader.add(row[0])


def _assemble(
    directory: Path,
    db: sqlite_utils.Database,
    envelope_id: str,
    ordinal: int,
    report_id: str,
    entry: Attachment,
) -> tuple[bool, dict[str, Any] | None]:
    report_dir = _media_root(directory) / envelope_id
    report_dir.mkdir(mode=0o700, exist_ok=True)
    # No author file name on HQ's disk either: the name is in hq.db.
    final = report_dir / f"{ordinal + 1:02d}{hq_media_seal.SUFFIX}"
    partial = report_dir / f"{_PARTIAL}-{ordinal}"
    reader = AttachmentReader(entry)
    file_key = hq_media_seal.new_key()

    def verified_pieces() -> Iterator[bytes]:
        yield from _pieces(db, reader)
        reader.finish()  # size and SHA-256, before the final record is sealed

    try:
        hq_media_seal.write_sealed(partial, file_key, verified_pieces())
    except RemoteProtocolError as exc:
        return False, _fail(db, envelope_id, ordinal, report_id, entry.name, str(exc))
    partial.replace(final)
    with immediate_transaction(db.conn):
        db.conn.execute(
            "UPDATE media_attachments SET status = 'verified', path = ?, file_key = ?,"
            " detail = NULL WHERE envelope_id = ? AND ordinal = ?",
            (str(final.relative_to(directory)), file_key, envelope_id, ordinal),
        )
        # The verified file is the record now; the ciphertext is no longer needed.
        db.conn.executemany(
            "UPDATE media_chunks SET data = NULL WHERE chunk_id = ?",
            [(chunk_id,) for chunk_id in entry.chunk_ids],
        )
        hq_alerts.resolve(
            db, hq_alerts.ATTACHMENT_INCOMPLETE, f"{envelope_id}:{ordinal}", utc_text(now_seconds())
        )
    return True, None


def _fail(
    db: sqlite_utils.Database,
    envelope_id: str,
    ordinal: int,
    report_id: str,
    name: str,
    reason: str,
) -> dict[str, Any] | None:
    detail = (
        f"report {report_id}: attachment {ordinal + 1} ({name!r}) failed verification: {reason}"
    )
    now = utc_text(now_seconds())
    with immediate_transaction(db.conn):
        db.conn.execute(
            "UPDATE media_attachments SET status = 'failed', detail = ?"
            " WHERE envelope_id = ? AND ordinal = ?",
            (detail, envelope_id, ordinal),
        )
        key = f"{envelope_id}:{ordinal}"
        hq_alerts.resolve(db, hq_alerts.ATTACHMENT_INCOMPLETE, key, now)
        return hq_alerts.raise_alert(
            db, _event(db, hq_alerts.ATTACHMENT, envelope_id, ordinal, detail), now
        )


def unreceipted_chunks(db: sqlite_utils.Database, limit: int) -> list[tuple[bytes, bytes]]:
    """(chunk id, delivery tag) of up to ``limit`` held chunks no receipt names yet."""
    return db.conn.execute(
        "SELECT chunk_id, tag FROM media_chunks WHERE receipt_serial IS NULL ORDER BY rowid"
        " LIMIT ?",
        (limit,),
    ).fetchall()


def mark_receipted(db: sqlite_utils.Database, serial: int, chunk_ids: list[bytes]) -> None:
    db.conn.executemany(
        "UPDATE media_chunks SET receipt_serial = ? WHERE chunk_id = ?",
        [(serial, chunk_id) for chunk_id in chunk_ids],
    )


def extract(
    directory: Path, db: sqlite_utils.Database, report_prefix: str, out: Path
) -> list[Path]:
    """Copy one report's verified files to ``out``; refuse while any is not verified."""
    found = statuses(db, report_prefix)
    reports = {s.report_id for s in found}
    if not found:
        raise NotFound(f"no report with attachments matches {report_prefix!r}")
    if len(reports) > 1:
        raise NotFound(f"{report_prefix!r} matches {len(reports)} reports; give more of the id")
    unverified = [s for s in found if s.status != "verified"]
    if unverified:
        raise InputRefused(
            "; ".join(
                s.detail
                or f"report {s.report_id}: attachment {s.ordinal + 1} ({s.name!r}) is incomplete:"
                f" pending {s.held}/{s.chunks} chunks"
                for s in unverified
            )
            + " — nothing extracted for this report"
        )
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in found:
        target = out / f"{s.ordinal + 1:02d}-{s.name}"
        decrypt_to(directory, str(s.path), s.file_key, target)
        written.append(target)
    return written


def decrypt_to(directory: Path, path: str, file_key: bytes | None, target: Path) -> None:
    """Write the plaintext of HQ's file ``path`` (relative to ``directory``) to ``target``,
    created 0600; on ``MediaDamaged`` nothing is left at ``target``.

    ``file_key`` None: a plaintext file of an older HQ (not yet sealed), copied as is."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as sink:
            hq_media_seal.copy_out(directory / path, file_key, sink)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _hashed_blocks(path: Path, digest: Any) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while block := handle.read(hq_media_seal.BLOCK):
            digest.update(block)
            yield block


def seal_plaintext_files(directory: Path, db: sqlite_utils.Database) -> int:
    """Seal every verified attachment still in plaintext (an HQ from before sealing).

    Order, so that a crash loses nothing: the sealed copy is written and fsynced under a
    name of this process's own, then, under hq.db's write lock, moved into place with its
    key and path recorded (unless another process sealed it first: ours is dropped), and
    only then is the plaintext overwritten and unlinked (``cipher_db.destroy_file``); a
    plaintext copy a crash left after that is destroyed by the next open
    (``_destroy_sealed_leftovers``). A plaintext file whose SHA-256 no longer matches the
    signed one is sealed all the same (no plaintext stays on disk) and its attachment
    marked failed, with an alert. Returns how many files were sealed.
    """
    ensure_schema(db)
    rows = db.conn.execute(
        "SELECT envelope_id, ordinal, report_id, name, sha256, path FROM media_attachments"
        " WHERE status = 'verified' AND file_key IS NULL AND path IS NOT NULL"
    ).fetchall()
    sealed = 0
    for envelope_id, ordinal, report_id, name, sha256, path in rows:
        plain = directory / path
        if not plain.is_file():
            continue  # moved away by hand, or sealed by another process meanwhile
        final = plain.with_name(f"{ordinal + 1:02d}{hq_media_seal.SUFFIX}")
        partial = plain.with_name(f"{_PARTIAL}-{ordinal}-{os.getpid()}")
        file_key = hq_media_seal.new_key()
        digest = hashlib.sha256()
        hq_media_seal.write_sealed(partial, file_key, _hashed_blocks(plain, digest))
        with immediate_transaction(db.conn):
            ours = db.conn.execute(
                "UPDATE media_attachments SET path = ?, file_key = ?"
                " WHERE envelope_id = ? AND ordinal = ? AND file_key IS NULL",
                (str(final.relative_to(directory)), file_key, envelope_id, ordinal),
            ).rowcount
            if ours:
                partial.replace(final)
        if not ours:
            partial.unlink()  # ciphertext under a key nobody keeps
            continue
        with contextlib.suppress(FileNotFoundError):
            cipher_db.destroy_file(plain)
        sealed += 1
        if digest.hexdigest() != sha256:
            _fail(
                db,
                envelope_id,
                ordinal,
                report_id,
                name,
                "the SHA-256 of HQ's plaintext copy differs from the signed one (sealed as found)",
            )
    _destroy_sealed_leftovers(directory, db)
    if sealed:
        log.info("media: sealed %d plaintext attachment file(s) at rest", sealed)
    return sealed


def _destroy_sealed_leftovers(directory: Path, db: sqlite_utils.Database) -> None:
    """Destroy the plaintext ``NN-NAME`` file of an attachment already sealed (a crash
    between recording the sealed copy and destroying the plaintext left it)."""
    root = directory / MEDIA_DIR
    if not root.is_dir():
        return
    sealed = {
        str(path)
        for (path,) in db.conn.execute(
            "SELECT path FROM media_attachments WHERE file_key IS NOT NULL"
        )
    }
    for report_dir in root.iterdir():
        if not report_dir.is_dir() or report_dir.is_symlink():
            continue
        for leftover in report_dir.iterdir():
            number = leftover.name.partition("-")[0]
            if not (len(number) >= 2 and number.isdigit() and leftover.is_file()):
                continue
            counterpart = report_dir / f"{number}{hq_media_seal.SUFFIX}"
            if str(counterpart.relative_to(directory)) in sealed:
                log.warning("media: destroying a plaintext leftover of a sealed file")
                cipher_db.destroy_file(leftover)
