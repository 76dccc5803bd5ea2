"""The analyst database (``HQDIR/hq.db``): opening it privately, and its numbered migrations.

The schema's version is SQLite's ``PRAGMA user_version``. Each migration brings the database
from version N-1 to N in one ``BEGIN IMMEDIATE`` transaction that also sets the new version,
so a crash mid-upgrade leaves the previous version, whole, and the next open finishes the job.
Migrations are additive: tables and columns are added, never renamed or dropped, so every row
and every query written for an older version (exports, Datasette, the analyst's own SQL) keep
working. A database written by a newer fieldsync (a version this one does not know) is refused
with a message that says so, before anything is changed.

Version 0 is every database before numbered migrations (fieldsync 0.1.0 created its tables
"if missing"): migration 1 makes exactly that schema, idempotently, so an old database and an
empty file reach the same version 1.

The database, its WAL and its shared-memory file are created 0600 (SQLite gives the WAL and
SHM the permissions of the database file), in an HQ directory kept 0700: the database holds
every report in clear.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlite_utils

from fieldsync import cipher_db
from fieldsync.errors import FieldsyncError
from fieldsync.sqlite_tx import immediate_transaction

log = logging.getLogger(__name__)

DATABASE = "hq.db"
#: What SQLite writes beside the database in WAL mode.
DATABASE_SIDE_FILES = ("-wal", "-shm", "-journal")


#: Attachments at HQ (chunks held until their attachment verifies; one row per attachment).
MEDIA_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS media_chunks (
        chunk_id BLOB PRIMARY KEY,
        tag BLOB NOT NULL,
        data BLOB,                      -- NULL once the attachment naming it verified
        first_seen INTEGER NOT NULL,
        receipt_serial INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS media_chunks_unreceipted ON media_chunks(receipt_serial)",
    """CREATE TABLE IF NOT EXISTS media_attachments (
        envelope_id TEXT NOT NULL,
        ordinal INTEGER NOT NULL,
        report_id TEXT NOT NULL,
        name TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        entry BLOB NOT NULL,            -- the signed entry (msgpack), key included
        chunks INTEGER NOT NULL,
        status TEXT NOT NULL,           -- pending | verified | failed
        path TEXT,                      -- relative to the HQ directory, once verified
        detail TEXT,
        PRIMARY KEY (envelope_id, ordinal)
    )""",
    "CREATE INDEX IF NOT EXISTS media_attachments_report ON media_attachments(report_id)",
)


class NewerDatabase(FieldsyncError):
    """hq.db was written by a newer fieldsync: refused, nothing changed."""


def _baseline(conn: sqlite3.Connection) -> None:
    """Version 1: the schema of fieldsync 0.1.0, made idempotently (its databases are 0)."""
    for statement in _BASELINE:
        conn.execute(statement)
    for statement in MEDIA_SCHEMA:
        conn.execute(statement)
    # Some 0.1.0 databases predate these columns (they were added "if missing" then).
    _add_columns(
        conn,
        "alerts",
        {
            "sequence": "INTEGER",
            "envelope_id": "TEXT",
            "first_missing": "INTEGER",
            "last_missing": "INTEGER",
            "missing_count": "INTEGER",
            "detail": "TEXT",
            "at": "TEXT",
        },
    )
    _add_columns(conn, "receipts", {"count": "INTEGER", "status": "TEXT", "item": "BLOB"})


def _alert_states(conn: sqlite3.Connection) -> None:
    """Version 2: alerts get an id, a dedup key, first/last seen, a count and a state; forks
    keep their report readable (``forked_reports``); gaps no longer vanish when filled."""
    conn.execute(
        """CREATE TABLE alerts_v2 (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            author_key TEXT,
            author_name TEXT,
            sequence INTEGER,
            envelope_id TEXT,
            first_missing INTEGER,
            last_missing INTEGER,
            missing_count INTEGER,
            detail TEXT,
            at TEXT,
            alert_key TEXT NOT NULL,
            first_seen TEXT,
            last_seen TEXT,
            count INTEGER NOT NULL DEFAULT 1,
            state TEXT NOT NULL DEFAULT 'open',
            acknowledged_at TEXT,
            resolved_at TEXT
        )"""
    )
    # Old rows keep their rowid as id. Their key is what a new alert of the same event
    # would get, so the event is not alerted twice; a second old row of the same key (the
    # old "quarantine full" alerts, one per ingest) keeps a key of its own.
    conn.execute(
        "INSERT INTO alerts_v2 (id, kind, author_key, author_name, sequence, envelope_id,"
        " first_missing, last_missing, missing_count, detail, at, alert_key, first_seen,"
        " last_seen)"
        " SELECT rowid, coalesce(kind, 'unknown'), author_key, author_name, sequence,"
        " envelope_id, first_missing, last_missing, missing_count, detail, at,"
        " coalesce(kind, 'unknown') || ':' || CASE kind"
        "   WHEN 'gap' THEN coalesce(author_key, '') || ':' || coalesce(first_missing, '')"
        "     || '-' || coalesce(last_missing, '')"
        "   WHEN 'quarantine full' THEN 'bounds'"
        "   ELSE coalesce(envelope_id, 'row ' || rowid) END,"
        " at, at FROM alerts ORDER BY rowid"
    )
    conn.execute(
        "UPDATE alerts_v2 SET alert_key = alert_key || '#' || id WHERE id NOT IN"
        " (SELECT min(id) FROM alerts_v2 GROUP BY alert_key)"
    )
    conn.execute("DROP TABLE alerts")
    conn.execute("ALTER TABLE alerts_v2 RENAME TO alerts")
    conn.execute("CREATE UNIQUE INDEX alerts_key ON alerts(alert_key)")
    conn.execute("CREATE INDEX idx_alerts_kind ON alerts(kind)")
    conn.execute("CREATE INDEX alerts_state ON alerts(state, last_seen)")
    # The second report of a fork, readable without the HQ passphrase (same columns as
    # ``reports`` plus the envelope it conflicts with); exports read ``reports`` only.
    report_columns = ", ".join(f"[{name}] {kind}" for name, kind in REPORT_COLUMNS)
    conn.execute(
        f"CREATE TABLE forked_reports ({report_columns}, fork_of TEXT, PRIMARY KEY (envelope_id))"
    )
    conn.execute("CREATE INDEX forked_reports_chain ON forked_reports(author_key, sequence)")
    conn.execute("CREATE INDEX reports_supersedes ON reports(supersedes)")
    conn.execute("CREATE INDEX reports_chain ON reports(author_key, sequence)")


def _analyst_views(conn: sqlite3.Connection) -> None:
    """Version 3: views without blobs or raw bodies, for Datasette and any SQLite tool
    (``fieldsync hq serve`` shows these and hides the tables they read)."""
    report_columns = (
        "{t}.envelope_id, {t}.id, {t}.title, {t}.narrative, {t}.primary_category AS category,"
        " {t}.categories, {t}.occurred_start, {t}.occurred_end, {t}.occurred_precision,"
        " {t}.occurred_approximate, {t}.place, {t}.lat, {t}.lon, {t}.accuracy_m,"
        " {t}.sensitivity, {t}.language, {t}.author_name, {t}.sequence, {t}.supersedes,"
        " (SELECT count(*) FROM media_attachments m WHERE m.envelope_id = {t}.envelope_id)"
        " AS attachments, {t}.received_at, {t}.claimed_time, {t}.created_at, {t}.clock_synced"
    )
    view = (
        "CREATE VIEW report_list AS SELECT "  # noqa: S608 - our own columns, no input
        + report_columns.format(t="r")
        + ", CASE WHEN EXISTS (SELECT 1 FROM reports n WHERE n.supersedes = r.id"
        " AND n.author_key = r.author_key) THEN 'superseded'"
        " WHEN EXISTS (SELECT 1 FROM forked_reports f WHERE f.author_key = r.author_key"
        " AND f.sequence = r.sequence) THEN 'forked' ELSE 'current' END AS status"
        " FROM reports r UNION ALL SELECT "
        + report_columns.format(t="f")
        + ", 'fork: second report' AS status FROM forked_reports f"
    )
    conn.execute(view)
    conn.execute(
        "CREATE VIEW attachment_list AS SELECT report_id, envelope_id, ordinal + 1 AS number,"
        " name, media_type, size, sha256, status, path, detail FROM media_attachments"
    )
    conn.execute(
        "CREATE VIEW envelope_log AS SELECT e.envelope_id, e.status, e.reason,"
        " coalesce(nullif(a.name, ''), e.author_key) AS author, e.sequence, e.first_seen,"
        " e.receipt_serial FROM envelopes e LEFT JOIN authors a ON a.author_key = e.author_key"
    )
    conn.execute(
        "CREATE VIEW quarantine_list AS SELECT id, envelope_id, reason,"
        " coalesce(nullif(author_name, ''), author_key) AS author, sequence, held_at, attempts,"
        " size FROM quarantine"
    )
    conn.execute(
        "CREATE VIEW receipt_list AS SELECT serial, created_at, count, status FROM receipts"
    )


def _revocation(conn: sqlite3.Connection) -> None:
    """Version 4: revocation and renewal (SPEC.md §17, ``fieldsync.hq_revocation``): the
    revoked keys with HQ-only reasons, the signed revocation lists, the key deliveries."""
    conn.execute(
        """CREATE TABLE revoked (
            key TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            cutoff INTEGER,
            reason TEXT,
            revoked_at TEXT,
            list_serial INTEGER
        )"""
    )
    conn.execute(
        """CREATE TABLE revocation_lists (
            serial INTEGER PRIMARY KEY,
            created_at TEXT,
            time INTEGER NOT NULL,
            item BLOB NOT NULL
        )"""
    )
    conn.execute(
        """CREATE TABLE key_deliveries (
            serial INTEGER PRIMARY KEY,
            node_key TEXT NOT NULL,
            created_at TEXT,
            expires INTEGER,
            item BLOB NOT NULL
        )"""
    )
    conn.execute("CREATE INDEX key_deliveries_node_key ON key_deliveries (node_key)")


def _media_file_keys(conn: sqlite3.Connection) -> None:
    """Version 5: each verified attachment file is sealed at rest under its own random key
    (``fieldsync.hq_media_seal``), kept here; NULL for a plaintext file of an older HQ until
    ``hq_media.seal_plaintext_files`` seals it."""
    _add_columns(conn, "media_attachments", {"file_key": "BLOB"})


#: Migration N is MIGRATIONS[N - 1]. Append only; never edit a released one.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _baseline,
    _alert_states,
    _analyst_views,
    _revocation,
    _media_file_keys,
)
SCHEMA_VERSION = len(MIGRATIONS)

#: The columns of ``reports`` (and of ``forked_reports``), as fieldsync 0.1.0 made them.
REPORT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "TEXT"),
    ("title", "TEXT"),
    ("narrative", "TEXT"),
    ("categories", "TEXT"),
    ("primary_category", "TEXT"),
    ("occurred_start", "TEXT"),
    ("occurred_end", "TEXT"),
    ("occurred_precision", "TEXT"),
    ("occurred_approximate", "INTEGER"),
    ("lat", "REAL"),
    ("lon", "REAL"),
    ("accuracy_m", "REAL"),
    ("place", "TEXT"),
    ("location_source", "TEXT"),
    ("sensitivity", "TEXT"),
    ("language", "TEXT"),
    ("created_at", "TEXT"),
    ("claimed_time", "TEXT"),
    ("received_at", "TEXT"),
    ("clock_source", "TEXT"),
    ("clock_synced", "INTEGER"),
    ("author_key", "TEXT"),
    ("author_name", "TEXT"),
    ("sequence", "INTEGER"),
    ("envelope_id", "TEXT"),
    ("supersedes", "TEXT"),
    ("body_json", "TEXT"),
)

_BASELINE = (
    "CREATE TABLE IF NOT EXISTS reports ("
    + ", ".join(
        f"[{name}] {kind}" + (" PRIMARY KEY" if name == "envelope_id" else "")
        for name, kind in REPORT_COLUMNS
    )
    + ")",
    """CREATE TABLE IF NOT EXISTS envelopes (
        envelope_id TEXT PRIMARY KEY,
        tag BLOB,
        status TEXT,
        reason TEXT,
        author_key TEXT,
        sequence INTEGER,
        first_seen TEXT,
        receipt_serial INTEGER,
        data BLOB
    )""",
    "CREATE INDEX IF NOT EXISTS idx_envelopes_receipt_serial ON envelopes(receipt_serial)",
    "CREATE INDEX IF NOT EXISTS idx_reports_id ON reports(id)",
    """CREATE TABLE IF NOT EXISTS chain (
        author_key TEXT,
        sequence INTEGER,
        header_hash BLOB,
        previous BLOB,
        envelope_id TEXT,
        PRIMARY KEY (author_key, sequence)
    )""",
    """CREATE TABLE IF NOT EXISTS alerts (
        kind TEXT,
        author_key TEXT,
        author_name TEXT,
        sequence INTEGER,
        envelope_id TEXT,
        first_missing INTEGER,
        last_missing INTEGER,
        missing_count INTEGER,
        detail TEXT,
        at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS idx_alerts_kind ON alerts(kind)",
    """CREATE TABLE IF NOT EXISTS quarantine (
        id INTEGER PRIMARY KEY,
        envelope_id TEXT,
        reason TEXT,
        author_key TEXT,
        author_name TEXT,
        sequence INTEGER,
        held_at TEXT,
        attempts INTEGER,
        size INTEGER,
        data BLOB
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_quarantine_envelope_id ON quarantine(envelope_id)",
    """CREATE TABLE IF NOT EXISTS authors (
        author_key TEXT PRIMARY KEY, name TEXT, node_key TEXT, enrolled_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS nodes (
        node_key TEXT, role TEXT, serial INTEGER PRIMARY KEY, enrolled_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS receipts (
        serial INTEGER PRIMARY KEY, created_at TEXT, count INTEGER, status TEXT, item BLOB
    )""",
)


def _add_columns(conn: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    present = {row[1] for row in conn.execute(f"PRAGMA table_info([{table}])")}
    for name, kind in columns.items():
        if name not in present:
            conn.execute(f"ALTER TABLE [{table}] ADD COLUMN [{name}] {kind}")


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path | str = DATABASE) -> int:
    """Bring the database to ``SCHEMA_VERSION``; return how many migrations ran.

    Refuses (``NewerDatabase``) a database of a newer version, changing nothing.
    """
    ran = 0
    while True:
        with immediate_transaction(conn):
            # Read under the write lock: two processes opening at once migrate once.
            version = schema_version(conn)
            if version > SCHEMA_VERSION:
                raise NewerDatabase(
                    f"{path} has schema version {version}, newer than this fieldsync knows"
                    f" ({SCHEMA_VERSION}): it was written by a newer release. Upgrade fieldsync"
                    " (pip install --upgrade fieldsync) to open it; nothing was changed"
                )
            if version == SCHEMA_VERSION:
                return ran
            MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
        log.info("hq.db: migrated schema %d -> %d", version, version + 1)
        ran += 1


def make_private_directory(directory: Path) -> None:
    """Create ``directory`` (and parents) 0700, or tighten an existing one to 0700."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(directory.stat().st_mode) != 0o700:
        os.chmod(directory, 0o700)


def make_private_file(path: Path) -> None:
    """Create ``path`` empty 0600 if missing, else tighten it to 0600 (an older HQ's 0644)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def open_database(directory: Path, key: bytes) -> sqlite_utils.Database:
    """Open (creating 0600) and migrate ``directory/hq.db``; the directory is kept 0700.

    The database is encrypted (SQLCipher) under ``key``, the random database key sealed
    under the HQ passphrase (``HQ.database_key``); a plaintext ``hq.db`` of an older HQ is
    encrypted first (``cipher_db.encrypt_plaintext``). A wrong key: ``WrongDatabaseKey``.

    Autocommit mode: our own ``BEGIN IMMEDIATE … COMMIT`` make each ingest atomic. Any one
    thread at a time may use the connection: the hub path runs it off the event loop.
    """
    make_private_directory(directory)
    path = directory / DATABASE
    make_private_file(path)
    for suffix in DATABASE_SIDE_FILES:
        side = directory / f"{DATABASE}{suffix}"
        if side.exists():
            make_private_file(side)
    if cipher_db.is_plaintext(path):
        cipher_db.encrypt_plaintext(path, key)
    conn = cipher_db.connect(path, key, what="HQ database")
    try:
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return sqlite_utils.Database(conn)


def insert(
    db: sqlite_utils.Database, table: str, row: dict[str, Any], replace: bool = False
) -> int:
    """Insert one row inside the caller's transaction (sqlite-utils' helpers would commit);
    return its rowid."""
    columns = ", ".join(f"[{name}]" for name in row)
    marks = ", ".join("?" for _ in row)
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    cursor = db.conn.execute(
        f"{verb} INTO [{table}] ({columns}) VALUES ({marks})", list(row.values())
    )
    return int(cursor.lastrowid or 0)
