"""HQ export formats: JSON Lines, CSV, GeoJSON (RFC 7946) and Uwazi CSV / ZIP import files.

Which reports go out, and how precisely, is decided once for every format by
``fieldsync.export_filters`` (filters, confidential reports left out, coordinates rounded by
sensitivity, HQ-side publication ids). Each format has its own module:
``export_csv`` (spreadsheet-safe CSV), ``export_geojson`` (flat typed properties),
``export_uwazi`` (the shipped Uwazi template's import CSV). Rows stream in a stable order
(creation time, then id); memory does not grow with the number of reports, except for
``uwazi-zip``, which holds the rows (not the files) to write ``import.csv`` first.

Files are written 0600 under a temporary name and renamed into place; their attachments are
copied beside them (``media/PUBLICATION-ID/NN.ext``, directories 0700, files 0600).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import sqlite_utils

from fieldsync import hq_media
from fieldsync.errors import FieldsyncError
from fieldsync.export_csv import write_csv
from fieldsync.export_filters import (
    Counts,
    ExportOptions,
    ExportRow,
    Selection,
    publication_key,
)
from fieldsync.export_geojson import write_geojson
from fieldsync.export_uwazi import write_uwazi_csv, write_uwazi_zip

FORMATS = ("jsonl", "csv", "geojson", "uwazi-csv", "uwazi-zip")
#: Formats written as text (to a file or stdout); ``uwazi-zip`` needs a file.
TEXT_FORMATS = ("jsonl", "csv", "geojson", "uwazi-csv")
DELIMITERS = (",", ";")


@dataclass(frozen=True)
class CsvStyle:
    """``excel``: UTF-8 byte order mark (CSV only); ``delimiter``: ``,`` or ``;``."""

    excel: bool = False
    delimiter: str = ","


@dataclass(frozen=True)
class ExportResult:
    format: str
    counts: Counts
    media_copied: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "reports": self.counts.exported,
            "left_out": {
                "confidential": self.counts.confidential,
                "filtered": self.counts.filtered,
            },
            "media_copied": self.media_copied,
        }


def _record(r: ExportRow, options: ExportOptions) -> dict[str, Any]:
    """A report as exported in JSON: the author's body as HQ may show it, plus HQ's fields."""
    body = dict(r.body)
    if not options.device_ids:
        # The author's device knows these ids (issue #11): HQ's own ids stand in for them
        # (``hq.publication_id``, ``hq.supersedes``), as in every other format.
        body.pop("id", None)
        body.pop("supersedes", None)
    if body.get("location"):
        body["location"] = {
            **body["location"],
            "lat": r.lat,
            "lon": r.lon,
            "accuracy_m": r.accuracy_m,
        }
    if body.get("people"):
        body["people"] = r.people(options.include_names)
    hq: dict[str, Any] = {
        "publication_id": r.publication_id,
        "status": r.status,
        "supersedes": r.supersedes,
        "superseded_by": r.superseded_by,
        "author_name": r.row["author_name"],
        "received_at": r.row["received_at"],
        "coordinate_decimals": r.decimals,
        "attachments": [a.name for a in r.attachments],
    }
    if options.device_ids:
        hq.update(
            {
                "author_key": r.row["author_key"],
                "sequence": r.row["sequence"],
                "envelope_id": r.row["envelope_id"],
                "claimed_time": r.row["claimed_time"],
            }
        )
    return {**body, "hq": hq}


def write_jsonl(rows: Iterable[ExportRow], out: TextIO, options: ExportOptions) -> int:
    count = 0
    for r in rows:
        out.write(json.dumps(_record(r, options), ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count


def write_text(
    fmt: str,
    rows: Iterable[ExportRow],
    out: TextIO,
    options: ExportOptions,
    style: CsvStyle | None = None,
) -> int:
    """Write ``rows`` in text format ``fmt`` to ``out``; return how many."""
    style = style or CsvStyle()
    if style.delimiter not in DELIMITERS:
        raise FieldsyncError(f"the delimiter must be one of {' '.join(DELIMITERS)}")
    if fmt == "jsonl":
        return write_jsonl(rows, out, options)
    if fmt == "csv":
        return write_csv(
            rows,
            out,
            include_names=options.include_names,
            device_ids=options.device_ids,
            excel=style.excel,
            delimiter=style.delimiter,
        )
    if fmt == "geojson":
        return write_geojson(
            rows, out, include_names=options.include_names, device_ids=options.device_ids
        )
    if fmt == "uwazi-csv":
        return write_uwazi_csv(rows, out, delimiter=style.delimiter)
    raise FieldsyncError(f"{fmt} is written to a file: give --out FILE")


def select(db: sqlite_utils.Database, hq_dir: Path, options: ExportOptions) -> Selection:
    hq_media.ensure_schema(db)
    return Selection(db, options, publication_key(hq_dir))


def export_stream(
    db: sqlite_utils.Database,
    hq_dir: Path,
    fmt: str,
    out: TextIO,
    options: ExportOptions | None = None,
    style: CsvStyle | None = None,
) -> ExportResult:
    options = options or ExportOptions()
    style = style or CsvStyle()
    selection = select(db, hq_dir, options)
    write_text(fmt, selection, out, options, style)
    return ExportResult(fmt, selection.counts)


def export_file(
    db: sqlite_utils.Database,
    hq_dir: Path,
    fmt: str,
    out: Path,
    options: ExportOptions | None = None,
    style: CsvStyle | None = None,
) -> ExportResult:
    """Write ``out`` (0600, atomically) and copy the exported reports' attachments beside it."""
    options = options or ExportOptions()
    style = style or CsvStyle()
    selection = select(db, hq_dir, options)
    tmp = out.with_name(f".{out.name}.partial")
    tmp.unlink(missing_ok=True)
    exported: list[ExportRow] = []

    def kept(rows: Selection) -> Iterable[ExportRow]:
        for r in rows:
            if r.attachments:
                exported.append(r)
            yield r

    try:
        if fmt == "uwazi-zip":
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            write_uwazi_zip(selection, hq_dir, tmp, style.delimiter)
        else:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "w", encoding="utf-8", newline="") as handle:
                write_text(fmt, kept(selection), handle, options, style)
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    copied = 0 if fmt == "uwazi-zip" else copy_attachments(hq_dir, exported, out.parent)
    return ExportResult(fmt, selection.counts, copied)


def copy_attachments(hq_dir: Path, rows: Iterable[ExportRow], destination: Path) -> int:
    """Copy each exported report's verified files to the names the export gives them."""
    copied = 0
    for r in rows:
        for a in r.attachments:
            target = destination / a.name
            if target.exists():
                continue
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(target.parent, 0o700)
            os.chmod(target.parent.parent, 0o700)
            # Decrypted only here, into the export directory the user chose.
            hq_media.decrypt_to(hq_dir, a.source, a.file_key, target)
            copied += 1
    return copied
