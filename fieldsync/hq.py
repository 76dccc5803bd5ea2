"""Headquarters: network creation, enrolment, ingest into the analyst database, receipts.

Layout of an HQ directory::

    hq.secret      root, certificate, receipt and HQ encryption keys and the network key,
                   sealed with the HQ passphrase (move the root key offline: SPEC.md §4)
    manifest.item  the current root-signed network manifest
    hq.db          the analyst database (sqlite-utils; open it with Datasette)
    media/         verified attachments, media/ENVELOPE/NN-name (``fieldsync.hq_media``)

The analyst database has one row per report in ``reports`` (with ``lat``/``lon``
columns), every envelope HQ has seen in ``envelopes`` (accepted, duplicate, fork,
quarantined or junk, with the reason; never a junk envelope's bytes), the ``quarantine``
(bytes of envelopes HQ opened but refused, for review and ``reingest``), ``alerts`` (forks,
open gaps as ranges, held envelopes, sequence jumps, a full quarantine, attachments that
failed verification), attachment chunks and attachments (``media_chunks``,
``media_attachments``, SPEC.md §16.4), enrolled
``authors`` and ``nodes``, and the signed ``receipts`` HQ has issued, each with the status
it gives its envelopes (SPEC.md §9).

One envelope never fails an ingest: each is judged and recorded under its own savepoint,
and any error is recorded as that envelope's reason (SPEC.md §8.6).
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from fieldsync import hq_media, keystore
from fieldsync.errors import FieldsyncError, InputRefused, NotFound
from fieldsync.forms import hq_form_item
from fieldsync.node import Node, Progress, _read_bundle, utc_text
from fieldsync.sqlite_tx import immediate_transaction
from fieldsync.store import now_seconds
from fieldsync_protocol import codec, crypto, membership
from fieldsync_protocol.bundle import BundleReader, BundleWriter
from fieldsync_protocol.envelope import (
    NotSealedToHQ,
    OpenedReport,
    OuterEnvelope,
    RefusedSignedReport,
    open_report,
)
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.items import Item, ItemKind, parse_item
from fieldsync_protocol.keytext import KeyKind, fingerprint, key_to_text
from fieldsync_protocol.receipt import MAX_TAGS, Receipt, ReceiptStatus, sign_receipt

log = logging.getLogger(__name__)

HQ_SECRET = "hq.secret"  # noqa: S105 - a file name, not a secret
MANIFEST = "manifest.item"
DATABASE = "hq.db"
HUB_NODE = "node"
FIRST_HQ_KEY_ID = 1


@dataclass
class HqSecrets:
    root_seed: bytes
    certificate_seed: bytes
    receipt_seed: bytes
    hq_secrets: dict[int, bytes]
    network_key: bytes

    def encode(self) -> bytes:
        return codec.encode(
            {
                "cert": self.certificate_seed,
                "hq": [{"id": i, "sk": sk} for i, sk in sorted(self.hq_secrets.items())],
                "knet": self.network_key,
                "rcpt": self.receipt_seed,
                "root": self.root_seed,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> HqSecrets:
        fields = keystore.load_map(data, "HQ secrets", {"cert", "hq", "knet", "rcpt", "root"})
        return cls(
            root_seed=fields["root"],
            certificate_seed=fields["cert"],
            receipt_seed=fields["rcpt"],
            hq_secrets={entry["id"]: entry["sk"] for entry in fields["hq"]},
            network_key=fields["knet"],
        )


#: A report more than this far past its author's highest recorded sequence is held, not
#: chained (SPEC.md §8.7): no honest device gets 10,000 reports ahead of what reached HQ.
MAX_SEQUENCE_JUMP = 10_000
#: The quarantine's bounds (SPEC.md §9). Past them an envelope is neither kept nor receipted:
#: relays go on carrying it, HQ tries again at a later ingest and raises one alert per ingest.
QUARANTINE_MAX_ITEMS = 100_000
QUARANTINE_MAX_BYTES = 1024**3
#: How much an ingest summary lists (the database has everything): bounded on any input.
MAX_LISTED = 100
MAX_LISTED_GAPS = 1000
MAX_REASON = 300
_OTHER_REASONS = "(other reasons)"
#: Envelope statuses by the receipt status HQ gives them (SPEC.md §9).
RECEIPTED_AS = {
    ReceiptStatus.ACCEPTED: ("accepted", "duplicate", "fork"),
    ReceiptStatus.HELD: ("quarantined",),
    ReceiptStatus.DROPPED: ("junk",),
}


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
    alerts: list[dict[str, Any]] = field(default_factory=list)
    alerts_total: int = 0
    #: How many of ``quarantine_full`` an alert already reported (bundles, then the hub).
    quarantine_full_alerted: int = field(default=0, repr=False)

    def add_alert(self, alert: dict[str, Any]) -> None:
        self.alerts_total += 1
        if len(self.alerts) < MAX_LISTED:
            self.alerts.append(alert)

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
            "alerts": self.alerts,
            "alerts_total": self.alerts_total,
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
class _Verdict:
    """HQ's decision on one envelope, before anything is written."""

    status: str  # accepted | duplicate | fork | quarantined | junk
    reason: str | None = None
    opened: OpenedReport | None = None
    alert_kind: str | None = None
    detail: str | None = None
    #: Who signed a refused report, when the signature was verified.
    signer: bytes | None = None

    @property
    def author_key(self) -> bytes | None:
        return self.opened.author_key if self.opened is not None else self.signer

    def author_text(self) -> str | None:
        key = self.author_key
        return None if key is None else key_to_text(KeyKind.AUTHOR, key)


@dataclass
class _IngestContext:
    """What every envelope of one ingest is checked against, read once."""

    network_id: bytes
    hq_secrets: dict[int, bytes]
    authors: dict[bytes, str]
    quarantine_items: int
    quarantine_bytes: int


def create_network(out: Path, name: str, passphrase: str, kdf_profile: str) -> membership.Manifest:
    if (out / HQ_SECRET).exists():
        raise FieldsyncError(f"{out} already holds an HQ; choose another --out")
    if not 1 <= len(name) <= membership.MAX_NAME:
        raise InputRefused(f"network name must be 1..{membership.MAX_NAME} characters")
    hq_secret = secrets.token_bytes(32)
    keys = HqSecrets(
        root_seed=secrets.token_bytes(32),
        certificate_seed=secrets.token_bytes(32),
        receipt_seed=secrets.token_bytes(32),
        hq_secrets={FIRST_HQ_KEY_ID: hq_secret},
        network_key=secrets.token_bytes(32),
    )
    manifest = membership.Manifest(
        network_id=secrets.token_bytes(membership.NETWORK_ID_SIZE),
        name=name,
        epoch=1,
        root_key=crypto.signing_public_key(keys.root_seed),
        hq_keys={FIRST_HQ_KEY_ID: crypto.box_public_key(hq_secret)},
        receipt_key=crypto.signing_public_key(keys.receipt_seed),
        certificate_key=crypto.signing_public_key(keys.certificate_seed),
    )
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    keystore.write_private(
        out / HQ_SECRET, keystore.seal_with_passphrase(keys.encode(), passphrase, kdf_profile)
    )
    keystore.write_private(out / MANIFEST, membership.sign_manifest(manifest, keys.root_seed))
    headquarters = HQ(out)
    try:
        headquarters.database()  # create the analyst database now
    finally:
        headquarters.close()  # a leaked connection would keep later writes in the WAL
    return manifest


class HQ:
    def __init__(
        self,
        directory: Path,
        *,
        quarantine_max_items: int = QUARANTINE_MAX_ITEMS,
        quarantine_max_bytes: int = QUARANTINE_MAX_BYTES,
    ) -> None:
        self.directory = directory
        self.quarantine_max_items = quarantine_max_items
        self.quarantine_max_bytes = quarantine_max_bytes
        self._db: sqlite_utils.Database | None = None

    def manifest_item(self) -> bytes:
        return keystore.read_file(
            self.directory / MANIFEST,
            "HQ manifest",
            "create the network with `fieldsync network create`",
        )

    def manifest(self) -> membership.Manifest:
        try:
            return membership.open_manifest(self.manifest_item())
        except RemoteProtocolError as exc:
            raise InputRefused(f"{self.directory / MANIFEST} is damaged: {exc}") from exc

    def unlock(self, passphrase: str) -> HqSecrets:
        sealed = keystore.read_file(
            self.directory / HQ_SECRET,
            "HQ secrets",
            "create the network with `fieldsync network create`",
        )
        return HqSecrets.decode(keystore.open_with_passphrase(sealed, passphrase, "HQ secrets"))

    def database(self) -> sqlite_utils.Database:
        if self._db is None:
            if not (self.directory / HQ_SECRET).exists():
                raise NotFound(f"{self.directory} is not an HQ directory (no {HQ_SECRET})")
            # Autocommit mode: our own BEGIN IMMEDIATE ... COMMIT make each ingest atomic.
            # Any one thread at a time may use it: the hub path runs it off the event loop.
            conn = sqlite3.connect(
                self.directory / DATABASE, isolation_level=None, check_same_thread=False
            )
            db = sqlite_utils.Database(conn)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            _create_schema(db)
            hq_media.ensure_schema(db)
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- enrolment ---------------------------------------------------------------------

    def enroll(
        self, request_text: str, passphrase: str, role: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Register the request's node (and author); return the enrolment text and a summary."""
        return self.enroll_with_keys(request_text, self.unlock(passphrase), role)

    def enroll_with_keys(
        self, request_text: str, keys: HqSecrets, role: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        try:
            request = membership.decode_request(request_text)
        except RemoteProtocolError as exc:
            raise InputRefused(f"enrolment request refused: {exc}") from exc
        manifest = self.manifest()
        db = self.database()
        role = role or ("author" if request.author_key else "relay")
        node_text = key_to_text(KeyKind.NODE, request.node_key)
        serial = int(db.execute("SELECT coalesce(max(serial), 0) + 1 FROM nodes").fetchone()[0])
        cert = membership.sign_certificate(
            membership.NodeCertificate(
                manifest.network_id, request.node_key, role, serial, now_seconds()
            ),
            keys.certificate_seed,
        )
        summary: dict[str, Any] = {
            "node": node_text,
            "node_fingerprint": fingerprint(KeyKind.NODE, request.node_key),
            "role": role,
            "serial": serial,
        }
        with immediate_transaction(db.conn):
            _insert(
                db,
                "nodes",
                {
                    "node_key": node_text,
                    "role": role,
                    "serial": serial,
                    "enrolled_at": utc_text(now_seconds()),
                },
            )
            if request.author_key is not None:
                author_text = key_to_text(KeyKind.AUTHOR, request.author_key)
                _insert(
                    db,
                    "authors",
                    {
                        "author_key": author_text,
                        "name": request.author_name or "",
                        "node_key": node_text,
                        "enrolled_at": utc_text(now_seconds()),
                    },
                    replace=True,
                )
                summary["author"] = author_text
                summary["author_fingerprint"] = fingerprint(KeyKind.AUTHOR, request.author_key)
                summary["author_name"] = request.author_name
        enrolment = membership.Enrolment(self.manifest_item(), keys.network_key, cert)
        text = membership.encode_enrolment(enrolment, request.node_key, secrets.token_bytes(32))
        return text, summary

    def enrolled_authors(self) -> dict[bytes, str]:
        from fieldsync_protocol.keytext import key_from_text

        return {
            key_from_text(KeyKind.AUTHOR, row["author_key"]): row["name"]
            for row in self.database()["authors"].rows
        }

    # --- ingest ------------------------------------------------------------------------

    def ingest_files(
        self, paths: Iterable[Path], passphrase: str, progress: Progress | None = None
    ) -> IngestSummary:
        keys = self.unlock(passphrase)
        manifest = self.manifest()
        summary = IngestSummary()
        for path in paths:
            reader = BundleReader(keys.network_key, manifest.network_id)
            try:
                self.ingest_items(_read_bundle(path, reader, progress), keys, summary)
            except RemoteProtocolError as exc:
                raise InputRefused(
                    f"bundle {path} refused, nothing from it ingested: {exc}"
                ) from exc
        self.finish_ingest(summary)
        return summary

    def ingest_items(self, items: Iterator[bytes], keys: HqSecrets, summary: IngestSummary) -> None:
        """Ingest one source in one durable transaction (before any receipt is issued).

        Each envelope gets its own savepoint: whatever goes wrong with one envelope is
        recorded for it (held, with the reason) and the others go on (SPEC.md §8.6). Only
        a record that is not an item at all refuses the source (``RemoteProtocolError``).
        """
        db = self.database()
        with immediate_transaction(db.conn):
            context = self._context(keys)
            for data in items:
                item = parse_item(data)
                if item.kind is ItemKind.CHUNK:
                    self._ingest_chunk(db, item, summary)
                    continue
                if item.kind is not ItemKind.ENVELOPE or item.envelope is None:
                    summary.other_items += 1
                    continue
                if db.execute(
                    "SELECT 1 FROM envelopes WHERE envelope_id = ?", [item.id.hex()]
                ).fetchone():
                    summary.duplicate += 1
                    continue
                self._ingest_envelope(db, item, item.envelope, context, summary)

    def _context(self, keys: HqSecrets) -> _IngestContext:
        count, size = (
            self.database()
            .execute("SELECT count(*), coalesce(sum(size), 0) FROM quarantine")
            .fetchone()
        )
        return _IngestContext(
            self.manifest().network_id, keys.hq_secrets, self.enrolled_authors(), count, size
        )

    def _ingest_envelope(
        self,
        db: sqlite_utils.Database,
        item: Item,
        outer: OuterEnvelope,
        context: _IngestContext,
        summary: IngestSummary,
    ) -> None:
        db.conn.execute("SAVEPOINT envelope")
        try:
            self._record(db, item, self._judge(db, outer, item.id.hex(), context), context, summary)
        except Exception as exc:  # one envelope never fails an ingest
            _rollback_envelope(db, exc)
            log.exception("ingest: envelope %s failed; holding it", item.id.hex())
            reason = _trim(f"internal error at HQ ({type(exc).__name__}): {exc}")
            try:
                self._record(db, item, _Verdict("quarantined", reason), context, summary)
            except Exception as again:  # not even recordable: tried again next ingest
                _rollback_envelope(db, again)
                log.exception("ingest: envelope %s could not be recorded", item.id.hex())
                summary.failed += 1
        db.conn.execute("RELEASE envelope")

    def _ingest_chunk(self, db: sqlite_utils.Database, item: Item, summary: IngestSummary) -> None:
        """Hold one attachment chunk (SPEC.md §16.4) under its own savepoint: a chunk HQ
        cannot record fails alone, is not receipted, and is tried again at the next ingest."""
        db.conn.execute("SAVEPOINT envelope")
        try:
            summary.chunks += hq_media.store_chunk(db, item)
        except Exception as exc:  # one item never fails an ingest
            _rollback_envelope(db, exc)
            log.exception("ingest: chunk %s could not be recorded", item.id.hex())
            summary.chunks_failed += 1
        db.conn.execute("RELEASE envelope")

    def _judge(
        self,
        db: sqlite_utils.Database,
        outer: OuterEnvelope,
        envelope_id: str,
        context: _IngestContext,
    ) -> _Verdict:
        """Open and place one envelope; writes nothing."""
        try:
            opened = open_report(outer, context.network_id, context.hq_secrets, context.authors)
        except NotSealedToHQ as exc:
            return _Verdict("junk", _trim(str(exc)))
        except RefusedSignedReport as exc:  # signed by an enrolled author: name them
            return _Verdict("quarantined", _trim(str(exc)), signer=exc.author_key)
        except RemoteProtocolError as exc:
            return _Verdict("quarantined", _trim(str(exc)))
        author_text = key_to_text(KeyKind.AUTHOR, opened.author_key)
        existing = db.execute(
            "SELECT header_hash, envelope_id FROM chain WHERE author_key = ? AND sequence = ?",
            [author_text, opened.sequence],
        ).fetchone()
        if existing is not None:
            if existing[0] == opened.header_hash:
                return _Verdict("duplicate", opened=opened)  # the same report, sealed again
            detail = (
                f"envelopes {existing[1]} and {envelope_id} carry different reports"
                " with the same sequence number"
            )
            return _Verdict("fork", opened=opened, alert_kind="fork", detail=detail)
        highest = db.execute(
            "SELECT coalesce(max(sequence), 0) FROM chain WHERE author_key = ?", [author_text]
        ).fetchone()[0]
        if opened.sequence > highest + MAX_SEQUENCE_JUMP:
            reason = (
                f"implausible sequence jump: {opened.sequence} is more than"
                f" {MAX_SEQUENCE_JUMP:,} past the author's highest ({highest})"
            )
            return _Verdict("quarantined", reason, opened, alert_kind="sequence jump")
        return _Verdict("accepted", opened=opened)

    def _record(
        self,
        db: sqlite_utils.Database,
        item: Item,
        verdict: _Verdict,
        context: _IngestContext,
        summary: IngestSummary,
    ) -> None:
        """Write one verdict: envelope row, then chain and report, or quarantine and alert."""
        envelope_id = item.id.hex()
        opened = verdict.opened
        author_text = verdict.author_text()
        if verdict.status == "quarantined" and not self._quarantine_has_room(context, item):
            summary.quarantine_full += 1  # nothing written: not receipted, offered again
            return
        _insert(
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
        alert = self._apply_verdict(db, item, verdict, context)
        _count_verdict(summary, verdict)
        if alert is not None:
            summary.add_alert(alert)

    def _apply_verdict(
        self, db: sqlite_utils.Database, item: Item, verdict: _Verdict, context: _IngestContext
    ) -> dict[str, Any] | None:
        """The rows a verdict adds besides the envelope row; returns the alert raised."""
        envelope_id = item.id.hex()
        opened = verdict.opened
        author_text = verdict.author_text()
        signer = verdict.author_key
        name = "" if signer is None else context.authors.get(signer, "")
        if verdict.status == "accepted" and opened is not None and author_text is not None:
            _insert(
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
            _insert(db, "reports", _report_row(opened, author_text, name, envelope_id))
            hq_media.record_attachments(db, opened, envelope_id)  # pending k/n (SPEC.md §16.4)
            return None
        if verdict.status == "quarantined":
            _insert(
                db,
                "quarantine",
                {
                    "envelope_id": envelope_id,
                    "reason": verdict.reason,
                    "author_key": author_text,
                    "author_name": name,
                    "sequence": None if opened is None else opened.sequence,
                    "held_at": utc_text(now_seconds()),
                    "attempts": 1,
                    "size": len(item.data),
                    "data": item.data,
                },
            )
            context.quarantine_items += 1
            context.quarantine_bytes += len(item.data)
        if verdict.alert_kind is None and verdict.status != "quarantined":
            return None
        alert = {
            "kind": verdict.alert_kind or "quarantined",
            "author_key": author_text,
            "author_name": name,
            "sequence": None if opened is None else opened.sequence,
            "envelope_id": envelope_id,
            "detail": verdict.detail or f"held in quarantine: {verdict.reason}",
            "at": utc_text(now_seconds()),
        }
        _insert(db, "alerts", alert)
        return alert

    def _quarantine_has_room(self, context: _IngestContext, item: Item) -> bool:
        return (
            context.quarantine_items < self.quarantine_max_items
            and context.quarantine_bytes + len(item.data) <= self.quarantine_max_bytes
        )

    def finish_ingest(self, summary: IngestSummary) -> None:
        """After all sources: refresh the open gaps and raise a "quarantine full" alert."""
        db = self.database()
        with immediate_transaction(db.conn):
            _refresh_gap_alerts(db)
            not_kept = summary.quarantine_full - summary.quarantine_full_alerted
            if not_kept:
                summary.quarantine_full_alerted = summary.quarantine_full
                alert = {
                    "kind": "quarantine full",
                    "detail": f"{not_kept} refused envelopes were not kept"
                    f" (quarantine bound {self.quarantine_max_items:,} envelopes or"
                    f" {self.quarantine_max_bytes:,} bytes) and not receipted: relays keep"
                    " them and HQ tries again at the next ingest; review the quarantine"
                    " (`fieldsync hq quarantine list`)",
                    "at": utc_text(now_seconds()),
                }
                _insert(db, "alerts", alert)
                summary.add_alert(alert)
        summary.gaps, summary.gaps_total = self.gaps()
        _add_counts(summary.media, hq_media.assemble_ready(self.directory, db))

    def gaps(self) -> tuple[dict[str, list[dict[str, int]]], int]:
        """Open gaps per author as ranges (at most ``MAX_LISTED_GAPS``), and how many."""
        db = self.database()
        total = db.execute("SELECT count(*) FROM alerts WHERE kind = 'gap'").fetchone()[0]
        gaps: dict[str, list[dict[str, int]]] = {}
        for author_key, first, last, count in db.execute(
            "SELECT author_key, first_missing, last_missing, missing_count FROM alerts"
            " WHERE kind = 'gap' ORDER BY author_key, first_missing LIMIT ?",
            [MAX_LISTED_GAPS],
        ):
            gaps.setdefault(author_key, []).append({"first": first, "last": last, "count": count})
        return gaps, int(total)

    # --- quarantine --------------------------------------------------------------------

    def quarantine_list(self) -> Iterator[dict[str, Any]]:
        """Held envelopes, oldest first, without their bytes (streamed)."""
        yield from self.database().query(
            f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine q"  # noqa: S608 - our columns
            " JOIN envelopes e USING (envelope_id) ORDER BY q.id"
        )

    def quarantine_entry(self, entry_id: int) -> dict[str, Any]:
        rows = list(
            self.database().query(
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

    def reingest(self, entry_ids: Iterable[int] | None, passphrase: str) -> ReingestSummary:
        """Judge held envelopes again (all when ``entry_ids`` is None); issue receipts.

        One accepted now gets an ``accepted`` receipt, so its author's device shows it
        delivered; one still refused stays held with its new reason.
        """
        keys = self.unlock(passphrase)
        db = self.database()
        wanted = None if entry_ids is None else sorted(set(entry_ids))
        for entry_id in wanted or []:
            self.quarantine_entry(entry_id)  # NotFound before anything changes
        summary = ReingestSummary()
        last = 0
        while True:
            page = self._quarantine_page(last, wanted)
            if not page:
                break
            with immediate_transaction(db.conn):
                context = self._context(keys)
                for entry_id, data in page:
                    last = entry_id
                    self._reconsider(db, entry_id, parse_item(data), context, summary)
        _add_counts(summary.media, hq_media.assemble_ready(self.directory, db))
        summary.receipts_new = self.sign_pending_receipts(keys)
        return summary

    def _quarantine_page(self, after: int, wanted: list[int] | None) -> list[tuple[int, bytes]]:
        """Up to 64 held envelopes after ``after`` (bounded memory: 64 x 256 KiB at most)."""
        db = self.database()
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
        self,
        db: sqlite_utils.Database,
        entry_id: int,
        item: Item,
        context: _IngestContext,
        summary: ReingestSummary,
    ) -> None:
        envelope_id = item.id.hex()
        db.conn.execute("SAVEPOINT envelope")
        try:
            verdict = (
                _Verdict("quarantined", "not an envelope")
                if item.envelope is None
                else self._judge(db, item.envelope, envelope_id, context)
            )
            if verdict.status in ("quarantined", "junk"):  # still held: bytes are kept
                reason = verdict.reason or "refused"
                db.conn.execute(
                    "UPDATE quarantine SET reason = ?, attempts = attempts + 1 WHERE id = ?",
                    [reason, entry_id],
                )
                _count_reason(summary.still_held, reason)
            else:
                self._release(db, entry_id, item, verdict, context, summary)
        except Exception as exc:  # one envelope never fails the others
            _rollback_envelope(db, exc)
            log.exception("reingest: envelope %s failed; still held", envelope_id)
            _count_reason(summary.still_held, _trim(f"internal error at HQ: {exc}"))
        db.conn.execute("RELEASE envelope")

    def _release(
        self,
        db: sqlite_utils.Database,
        entry_id: int,
        item: Item,
        verdict: _Verdict,
        context: _IngestContext,
        summary: ReingestSummary,
    ) -> None:
        """A held envelope is accepted now: chain it, forget its bytes, re-receipt it."""
        opened = verdict.opened
        if opened is None:  # accepted, duplicate and fork verdicts always carry the report
            raise FieldsyncError("a verdict without its report cannot be released")
        db.conn.execute(
            "UPDATE envelopes SET status = ?, reason = NULL, author_key = ?, sequence = ?,"
            " data = ?, receipt_serial = NULL WHERE envelope_id = ?",
            [
                verdict.status,
                key_to_text(KeyKind.AUTHOR, opened.author_key),
                opened.sequence,
                item.data if verdict.status == "fork" else None,
                item.id.hex(),
            ],
        )
        db.conn.execute("DELETE FROM quarantine WHERE id = ?", [entry_id])
        self._apply_verdict(db, item, verdict, context)
        if verdict.status == "accepted":
            summary.accepted += 1
        elif verdict.status == "duplicate":
            summary.duplicate += 1
        else:
            summary.forks += 1

    # --- receipts ----------------------------------------------------------------------

    def issue_receipts(self, passphrase: str) -> int:
        """Sign receipts for every envelope HQ has recorded but not yet receipted."""
        return self.sign_pending_receipts(self.unlock(passphrase))

    def sign_pending_receipts(self, keys: HqSecrets) -> int:
        """One receipt per status per 4,096 pending envelopes (SPEC.md §9), page by page."""
        manifest = self.manifest()
        db = self.database()
        made = 0
        for status, envelope_statuses in RECEIPTED_AS.items():
            marks = ", ".join("?" for _ in envelope_statuses)
            while True:
                pending = (
                    "SELECT envelope_id, tag FROM envelopes WHERE receipt_serial IS NULL"  # noqa: S608 - marks only
                    f" AND status IN ({marks}) ORDER BY rowid LIMIT ?"
                )
                batch = db.execute(
                    pending,
                    [*envelope_statuses, MAX_TAGS],
                ).fetchall()
                if not batch:
                    break
                with immediate_transaction(db.conn):
                    serial = self._sign_receipt(db, manifest.network_id, keys, status, batch)
                    db.conn.executemany(
                        "UPDATE envelopes SET receipt_serial = ? WHERE envelope_id = ?",
                        [(serial, envelope_id) for envelope_id, _ in batch],
                    )
                made += 1
        # Chunks HQ holds are receipted too ("accepted": held durably), so every holder
        # deletes them (SPEC.md §16.5).
        while chunks := hq_media.unreceipted_chunks(db, MAX_TAGS):
            with immediate_transaction(db.conn):
                serial = self._sign_receipt(
                    db, manifest.network_id, keys, ReceiptStatus.ACCEPTED, chunks
                )
                hq_media.mark_receipted(db, serial, [chunk_id for chunk_id, _ in chunks])
            made += 1
        return made

    def _sign_receipt(
        self,
        db: sqlite_utils.Database,
        network_id: bytes,
        keys: HqSecrets,
        status: ReceiptStatus,
        batch: Sequence[tuple[object, bytes]],
    ) -> int:
        """Sign and store one receipt naming the tags of ``batch``; return its serial."""
        serial = int(db.execute("SELECT coalesce(max(serial), 0) + 1 FROM receipts").fetchone()[0])
        receipt = Receipt(network_id, serial, now_seconds(), tuple(t for _, t in batch), status)
        _insert(
            db,
            "receipts",
            {
                "serial": serial,
                "created_at": utc_text(now_seconds()),
                "count": len(batch),
                "status": status.value,
                "item": sign_receipt(receipt, keys.receipt_seed),
            },
        )
        return serial

    def write_receipts_bundle(self, out: Path, passphrase: str) -> dict[str, int]:
        """Issue pending receipts and write all receipts plus the manifest to a bundle."""
        keystore.check_output(out, "receipts bundle")
        keys = self.unlock(passphrase)  # once: Argon2id takes seconds on a small device
        new = self.sign_pending_receipts(keys)
        manifest = self.manifest()
        writer = BundleWriter(keys.network_key, manifest.network_id, secrets.token_bytes(16))
        tmp = out.with_name(f".{out.name}.partial")
        envelopes = 0
        with open(tmp, "wb") as handle:
            handle.write(writer.add(self.manifest_item()))
            form_item = hq_form_item(self.directory)
            if form_item is not None:  # the network form spreads like the manifest (§17.4)
                handle.write(writer.add(form_item))
            extras = writer.items_written
            for row in self.database().execute("SELECT item, count FROM receipts ORDER BY serial"):
                handle.write(writer.add(row[0]))
                envelopes += row[1]
            handle.write(writer.finish())
        tmp.replace(out)
        return {
            "receipts_new": new,
            "receipts_total": writer.items_written - extras,
            "envelopes_receipted": envelopes,
        }

    # --- the hub path ------------------------------------------------------------------

    def hub_node(self, keys: HqSecrets) -> Path:
        """HQ's own node home (HQDIR/node), enrolled on first use, to sync with the hub.

        It holds only sealed items and the network key, like any relay; HQ's secret keys
        stay in hq.secret.
        """
        home = self.directory / HUB_NODE
        if not (home / "membership.bin").exists():
            node = Node(home)
            try:
                if not (home / "node.secret").exists():
                    node.init(None, None, "interactive")
                request = (home / "request.txt").read_text()
                enrolment, _ = self.enroll_with_keys(request, keys, "hub")
                node.join(enrolment)
            finally:
                node.close()
        return home

    def receipt_items(self, after: int = 0, limit: int = 16) -> list[tuple[int, bytes]]:
        """Signed receipts with serial above ``after``, a page at a time (bounded memory)."""
        return [
            (int(serial), item)
            for serial, item in self.database().execute(
                "SELECT serial, item FROM receipts WHERE serial > ? ORDER BY serial LIMIT ?",
                [after, limit],
            )
        ]


_QUARANTINE_COLUMNS = (
    "q.id AS id, q.envelope_id AS envelope_id, q.reason AS reason, q.author_key AS author_key,"
    " q.author_name AS author_name, q.sequence AS sequence, q.held_at AS held_at,"
    " q.attempts AS attempts, q.size AS size, e.receipt_serial AS receipt_serial"
)


def _rollback_envelope(db: sqlite_utils.Database, exc: Exception) -> None:
    """Undo one envelope's rows. SQLite itself may have ended the whole transaction (a full
    disk, an I/O error): then nothing of this source is kept, and the operator must act."""
    if not db.conn.in_transaction:
        raise FieldsyncError(
            f"HQ's database stopped the ingest ({exc}); nothing from this source was recorded"
            " or receipted. Check free disk space and run the ingest again"
        ) from exc
    db.conn.execute("ROLLBACK TO envelope")


def _add_counts(total: dict[str, int], counts: dict[str, int]) -> None:
    for key, count in counts.items():
        total[key] = total.get(key, 0) + count


def _trim(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"


def _count_verdict(summary: IngestSummary, verdict: _Verdict) -> None:
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


def _refresh_gap_alerts(db: sqlite_utils.Database) -> None:
    """Replace the gap alerts by the open gaps, as ranges computed in SQL (SPEC.md §8.7):
    the missing numbers themselves are never listed, whatever the sequence numbers."""
    db.conn.execute("DELETE FROM alerts WHERE kind = 'gap'")
    db.conn.execute(
        "INSERT INTO alerts (kind, author_key, author_name, first_missing, last_missing,"
        " missing_count, detail, at)"
        " SELECT 'gap', c.author_key, coalesce(a.name, ''), c.previous + 1, c.sequence - 1,"
        " c.sequence - c.previous - 1,"
        " 'sequence numbers ' || (c.previous + 1) || '..' || (c.sequence - 1) || ' not received',"
        " ?"
        " FROM (SELECT author_key, sequence, LAG(sequence, 1, 0)"
        "       OVER (PARTITION BY author_key ORDER BY sequence) AS previous FROM chain) c"
        " LEFT JOIN authors a ON a.author_key = c.author_key"
        " WHERE c.sequence > c.previous + 1",
        [utc_text(now_seconds())],
    )


def _report_row(
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


def _insert(
    db: sqlite_utils.Database, table: str, row: dict[str, Any], replace: bool = False
) -> None:
    columns = ", ".join(f"[{name}]" for name in row)
    marks = ", ".join("?" for _ in row)
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    db.conn.execute(f"{verb} INTO [{table}] ({columns}) VALUES ({marks})", list(row.values()))


def _create_schema(db: sqlite_utils.Database) -> None:
    """Create missing tables (idempotent, so an interrupted first run heals itself)."""
    db.table("reports").create(
        {
            "id": str,
            "title": str,
            "narrative": str,
            "categories": str,
            "primary_category": str,
            "occurred_start": str,
            "occurred_end": str,
            "occurred_precision": str,
            "occurred_approximate": bool,
            "lat": float,
            "lon": float,
            "accuracy_m": float,
            "place": str,
            "location_source": str,
            "sensitivity": str,
            "language": str,
            "created_at": str,
            "claimed_time": str,
            "received_at": str,
            "clock_source": str,
            "clock_synced": bool,
            "author_key": str,
            "author_name": str,
            "sequence": int,
            "envelope_id": str,
            "supersedes": str,
            "body_json": str,
        },
        # Report ids are chosen by devices; two authors could collide, envelope ids cannot.
        pk="envelope_id",
        if_not_exists=True,
    )
    db.table("envelopes").create(
        {
            "envelope_id": str,
            "tag": bytes,
            "status": str,
            "reason": str,
            "author_key": str,
            "sequence": int,
            "first_seen": str,
            "receipt_serial": int,
            "data": bytes,
        },
        pk="envelope_id",
        if_not_exists=True,
    )
    db.table("envelopes").create_index(["receipt_serial"], if_not_exists=True)
    db.table("reports").create_index(["id"], if_not_exists=True)
    db.table("chain").create(
        {
            "author_key": str,
            "sequence": int,
            "header_hash": bytes,
            "previous": bytes,
            "envelope_id": str,
        },
        pk=("author_key", "sequence"),
        if_not_exists=True,
    )
    alerts = {
        "kind": str,  # fork | gap | quarantined | sequence jump | quarantine full | attachment
        "author_key": str,
        "author_name": str,
        "sequence": int,
        "envelope_id": str,
        "first_missing": int,  # gaps: a range, never a list of numbers (SPEC.md §8.7)
        "last_missing": int,
        "missing_count": int,
        "detail": str,
        "at": str,
    }
    db.table("alerts").create(alerts, if_not_exists=True)
    _add_missing_columns(db, "alerts", alerts)
    db.table("alerts").create_index(["kind"], if_not_exists=True)
    # Envelopes HQ opened but refused, with their bytes, for review (SPEC.md §9).
    db.table("quarantine").create(
        {
            "id": int,
            "envelope_id": str,
            "reason": str,
            "author_key": str,
            "author_name": str,
            "sequence": int,
            "held_at": str,
            "attempts": int,
            "size": int,
            "data": bytes,
        },
        pk="id",
        if_not_exists=True,
    )
    db.table("quarantine").create_index(["envelope_id"], unique=True, if_not_exists=True)
    db.table("authors").create(
        {"author_key": str, "name": str, "node_key": str, "enrolled_at": str},
        pk="author_key",
        if_not_exists=True,
    )
    db.table("nodes").create(
        {"node_key": str, "role": str, "serial": int, "enrolled_at": str},
        pk="serial",
        if_not_exists=True,
    )
    receipts = {"serial": int, "created_at": str, "count": int, "status": str, "item": bytes}
    db.table("receipts").create(receipts, pk="serial", if_not_exists=True)
    _add_missing_columns(db, "receipts", receipts)


def _add_missing_columns(db: sqlite_utils.Database, table: str, columns: dict[str, type]) -> None:
    """Columns added since a table was first made (an HQ directory of an older version)."""
    present = set(db.table(table).columns_dict)
    for name, kind in columns.items():
        if name not in present:
            db.table(table).add_column(name, kind)
