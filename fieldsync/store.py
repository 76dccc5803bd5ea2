"""The node's item store: SQLite in WAL mode, numbered migrations, durable custody commits.

What it holds (SPEC.md §9, §10): sealed items (envelopes, receipts, manifests) numbered in
arrival order, tombstones (delivery tags of receipted items), the author's outbox (report
id, delivery tag, status) and the author's chain state. It never holds plaintext or keys.

Rules that matter for people's safety:

* ``secure_delete=ON`` and a truncating checkpoint after every purge, so deleted rows do
  not linger in the database or WAL files (reference/security_anchors.md §8.3).
* ``synchronous=FULL``: a batch is on disk before the caller acknowledges it. A bulk
  transfer may commit slices with ``durable=False`` (atomic, not yet fsynced) and acknowledge
  only after a durable commit, whose fsync of the WAL covers every slice before it.
* Deletion of an envelope happens only in ``apply_receipt``, from a verified receipt.

A ``Store`` is used by one thread at a time (the CLI's, or the daemon's store thread).
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fieldsync import eviction
from fieldsync.errors import FieldsyncError
from fieldsync.sqlite_tx import immediate_transaction
from fieldsync_protocol.envelope import TTL_CLASSES
from fieldsync_protocol.items import Checked, ItemKind
from fieldsync_protocol.receipt import Receipt, ReceiptStatus

if TYPE_CHECKING:
    import sqlite_utils

#: How long a writer waits for another process's write transaction (the daemon's bounded
#: slices, a CLI's report) before it gives up with "database is locked".
LOCK_TIMEOUT_SECONDS = 10.0
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
    # 4: an HQ receipt says accepted, held or dropped (SPEC.md §9); the author's outbox
    # shows which, and only "accepted" makes a report delivered.
    """
    CREATE TABLE outbox_v4 (
        report_id TEXT PRIMARY KEY,
        tag BLOB NOT NULL UNIQUE,
        sequence INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('sealed', 'held', 'dropped', 'delivered')),
        delivered_at INTEGER
    );
    INSERT INTO outbox_v4 (report_id, tag, sequence, created_at, status, delivered_at)
        SELECT report_id, tag, sequence, created_at, status, delivered_at FROM outbox;
    DROP TABLE outbox;
    ALTER TABLE outbox_v4 RENAME TO outbox;
    """,
    # 5: fair eviction reads each contributor's items newest first (SPEC.md §14.2).
    """
    CREATE INDEX items_origin ON items(origin);
    """,
    # 6: the author's own attachments (SPEC.md §16.6): size, chunk count and the original
    # name sealed to the author's key, and each chunk's delivery tag, for "receipted / total".
    """
    CREATE TABLE own_attachments (
        report_id TEXT NOT NULL,
        ordinal INTEGER NOT NULL,
        size INTEGER NOT NULL,
        chunks INTEGER NOT NULL,
        name_sealed BLOB NOT NULL,
        PRIMARY KEY (report_id, ordinal)
    ) WITHOUT ROWID;
    CREATE TABLE own_chunks (
        tag BLOB PRIMARY KEY,
        report_id TEXT NOT NULL,
        ordinal INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX own_chunks_report ON own_chunks(report_id, ordinal);
    """,
)

#: What an HQ receipt makes of the author's own report, and which states it may replace:
#: a later "accepted" upgrades "held" (HQ re-ingested it); nothing downgrades "delivered".
_OUTBOX_BY_RECEIPT = {
    ReceiptStatus.ACCEPTED: ("delivered", ("sealed", "held", "dropped")),
    ReceiptStatus.HELD: ("held", ("sealed",)),
    ReceiptStatus.DROPPED: ("dropped", ("sealed",)),
}


@dataclass
class ImportCounts:
    """What happened to a batch of incoming items."""

    new: int = 0
    duplicate: int = 0
    already_delivered: int = 0
    receipts_applied: int = 0
    purged: int = 0
    delivered_own: int = 0
    #: The author's own reports HQ holds for review, or dropped (not delivered).
    held_own: int = 0
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
            "held_own": self.held_own,
            "kinds": dict(self.kinds),
        }


@dataclass(frozen=True)
class Quota:
    """How much one peer (by certificate node key) may deliver in one quota window."""

    node_key: bytes
    window: int
    max_items: int
    max_bytes: int


#: Rounds of eviction in one ``enforce_budget`` call (each takes at least one item).
MAX_EVICTION_ROUNDS = 64
#: Items this node relays for others, evicted by fair share (SPEC.md §14.2) in two pools:
#: media (attachment chunks and kinds this version does not know) all go before any relayed
#: report envelope. The author's own items, receipts (their own turn) and manifests (never)
#: are in neither. Kind values are our constants.
_RELAYED_MEDIA = f"own = 0 AND kind IN ('{ItemKind.CHUNK.value}', '{ItemKind.OPAQUE.value}')"
_RELAYED_REPORTS = f"own = 0 AND kind = '{ItemKind.ENVELOPE.value}'"


@dataclass
class _Pools:
    """Bytes each contributor holds in each eviction pool (media go before reports)."""

    media: eviction.Contributors
    reports: eviction.Contributors


@dataclass
class Eviction:
    """What ``enforce_budget`` dropped: items, their bytes, items per contributor."""

    items: int = 0
    bytes: int = 0
    #: Contributor (origin ref, or ``eviction.IMPORTED``) -> items evicted.
    by_contributor: dict[int, int] = field(default_factory=dict)

    def add(self, plan: eviction.Plan) -> None:
        self.items += len(plan.seqs)
        self.bytes += plan.freed
        for key, count in plan.by_contributor.items():
            self.by_contributor[key] = self.by_contributor.get(key, 0) + count


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
            f"busy_timeout={int(LOCK_TIMEOUT_SECONDS * 1000)}",
        ):
            self._conn.execute(f"PRAGMA {pragma}")
        self._clock_cache: int | None = None
        #: A relaxed commit (``add_batch(durable=False)``) is not fsynced yet.
        self._unsynced = False
        #: Write transactions committed through this Store (tests count them).
        self.commits = 0
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

    @functools.cached_property
    def db(self) -> sqlite_utils.Database:
        """sqlite_utils over the same connection, imported on first use: it costs more to
        import than ``fieldsync status`` may take in all (issue 13 item 6)."""
        import sqlite_utils

        return sqlite_utils.Database(self._conn)

    def close(self) -> None:
        self._conn.close()

    def transaction(self) -> AbstractContextManager[None]:
        return self._counted_transaction()

    @contextlib.contextmanager
    def _counted_transaction(self) -> Iterator[None]:
        with immediate_transaction(self._conn, lock_timeout=LOCK_TIMEOUT_SECONDS):
            yield
        self.commits += 1

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
            self._apply_receipt(checked.receipt, counts, now)

    def _apply_receipt(self, receipt: Receipt, counts: ImportCounts, now: int) -> None:
        """Delete and tombstone what a receipt names, whatever its status (SPEC.md §9); the
        status decides only what the author's outbox shows."""
        counts.receipts_applied += 1
        outbox_status, replaces = _OUTBOX_BY_RECEIPT[receipt.status]
        marks = ", ".join("?" for _ in replaces)
        for tag in receipt.tags:
            # Envelopes, attachment chunks and opaque items are receipted (SPEC.md §9, §16.5);
            # receipts, manifests, revocation lists and forms never are.
            purged = self._conn.execute(
                "DELETE FROM items WHERE tag = ? AND kind NOT IN (?, ?, ?, ?) RETURNING id",
                (
                    tag,
                    ItemKind.RECEIPT.value,
                    ItemKind.MANIFEST.value,
                    ItemKind.REVOCATION.value,
                    ItemKind.FORM.value,
                ),
            ).fetchall()
            counts.purged += len(purged)
            counts.purged_ids.extend(row[0] for row in purged)
            self._conn.execute(
                "INSERT OR IGNORE INTO tombstones (tag, deleted_at) VALUES (?, ?)", (tag, now)
            )
            changed = self._conn.execute(
                "UPDATE outbox SET status = ?, delivered_at = ?"  # noqa: S608 - marks only
                f" WHERE tag = ? AND status IN ({marks})",
                (outbox_status, now if outbox_status == "delivered" else None, tag, *replaces),
            ).rowcount
            if outbox_status == "delivered":
                counts.delivered_own += changed
            else:
                counts.held_own += changed

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

    def items_of_kind(self, kind: ItemKind) -> list[bytes]:
        """Every held item of ``kind``, oldest first (for the few kinds that are small)."""
        return [
            row[0]
            for row in self._conn.execute(
                "SELECT data FROM items WHERE kind = ? ORDER BY seq", (kind.value,)
            )
        ]

    def manifest_items(self) -> list[bytes]:
        return self.items_of_kind(ItemKind.MANIFEST)

    def form_items(self) -> list[bytes]:
        """Every stored network form item (SPEC.md §18.4), oldest first."""
        return self.items_of_kind(ItemKind.FORM)

    def add_batch(
        self,
        checked: list[Checked],
        now: int,
        origin: bytes | None = None,
        quota: Quota | None = None,
        charge: tuple[int, int] | None = None,
        *,
        durable: bool = True,
    ) -> ImportCounts:
        """Store a batch from a peer in one durable transaction (commit before ack).

        ``origin``: the node key of the peer that sent it (deltas to it skip these items).
        ``quota``: charge the batch to that peer first, in the same transaction (one fsync
        per batch); over quota raises ``QuotaExceeded`` and stores nothing. ``charge``:
        (items, bytes) to charge instead of the batch's own (a session batch stored in
        several slices is charged whole with its first one).

        ``durable=False``: commit under ``synchronous=NORMAL`` - atomic and visible, but not
        fsynced, so the write lock is held for the work only and one fsync serves many
        slices (perf S1, S11). Nothing committed so may be acknowledged until a later
        ``durable=True`` call returns: that commit always writes (a marker row when it has
        nothing else to write), so SQLite fsyncs the WAL, which holds every earlier relaxed
        commit (or a checkpoint already synced them into the database file).
        """
        counts = ImportCounts()
        with self._synchronous(durable), self.transaction():
            if durable and self._unsynced:
                self._conn.execute(
                    "INSERT INTO store_meta (key, value) VALUES ('sync_points', 1)"
                    " ON CONFLICT(key) DO UPDATE SET value = value + 1"
                )
            if quota is not None:
                if charge is None:
                    charge = (len(checked), sum(len(c.item.data) for c in checked))
                exhausted = self._charge(quota, *charge)
                if exhausted is not None:
                    raise QuotaExceeded(f"peer is over its quota for today ({exhausted})")
            ref = None if origin is None else self._origin_ref(origin, create=True)
            self._add_many(checked, counts, now, ref)
        self._unsynced = not durable
        if counts.purged:
            self.checkpoint()
        return counts

    @contextlib.contextmanager
    def _synchronous(self, durable: bool) -> Iterator[None]:
        """``synchronous=NORMAL`` for the block unless ``durable``; FULL again afterwards."""
        if durable:
            yield
            return
        self._conn.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self._conn.execute("PRAGMA synchronous=FULL")

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
            self._apply_receipt(receipt, counts, now)

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

    def kinds_of(self, ids: list[bytes], kinds: list[str]) -> list[tuple[str, int, bytes]]:
        """``(kind, seq, id)`` of the held items among ``ids`` whose kind is in ``kinds``."""
        marks = ",".join("?" * len(kinds))
        rows: list[tuple[str, int, bytes]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            sql = (
                f"SELECT kind, seq, id FROM items WHERE kind IN ({marks})"  # noqa: S608
                f" AND id IN ({','.join('?' * len(chunk))})"
            )
            found = self._conn.execute(sql, [*kinds, *chunk])
            rows.extend((str(k), int(q), bytes(i)) for k, q, i in found)
        return rows

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
            quota = Quota(node_key, window, max_items, max_bytes)
            return self._charge(quota, items, size) is None

    def _charge(self, quota: Quota, items: int, size: int) -> str | None:
        """Charge the delivery; None while within the quota, else which limit ran out."""
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
        if used_bytes > quota.max_bytes:
            return f"{quota.max_bytes:,} bytes a day; this delivery would make {used_bytes:,}"
        if used_items > quota.max_items:
            return f"{quota.max_items:,} items a day; this delivery would make {used_items:,}"
        return None

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
                "DELETE FROM items WHERE expires_at <= ? AND own = 0 AND kind NOT IN (?, ?, ?)",
                (
                    self.local_clock(),
                    ItemKind.MANIFEST.value,
                    ItemKind.REVOCATION.value,
                    ItemKind.FORM.value,
                ),
            ).rowcount
        if gone:
            self.checkpoint()
        return int(gone)

    def used_bytes(self) -> int:
        page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def enforce_budget(self, budget_bytes: int) -> Eviction:
        """Evict until the pages in use fit ``budget_bytes`` (SPEC.md §14.2), taking exactly
        what is needed: relayed media (chunks, unknown kinds) by fair share (largest
        contributor first, newest first), then relayed envelopes by fair share down to a
        protected share, then receipts, then relayed envelopes below the protected share,
        and the author's own unreceipted reports only last. Manifests and the author's own
        chunks never go.

        Evicted items leave no tombstone, so they can be received again, and the cursor on
        each peer that gave us an evicted item is dropped: the next session with that peer
        reconciles in full instead of skipping what we no longer hold.

        Freed rows may not free whole pages at once (items sharing a page with survivors),
        so a round that still leaves the pages over budget is followed by another.
        """
        total = Eviction()
        pools = None  # contributors read once (a scan), then kept up to date by the plans
        for _ in range(MAX_EVICTION_ROUNDS):
            excess = self.used_bytes() - budget_bytes
            if excess <= 0:
                break
            with self.transaction():
                if pools is None:
                    pools = _Pools(
                        media=eviction.Contributors(self._contributor_totals(_RELAYED_MEDIA)),
                        reports=eviction.Contributors(self._contributor_totals(_RELAYED_REPORTS)),
                    )
                plan = self._plan_eviction(excess, budget_bytes, pools)
                self._evict(plan)
            if not plan.seqs:
                break
            total.add(plan)
        if total.items:
            self.checkpoint()
        return total

    def _contributor_totals(self, relayed: str) -> dict[int, int]:
        """Bytes (as eviction counts them) of the ``relayed`` items per contributor."""
        cost = f"length(data) + {eviction.ITEM_OVERHEAD}"
        return {
            int(key): int(held)
            for key, held in self._conn.execute(
                f"SELECT coalesce(origin, {eviction.IMPORTED}), sum({cost}) FROM items"  # noqa: S608
                f" WHERE {relayed} GROUP BY 1"
            )
        }

    def _plan_eviction(self, need: int, budget: int, pools: _Pools) -> eviction.Plan:
        """Choose items freeing ``need`` bytes; ``pools`` follow what is chosen."""
        plan = eviction.Plan()
        media = functools.partial(self._newest_relayed, _RELAYED_MEDIA)
        eviction.fair_share(pools.media, need, 0, media, plan)
        # The passes below read envelopes, not media: each contributor's from its newest.
        plan.lowest.clear()
        reports = functools.partial(self._newest_relayed, _RELAYED_REPORTS)
        floor = eviction.protected_share(budget, len(pools.reports.held))
        eviction.fair_share(pools.reports, need, floor, reports, plan)
        self._take_in_order(plan, need, "kind = ?", (ItemKind.RECEIPT.value,))
        eviction.fair_share(pools.reports, need, 0, reports, plan)
        self._take_in_order(plan, need, "kind = ? AND own = 1", (ItemKind.ENVELOPE.value,))
        return plan

    def _newest_relayed(
        self, relayed: str, contributor: int, below: int | None
    ) -> list[tuple[int, int]]:
        origin = None if contributor == eviction.IMPORTED else contributor
        rows = self._conn.execute(
            f"SELECT seq, length(data) + {eviction.ITEM_OVERHEAD} FROM items"  # noqa: S608
            f" WHERE origin IS ? AND seq < ? AND {relayed} ORDER BY seq DESC LIMIT 256",
            (origin, below if below is not None else 2**63 - 1),
        ).fetchall()
        return [(int(seq), int(size)) for seq, size in rows]

    def _take_in_order(
        self, plan: eviction.Plan, need: int, condition: str, args: tuple[str, ...]
    ) -> None:
        """Add items matching ``condition`` to ``plan``, soonest to expire first."""
        if plan.freed >= need:
            return
        cursor = self._conn.execute(
            f"SELECT seq, length(data) + {eviction.ITEM_OVERHEAD} FROM items"  # noqa: S608
            f" WHERE {condition} ORDER BY expires_at, seq",
            args,
        )
        while plan.freed < need and (row := cursor.fetchone()) is not None:
            plan.take(int(row[0]), int(row[1]))
        cursor.close()

    def _evict(self, plan: eviction.Plan) -> None:
        """Delete the planned items (no tombstone) and forget the cursors on the peers that
        gave them, so those peers' next sessions reconcile and can bring them back."""
        for start in range(0, len(plan.seqs), 500):
            chunk = plan.seqs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            self._conn.execute(f"DELETE FROM items WHERE seq IN ({marks})", chunk)  # noqa: S608
        peers = [key for key in plan.by_contributor if key != eviction.IMPORTED]
        if peers:
            marks = ",".join("?" * len(peers))
            self._conn.execute(
                "UPDATE peers SET cursor_epoch = NULL, cursor = 0 WHERE node_key IN"  # noqa: S608
                f" (SELECT node_key FROM origins WHERE ref IN ({marks}))",
                peers,
            )

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

    def has_undelivered_own(self) -> bool:
        """Whether the author still waits for a receipt for any of its reports."""
        row = self._conn.execute("SELECT 1 FROM outbox WHERE status = 'sealed' LIMIT 1")
        return row.fetchone() is not None

    def outbox(self) -> list[OutboxEntry]:
        rows = self._conn.execute(
            "SELECT report_id, sequence, created_at, status, delivered_at FROM outbox"
            " ORDER BY sequence"
        ).fetchall()
        return [OutboxEntry(*row) for row in rows]

    # --- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        # Not GROUP BY kind: that walks every index entry (~10 ms at 100k items here, more on
        # a Pi) on the store thread that a bulk sync shares (perf S11). count(*) of the table
        # is a b-tree page count; the rare kinds are index ranges; envelopes are the rest.
        total = self._conn.execute("SELECT count(*) FROM items").fetchone()[0]
        kinds = {
            kind.name.lower(): self._conn.execute(
                "SELECT count(*) FROM items WHERE kind = ?", (kind.value,)
            ).fetchone()[0]
            for kind in ItemKind
            if kind is not ItemKind.ENVELOPE
        }
        kinds[ItemKind.ENVELOPE.name.lower()] = total - sum(kinds.values())
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
            "outbox": {
                state: outbox.get(state, 0) for state in ("sealed", "held", "dropped", "delivered")
            },
            "tombstones": tombstones,
            "disk_bytes": disk,
        }

    def data_version(self) -> int:
        """Changes whenever *another* connection commits (SQLite ``PRAGMA data_version``)."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def integrity_check(self) -> str:
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])


def now_seconds() -> int:
    return int(time.time())
