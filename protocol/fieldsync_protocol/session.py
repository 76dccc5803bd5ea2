"""The sync session: a sans-IO state machine over plaintext message bytes (SPEC.md §13).

One session runs both directions between two members after their handshake. The driver
feeds every message from the peer to ``receive_message``, drains ``next_event`` (storing the
items of ``ItemsReceived`` durably, then calling ``commit_done``), and sends what
``messages_to_send`` returns; it drains events again after that call. Only
``RemoteProtocolError`` (the peer's fault) and ``ItemSourceError`` (our store's) leave
``receive_message``; after either the session is dead (FAILED).

The session reads the local store only through ``ItemSource`` (the id index, items by id,
items after a local sequence number, and which ids we want); those calls happen inside
``receive_message`` and ``messages_to_send``. An implementation reports its own failure as
``ItemSourceError``, never as a peer's fault. The messages themselves are encoded and
checked in ``session_messages`` (RECONCILE in ``reconcile_wire``).

``TRANSITIONS`` below is the whole machine: for each (state, peer message type) the handler
and, by what the handler reports, the next state. Handlers never set the state; any pair not
in the table is a ``RemoteProtocolError``; any error makes the session FAILED. The one local
event, ``SETTLED`` (we sent END and every batch both ways is acknowledged), takes PEER_ENDED
to COMPLETE. COMPLETE and FAILED accept nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Final, Protocol

from fieldsync_protocol import session_messages as messages
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.reconcile import PushRange, ReconcileParams, Reconciler
from fieldsync_protocol.reconcile_index import ItemIndex, successor
from fieldsync_protocol.riblt import CodedSymbols
from fieldsync_protocol.session_messages import (
    ACK,
    BATCH_BYTES,
    BATCH_ITEMS,
    DATA,
    END,
    HELLO,
    MAX_EPOCH,
    MAX_QUOTA,
    MAX_WANT,
    MAX_WINDOW,
    RECONCILE,
    WANT,
    Cursor,
    Hello,
)


class State(Enum):
    AWAIT_HELLO = "await-hello"
    RECONCILING = "reconciling"
    TRANSFER = "transfer"
    PEER_ENDED = "peer-ended"
    COMPLETE = "complete"
    FAILED = "failed"


class Outcome(Enum):
    """What a handler reports; its row of ``TRANSITIONS`` maps it to the next state."""

    HANDLED = "handled"
    #: HELLO: the session transfers by delta from a cursor.
    DELTA = "delta"
    #: HELLO: the session reconciles first.
    RECONCILE = "reconcile"
    #: RECONCILE: reconciliation is over (DONE sent or received).
    RECONCILED = "reconciled"


class Local(Enum):
    """Events of our own (never a peer's message type, which is always a string)."""

    #: We sent END and every batch both ways is acknowledged.
    SETTLED = "settled"


@dataclass(frozen=True)
class Received:
    """A decoded peer message and its size in bytes."""

    value: Any
    size: int


@dataclass(frozen=True)
class Transition:
    handler: Callable[[SyncSession, Received], Outcome]
    next_state: Mapping[Outcome, State]


def _stay(state: State) -> Mapping[Outcome, State]:
    return {Outcome.HANDLED: state}


#: (state, peer message type or local event) -> handler and next state by its outcome.
TRANSITIONS: Final[Mapping[tuple[State, str | Local], Transition]] = {
    (State.AWAIT_HELLO, HELLO): Transition(
        lambda s, m: s._on_hello(m),
        {Outcome.RECONCILE: State.RECONCILING, Outcome.DELTA: State.TRANSFER},
    ),
    (State.RECONCILING, RECONCILE): Transition(
        lambda s, m: s._on_reconcile(m),
        {Outcome.HANDLED: State.RECONCILING, Outcome.RECONCILED: State.TRANSFER},
    ),
    (State.RECONCILING, WANT): Transition(lambda s, m: s._on_want(m), _stay(State.RECONCILING)),
    (State.RECONCILING, DATA): Transition(lambda s, m: s._on_data(m), _stay(State.RECONCILING)),
    (State.RECONCILING, ACK): Transition(lambda s, m: s._on_ack(m), _stay(State.RECONCILING)),
    (State.TRANSFER, DATA): Transition(lambda s, m: s._on_data(m), _stay(State.TRANSFER)),
    (State.TRANSFER, ACK): Transition(lambda s, m: s._on_ack(m), _stay(State.TRANSFER)),
    (State.TRANSFER, END): Transition(lambda s, m: s._on_end(m), _stay(State.PEER_ENDED)),
    (State.PEER_ENDED, ACK): Transition(lambda s, m: s._on_ack(m), _stay(State.PEER_ENDED)),
    (State.PEER_ENDED, Local.SETTLED): Transition(
        lambda s, _: s._on_settled(), _stay(State.COMPLETE)
    ),
}

#: The message argument of a local event.
_NO_MESSAGE: Final = Received(None, 0)
# Ids or items fetched from the ItemSource per call (bounds memory held for sending).
_FETCH = 64
_MAX_SEQ = 2**63 - 1


class Mode(Enum):
    DELTA = "delta"
    RECONCILE = "reconcile"


class ItemSourceError(Exception):
    """The local store behind an ``ItemSource`` failed: our fault, never the peer's."""


class ItemSource(Protocol):
    """What the session reads from the local store. A failure of the store itself is raised
    as ``ItemSourceError`` (the driver's adapter translates its store's exceptions)."""

    @property
    def index(self) -> ItemIndex:
        """The id index used for reconciliation."""
        ...

    def items_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` (seq, item bytes) with seq > ``seq``, ascending by seq; fewer than
        ``limit`` means there are no more. It should leave out items that came from this
        same peer (else every delta bounces back once); ``seq`` numbers are not reused."""
        ...

    def get(self, ids: Sequence[bytes]) -> list[bytes]:
        """The bytes of the items we hold among ``ids`` (missing ones are left out)."""
        ...

    def wants(self, ids: Sequence[bytes]) -> list[bytes]:
        """The ids among ``ids`` we would accept (not held, not tombstoned, not refused)."""
        ...

    def send_later(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        """``(rank, id)`` for the ids among ``ids`` that go after every other item of a
        reconciling session (attachment chunks and unknown kinds, SPEC.md §16.5), lowest
        rank first; ids not listed go as soon as reconciliation finds them."""
        ...


@dataclass(frozen=True)
class SessionConfig:
    #: Items we accept from the peer in this session (announced; more is a protocol error).
    quota_items: int = 1_000_000
    #: DATA batches the peer may have unacknowledged (announced).
    window: int = 16
    #: Batch limits for what we send (at most the protocol's BATCH_ITEMS / BATCH_BYTES).
    batch_items: int = BATCH_ITEMS
    batch_bytes: int = BATCH_BYTES
    reconcile: ReconcileParams = field(default_factory=ReconcileParams)

    def __post_init__(self) -> None:
        if not 0 <= self.quota_items <= MAX_QUOTA or not 1 <= self.window <= MAX_WINDOW:
            raise LocalProtocolError("quota or window out of range")
        if not 1 <= self.batch_items <= BATCH_ITEMS or not 1 <= self.batch_bytes <= BATCH_BYTES:
            raise LocalProtocolError("batch limits out of range")


@dataclass
class SyncStats:
    """Counters for one session, as seen by this side."""

    mode: str = ""
    messages_sent: int = 0
    messages_received: int = 0
    #: All message bytes (plaintext, before framing).
    bytes_sent: int = 0
    bytes_received: int = 0
    #: Item bytes inside DATA messages.
    payload_bytes_sent: int = 0
    payload_bytes_received: int = 0
    #: Bytes of RECONCILE and WANT messages.
    reconcile_bytes_sent: int = 0
    reconcile_bytes_received: int = 0
    #: RECONCILE messages both ways.
    reconcile_messages: int = 0
    items_sent: int = 0
    items_received: int = 0
    batches_sent: int = 0
    batches_received: int = 0
    #: Flights: maximal runs of sends (resp. receives) between two receives (sends).
    flights_sent: int = 0
    flights_received: int = 0
    #: Responder flights (SPEC.md §13.7): what the initiator waited for.
    round_trips: int = 0
    #: We stopped sending at the peer's quota.
    truncated: bool = False

    @property
    def overhead_bytes(self) -> int:
        """Everything but item payload, both directions."""
        payload = self.payload_bytes_sent + self.payload_bytes_received
        return self.bytes_sent + self.bytes_received - payload


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """Both HELLOs are exchanged: the session runs in ``mode``; the peer's store is at ``peer``."""

    mode: Mode
    peer: Cursor


@dataclass(frozen=True)
class ItemsReceived:
    """Verify and store ``items`` durably, then call ``commit_done(batch_no)``."""

    batch_no: int
    items: list[bytes]


@dataclass(frozen=True)
class CursorAdvanced:
    """We now hold every item of the peer's store up to ``cursor`` that we want: persist it
    as this peer's cursor (replacing the old one, which may have been larger if the peer's
    store changed) and pass it as ``peer_cursor`` next time."""

    cursor: Cursor


@dataclass(frozen=True)
class Completed:
    stats: SyncStats


Event = Started | ItemsReceived | CursorAdvanced | Completed


# --- outgoing work -----------------------------------------------------------------------


@dataclass
class _Wanted:
    ids: list[bytes]
    pos: int = 0


@dataclass
class _Push:
    lower: bytes
    upper: bytes
    range: PushRange


class SyncSession:
    """One side of a sync session. Synchronous and deterministic.

    ``local`` is this store's epoch and high-water mark (the largest local ``seq``), read
    no later than the index state the session sees (every item numbered up to it is in
    ``source.index`` unless deleted since); ``peer_cursor`` is what the last
    ``CursorAdvanced`` for this peer said (None: unknown, so reconcile).
    """

    def __init__(
        self,
        source: ItemSource,
        *,
        initiator: bool,
        local: Cursor,
        peer_cursor: Cursor | None = None,
        config: SessionConfig | None = None,
        coded: CodedSymbols | None = None,
    ) -> None:
        for cursor in (local, peer_cursor):
            if cursor is not None and (
                len(cursor.epoch) > MAX_EPOCH or not 0 <= cursor.seq <= _MAX_SEQ
            ):
                raise LocalProtocolError(f"cursor out of range: {cursor!r:.80}")
        self._source = source
        self._initiator = initiator
        self._local = local
        self._peer_cursor = peer_cursor
        self._config = config or SessionConfig()
        self._coded = coded
        self._state = State.AWAIT_HELLO
        self._mode: Mode | None = None
        self._reconciler: Reconciler | None = None
        self._peer: Hello | None = None
        self._events: deque[Event] = deque()
        self._outbox: list[bytes] = []
        self.stats = SyncStats()
        self._last_io = ""
        # sending
        self._queue: deque[_Wanted | _Push] = deque()
        self._ready: deque[tuple[int, bytes]] = deque()
        # Reconcile mode: media waits until every report text found so far has gone.
        self._later: list[tuple[int, bytes]] = []
        self._later_sorted = False
        self._delta_pos = 0
        self._delta_done = False
        self._acked_by_peer = 0
        self._end_sent = False
        self._truncated = False
        self._wanted_by_peer = 0
        # receiving
        self._committed = 0
        self._acks_sent = 0
        self._batch_through: deque[tuple[int, int]] = deque()
        self._delta_through = 0
        self._end_through: int | None = None
        self._want_budget = self._config.quota_items
        self._incomplete = False
        self._cursor_seq = -1
        if initiator:
            start = peer_cursor is None
            if start:
                self._reconciler = Reconciler(
                    source.index, initiator=True, params=self._config.reconcile, coded=coded
                )
            self._send_hello(reconcile=start, after=peer_cursor)
            if self._reconciler is not None:
                self._queue_reconcile(self._reconciler.initial())

    # --- driver API -------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def mode(self) -> Mode | None:
        return self._mode

    @property
    def complete(self) -> bool:
        return self._state is State.COMPLETE

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def receive_message(self, data: bytes) -> None:
        """Process one message from the peer; raises only ``RemoteProtocolError``."""
        if self._last_io != "recv":
            self.stats.flights_received += 1
            if self._initiator:
                self.stats.round_trips += 1
            self._last_io = "recv"
        self.stats.messages_received += 1
        self.stats.bytes_received += len(data)
        try:
            kind, value = messages.decode(data)
            self._step(kind, Received(value, len(data)))
            self._check_complete()
        except (RemoteProtocolError, ItemSourceError):
            self._state = State.FAILED
            raise

    def _step(self, event: str | Local | None, message: Received) -> None:
        """Run ``event``'s handler from the table and move to the state its row names."""
        row = TRANSITIONS.get((self._state, event)) if event is not None else None
        if row is None:
            raise RemoteProtocolError(
                f"sync message {str(event)[:20]!r} is not allowed in state {self._state.value}"
            )
        self._state = row.next_state[row.handler(self, message)]

    def commit_done(self, batch_no: int) -> None:
        """The items of ``ItemsReceived(batch_no)`` are durable (call in batch order)."""
        if batch_no != self._committed or batch_no >= self.stats.batches_received:
            raise LocalProtocolError(
                f"commit_done({batch_no}): the next batch to commit is {self._committed}"
            )
        self._committed += 1
        while self._batch_through and self._batch_through[0][0] < self._committed:
            self._advance_cursor(self._batch_through.popleft()[1])
        self._maybe_end_cursor()
        self._check_complete()

    def messages_to_send(self, max_batches: int | None = None) -> list[bytes]:
        """Messages to send now, in order (drain ``next_event`` afterwards).

        ``max_batches``: make at most this many new DATA batches in this call (reading them
        from the store is the costly part); call again for the rest of the window.
        """
        if self._state is State.FAILED:
            return []
        if max_batches is not None and max_batches < 1:
            raise LocalProtocolError("max_batches must be at least 1")
        try:
            out = self._collect_messages(max_batches)
        except ItemSourceError:
            self._state = State.FAILED
            raise
        if out:
            if self._last_io != "send":
                self.stats.flights_sent += 1
                if not self._initiator:
                    self.stats.round_trips += 1
                self._last_io = "send"
            self.stats.messages_sent += len(out)
            self.stats.bytes_sent += sum(map(len, out))
        self._check_complete()
        return out

    def _collect_messages(self, max_batches: int | None) -> list[bytes]:
        if self._committed > self._acks_sent:
            self._acks_sent = self._committed
            self._outbox.append(messages.encode_ack(self._committed - 1))
        if self._mode is not None and not self._end_sent:
            window = self._peer.window if self._peer is not None else 0
            limit = self.stats.batches_sent + (window if max_batches is None else max_batches)
            while self.stats.batches_sent < min(self._acked_by_peer + window, limit):
                batch = self._next_batch()
                if batch is None:
                    break
                self._outbox.append(batch)
            if self._ready_to_end():
                self._end_sent = True
                through = None if self._truncated else self._local.seq
                self._outbox.append(messages.encode_end(through))
        out, self._outbox = self._outbox, []
        return out

    # --- hello ------------------------------------------------------------------------

    def _send_hello(self, *, reconcile: bool, after: Cursor | None) -> None:
        self._outbox.append(
            messages.encode_hello(
                self._local,
                quota=self._config.quota_items,
                window=self._config.window,
                reconcile=reconcile,
                after=after,
            )
        )

    def _valid_for_us(self, after: Cursor | None) -> bool:
        """Is the peer's cursor on our store usable ("after" our seq N)?"""
        return (
            after is not None and after.epoch == self._local.epoch and after.seq <= self._local.seq
        )

    def _on_hello(self, message: Received) -> Outcome:
        hello = messages.parse_hello(message.value)
        self._peer = hello
        ours = self._peer_cursor
        if self._initiator:
            if self._reconciler is not None:
                if hello.reconcile or hello.after is not None:
                    raise RemoteProtocolError("HELLO answering a reconciliation must be plain")
                mode = Mode.RECONCILE
            elif hello.reconcile:
                mode = Mode.RECONCILE
                self._reconciler = self._responder()
            elif self._valid_for_us(hello.after):
                mode = Mode.DELTA
            else:
                raise RemoteProtocolError("HELLO names no valid cursor on our store")
        elif hello.reconcile:
            mode = Mode.RECONCILE
            self._reconciler = self._responder()
            self._send_hello(reconcile=False, after=None)
        elif hello.after is None:
            raise RemoteProtocolError("a HELLO without a cursor must start reconciliation")
        elif (
            self._valid_for_us(hello.after)
            and ours is not None
            and ours.epoch == hello.epoch
            and ours.seq <= hello.high
        ):
            mode = Mode.DELTA
            self._send_hello(reconcile=False, after=ours)
        else:
            mode = Mode.RECONCILE
            self._reconciler = Reconciler(
                self._source.index, initiator=True, params=self._config.reconcile, coded=self._coded
            )
            self._send_hello(reconcile=True, after=None)
            self._queue_reconcile(self._reconciler.initial())
        self._mode = mode
        if ours is not None and ours.epoch == hello.epoch and ours.seq <= hello.high:
            # else the peer's store is new or restored: our next cursor replaces the old one
            self._cursor_seq = ours.seq
        if mode is Mode.DELTA:
            assert hello.after is not None  # noqa: S101 - checked by _valid_for_us
            self._delta_pos = hello.after.seq
            self._delta_through = self._cursor_seq
        self.stats.mode = mode.value
        self._events.append(Started(mode, Cursor(hello.epoch, hello.high)))
        return Outcome.DELTA if mode is Mode.DELTA else Outcome.RECONCILE

    def _responder(self) -> Reconciler:
        return Reconciler(
            self._source.index, initiator=False, params=self._config.reconcile, coded=self._coded
        )

    # --- reconciliation ---------------------------------------------------------------

    def _queue_reconcile(self, message: bytes) -> None:
        self.stats.reconcile_messages += 1
        self.stats.reconcile_bytes_sent += len(message)
        self._outbox.append(message)

    def _on_reconcile(self, message: Received) -> Outcome:
        assert self._reconciler is not None  # noqa: S101 - RECONCILING implies a reconciler
        self.stats.reconcile_messages += 1
        self.stats.reconcile_bytes_received += message.size
        step = self._reconciler.receive_value(message.value)
        have = self._source.wants(step.have) if step.have else []
        if len(have) > self._want_budget:
            have = have[: self._want_budget]
            self._incomplete = True
        self._want_budget -= len(have)
        have.sort()
        for start in range(0, len(have), MAX_WANT):
            want = messages.encode_want(have[start : start + MAX_WANT])
            self.stats.reconcile_bytes_sent += len(want)
            self._outbox.append(want)
        if step.reply is not None:
            self._queue_reconcile(step.reply)
        # Windows we asked for arrive without a WANT: they count against our quota too.
        if step.asked > self._want_budget:
            self._incomplete = True
        self._want_budget = max(0, self._want_budget - step.asked)
        if step.push:
            self._queue.append(_Wanted(step.push))
        self._queue.extend(_Push(p.lower, p.upper, p) for p in step.need)
        return Outcome.RECONCILED if step.done else Outcome.HANDLED

    def _on_want(self, message: Received) -> Outcome:
        assert self._reconciler is not None  # noqa: S101 - RECONCILING implies a reconciler
        self.stats.reconcile_bytes_received += message.size
        ids = messages.parse_want(message.value)
        self._reconciler.check_wanted(ids)
        self._wanted_by_peer += len(ids)
        if self._wanted_by_peer > self._reconciler.offered_count:
            raise RemoteProtocolError("WANT asks for more ids than we listed")
        self._queue.append(_Wanted(ids))
        return Outcome.HANDLED

    # --- data ---------------------------------------------------------------------------

    def _on_data(self, message: Received) -> Outcome:
        m, n = messages.parse_data_number(message.value)
        if n != self.stats.batches_received:
            expected = self.stats.batches_received
            raise RemoteProtocolError(f"DATA batch {n} out of order: expected {expected}")
        if n >= self._acks_sent + self._config.window:
            raise RemoteProtocolError("DATA beyond the announced window")
        items = messages.parse_data_items(m)
        if self.stats.items_received + len(items) > self._config.quota_items:
            raise RemoteProtocolError("quota exceeded")
        if self._mode is Mode.DELTA:
            if "s" not in m:
                raise RemoteProtocolError("DATA in delta mode must carry s")
            assert self._peer is not None  # noqa: S101 - set by HELLO
            through = messages.parse_seq(m, "DATA", self._delta_through + 1, self._peer.high)
            self._delta_through = through
            self._batch_through.append((n, through))
        elif "s" in m:
            raise RemoteProtocolError("DATA carries s only in delta mode")
        self.stats.batches_received += 1
        self.stats.items_received += len(items)
        self.stats.payload_bytes_received += sum(map(len, items))
        self._events.append(ItemsReceived(n, items))
        return Outcome.HANDLED

    def _on_ack(self, message: Received) -> Outcome:
        n = messages.parse_ack(message.value)
        if not self._acked_by_peer <= n < self.stats.batches_sent:
            raise RemoteProtocolError(f"ACK {n} for no unacknowledged batch")
        self._acked_by_peer = n + 1
        return Outcome.HANDLED

    def _on_end(self, message: Received) -> Outcome:
        m = messages.parse_end(message.value)
        if "s" in m:
            assert self._peer is not None  # noqa: S101 - set by HELLO
            high = self._peer.high
            self._end_through = messages.parse_seq(m, "END", high, high)
        self._maybe_end_cursor()
        return Outcome.HANDLED

    def _on_settled(self) -> Outcome:
        self._events.append(Completed(replace(self.stats)))
        return Outcome.HANDLED

    # --- cursors ------------------------------------------------------------------------

    def _advance_cursor(self, seq: int) -> None:
        if seq > self._cursor_seq:
            self._cursor_seq = seq
            assert self._peer is not None  # noqa: S101 - set by HELLO
            self._events.append(CursorAdvanced(Cursor(self._peer.epoch, seq)))

    def _maybe_end_cursor(self) -> None:
        if (
            self._end_through is not None
            and self._committed == self.stats.batches_received
            and not self._incomplete
        ):
            self._advance_cursor(self._end_through)
            self._end_through = None

    # --- sending ------------------------------------------------------------------------

    def _refill(self) -> bool:
        """Fetch the next items to send into ``_ready``; False when nothing is left."""
        if self._mode is Mode.DELTA:
            if self._delta_done:
                return False
            rows = self._source.items_after(self._delta_pos, _FETCH)
            if len(rows) < _FETCH or rows[-1][0] >= self._local.seq:
                self._delta_done = True
            rows = [r for r in rows if r[0] <= self._local.seq]
            if rows:
                self._delta_pos = rows[-1][0]
                self._ready.extend(rows)
            return bool(rows)
        while self._queue:
            work = self._queue[0]
            if isinstance(work, _Wanted):
                ids = work.ids[work.pos : work.pos + _FETCH]
                work.pos += len(ids)
                if work.pos >= len(work.ids):
                    self._queue.popleft()
            else:
                # By id, ascending, even where the sender's store order would read faster
                # (measured at 100k items on a store filled in random order: 26 vs 4.5 us per
                # item read): a receiver then inserts ids in ascending order, which costs it
                # 33 instead of 48 us per item and half the bytes written, and the receiver
                # is the bottleneck of a transfer (perf S1).
                ids = self._source.index.ids(work.lower, work.upper, _FETCH)
                if len(ids) < _FETCH:
                    self._queue.popleft()
                else:
                    work.lower = successor(ids[-1])
                ids = [i for i in ids if work.range.keeps(i)]
            ids = self._hold_back_media(ids)
            items = self._source.get(ids) if ids else []
            if items:
                self._ready.extend((0, item) for item in items)
                return True
        return self._refill_later()

    def _hold_back_media(self, ids: list[bytes]) -> list[bytes]:
        """Keep chunks and unknown kinds for the end so a short contact carries texts first."""
        later = self._source.send_later(ids) if ids else []
        if not later:
            return ids
        self._later.extend(later)
        held = {item_id for _, item_id in later}
        return [i for i in ids if i not in held]

    def _refill_later(self) -> bool:
        """Media in rank order, once reconciliation can find no more report texts."""
        if not self._later or self._reconciler is None or not self._reconciler.done:
            return False
        if not self._later_sorted:
            # Descending, so popping from the end yields the lowest rank first.
            self._later.sort(reverse=True)
            self._later_sorted = True
        while self._later:
            ids = [self._later.pop()[1] for _ in range(min(_FETCH, len(self._later)))]
            items = self._source.get(ids)
            if items:
                self._ready.extend((0, item) for item in items)
                return True
        return False

    def _next_batch(self) -> bytes | None:
        assert self._peer is not None  # noqa: S101 - sending starts after HELLO
        items: list[bytes] = []
        size = 0
        through = 0
        room = self._peer.quota - self.stats.items_sent
        while len(items) < self._config.batch_items:
            if not self._ready and not self._refill():
                break
            if len(items) == room:
                self._truncated = self.stats.truncated = True
                self._queue.clear()
                self._ready.clear()
                self._later.clear()
                self._delta_done = True
                break
            seq, item = self._ready[0]
            if items and size + len(item) > self._config.batch_bytes:
                break
            self._ready.popleft()
            items.append(item)
            size += len(item)
            through = seq
        if not items:
            return None
        batch_no = self.stats.batches_sent
        self.stats.batches_sent += 1
        self.stats.items_sent += len(items)
        self.stats.payload_bytes_sent += size
        return messages.encode_data(batch_no, items, through if self._mode is Mode.DELTA else None)

    def _ready_to_end(self) -> bool:
        if self._ready or self._queue or self._later:
            return False
        if self._mode is Mode.DELTA:
            return self._delta_done
        return self._reconciler is not None and self._reconciler.done

    def _check_complete(self) -> None:
        if (
            self._state is State.PEER_ENDED
            and self._end_sent
            and self._acked_by_peer == self.stats.batches_sent
            and self._acks_sent == self._committed == self.stats.batches_received
        ):
            self._step(Local.SETTLED, _NO_MESSAGE)
