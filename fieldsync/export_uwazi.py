"""Uwazi CSV import files that land intact in the "Fieldsync report" template.

The rules come from Uwazi's own source (huridocs/uwazi 1.190, ``app/api/csv``); the import
guide is ``deploy/uwazi/README.md`` and the template and thesauri beside it are generated
from the constants here (``tests/fieldsync/test_exports_uwazi.py`` keeps them in step):

* a header is matched to a property by ``safeName`` (lowercase, anything but ``a-z0-9`` →
  ``_``); a geolocation property's name is ``<label>_geolocation`` (``templates/utils.ts``),
  so the location column is ``location_geolocation`` and its cell ``lat|lon``;
* dates go through ``moment.utc(value, [instance format, 'LL', 'YYYY MM DD', 'YYYY/MM/DD',
  'YYYY-MM-DD', 'YYYY'])`` (``parseDateValue``): we write ``YYYY-MM-DD`` only; a date range
  is ``from:to`` (``dateRangeImportSeparator``), so a month-precision date is the whole month
  and no time of day can travel (it goes in ``occurred_as_reported``, a text property);
* multiselect cells are thesaurus labels between ``|``, matched trimmed and case-folded, so
  we write the human label ("Arbitrary detention"), never the key;
* a column named ``id`` would make Uwazi update the entity with that ``sharedId``: there is
  none; ``publication_id`` (HQ-side, issue #11) is a text property;
* ``attachments`` names files inside the ZIP (``importEntity.ts``: split on ``|``, each
  looked up as an exact ZIP entry name); a plain CSV has no such column, because Uwazi would
  attach the CSV itself.

Narratives go into a markdown property with every ASCII punctuation character escaped and
line breaks kept (``\\`` + newline, a CommonMark hard break): an author's text shows as
written and cannot inject links, images that call home, or HTML into the analyst's browser.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from fieldsync import hq_media_seal
from fieldsync.export_filters import ExportRow, person_text

UWAZI_VERSION = "1.190 (huridocs/uwazi app/api/csv, October 2024)"
TEMPLATE_NAME = "Fieldsync report"

#: Category keys of the network's taxonomy and their labels in the "Violation categories"
#: thesaurus. A key not listed here is shown with its words capitalised ("land-grab" →
#: "Land grab"); Uwazi adds a label it does not know to the thesaurus on import.
CATEGORY_LABELS = {
    "arbitrary-detention": "Arbitrary detention",
    "enforced-disappearance": "Enforced disappearance",
    "excessive-force": "Excessive force",
    "extrajudicial-killing": "Extrajudicial killing",
    "torture": "Torture or ill-treatment",
    "sexual-violence": "Sexual and gender-based violence",
    "threats": "Threats and intimidation",
    "freedom-of-expression": "Freedom of expression",
    "freedom-of-assembly": "Freedom of assembly",
    "land-grab": "Land grab",
    "forced-displacement": "Forced displacement",
    "property-destruction": "Destruction of property",
    "unclassified": "Unclassified",
}
PRECISION_LABELS = {
    "minute": "Minute",
    "hour": "Hour",
    "day": "Day",
    "month": "Month",
    "year": "Year",
    "unknown": "Unknown",
}
SENSITIVITY_LABELS = {
    "public": "Public",
    "internal": "Internal",
    "restricted": "Restricted",
    "confidential": "Confidential",
}
CONSENT_LABELS = {
    "informed": "Informed consent",
    "publish": "Consent to publish",
    "contact_ok": "Consent to contact",
}
STATUS_LABELS = {"current": "Current", "superseded": "Superseded by a correction"}

#: (column = property name, label, Uwazi type, thesaurus) in the template's order.
PROPERTIES: tuple[tuple[str, str, str, str | None], ...] = (
    ("publication_id", "Publication id", "text", None),
    ("status", "Status", "select", "Report status"),
    ("corrects", "Corrects", "text", None),
    ("occurred", "Occurred", "daterange", None),
    ("occurred_as_reported", "Occurred as reported", "text", None),
    ("date_precision", "Date precision", "select", "Date precision"),
    ("categories", "Categories", "multiselect", "Violation categories"),
    ("primary_category", "Primary category", "select", "Violation categories"),
    ("location_geolocation", "Location", "geolocation", None),
    ("location_accuracy_m", "Location accuracy m", "numeric", None),
    ("place", "Place", "text", None),
    ("narrative", "Narrative", "markdown", None),
    ("people", "People", "text", None),
    ("consent", "Consent", "multiselect", "Consent"),
    ("sensitivity", "Sensitivity", "select", "Sensitivity"),
    ("report_language", "Report language", "text", None),
    ("received_at_hq", "Received at HQ", "date", None),
)
THESAURI: dict[str, list[str]] = {
    "Violation categories": list(CATEGORY_LABELS.values()),
    "Date precision": [
        label + suffix for label in PRECISION_LABELS.values() for suffix in ("", ", approximate")
    ],
    "Sensitivity": list(SENSITIVITY_LABELS.values()),
    "Consent": list(CONSENT_LABELS.values()),
    "Report status": list(STATUS_LABELS.values()),
}
COLUMNS = ("title", *(p[0] for p in PROPERTIES))
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def safe_name(label: str) -> str:
    """Uwazi's ``safeName`` (``shared/propertyNames.ts``, default generation)."""
    return re.sub(r"[^a-z0-9]", "_", label.strip(), flags=re.IGNORECASE).lower()


def property_name(label: str, kind: str) -> str:
    """Uwazi's ``generateName`` (``api/templates/utils.ts``)."""
    name = safe_name(label)
    return f"{name}_{kind}" if kind in ("geolocation", "nested") else name


def category_label(key: str) -> str:
    return CATEGORY_LABELS.get(key) or key.replace("-", " ").capitalize()


def markdown_text(text: str) -> str:
    """Plain text as CommonMark that renders as the same text: every ASCII punctuation
    character backslash-escaped, every line break a hard break (``\\`` before it)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n")  # CommonMark line endings
    escaped = _PUNCTUATION.sub(r"\\\1", lines)
    return escaped.replace("\n", "\\\n")


def _uwazi_date(moment: Any) -> str:
    return str(moment.strftime("%Y-%m-%d"))


def _number(value: float, decimals: int | None) -> str:
    return f"{value:.{decimals}f}" if decimals is not None else repr(value)


def cells(r: ExportRow) -> dict[str, str]:
    body = r.body
    location = body.get("location") or {}
    occurred = body["occurred"]
    categories = [category_label(k) for k in body["categories"]]
    title = (body.get("title") or "").strip() or f"{categories[0]}, {occurred['start']}"
    as_reported = occurred["start"] + (f" to {occurred['end']}" if occurred.get("end") else "")
    if occurred["approximate"]:
        as_reported += " (approximate)"
    precision = PRECISION_LABELS[occurred["precision"]] + (
        ", approximate" if occurred["approximate"] else ""
    )
    consent = [label for key, label in CONSENT_LABELS.items() if r.consent(key)]
    geolocation = ""
    if r.lat is not None and r.lon is not None:
        geolocation = f"{_number(r.lat, r.decimals)}|{_number(r.lon, r.decimals)}"
    return {
        "title": title,
        "publication_id": r.publication_id,
        "status": STATUS_LABELS[r.status],
        "corrects": r.supersedes or "",
        "occurred": f"{_uwazi_date(r.occurred_from)}:{_uwazi_date(r.occurred_to)}",
        "occurred_as_reported": as_reported,
        "date_precision": precision,
        "categories": "|".join(categories),
        "primary_category": categories[0],
        "location_geolocation": geolocation,
        "location_accuracy_m": "" if r.accuracy_m is None else f"{r.accuracy_m:g}",
        "place": location.get("place") or "",
        "narrative": markdown_text(body["narrative"]),
        "people": person_text(r.people(include_names=False)),
        "consent": "|".join(consent),
        "sensitivity": SENSITIVITY_LABELS[body["sensitivity"]],
        "report_language": body["language"],
        "received_at_hq": r.row["received_at"][:10],
    }


def write_uwazi_csv(
    rows: Iterable[ExportRow], out: TextIO, *, delimiter: str = ",", attachments: bool = False
) -> int:
    """Uwazi's import CSV; ``attachments`` adds the column naming files in the ZIP."""
    columns = COLUMNS + (("attachments",) if attachments else ())
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(columns)
    count = 0
    for r in rows:
        row = cells(r)
        row["attachments"] = "|".join(a.name for a in r.attachments)
        writer.writerow([row[c] for c in columns])
        count += 1
    return count


def write_uwazi_zip(
    rows: Iterable[ExportRow], hq_dir: Path, out: Path, delimiter: str = ","
) -> int:
    """A ZIP with ``import.csv`` at its root and each verified attachment under the name its
    ``attachments`` cell gives (``media/PUBLICATION-ID/NN.ext``)."""
    buffered = list(rows)  # the CSV goes first in the ZIP; rows are small, files stream
    text = io.StringIO(newline="")
    count = write_uwazi_csv(buffered, text, delimiter=delimiter, attachments=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("import.csv", text.getvalue().encode("utf-8"))
        for r in buffered:
            for a in r.attachments:
                with archive.open(a.name, "w") as member:
                    hq_media_seal.copy_out(hq_dir / a.source, a.file_key, member)
    return count


# --- the template and thesauri shipped in deploy/uwazi ------------------------------------


def template_json() -> dict[str, Any]:
    """The template as Uwazi's ``POST /api/templates`` takes it; each select's ``content``
    names its thesaurus, to be replaced by that thesaurus's id (the guide says how)."""
    return {
        "name": TEMPLATE_NAME,
        "color": "#C03B22",
        "commonProperties": [
            {"label": "Title", "name": "title", "type": "text", "isCommonProperty": True},
            {
                "label": "Date added",
                "name": "creationDate",
                "type": "date",
                "isCommonProperty": True,
            },
            {
                "label": "Date modified",
                "name": "editDate",
                "type": "date",
                "isCommonProperty": True,
            },
        ],
        "properties": [
            {
                "label": label,
                "name": property_name(label, kind),
                "type": kind,
                **({"content": thesaurus} if thesaurus else {}),
                **({"fullWidth": True} if kind == "markdown" else {}),
                **(
                    {"filter": True}
                    if kind in ("select", "multiselect", "daterange", "date")
                    else {}
                ),
            }
            for _column, label, kind, thesaurus in PROPERTIES
        ],
    }


def thesaurus_json(name: str) -> dict[str, Any]:
    """A thesaurus as ``POST /api/thesauris`` takes it."""
    return {"name": name, "values": [{"label": label} for label in THESAURI[name]]}


def thesaurus_csv(name: str) -> str:
    """A thesaurus in Uwazi's thesaurus CSV import format (a column per language label)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(["English"])
    for label in THESAURI[name]:
        writer.writerow([label])
    return text.getvalue()


def thesaurus_file_name(name: str) -> str:
    return safe_name(name).strip("_") + ".csv"


def deploy_files() -> dict[str, str]:
    """Every generated file of ``deploy/uwazi`` by relative path."""
    files = {"template.json": json.dumps(template_json(), indent=2, ensure_ascii=False) + "\n"}
    for name in THESAURI:
        files[f"thesauri/{thesaurus_file_name(name)}"] = thesaurus_csv(name)
        files[f"thesauri/{thesaurus_file_name(name)[:-4]}.json"] = (
            json.dumps(thesaurus_json(name), indent=2, ensure_ascii=False) + "\n"
        )
    return files
