"""The peer driver: handshake → encrypted frames → sync session, over any transport.

A thin asyncio loop around the sans-IO machines (aioquic's pattern): feed bytes, drain
events, act on the store, transmit, re-arm the timer. The session and the store only ever
run on the store thread (``StoreWorker``); this module only moves bytes.

Custody rule: a received batch is verified, charged to the peer's quota and committed
durably (``synchronous=FULL``) before ``commit_done`` lets the session acknowledge it.
Any protocol violation, bad item or quota overrun ends the connection at once.

The session reads the store through ``SyncSource`` (its ``ItemSource``), which translates
the store's own failures (SQLite, the disk) into ``ItemSourceError``: the connection ends
with a local error that names the store, never one blaming the peer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fieldsync import limits, offer_hold, write_intent
from fieldsync.admission import Admission, ByteBudget, Slot
from fieldsync.cipher_db import DB_ERRORS
from fieldsync.diskerrors import storage_problem
from fieldsync.limits import QUOTA_WINDOW_SECONDS
from fieldsync.lograte import QuietLog
from fieldsync.offer_hold import OfferDelay
from fieldsync.priority import send_later
from fieldsync.reoffer import ReofferPolicy
from fieldsync.store import Quota, QuotaExceeded, Store, now_seconds
from fieldsync.store_worker import StoreWorker
from fieldsync.transport import Transport, TransportError
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.frames import Data, End, FrameReceiver, FrameSender
from fieldsync_protocol.handshake import PeerHandshake, ReplayCache
from fieldsync_protocol.items import Checked, Item, ItemKind, check_item, check_parsed, parse_item
from fieldsync_protocol.membership import Manifest, NodeCertificate
from fieldsync_protocol.reconcile_index import (
    ID_SIZE,
    INFINITY,
    ZERO,
    ItemIndex,
    SortedListIndex,
    successor,
)
from fieldsync_protocol.revocation import RevocationList
from fieldsync_protocol.riblt import CodedSymbols
from fieldsync_protocol.session import (
    Completed,
    CursorAdvanced,
    ItemSourceError,
    ItemsReceived,
    SessionConfig,
    Started,
    SyncSession,
    SyncStats,
)
from fieldsync_protocol.session_messages import BATCH_ITEMS, Cursor

log = logging.getLogger(__name__)

#: In the handshake's refusal of a member whose certificate HQ must renew (SPEC.md §17.4).
CERTIFICATE_TROUBLE = "peer certificate expired"
#: Why a running session ends when HQ's revocation list names its peer.
REVOKED = "the peer was revoked by HQ"
#: Connections accepted in one burst are judged this long after the first of them (the
#: time for a member's first packet, its msg1, to be read), so none is dropped unread.
ADMISSION_GRACE = 0.05
#: Largest single write handed to the transport (well under the WebSocket message cap).
SEND_CHUNK = 256 * 1024
#: A received flight (up to a window of 16 x 256 KiB) is stored in bounded write
#: transactions, one per store-thread call: a local report commit (another process waiting
#: for SQLite's write lock) or a control-API status (a call queued on the store thread) waits
#: for one slice, never for a whole flight (perf S11, issue 13). A slice is sized from the
#: measured cost of the previous one to take about STEP_SECONDS, within these item and byte
#: bounds. Custody is unchanged: a batch is acknowledged once its last slice is committed.
STEP_SECONDS = 0.004
STEP_MAX_BYTES = 128 * 1024
#: While no other process has announced a write for WRITER_RECENT_SECONDS, slices are this
#: long instead: a commit's cost is mostly per transaction (pages of the two random 32-byte
#: indexes, encrypted and written whole), so Store.add_batch costs ~60 us of store-thread
#: CPU per item in 67-item slices, ~40 in 256-item ones and ~33 in 512-item ones (perf S1,
#: 20k items, reference VM; migration 13 later took ~3 us off each insert). Only on a node
#: without an author (a relay, the hub): there a local write (a bundle import, a CLI
#: command) is rare and may wait for one such slice; on an author node a report is written
#: at any moment and must never wait more than a STEP_SECONDS slice (perf S11), so its
#: slices stay short (``StoreWorker.local_writes``).
#: Calls queued on the store thread wait for one slice. 1,024-item slices (32 ms, 1 MiB)
#: rather than 512: a store's indexes grow with it, and a slice rewrites most of their
#: pages whatever its size; 100k items into an empty relay: 13.4–15.1k -> 15.3–15.7k
#: items/s and ~53–60 -> ~52–53 us of receiver CPU per item (two alternating runs each),
#: the relay daemon ~1 MB more after 100k (S10: 54–55 MB, goal 60).
QUIET_STEP_SECONDS = 0.032
QUIET_STEP_MAX_BYTES = 1024 * 1024
QUIET_STEP_MAX_ITEMS = 4 * BATCH_ITEMS
WRITER_RECENT_SECONDS = 2.0
STEP_MIN_ITEMS = 8
STEP_FIRST_ITEMS = 32
#: Slices are committed without an fsync (``Store.add_batch(durable=False)``); a durable
#: commit, whose fsync covers every slice before it, comes once this many received batches
#: are stored but not yet acknowledged, or when nothing received is left to store. The
#: ACK for them goes out at once, while the rest of the flight is still being stored: the
#: sender refills its window (16 batches) without waiting for the whole flight.
ACK_EVERY_BATCHES = 4
#: One store-thread call stores slice after slice (each its own transaction) while nobody
#: else waits for the store (``StoreWorker.others_waiting``), for at most this long (a few
#: quiet slices).
CALL_SECONDS = 0.1
#: DATA batches the sender reads and encodes per store-thread call (``_send_pending``).
SEND_BATCHES_PER_CALL = 1


@dataclass(frozen=True)
class PeerLimits:
    """Deadlines, quotas and the admission limits of SPEC §14.8 (``fieldsync.admission``)."""

    #: Whole handshake, from connecting to the peer's last handshake message.
    handshake_timeout: float = 10.0
    #: An incoming connection must deliver a valid msg1 (48 bytes) this soon.
    first_message_timeout: float = 3.0
    idle_timeout: float = 60.0
    quota_items_per_day: int = limits.QUOTA_ITEMS_PER_DAY
    quota_bytes_per_day: int = limits.QUOTA_BYTES_PER_DAY
    #: Session bytes buffered from one peer ahead of processing: a window of DATA batches
    #: (16 x 256 KiB) plus a 1 MiB message and slack. More means the peer ignores the window.
    max_queued_bytes: int = 8 * 1024 * 1024
    #: The same, summed over every session of the node (readers wait when it is spent).
    max_total_queued_bytes: int = 32 * 1024 * 1024
    #: A responder that got a bad first message waits this long (randomised) before closing.
    silent_close: tuple[float, float] = (1.0, 3.0)
    #: Incoming connections in their handshake at once; the oldest is dropped for a newcomer.
    max_pending_handshakes: int = 64
    #: ... of which at most this many from one source address.
    max_pending_per_address: int = 8
    #: Failed connections waiting out ``silent_close`` at once (then closed early).
    max_lingering: int = 256
    #: Authenticated incoming sessions at once (one per peer certificate).
    max_sessions: int = 16


class PeerViolation(Exception):
    """The peer broke the protocol, sent a bad item or exceeded its quota."""


class QuotaViolation(PeerViolation):
    """The peer delivered more than its per-day quota allows."""


@dataclass
class SyncOutcome:
    """What one connection achieved, from this side's point of view."""

    peer: NodeCertificate | None = None
    complete: bool = False
    error: str | None = None
    stats: SyncStats = field(default_factory=SyncStats)
    items_new: int = 0
    wire_bytes_sent: int = 0
    wire_bytes_received: int = 0
    #: Times storing a flight waited before a slice for another process's announced write.
    yielded_to_local_writers: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "error": self.error,
            "mode": self.stats.mode,
            "items_sent": self.stats.items_sent,
            "items_received": self.stats.items_received,
            "items_new": self.items_new,
            "round_trips": self.stats.round_trips,
            "wire_bytes_sent": self.wire_bytes_sent,
            "wire_bytes_received": self.wire_bytes_received,
        }


@contextlib.contextmanager
def _store_errors(store: Store, doing: str) -> Iterator[None]:
    """The store's own failures, as the ``ItemSourceError`` the session passes through."""
    try:
        yield
    except (*DB_ERRORS, OSError) as exc:
        cause = storage_problem(exc, store.path) or exc
        raise ItemSourceError(f"the local store failed while {doing}: {cause}") from exc


#: Ids hashed into coded symbols per build step (~14 indices each: a few ms on a laptop).
CODED_STEP_IDS = 256


@dataclass
class _CodedBuild:
    """Coded symbols being built over ``index``: every id below ``after`` is in them."""

    symbols: CodedSymbols
    after: bytes
    index: SortedListIndex


#: Changes owed to coded symbols (``_Behind``) past which they are dropped, to be built
#: again from the index: owed ids are kept, 32 bytes each, until settled (RSS.relay: 100k
#: owed as ``bytes`` objects took a relay's resident memory past its 60 MB goal).
MAX_OWED_IDS = 16_384


@dataclass
class _Behind:
    """Ids the index gained or lost that ``symbols`` do not show yet, packed.

    A new item used to update the coded symbols in the commit that stored it: ~14 indices
    per id in Python, a fifth of a relay's store thread during a bulk receive (perf S10),
    while nothing reads the symbols until the next first contact. They are brought up to
    date in steps instead (``SyncSource.build_coded_step``), each its own call in the store
    thread's bulk lane, which the daemon paces while sessions move items: contact time is
    what a relay lacks, not idle CPU.
    """

    symbols: CodedSymbols
    added: bytearray = field(default_factory=bytearray)
    removed: bytearray = field(default_factory=bytearray)

    def __len__(self) -> int:
        return (len(self.added) + len(self.removed)) // ID_SIZE

    def settle(self, limit: int) -> None:
        """Apply up to ``limit`` of the changes (the XORs and counts commute: any order)."""
        symbols = self.symbols
        for pending, apply in ((self.removed, symbols.remove_all), (self.added, symbols.extend)):
            take = min(limit, len(pending) // ID_SIZE)
            if take:
                packed = bytes(pending[-take * ID_SIZE :])
                del pending[-take * ID_SIZE :]
                apply(packed[i : i + ID_SIZE] for i in range(0, len(packed), ID_SIZE))
                limit -= take


class SyncSource:
    """The session's view of the store (an ``ItemSource``); used only on the store thread.
    Store failures leave it as ``ItemSourceError``. Report items stay out of sight until
    their offer delay has passed (``offer_hold``, SPEC.md §14.10)."""

    def __init__(self, store: Store, offer_delay: OfferDelay | None = None) -> None:
        self._store = store
        self._index: SortedListIndex | None = None
        # Coded symbols of exactly the index's ids (SPEC.md §13.3.6), for first contacts:
        # ready ones (for the index object they follow), or one being built step by step.
        self._coded: CodedSymbols | None = None
        self._coded_for: SortedListIndex | None = None
        self._building: _CodedBuild | None = None
        #: Changes the symbols that follow the index (ready ones or a build: never both)
        #: have not taken yet; those owed to symbols no longer followed are ignored.
        self._owed: _Behind | None = None
        #: When a session last stored, purged or read items to send (``time.monotonic``).
        self._busy_at = -math.inf
        self._data_version = store.data_version()
        self.offer_delay = offer_delay or OfferDelay()
        #: Running time the store's clock does not show yet (the daemon's janitor says).
        self.unrecorded_seconds: Callable[[], int] = lambda: 0

    def _now(self) -> int:
        """The running clock (SPEC.md §14.1) to the second, for the offer holds."""
        return self._store.local_clock() + self.unrecorded_seconds()

    def refresh(self) -> bool:
        """Drop the cached index if another process (the CLI) changed the store; assess new
        items and end due holds. True when items became offerable since the last call."""
        version = self._store.data_version()
        if version != self._data_version:
            self._data_version = version
            self._index = None
        with _store_errors(self._store, "updating the offer holds"):
            now = self._now()
            free = offer_hold.assess(self._store, self.offer_delay, now)
            released = offer_hold.release(self._store, now)
        self._add_all([*free, *released])
        return bool(free or released)

    def horizon(self) -> int:
        """Our store number as peers may see it (HELLO ``h``): nothing held up to it."""
        with _store_errors(self._store, "reading the offer horizon"):
            return offer_hold.horizon(self._store)

    def invalidate(self) -> None:
        """Our own connection deleted items outside a sync (janitor): rebuild on next use."""
        self._index = None

    @property
    def index(self) -> ItemIndex:
        if self._index is None:
            with _store_errors(self._store, "reading the item ids"):
                offer_hold.assess(self._store, self.offer_delay, self._now())
                ids = offer_hold.offerable_sorted_ids(self._store)
                self._index = SortedListIndex.from_sorted(ids)
        return self._index

    def items_after(
        self, seq: int, limit: int, skip_origin: bytes | None = None
    ) -> list[tuple[int, bytes]]:
        self._busy_at = time.monotonic()
        with _store_errors(self._store, "reading items to send"):
            return self._store.items_after(seq, limit, skip_origin)

    def get(self, ids: Sequence[bytes]) -> list[bytes]:
        self._busy_at = time.monotonic()
        with _store_errors(self._store, "reading items to send"):
            return self._store.get_items(list(ids))

    def wants(self, ids: Sequence[bytes]) -> list[bytes]:
        with _store_errors(self._store, "looking up the items offered"):
            return self._store.missing(list(ids))

    def send_later(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        with _store_errors(self._store, "ordering media to send last"):
            return send_later(self._store, list(ids))

    def note_changes(self, added: Sequence[bytes], removed: Sequence[bytes]) -> None:
        """Keep the cached index equal to the store's offerable items after a commit."""
        if added or removed:
            self._busy_at = time.monotonic()
        if not self.offer_delay.active:
            self._add_all(added)
        # Else not yet: the commit that stored them came after the last assessment (this
        # thread assesses), so each counts as held until ``refresh`` assesses it, in a
        # write of its own (it waits for the transaction budget of a flight).
        for item_id in removed:
            self._discard(item_id)

    def _add_all(self, ids: Sequence[bytes]) -> None:
        """Add to the cached index (a batch at once); coded symbols that cover the new ids
        take them later."""
        if self._index is None or not ids:
            return
        self._owe(self._index.add_many(ids), removed=False)

    def _discard(self, item_id: bytes) -> None:
        if self._index is None or not self._index.discard(item_id):
            return
        self._owe([item_id], removed=True)

    def _followed(self) -> tuple[CodedSymbols, bytes] | None:
        """The symbols that follow the current index, and the id below which they cover it:
        ready ones (every id), or a build (the ids before where it has got to; it reads the
        others, or not, from the index when it gets there)."""
        if self._coded is not None and self._coded_for is self._index:
            return self._coded, INFINITY
        build = self._building
        if build is not None and build.index is self._index:
            return build.symbols, build.after
        return None

    def _owed_now(self) -> _Behind | None:
        """What the followed symbols are owed (None: nothing, or not followed any more).
        Reads only: ``coded_state`` calls it from the event loop."""
        followed, owed = self._followed(), self._owed
        if followed is None or owed is None or owed.symbols is not followed[0]:
            return None
        return owed

    def _owe(self, ids: list[bytes], *, removed: bool) -> None:
        """Note ``ids`` as added to or removed from the index for the followed symbols;
        past ``MAX_OWED_IDS`` owed, drop them: the next steps build them anew from the
        index, which holds every id already."""
        followed = self._followed()
        if followed is None or not ids:
            return
        symbols, below = followed
        covered = ids if below is INFINITY else [i for i in ids if i < below]
        if not covered:
            return
        owed = self._owed_now() or _Behind(symbols)
        self._owed = owed
        (owed.removed if removed else owed.added).extend(b"".join(covered))
        if len(owed) > MAX_OWED_IDS:
            if symbols is self._coded:
                self._coded = self._coded_for = None
            else:
                self._building = None
            self._owed = None

    # --- coded symbols for first contacts (SPEC.md §13.3.6) ---------------------------------

    def coded_symbols(self) -> CodedSymbols | None:
        """Coded symbols of the index's ids, if ready and up to date, or a step from it (else
        the session uses ranges only)."""
        if self._coded is None or self._index is None or self._coded_for is not self._index:
            return None
        owed = self._owed_now()
        if owed is not None:
            if len(owed) > CODED_STEP_IDS:
                return None
            owed.settle(len(owed))
        return self._coded

    def build_coded_step(self, limit: int = CODED_STEP_IDS) -> bool:
        """Bring the symbols ``limit`` changes closer to the index, or add its next ``limit``
        ids to the symbols being built (a few ms on the store thread: writes and status
        wait one step at most). True while work remains."""
        owed = self._owed_now()
        if owed is not None and len(owed):
            owed.settle(limit)
            return True
        if self.coded_symbols() is not None:
            return False
        index = self.index
        assert isinstance(index, SortedListIndex)  # noqa: S101 - built by ``index``
        build = self._building
        if build is None or build.index is not index:
            build = self._building = _CodedBuild(CodedSymbols(), ZERO, index)
        ids = index.ids(build.after, INFINITY, limit)
        build.symbols.extend(ids)
        if len(ids) < limit:
            self._coded, self._coded_for, self._building = build.symbols, index, None
            return False
        build.after = successor(ids[-1])
        return True

    def busy_within(self, seconds: float) -> bool:
        """Whether sessions stored, purged or read items to send in the last ``seconds`` (a
        contact may be under way: settling the symbols can wait)."""
        return time.monotonic() - self._busy_at < seconds

    def coded_state(self) -> dict[str, object]:
        """For ``status``: coded symbols ready, building (ids so far) or not started."""
        owed = self._owed_now()
        if self._coded is not None and self._index is not None and self._coded_for is self._index:
            if owed is not None and len(owed):
                return {"coded_symbols": "catching up", "coded_symbols_behind": len(owed)}
            return {"coded_symbols": "ready"}
        build = self._building
        if build is not None and build.index is self._index:
            return {"coded_symbols": "building", "coded_symbols_ids": build.symbols.count}
        return {"coded_symbols": "not built"}

    def for_peer(self, node_key: bytes, seq_offset: int = 0) -> PeerSource:
        return PeerSource(self, node_key, seq_offset)


class PeerSource:
    """``SyncSource`` as one peer's session sees it: deltas leave out what that peer gave us,
    and local numbers are shifted by ``seq_offset`` (``Store.seq_offset_for``), so the
    peer does not learn how many items this store ever held (issue #11)."""

    def __init__(self, source: SyncSource, node_key: bytes, seq_offset: int = 0) -> None:
        self._source = source
        self._node_key = node_key
        self._offset = seq_offset

    @property
    def index(self) -> ItemIndex:
        return self._source.index

    def items_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        offset = self._offset
        found = self._source.items_after(max(0, seq - offset), limit, skip_origin=self._node_key)
        return [(local + offset, data) for local, data in found]

    def get(self, ids: Sequence[bytes]) -> list[bytes]:
        return self._source.get(ids)

    def wants(self, ids: Sequence[bytes]) -> list[bytes]:
        return self._source.wants(ids)

    def send_later(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        return self._source.send_later(ids)  # ranks for local ordering, never sent


class LiveSessions:
    """The running sessions by peer node key (both directions), so that a peer HQ revokes
    is cut off at once, not only at its next handshake (SPEC.md §17.2)."""

    def __init__(self) -> None:
        self._by_peer: dict[bytes, set[Slot]] = {}

    def open(self, node_key: bytes, address: str) -> Slot:
        """A slot for one session with ``node_key``; ``release()`` it when the session ends."""

        def forget(slot: Slot) -> None:
            slots = self._by_peer.get(node_key)
            if slots is not None:
                slots.discard(slot)
                if not slots:
                    del self._by_peer[node_key]

        slot = Slot(address, 0, _release=forget)
        self._by_peer.setdefault(node_key, set()).add(slot)
        return slot

    def drop(self, node_keys: frozenset[bytes], reason: str) -> int:
        """End every session with one of ``node_keys``; return how many were running."""
        slots = [slot for key in node_keys for slot in self._by_peer.get(key, ())]
        for slot in slots:
            slot.drop(reason)
        return len(slots)

    def __len__(self) -> int:
        return sum(map(len, self._by_peer.values()))


@dataclass
class PeerContext:
    """Everything a connection needs; built once by the composition root."""

    network_key: bytes
    static_secret: bytes
    certificate: bytes
    manifest: Manifest
    worker: StoreWorker
    source: SyncSource
    limits: PeerLimits = field(default_factory=PeerLimits)
    replay_cache: ReplayCache = field(default_factory=ReplayCache)
    revoked_nodes: frozenset[bytes] = frozenset()
    session_config: SessionConfig = field(default_factory=SessionConfig)
    #: Called (on the store thread) with each verified manifest update a peer delivered.
    on_manifest: Callable[[Checked], None] | None = None
    #: Called (on the store thread) with each verified revocation list a peer delivered.
    on_revocation: Callable[[RevocationList], None] | None = None
    #: Called (on the store thread) with the key deliveries a peer delivered (§17.5).
    on_deliveries: Callable[[Store, list[Checked]], None] | None = None
    #: Every running session by peer, to cut off peers HQ revokes.
    live: LiveSessions = field(default_factory=LiveSessions)
    #: HQ's latest signed time (the revocation list followed): older certificates expire.
    hq_time: int = 0
    #: Further network keys an incoming first message may use (rotation grace, §17.5).
    also_accept: tuple[bytes, ...] = ()
    #: When an author with undelivered reports ignores the delta cursor (SPEC.md §14.9).
    reoffer: ReofferPolicy = field(default_factory=ReofferPolicy)
    #: Built from ``limits``: shared by every listener of this context (SPEC §14.8).
    admission: Admission = field(init=False)
    budget: ByteBudget = field(init=False)
    quiet_log: QuietLog = field(init=False)

    def __post_init__(self) -> None:
        chosen = self.limits
        self.admission = Admission(
            pending=chosen.max_pending_handshakes,
            per_address=chosen.max_pending_per_address,
            lingering=chosen.max_lingering,
            sessions=chosen.max_sessions,
            grace=ADMISSION_GRACE,
            call_later=_call_later,
        )
        self.budget = ByteBudget(chosen.max_total_queued_bytes)
        self.quiet_log = QuietLog(log)


def _call_later(delay: float, callback: Callable[[], None]) -> object:
    """``loop.call_later`` on the running loop (the admission policy's timer), or at once
    when there is no loop (a context used outside asyncio never admits anyone)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        callback()
        return None
    return loop.call_later(delay, callback)


async def run_peer(
    transport: Transport, ctx: PeerContext, *, initiator: bool, network_key: bytes | None = None
) -> SyncOutcome:
    """Handshake and sync over ``transport``; never raises for the peer's misbehaviour.
    An initiator dials with ``network_key`` (default: the context's current key)."""
    outcome = SyncOutcome()
    counted = _CountingTransport(transport)
    session: Slot | None = None
    live: Slot | None = None
    quiet = ctx.quiet_log
    try:
        handshake = await _handshake(counted, ctx, initiator, network_key or ctx.network_key)
        if handshake is None:
            outcome.error = "handshake failed"
            return outcome
        outcome.peer = handshake.peer
        sender, receiver = handshake.transport()
        if not initiator:
            session = _open_session(ctx, handshake, transport)
            if session is None:
                outcome.error = f"refused: already serving {ctx.limits.max_sessions} peers"
                quiet.log("busy", logging.WARNING, "%s: %s", transport.label, outcome.error)
                # An authenticated end of stream: the member knows it is not a network fault.
                await counted.send(sender.end())
                return outcome
        connection = _Connection(counted, ctx, handshake, sender, receiver, initiator, outcome)
        if handshake.peer is not None:
            live = ctx.live.open(handshake.peer.node_key, transport.address)
            if handshake.peer.node_key in ctx.revoked_nodes:  # revoked during the handshake
                live.drop(REVOKED)
        async with asyncio.timeout(None) as scope:
            if session is not None:
                session.on_drop(lambda _reason: _cut_short(scope))
            if live is not None:
                live.on_drop(lambda _reason: _cut_short(scope))
            await connection.run()
    except (RemoteProtocolError, PeerViolation) as exc:
        outcome.error = f"peer violated the protocol: {exc}"
        quiet.log("violation", logging.WARNING, "%s: %s", transport.label, outcome.error)
    except ItemSourceError as exc:
        outcome.error = str(exc)
        # One clear line, no traceback: the cause is in the message.
        log.error("%s: session ended: %s (not the peer's fault)", transport.label, exc)  # noqa: TRY400
    except TransportError as exc:
        outcome.error = f"connection lost: {exc}"
        quiet.log("lost", logging.INFO, "%s: %s", transport.label, outcome.error)
    except TimeoutError:
        if live is not None and live.dropped is not None:
            outcome.error = f"session ended: {live.dropped}"
            log.warning("%s: %s", transport.label, outcome.error)
        elif session is not None and session.dropped is not None:
            outcome.error = f"session ended: {session.dropped}"
            quiet.log("replaced", logging.INFO, "%s: %s", transport.label, outcome.error)
        else:
            outcome.error = "peer stopped answering (timeout)"
            quiet.log("timeout", logging.INFO, "%s: %s", transport.label, outcome.error)
    finally:
        if session is not None:
            session.release()
        if live is not None:
            live.release()
        outcome.wire_bytes_sent = counted.sent
        outcome.wire_bytes_received = counted.received
        await transport.close()
    return outcome


def _open_session(ctx: PeerContext, handshake: PeerHandshake, transport: Transport) -> Slot | None:
    """The session slot of an authenticated incoming peer (one per certificate, SPEC §14.8)."""
    peer = handshake.peer
    node_key = peer.node_key if peer is not None else b""
    return ctx.admission.open_session(node_key, transport.address)


def _cut_short(scope: asyncio.Timeout) -> None:
    """Make ``scope`` expire now (its block raises ``TimeoutError``), unless it is ending."""
    if not scope.expired():
        with contextlib.suppress(RuntimeError):  # the scope already exited
            scope.reschedule(asyncio.get_running_loop().time())


class _CountingTransport:
    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self.label = inner.label
        self.address = inner.address
        self.sent = 0
        self.received = 0

    async def send(self, data: bytes) -> None:
        self.sent += len(data)
        await self._inner.send(data)

    async def receive(self) -> bytes:
        data = await self._inner.receive()
        self.received += len(data)
        return data

    async def close(self) -> None:
        await self._inner.close()


async def _handshake(
    transport: _CountingTransport, ctx: PeerContext, initiator: bool, network_key: bytes
) -> PeerHandshake | None:
    handshake = PeerHandshake(
        initiator=initiator,
        network_key=network_key,
        static_secret=ctx.static_secret,
        certificate=ctx.certificate,
        manifest=ctx.manifest,
        ephemeral_secret=secrets.token_bytes(32),
        revoked_nodes=ctx.revoked_nodes,
        replay_cache=None if initiator else ctx.replay_cache,
        hq_time=ctx.hq_time,
        also_accept=() if initiator else ctx.also_accept,
    )
    limits = ctx.limits
    if initiator:
        try:
            async with asyncio.timeout(limits.handshake_timeout):
                await _exchange(transport, handshake)
        except (RemoteProtocolError, TimeoutError) as exc:
            reason = str(exc) or "timeout"
            log.log(_level(reason), "%s: handshake failed: %s", transport.label, reason)
            return None
        return handshake
    # Responder: a pre-authentication slot, held for at most the first-message deadline
    # until a valid msg1 proves the network key, and dropped early for a newcomer when the
    # node is full (SPEC §14.8).
    slot = ctx.admission.admit(transport.address)
    loop = asyncio.get_running_loop()
    started = loop.time()

    def proved() -> None:
        ctx.admission.prove(slot)
        scope.reschedule(started + limits.handshake_timeout)

    try:
        first = min(limits.first_message_timeout, limits.handshake_timeout)
        async with asyncio.timeout(first) as scope:
            slot.on_drop(lambda _reason: _cut_short(scope))
            await _exchange(transport, handshake, on_first_reply=proved)
    except (RemoteProtocolError, TimeoutError) as exc:
        slot.release()
        reason = slot.dropped or str(exc) or "timeout"
        ctx.quiet_log.log(
            "dropped" if slot.dropped else "handshake failed",
            _level(reason),
            "%s: handshake failed: %s",
            transport.label,
            reason,
        )
        await _linger(transport, ctx)
        return None
    finally:
        slot.release()
    return handshake


def _level(reason: str) -> int:
    """A member whose certificate expired is a warning: HQ must renew it (SPEC.md §17.4)."""
    return logging.WARNING if CERTIFICATE_TROUBLE in reason else logging.INFO


async def _exchange(
    transport: _CountingTransport,
    handshake: PeerHandshake,
    on_first_reply: Callable[[], None] | None = None,
) -> None:
    """Run the handshake messages to completion (the caller bounds the time)."""
    if out := handshake.data_to_send():
        await transport.send(out)
    while not handshake.is_complete:
        data = await transport.receive()
        if not data:
            handshake.eof_received()
        handshake.receive_data(data)
        if out := handshake.data_to_send():
            if on_first_reply is not None:
                on_first_reply()  # a responder's first reply: msg1 was valid
                on_first_reply = None
            await transport.send(out)


async def _linger(transport: _CountingTransport, ctx: PeerContext) -> None:
    """Silence, then a delayed close: a prober learns nothing, not even timing (SPEC
    §12.1.4). The wait holds no pre-authentication slot, only a place among at most
    ``max_lingering`` such connections (the oldest is closed early beyond it), and whatever
    the peer still sends is read and dropped, so a lingering connection buffers nothing."""
    low, high = ctx.limits.silent_close
    delay = low + (high - low) * secrets.randbelow(1000) / 1000
    place = ctx.admission.linger(transport.address)
    try:
        with contextlib.suppress(TimeoutError, TransportError):
            async with asyncio.timeout(delay) as scope:
                place.on_drop(lambda _reason: _cut_short(scope))
                while await transport.receive():
                    pass
                await asyncio.sleep(delay)  # the peer half-closed: still wait out the delay
    finally:
        place.release()


class _Connection:
    def __init__(
        self,
        transport: _CountingTransport,
        ctx: PeerContext,
        handshake: PeerHandshake,
        sender: FrameSender,
        receiver: FrameReceiver,
        initiator: bool,
        outcome: SyncOutcome,
    ) -> None:
        self.transport = transport
        self.ctx = ctx
        self.peer = handshake.peer
        self.sender = sender
        self.receiver = receiver
        self.initiator = initiator
        self.outcome = outcome
        # Session messages from the peer; None = clean end of stream; an exception = failure.
        self.incoming: asyncio.Queue[bytes | Exception | None] = asyncio.Queue()
        self.queued_bytes = 0
        self.session: SyncSession | None = None
        # Received batches not committed yet, in order, each with how many of its items are.
        self._unstored: collections.deque[_Unstored] = collections.deque()
        self._held_event: object | None = None  # read from the session, not yet acted on
        self._completed = False
        self._item_seconds: float | None = None  # the last slice's time per item
        self._ack_owed = False  # a durable slice acknowledged batches; the ACK is not sent

    async def run(self) -> None:
        if self.peer is None:
            raise PeerViolation("handshake finished without a peer certificate")
        node_key = self.peer.node_key
        config = self.ctx.session_config
        initiator = self.initiator
        source = self.ctx.source

        reoffer = self.ctx.reoffer

        def open_session(store: Store) -> SyncSession:
            source.refresh()
            # No cursor: this session reconciles in full (re-offers what the peer lost).
            with _store_errors(store, "looking for own reports without a receipt"):
                undelivered = store.has_undelivered_own()  # reads items (own = 1)
            full = reoffer.full_reconcile(node_key, undelivered=undelivered)
            known = None if full else store.peer_cursor(node_key)
            offset = store.seq_offset_for(node_key)
            return SyncSession(
                source.for_peer(node_key, offset),
                initiator=initiator,
                # Held items unseen (offer delay); numbers shifted per peer (seq offset).
                local=Cursor(store.epoch_for(node_key), source.horizon() + offset),
                peer_cursor=None if known is None else Cursor(*known),
                config=config,
                coded=source.coded_symbols(),
            )

        self.session = session = await self.ctx.worker.call(open_session, bulk=True)
        reader = asyncio.create_task(self._read_frames())
        try:
            await self._pump()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, TransportError, RemoteProtocolError):
                await reader
            self._drop_queue()
            if not self.outcome.complete:
                # What moved before the failure (a store call cut short by a replacement
                # may still be finishing on the store thread: these counters are a snapshot).
                self.outcome.stats = replace(session.stats)

    async def _queue(self, payload: bytes) -> None:
        """Queue one session message, within this session's and the node's byte budgets."""
        size = len(payload)
        if self.queued_bytes + size > self.ctx.limits.max_queued_bytes:
            # A member racing ahead of our acknowledgements (the session allows one
            # window): refuse rather than buffer without bound.
            raise RemoteProtocolError("peer sent far more than its window allows")
        # The node-wide budget: when other sessions hold it, stop reading (TCP then slows
        # the peer down) until they have processed what they buffered.
        await self.ctx.budget.reserve(size)
        self.queued_bytes += size
        await self.incoming.put(payload)

    def _dequeued(self, size: int) -> None:
        self.queued_bytes -= size
        self.ctx.budget.release(size)

    def _drop_queue(self) -> None:
        """Free what is still queued (and release what was being delivered) now: a store
        call cut short by a replacement may keep this connection object alive for a while."""
        while not self.incoming.empty():
            self.incoming.get_nowait()
        self._dequeued(self.queued_bytes)

    async def _read_frames(self) -> None:
        """Decrypt frames as they arrive and queue the session messages they carry."""
        try:
            while True:
                # Drain first: frames that arrived right behind the last handshake message
                # are already inside the receiver, and no further read may ever come.
                while (event := self.receiver.next_event()) is not None:
                    if isinstance(event, Data):
                        await self._queue(event.payload)
                    elif isinstance(event, End):
                        await self.incoming.put(None)
                        return
                data = await self.transport.receive()
                if not data:
                    self.receiver.eof_received()
                    await self.incoming.put(None)
                    return
                self.receiver.receive_data(data)
        except (RemoteProtocolError, TransportError) as exc:
            await self.incoming.put(exc)  # re-raised by _pump

    async def _pump(self) -> None:
        session = self.session
        if session is None:
            raise PeerViolation("no session")
        peer_ended = False
        while True:
            # Commit what the last flight brought (so its ACK is owed), then answer the
            # whole flight at once; sending can itself complete the session.
            done = await self._handle_events()
            await self._send_pending(session)
            if done or await self._handle_events():
                break
            if peer_ended:
                raise TransportError("the peer ended the stream before the session completed")
            async with asyncio.timeout(self.ctx.limits.idle_timeout):
                message = await self.incoming.get()
            # Everything already here is handled before we answer: one reply per flight,
            # so round trips are what the protocol needs, not an artefact of reading.
            batch = [message]
            while batch[-1] is not None and not isinstance(batch[-1], Exception):
                try:
                    batch.append(self.incoming.get_nowait())
                except asyncio.QueueEmpty:
                    break
            last = batch[-1]
            if isinstance(last, Exception):
                # The stream itself failed: what came before it is moot. No local may keep
                # the exception (a frame <-> traceback cycle would hold this connection's
                # buffers until the cyclic garbage collector runs).
                error, batch, last = last, [], None
                try:
                    raise error
                finally:
                    del error
            payloads = [m for m in batch if isinstance(m, bytes)]
            # One message (a batch of up to 256 KiB) per store-thread call: decoding a whole
            # flight at once would hold the thread for tens of ms (perf S11).
            for payload in payloads:
                await self.ctx.worker.call(
                    functools.partial(_deliver, session, [payload]), bulk=True
                )
            # Counted until the session has taken them: what the reader may add meanwhile
            # and what is being processed share one budget (the window bounds both).
            self._dequeued(sum(map(len, payloads)))
            # The peer's end of stream: its last messages (above) may still complete the
            # session once their batches are committed, so decide on the next turn.
            peer_ended = last is None
        await self._send_pending(session)  # e.g. the ACK of the peer's last batch
        # Session complete: authenticated end of stream, then wait briefly for the peer's.
        await self.transport.send(self.sender.end())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while not peer_ended and (message := await self.incoming.get()) is not None:
                    if isinstance(message, Exception):
                        break
        self.outcome.complete = True

    async def _send_pending(self, session: SyncSession) -> None:
        # A window of DATA batches is read from the store SEND_BATCHES_PER_CALL at a time, one
        # store-thread call each: a status or a local write waits for one batch, not a
        # whole window (perf S11), and the first batch is on the wire while the next is read.
        def collect(_store: Store) -> list[bytes]:
            return session.messages_to_send(SEND_BATCHES_PER_CALL)

        while messages := await self.ctx.worker.call(collect, bulk=True):
            # A batch is up to 256 KiB: encrypt and hand the transport bounded pieces as we
            # go (a WebSocket message is capped at MAX_WS_MESSAGE on receipt), so nothing is
            # held twice over (plaintext and frames) while a slow peer reads.
            messages.reverse()
            pending = bytearray()
            while messages:
                pending += self.sender.send(messages.pop())
                while len(pending) >= SEND_CHUNK:
                    await self._send(bytes(pending[:SEND_CHUNK]))
                    del pending[:SEND_CHUNK]
            if pending:
                await self._send(bytes(pending))

    async def _send(self, data: bytes) -> None:
        # A peer that stops reading must not hold its session, its buffers and its share
        # of the node's buffer budget for ever: the idle deadline applies to sending too.
        async with asyncio.timeout(self.ctx.limits.idle_timeout):
            await self.transport.send(data)

    async def _handle_events(self) -> bool:
        """Act on session events; True once the session is complete.

        Each store-thread call commits bounded slices of the received batches
        (``_store_step``), each its own transaction, and returns as soon as anything else
        waits for the store (a queued call, another process's announced write), so that
        runs between two slices; or once a slice acknowledged batches (the ACK is sent).
        """
        session = self.session
        if session is None:
            raise PeerViolation("no session")
        node_key = self.peer.node_key if self.peer else b""
        outcome = self.outcome
        worker = self.ctx.worker

        def act(store: Store) -> bool | None:
            try:
                return store_slices(store)
            finally:
                # What the last slice started on the helper thread ends within this call:
                # the calls queued next (status, the web app) run no SQL beside it.
                worker.settle_ahead()

        def store_slices(store: Store) -> bool | None:
            started = time.perf_counter()
            while True:
                if self._unstored:
                    if self._store_step(store, node_key):
                        self._ack_owed = True
                        return None  # the ACK goes out now, from the event loop
                    # The next slice follows in this call unless someone waits: a hop
                    # through the event loop between slices leaves the store thread idle
                    # for a scheduling delay each time (ms on a busy machine, perf S1).
                    # While local writes come (perf S11), one slice per call as before: the
                    # hop lets the event loop (control API) in between.
                    if (
                        worker.others_waiting()
                        or worker.writer_seen_within(WRITER_RECENT_SECONDS)
                        or time.perf_counter() - started >= CALL_SECONDS
                    ):
                        return None  # let others in between two transactions
                    continue
                event = self._held_event or session.next_event()
                self._held_event = None
                if event is None:
                    return self._completed
                if isinstance(event, ItemsReceived):
                    # Every batch of the flight already here is queued before the first
                    # slice is stored (a flight is acknowledged in one reply).
                    self._unstored.append(_Unstored(event))
                    while isinstance(following := session.next_event(), ItemsReceived):
                        self._unstored.append(_Unstored(following))
                    self._held_event = following
                elif isinstance(event, CursorAdvanced):
                    store.set_peer_cursor(
                        node_key, event.cursor.epoch, event.cursor.seq, now_seconds()
                    )
                elif isinstance(event, Completed):
                    outcome.stats = event.stats
                    self._completed = True
                elif isinstance(event, Started):
                    outcome.stats.mode = event.mode.value

        while (done := await self.ctx.worker.call(act, bulk=True)) is None:
            if self._ack_owed and self._unstored:
                # Acknowledge now, while the rest of the flight is stored (pipelining).
                self._ack_owed = False
                await self._send_pending(session)
            await self._let_local_writers_in()
        self._ack_owed = False
        return done

    def _parse_next(
        self, slice_items: list[tuple[_Unstored, list[bytes]]], step_items: int
    ) -> list[tuple[_Unstored, int]]:
        """What the next slice (about ``step_items``) will take and is not parsed yet: each
        batch, with the position its next item has once this slice is stored."""
        taking = {id(unstored): len(taken) for unstored, taken in slice_items}
        chosen: list[tuple[_Unstored, int]] = []
        count = 0
        for unstored in self._unstored:
            start = unstored.stored + taking.get(id(unstored), 0)
            left = len(unstored.event.items) - start
            if left <= 0:
                continue
            if count >= step_items:
                break
            count += left
            if unstored.parsed is None:
                chosen.append((unstored, start))
        return chosen

    async def _let_local_writers_in(self) -> None:
        """Before the next bulk slice: while another process (``report add``) announces a
        write, wait - up to ``write_intent.MAX_WAIT_SECONDS`` - so it takes SQLite's write
        lock first instead of racing this session's next transaction for it."""
        worker = self.ctx.worker
        if not worker.local_writer_waiting():
            return
        self.outcome.yielded_to_local_writers += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + write_intent.MAX_WAIT_SECONDS
        # Polled: the writer is another process, with nothing to await on but its lock.
        for _ in range(write_intent.MAX_POLLS):
            await asyncio.sleep(write_intent.POLL_SECONDS)
            if loop.time() >= deadline or not worker.local_writer_waiting():
                return

    def _store_step(self, store: Store, node_key: bytes) -> bool:
        """Verify and commit one bounded slice of the unstored batches (store thread);
        after a durable commit, acknowledge each batch whose last item is now committed, in
        order (True when some batch was)."""
        session = self.session
        if session is None:
            raise PeerViolation("no session")
        started = time.perf_counter()
        worker = self.ctx.worker
        worker.settle_ahead()  # this slice's items, parsed during the last commit
        worker.watch_other_writers(store)
        if worker.local_writes or worker.writer_seen_within(WRITER_RECENT_SECONDS):
            step_seconds, max_bytes, max_items = STEP_SECONDS, STEP_MAX_BYTES, BATCH_ITEMS
        else:
            step_seconds, max_bytes = QUIET_STEP_SECONDS, QUIET_STEP_MAX_BYTES
            max_items = QUIET_STEP_MAX_ITEMS
        if self._item_seconds is None:
            step_items = STEP_FIRST_ITEMS
        else:
            step_items = max(STEP_MIN_ITEMS, min(max_items, int(step_seconds / self._item_seconds)))
        slice_items: list[tuple[_Unstored, list[bytes]]] = []
        count = size = 0
        for unstored in self._unstored:
            if unstored.complete():
                continue  # stored, waiting for a durable commit to be acknowledged
            room = step_items - count
            if room <= 0 or size >= max_bytes:
                break
            taken: list[bytes] = []
            for data in unstored.rest()[:room]:
                if taken and size + len(data) > max_bytes:
                    break
                taken.append(data)
                size += len(data)
            if not taken:
                break
            slice_items.append((unstored, taken))
            count += len(taken)
        # Durable when this slice leaves nothing to store, or completes the ACK_EVERY_BATCHES-th
        # stored batch not yet acknowledged (slices never skip a batch: these are in order).
        left = sum(len(u.event.items) - u.stored for u in self._unstored) - count
        completing = sum(
            1 for u, taken in slice_items if u.stored + len(taken) >= len(u.event.items)
        )
        finished = sum(1 for u in self._unstored if u.complete()) + completing
        durable = left == 0 or finished >= ACK_EVERY_BATCHES
        # The batches the next slice takes are parsed and hashed on the helper thread while
        # this one commits (perf S1: ~5 of a receiving relay's ~20 us per item).
        next_batches = self._parse_next(slice_items, step_items) if worker.spare_core else []
        store_slice = functools.partial(
            _store_batch,
            store,
            self.ctx.source,
            self.ctx.manifest,
            node_key,
            limits=self.ctx.limits,
            on_manifest=self.ctx.on_manifest,
            on_revocation=self.ctx.on_revocation,
            on_deliveries=self.ctx.on_deliveries,
            before_commit=(
                functools.partial(worker.ahead, functools.partial(_parse_ahead, next_batches))
                if next_batches
                else None
            ),
        )
        try:
            self.outcome.items_new += store_slice(slice_items, durable=durable)
            done = slice_items
        except QuotaViolation:
            if len(slice_items) == 1:
                raise
            # The slice does not fit: keep what does, batch by batch, and end the
            # connection at the first batch over the quota (nothing more is acknowledged).
            for part in slice_items:
                # Nothing parsed ahead here: a job started by one part could still be
                # writing the parsed items of the next part's batch while it reads them.
                self.outcome.items_new += store_slice([part], durable=durable, before_commit=None)
                part[0].stored += len(part[1])
            raise
        for unstored, taken in done:
            unstored.stored += len(taken)
        acknowledged = False
        if durable:
            while self._unstored and self._unstored[0].complete():
                session.commit_done(self._unstored.popleft().event.batch_no)
                acknowledged = True
        elapsed = time.perf_counter() - started
        # The per-item cost falls as slices grow: a short slice's estimate undersizes the
        # next quiet one a little, never oversizes it.
        self._item_seconds = elapsed / max(count, 1)
        return acknowledged


@dataclass
class _Unstored:
    """A received batch and how many of its items are committed so far."""

    event: ItemsReceived
    stored: int = 0
    charged: bool = False
    #: Its items from ``parsed_from`` on, parsed and hashed ahead of their slice
    #: (``_parse_ahead``), or the refusal ``parse_item`` raised for each; None while not.
    parsed: list[Item | RemoteProtocolError] | None = None
    parsed_from: int = 0

    def rest(self) -> list[bytes]:
        return self.event.items[self.stored :]

    def complete(self) -> bool:
        return self.stored >= len(self.event.items)


def _parse_ahead(batches: list[tuple[_Unstored, int]]) -> None:
    """Helper thread (``StoreWorker.ahead``): parse and hash the items of each batch from
    the position given (the store thread stores the ones before it meanwhile), for the
    store thread to check against the manifest and store next."""
    for unstored, start in batches:
        parsed: list[Item | RemoteProtocolError] = []
        for data in unstored.event.items[start:]:
            try:
                item = parse_item(data)
            except RemoteProtocolError as exc:
                parsed.append(exc)  # refused when its slice is stored, as if checked there
                continue
            _hashes = item.id, item.tag  # computed once, here: the store reads them
            parsed.append(item)
        unstored.parsed_from, unstored.parsed = start, parsed


def _deliver(session: SyncSession, messages: list[bytes], _store: Store) -> None:
    for message in messages:
        session.receive_message(message)


def _store_batch(
    store: Store,
    source: SyncSource,
    manifest: Manifest,
    node_key: bytes,
    slices: list[tuple[_Unstored, list[bytes]]],
    limits: PeerLimits,
    on_manifest: Callable[[Checked], None] | None = None,
    on_revocation: Callable[[RevocationList], None] | None = None,
    on_deliveries: Callable[[Store, list[Checked]], None] | None = None,
    *,
    durable: bool = True,
    before_commit: Callable[[], object] | None = None,
) -> int:
    """Verify, charge quota, commit durably (the items of ``slices`` in one transaction);
    return how many items were new.

    A batch is charged to the peer's quota whole, with its first slice: a batch over the
    quota is refused before any of it is stored (the quota counts batches, not slices).
    """
    checked: list[Checked] = []
    charge_items = charge_bytes = 0
    for unstored, items in slices:
        ahead = unstored.stored - unstored.parsed_from  # this slice's first, in ``parsed``
        try:
            if unstored.parsed is None or ahead < 0:
                checked.extend(check_item(data, manifest) for data in items)
            else:
                for parsed in unstored.parsed[ahead : ahead + len(items)]:
                    if isinstance(parsed, RemoteProtocolError):
                        raise parsed
                    checked.append(check_parsed(parsed, manifest))
        except RemoteProtocolError as exc:
            raise PeerViolation(f"bad item in batch {unstored.event.batch_no}: {exc}") from exc
        if not unstored.charged:
            charge_items += len(unstored.event.items)
            charge_bytes += sum(map(len, unstored.event.items))
    quota = Quota(
        node_key,
        now_seconds() // QUOTA_WINDOW_SECONDS,
        limits.quota_items_per_day,
        limits.quota_bytes_per_day,
    )
    try:
        counts = store.add_batch(
            checked,
            now_seconds(),
            origin=node_key,
            quota=quota,
            # (0, 0) when every batch here was charged with an earlier slice: evicted items
            # coming back are then credited back to this peer (Store.add_batch).
            charge=(charge_items, charge_bytes),
            durable=durable,
            before_commit=before_commit,
        )
    except QuotaExceeded as exc:
        raise QuotaViolation(str(exc)) from exc
    for unstored, _items in slices:
        unstored.charged = True
    source.note_changes(counts.new_ids, counts.purged_ids)
    for item in checked:
        if item.manifest is not None and on_manifest is not None:
            on_manifest(item)
        if item.revocation is not None and on_revocation is not None:
            on_revocation(item.revocation)
    deliveries = [c for c in checked if c.item.kind is ItemKind.KEY_DELIVERY]
    if deliveries and on_deliveries is not None:
        on_deliveries(store, deliveries)
    return counts.new
