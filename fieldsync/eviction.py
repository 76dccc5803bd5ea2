"""Which items a relay over its disk budget drops: fair share by contributor (SPEC.md §14.2).

Pure planning, no SQL: the store hands over each contributor's byte total and a way to read
a contributor's items newest first; the plan is the list of local numbers (``seq``) to drop.

Why by contributor: a relay cannot tell junk from real reports (only HQ can open them), so
the one thing it can judge is *who* filled it. Taking from the largest contributor first
(max-min fairness, "water filling") means a member who floods loses its own flood, while a
peer that sent little keeps everything. Within a contributor the newest items go first: a
flood arrives after what it tries to push out. A protected share keeps every contributor's
first bytes safe from the others' pressure.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: Bytes an item costs beyond its own length (row header, id and tag with their two unique
#: indexes, the origin index): what evicting it frees besides its data.
ITEM_OVERHEAD = 160

#: Contributors within this many bytes of the largest count as largest once eviction is
#: taking from them: it stays with one, whose newest items sit side by side in the database,
#: so the pages they free are whole pages (taking turns item by item would free none).
LEVEL_STEP = 64 * 1024

#: Contributor key of items imported from bundles or by the CLI (no peer gave them).
IMPORTED = 0

#: (seq, cost in bytes) of a contributor's items, newest first, below ``before`` (None: all).
NewestItems = Callable[[int, int | None], list[tuple[int, int]]]


@dataclass
class Plan:
    """Items chosen so far and the bytes they free, per contributor."""

    seqs: list[int] = field(default_factory=list)
    freed: int = 0
    by_contributor: dict[int, int] = field(default_factory=dict)
    #: The oldest item taken from each contributor: a later pass continues below it.
    lowest: dict[int, int] = field(default_factory=dict)

    def take(self, seq: int, cost: int, contributor: int | None = None) -> None:
        self.seqs.append(seq)
        self.freed += cost
        if contributor is not None:
            self.by_contributor[contributor] = self.by_contributor.get(contributor, 0) + 1
            self.lowest[contributor] = seq


def protected_share(budget: int, contributors: int) -> int:
    """Bytes no contributor loses to the others' pressure: half the budget, split evenly.

    Water filling alone already keeps ``budget / n`` for each of ``n`` contributors whenever
    the relayed items are all that fills the budget; the floor makes that a promise even when
    the node's own reports and receipts take part of it (they are evicted before anyone is
    pushed below the floor).
    """
    return budget // (2 * max(1, contributors))


class _Feed:
    """One contributor's evictable items, newest first, read a page at a time."""

    def __init__(self, key: int, newest: NewestItems, below: int | None) -> None:
        self._key = key
        self._newest = newest
        self._queue: deque[tuple[int, int]] = deque()
        self._below = below
        self._exhausted = False

    def peek(self) -> tuple[int, int] | None:
        if not self._queue and not self._exhausted:
            page = self._newest(self._key, self._below)
            self._queue.extend(page)
            self._exhausted = not page
            if page:
                self._below = page[-1][0]
        return self._queue[0] if self._queue else None

    def pop(self) -> None:
        self._queue.popleft()


@dataclass
class Contributors:
    """Bytes each contributor holds, kept up to date as a plan takes items, and the one
    taken from last (kept across passes and rounds: eviction stays with it while it is
    still among the largest)."""

    held: dict[int, int]
    last: int | None = None


def fair_share(
    contributors: Contributors, need: int, floor: int, newest: NewestItems, plan: Plan
) -> None:
    """Add to ``plan`` until it frees ``need`` bytes: always the newest item of the largest
    contributor, never taking a contributor below ``floor``. A contributor within
    ``LEVEL_STEP`` of the largest counts as largest if eviction is already taking from it.

    Stops as soon as enough is freed, so a store one byte over its budget loses as few items
    as free its bytes.
    """
    held = contributors.held
    active = {key for key, size in held.items() if size > floor}
    heap = [(-held[key], key) for key in active]
    heapq.heapify(heap)
    # Items are deleted only once the plan is complete: continue below what an earlier pass
    # of this plan already took, or the same items would be counted twice.
    feeds = {key: _Feed(key, newest, plan.lowest.get(key)) for key in active}
    while plan.freed < need and active:
        negative, top = heap[0]
        if top not in active or -negative != held[top]:
            heapq.heappop(heap)  # stale entry: dropped, or its size has changed since
            continue
        key = top
        last = contributors.last
        if last is not None and last in active and held[last] >= held[top] - LEVEL_STEP:
            key = last
        head = feeds[key].peek()
        if head is None or held[key] - head[1] < floor:
            active.discard(key)  # nothing left to take, or at its protected share
            continue
        seq, cost = head
        feeds[key].pop()
        plan.take(seq, cost, key)
        held[key] -= cost
        contributors.last = key
        heapq.heappush(heap, (-held[key], key))
