"""When a session reconciles in full instead of following the delta cursor (SPEC.md §14.9).

Delta sync sends only what a store numbered after the peer's cursor. A relay that evicted
or lost an item has a cursor past it, so delta alone would never offer it again; the
relay forgets its cursor when it evicts (``Store.enforce_budget``), but an author cannot
count on every relay doing so (an older relay, a relay that lost its disk, an item evicted
two hops away). So an author whose outbox still holds reports without a receipt
reconciles in full with a peer on its first contact after start, every ``every_contacts``-th
contact after that and whenever ``interval`` seconds have passed since the last full
reconciliation with that peer. Reconciliation finds every item the peer lacks, whatever
the cursors say, so undelivered reports reach HQ even if every relay evicted them once.

State is per daemon run and per peer (bounded by the number of members met); a restart
starts every peer "due", which is what a node that was off for a while wants.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Defaults: about one contact in eight, and at least hourly per peer, while reports wait.
EVERY_CONTACTS = 8
INTERVAL_SECONDS = 3600.0


@dataclass
class _PeerCount:
    contacts_since_full: int
    last_full: float


@dataclass
class ReofferPolicy:
    every_contacts: int = EVERY_CONTACTS
    interval: float = INTERVAL_SECONDS
    clock: Callable[[], float] = time.monotonic
    _peers: dict[bytes, _PeerCount] = field(default_factory=dict)

    def full_reconcile(self, node_key: bytes, *, undelivered: bool) -> bool:
        """Count a contact with ``node_key``; True when this session must reconcile in full
        (ignore the cursor) because own reports still wait for a receipt and it is due."""
        now = self.clock()
        count = self._peers.get(node_key)
        if count is None:
            count = self._peers[node_key] = _PeerCount(self.every_contacts, now - self.interval)
        count.contacts_since_full += 1
        due = (
            count.contacts_since_full >= self.every_contacts
            or now - count.last_full >= self.interval
        )
        if not (undelivered and due):
            return False
        count.contacts_since_full = 0
        count.last_full = now
        return True
