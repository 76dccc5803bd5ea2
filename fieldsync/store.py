"""The node's item store: SQLite in WAL mode, numbered migrations, durable custody commits.

What it holds (SPEC.md §9, §10): sealed items (envelopes, receipts, manifests) numbered in
arrival order, tombstones (delivery tags of receipted items), the author's outbox (report
id, delivery tag, status) and the author's chain state. It never holds plaintext or keys.

Rules that matter for people's safety:

* ``secure_delete=ON`` and a truncating checkpoint after every purge, so deleted rows do
  not linger in the database or WAL files (reference/security_anchors.md §8.3).
* ``synchronous=FULL``: a batch is on disk before the caller acknowledges it.
* Deletion of an envelope happens only in ``apply_receipt``, from a verified receipt.

A ``Store`` is used by one thread at a time (the CLI's, or the daemon's store thread).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils

from fieldsync.errors import FieldsyncError
from fieldsync_protocol.envelope import TTL_CLASSES
from fieldsync_protocol.items import Checked, ItemKind

#: How long a holder keeps receipts and manifests after it received them (seconds).
RECEIPT_TTL = 365 * 86400

_MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    CREATE TABLE items (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- local arrival number (per-peer deltas)
        id BLOB NOT NULL UNIQUE,                -- BLAKE2b-256 of data
        tag BLOB NOT NULL UNIQUE,               -- delivery tag named by receipts
        kind TEXT NOT NULL,
        data BLOB NOT NULL,
        received_at INTEGER NOT NULL,           -- local clock, seconds
        expires_at INTEGER NOT NULL,            -- received_at + TTL (relative expiry)
        own INTEGER NOT NULL DEFAULT 0          -- written by this node's author
    );
    CREATE INDEX items_kind ON items(kind);
    CREATE TABLE tombstones (
        tag BLOB PRIMARY KEY,
        deleted_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE outbox (
        report_id TEXT PRIMARY KEY,
        tag BLOB NOT NULL UNIQUE,
        sequence INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('sealed', 'delivered')),
        delivered_at INTEGER
    );
    CREATE TABLE author_chain (
        author BLOB PRIMARY KEY,
        sequence INTEGER NOT NULL,
        previous BLOB NOT NULL
    );
    """,
    # 2: what each peer (keyed by its certificate's node key) has given us, for
    # per-peer deltas ("after N") and quotas.
    """
    CREATE TABLE store_meta (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    INSERT INTO store_meta (key, value) VALUES ('epoch', randomblob(16));
    INSERT INTO store_meta (key, value) VALUES ('clock', 0);
    CREATE TABLE peers (
        node_key BLOB PRIMARY KEY,
        cursor_epoch BLOB,                      -- the peer store's epoch the cursor belongs to
        cursor INTEGER NOT NULL DEFAULT 0,      -- the peer's local seq we have fully received
        last_sync INTEGER,
        quota_window INTEGER NOT NULL DEFAULT 0,
        quota_items INTEGER NOT NULL DEFAULT 0,
        quota_bytes INTEGER NOT NULL DEFAULT 0,
        items_received INTEGER NOT NULL DEFAULT 0,
        items_sent INTEGER NOT NULL DEFAULT 0
    );
    """,
    # 3: which peer gave us each item, so a per-peer delta never sends a peer back what it
    # gave us (else every delta bounces once). ``origins`` maps a small number to a peer's
    # node key (the key is already in ``peers``); NULL: written here, bundle or CLI import.
    """
    CREATE TABLE origins (
        ref INTEGER PRIMARY KEY,
        node_key BLOB NOT NULL UNIQUE
    );
    ALTER TABLE items ADD COLUMN origin INTEGER;
    """,
)


@dataclass
class ImportCounts:
    """What happened to a batch of incoming items."""

    new: int = 0
    duplicate: int = 0
    already_delivered: int = 0
    receipts_applied: int = 0
    purged: int = 0
    delivered_own: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    #: Ids added and purged, for callers that keep an index in memory (never written out).
    new_ids: list[bytes] = field(default_factory=list, repr=False)
    purged_ids: list[bytes] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "new": self.new,
            "duplicate": self.duplicate,
            "already_delivered": self.already_delivered,
            "receipts_applied": self.receipts_applied,
            "purged": self.purged,
            "delivered_own": self.delivered_own,
            "kinds": dict(self.kinds),
        }


@dataclass(frozen=True)
class Quota:
    """How much one peer (by certificate node key) may deliver in one quota window."""

    node_key: bytes
    window: int
    max_items: int
    max_bytes: int


class QuotaExceeded(Exception):
    """A peer delivered more than its quota allows; the batch was not stored."""


@dataclass(frozen=True)
class OutboxEntry:
    report_id: str
    sequence: int
    created_at: int
    status: str
    delivered_at: int | None


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "secure_delete=ON",
            "foreign_keys=ON",
            "busy_timeout=10000",
        ):
            self._conn.execute(f"PRAGMA {pragma}")
        self.db = sqlite_utils.Database(self._conn)
        self._clock_cache: int | None = None
        self._migrate()

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(_MIGRATIONS):
            self._conn.close()
            raise FieldsyncError(
                f"{self.path} was written by a newer fieldsync (schema {version}, this one knows"
                f" up to {len(_MIGRATIONS)}); upgrade fieldsync before using this node"
            )
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                for statement in script.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {number}")

    def close(self) -> None:
        self._conn.close()

    def transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    # --- items ---------------------------------------------------------------------------

    def has_item(self, item_id: bytes) -> bool:
        row = self._conn.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone()
        return row is not None

    def add_checked(
        self,
        checked: Checked,
        counts: ImportCounts,
        now: int,
        own: bool = False,
        origin: int | None = None,
    ) -> None:
        """Store one verified item inside the caller's transaction; apply receipts at once."""
        item = checked.item
        kind_name = item.kind.name.lower()
        counts.kinds[kind_name] = counts.kinds.get(kind_name, 0) + 1
        tag = item.tag
        if self._conn.execute("SELECT 1 FROM tombstones WHERE tag = ?", (tag,)).fetchone():
            counts.already_delivered += 1
            return
        if checked.envelope is not None:
            ttl = TTL_CLASSES[checked.envelope.ttl_class]
        else:
            ttl = RECEIPT_TTL
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO items"
            " (id, tag, kind, data, received_at, expires_at, own, origin)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                item.id,
                tag,
                item.kind.value,
                item.data,
                now,
                self._clock_now() + ttl,
                int(own),
                origin,
            ),
        )
        if cursor.rowcount == 0:
            counts.duplicate += 1
            return
        counts.new += 1
        counts.new_ids.append(item.id)
        if checked.receipt is not None:
            self._apply_receipt_tags(checked.receipt.tags, counts, now)

    def _apply_receipt_tags(self, tags: Iterable[bytes], counts: ImportCounts, now: int) -> None:
        counts.receipts_applied += 1
        for tag in tags:
            # Envelopes, attachment chunks and opaque items are receipted (SPEC.md §9, §15.5);
            # receipts and manifests never are.
            purged = self._conn.execute(
                "DELETE FROM items WHERE tag = ? AND kind NOT IN (?, ?) RETURNING id",
                (tag, ItemKind.RECEIPT.value, ItemKind.MANIFEST.value),
            ).fetchall()
            counts.purged += len(purged)
            counts.purged_ids.extend(row[0] for row in purged)
            self._conn.execute(
                "INSERT OR IGNORE INTO tombstones (tag, deleted_at) VALUES (?, ?)", (tag, now)
            )
            counts.delivered_own += self._conn.execute(
                "UPDATE outbox SET status = 'delivered', delivered_at = ?"
                " WHERE tag = ? AND status = 'sealed'",
                (now, tag),
            ).rowcount

    def iter_items(self, batch: int = 500) -> Iterator[bytes]:
        """All stored items in arrival order, read in batches (bounded memory)."""
        last = 0
        while True:
            rows = self._conn.execute(
                "SELECT seq, data FROM items WHERE seq > ? ORDER BY seq LIMIT ?", (last, batch)
            ).fetchall()
            if not rows:
                return
            for seq, data in rows:
                last = seq
                yield data

    def item_count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM items").fetchone()[0])

    def manifest_items(self) -> list[bytes]:
        rows = self._conn.execute(
            "SELECT data FROM items WHERE kind = ? ORDER BY seq", (ItemKind.MANIFEST.value,)
        ).fetchall()
        return [row[0] for row in rows]

    def add_batch(
        self,
        checked: list[Checked],
        now: int,
        origin: bytes | None = None,
        quota: Quota | None = None,
    ) -> ImportCounts:
        """Store a batch from a peer in one durable transaction (commit before ack).

        ``origin``: the node key of the peer that sent it (deltas to it skip these items).
        ``quota``: charge the batch to that peer first, in the same transaction (one fsync
        per batch); over quota raises ``QuotaExceeded`` and stores nothing.
        """
        counts = ImportCounts()
        with self.transaction():
            if quota is not None:
                size = sum(len(c.item.data) for c in checked)
                if not self._charge(quota, len(checked), size):
                    raise QuotaExceeded(
                        f"peer is over its quota for today ({quota.max_items} items)"
                    )
            ref = None if origin is None else self._origin_ref(origin, create=True)
            self._add_many(checked, counts, now, ref)
        if counts.purged:
            self.checkpoint()
        return counts

    def _add_many(
        self, checked: list[Checked], counts: ImportCounts, now: int, origin: int | None
    ) -> None:
        """``add_checked`` for a whole batch: two lookups and one ``executemany`` instead of
        three statements per item (the receiver's hot path, perf S1). Receipts are applied
        after the batch's items are in, so the end state equals one-by-one insertion."""
        tombstoned = self._present("tombstones", "tag", [c.item.tag for c in checked])
        held = self._present("items", "id", [c.item.id for c in checked])
        clock = self._clock_now()
        rows = []
        receipts = []
        for entry in checked:
            item = entry.item
            kind_name = item.kind.name.lower()
            counts.kinds[kind_name] = counts.kinds.get(kind_name, 0) + 1
            if item.tag in tombstoned:
                counts.already_delivered += 1
                continue
            if item.id in held:
                counts.duplicate += 1
                continue
            held.add(item.id)
            ttl = RECEIPT_TTL if entry.envelope is None else TTL_CLASSES[entry.envelope.ttl_class]
            rows.append((item.id, item.tag, item.kind.value, item.data, now, clock + ttl, origin))
            counts.new += 1
            counts.new_ids.append(item.id)
            if entry.receipt is not None:
                receipts.append(entry.receipt)
        self._conn.executemany(
            "INSERT INTO items (id, tag, kind, data, received_at, expires_at, own, origin)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
            rows,
        )
        for receipt in receipts:
            self._apply_receipt_tags(receipt.tags, counts, now)

    def _present(self, table: str, column: str, values: list[bytes]) -> set[bytes]:
        select = f"SELECT {column} FROM {table}"  # noqa: S608 - table and column are ours
        return set(self._where_in(select, column, values))

    def _where_in(self, select: str, column: str, values: list[bytes]) -> Iterator[bytes]:
        """``select ... WHERE column IN (values)``, first column of each row, 500 at a time."""
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"{select} WHERE {column} IN ({marks})"
            for row in self._conn.execute(sql, chunk):
                yield row[0]

    def items_after(
        self, seq: int, limit: int, skip_origin: bytes | None = None
    ) -> list[tuple[int, bytes]]:
        """Items stored after local number ``seq``, oldest first (per-peer deltas), leaving
        out those that came from the peer ``skip_origin`` (fewer than ``limit``: no more)."""
        ref = None if skip_origin is None else self._origin_ref(skip_origin, create=False)
        if ref is None:
            rows = self._conn.execute(
                "SELECT seq, data FROM items WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        else:
            rows = self._conn.execute(
                "SELECT seq, data FROM items WHERE seq > ? AND origin IS NOT ?"
                " ORDER BY seq LIMIT ?",
                (seq, ref, limit),
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def _origin_ref(self, node_key: bytes, *, create: bool) -> int | None:
        row = self._conn.execute(
            "SELECT ref FROM origins WHERE node_key = ?", (node_key,)
        ).fetchone()
        if row is None and create:
            row = self._conn.execute(
                "INSERT INTO origins (node_key) VALUES (?) RETURNING ref", (node_key,)
            ).fetchone()
        return None if row is None else int(row[0])

    def high_water(self) -> int:
        """The largest local number ever given (deletions never lower it)."""
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
        return 0 if row is None else int(row[0])

    def epoch(self) -> bytes:
        """Random id of this store: a peer's cursor is only valid for the same epoch."""
        row = self._conn.execute("SELECT value FROM store_meta WHERE key = 'epoch'").fetchone()
        return bytes(row[0])

    def get_items(self, ids: list[bytes]) -> list[bytes]:
        return list(self._where_in("SELECT data FROM items", "id", ids))

    def missing(self, ids: list[bytes]) -> list[bytes]:
        """The subset of ``ids`` this store does not hold."""
        held = self._present("items", "id", ids)
        return [i for i in ids if i not in held]

    def sorted_ids(self) -> Iterator[bytes]:
        """All item ids in byte order, streamed (for building a reconciliation index)."""
        cursor = self._conn.execute("SELECT id FROM items ORDER BY id")
        while rows := cursor.fetchmany(10_000):
            for row in rows:
                yield row[0]

    # --- peers -----------------------------------------------------------------------------

    def peer_cursor(self, node_key: bytes) -> tuple[bytes, int] | None:
        """(peer store epoch, seq) we have fully received from this peer, if known."""
        row = self._conn.execute(
            "SELECT cursor_epoch, cursor FROM peers WHERE node_key = ?", (node_key,)
        ).fetchone()
        return None if row is None or row[0] is None else (bytes(row[0]), int(row[1]))

    def set_peer_cursor(self, node_key: bytes, epoch: bytes, cursor: int, now: int) -> None:
        self._conn.execute(
            "INSERT INTO peers (node_key, cursor_epoch, cursor, last_sync) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(node_key) DO UPDATE SET cursor_epoch = excluded.cursor_epoch,"
            " cursor = excluded.cursor, last_sync = excluded.last_sync",
            (node_key, epoch, cursor, now),
        )

    def charge_quota(
        self, node_key: bytes, window: int, items: int, size: int, max_items: int, max_bytes: int
    ) -> bool:
        """Count a peer's delivery against its quota for ``window``; False once exceeded."""
        with self.transaction():
            return self._charge(Quota(node_key, window, max_items, max_bytes), items, size)

    def _charge(self, quota: Quota, items: int, size: int) -> bool:
        self._conn.execute(
            "INSERT INTO peers (node_key) VALUES (?) ON CONFLICT(node_key) DO NOTHING",
            (quota.node_key,),
        )
        self._conn.execute(
            "UPDATE peers SET"
            " quota_items = CASE WHEN quota_window = ?1 THEN quota_items ELSE 0 END + ?2,"
            " quota_bytes = CASE WHEN quota_window = ?1 THEN quota_bytes ELSE 0 END + ?3,"
            " quota_window = ?1, items_received = items_received + ?2 WHERE node_key = ?4",
            (quota.window, items, size, quota.node_key),
        )
        used_items, used_bytes = self._conn.execute(
            "SELECT quota_items, quota_bytes FROM peers WHERE node_key = ?", (quota.node_key,)
        ).fetchone()
        return bool(used_items <= quota.max_items and used_bytes <= quota.max_bytes)

    def peers(self) -> list[dict[str, object]]:
        cursor = self._conn.execute(
            "SELECT node_key, cursor, last_sync, items_received, items_sent FROM peers"
            " ORDER BY last_sync DESC"
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # --- expiry and disk budget (the janitor) ---------------------------------------------

    def local_clock(self) -> int:
        """Seconds this node has been running, summed over its life (SPEC.md §14.1).

        Expiry counts on this clock, not the wall clock: a Pi whose clock jumps a year
        ahead must not expire everything it carries, and one a year behind must not keep
        items for ever.
        """
        row = self._conn.execute("SELECT value FROM store_meta WHERE key = 'clock'").fetchone()
        return 0 if row is None else int(row[0])

    def _clock_now(self) -> int:
        """``local_clock`` cached for the open transaction (read once per batch, not per item)."""
        if self._clock_cache is None or not self._conn.in_transaction:
            self._clock_cache = self.local_clock()
        return self._clock_cache

    def advance_clock(self, seconds: int) -> int:
        self._clock_cache = None
        self._conn.execute(
            "UPDATE store_meta SET value = value + ? WHERE key = 'clock'", (max(0, seconds),)
        )
        return self.local_clock()

    def expire(self) -> int:
        """Delete relayed items whose TTL has passed; own unreceipted reports are kept."""
        with self.transaction():
            gone = self._conn.execute(
                "DELETE FROM items WHERE expires_at <= ? AND own = 0 AND kind != ?",
                (self.local_clock(), ItemKind.MANIFEST.value),
            ).rowcount
        if gone:
            self.checkpoint()
        return int(gone)

    def used_bytes(self) -> int:
        page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def enforce_budget(
        self,
        budget_bytes: int,
        step: int = 200,
        first: tuple[tuple[str, tuple[str, ...]], ...] = (),
    ) -> int:
        """Evict until the data fits ``budget_bytes``: first relayed envelopes closest to
        expiry, then receipts, and the author's own unreceipted reports only last."""
        evicted = 0
        order = (
            *first,  # the kind-ordering hook: fieldsync.priority.EVICT_FIRST (media first)
            ("kind = ? AND own = 0", (ItemKind.ENVELOPE.value,)),
            ("kind = ?", (ItemKind.RECEIPT.value,)),
            ("kind = ? AND own = 1", (ItemKind.ENVELOPE.value,)),
        )
        for condition, args in order:
            while self.used_bytes() > budget_bytes:
                with self.transaction():
                    gone = self._conn.execute(
                        f"DELETE FROM items WHERE seq IN (SELECT seq FROM items WHERE {condition}"  # noqa: S608
                        " ORDER BY expires_at, seq LIMIT ?)",
                        (*args, step),
                    ).rowcount
                if not gone:
                    break
                evicted += gone
        if evicted:
            self.checkpoint()
        return evicted

    def checkpoint(self, attempts: int = 20) -> bool:
        """Fold the WAL into the database and truncate it, so deleted rows leave no copy.

        A reader in another process (the CLI while the daemon runs) can hold the WAL; then
        SQLite reports "busy" and truncates nothing, so retry briefly. Returns success; the
        janitor's next periodic checkpoint retries a failure.
        """
        for attempt in range(attempts):
            busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if not busy:
                return True
            time.sleep(0.05 * (attempt + 1))
        return False

    # --- author outbox and chain -----------------------------------------------------------

    def chain_state(self, author: bytes) -> tuple[int, bytes] | None:
        row = self._conn.execute(
            "SELECT sequence, previous FROM author_chain WHERE author = ?", (author,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def record_own_report(
        self,
        author: bytes,
        sequence: int,
        header_hash: bytes,
        report_id: str,
        checked: Checked,
        now: int,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """Store the author's new envelope, its outbox entry and chain state atomically.

        ``also`` runs after the envelope is stored, in the same transaction (attachments:
        fieldsync.media).
        """
        with self.transaction():
            self.add_checked(checked, ImportCounts(), now, own=True)
            if also is not None:
                also(self._conn)
            self._conn.execute(
                "INSERT INTO outbox (report_id, tag, sequence, created_at, status)"
                " VALUES (?, ?, ?, ?, 'sealed')",
                (report_id, checked.item.tag, sequence, now),
            )
            self._conn.execute(
                "INSERT INTO author_chain (author, sequence, previous) VALUES (?, ?, ?)"
                " ON CONFLICT(author) DO UPDATE SET sequence = excluded.sequence,"
                " previous = excluded.previous",
                (author, sequence, header_hash),
            )

    def outbox(self) -> list[OutboxEntry]:
        rows = self._conn.execute(
            "SELECT report_id, sequence, created_at, status, delivered_at FROM outbox"
            " ORDER BY sequence"
        ).fetchall()
        return [OutboxEntry(*row) for row in rows]

    # --- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        kinds = {
            ItemKind(kind).name.lower(): count
            for kind, count in self._conn.execute("SELECT kind, count(*) FROM items GROUP BY kind")
        }
        outbox = dict(
            self._conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall()
        )
        tombstones = self._conn.execute("SELECT count(*) FROM tombstones").fetchone()[0]
        disk = sum(
            p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file()
        )
        return {
            "items": {k.name.lower(): kinds.get(k.name.lower(), 0) for k in ItemKind},
            "items_total": sum(kinds.values()),
            "outbox": {"sealed": outbox.get("sealed", 0), "delivered": outbox.get("delivered", 0)},
            "tombstones": tombstones,
            "disk_bytes": disk,
        }

    def data_version(self) -> int:
        """Changes whenever *another* connection commits (SQLite ``PRAGMA data_version``)."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def integrity_check(self) -> str:
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (durable under synchronous=FULL) or ``ROLLBACK``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def now_seconds() -> int:
    return int(time.time())
