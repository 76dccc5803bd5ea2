"""HQ's ingest: judge every envelope, record it, alert on what an analyst must see.

One envelope never fails an ingest: each is judged and recorded under its own savepoint,
and any error is recorded as that envelope's reason (SPEC.md §8.6). Every envelope ends in
exactly one state (accepted, duplicate, fork, quarantined, junk), and HQ's receipts say
which (``fieldsync.hq_receipts``). The quarantine keeps the bytes of envelopes HQ opened but
refused, for review and re-ingest (SPEC.md §9).

The functions take the :class:`fieldsync.hq.HQ` they work for; ``fieldsync.hq`` re-exports
the public names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

from fieldsync import hq_alerts, hq_media, hq_revocation
from fieldsync.errors import FieldsyncError, InputRefused, NotFound
from fieldsync.hq_alerts import Event
from fieldsync.hq_schema import insert
from fieldsync.node import Progress, _read_bundle, bundle_key, utc_text
from fieldsync.sqlite_tx import immediate_transaction
from fieldsync.store import now_seconds
from fieldsync_protocol.bundle import BundleReader
from fieldsync_protocol.envelope import (
    NotSealedToHQ,
    OpenedReport,
    OuterEnvelope,
    RefusedSignedReport,
    open_report,
)
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.items import Item, ItemKind, parse_item
from fieldsync_protocol.keytext import KeyKind, key_to_text

if TYPE_CHECKING:
    from fieldsync.hq import HQ, HqSecrets

log = logging.getLogger(__name__)

#: A report more than this far past its author's highest recorded sequence is held, not
#: chained (SPEC.md §8.7): no honest device gets 10,000 reports ahead of what reached HQ.
MAX_SEQUENCE_JUMP = 10_000
#: The quarantine's bounds (SPEC.md §9). Past them an envelope is neither kept nor receipted:
#: relays go on carrying it, HQ tries again at a later ingest and raises an alert.
QUARANTINE_MAX_ITEMS = 100_000
QUARANTINE_MAX_BYTES = 1024**3
#: How much an ingest summary lists (the database has everything): bounded on any input.
MAX_LISTED = 100
MAX_LISTED_GAPS = 1000
MAX_REASON = 300
_OTHER_REASONS = "(other reasons)"


def _count_reason(counts: dict[str, int], reason: str) -> None:
    """Count a reason; past MAX_LISTED distinct reasons they share one line (bounded)."""
    if reason not in counts and len(counts) >= MAX_LISTED:
        reason = _OTHER_REASONS
    counts[reason] = counts.get(reason, 0) + 1


@dataclass
class IngestSummary:
    """What one ``hq ingest`` did; every envelope lands in exactly one count."""

    new: int = 0
    duplicate: int = 0
    forks: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    junk: dict[str, int] = field(default_factory=dict)
    #: Opened-but-refused envelopes not kept because the quarantine is full (not receipted).
    quarantine_full: int = 0
    #: Envelopes HQ could not even record (e.g. the disk is full); retried at the next ingest.
    failed: int = 0
    other_items: int = 0
    #: Attachment chunks newly held, and chunks HQ could not even record (retried later).
    chunks: int = 0
    chunks_failed: int = 0
    #: Attachments assembled after this ingest: verified, failed, still pending (SPEC.md §16.4).
    media: dict[str, int] = field(default_factory=dict)
    gaps: dict[str, list[dict[str, int]]] = field(default_factory=dict)
    gaps_total: int = 0
    #: The enrolled name of each author in ``gaps`` ("" if HQ never enrolled it).
    gap_authors: dict[str, str] = field(default_factory=dict)
    #: Alerts that are new, or open again, after this ingest (listed up to MAX_LISTED).
    alerts: list[dict[str, Any]] = field(default_factory=list)
    alerts_total: int = 0
    #: How many of ``quarantine_full`` an alert already reported (bundles, then the hub).
    quarantine_full_alerted: int = field(default=0, repr=False)
    #: Attachments pending when this ingest started (to tell "still incomplete" at its end).
    pending_before: set[tuple[str, int]] | None = field(default=None, repr=False)

    def add_alert(self, alert: dict[str, Any] | None) -> None:
        if alert is None:
            return
        self.alerts_total += 1
        if len(self.alerts) < MAX_LISTED:
            self.alerts.append(alert)

    @property
    def attention(self) -> bool:
        """New alerts appeared: ``hq ingest`` exits with the attention code."""
        return self.alerts_total > 0

    @property
    def envelopes(self) -> int:
        return (
            self.new
            + self.duplicate
            + self.forks
            + sum(self.quarantined.values())
            + sum(self.junk.values())
            + self.quarantine_full
            + self.failed
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "envelopes": self.envelopes,
            "new": self.new,
            "duplicate": self.duplicate,
            "forks": self.forks,
            "quarantined": sum(self.quarantined.values()),
            "quarantined_reasons": self.quarantined,
            "junk": sum(self.junk.values()),
            "junk_reasons": self.junk,
            "quarantine_full": self.quarantine_full,
            "failed": self.failed,
            "other_items": self.other_items,
            "chunks": self.chunks,
            "chunks_failed": self.chunks_failed,
            "media": self.media,
            "gaps": self.gaps,
            "gaps_total": self.gaps_total,
            "gap_authors": self.gap_authors,
            "alerts": self.alerts,
            "alerts_total": self.alerts_total,
            "attention": self.attention,
        }


@dataclass
class ReingestSummary:
    accepted: int = 0
    duplicate: int = 0
    forks: int = 0
    still_held: dict[str, int] = field(default_factory=dict)
    receipts_new: int = 0
    media: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicate": self.duplicate,
            "forks": self.forks,
            "still_held": sum(self.still_held.values()),
            "still_held_reasons": self.still_held,
            "receipts_new": self.receipts_new,
            "media": self.media,
        }


@dataclass
class Verdict:
    """HQ's decision on one envelope, before anything is written."""

    status: str  # accepted | duplicate | fork | quarantined | junk
    reason: str | None = None
    opened: OpenedReport | None = None
    alert_kind: str | None = None
    detail: str | None = None
    #: Who signed a refused report, when the signature was verified.
    signer: bytes | None = None
    #: For a fork: the envelope already chained at that author's sequence number.
    fork_of: str | None = None

    @property
    def author_key(self) -> bytes | None:
        return self.opened.author_key if self.opened is not None else self.signer

    def author_text(self) -> str | None:
        key = self.author_key
        return None if key is None else key_to_text(KeyKind.AUTHOR, key)


@dataclass
class IngestContext:
    """What every envelope of one ingest is checked against, read once."""

    network_id: bytes
    hq_secrets: dict[int, bytes]
    authors: dict[bytes, str]
    quarantine_items: int
    quarantine_bytes: int


def ingest_files(
    hq: HQ, paths: Iterable[Path], passphrase: str, progress: Progress | None = None
) -> IngestSummary:
    keys = hq.unlock(passphrase)
    manifest = hq.manifest()
    summary = IngestSummary()
    known = hq_revocation.network_keys(hq.directory, keys.root_seed, keys.network_key)
    for path in paths:
        # Sealed under any network key HQ has issued (rotations, SPEC.md §17.5).
        key = bundle_key(path, [k.key for k in reversed(known)])
        reader = BundleReader(key, manifest.network_id)
        try:
            ingest_items(hq, _read_bundle(path, reader, progress), keys, summary)
        except RemoteProtocolError as exc:
            raise InputRefused(f"bundle {path} refused, nothing from it ingested: {exc}") from exc
    finish_ingest(hq, summary)
    return summary


def ingest_items(hq: HQ, items: Iterator[bytes], keys: HqSecrets, summary: IngestSummary) -> None:
    """Ingest one source in one durable transaction (before any receipt is issued).

    Each envelope gets its own savepoint: whatever goes wrong with one envelope is
    recorded for it (held, with the reason) and the others go on (SPEC.md §8.6). Only
    a record that is not an item at all refuses the source (``RemoteProtocolError``).
    """
    db = hq.database()
    if summary.pending_before is None:
        summary.pending_before = hq_media.pending(db)
    with immediate_transaction(db.conn):
        context = _context(hq, keys)
        for data in items:
            item = parse_item(data)
            if item.kind is ItemKind.CHUNK:
                _ingest_chunk(db, item, summary)
                continue
            if item.kind is not ItemKind.ENVELOPE or item.envelope is None:
                summary.other_items += 1
                continue
            if db.execute(
                "SELECT 1 FROM envelopes WHERE envelope_id = ?", [item.id.hex()]
            ).fetchone():
                summary.duplicate += 1
                continue
            _ingest_envelope(hq, db, item, item.envelope, context, summary)


def _context(hq: HQ, keys: HqSecrets) -> IngestContext:
    count, size = (
        hq.database().execute("SELECT count(*), coalesce(sum(size), 0) FROM quarantine").fetchone()
    )
    return IngestContext(
        hq.manifest().network_id, keys.hq_secrets, hq.enrolled_authors(), count, size
    )


def _ingest_envelope(
    hq: HQ,
    db: sqlite_utils.Database,
    item: Item,
    outer: OuterEnvelope,
    context: IngestContext,
    summary: IngestSummary,
) -> None:
    db.conn.execute("SAVEPOINT envelope")
    try:
        _record(hq, db, item, judge(db, outer, item.id.hex(), context), context, summary)
    except Exception as exc:  # one envelope never fails an ingest
        rollback_envelope(db, exc)
        log.exception("ingest: envelope %s failed; holding it", item.id.hex())
        reason = trim(f"internal error at HQ ({type(exc).__name__}): {exc}")
        try:
            _record(hq, db, item, Verdict("quarantined", reason), context, summary)
        except Exception as again:  # not even recordable: tried again next ingest
            rollback_envelope(db, again)
            log.exception("ingest: envelope %s could not be recorded", item.id.hex())
            summary.failed += 1
    db.conn.execute("RELEASE envelope")


def _ingest_chunk(db: sqlite_utils.Database, item: Item, summary: IngestSummary) -> None:
    """Hold one attachment chunk (SPEC.md §16.4) under its own savepoint: a chunk HQ
    cannot record fails alone, is not receipted, and is tried again at the next ingest."""
    db.conn.execute("SAVEPOINT envelope")
    try:
        summary.chunks += hq_media.store_chunk(db, item)
    except Exception as exc:  # one item never fails an ingest
        rollback_envelope(db, exc)
        log.exception("ingest: chunk %s could not be recorded", item.id.hex())
        summary.chunks_failed += 1
    db.conn.execute("RELEASE envelope")


def judge(
    db: sqlite_utils.Database,
    outer: OuterEnvelope,
    envelope_id: str,
    context: IngestContext,
) -> Verdict:
    """Open and place one envelope; writes nothing."""
    try:
        opened = open_report(outer, context.network_id, context.hq_secrets, context.authors)
    except NotSealedToHQ as exc:
        return Verdict("junk", trim(str(exc)))
    except RefusedSignedReport as exc:  # signed by an enrolled author: name them
        return Verdict("quarantined", trim(str(exc)), signer=exc.author_key)
    except RemoteProtocolError as exc:
        return Verdict("quarantined", trim(str(exc)))
    author_text = key_to_text(KeyKind.AUTHOR, opened.author_key)
    existing = db.execute(
        "SELECT header_hash, envelope_id FROM chain WHERE author_key = ? AND sequence = ?",
        [author_text, opened.sequence],
    ).fetchone()
    if existing is not None:
        if existing[0] == opened.header_hash:
            return Verdict("duplicate", opened=opened)  # the same report, sealed again
        detail = (
            f"envelopes {existing[1]} and {envelope_id} carry different reports"
            f" with the same sequence number ({opened.sequence}):"
            f" `fieldsync hq report show {opened.body['id']}` shows both"
        )
        return Verdict(
            "fork", opened=opened, alert_kind=hq_alerts.FORK, detail=detail, fork_of=existing[1]
        )
    highest = db.execute(
        "SELECT coalesce(max(sequence), 0) FROM chain WHERE author_key = ?", [author_text]
    ).fetchone()[0]
    if opened.sequence > highest + MAX_SEQUENCE_JUMP:
        reason = (
            f"implausible sequence jump: {opened.sequence} is more than"
            f" {MAX_SEQUENCE_JUMP:,} past the author's highest ({highest})"
        )
        return Verdict("quarantined", reason, opened, alert_kind=hq_alerts.SEQUENCE_JUMP)
    return Verdict("accepted", opened=opened)


def _record(
    hq: HQ,
    db: sqlite_utils.Database,
    item: Item,
    verdict: Verdict,
    context: IngestContext,
    summary: IngestSummary,
) -> None:
    """Write one verdict: envelope row, then chain and report, or quarantine and alert."""
    envelope_id = item.id.hex()
    opened = verdict.opened
    author_text = verdict.author_text()
    if verdict.status == "quarantined" and not _quarantine_has_room(hq, context, item):
        summary.quarantine_full += 1  # nothing written: not receipted, offered again
        return
    insert(
        db,
        "envelopes",
        {
            "envelope_id": envelope_id,
            "tag": item.tag,
            "first_seen": utc_text(now_seconds()),
            "receipt_serial": None,
            "status": verdict.status,
            "reason": verdict.reason,
            "author_key": author_text,
            "sequence": None if opened is None else opened.sequence,
            "data": item.data if verdict.status == "fork" else None,  # kept as evidence
        },
    )
    summary.add_alert(apply_verdict(db, item, verdict, context))
    _count_verdict(summary, verdict)


def apply_verdict(
    db: sqlite_utils.Database, item: Item, verdict: Verdict, context: IngestContext
) -> dict[str, Any] | None:
    """The rows a verdict adds besides the envelope row; returns the alert that needs
    attention now (new, or open again), if any."""
    envelope_id = item.id.hex()
    opened = verdict.opened
    author_text = verdict.author_text()
    signer = verdict.author_key
    name = "" if signer is None else context.authors.get(signer, "")
    now = utc_text(now_seconds())
    if verdict.status == "accepted" and opened is not None and author_text is not None:
        insert(
            db,
            "chain",
            {
                "author_key": author_text,
                "sequence": opened.sequence,
                "header_hash": opened.header_hash,
                "previous": opened.previous,
                "envelope_id": envelope_id,
            },
        )
        insert(db, "reports", report_row(opened, author_text, name, envelope_id))
        hq_media.record_attachments(db, opened, envelope_id)  # pending k/n (SPEC.md §16.4)
        # Written after its author's revocation? Kept, with an alert (SPEC.md §17.3).
        return hq_revocation.flag_revoked_report(
            db, author_text, opened.sequence, name, envelope_id
        )
    if verdict.status == "fork" and opened is not None and author_text is not None:
        # The second report of a fork stays readable beside the first (`hq report show`).
        row = report_row(opened, author_text, name, envelope_id)
        insert(db, "forked_reports", {**row, "fork_of": verdict.fork_of}, replace=True)
        return hq_alerts.raise_alert(
            db,
            Event(
                hq_alerts.FORK,
                envelope_id,
                verdict.detail or "fork",
                author_key=author_text,
                author_name=name,
                sequence=opened.sequence,
                envelope_id=envelope_id,
            ),
            now,
        )
    if verdict.status == "junk":
        # Counted by reason: a flood of junk is one alert whose count grows.
        return hq_alerts.raise_alert(
            db,
            Event(
                hq_alerts.JUNK,
                verdict.reason or "junk",
                f"dropped (does not open under HQ's key): {verdict.reason}",
                envelope_id=envelope_id,
            ),
            now,
        )
    if verdict.status != "quarantined":
        return None
    insert(
        db,
        "quarantine",
        {
            "envelope_id": envelope_id,
            "reason": verdict.reason,
            "author_key": author_text,
            "author_name": name,
            "sequence": None if opened is None else opened.sequence,
            "held_at": now,
            "attempts": 1,
            "size": len(item.data),
            "data": item.data,
        },
    )
    context.quarantine_items += 1
    context.quarantine_bytes += len(item.data)
    return hq_alerts.raise_alert(
        db,
        Event(
            verdict.alert_kind or hq_alerts.QUARANTINED,
            envelope_id,
            verdict.detail or f"held in quarantine: {verdict.reason}",
            author_key=author_text,
            author_name=name,
            sequence=None if opened is None else opened.sequence,
            envelope_id=envelope_id,
        ),
        now,
    )


def _quarantine_has_room(hq: HQ, context: IngestContext, item: Item) -> bool:
    return (
        context.quarantine_items < hq.quarantine_max_items
        and context.quarantine_bytes + len(item.data) <= hq.quarantine_max_bytes
    )


def finish_ingest(hq: HQ, summary: IngestSummary) -> None:
    """After all sources: gap alerts, a "quarantine full" alert, attachments assembled
    (and alerts for those that failed, or are still incomplete since an earlier ingest)."""
    db = hq.database()
    now = utc_text(now_seconds())
    with immediate_transaction(db.conn):
        for alert in hq_alerts.refresh_gaps(db, now):
            summary.add_alert(alert)
        not_kept = summary.quarantine_full - summary.quarantine_full_alerted
        if not_kept:
            summary.quarantine_full_alerted = summary.quarantine_full
            detail = (
                f"{not_kept} refused envelopes were not kept"
                f" (quarantine bound {hq.quarantine_max_items:,} envelopes or"
                f" {hq.quarantine_max_bytes:,} bytes) and not receipted: relays keep"
                " them and HQ tries again at the next ingest; review the quarantine"
                " (`fieldsync hq quarantine list`)"
            )
            event = Event(hq_alerts.QUARANTINE_FULL, "bounds", detail)
            summary.add_alert(hq_alerts.raise_alert(db, event, now))
    summary.gaps, summary.gaps_total, summary.gap_authors = gaps(hq)
    assembled, media_alerts = hq_media.assemble_ready(
        hq.directory, db, summary.pending_before or set()
    )
    add_counts(summary.media, assembled)
    for alert in media_alerts:
        summary.add_alert(alert)
    summary.pending_before = None


def gaps(hq: HQ) -> tuple[dict[str, list[dict[str, int]]], int, dict[str, str]]:
    """Open gaps per author as ranges (at most ``MAX_LISTED_GAPS``), how many, and the
    authors' enrolled names."""
    db = hq.database()
    open_gaps = "kind = 'gap' AND state != 'resolved'"
    total = db.execute(f"SELECT count(*) FROM alerts WHERE {open_gaps}").fetchone()[0]  # noqa: S608
    found: dict[str, list[dict[str, int]]] = {}
    names: dict[str, str] = {}
    for author_key, name, first, last, count in db.execute(
        "SELECT author_key, author_name, first_missing, last_missing, missing_count"  # noqa: S608
        f" FROM alerts WHERE {open_gaps} ORDER BY author_key, first_missing LIMIT ?",
        [MAX_LISTED_GAPS],
    ):
        found.setdefault(author_key, []).append({"first": first, "last": last, "count": count})
        names[author_key] = name or ""
    return found, int(total), names


# --- quarantine ------------------------------------------------------------------------

_QUARANTINE_COLUMNS = (
    "q.id AS id, q.envelope_id AS envelope_id, q.reason AS reason, q.author_key AS author_key,"
    " q.author_name AS author_name, q.sequence AS sequence, q.held_at AS held_at,"
    " q.attempts AS attempts, q.size AS size, e.receipt_serial AS receipt_serial"
)


def quarantine_list(hq: HQ) -> Iterator[dict[str, Any]]:
    """Held envelopes, oldest first, without their bytes (streamed)."""
    yield from hq.database().query(
        f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine q"  # noqa: S608 - our columns
        " JOIN envelopes e USING (envelope_id) ORDER BY q.id"
    )


def quarantine_entry(hq: HQ, entry_id: int) -> dict[str, Any]:
    rows = list(
        hq.database().query(
            f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine q"  # noqa: S608 - our columns
            " JOIN envelopes e USING (envelope_id) WHERE q.id = ?",
            [entry_id],
        )
    )
    if not rows:
        raise NotFound(
            f"no envelope {entry_id} in the quarantine; `fieldsync hq quarantine list`"
            " shows what is held"
        )
    return rows[0]


def reingest(hq: HQ, entry_ids: Iterable[int] | None, passphrase: str) -> ReingestSummary:
    """Judge held envelopes again (all when ``entry_ids`` is None); issue receipts.

    One accepted now gets an ``accepted`` receipt, so its author's device shows it
    delivered, and its alert is resolved; one still refused stays held with its new reason.
    """
    keys = hq.unlock(passphrase)
    db = hq.database()
    wanted = None if entry_ids is None else sorted(set(entry_ids))
    for entry_id in wanted or []:
        quarantine_entry(hq, entry_id)  # NotFound before anything changes
    summary = ReingestSummary()
    last = 0
    while True:
        page = _quarantine_page(db, last, wanted)
        if not page:
            break
        with immediate_transaction(db.conn):
            context = _context(hq, keys)
            for entry_id, data in page:
                last = entry_id
                _reconsider(db, entry_id, parse_item(data), context, summary)
    assembled, _ = hq_media.assemble_ready(hq.directory, db, set())
    add_counts(summary.media, assembled)
    summary.receipts_new = hq.sign_pending_receipts(keys)
    return summary


def _quarantine_page(
    db: sqlite_utils.Database, after: int, wanted: list[int] | None
) -> list[tuple[int, bytes]]:
    """Up to 64 held envelopes after ``after`` (bounded memory: 64 x 256 KiB at most)."""
    if wanted is None:
        rows = db.execute(
            "SELECT id, data FROM quarantine WHERE id > ? ORDER BY id LIMIT 64", [after]
        )
    else:
        chunk = [i for i in wanted if i > after][:64]
        marks = ", ".join("?" for _ in chunk)
        rows = db.execute(
            f"SELECT id, data FROM quarantine WHERE id IN ({marks}) ORDER BY id",  # noqa: S608
            chunk,
        )
    return [(int(i), d) for i, d in rows]


def _reconsider(
    db: sqlite_utils.Database,
    entry_id: int,
    item: Item,
    context: IngestContext,
    summary: ReingestSummary,
) -> None:
    envelope_id = item.id.hex()
    db.conn.execute("SAVEPOINT envelope")
    try:
        verdict = (
            Verdict("quarantined", "not an envelope")
            if item.envelope is None
            else judge(db, item.envelope, envelope_id, context)
        )
        if verdict.status in ("quarantined", "junk"):  # still held: bytes are kept
            reason = verdict.reason or "refused"
            db.conn.execute(
                "UPDATE quarantine SET reason = ?, attempts = attempts + 1 WHERE id = ?",
                [reason, entry_id],
            )
            _count_reason(summary.still_held, reason)
        else:
            _release(db, entry_id, item, verdict, context, summary)
    except Exception as exc:  # one envelope never fails the others
        rollback_envelope(db, exc)
        log.exception("reingest: envelope %s failed; still held", envelope_id)
        _count_reason(summary.still_held, trim(f"internal error at HQ: {exc}"))
    db.conn.execute("RELEASE envelope")


def _release(
    db: sqlite_utils.Database,
    entry_id: int,
    item: Item,
    verdict: Verdict,
    context: IngestContext,
    summary: ReingestSummary,
) -> None:
    """A held envelope is accepted now: chain it, forget its bytes, re-receipt it."""
    opened = verdict.opened
    if opened is None:  # accepted, duplicate and fork verdicts always carry the report
        raise FieldsyncError("a verdict without its report cannot be released")
    envelope_id = item.id.hex()
    db.conn.execute(
        "UPDATE envelopes SET status = ?, reason = NULL, author_key = ?, sequence = ?,"
        " data = ?, receipt_serial = NULL WHERE envelope_id = ?",
        [
            verdict.status,
            key_to_text(KeyKind.AUTHOR, opened.author_key),
            opened.sequence,
            item.data if verdict.status == "fork" else None,
            envelope_id,
        ],
    )
    db.conn.execute("DELETE FROM quarantine WHERE id = ?", [entry_id])
    now = utc_text(now_seconds())
    for kind in (hq_alerts.QUARANTINED, hq_alerts.SEQUENCE_JUMP):
        hq_alerts.resolve(db, kind, envelope_id, now)
    apply_verdict(db, item, verdict, context)
    if verdict.status == "accepted":
        summary.accepted += 1
    elif verdict.status == "duplicate":
        summary.duplicate += 1
    else:
        summary.forks += 1


def rollback_envelope(db: sqlite_utils.Database, exc: Exception) -> None:
    """Undo one envelope's rows. SQLite itself may have ended the whole transaction (a full
    disk, an I/O error): then nothing of this source is kept, and the operator must act."""
    if not db.conn.in_transaction:
        raise FieldsyncError(
            f"HQ's database stopped the ingest ({exc}); nothing from this source was recorded"
            " or receipted. Check free disk space and run the ingest again"
        ) from exc
    db.conn.execute("ROLLBACK TO envelope")


def add_counts(total: dict[str, int], counts: dict[str, int]) -> None:
    for key, count in counts.items():
        total[key] = total.get(key, 0) + count


def trim(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"


def _count_verdict(summary: IngestSummary, verdict: Verdict) -> None:
    if verdict.status == "accepted":
        summary.new += 1
    elif verdict.status == "duplicate":
        summary.duplicate += 1
    elif verdict.status == "fork":
        summary.forks += 1
    elif verdict.status == "junk":
        _count_reason(summary.junk, verdict.reason or "junk")
    else:
        _count_reason(summary.quarantined, verdict.reason or "held")


def report_row(
    opened: OpenedReport, author_key: str, author_name: str, envelope_id: str
) -> dict[str, Any]:
    body = opened.body
    location = body.get("location") or {}
    occurred = body["occurred"]
    return {
        "id": body["id"],
        "title": body.get("title"),
        "narrative": body["narrative"],
        "categories": json.dumps(body["categories"]),
        "primary_category": body["categories"][0],
        "occurred_start": occurred["start"],
        "occurred_end": occurred.get("end"),
        "occurred_precision": occurred["precision"],
        "occurred_approximate": occurred["approximate"],
        "lat": location.get("lat"),
        "lon": location.get("lon"),
        "accuracy_m": location.get("accuracy_m"),
        "place": location.get("place"),
        "location_source": location.get("source"),
        "sensitivity": body["sensitivity"],
        "language": body["language"],
        "created_at": body["created_at"],
        "claimed_time": utc_text(opened.claimed_time),
        "received_at": utc_text(now_seconds()),
        "clock_source": body["clock"]["source"],
        "clock_synced": body["clock"]["synced"],
        "author_key": author_key,
        "author_name": author_name,
        "sequence": opened.sequence,
        "envelope_id": envelope_id,
        "supersedes": body.get("supersedes"),
        # Attachments as name, type, size and SHA-256 (no keys, no chunk ids).
        "body_json": json.dumps(hq_media.public_body(body), ensure_ascii=False, sort_keys=True),
    }
