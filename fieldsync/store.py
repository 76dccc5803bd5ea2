"""The node's item store: SQLite in WAL mode, numbered migrations, durable custody commits.

The database is encrypted at rest (SQLCipher) under ``store.key`` (``fieldsync.cipher_db``),
and ``rotate_key`` re-encrypts it under a new key, so page images of deleted rows that the
WAL or the file system left behind become noise.

What it holds (SPEC.md §9, §10): sealed items (envelopes, receipts, manifests) numbered in
arrival order, tombstones (delivery tags of receipted items and the receipt's verdict) and
the authors' outbox entries, each sealed to its author's own key (fieldsync.outbox). It
never holds plaintext or keys.

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
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fieldsync import cipher_db, eviction, write_intent
from fieldsync.errors import FieldsyncError, InputRefused
from fieldsync.sqlite_tx import immediate_transaction
from fieldsync_protocol.kinds import ItemKind
from fieldsync_protocol.receipt import Receipt, ReceiptStatus

# Items and the sealed outbox are imported where they are used: ``fieldsync status`` opens
# the store to count items and must not load every item parser to do so (issue 13 item 6).
# Whoever hands the store a ``Checked`` item has loaded them already.
if TYPE_CHECKING:
    import sqlite_utils

    from fieldsync import outbox
    from fieldsync_protocol.items import Checked

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
    # 7: a seized node must not list every peer it met (issue #11). Peer rows keep only
    # what sync and quotas need, under a keyed hash of the peer's node key (``_peer_id``,
    # key ``peer_key``), with a coarse wall time and the local-clock time of the last
    # contact, by which the janitor forgets peers not seen for ``sync.forget_peers_days``.
    # Old rows go: their peers' next sessions reconcile once. ``origins`` keeps its refs
    # (eviction fairness) but forgets whose they were (NULL: a forgotten peer).
    """
    INSERT INTO store_meta (key, value) VALUES ('peer_key', randomblob(32));
    DROP TABLE peers;
    CREATE TABLE peers (
        peer BLOB PRIMARY KEY,                  -- keyed hash of the peer's node key
        cursor_epoch BLOB,                      -- the peer store's epoch the cursor belongs to
        cursor INTEGER NOT NULL DEFAULT 0,      -- the peer's local seq we have fully received
        last_sync INTEGER,                      -- wall clock, rounded down to the hour
        seen INTEGER NOT NULL DEFAULT 0,        -- local clock at the last contact (expiry)
        quota_window INTEGER NOT NULL DEFAULT 0,
        quota_items INTEGER NOT NULL DEFAULT 0,
        quota_bytes INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE origins_v7 (
        ref INTEGER PRIMARY KEY,
        peer BLOB UNIQUE                        -- as peers.peer, NULL once forgotten
    );
    INSERT INTO origins_v7 (ref, peer) SELECT ref, NULL FROM origins;
    DROP TABLE origins;
    ALTER TABLE origins_v7 RENAME TO origins;
    """,
    # 8: timing privacy (SPEC.md §14.10, fieldsync/offer_hold.py): report items not offered
    # before a random delay after their arrival. Everything stored so far counts as assessed.
    """
    CREATE TABLE offer_holds (
        seq INTEGER PRIMARY KEY,                -- items.seq of an item not offered yet
        until INTEGER NOT NULL                  -- running clock (§14.1) it is offered from
    );
    CREATE INDEX offer_holds_until ON offer_holds(until);
    INSERT INTO store_meta (key, value) VALUES ('offer_assessed',
        COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'items'), 0));
    """,
    # 9: the author's outbox sealed to the author's own key (fieldsync.outbox): its rows
    # carry no plaintext report id, time, tag or author (issue 11 item 3). A receipt's
    # verdict stays with its tombstone, for every receipted item alike, so an unlocked
    # outbox tells held, dropped and delivered apart. The plaintext tables (outbox,
    # author_chain, own_attachments, own_chunks) are sealed and dropped right after, by
    # ``Store._seal_plaintext_outbox`` (sealing needs Python). ``items_own`` answers "any own
    # report still waiting?" (each sync session asks) without a scan of relayed envelopes.
    """
    CREATE TABLE sealed_outbox (entry BLOB NOT NULL);
    CREATE INDEX items_own ON items(kind) WHERE own = 1;
    ALTER TABLE tombstones ADD COLUMN status TEXT;
    ALTER TABLE tombstones ADD COLUMN status_at INTEGER;
    UPDATE tombstones SET
        status = (SELECT o.status FROM outbox o WHERE o.tag = tombstones.tag),
        status_at = (SELECT o.delivered_at FROM outbox o WHERE o.tag = tombstones.tag)
        WHERE tag IN (SELECT tag FROM outbox WHERE status != 'sealed');
    """,
    # 10: who contributed the items the disk budget evicted (SPEC.md §14.2, §14.5), by the
    # first bytes of their delivery tags: when a peer pushes such an item again (it got it
    # from us before the eviction), it is the original contributor's, not the re-pusher's.
    # Bounded (``evicted_origins_limit``): the oldest evictions are forgotten first.
    """
    CREATE TABLE evicted_origins (
        n INTEGER PRIMARY KEY,                  -- order of eviction (oldest forgotten first)
        prefix BLOB NOT NULL UNIQUE,            -- the first EVICTED_TAG_PREFIX bytes of the tag
        origin INTEGER                          -- origins.ref of the contributor, NULL: imported
    );
    """,
    # 11: recording an own report touches O(1) rows (perf S11, issue 13 item 3): per author a
    # tip (chain position in a secret box, under a locator only their key derives) and a
    # keyed hash per own report id for the duplicate check (fieldsync.outbox). Filled the
    # first time each author writes after this migration (that needs their key).
    """
    CREATE TABLE outbox_tips (
        locator BLOB PRIMARY KEY,               -- outbox.tip_locator: only the author finds it
        tip BLOB NOT NULL                       -- outbox.seal_tip
    ) WITHOUT ROWID;
    CREATE TABLE outbox_ids (
        mac BLOB PRIMARY KEY                    -- outbox.report_id_mac
    ) WITHOUT ROWID;
    """,
    # 12: the number of items, kept by triggers in the writer's own transactions: ``status``
    # reads one row instead of count(*), which walks a whole index (~300 pages at 100k
    # items), and a reader decrypts those pages again after every write: during a sync,
    # every status did (perf S11, issue 13 item 3). A rebuild of ``items`` must recreate the
    # delete trigger (migration 13 dropped the insert one: inserts count themselves).
    """
    CREATE TABLE item_count (
        only INTEGER PRIMARY KEY CHECK (only = 1),
        n INTEGER NOT NULL
    );
    INSERT INTO item_count (only, n) SELECT 1, count(*) FROM items;
    CREATE TRIGGER items_counted_in AFTER INSERT ON items
        BEGIN UPDATE item_count SET n = n + 1; END;
    CREATE TRIGGER items_counted_out AFTER DELETE ON items
        BEGIN UPDATE item_count SET n = n - 1; END;
    """,
    # 13: inserts count themselves (``Store._count_inserted``, one UPDATE per statement or
    # batch) instead of a per-row trigger. An AFTER INSERT trigger made every inserted row
    # run a sub-program and copy each page it touched into a statement journal: ~35k of the
    # ~270k instructions ``add_batch`` spent per item (callgrind, 10k items, perf S1). Every
    # insert into ``items`` goes through ``Store.add_checked`` or ``Store._add_many``, which
    # add what they inserted in the same transaction. Deletes keep their trigger (rare, and
    # they come from many statements).
    """
    DROP TRIGGER items_counted_in;
    """,
    # 14: the delivery tag is indexed by its first 8 bytes, not whole and UNIQUE (perf S1,
    # S10, issue 13). Tags are uniformly random, so each insert lands on a random page of
    # their index, and every slice of a bulk receive rewrites (re-encrypts, writes to the
    # WAL) most of that index's pages. A 12-byte entry instead of a 40-byte one makes it a
    # third the size: it stays in a relay's capped page cache longer, and a slice rewrites
    # fewer pages (raw SQLCipher, 100k items in 1,024-item transactions, 6 MiB cache: ~56
    # -> ~47 us per item). Uniqueness is kept by the id: a tag is a hash of the data, as the
    # id is. The one lookup by tag (a receipt's purge) names the prefix to use the index.
    # SQLite cannot drop a column's UNIQUE, so the table is rebuilt; seq numbers and the
    # AUTOINCREMENT high-water mark are kept (peers' cursors count on them).
    """
    CREATE TABLE items_v14 (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id BLOB NOT NULL UNIQUE,
        tag BLOB NOT NULL,
        kind TEXT NOT NULL,
        data BLOB NOT NULL,
        received_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        own INTEGER NOT NULL DEFAULT 0,
        origin INTEGER
    );
    INSERT INTO items_v14 (seq, id, tag, kind, data, received_at, expires_at, own, origin)
        SELECT seq, id, tag, kind, data, received_at, expires_at, own, origin FROM items
        ORDER BY seq;
    DELETE FROM sqlite_sequence WHERE name = 'items_v14';
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'items_v14', seq FROM sqlite_sequence WHERE name = 'items';
    DROP TABLE items;
    ALTER TABLE items_v14 RENAME TO items;
    CREATE INDEX items_tag_prefix ON items(substr(tag, 1, 8));
    CREATE INDEX items_kind ON items(kind);
    CREATE INDEX items_origin ON items(origin);
    CREATE INDEX items_own ON items(kind) WHERE own = 1;
    CREATE TRIGGER items_counted_out AFTER DELETE ON items
        BEGIN UPDATE item_count SET n = n - 1; END;
    """,
    # 15: delivery tags are indexed in two steps, as a log-structured index (perf S1, S10,
    # issue 13). Tags are uniformly random, so an index on ``items`` took each insert on a
    # random page, and every slice of a bulk receive rewrote (re-encrypted, wrote to the WAL)
    # nearly all of its pages, more of them the larger the store: at 100k items in 1,024-item
    # transactions, ``add_batch`` without that index took ~30 instead of ~43 us per item
    # (SQLCipher's default cache; ``TAG_MERGE_AT`` has the relay's). New rows' tag prefixes go to
    # ``item_tags_pending``, a small index whose few pages stay in the cache; once it holds
    # ``TAG_MERGE_AT`` rows, inserting transactions move key ranges of it
    # (``TAG_MERGE_PIECES``) into ``item_tags``, so a page of the large index is rewritten
    # once per ~``TAG_MERGE_AT`` inserts instead of once per transaction. A receipt's purge
    # looks in both (``PURGE_BY_TAG_SQL``). Triggers keep both to the rows of ``items``: an
    # author's chunks are renumbered after their report's envelope (``media.claim_for_report``).
    """
    CREATE TABLE item_tags (
        prefix BLOB NOT NULL,                   -- the first 8 bytes of the delivery tag
        seq INTEGER NOT NULL,                   -- items.seq
        PRIMARY KEY (prefix, seq)
    ) WITHOUT ROWID;
    CREATE TABLE item_tags_pending (
        prefix BLOB NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (prefix, seq)
    ) WITHOUT ROWID;
    INSERT INTO item_tags (prefix, seq) SELECT substr(tag, 1, 8), seq FROM items;
    DROP INDEX items_tag_prefix;
    CREATE TRIGGER items_untagged AFTER DELETE ON items BEGIN
        DELETE FROM item_tags WHERE prefix = substr(old.tag, 1, 8) AND seq = old.seq;
        DELETE FROM item_tags_pending WHERE prefix = substr(old.tag, 1, 8) AND seq = old.seq;
    END;
    CREATE TRIGGER items_renumbered AFTER UPDATE OF seq ON items BEGIN
        UPDATE item_tags SET seq = new.seq
            WHERE prefix = substr(old.tag, 1, 8) AND seq = old.seq;
        UPDATE item_tags_pending SET seq = new.seq
            WHERE prefix = substr(old.tag, 1, 8) AND seq = old.seq;
    END;
    """,
    # 16: expiry by index (perf S11, issue 13). The janitor's pass deleted expired items by
    # scanning every row of ``items`` inside a write transaction: ~300 ms at 100k items on
    # the reference VM (more than 10x that on a Pi, 10x again at 1M), and a local report
    # waited for all of it. Each insert's expiry is the running clock plus one of four TTLs,
    # so the index grows at four nearly sorted points, not at random pages.
    """
    CREATE INDEX items_expiry ON items(expires_at);
    """,
)


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of a migration script (a trigger's body holds semicolons too)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
    if pending.strip(" \n;"):
        raise ValueError(f"an incomplete statement in a migration: {pending!r}")


#: Bytes of an evicted item's delivery tag kept to recognise it when it comes back (§14.2):
#: enough that two items of one store never share them by chance, too few to name an item.
EVICTED_TAG_PREFIX = 8
#: Evicted items whose contributor the store remembers: one per this many bytes of the disk
#: budget (a row costs about 30 bytes, so the memory takes about 3 % of the budget) ...
EVICTED_ORIGINS_PER_BYTES = 1024
#: ... and never fewer than this many.
EVICTED_ORIGINS_MIN = 256
#: ``peers.last_sync`` is kept to this many seconds: enough for "last synced" on a page.
LAST_SYNC_GRAIN = 3600
_PEER_PERSON = b"fs-peer-record"
_EPOCH_PERSON = b"fs-peer-epoch"
_OFFSET_PERSON = b"fs-peer-offset"

#: What an HQ receipt makes of a receipted item (the tombstone's status, which an unlocked
#: outbox shows for the author's own reports), and which states it may replace: the first
#: receipt sets it, a later "accepted" upgrades "held" or "dropped" (HQ re-ingested it);
#: nothing downgrades "delivered". A tombstone from before migration 7 has no status: it
#: was "delivered" unless the outbox said otherwise.
_OUTBOX_BY_RECEIPT = {
    ReceiptStatus.ACCEPTED: ("delivered", ("held", "dropped")),
    ReceiptStatus.HELD: ("held", ()),
    ReceiptStatus.DROPPED: ("dropped", ()),
}
#: Tables of plaintext outboxes (before migration 7), sealed and dropped on first open.
_PLAINTEXT_OUTBOX_TABLES = ("outbox", "author_chain", "own_attachments", "own_chunks")


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
#: ``items.own`` is the one plaintext mark of authorship kept (issue 11 item 3): without it a
#: full disk would evict an author's undelivered report for relay traffic, and expiry would
#: drop it. It lives only as long as the item: a receipt deletes the item (and the mark),
#: leaving a tombstone like any relayed item's, so after delivery nothing says "written here".
#: It says "written on this node", never by which of its authors.
#: Items this node relays for others, evicted by fair share (SPEC.md §14.2) in two pools:
#: media (attachment chunks and kinds this version does not know) all go before any relayed
#: report envelope. The author's own items, receipts (their own turn) and manifests (never)
#: are in neither. Kind values are our constants.
#: ``ImportCounts.kinds``'s name and the stored ``kind`` of each kind, looked up once per
#: item on the receive path: an enum's ``name`` and ``value`` are properties; reading them
#: (and ``lower()``) per item was ~0.2 us, ~12 % of ``_add_many``'s own Python (perf S1).
_KIND_NAME_AND_VALUE = {kind: (kind.name.lower(), kind.value) for kind in ItemKind}
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


@dataclass(frozen=True)
class OwnRecord:
    """An own report sealed as the successor of the author's tip (``record_own_report``)."""

    checked: Checked
    #: Its outbox entry, sealed to the author's key (``outbox.seal_entry``).
    entry: bytes
    #: The author's chain position with this report.
    tip: outbox.Tip


class QuotaExceeded(Exception):
    """A peer delivered more than its quota allows; the batch was not stored."""


#: SQLite page cache of a relay daemon's store, KiB. SQLCipher's default is 8 MB per
#: connection, filled with decrypted pages after a bulk receive. A smaller cache is not free:
#: the id and tag indexes take random inserts, and every page missed is read and decrypted
#: again. Measured on the bench (S10 relay chain, RSS.relay after 100k items, quiet 2-core
#: guest, one run each): 2 MiB 5.5k items/s and 49.3 MB, 6 MiB 6.1k/s and 52.8 MB, 16 MiB
#: 7.0k/s and 64.0 MB; 6 MiB keeps the relay within its 60 MB and most of the speed.
RELAY_CACHE_KIB = 6144


#: A receipt's purge of one delivery tag (``?1``), but not of the kinds ``?2``-``?5``: the
#: rows its prefix names in either part of the tag index (migration 15), never a scan.
PURGE_BY_TAG_SQL = (
    "DELETE FROM items WHERE seq IN ("
    "SELECT seq FROM item_tags WHERE prefix = substr(?1, 1, 8)"
    " UNION ALL SELECT seq FROM item_tags_pending WHERE prefix = substr(?1, 1, 8))"
    " AND tag = ?1 AND kind NOT IN (?2, ?3, ?4, ?5) RETURNING id, own, kind"
)
#: The janitor's expiry (``?1`` the running clock; ``?2``-``?4`` kinds that never expire):
#: a range of ``items_expiry`` (migration 16), never a scan of the items.
EXPIRE_SQL = "DELETE FROM items WHERE expires_at <= ?1 AND own = 0 AND kind NOT IN (?2, ?3, ?4)"
#: Rows in ``item_tags_pending`` from which inserting transactions move some into
#: ``item_tags``. Larger means each page of the large index is rewritten more rarely, but the
#: pending index, whose pages every bulk slice rewrites, is larger: 8,192 rows are ~20 pages
#: of 8 KiB. Measured (``add_batch`` of 100k items in 1,024-item slices into a relay's store,
#: 6 MiB cache, bytes written to the WAL and the database file per item): 3.8 -> 3.0 KB in
#: id order (a first contact; 2.2 KB is the item itself, written twice), 7.1 -> 6.0 KB in
#: arrival order; 2,048 to 16,384 all within 4 % of each other.
TAG_MERGE_AT = 8192
#: A Store counts the pending part (and from then on merges) once one of its statements
#: inserts this many rows: the daemon's bulk slices, not a single report or chunk.
TAG_MERGE_COUNT_FROM = 8
#: A merge moves the pending rows of one of this many equal ranges of the first prefix byte,
#: the next range each time: ~128 rows into ~1/64 of the large index's pages, so no
#: transaction (one a local write may wait for, perf S11) does much more than its own
#: inserts, however small: an author node's sync slices are a few ms.
TAG_MERGE_PIECES = 64


class Store:
    def __init__(self, path: Path, *, cache_kib: int | None = None) -> None:
        """``cache_kib``: cap on SQLite's page cache (``RELAY_CACHE_KIB`` for a relay
        daemon); None keeps SQLCipher's default."""
        if cache_kib is not None and cache_kib < 1:
            raise ValueError(f"cache_kib must be a positive number of KiB, not {cache_kib}")
        self.path = path
        self._cache_kib = cache_kib
        path.parent.mkdir(parents=True, exist_ok=True)
        #: Encrypted at rest under ``store.key`` (a plaintext store is encrypted on first open).
        self.key_file = store_key_file(path)
        self._key_stamp: tuple[int, int] | None = None
        self._conn = self._connect()
        self._clock_cache: int | None = None
        #: A relaxed commit (``add_batch(durable=False)``) is not fsynced yet.
        self._unsynced = False
        #: Write transactions committed through this Store (tests count them).
        self.commits = 0
        #: Rows were deleted since the store key was last rotated (their pages are in the
        #: WAL's and the file system's free blocks until then: ``rotate_key``).
        self.purged_since_rotation = False
        #: Rows in ``item_tags_pending`` as far as this Store knows (None: not counted yet),
        #: and the key range its next merge moves (migration 15).
        self._pending_tags: int | None = None
        self._tag_piece = 0
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = cipher_db.open_keyed(self.path, self.key_file, timeout=LOCK_TIMEOUT_SECONDS)
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "secure_delete=ON",
            "foreign_keys=ON",
            f"busy_timeout={int(LOCK_TIMEOUT_SECONDS * 1000)}",
        ):
            conn.execute(f"PRAGMA {pragma}")
        if self._cache_kib is not None:
            conn.execute(f"PRAGMA cache_size = -{int(self._cache_kib)}")  # negative: KiB
        self._key_stamp = _file_stamp(self.key_file)
        return conn

    def page_cache_kib(self) -> int:
        """The connection's page cache limit in KiB (SQLite's ``cache_size``)."""
        size = int(self._conn.execute("PRAGMA cache_size").fetchone()[0])
        if size < 0:
            return -size
        page = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
        return size * page // 1024

    def follow_key_rotation(self) -> None:
        """Reopen under the current key if another connection rotated it (between
        transactions; a reader calls this before each read)."""
        self._follow_key_rotation()

    def _follow_key_rotation(self) -> None:
        """Reopen under the new key if another process (the daemon's janitor) rotated it
        since this connection was opened: the old key no longer decrypts any page."""
        if self._conn.in_transaction or _file_stamp(self.key_file) == self._key_stamp:
            return
        self._conn.close()
        self._conn = self._connect()
        self.__dict__.pop("db", None)  # the cached sqlite_utils wrapper held the old one

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
                for statement in _statements(script):
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {number}")
        tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master")}
        if "outbox" in tables and "sealed_outbox" in tables:
            with self.transaction():
                self._seal_plaintext_outbox()
            self.checkpoint()  # the plaintext rows' pages are zeroed; leave no WAL copy

    def _seal_plaintext_outbox(self) -> None:
        """Seal the rows of a plaintext outbox (before migration 7) to its author's key and
        drop the plaintext tables. Their single author's public key is in ``author_chain``:
        the passphrase is not needed. Rows with no author known (a store scrubbed by a
        duress passphrase keeps none) are dropped: nobody could open them."""
        from fieldsync import outbox

        conn = self._conn
        authors = conn.execute("SELECT author, sequence, previous FROM author_chain").fetchall()
        if len(authors) == 1:
            author, chain_sequence, previous = authors[0]
            public = outbox.outbox_public(author)
            entries = []
            for report_id, tag, sequence, created_at in conn.execute(
                "SELECT report_id, tag, sequence, created_at FROM outbox ORDER BY sequence"
            ).fetchall():
                attachments = tuple(
                    outbox.OwnAttachment(
                        size,
                        name_sealed,
                        tuple(
                            row[0]
                            for row in conn.execute(
                                "SELECT tag FROM own_chunks WHERE report_id = ? AND ordinal = ?",
                                (report_id, ordinal),
                            )
                        ),
                    )
                    for ordinal, size, name_sealed in conn.execute(
                        "SELECT ordinal, size, name_sealed FROM own_attachments"
                        " WHERE report_id = ? ORDER BY ordinal",
                        (report_id,),
                    ).fetchall()
                )
                tip = previous if sequence == chain_sequence else None
                entries.append(outbox.Entry(report_id, sequence, created_at, tag, tip, attachments))
            if not any(e.sequence == chain_sequence for e in entries):
                entries.append(outbox.Entry(None, chain_sequence, 0, None, previous))
            conn.executemany(
                "INSERT INTO sealed_outbox (entry) VALUES (?)",
                [(outbox.seal_entry(e, public),) for e in entries],
            )
        for table in _PLAINTEXT_OUTBOX_TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {table}")

    @property
    def conn(self) -> sqlite3.Connection:
        """The plain connection, for store-thread code on the daemon's path (offer holds):
        ``db`` would import sqlite_utils (and numpy where installed) into every relay."""
        return self._conn

    @functools.cached_property
    def db(self) -> sqlite_utils.Database:
        """sqlite_utils over the same connection, imported on first use: it costs more to
        import than ``fieldsync status`` may take in all (issue 13 item 6)."""
        import sqlite_utils

        return sqlite_utils.Database(self._conn)

    def close(self) -> None:
        self._conn.close()

    def rotate_key(self) -> bool:
        """Re-encrypt the whole store under a new ``store.key`` and destroy the old key, so
        every page image of deleted rows left in free blocks becomes noise (``cipher_db``).

        Runs between transactions (on the store thread, one call at a time). Returns False
        if another process holds the WAL; the janitor retries at its next pass."""
        rotated = cipher_db.rotate(self._conn, self.key_file)
        if rotated:
            self.purged_since_rotation = False
            self._key_stamp = _file_stamp(self.key_file)
        return rotated

    def transaction(self) -> AbstractContextManager[None]:
        return self._counted_transaction()

    @contextlib.contextmanager
    def _counted_transaction(self) -> Iterator[None]:
        self._follow_key_rotation()
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
        from fieldsync_protocol.envelope import TTL_CLASSES  # loaded with ``checked``

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
        self._count_inserted(1)
        counts.new += 1
        counts.new_ids.append(item.id)
        if checked.receipt is not None:
            self._apply_receipt(checked.receipt, counts, now)

    def add_imported(self, checked: Checked, counts: ImportCounts, now: int, window: int) -> None:
        """Store one verified item from a bundle inside the caller's transaction.

        Bundles are one contributor of their own (``eviction.IMPORTED``) and are charged to no
        quota. An item the disk budget evicted that comes back in a bundle is handled as when
        a peer pushes it again (SPEC.md §14.2, §14.4): it stays its first contributor's
        (fair share and no echo), is charged to that contributor's quota for ``window``
        (counted, never a reason to refuse the bundle) and its memory entry is dropped.
        Without this the courier's bundle became the flood's contributor: the next eviction
        took the newest imported items, honest reports carried by USB among them.
        """
        prefix = bytes(checked.item.tag[:EVICTED_TAG_PREFIX])
        row = self._conn.execute(
            "SELECT origin FROM evicted_origins WHERE prefix = ?", (prefix,)
        ).fetchone()
        if row is None:
            self.add_checked(checked, counts, now)
            return
        first: int | None = row[0]
        self.add_checked(checked, counts, now, origin=first)
        self._conn.execute("DELETE FROM evicted_origins WHERE prefix = ?", (prefix,))
        self._charge_contributors(window, [(first, len(checked.item.data))])

    def _apply_receipt(self, receipt: Receipt, counts: ImportCounts, now: int) -> None:
        """Delete and tombstone what a receipt names, whatever its status (SPEC.md §9); the
        status goes with the tombstone, for the author's outbox to show (fieldsync.outbox).

        ``delivered_own``/``held_own`` count this node's own reports the receipt purged (a
        later "accepted" for a report already held is not counted: without the author's
        key the store cannot tell which tombstones are the author's)."""
        counts.receipts_applied += 1
        outbox_status, replaces = _OUTBOX_BY_RECEIPT[receipt.status]
        marks = ", ".join("?" for _ in replaces) or "NULL"
        for tag in receipt.tags:
            # Envelopes, attachment chunks and opaque items are receipted (SPEC.md §9, §16.5);
            # receipts, manifests, revocation lists and forms never are.
            purged = self._conn.execute(
                PURGE_BY_TAG_SQL,
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
                "INSERT INTO tombstones (tag, deleted_at, status, status_at)"  # noqa: S608 - marks
                " VALUES (?, ?, ?, ?) ON CONFLICT (tag) DO UPDATE SET status = excluded.status,"
                f" status_at = excluded.status_at WHERE tombstones.status IN ({marks})",
                (tag, now, outbox_status, now, *replaces),
            )
            own_reports = sum(
                1 for _, own, kind in purged if own and kind == ItemKind.ENVELOPE.value
            )
            if outbox_status == "delivered":
                counts.delivered_own += own_reports
            else:
                counts.held_own += own_reports

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
        return int(self._conn.execute("SELECT n FROM item_count").fetchone()[0])

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
        before_commit: Callable[[], object] | None = None,
    ) -> ImportCounts:
        """Store a batch from a peer in one durable transaction (commit before ack).

        ``origin``: the node key of the peer that sent it (deltas to it skip these items).
        ``quota``: charge the batch to that peer first, in the same transaction (one fsync
        per batch); over quota raises ``QuotaExceeded`` and stores nothing. ``charge``:
        (items, bytes) to charge instead of the batch's own (a session batch stored in
        several slices is charged whole with its first one, and (0, 0) with the others).

        Items the disk budget evicted that come back (SPEC.md §14.2) stay their original
        contributor's: stored under its origin and charged to its quota, not to the peer
        that pushed them again (credited back to it when an earlier slice charged them).

        ``durable=False``: commit under ``synchronous=NORMAL`` - atomic and visible, but not
        fsynced, so the write lock is held for the work only and one fsync serves many
        slices (perf S1, S11). Nothing committed so may be acknowledged until a later
        ``durable=True`` call returns: that commit always writes (a marker row when it has
        nothing else to write), so SQLite fsyncs the WAL, which holds every earlier relaxed
        commit (or a checkpoint already synced them into the database file).

        ``before_commit``: called once everything is written, just before the commit, which
        runs inside SQLite without the GIL (``StoreWorker.ahead`` starts work there).
        """
        counts = ImportCounts()
        with self._synchronous(durable), self.transaction():
            if durable and self._unsynced:
                self._conn.execute(
                    "INSERT INTO store_meta (key, value) VALUES ('sync_points', 1)"
                    " ON CONFLICT(key) DO UPDATE SET value = value + 1"
                )
            ref = None if origin is None else self._origin_ref(origin, create=True)
            returning = {} if origin is None else self._returning(checked)
            if quota is not None:
                if charge is None:
                    charge = (len(checked), sum(len(c.item.data) for c in checked))
                # What another contributor gave first is charged to it (the sender's own
                # items coming back stay the sender's, checked against its quota).
                others = [(first, size) for first, size in returning.values() if first != ref]
                back_bytes = sum(size for _first, size in others)
                if charge != (len(others), back_bytes):
                    exhausted = self._charge(quota, charge[0] - len(others), charge[1] - back_bytes)
                    if exhausted is not None:
                        raise QuotaExceeded(f"peer is over its quota for today ({exhausted})")
                self._charge_contributors(quota.window, others)
            self._add_many(checked, counts, now, ref, {k: r for k, (r, _s) in returning.items()})
            if before_commit is not None:
                before_commit()
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

    def _returning(self, checked: list[Checked]) -> dict[bytes, tuple[int | None, int]]:
        """Evicted items coming back (SPEC.md §14.2): item id -> (the origin they had when
        evicted, their size), by the remembered prefixes of their delivery tags."""
        # Nothing was ever evicted on most nodes: one probe instead of a prefix per item.
        if self._conn.execute("SELECT 1 FROM evicted_origins LIMIT 1").fetchone() is None:
            return {}
        by_prefix = {c.item.tag[:EVICTED_TAG_PREFIX]: c.item for c in checked}
        prefixes = list(by_prefix)
        found = {}
        for start in range(0, len(prefixes), 500):
            chunk = prefixes[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT prefix, origin FROM evicted_origins WHERE prefix IN ({marks})",  # noqa: S608
                _blobs(chunk),
            )
            for prefix, ref in rows:
                item = by_prefix[bytes(prefix)]
                found[item.id] = (ref, len(item.data))
        return found

    def _charge_contributors(
        self, window: int, returning: Iterable[tuple[int | None, int]]
    ) -> None:
        """Charge evicted items that came back to the quota of the peer that first gave
        them (none for imported items or a forgotten peer): counted, never refused, since
        the peer that pushed them again is not the one that sent them first."""
        totals: dict[int, tuple[int, int]] = {}
        for ref, size in returning:
            if ref is not None:
                items, total = totals.get(ref, (0, 0))
                totals[ref] = (items + 1, total + size)
        for ref, (items, size) in totals.items():
            self._conn.execute(
                "UPDATE peers SET"
                " quota_items = CASE WHEN quota_window = ?1 THEN quota_items ELSE 0 END + ?2,"
                " quota_bytes = CASE WHEN quota_window = ?1 THEN quota_bytes ELSE 0 END + ?3,"
                " quota_window = ?1"
                " WHERE peer = (SELECT peer FROM origins WHERE ref = ?4)",
                (window, items, size, ref),
            )

    def _add_many(
        self,
        checked: list[Checked],
        counts: ImportCounts,
        now: int,
        origin: int | None,
        returning: dict[bytes, int | None] | None = None,
    ) -> None:
        """``add_checked`` for a whole batch: two lookups and one ``executemany`` instead of
        three statements per item (the receiver's hot path, perf S1). Receipts are applied
        after the batch's items are in, so the end state equals one-by-one insertion.
        ``returning``: evicted items coming back, by id, stored under their first origin."""
        from fieldsync_protocol.envelope import TTL_CLASSES  # loaded with ``checked``

        returning = returning or {}
        tombstoned = self._present("tombstones", "tag", [c.item.tag for c in checked])
        held = self._present("items", "id", [c.item.id for c in checked])
        clock = self._clock_now()
        rows = []
        receipts = []
        kinds = counts.kinds
        for entry in checked:
            item = entry.item
            kind_name, kind_value = _KIND_NAME_AND_VALUE[item.kind]
            kinds[kind_name] = kinds.get(kind_name, 0) + 1
            if item.tag in tombstoned:
                counts.already_delivered += 1
                continue
            if item.id in held:
                counts.duplicate += 1
                continue
            held.add(item.id)
            ttl = RECEIPT_TTL if entry.envelope is None else TTL_CLASSES[entry.envelope.ttl_class]
            first = returning.get(item.id, origin)
            # bytearray, not bytes: bound without an adapter lookup (``_blobs``).
            blobs = bytearray(item.id), bytearray(item.tag), bytearray(item.data)
            rows.append((*blobs, kind_value, now, clock + ttl, first))
            counts.new += 1
            counts.new_ids.append(item.id)
            if entry.receipt is not None:
                receipts.append(entry.receipt)
        if rows:  # (DB-API lets an executemany of nothing report rowcount -1)
            inserted = self._conn.executemany(
                "INSERT INTO items (id, tag, data, kind, received_at, expires_at, own, origin)"
                " VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                rows,
            ).rowcount
            self._count_inserted(inserted)
        if returning:
            back = [
                bytes(c.item.tag[:EVICTED_TAG_PREFIX]) for c in checked if c.item.id in returning
            ]
            for start in range(0, len(back), 500):
                chunk = back[start : start + 500]
                marks = ",".join("?" * len(chunk))
                self._conn.execute(
                    f"DELETE FROM evicted_origins WHERE prefix IN ({marks})",  # noqa: S608
                    chunk,
                )
        for receipt in receipts:
            self._apply_receipt(receipt, counts, now)

    def _count_inserted(self, inserted: int) -> None:
        """After the last statement inserted ``inserted`` rows into ``items``, in the
        inserting transaction: add them to ``item_count`` (migration 13: inserts have no
        trigger; deletes still count by one) and their tags to the pending part of the tag
        index (migration 15), and move some pending ones on once there are many."""
        if not inserted:
            return
        # One statement's rows have consecutive seqs ending at the last rowid it inserted
        # (AUTOINCREMENT gives each the largest seq ever used plus one, and this
        # transaction holds the write lock).
        (last,) = self._conn.execute("SELECT last_insert_rowid()").fetchone()
        self._conn.execute(
            "INSERT INTO item_tags_pending (prefix, seq)"
            " SELECT substr(tag, 1, 8), seq FROM items WHERE seq > ?",
            (last - inserted,),
        )
        self._conn.execute("UPDATE item_count SET n = n + ?", (inserted,))
        if self._pending_tags is not None:
            self._pending_tags += inserted
        elif inserted >= TAG_MERGE_COUNT_FROM:
            # Counted once per Store, by its first bulk write: a process that writes one
            # report (``report add``, perf S11) pays for no count and no merge.
            self._pending_tags = self._count_pending_tags()
        if self._pending_tags is not None and self._pending_tags >= TAG_MERGE_AT:
            # Twice what came in: a pending part grown by writers that never merge (the CLI)
            # shrinks back under the mark.
            self._merge_tags(2 * inserted)

    def _count_pending_tags(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM item_tags_pending").fetchone()[0])

    def _merge_tags(self, at_least: int) -> None:
        """Move pending tag rows into ``item_tags``, one key range at a time, until
        ``at_least`` moved (so the pending part stops growing) or every range did once."""
        moved = 0
        for _ in range(TAG_MERGE_PIECES):
            piece, self._tag_piece = self._tag_piece, (self._tag_piece + 1) % TAG_MERGE_PIECES
            width = 256 // TAG_MERGE_PIECES
            low = bytes([piece * width])
            # Past every 8-byte prefix that starts below the next range's first byte.
            high = bytes([piece * width + width]) if piece + 1 < TAG_MERGE_PIECES else b"\xff" * 9
            self._conn.execute(
                "INSERT INTO item_tags (prefix, seq) SELECT prefix, seq FROM item_tags_pending"
                " WHERE prefix >= ? AND prefix < ?",
                (low, high),
            )
            moved += self._conn.execute(
                "DELETE FROM item_tags_pending WHERE prefix >= ? AND prefix < ?", (low, high)
            ).rowcount
            if moved >= at_least:
                break
        # Recounted: other processes insert, and deletes (their trigger) take rows too.
        self._pending_tags = self._count_pending_tags()

    def _present(self, table: str, column: str, values: list[bytes]) -> set[bytes]:
        select = f"SELECT {column} FROM {table}"  # noqa: S608 - table and column are ours
        return set(self._where_in(select, column, values))

    def _where_in(self, select: str, column: str, values: list[bytes]) -> Iterator[bytes]:
        """``select ... WHERE column IN (values)``, first column of each row, 500 at a time."""
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"{select} WHERE {column} IN ({marks})"
            for row in self._conn.execute(sql, _blobs(chunk)):
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
        peer = self._peer_id(node_key)
        row = self._conn.execute("SELECT ref FROM origins WHERE peer = ?", (peer,)).fetchone()
        if row is None and create:
            row = self._conn.execute(
                "INSERT INTO origins (peer) VALUES (?) RETURNING ref", (peer,)
            ).fetchone()
        return None if row is None else int(row[0])

    @functools.cached_property
    def _peer_key(self) -> bytes:
        row = self._conn.execute("SELECT value FROM store_meta WHERE key = 'peer_key'").fetchone()
        return bytes(row[0])

    def _peer_id(self, node_key: bytes) -> bytes:
        """What the store keeps of a peer's node key: a keyed hash (issue #11). Reading the
        store lists no peer; only someone holding a node key can test whether it was met."""
        return hashlib.blake2b(
            node_key, digest_size=16, key=self._peer_key, person=_PEER_PERSON
        ).digest()

    def high_water(self) -> int:
        """The largest local number ever given (deletions never lower it)."""
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
        return 0 if row is None else int(row[0])

    def epoch(self) -> bytes:
        """Random id of this store: a peer's cursor is only valid for the same epoch."""
        row = self._conn.execute("SELECT value FROM store_meta WHERE key = 'epoch'").fetchone()
        return bytes(row[0])

    def epoch_for(self, node_key: bytes) -> bytes:
        """The epoch this store shows the peer ``node_key`` (SPEC.md §13.1): a keyed hash of
        its key under the store's epoch, so peers comparing notes cannot tell they met the
        same store, and it changes whenever the store's own epoch does."""
        return hashlib.blake2b(
            node_key, digest_size=16, key=self.epoch(), person=_EPOCH_PERSON
        ).digest()

    def get_items(self, ids: list[bytes]) -> list[bytes]:
        return list(self._where_in("SELECT data FROM items", "id", ids))

    def kinds_of(self, ids: list[bytes], kinds: list[str]) -> list[tuple[str, int, bytes]]:
        """``(kind, seq, id)`` of the held items among ``ids`` whose kind is in ``kinds``.

        Every batch a session sends asks this of its ids first (media go last), so it picks
        the cheaper way to the same rows: when the store holds fewer items of ``kinds`` than
        there are ``ids`` (none at all on most relays), it reads those items through the kind
        index; otherwise each id's row, a random page read that the sender pays again for
        the item itself (perf S1)."""
        marks = ",".join("?" * len(kinds))
        few = self._conn.execute(
            f"SELECT seq FROM items WHERE kind IN ({marks}) LIMIT ?",  # noqa: S608 (index only)
            [*kinds, len(ids)],
        ).fetchall()
        if len(few) < len(ids):
            if not few:
                return []
            wanted = set(ids)
            found = self._conn.execute(
                f"SELECT kind, seq, id FROM items WHERE kind IN ({marks})",  # noqa: S608
                kinds,
            )
            return [(str(k), int(q), bytes(i)) for k, q, i in found if bytes(i) in wanted]
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

    def seq_offset_for(self, node_key: bytes) -> int:
        """What this store adds to its local numbers for the peer ``node_key`` (below 2^32),
        fixed as its ``epoch_for``: the peer sees how many items arrive, not how many this
        store ever held."""
        digest = hashlib.blake2b(
            node_key, digest_size=4, key=self.epoch(), person=_OFFSET_PERSON
        ).digest()
        return int.from_bytes(digest, "big")

    # --- peers -----------------------------------------------------------------------------

    def peer_cursor(self, node_key: bytes) -> tuple[bytes, int] | None:
        """(peer store epoch, seq) we have fully received from this peer, if known."""
        row = self._conn.execute(
            "SELECT cursor_epoch, cursor FROM peers WHERE peer = ?", (self._peer_id(node_key),)
        ).fetchone()
        return None if row is None or row[0] is None else (bytes(row[0]), int(row[1]))

    def set_peer_cursor(self, node_key: bytes, epoch: bytes, cursor: int, now: int) -> None:
        self._conn.execute(
            "INSERT INTO peers (peer, cursor_epoch, cursor, last_sync, seen)"
            " VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(peer) DO UPDATE SET cursor_epoch = excluded.cursor_epoch,"
            " cursor = excluded.cursor, last_sync = excluded.last_sync, seen = excluded.seen",
            (
                self._peer_id(node_key),
                epoch,
                cursor,
                now - now % LAST_SYNC_GRAIN,
                self._clock_now(),
            ),
        )

    def forget_peers(self, unseen_for: int) -> int:
        """Delete the records of peers not seen for ``unseen_for`` seconds of local clock
        (the janitor, ``sync.forget_peers_days``); their items stay, no longer linked to
        them. A forgotten peer that comes back reconciles once, as a new one."""
        cutoff = self.local_clock() - unseen_for
        stale = "SELECT 1 FROM peers WHERE seen < ? LIMIT 1"
        if self._conn.execute(stale, (cutoff,)).fetchone() is None:
            return 0  # the common case: no write every janitor pass
        with self.transaction():
            forgotten = self._conn.execute("DELETE FROM peers WHERE seen < ?", (cutoff,)).rowcount
            self._conn.execute(
                "UPDATE origins SET peer = NULL WHERE peer IS NOT NULL"
                " AND peer NOT IN (SELECT peer FROM peers)"
            )
            self._conn.execute(
                "DELETE FROM origins WHERE peer IS NULL AND NOT EXISTS"
                " (SELECT 1 FROM items WHERE items.origin = origins.ref)"
            )
        return int(forgotten)

    def charge_quota(
        self, node_key: bytes, window: int, items: int, size: int, max_items: int, max_bytes: int
    ) -> bool:
        """Count a peer's delivery against its quota for ``window``; False once exceeded."""
        with self.transaction():
            quota = Quota(node_key, window, max_items, max_bytes)
            return self._charge(quota, items, size) is None

    def _charge(self, quota: Quota, items: int, size: int) -> str | None:
        """Charge the delivery; None while within the quota, else which limit ran out."""
        peer = self._peer_id(quota.node_key)
        self._conn.execute(
            "INSERT INTO peers (peer) VALUES (?) ON CONFLICT(peer) DO NOTHING", (peer,)
        )
        self._conn.execute(
            "UPDATE peers SET"  # a negative charge credits back what an earlier slice charged
            " quota_items = max(0, CASE WHEN quota_window = ?1 THEN quota_items ELSE 0 END + ?2),"
            " quota_bytes = max(0, CASE WHEN quota_window = ?1 THEN quota_bytes ELSE 0 END + ?3),"
            " quota_window = ?1, seen = ?5 WHERE peer = ?4",
            (quota.window, items, size, peer, self._clock_now()),
        )
        used_items, used_bytes = self._conn.execute(
            "SELECT quota_items, quota_bytes FROM peers WHERE peer = ?", (peer,)
        ).fetchone()
        if used_bytes > quota.max_bytes:
            return f"{quota.max_bytes:,} bytes a day; this delivery would make {used_bytes:,}"
        if used_items > quota.max_items:
            return f"{quota.max_items:,} items a day; this delivery would make {used_items:,}"
        return None

    def peers(self) -> list[dict[str, object]]:
        """What the store keeps of each peer: no key, no counts (issue #11)."""
        cursor = self._conn.execute(
            "SELECT peer, cursor, last_sync, seen FROM peers ORDER BY last_sync DESC"
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
                EXPIRE_SQL,
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
        # int(): SQLCipher answers PRAGMA page_size as text ('4096').
        page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
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
                self._evict(plan, evicted_origins_limit(budget_bytes))
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
        """Choose items freeing ``need`` bytes from the first step of SPEC.md §14.2's order
        that holds any; ``pools`` follow what is chosen.

        A plan never reaches past the step it starts in: the next round measures the pages
        again first. What a row frees is estimated (its length + ITEM_OVERHEAD), and rows
        that do not pack into pages (one 4 KiB envelope per 8 KiB page) free up to twice
        that: planned across steps, the estimate alone would take the author's own reports
        while relayed ones were still enough."""
        plan = eviction.Plan()
        media = functools.partial(self._newest_relayed, _RELAYED_MEDIA)
        reports = functools.partial(self._newest_relayed, _RELAYED_REPORTS)
        floor = eviction.protected_share(budget, len(pools.reports.held))
        steps: tuple[Callable[[], None], ...] = (
            lambda: eviction.fair_share(pools.media, need, 0, media, plan),
            lambda: eviction.fair_share(pools.reports, need, floor, reports, plan),
            lambda: self._take_in_order(plan, need, "kind = ?", (ItemKind.RECEIPT.value,)),
            lambda: eviction.fair_share(pools.reports, need, 0, reports, plan),
            lambda: self._take_in_order(
                plan, need, "kind = ? AND own = 1", (ItemKind.ENVELOPE.value,)
            ),
        )
        for step in steps:
            step()
            if plan.seqs:
                break
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

    def _evict(self, plan: eviction.Plan, remember: int) -> None:
        """Delete the planned items (no tombstone) and forget the cursors on the peers that
        gave them, so those peers' next sessions reconcile and can bring them back. Who
        contributed each relayed item is remembered (the newest ``remember`` evictions), so
        an item pushed again by another peer stays its first contributor's (§14.2)."""
        for start in range(0, len(plan.seqs), 500):
            chunk = plan.seqs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            self._conn.execute(
                "INSERT OR REPLACE INTO evicted_origins (prefix, origin)"  # noqa: S608
                f" SELECT substr(tag, 1, {EVICTED_TAG_PREFIX}), origin FROM items"
                f" WHERE seq IN ({marks}) AND own = 0 ORDER BY seq",
                chunk,
            )
            self._conn.execute(f"DELETE FROM items WHERE seq IN ({marks})", chunk)  # noqa: S608
        self._conn.execute(
            "DELETE FROM evicted_origins WHERE n IN"
            " (SELECT n FROM evicted_origins ORDER BY n DESC LIMIT -1 OFFSET ?)",
            (remember,),
        )
        peers = [key for key in plan.by_contributor if key != eviction.IMPORTED]
        if peers:
            marks = ",".join("?" * len(peers))
            self._conn.execute(
                "UPDATE peers SET cursor_epoch = NULL, cursor = 0 WHERE peer IN"  # noqa: S608
                f" (SELECT peer FROM origins WHERE ref IN ({marks}))",
                peers,
            )

    def checkpoint(self, attempts: int = 20, *, purged: bool = True) -> bool:
        """Fold the WAL into the database and truncate it, so deleted rows leave no copy.

        A reader in another process (the CLI while the daemon runs) can hold the WAL; then
        SQLite reports "busy" and truncates nothing, so retry briefly. Returns success; the
        janitor's next periodic checkpoint retries a failure. ``purged``: rows were deleted
        (the default: purges call this), so the janitor rotates the store key soon.
        """
        if purged:
            self.purged_since_rotation = True
        for attempt in range(attempts):
            busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if not busy:
                return True
            time.sleep(0.05 * (attempt + 1))
        return False

    # --- the author's sealed outbox (fieldsync.outbox) ----------------------------------

    def record_own_report(
        self,
        keys: outbox.OutboxKeys,
        report_id: str,
        now: int,
        seal: Callable[[sqlite3.Connection, outbox.Tip], OwnRecord],
    ) -> None:
        """Store the author's new envelope, its sealed outbox entry and the author's new
        tip atomically.

        ``seal`` runs inside the transaction with the author's current tip: it signs and
        seals the report as the tip's successor (so two writers never take the same
        sequence) and returns it with its sealed entry (it claims the report's attachment
        chunks first: fieldsync.media). A report id the author already used is refused.
        """
        from fieldsync import outbox  # loaded with ``keys``

        mac = outbox.report_id_mac(keys, report_id)
        # Announced: a daemon storing a sync flight lets this write in before its next slice.
        with (
            write_intent.announced(self.path),
            self._without_autocheckpoint(),
            self.transaction(),
        ):
            tip = self._outbox_tip(keys)
            if self._conn.execute("SELECT 1 FROM outbox_ids WHERE mac = ?", (mac,)).fetchone():
                raise InputRefused(
                    f"a report with id {report_id} already exists on this node; to correct it,"
                    ' write a new report with "supersedes" set to that id'
                )
            record = seal(self._conn, tip)
            self.add_checked(record.checked, ImportCounts(), now, own=True)
            self._conn.execute("INSERT INTO sealed_outbox (entry) VALUES (?)", (record.entry,))
            self._conn.execute("INSERT INTO outbox_ids (mac) VALUES (?)", (mac,))
            self._conn.execute(
                "INSERT INTO outbox_tips (locator, tip) VALUES (?, ?)"
                " ON CONFLICT (locator) DO UPDATE SET tip = excluded.tip",
                (outbox.tip_locator(keys), outbox.seal_tip(record.tip, keys)),
            )

    @contextlib.contextmanager
    def _without_autocheckpoint(self) -> Iterator[None]:
        """No automatic checkpoint at this commit: SQLite runs it in whichever connection
        commits once the WAL is long, so a report written while the daemon stores a flight
        would copy megabytes of the daemon's WAL into the database before it returns (perf
        S11). The daemon's own commits, or the last connection's close, checkpoint instead."""
        pages = int(self._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            yield
        finally:
            self._conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")

    def _outbox_tip(self, keys: outbox.OutboxKeys) -> outbox.Tip:
        """The author's tip. The first time they write after the outbox tip migration (or at
        all), it is found by opening every outbox row once, and their report ids are hashed
        into ``outbox_ids`` (inside the caller's transaction, written with the report)."""
        from fieldsync import outbox  # loaded with ``keys``

        row = self._conn.execute(
            "SELECT tip FROM outbox_tips WHERE locator = ?", (outbox.tip_locator(keys),)
        ).fetchone()
        if row is not None:
            return outbox.open_tip(bytes(row[0]), keys)
        mine = outbox.open_all(self.sealed_outbox(), keys)
        self._conn.executemany(
            "INSERT OR IGNORE INTO outbox_ids (mac) VALUES (?)",
            [(outbox.report_id_mac(keys, e.report_id),) for e in mine if e.report_id is not None],
        )
        return outbox.chain_tip(mine)

    def sealed_outbox(self) -> list[bytes]:
        """Every author's outbox entries, sealed (whose is whose needs their key)."""
        return [row[0] for row in self._conn.execute("SELECT entry FROM sealed_outbox")]

    def receipted(self, tags: list[bytes]) -> dict[bytes, tuple[str, int]]:
        """Tag -> (status, when) for the ``tags`` a receipt has named (a tombstone from
        before migration 7 has no status: "delivered" when it was deleted)."""
        found: dict[bytes, tuple[str, int]] = {}
        for start in range(0, len(tags), 500):
            chunk = tags[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for tag, status, status_at, deleted_at in self._conn.execute(
                "SELECT tag, status, status_at, deleted_at FROM tombstones"  # noqa: S608
                f" WHERE tag IN ({marks})",
                chunk,
            ):
                found[tag] = (status or "delivered", status_at or deleted_at)
        return found

    def has_undelivered_own(self) -> bool:
        """Whether the author still waits for a receipt for any of its reports (own
        envelopes leave the store with their receipt)."""
        row = self._conn.execute(
            "SELECT 1 FROM items WHERE own = 1 AND kind = ? LIMIT 1", (ItemKind.ENVELOPE.value,)
        )
        return row.fetchone() is not None

    # --- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        # Not GROUP BY kind: that walks every index entry (~10 ms at 100k items here, more on
        # a Pi) on the store thread that a bulk sync shares (perf S11). The total is kept by
        # triggers (migration 12); the rare kinds are index ranges; envelopes are the rest.
        # One statement: one snapshot, and one release of the GIL (at each step) instead of
        # one per count, each of which costs a wait for the GIL while a sync runs (perf S11).
        rare = [kind for kind in ItemKind if kind is not ItemKind.ENVELOPE]
        per_kind = "(SELECT count(*) FROM items WHERE kind = ?), " * len(rare)
        counts = self._conn.execute(
            f"SELECT (SELECT n FROM item_count), {per_kind}"  # noqa: S608 - placeholders only
            "(SELECT count(*) FROM items WHERE own = 1 AND kind = ?),"
            " (SELECT count(*) FROM tombstones)",
            (*(kind.value for kind in rare), ItemKind.ENVELOPE.value),
        ).fetchone()
        total, *rare_counts, waiting, tombstones = counts
        kinds = {kind.name.lower(): n for kind, n in zip(rare, rare_counts, strict=True)}
        kinds[ItemKind.ENVELOPE.name.lower()] = total - sum(kinds.values())
        with os.scandir(self.path.parent) as entries:  # one stat per file (-wal, -shm)
            disk = sum(
                entry.stat().st_size
                for entry in entries
                if entry.name.startswith(self.path.name) and entry.is_file()
            )
        return {
            "items": {k.name.lower(): kinds.get(k.name.lower(), 0) for k in ItemKind},
            "items_total": sum(kinds.values()),
            # Own reports not yet receipted; what HQ made of the others is in the sealed
            # outbox, shown to each author with their passphrase (`report list`).
            "outbox": {"sealed": waiting},
            "tombstones": tombstones,
            "disk_bytes": disk,
        }

    def data_version(self) -> int:
        """Changes whenever *another* connection commits (SQLite ``PRAGMA data_version``)."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def integrity_check(self) -> str:
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])


def _blobs(values: Iterable[bytes]) -> list[bytearray]:
    """``values`` as the parameters of a statement, copied into ``bytearray``s.

    The sqlite3 binding (sqlcipher3's as the stdlib's) passes str, int, float and bytearray
    parameters straight to SQLite, but looks for an adapter for ``bytes`` first (the
    adapter registry, then ``__adapt__`` and ``__conform__``): measured with sqlcipher3 on
    the reference VM, 3 bytes values cost 5-20 us per row, 3 bytearrays (copy included)
    2.5-4 us, as much as the row's SQLite insert (perf S1). A bytearray binds the same BLOB,
    and a result is ``bytes`` either way.
    """
    return [bytearray(value) for value in values]


def evicted_origins_limit(budget_bytes: int) -> int:
    """How many evicted items' contributors a store with this disk budget remembers."""
    return max(EVICTED_ORIGINS_MIN, budget_bytes // EVICTED_ORIGINS_PER_BYTES)


def _file_stamp(path: Path) -> tuple[int, int] | None:
    """Inode and change time of ``path`` (None if missing): a rotation replaces the file."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns


def store_key_file(path: Path) -> Path:
    """The store key's file: ``store.key`` next to ``store.db`` (SPEC.md §15)."""
    return path.with_suffix(".key")


def connect_store(path: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> sqlite3.Connection:
    """A bare connection to the store at ``path``, under its key, without migrations (tools
    and tests that read or damage the store below the ``Store`` API)."""
    return cipher_db.open_keyed(path, store_key_file(path), timeout=timeout)


def now_seconds() -> int:
    return int(time.time())
