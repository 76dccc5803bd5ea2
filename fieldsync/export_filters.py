"""Which reports an HQ export holds, and how much of each it shows.

Every export format reads the analyst database through ``select_reports``, so the same rules
hold everywhere:

* **Filters** (``ExportOptions``): when it happened (``since``/``until``, on the reporter's
  calendar as written, the whole span of a month- or year-precision date counts), when HQ
  received it, category, author, status (current or superseded by a correction), highest
  sensitivity, and consent (``publish``, ``informed``, ``contact-ok``).
* **Confidential reports are left out** unless ``include_confidential``; the selection counts
  what it left out so the command can say so.
* **Coordinates are rounded by sensitivity** (``DECIMALS``) unless ``exact_coordinates``;
  ``accuracy_m`` then grows to the rounding error, never shrinks.
* **Publication ids.** Exports name a report by an HQ-side id (``publication_id``): a keyed
  hash of the author key and report id under ``publication.key`` in the HQ directory. Anyone
  without that key cannot link a published report to the id on the author's device
  (issue #11); the same report keeps the same id in every export, so corrections link up.
"""

from __future__ import annotations

import base64
import calendar
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from fieldsync.errors import InputRefused

PUBLICATION_KEY = "publication.key"
SENSITIVITY_ORDER = ("public", "internal", "restricted", "confidential")
#: Decimal places kept of latitude and longitude, by sensitivity (0.00001° ≈ 1.1 m,
#: 0.0001° ≈ 11 m, 0.01° ≈ 1.1 km, 0.1° ≈ 11 km at the equator).
DECIMALS = {"public": 5, "internal": 4, "restricted": 2, "confidential": 1}
#: RFC 7946 §11.2: six decimal places (about 10 cm) is more than any report carries.
EXACT_DECIMALS = 6
METRES_PER_DEGREE = 111_320
CONSENTS = {"informed": "informed", "publish": "publish", "contact-ok": "contact_ok"}
STATUSES = ("current", "superseded")
#: Person fields that exports show; ``name`` only with ``include_names``.
PERSON_FIELDS = ("role", "code", "count", "sex", "age_group", "type", "relation", "reliability")

_PARTIAL = re.compile(
    r"(?P<y>[0-9]{4})(-(?P<m>[0-9]{2})(-(?P<d>[0-9]{2})"
    r"(T(?P<H>[0-9]{2}):(?P<M>[0-9]{2})(:(?P<S>[0-9]{2}))?)?)?)?"
)
_GRANULARITY = ("year", "month", "day", "hour", "minute", "second")


@dataclass(frozen=True)
class ExportOptions:
    """What to export. Dates are ``YYYY[-MM[-DD[Thh:mm[:ss]]]]``; a partial ``until``
    includes the whole month or year it names."""

    since: str | None = None
    until: str | None = None
    received_since: str | None = None
    received_until: str | None = None
    categories: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    status: str | None = None
    max_sensitivity: str | None = None
    consent: tuple[str, ...] = ()
    include_confidential: bool = False
    exact_coordinates: bool = False
    include_names: bool = False
    device_ids: bool = False

    def check(self) -> None:
        """Refuse bad options before anything is written, naming the option."""
        for name in ("since", "until", "received_since", "received_until"):
            value = getattr(self, name)
            if value is not None:
                _bound(value, name.replace("_", "-"), upper=False)
        if self.status is not None and self.status not in STATUSES:
            raise InputRefused(f"--status must be one of {', '.join(STATUSES)}")
        if self.max_sensitivity is not None and self.max_sensitivity not in SENSITIVITY_ORDER:
            raise InputRefused(f"--max-sensitivity must be one of {', '.join(SENSITIVITY_ORDER)}")
        for consent in self.consent:
            if consent not in CONSENTS:
                raise InputRefused(f"--consent must be one of {', '.join(CONSENTS)}")
        if self.max_sensitivity == "confidential" and not self.include_confidential:
            raise InputRefused(
                "--max-sensitivity confidential needs --include-confidential: confidential"
                " reports only leave HQ when asked for by name"
            )


@dataclass
class Counts:
    """What a selection kept and left out, for the message on stderr."""

    exported: int = 0
    confidential: int = 0
    filtered: int = 0


@dataclass
class ExportRow:
    """One report as every format sees it: the database row, its body, and what HQ adds."""

    row: dict[str, Any]
    body: dict[str, Any]
    publication_id: str
    status: str
    supersedes: str | None
    superseded_by: list[str]
    lat: float | None
    lon: float | None
    decimals: int | None
    accuracy_m: float | None
    occurred_from: datetime.datetime
    occurred_to: datetime.datetime
    attachments: list[Attachment] = field(default_factory=list)

    def people(self, include_names: bool) -> list[dict[str, Any]]:
        shown = (*PERSON_FIELDS, "name") if include_names else PERSON_FIELDS
        return [
            {k: v for k, v in person.items() if k in shown and v is not None}
            for person in self.body.get("people") or []
        ]

    def consent(self, name: str) -> bool | None:
        value = (self.body.get("consent") or {}).get(name)
        return None if value is None else bool(value)


@dataclass(frozen=True)
class Attachment:
    """A verified attachment of an exported report: where HQ holds it, and the name exports
    give it (``media/PUBLICATION-ID/NN.ext``: no author file name, no envelope id)."""

    source: str
    name: str
    media_type: str
    sha256: str
    #: The key HQ's copy is sealed under (``fieldsync.hq_media_seal``); None: plaintext.
    file_key: bytes | None = field(default=None, repr=False)


def publication_key(hq_dir: Path) -> bytes:
    """The HQ's publication-id key, made on first use (0600, never replaced)."""
    path = hq_dir / PUBLICATION_KEY
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) != 32:
            raise InputRefused(
                f"{path} is damaged ({len(key)} bytes, not 32); restore it from a backup:"
                " without it publication ids change"
            ) from None
        return key
    key = secrets.token_bytes(32)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def publication_id(key: bytes, author_key: str, report_id: str) -> str:
    """``hq-`` and 24 base32 letters (120 bits) of HMAC-SHA256(author key, report id)."""
    digest = hmac.new(key, f"{author_key}\n{report_id}".encode(), hashlib.sha256).digest()
    return "hq-" + base64.b32encode(digest[:15]).decode().lower()


def _bound(text: str, option: str, *, upper: bool) -> datetime.datetime:
    match = _PARTIAL.fullmatch(text.strip().rstrip("Z"))
    if match is None:
        raise InputRefused(
            f"--{option} {text!r}: give a date like 2025-03, 2025-03-01 or 2025-03-01T09:30"
        )
    try:
        return _expand(match, None, upper=upper)
    except ValueError:
        raise InputRefused(f"--{option} {text!r} is not a real date") from None


def _expand(match: re.Match[str], precision: str | None, *, upper: bool) -> datetime.datetime:
    """The first (or last) second of what a partial timestamp names, cut to ``precision``."""
    parts = match.groupdict()
    written = max(i for i, key in enumerate(("y", "m", "d", "H", "M", "S")) if parts[key])
    level = written
    if precision in _GRANULARITY:
        level = min(written, _GRANULARITY.index(precision))
    values = [int(parts[k]) if parts[k] else None for k in ("y", "m", "d", "H", "M", "S")]
    year = values[0] or 1
    month = values[1] if level >= 1 and values[1] else (12 if upper else 1)
    last_day = calendar.monthrange(year, month)[1]
    day = values[2] if level >= 2 and values[2] else (last_day if upper else 1)
    hour = values[3] if level >= 3 and values[3] is not None else (23 if upper else 0)
    minute = values[4] if level >= 4 and values[4] is not None else (59 if upper else 0)
    second = values[5] if level >= 5 and values[5] is not None else (59 if upper else 0)
    return datetime.datetime(year, month, day, hour, minute, second)


def occurred_span(body: dict[str, Any]) -> tuple[datetime.datetime, datetime.datetime]:
    """When it happened, on the reporter's clock as written (the zone is not applied: a
    report of 23:30 on the 1st stays on the 1st), widened to the stated precision."""
    occurred = body["occurred"]
    precision = occurred.get("precision")
    start = _match(occurred["start"])
    end = _match(occurred.get("end") or occurred["start"])
    return _expand(start, precision, upper=False), _expand(end, precision, upper=True)


def _match(text: str) -> re.Match[str]:
    """A stored timestamp (validated at ingest, SPEC.md §7) as its parts."""
    match = _PARTIAL.match(text)
    if match is None:
        raise InputRefused(f"the analyst database holds a malformed timestamp {text!r:.60}")
    return match


def _received(text: str) -> datetime.datetime:
    return _expand(_match(text), None, upper=False)


def round_coordinates(
    lat: float | None, lon: float | None, accuracy: float | None, decimals: int
) -> tuple[float | None, float | None, float | None]:
    """Coordinates kept to ``decimals`` places; the accuracy at least the rounding error."""
    if lat is None or lon is None:
        return None, None, accuracy
    error = METRES_PER_DEGREE * 10.0**-decimals
    rounded_accuracy = max(accuracy or 0.0, error) if decimals < EXACT_DECIMALS else accuracy
    # + 0.0 turns -0.0 into 0.0: a report at the equator is not "south of it".
    return round(lat, decimals) + 0.0, round(lon, decimals) + 0.0, rounded_accuracy


class Selection:
    """The reports an export holds, streamed in creation order; ``counts`` is complete once
    the iteration ends."""

    def __init__(
        self, db: sqlite_utils.Database, options: ExportOptions, key: bytes | None = None
    ) -> None:
        options.check()
        self.db = db
        self.options = options
        self.key = key if key is not None else _ephemeral_key()
        self.counts = Counts()

    def __iter__(self) -> Iterator[ExportRow]:
        corrections = self._corrections()
        for row in self.db.query("SELECT * FROM reports ORDER BY created_at, id"):
            export_row = self._export_row(row, corrections)
            if export_row.body["sensitivity"] == "confidential" and not (
                self.options.include_confidential
            ):
                self.counts.confidential += 1
                continue
            if not self._matches(export_row):
                self.counts.filtered += 1
                continue
            export_row.attachments = self._attachments(export_row)
            self.counts.exported += 1
            yield export_row

    def _corrections(self) -> dict[tuple[str, str], list[str]]:
        """(author, report id) → publication ids of the same author's reports correcting it.
        Only the author's own reports count: nobody else can supersede a report."""
        found: dict[tuple[str, str], list[str]] = {}
        for author_key, report_id, supersedes in self.db.execute(
            "SELECT author_key, id, supersedes FROM reports WHERE supersedes IS NOT NULL"
            " ORDER BY created_at, id"
        ).fetchall():
            found.setdefault((author_key, supersedes), []).append(
                publication_id(self.key, author_key, report_id)
            )
        return found

    def _export_row(
        self, row: dict[str, Any], corrections: dict[tuple[str, str], list[str]]
    ) -> ExportRow:
        body = json.loads(row["body_json"])
        superseded_by = corrections.get((row["author_key"], row["id"]), [])
        decimals = (
            EXACT_DECIMALS if self.options.exact_coordinates else DECIMALS[body["sensitivity"]]
        )
        lat, lon, accuracy = round_coordinates(row["lat"], row["lon"], row["accuracy_m"], decimals)
        occurred_from, occurred_to = occurred_span(body)
        return ExportRow(
            row=row,
            body=body,
            publication_id=publication_id(self.key, row["author_key"], row["id"]),
            status="superseded" if superseded_by else "current",
            supersedes=(
                publication_id(self.key, row["author_key"], row["supersedes"])
                if row["supersedes"]
                else None
            ),
            superseded_by=superseded_by,
            lat=lat,
            lon=lon,
            decimals=decimals if lat is not None else None,
            accuracy_m=accuracy,
            occurred_from=occurred_from,
            occurred_to=occurred_to,
        )

    def _matches(self, r: ExportRow) -> bool:
        o = self.options
        if o.since is not None and r.occurred_to < _bound(o.since, "since", upper=False):
            return False
        if o.until is not None and r.occurred_from > _bound(o.until, "until", upper=True):
            return False
        received = _received(r.row["received_at"])
        if o.received_since is not None and received < _bound(
            o.received_since, "received-since", upper=False
        ):
            return False
        if o.received_until is not None and received > _bound(
            o.received_until, "received-until", upper=True
        ):
            return False
        if o.categories and not set(o.categories) & set(r.body["categories"]):
            return False
        if o.authors and not {r.row["author_name"], r.row["author_key"]} & set(o.authors):
            return False
        if o.status is not None and r.status != o.status:
            return False
        if o.max_sensitivity is not None and SENSITIVITY_ORDER.index(
            r.body["sensitivity"]
        ) > SENSITIVITY_ORDER.index(o.max_sensitivity):
            return False
        return all(r.consent(CONSENTS[c]) is True for c in o.consent)

    def _attachments(self, r: ExportRow) -> list[Attachment]:
        found = []
        for ordinal, name, media_type, sha256, path, file_key in self.db.execute(
            "SELECT ordinal, name, media_type, sha256, path, file_key FROM media_attachments"
            " WHERE envelope_id = ? AND status = 'verified' ORDER BY ordinal",
            [r.row["envelope_id"]],
        ).fetchall():
            found.append(
                Attachment(
                    source=path,
                    name=f"media/{r.publication_id}/{ordinal + 1:02d}{_extension(name)}",
                    media_type=media_type,
                    sha256=sha256,
                    file_key=file_key,
                )
            )
        return found


def _extension(name: str) -> str:
    """A safe file extension (``.jpg``) from an author's file name, or none."""
    suffix = Path(name).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def _ephemeral_key() -> bytes:
    """For callers without an HQ directory (tests of a bare database): ids stable only
    within one export."""
    return secrets.token_bytes(32)


def person_text(people: Sequence[dict[str, Any]]) -> str:
    """People as one readable line: ``victim ×3 (code V-1, sex m, age_group 18-29); ...``."""
    parts = []
    for person in people:
        count = person.get("count")
        details = ", ".join(f"{k} {v}" for k, v in person.items() if k not in ("role", "count"))
        parts.append(
            f"{person['role']}{f' ×{count}' if count else ''}"
            + (f" ({details})" if details else "")
        )
    return "; ".join(parts)


def iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")
