"""The analyst database's numbered migrations: a database made by the previous release
(fieldsync 0.1.0, tables created "if missing", no schema version) upgrades keeping every row;
a database of a newer release is refused unchanged; a migration that fails leaves the
previous version whole. Real SQLite files throughout."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from fieldsync import hq_schema
from fieldsync.cipher_db import DB_ERRORS
from fieldsync.hq import DATABASE, HQ, NewerDatabase
from fieldsync.hq_schema import SCHEMA_VERSION, open_database
from fieldsync_protocol import crypto
from fieldsync_protocol.keytext import KeyKind, key_to_text
from tests.fieldsync.offline_support import (
    PASSPHRASE,
    Net,
    author_seed,
    hq_db_connect,
    hq_manifest,
    ingest,
    open_hq,
    seal,
    write_bundle,
)

#: fieldsync 0.1.0's schema, exactly as it created it (sqlite_master of a fresh HQ).
OLD_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS "reports" (
   "id" TEXT, "title" TEXT, "narrative" TEXT, "categories" TEXT, "primary_category" TEXT,
   "occurred_start" TEXT, "occurred_end" TEXT, "occurred_precision" TEXT,
   "occurred_approximate" INTEGER, "lat" REAL, "lon" REAL, "accuracy_m" REAL, "place" TEXT,
   "location_source" TEXT, "sensitivity" TEXT, "language" TEXT, "created_at" TEXT,
   "claimed_time" TEXT, "received_at" TEXT, "clock_source" TEXT, "clock_synced" INTEGER,
   "author_key" TEXT, "author_name" TEXT, "sequence" INTEGER, "envelope_id" TEXT PRIMARY KEY,
   "supersedes" TEXT, "body_json" TEXT
)""",
    """CREATE TABLE IF NOT EXISTS "envelopes" (
   "envelope_id" TEXT PRIMARY KEY, "tag" BLOB, "status" TEXT, "reason" TEXT,
   "author_key" TEXT, "sequence" INTEGER, "first_seen" TEXT, "receipt_serial" INTEGER,
   "data" BLOB
)""",
    'CREATE INDEX "idx_envelopes_receipt_serial" ON "envelopes" ("receipt_serial")',
    'CREATE INDEX "idx_reports_id" ON "reports" ("id")',
    """CREATE TABLE IF NOT EXISTS "chain" (
   "author_key" TEXT, "sequence" INTEGER, "header_hash" BLOB, "previous" BLOB,
   "envelope_id" TEXT, PRIMARY KEY ("author_key", "sequence")
)""",
    """CREATE TABLE IF NOT EXISTS "alerts" (
   "kind" TEXT, "author_key" TEXT, "author_name" TEXT, "sequence" INTEGER,
   "envelope_id" TEXT, "first_missing" INTEGER, "last_missing" INTEGER,
   "missing_count" INTEGER, "detail" TEXT, "at" TEXT
)""",
    'CREATE INDEX "idx_alerts_kind" ON "alerts" ("kind")',
    """CREATE TABLE IF NOT EXISTS "quarantine" (
   "id" INTEGER PRIMARY KEY, "envelope_id" TEXT, "reason" TEXT, "author_key" TEXT,
   "author_name" TEXT, "sequence" INTEGER, "held_at" TEXT, "attempts" INTEGER,
   "size" INTEGER, "data" BLOB
)""",
    'CREATE UNIQUE INDEX "idx_quarantine_envelope_id" ON "quarantine" ("envelope_id")',
    """CREATE TABLE IF NOT EXISTS "authors" (
   "author_key" TEXT PRIMARY KEY, "name" TEXT, "node_key" TEXT, "enrolled_at" TEXT
)""",
    """CREATE TABLE IF NOT EXISTS "nodes" (
   "node_key" TEXT, "role" TEXT, "serial" INTEGER PRIMARY KEY, "enrolled_at" TEXT
)""",
    """CREATE TABLE IF NOT EXISTS "receipts" (
   "serial" INTEGER PRIMARY KEY, "created_at" TEXT, "count" INTEGER, "status" TEXT,
   "item" BLOB
)""",
    """CREATE TABLE media_chunks (
        chunk_id BLOB PRIMARY KEY, tag BLOB NOT NULL, data BLOB,
        first_seen INTEGER NOT NULL, receipt_serial INTEGER
    )""",
    "CREATE INDEX media_chunks_unreceipted ON media_chunks(receipt_serial)",
    """CREATE TABLE media_attachments (
        envelope_id TEXT NOT NULL, ordinal INTEGER NOT NULL, report_id TEXT NOT NULL,
        name TEXT NOT NULL, media_type TEXT NOT NULL, size INTEGER NOT NULL,
        sha256 TEXT NOT NULL, entry BLOB NOT NULL, chunks INTEGER NOT NULL,
        status TEXT NOT NULL, path TEXT, detail TEXT,
        PRIMARY KEY (envelope_id, ordinal)
    )""",
    "CREATE INDEX media_attachments_report ON media_attachments(report_id)",
)

AT = "2025-03-01T10:00:00Z"


def _old_rows(author: str) -> dict[str, list[dict[str, Any]]]:
    """A little of everything 0.1.0 wrote: author seq 1 and 3 accepted (2 missing), a fork
    of 3, a held stranger, junk, two "quarantine full" alerts, receipts, media."""
    report = {
        "id": "r-1",
        "title": "Market arrests",
        "narrative": "at the market",
        "categories": '["arbitrary-detention"]',
        "primary_category": "arbitrary-detention",
        "occurred_start": "2025-03",
        "occurred_precision": "month",
        "occurred_approximate": 1,
        "lat": 12.5,
        "lon": -1.25,
        "sensitivity": "internal",
        "language": "en",
        "author_key": author,
        "author_name": "monitor-17",
        "sequence": 1,
        "envelope_id": "e1",
        "body_json": "{}",
    }
    return {
        "reports": [report, {**report, "id": "r-3", "sequence": 3, "envelope_id": "e3"}],
        "envelopes": [
            {
                "envelope_id": "e1",
                "tag": b"t1",
                "status": "accepted",
                "author_key": author,
                "sequence": 1,
                "first_seen": AT,
                "receipt_serial": 1,
            },
            {
                "envelope_id": "e3",
                "tag": b"t3",
                "status": "accepted",
                "author_key": author,
                "sequence": 3,
                "first_seen": AT,
            },
            {
                "envelope_id": "f3",
                "tag": b"f3",
                "status": "fork",
                "author_key": author,
                "sequence": 3,
                "first_seen": AT,
                "data": b"evidence",
            },
            {
                "envelope_id": "q1",
                "tag": b"q1",
                "status": "quarantined",
                "reason": "never enrolled",
                "first_seen": AT,
            },
            {
                "envelope_id": "j1",
                "tag": b"j1",
                "status": "junk",
                "reason": "junk",
                "first_seen": AT,
            },
        ],
        "chain": [
            {
                "author_key": author,
                "sequence": 1,
                "header_hash": b"h1",
                "previous": bytes(32),
                "envelope_id": "e1",
            },
            {
                "author_key": author,
                "sequence": 3,
                "header_hash": b"h3",
                "previous": b"h2",
                "envelope_id": "e3",
            },
        ],
        "alerts": [
            {
                "kind": "fork",
                "author_key": author,
                "author_name": "monitor-17",
                "sequence": 3,
                "envelope_id": "f3",
                "detail": "envelopes e3 and f3",
                "at": AT,
            },
            {
                "kind": "gap",
                "author_key": author,
                "author_name": "monitor-17",
                "first_missing": 2,
                "last_missing": 2,
                "missing_count": 1,
                "detail": "sequence numbers 2..2 not received",
                "at": AT,
            },
            {
                "kind": "quarantined",
                "envelope_id": "q1",
                "author_name": "",
                "detail": "held in quarantine: never enrolled",
                "at": AT,
            },
            {"kind": "quarantine full", "detail": "1 refused envelopes were not kept", "at": AT},
            {"kind": "quarantine full", "detail": "2 refused envelopes were not kept", "at": AT},
        ],
        "quarantine": [
            {
                "id": 1,
                "envelope_id": "q1",
                "reason": "never enrolled",
                "held_at": AT,
                "attempts": 1,
                "size": 8,
                "data": b"held-env",
            },
        ],
        "receipts": [
            {"serial": 1, "created_at": AT, "count": 1, "status": "accepted", "item": b"r"},
        ],
        "media_chunks": [
            {"chunk_id": b"c1", "tag": b"ct", "data": b"cipher", "first_seen": 1},
        ],
        "media_attachments": [
            {
                "envelope_id": "e1",
                "ordinal": 0,
                "report_id": "r-1",
                "name": "a.jpg",
                "media_type": "image/jpeg",
                "size": 6,
                "sha256": "00",
                "entry": b"x",
                "chunks": 1,
                "status": "verified",
                "path": "media/e1/01-a.jpg",
            },
        ],
    }


def _write_old_database(path: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
    """A 0.1.0 database, 0644 as 0.1.0 left it, keeping the enrolled authors and nodes."""
    keep: dict[str, list[tuple[Any, ...]]] = {}
    if path.exists():
        with hq_db_connect(path.parent) as new:
            keep = {t: new.execute(f"SELECT * FROM {t}").fetchall() for t in ("authors", "nodes")}  # noqa: S608
        path.unlink()
    conn = sqlite3.connect(path)
    try:
        for statement in OLD_SCHEMA:
            conn.execute(statement)
        for table, values in keep.items():
            for kept in values:
                conn.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(kept))})", kept)  # noqa: S608
        for table, table_rows in rows.items():
            for made in table_rows:
                columns = ", ".join(made)
                marks = ", ".join("?" * len(made))
                insert = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608
                conn.execute(insert, list(made.values()))
        conn.commit()
    finally:
        conn.close()
    path.chmod(0o644)


def _dump(path: Path, tables: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``tables``, by the columns 0.1.0 had, in rowid order."""
    conn = hq_db_connect(path.parent)
    try:
        out = {}
        for table in tables:
            old_columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")][
                : _OLD_WIDTH[table]
            ]
            out[table] = conn.execute(
                f"SELECT {', '.join(old_columns)} FROM {table} ORDER BY rowid"  # noqa: S608
            ).fetchall()
        return out
    finally:
        conn.close()


_OLD_WIDTH = {
    "reports": 27,
    "envelopes": 9,
    "chain": 5,
    "quarantine": 10,
    "authors": 4,
    "nodes": 4,
    "receipts": 5,
    "media_chunks": 5,
    "media_attachments": 12,
}


def _author(net: Net) -> str:
    return key_to_text(KeyKind.AUTHOR, crypto.signing_public_key(author_seed(net)))


def test_a_database_of_the_previous_release_upgrades_keeping_every_row(net: Net) -> None:
    path = net.hq / DATABASE
    rows = _old_rows(_author(net))
    _write_old_database(path, rows)
    before = _dump(path, list(_OLD_WIDTH))
    with hq_db_connect(path.parent) as conn:
        old_alerts = conn.execute("SELECT rowid, * FROM alerts ORDER BY rowid").fetchall()

    with open_hq(net) as headquarters:
        db = headquarters.database()
        assert hq_schema.schema_version(db.conn) == SCHEMA_VERSION
        alerts = list(db.query("SELECT * FROM alerts ORDER BY id"))
    assert _dump(path, list(_OLD_WIDTH)) == before  # every row, every old column
    # Alerts were rebuilt with an id: the old rowid, every old value kept, all open.
    old_columns = [
        "kind",
        "author_key",
        "author_name",
        "sequence",
        "envelope_id",
        "first_missing",
        "last_missing",
        "missing_count",
        "detail",
        "at",
    ]
    assert [(a["id"], *(a[c] for c in old_columns)) for a in alerts] == old_alerts
    assert {a["state"] for a in alerts} == {"open"}
    assert all(a["first_seen"] == a["last_seen"] == AT and a["count"] == 1 for a in alerts)
    keys = [a["alert_key"] for a in alerts]
    assert len(set(keys)) == len(keys)  # two "quarantine full" rows keep a key each
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # 0.1.0 left it 0644

    # The upgraded database works on: the legacy gap is the same alert (not new), the
    # legacy fork shows in `report show`, and a new fork of sequence 1 is detected.
    manifest, seed = hq_manifest(net), author_seed(net)
    write_bundle(net, net.usb / "fork.bundle", [seal(manifest, seed, 1, "a different story").item])
    summary = ingest(net, net.usb / "fork.bundle")
    assert summary.forks == 1
    assert [a["kind"] for a in summary.alerts] == ["fork"]
    assert summary.gaps == {_author(net): [{"first": 2, "last": 2, "count": 1}]}
    with open_hq(net) as headquarters:
        shown = headquarters.report("r-3")
        (gap,) = [a for a in headquarters.alerts() if a["kind"] == "gap"]
        newest_fork = headquarters.report("r-1")
    assert [f["envelope_id"] for f in shown["forks"]] == ["f3"]
    assert "older fieldsync" in shown["forks"][0]["note"]
    assert gap["id"] == 2 and gap["first_seen"] == AT and gap["last_seen"] != AT
    assert [f["narrative"] for f in newest_fork["forks"]] == ["a different story"]


def test_opening_again_runs_no_migration_and_a_fresh_database_is_current(tmp_path: Path) -> None:
    db = open_database(tmp_path / "hq", bytes(32))
    try:
        assert hq_schema.schema_version(db.conn) == SCHEMA_VERSION
        assert hq_schema.migrate(db.conn) == 0
    finally:
        db.close()
    assert stat.S_IMODE((tmp_path / "hq").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "hq" / DATABASE).stat().st_mode) == 0o600


def test_a_database_of_a_newer_release_is_refused_unchanged(net: Net) -> None:
    path = net.hq / DATABASE
    with hq_db_connect(path.parent) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    with pytest.raises(NewerDatabase, match="newer than this fieldsync knows") as refused:
        headquarters.database()
    assert f"schema version {SCHEMA_VERSION + 1}" in str(refused.value)
    assert "Upgrade fieldsync" in str(refused.value)
    headquarters.close()
    assert path.read_bytes() == before


def test_a_migration_that_fails_leaves_the_previous_version_whole(net: Net) -> None:
    """An analyst made a table named like one migration 2 adds: the upgrade stops with
    SQLite's error and the database stays at version 1, every row kept."""
    path = net.hq / DATABASE
    _write_old_database(path, _old_rows(_author(net)))
    with hq_db_connect(path.parent) as conn:
        conn.execute("CREATE TABLE forked_reports (mine TEXT)")
    before = _dump(path, list(_OLD_WIDTH))
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        with pytest.raises(DB_ERRORS, match="forked_reports already exists"):
            headquarters.database()
    finally:
        headquarters.close()
    with hq_db_connect(path.parent) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        columns = [row[1] for row in conn.execute("PRAGMA table_info(alerts)")]
        assert (
            "state" not in columns
            and conn.execute("SELECT count(*) FROM alerts").fetchone()[0] == 5
        )
    assert _dump(path, list(_OLD_WIDTH)) == before
    with hq_db_connect(path.parent) as conn:
        conn.execute("DROP TABLE forked_reports")
    with open_hq(net) as upgraded:
        assert hq_schema.schema_version(upgraded.database().conn) == SCHEMA_VERSION
