"""Timing privacy: a report item is offered only a random delay after it arrived (SPEC.md
§14.10, issue 11 item 6).

Without it a node synced with every peer about 2 s after ``report add``, so the node that
started a wave of syncs was the report's author, plain to anyone watching the LAN. Here every
report item (envelopes, attachment chunks and kinds this version does not know) becomes
offerable at ``arrival + delay``, the delay drawn afresh per item (``OfferDelay``), and the
same rule holds for the node's own reports and for what it relays: the author's node behaves
like any relay that just received the report. Receipts, manifests, revocation lists, key
deliveries and forms travel at once: they say nothing about who wrote a report.

"Not offered" means invisible to peers: a held item is left out of the reconciliation index
(fingerprints and id lists, SPEC.md §13.3), and the store's number advertised in HELLO (the
peer's delta cursor, §13.4) stops before the first held item (``horizon``), so neither mode
sends it or shows that it exists. Items numbered after a held one (a receipt) wait with it in
delta sessions (at most the delay); a reconciling session sends them at once.

Times are on the node's running clock (SPEC.md §14.1): the store's, plus what the janitor
has not added to it yet (``now`` arguments; the janitor writes it once a minute). A wrong
wall clock changes nothing.
Holds are kept in the store (``offer_holds``), so a restart does not release them early.

Every item is *assessed* once, in store order: it gets a hold, or none (its kind travels at
once, or the delay is off). ``store_meta.offer_assessed`` is the last number assessed; an item
after it counts as held until assessed (a CLI process wrote it a moment ago), which is what
keeps the horizon from ever going backwards (a peer's cursor on us must stay valid).

All functions run on the store thread (they take the ``Store``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from fieldsync.store import Store
from fieldsync_protocol.items import ItemKind

#: Kinds that travel at once: they name no author and carry no report.
UNHELD_KINDS: Final = tuple(
    kind.value
    for kind in (
        ItemKind.RECEIPT,
        ItemKind.MANIFEST,
        ItemKind.REVOCATION,
        ItemKind.KEY_DELIVERY,
        ItemKind.FORM,
    )
)
#: ``[privacy] offer_delay_jitter`` values.
JITTERS: Final = ("exponential", "uniform")
#: An exponential delay is cut at this many means (e^-6: 0.25 % of draws), so nothing is held
#: for hours; a uniform one spans 0 to twice the mean.
EXPONENTIAL_CAP: Final = 6.0
UNIFORM_SPAN: Final = 2.0


@dataclass(frozen=True)
class OfferDelay:
    """How long an item waits before it is offered: ``mean_seconds`` 0 turns holds off."""

    mean_seconds: float = 0.0
    jitter: str = "exponential"
    rng: random.Random = field(default_factory=random.SystemRandom, compare=False)

    def __post_init__(self) -> None:
        if self.jitter not in JITTERS:
            raise ValueError(f"unknown jitter {self.jitter!r}; expected one of {JITTERS}")
        if not (math.isfinite(self.mean_seconds) and self.mean_seconds >= 0):
            raise ValueError("mean_seconds must be a finite number ≥ 0")

    @property
    def active(self) -> bool:
        return self.mean_seconds > 0

    @property
    def longest(self) -> int:
        """The longest delay ``draw`` can give (seconds, rounded up)."""
        span = EXPONENTIAL_CAP if self.jitter == "exponential" else UNIFORM_SPAN
        return math.ceil(self.mean_seconds * span)

    def draw(self) -> int:
        """One delay in whole seconds (the running clock's unit), independent of the last."""
        if not self.active:
            return 0
        if self.jitter == "exponential":
            # Memoryless: how long an item has waited says nothing about when it will go.
            seconds = min(self.rng.expovariate(1 / self.mean_seconds), self.longest)
        else:
            seconds = self.rng.uniform(0, self.longest)
        return math.ceil(seconds)


def _assessed(store: Store) -> int:
    row = store.conn.execute("SELECT value FROM store_meta WHERE key = 'offer_assessed'").fetchone()
    return 0 if row is None else int(row[0])


#: Every value ``items.kind`` holds: the store writes ``ItemKind`` values and nothing else.
STORED_KINDS: Final = tuple(kind.value for kind in ItemKind)
#: The kinds and numbers of the items after a number, from the kind index alone: with holds
#: on, assessing reads no item rows (a relay assesses what it received a moment ago, which
#: is no longer in its page cache: ~1 KB read and decrypted per item, for its kind).
_KIND_MARKS = ", ".join("?" * len(STORED_KINDS))
NEW_KINDS_SQL: Final = f"SELECT seq, kind FROM items WHERE kind IN ({_KIND_MARKS}) AND seq > ?"  # noqa: S608


def assess(store: Store, delay: OfferDelay, now: int) -> list[bytes]:
    """Give every item stored since the last call its hold (or none); return the ids of the
    new items that are offerable right away (receipts, or everything when holds are off).
    No write transaction when nothing is new (this runs at every session's start)."""
    if store.high_water() <= _assessed(store):
        return []
    with store.transaction():
        after = _assessed(store)
        if not delay.active:
            rows = store.conn.execute(
                "SELECT seq, id FROM items WHERE seq > ? ORDER BY seq", (after,)
            ).fetchall()
            if not rows:
                return []
            _mark_assessed(store, rows[-1][0])
            return [bytes(item_id) for _seq, item_id in rows]
        # In store order, as the delays are drawn.
        kinds = sorted(store.conn.execute(NEW_KINDS_SQL, (*STORED_KINDS, after)).fetchall())
        if not kinds:
            return []
        holds = []
        free = []
        for seq, kind in kinds:
            wait = 0 if kind in UNHELD_KINDS else delay.draw()
            if wait > 0:
                holds.append((seq, now + wait))
            else:
                free.append(seq)
        store.conn.executemany("INSERT INTO offer_holds (seq, until) VALUES (?, ?)", holds)
        _mark_assessed(store, kinds[-1][0])
        return _ids_of(store, free)


def _mark_assessed(store: Store, seq: int) -> None:
    store.conn.execute("UPDATE store_meta SET value = ? WHERE key = 'offer_assessed'", (seq,))


def _ids_of(store: Store, seqs: Sequence[int]) -> list[bytes]:
    """The ids of the items numbered ``seqs`` (few: the receipts and such of a batch)."""
    ids: list[bytes] = []
    for start in range(0, len(seqs), 500):
        chunk = seqs[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = store.conn.execute(
            f"SELECT id FROM items WHERE seq IN ({marks})",  # noqa: S608 - marks only
            chunk,
        )
        ids.extend(bytes(row[0]) for row in rows)
    return ids


def release(store: Store, now: int) -> list[bytes]:
    """End the holds whose time has come (and those of items gone since); return the ids
    that are offerable now."""
    due = store.conn.execute(
        "SELECT 1 FROM offer_holds WHERE until <= ? OR seq NOT IN (SELECT seq FROM items) LIMIT 1",
        (now,),
    ).fetchone()
    if due is None:
        return []
    with store.transaction():
        ids = [
            bytes(row[0])
            for row in store.conn.execute(
                "SELECT i.id FROM offer_holds h JOIN items i ON i.seq = h.seq WHERE h.until <= ?",
                (now,),
            )
        ]
        store.conn.execute("DELETE FROM offer_holds WHERE until <= ?", (now,))
        store.conn.execute("DELETE FROM offer_holds WHERE seq NOT IN (SELECT seq FROM items)")
    return ids


def horizon(store: Store) -> int:
    """The store number to advertise (HELLO ``h``): every item up to it is offerable.

    Just before the first held item, and never past what was assessed. It never goes back:
    holds are only ever given to items after the last one assessed."""
    assessed = _assessed(store)
    row = store.conn.execute("SELECT MIN(seq) FROM offer_holds").fetchone()
    first_held = None if row is None or row[0] is None else int(row[0])
    return assessed if first_held is None else min(assessed, first_held - 1)


def offerable_sorted_ids(store: Store) -> Iterator[bytes]:
    """Ids of the items a peer may see, in byte order (the reconciliation index): all but
    the held and the not yet assessed."""
    cursor = store.conn.execute(
        "SELECT id FROM items WHERE seq <= ? AND seq NOT IN (SELECT seq FROM offer_holds)"
        " ORDER BY id",
        (_assessed(store),),
    )
    while rows := cursor.fetchmany(10_000):
        for row in rows:
            yield bytes(row[0])


#: Held items still stored. CROSS JOIN keeps ``offer_holds`` the outer loop: left to the
#: planner (no statistics), it scanned every item to probe the holds - ~10 ms at 100k items
#: on each ``status``, with no item held at all (perf S11).
HELD_COUNT_SQL = "SELECT COUNT(*) FROM offer_holds h CROSS JOIN items i ON i.seq = h.seq"


def held_count(store: Store) -> int:
    """How many items wait for their offer time (``fieldsync status``)."""
    return int(store.conn.execute(HELD_COUNT_SQL).fetchone()[0])


def next_release(store: Store) -> int | None:
    """Running-clock time at which the next hold ends, or None when nothing is held."""
    row = store.conn.execute("SELECT MIN(until) FROM offer_holds").fetchone()
    return None if row is None or row[0] is None else int(row[0])
