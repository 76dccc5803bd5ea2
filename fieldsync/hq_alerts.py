"""HQ's alerts: everything an analyst must look at, one row per event in ``alerts``.

Each alert has an ``alert_key`` naming the event (a fork is the conflicting envelope, a
gap one range, a held envelope its id), so seeing the same event again does not add a row: it
moves ``last_seen`` and adds to ``count``. Its ``state`` is ``open`` until an analyst
acknowledges it (``fieldsync hq alerts --ack ID``); an acknowledged alert whose event happens
again (another envelope of the same fork, the quarantine full again) opens again. Some alerts
end by themselves and become ``resolved``: a gap once its numbers arrived, a held envelope
once a re-ingest accepted it.

Kinds (``KINDS``): ``fork``, ``gap``, ``quarantined`` (held: opened but refused),
``sequence jump`` (held), ``junk`` (refused: did not open under HQ's key, counted by reason),
``quarantine full``, ``attachment`` (an attachment failed verification: tampered or
incomplete), ``attachment incomplete`` (still missing chunks after a later ingest), and
``revoked author`` (a report signed by an author HQ revoked; raised by revocation through
:func:`raise_alert`).

Alerts name the author by the name HQ enrolled them with; the 52-character key only where no
name is known (an author HQ never enrolled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import sqlite_utils

from fieldsync.errors import NotFound
from fieldsync.hq_schema import insert

FORK: Final = "fork"
GAP: Final = "gap"
QUARANTINED: Final = "quarantined"
SEQUENCE_JUMP: Final = "sequence jump"
JUNK: Final = "junk"
QUARANTINE_FULL: Final = "quarantine full"
ATTACHMENT: Final = "attachment"
ATTACHMENT_INCOMPLETE: Final = "attachment incomplete"
REVOKED_AUTHOR: Final = "revoked author"
KINDS: Final = (
    FORK,
    GAP,
    QUARANTINED,
    SEQUENCE_JUMP,
    JUNK,
    QUARANTINE_FULL,
    ATTACHMENT,
    ATTACHMENT_INCOMPLETE,
    REVOKED_AUTHOR,
)

OPEN: Final = "open"
ACKNOWLEDGED: Final = "acknowledged"
RESOLVED: Final = "resolved"

#: What ``fieldsync hq alerts`` shows of a row, in this order.
COLUMNS: Final = (
    "id",
    "kind",
    "state",
    "author",
    "author_name",
    "author_key",
    "sequence",
    "envelope_id",
    "first_missing",
    "last_missing",
    "missing_count",
    "detail",
    "first_seen",
    "last_seen",
    "count",
    "acknowledged_at",
    "resolved_at",
)
_SELECT = (
    "SELECT id, kind, state,"
    " coalesce(nullif(author_name, ''), author_key) AS author, author_name, author_key,"
    " sequence, envelope_id, first_missing, last_missing, missing_count, detail, first_seen,"
    " last_seen, count, acknowledged_at, resolved_at FROM alerts"
)


@dataclass(frozen=True)
class Event:
    """One observation of something an analyst must see."""

    kind: str
    #: What makes two observations the same event (with ``kind``): see the module doc.
    key: str
    detail: str
    author_key: str | None = None
    author_name: str | None = None
    sequence: int | None = None
    envelope_id: str | None = None
    first_missing: int | None = None
    last_missing: int | None = None
    missing_count: int | None = None


def author_name(db: sqlite_utils.Database, author_key: str | None) -> str:
    """The enrolled name of ``author_key`` ("" when HQ never enrolled it)."""
    if author_key is None:
        return ""
    row = db.conn.execute("SELECT name FROM authors WHERE author_key = ?", [author_key]).fetchone()
    return str(row[0] or "") if row is not None else ""


def raise_alert(
    db: sqlite_utils.Database, event: Event, now: str, *, reopen: bool = True
) -> dict[str, Any] | None:
    """Record ``event`` inside the caller's transaction.

    A new event is a new open alert; one already alerted moves ``last_seen`` and ``count``,
    and (``reopen``) opens again if it had been acknowledged or resolved. Returns the alert
    (as ``fieldsync hq alerts`` shows it) when it is new or open again - what needs the
    analyst's attention now - else None.
    """
    alert_key = f"{event.kind}:{event.key}"
    name = event.author_name
    if name is None:
        name = author_name(db, event.author_key)
    row = db.conn.execute(
        "SELECT id, state FROM alerts WHERE alert_key = ?", [alert_key]
    ).fetchone()
    if row is None:
        alert_id = insert(
            db,
            "alerts",
            {
                "kind": event.kind,
                "alert_key": alert_key,
                "author_key": event.author_key,
                "author_name": name,
                "sequence": event.sequence,
                "envelope_id": event.envelope_id,
                "first_missing": event.first_missing,
                "last_missing": event.last_missing,
                "missing_count": event.missing_count,
                "detail": event.detail,
                "at": now,
                "first_seen": now,
                "last_seen": now,
                "count": 1,
                "state": OPEN,
            },
        )
        return get(db, alert_id)
    alert_id, state = int(row[0]), str(row[1])
    again = reopen and state != OPEN
    db.conn.execute(
        "UPDATE alerts SET last_seen = ?, count = count + 1, detail = ?, author_name = ?,"
        " state = CASE WHEN ? THEN 'open' ELSE state END,"
        " acknowledged_at = CASE WHEN ? THEN NULL ELSE acknowledged_at END,"
        " resolved_at = CASE WHEN ? THEN NULL ELSE resolved_at END"
        " WHERE id = ?",
        [now, event.detail, name, again, again, again, alert_id],
    )
    return get(db, alert_id) if again else None


def resolve(db: sqlite_utils.Database, kind: str, key: str, now: str) -> None:
    """The event ended by itself (a held envelope accepted later): its alert is resolved."""
    db.conn.execute(
        "UPDATE alerts SET state = 'resolved', resolved_at = ?"
        " WHERE alert_key = ? AND state != 'resolved'",
        [now, f"{kind}:{key}"],
    )


def refresh_gaps(db: sqlite_utils.Database, now: str) -> list[dict[str, Any]]:
    """Bring the gap alerts up to date with the chain (caller's transaction).

    Gaps are computed in SQL as ranges (SPEC.md §8.7): the missing numbers themselves are
    never listed. A gap still open keeps its alert (``last_seen`` moves); a gap whose numbers
    all arrived is resolved; a gap that is part of an earlier one (2..5 became 2..2 and 4..5
    when 3 arrived) inherits that one's state and first sighting and is not new. Returns the
    gap alerts that are new.
    """
    known = {
        (str(r[1]), int(r[2]), int(r[3])): (int(r[0]), str(r[4]), r[5], r[6])
        for r in db.conn.execute(
            "SELECT id, author_key, first_missing, last_missing, state, first_seen,"
            " acknowledged_at FROM alerts WHERE kind = 'gap' AND state != 'resolved'"
        )
    }
    current = db.conn.execute(
        "SELECT c.author_key, coalesce(a.name, ''), c.previous + 1, c.sequence - 1"
        " FROM (SELECT author_key, sequence, LAG(sequence, 1, 0)"
        "       OVER (PARTITION BY author_key ORDER BY sequence) AS previous FROM chain) c"
        " LEFT JOIN authors a ON a.author_key = c.author_key"
        " WHERE c.sequence > c.previous + 1"
    ).fetchall()
    by_author: dict[str, list[tuple[int, int]]] = {}
    for author, low, high in known:
        by_author.setdefault(author, []).append((low, high))
    new: list[dict[str, Any]] = []
    still_open: set[tuple[str, int, int]] = set()
    for author_key, name, first, last in current:
        span = (str(author_key), int(first), int(last))
        still_open.add(span)
        if span in known:
            db.conn.execute(
                "UPDATE alerts SET last_seen = ?, author_name = ? WHERE id = ?",
                [now, name, known[span][0]],
            )
            continue
        event = Event(
            GAP,
            f"{author_key}:{first}-{last}",
            f"sequence numbers {first}..{last} not received",
            author_key=author_key,
            author_name=name,
            first_missing=first,
            last_missing=last,
            missing_count=last - first + 1,
        )
        parent = next(
            (
                known[(author_key, low, high)]
                for low, high in by_author.get(author_key, ())
                if low <= first and last <= high
            ),
            None,
        )
        alert = raise_alert(db, event, now)
        if parent is None:
            if alert is not None:
                new.append(alert)
            continue
        _, state, first_seen, acknowledged_at = parent
        db.conn.execute(
            "UPDATE alerts SET state = ?, first_seen = ?, acknowledged_at = ? WHERE alert_key = ?",
            [state, first_seen, acknowledged_at, f"{GAP}:{event.key}"],
        )
    for span, (alert_id, _, _, _) in known.items():
        if span not in still_open:
            db.conn.execute(
                "UPDATE alerts SET state = 'resolved', resolved_at = ? WHERE id = ?",
                [now, alert_id],
            )
    return new


def get(db: sqlite_utils.Database, alert_id: int) -> dict[str, Any]:
    rows = list(db.query(f"{_SELECT} WHERE id = ?", [alert_id]))
    if not rows:
        raise NotFound(f"no alert {alert_id}; `fieldsync hq alerts --all` lists them")
    return rows[0]


def listing(db: sqlite_utils.Database, everything: bool = False) -> list[dict[str, Any]]:
    """Open alerts, most recently seen first (``everything``: acknowledged and resolved too,
    after the open ones)."""
    where = "" if everything else " WHERE state = 'open'"
    return list(db.query(f"{_SELECT}{where} ORDER BY state != 'open', last_seen DESC, id DESC"))


def acknowledge(db: sqlite_utils.Database, alert_ids: list[int], now: str) -> list[dict[str, Any]]:
    """Mark alerts acknowledged (caller's transaction); NotFound, changing nothing, for an
    unknown id. An alert already acknowledged or resolved stays as it is."""
    for alert_id in alert_ids:
        get(db, alert_id)
    for alert_id in alert_ids:
        db.conn.execute(
            "UPDATE alerts SET state = 'acknowledged', acknowledged_at = ?"
            " WHERE id = ? AND state = 'open'",
            [now, alert_id],
        )
    return [get(db, alert_id) for alert_id in alert_ids]
