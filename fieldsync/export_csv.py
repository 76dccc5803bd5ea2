"""CSV for spreadsheets (RFC 4180), safe to open in Excel, LibreOffice and Google Sheets.

* **Formula injection** (OWASP "CSV Injection"): any enrolled author, infiltrators included,
  can type ``=HYPERLINK(...)``. A text cell that starts with ``=``, ``+``, ``-``, ``@``, a
  tab, a carriage return or a NUL, or with one of ``= + - @`` after leading whitespace, gets
  a ``'`` in front, which spreadsheets read as "this is text" and hide. Numbers HQ itself
  writes (coordinates, counts) are never touched, so ``-1.53`` stays a number.
* **Excel** (``excel=True``): a UTF-8 byte order mark, without which Excel shows Arabic and
  Burmese as mojibake; ``delimiter=";"`` for locales whose decimal mark is a comma.
* CRLF line ends and ``"`` quoting per RFC 4180; newlines inside a cell stay inside it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import Any, TextIO

from fieldsync.export_filters import ExportRow, iso, person_text

BOM = "\ufeff"
#: Characters that make a spreadsheet read a cell as a formula (OWASP, ASVS 5.0 V1.2.10).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0")
FORMULA_AFTER_SPACE = ("=", "+", "-", "@")

COLUMNS = (
    "publication_id",
    "status",
    "supersedes",
    "superseded_by",
    "title",
    "primary_category",
    "categories",
    "occurred_start",
    "occurred_end",
    "occurred_from",
    "occurred_to",
    "occurred_precision",
    "occurred_approximate",
    "lat",
    "lon",
    "coordinate_decimals",
    "accuracy_m",
    "place",
    "admin",
    "location_source",
    "sensitivity",
    "language",
    "narrative",
    "people",
    "people_json",
    "consent_share_with_hq",
    "consent_informed",
    "consent_publish",
    "consent_contact_ok",
    "created_at",
    "received_at",
    "clock_source",
    "clock_synced",
    "author_name",
    "attachments",
)
#: Ids that exist on the author's device; only with ``device_ids`` (issue #11).
DEVICE_COLUMNS = ("report_id", "envelope_id", "author_key", "sequence")


def neutralise(cell: str) -> str:
    """The OWASP rule: a cell a spreadsheet would run as a formula is prefixed with ``'``."""
    if cell.startswith(FORMULA_STARTS) or cell.lstrip().startswith(FORMULA_AFTER_SPACE):
        return "'" + cell
    return cell


def safe_row(values: Iterable[Any]) -> list[Any]:
    return [neutralise(v) if isinstance(v, str) else v for v in values]


def _flag(value: bool | None) -> str:
    return "" if value is None else ("true" if value else "false")


def record(r: ExportRow, *, include_names: bool, device_ids: bool) -> dict[str, Any]:
    body = r.body
    location = body.get("location") or {}
    occurred = body["occurred"]
    people = r.people(include_names)
    fields: dict[str, Any] = {
        "publication_id": r.publication_id,
        "status": r.status,
        "supersedes": r.supersedes or "",
        "superseded_by": "|".join(r.superseded_by),
        "title": body.get("title") or "",
        "primary_category": body["categories"][0],
        "categories": "|".join(body["categories"]),
        "occurred_start": occurred["start"],
        "occurred_end": occurred.get("end") or "",
        "occurred_from": iso(r.occurred_from),
        "occurred_to": iso(r.occurred_to),
        "occurred_precision": occurred["precision"],
        "occurred_approximate": _flag(occurred["approximate"]),
        "lat": "" if r.lat is None else r.lat,
        "lon": "" if r.lon is None else r.lon,
        "coordinate_decimals": "" if r.decimals is None else r.decimals,
        "accuracy_m": "" if r.accuracy_m is None else r.accuracy_m,
        "place": location.get("place") or "",
        "admin": "|".join(location.get("admin") or []),
        "location_source": location.get("source") or "",
        "sensitivity": body["sensitivity"],
        "language": body["language"],
        "narrative": body["narrative"],
        "people": person_text(people),
        "people_json": json.dumps(people, ensure_ascii=False) if people else "",
        "consent_share_with_hq": _flag(r.consent("share_with_hq")),
        "consent_informed": _flag(r.consent("informed")),
        "consent_publish": _flag(r.consent("publish")),
        "consent_contact_ok": _flag(r.consent("contact_ok")),
        "created_at": body["created_at"],
        "received_at": r.row["received_at"],
        "clock_source": body["clock"]["source"],
        "clock_synced": _flag(body["clock"]["synced"]),
        "author_name": r.row["author_name"] or "",
        "attachments": "|".join(a.name for a in r.attachments),
    }
    if device_ids:
        fields.update(
            {
                "report_id": body["id"],
                "envelope_id": r.row["envelope_id"],
                "author_key": r.row["author_key"],
                "sequence": r.row["sequence"],
            }
        )
    return fields


def write_csv(
    rows: Iterable[ExportRow],
    out: TextIO,
    *,
    include_names: bool = False,
    device_ids: bool = False,
    excel: bool = False,
    delimiter: str = ",",
) -> int:
    columns = COLUMNS + (DEVICE_COLUMNS if device_ids else ())
    if excel:
        out.write(BOM)
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(columns)
    count = 0
    for r in rows:
        fields = record(r, include_names=include_names, device_ids=device_ids)
        writer.writerow(safe_row(fields[c] for c in columns))
        count += 1
    return count
