"""Admission of incoming connections: who holds a slot before and after authentication.

SPEC §14.8. An outsider without the network key must not be able to keep members out, and a
member must not be able to exhaust the node. The policy, per listener (one ``Admission``
shared by the TCP and WebSocket listeners of a runtime):

* **Pre-authentication slots** (``pending``): every incoming connection takes one while its
  handshake runs. When all are taken, the newcomer is admitted and the *oldest* pending
  connection is dropped, so a slot can never be held against newcomers; connections that
  proved the network key (a valid msg1) are dropped only when no unproved one is left.
  Connections accepted in one burst are judged a moment (``grace``) later, once each had
  the chance to send its msg1, up to twice the limits (beyond, at once).
* **Per source address** (``per_address``): one address (an IPv6 /64) holds at most this
  many pending connections; a newcomer from a full address drops that address's oldest. An
  attacker's connections then churn among themselves.
* **Lingering** (``lingering``): a connection whose handshake failed is kept open, silent,
  for the close delay of SPEC §12.1.4 *without* holding a pre-authentication slot; beyond
  this many, the oldest is closed at once (file descriptors are finite).
* **Sessions** (``sessions``): authenticated incoming sessions at once. One per peer
  certificate: a new session of the same node key *replaces* the running one (a peer whose
  link died reconnects at once instead of waiting for the old session's idle timeout).
  Beyond ``sessions`` distinct peers, the newcomer is refused.

This module is bookkeeping only: it decides and calls each dropped connection's ``on_drop``
callback; the peer driver turns that into a closed connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Why a connection was dropped, as the peer driver reports it.
DROPPED_FOR_NEWER = "dropped for a newer connection (all pre-authentication slots taken)"
DROPPED_FOR_ADDRESS = "dropped for a newer connection from the same address"
DROPPED_LINGERING = "closed early: too many connections waiting out their close delay"
REPLACED = "replaced by a newer session of the same peer"
STOPPING = "the node is stopping"


@dataclass(eq=False)
class Slot:
    """One connection's place; ``drop(reason)`` ends it early, ``release()`` when done."""

    address: str
    order: int
    admitted_at: float = 0.0
    proved: bool = False
    dropped: str | None = None
    _on_drop: Callable[[str], None] | None = None
    _release: Callable[[Slot], None] | None = field(default=None, repr=False)

    def on_drop(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` when dropped (at once if it already was)."""
        self._on_drop = callback
        if self.dropped is not None:
            callback(self.dropped)

    def drop(self, reason: str) -> None:
        """End the connection early: give the slot back and tell its driver why."""
        if self.dropped is not None or self._release is None:
            return  # already dropped, or released: nothing left to end
        self.dropped = reason
        callback = self._on_drop
        self.release()
        if callback is not None:
            callback(reason)

    def release(self) -> None:
        """Give the slot back (idempotent); no callback runs after this."""
        release, self._release, self._on_drop = self._release, None, None
        if release is not None:
            release(self)


@dataclass
class AdmissionCounters:
    """What the policy did since start (for tests and status)."""

    admitted: int = 0
    dropped_for_newer: int = 0
    dropped_for_address: int = 0
    lingering_cut: int = 0
    sessions_opened: int = 0
    sessions_replaced: int = 0
    sessions_refused: int = 0


class Admission:
    """The admission policy of one listener (see the module docstring)."""

    def __init__(
        self,
        *,
        pending: int,
        per_address: int,
        lingering: int,
        sessions: int,
        grace: float = 0.0,
        call_later: Callable[[float, Callable[[], None]], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``grace`` and ``call_later`` (the event loop's): connections accepted together
        in a burst are judged once each has had ``grace`` seconds to send its msg1, so a
        member's connection is not dropped before its first bytes are read. Without
        ``call_later`` the oldest are dropped at once."""
        if min(pending, per_address, lingering, sessions) < 1:
            raise ValueError("every admission limit must be at least 1")
        self.grace = grace
        self._call_later = call_later
        self._clock = clock
        self._reap_due = False
        self.pending_limit = pending
        self.per_address_limit = per_address
        self.lingering_limit = lingering
        self.sessions_limit = sessions
        self._order = itertools.count()
        # Insertion-ordered: the first entry is the oldest.
        self._pending: dict[Slot, None] = {}
        self._by_address: dict[str, dict[Slot, None]] = {}
        self._lingering: dict[Slot, None] = {}
        self._sessions: dict[bytes, Slot] = {}
        self.counters = AdmissionCounters()

    # --- before authentication ----------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def lingering(self) -> int:
        return len(self._lingering)

    def admit(self, address: str) -> Slot:
        """A pre-authentication slot for a new connection from ``address`` (always given:
        when full, older pending connections are dropped for it)."""
        address = source_key(address)
        slot = Slot(address, next(self._order), self._clock(), _release=self._release_pending)
        self._pending[slot] = None
        same = self._by_address.setdefault(address, {})
        same[slot] = None
        self.counters.admitted += 1
        over = len(self._pending) > self.pending_limit or len(same) > self.per_address_limit
        hard = len(self._pending) > 2 * self.pending_limit or len(same) > 2 * self.per_address_limit
        call_later = self._call_later
        if over and (call_later is None or hard):
            self.reap()
        elif over and call_later is not None and not self._reap_due:
            self._reap_due = True
            call_later(self.grace, self.reap)
        return slot

    def reap(self) -> None:
        """Drop the connections beyond the limits, in the order of ``_victim``."""
        self._reap_due = False
        now = self._clock()
        for address in list(self._by_address):
            while len(same := self._by_address.get(address, {})) > self.per_address_limit:
                self._victim(same, now).drop(DROPPED_FOR_ADDRESS)
                self.counters.dropped_for_address += 1
        while len(self._pending) > self.pending_limit:
            self._victim(self._pending, now).drop(DROPPED_FOR_NEWER)
            self.counters.dropped_for_newer += 1

    def _victim(self, slots: dict[Slot, None], now: float) -> Slot:
        """The oldest connection that had its chance (``grace``) and sent no valid msg1;
        else the oldest that proved the network key; else the oldest of the newcomers."""
        newcomers = []
        for slot in slots:
            if now - slot.admitted_at < self.grace:
                newcomers.append(slot)
            elif not slot.proved:
                return slot
        for slot in slots:
            if slot.proved:
                return slot
        return newcomers[0]

    def prove(self, slot: Slot) -> None:
        """The connection sent a valid msg1 (it holds the network key): drop it last."""
        slot.proved = True

    def _release_pending(self, slot: Slot) -> None:
        self._pending.pop(slot, None)
        same = self._by_address.get(slot.address)
        if same is not None:
            same.pop(slot, None)
            if not same:
                del self._by_address[slot.address]

    def linger(self, address: str) -> Slot:
        """A place to wait out the silent close delay; the oldest is cut short when full."""
        if len(self._lingering) >= self.lingering_limit:
            next(iter(self._lingering)).drop(DROPPED_LINGERING)
            self.counters.lingering_cut += 1
        slot = Slot(address, next(self._order), _release=self._release_lingering)
        self._lingering[slot] = None
        return slot

    def _release_lingering(self, slot: Slot) -> None:
        self._lingering.pop(slot, None)

    # --- after authentication -------------------------------------------------------------

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def open_session(self, node_key: bytes, address: str = "") -> Slot | None:
        """A session slot for the authenticated peer ``node_key``, or ``None`` (refused: the
        node serves its maximum of distinct peers). The peer's running session, if any, is
        dropped (replaced)."""
        running = self._sessions.get(node_key)
        if running is not None:
            running.drop(REPLACED)
            self.counters.sessions_replaced += 1
        if len(self._sessions) >= self.sessions_limit:
            self.counters.sessions_refused += 1
            return None

        def release(slot: Slot) -> None:
            if self._sessions.get(node_key) is slot:
                del self._sessions[node_key]

        slot = Slot(address, next(self._order), _release=release)
        self._sessions[node_key] = slot
        self.counters.sessions_opened += 1
        return slot

    def close(self, reason: str = STOPPING) -> None:
        """Drop every connection, pending, lingering or in session (the listener stops)."""
        for slot in [*self._pending, *self._lingering, *self._sessions.values()]:
            slot.drop(reason)


def source_key(address: str) -> str:
    """The source a per-address limit counts: an IPv4 address, or an IPv6 /64 (one host
    commonly holds a whole /64, so counting single IPv6 addresses would limit nothing)."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address  # not an IP address (a test transport): count it as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ByteBudget:
    """Bytes buffered ahead of processing, shared by all sessions of a node.

    A session's reader ``reserve``s what it queues and the session ``release``s it once
    processed; when the budget is spent, readers wait (the peers are slowed by TCP's own flow
    control) instead of the daemon growing. One message larger than the whole budget still
    passes when nothing else is buffered, so no session can be stuck for ever.
    """

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("the byte budget must be at least 1")
        self.total = total
        self.used = 0
        self.peak = 0
        self._freed = asyncio.Event()

    def fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.total

    async def reserve(self, size: int) -> None:
        while not self.fits(size):
            self._freed.clear()
            await self._freed.wait()
        self.used += size
        self.peak = max(self.peak, self.used)

    def release(self, size: int) -> None:
        if not 0 <= size <= self.used:
            raise ValueError(f"releasing {size} B of a budget with {self.used} B in use")
        self.used -= size
        self._freed.set()
