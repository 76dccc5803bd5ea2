"""Headquarters: network creation, enrolment, ingest into the analyst database, receipts.

Layout of an HQ directory::

    hq.secret      root, certificate, receipt and HQ encryption keys and the network key,
                   sealed with the HQ passphrase (move the root key offline: SPEC.md §4)
    manifest.item  the current root-signed network manifest
    hq.db          the analyst database (sqlite-utils; open it with Datasette)

The analyst database has one row per report in ``reports`` (with ``lat``/``lon``
columns), every envelope HQ has seen in ``envelopes`` (accepted, duplicate, fork or
rejected, with the reason), fork and gap ``alerts``, enrolled ``authors`` and ``nodes``,
and the signed ``receipts`` HQ has issued.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from fieldsync import hq_media, keystore
from fieldsync.errors import FieldsyncError, InputRefused, NotFound
from fieldsync.node import Node, Progress, _read_bundle, utc_text
from fieldsync.store import now_seconds
from fieldsync_protocol import codec, crypto, membership
from fieldsync_protocol.bundle import BundleReader, BundleWriter
from fieldsync_protocol.envelope import OpenedReport, open_report, parse_outer
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.items import ItemKind, parse_item
from fieldsync_protocol.keytext import KeyKind, fingerprint, key_to_text
from fieldsync_protocol.receipt import MAX_TAGS, Receipt, sign_receipt

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


@dataclass
class IngestSummary:
    new: int = 0
    duplicate: int = 0
    forks: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    other_items: int = 0
    chunks: int = 0
    media: dict[str, int] = field(default_factory=dict)
    gaps: dict[str, list[int]] = field(default_factory=dict)
    fork_alerts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "new": self.new,
            "duplicate": self.duplicate,
            "forks": self.forks,
            "rejected": sum(self.rejected.values()),
            "rejected_reasons": self.rejected,
            "other_items": self.other_items,
            "chunks": self.chunks,
            "media": self.media,
            "gaps": self.gaps,
            "fork_alerts": self.fork_alerts,
        }


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
    def __init__(self, directory: Path) -> None:
        self.directory = directory
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
            db = sqlite_utils.Database(self.directory / DATABASE)
            # Autocommit mode: our own BEGIN IMMEDIATE ... COMMIT make each ingest atomic.
            db.conn.isolation_level = None
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
        try:
            request = membership.decode_request(request_text)
        except RemoteProtocolError as exc:
            raise InputRefused(f"enrolment request refused: {exc}") from exc
        keys = self.unlock(passphrase)
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
        with _transaction(db):
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
        summary.gaps = self.gaps()
        return summary

    def ingest_items(self, items: Iterator[bytes], keys: HqSecrets, summary: IngestSummary) -> None:
        """Ingest one source atomically (all or nothing, durable before receipts)."""
        manifest = self.manifest()
        authors = self.enrolled_authors()
        db = self.database()
        with _transaction(db):
            for data in items:
                item = parse_item(data)
                if item.kind is ItemKind.CHUNK:  # media hook 1 (fieldsync.hq_media)
                    summary.chunks += hq_media.store_chunk(db, item)
                    continue
                if item.kind is not ItemKind.ENVELOPE:
                    summary.other_items += 1
                    continue
                envelope_id = item.id.hex()
                if db.execute(
                    "SELECT 1 FROM envelopes WHERE envelope_id = ?", [envelope_id]
                ).fetchone():
                    summary.duplicate += 1
                    continue
                row: dict[str, Any] = {
                    "envelope_id": envelope_id,
                    "tag": item.tag,
                    "first_seen": utc_text(now_seconds()),
                    "receipt_serial": None,
                }
                try:
                    opened = open_report(
                        parse_outer(item.fields), manifest.network_id, keys.hq_secrets, authors
                    )
                except RemoteProtocolError as exc:
                    reason = str(exc)
                    summary.rejected[reason] = summary.rejected.get(reason, 0) + 1
                    _insert(
                        db,
                        "envelopes",
                        {**row, "status": "rejected", "reason": reason, "data": data},
                    )
                    continue
                status = self._record_report(db, opened, envelope_id, authors, summary)
                if status == "accepted":  # media hook 2
                    hq_media.record_attachments(db, opened, envelope_id)
                _insert(
                    db,
                    "envelopes",
                    {
                        **row,
                        "status": status,
                        "reason": None,
                        "author_key": key_to_text(KeyKind.AUTHOR, opened.author_key),
                        "sequence": opened.sequence,
                        "data": data if status == "fork" else None,
                    },
                )
        # Media hook 3: after the commit, assemble every attachment whose chunks are all held.
        for outcome, count in hq_media.assemble_ready(self.directory, db).items():
            summary.media[outcome] = summary.media.get(outcome, 0) + count

    def _record_report(
        self,
        db: sqlite_utils.Database,
        opened: OpenedReport,
        envelope_id: str,
        authors: dict[bytes, str],
        summary: IngestSummary,
    ) -> str:
        author_text = key_to_text(KeyKind.AUTHOR, opened.author_key)
        existing = db.execute(
            "SELECT header_hash, envelope_id FROM chain WHERE author_key = ? AND sequence = ?",
            [author_text, opened.sequence],
        ).fetchone()
        if existing is not None:
            if existing[0] == opened.header_hash:
                summary.duplicate += 1  # the same signed report, sealed again
                return "duplicate"
            summary.forks += 1
            alert = {
                "kind": "fork",
                "author_key": author_text,
                "author_name": authors.get(opened.author_key, ""),
                "sequence": opened.sequence,
                "detail": f"envelopes {existing[1]} and {envelope_id} carry different reports"
                f" with the same sequence number",
                "at": utc_text(now_seconds()),
            }
            _insert(db, "alerts", alert)
            summary.fork_alerts.append(alert)
            return "fork"
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
        _insert(
            db,
            "reports",
            _report_row(opened, author_text, authors.get(opened.author_key, ""), envelope_id),
        )
        summary.new += 1
        return "accepted"

    def gaps(self) -> dict[str, list[int]]:
        """Per author, the sequence numbers below the highest seen that HQ has not received."""
        gaps: dict[str, list[int]] = {}
        rows = (
            self.database()
            .execute(
                "SELECT author_key, max(sequence), group_concat(sequence)"
                " FROM chain GROUP BY author_key"
            )
            .fetchall()
        )
        for author_key, highest, seen_text in rows:
            seen = {int(s) for s in seen_text.split(",")}
            missing = [s for s in range(1, highest + 1) if s not in seen]
            if missing:
                gaps[author_key] = missing
        return gaps

    # --- receipts ----------------------------------------------------------------------

    def issue_receipts(self, passphrase: str) -> int:
        """Sign receipts for every envelope HQ has recorded but not yet receipted."""
        return self._issue_receipts(self.unlock(passphrase))

    def _issue_receipts(self, keys: HqSecrets) -> int:
        manifest = self.manifest()
        db = self.database()
        pending = db.execute(
            "SELECT envelope_id, tag FROM envelopes WHERE receipt_serial IS NULL ORDER BY rowid"
        ).fetchall()
        # Media hook 4: chunks HQ holds are receipted too, so every holder deletes them.
        pending += [(chunk_id, tag) for chunk_id, tag in hq_media.unreceipted_chunks(db)]
        made = 0
        with _transaction(db):
            for start in range(0, len(pending), MAX_TAGS):
                batch = pending[start : start + MAX_TAGS]
                serial = int(
                    db.execute("SELECT coalesce(max(serial), 0) + 1 FROM receipts").fetchone()[0]
                )
                item = sign_receipt(
                    Receipt(
                        manifest.network_id, serial, now_seconds(), tuple(tag for _, tag in batch)
                    ),
                    keys.receipt_seed,
                )
                _insert(
                    db,
                    "receipts",
                    {
                        "serial": serial,
                        "created_at": utc_text(now_seconds()),
                        "count": len(batch),
                        "item": item,
                    },
                )
                db.conn.executemany(
                    "UPDATE envelopes SET receipt_serial = ? WHERE envelope_id = ?",
                    [
                        (serial, envelope_id)
                        for envelope_id, _ in batch
                        if isinstance(envelope_id, str)
                    ],
                )
                hq_media.mark_receipted(
                    db, serial, [chunk_id for chunk_id, _ in batch if isinstance(chunk_id, bytes)]
                )
                made += 1
        return made

    def write_receipts_bundle(self, out: Path, passphrase: str) -> dict[str, int]:
        """Issue pending receipts and write all receipts plus the manifest to a bundle."""
        keystore.check_output(out, "receipts bundle")
        keys = self.unlock(passphrase)  # once: Argon2id takes seconds on a small device
        new = self._issue_receipts(keys)
        manifest = self.manifest()
        writer = BundleWriter(keys.network_key, manifest.network_id, secrets.token_bytes(16))
        tmp = out.with_name(f".{out.name}.partial")
        envelopes = 0
        with open(tmp, "wb") as handle:
            handle.write(writer.add(self.manifest_item()))
            for row in self.database().execute("SELECT item, count FROM receipts ORDER BY serial"):
                handle.write(writer.add(row[0]))
                envelopes += row[1]
            handle.write(writer.finish())
        tmp.replace(out)
        return {
            "receipts_new": new,
            "receipts_total": writer.items_written - 1,
            "envelopes_receipted": envelopes,
        }

    # --- the hub path ------------------------------------------------------------------

    def hub_node(self, passphrase: str) -> Path:
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
                enrolment, _ = self.enroll((home / "request.txt").read_text(), passphrase, "hub")
                node.join(enrolment)
            finally:
                node.close()
        return home

    def receipt_items(self) -> list[bytes]:
        return [
            row[0] for row in self.database().execute("SELECT item FROM receipts ORDER BY serial")
        ]


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
        # Media hook 5: attachments as name, type, size and SHA-256 (no keys, no chunk ids).
        "body_json": json.dumps(hq_media.public_body(body), ensure_ascii=False, sort_keys=True),
    }


@contextmanager
def _transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """One durable transaction; sqlite-utils' own write helpers would commit early inside it."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


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
    db.table("alerts").create(
        {
            "kind": str,
            "author_key": str,
            "author_name": str,
            "sequence": int,
            "detail": str,
            "at": str,
        },
        if_not_exists=True,
    )
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
    db.table("receipts").create(
        {"serial": int, "created_at": str, "count": int, "item": bytes},
        pk="serial",
        if_not_exists=True,
    )
