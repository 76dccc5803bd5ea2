"""HQ export formats: JSON Lines, CSV, GeoJSON (RFC 7946) and Uwazi CSV import files.

Rows come from the analyst database's ``reports`` table in a stable order (creation time,
then id). Each writer streams: memory does not grow with the number of reports.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import sqlite_utils

FORMATS = ("jsonl", "csv", "geojson", "uwazi-csv")

CSV_COLUMNS = (
    "id",
    "title",
    "primary_category",
    "categories",
    "occurred_start",
    "occurred_end",
    "occurred_precision",
    "occurred_approximate",
    "lat",
    "lon",
    "accuracy_m",
    "place",
    "location_source",
    "sensitivity",
    "language",
    "narrative",
    "created_at",
    "received_at",
    "clock_source",
    "clock_synced",
    "author_name",
    "author_key",
    "sequence",
    "envelope_id",
    "attachments",
)


def _reports(db: sqlite_utils.Database) -> Iterator[dict[str, Any]]:
    """Reports with ``attachments``: the relative paths of their verified media files, which
    ``hq export`` copies beside the export file (``media/ENVELOPE/NN-name``)."""
    for row in db.query("SELECT * FROM reports ORDER BY created_at, id"):
        paths = db.execute(
            "SELECT path FROM media_attachments WHERE envelope_id = ? AND status = 'verified'"
            " ORDER BY ordinal",
            [row["envelope_id"]],
        ).fetchall()
        yield {**row, "attachments": "|".join(p[0] for p in paths)}


def _record(row: dict[str, Any]) -> dict[str, Any]:
    """A report as exported in JSON: the author's body plus HQ's provenance fields."""
    return {
        **json.loads(row["body_json"]),
        "hq": {
            "author_key": row["author_key"],
            "author_name": row["author_name"],
            "sequence": row["sequence"],
            "envelope_id": row["envelope_id"],
            "received_at": row["received_at"],
            "claimed_time": row["claimed_time"],
            "attachments": row["attachments"].split("|") if row["attachments"] else [],
        },
    }


def write_jsonl(db: sqlite_utils.Database, out: TextIO) -> int:
    count = 0
    for row in _reports(db):
        out.write(json.dumps(_record(row), ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count


def write_csv(db: sqlite_utils.Database, out: TextIO) -> int:
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in _reports(db):
        row = dict(row)
        row["categories"] = "|".join(json.loads(row["categories"]))
        writer.writerow(row)
        count += 1
    return count


def write_geojson(db: sqlite_utils.Database, out: TextIO) -> int:
    """A FeatureCollection; reports without coordinates have ``"geometry": null``."""
    out.write('{"type": "FeatureCollection", "features": [\n')
    count = 0
    for row in _reports(db):
        geometry = None
        if row["lat"] is not None and row["lon"] is not None:
            geometry = {
                "type": "Point",
                "coordinates": [row["lon"], row["lat"]],
            }  # RFC 7946: lon, lat
        feature = {
            "type": "Feature",
            "id": row["id"],
            "geometry": geometry,
            "properties": _record(row),
        }
        out.write(
            (",\n" if count else "") + json.dumps(feature, ensure_ascii=False, sort_keys=True)
        )
        count += 1
    out.write("\n]}\n")
    return count


def write_uwazi_csv(db: sqlite_utils.Database, out: TextIO) -> int:
    """Uwazi CSV import: ``title`` first, ``|`` between multi-values, ``lat|lon`` geolocation."""
    columns = (
        "title",
        "narrative",
        "categories",
        "date",
        "location",
        "place",
        "sensitivity",
        "language",
        "source_id",
        "attachments",
    )
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for row in _reports(db):
        title = row["title"] or f"{row['primary_category']} {row['occurred_start']}"
        location = f"{row['lat']}|{row['lon']}" if row["lat"] is not None else ""
        writer.writerow(
            (
                title,
                row["narrative"],
                "|".join(json.loads(row["categories"])),
                row["occurred_start"],
                location,
                row["place"] or "",
                row["sensitivity"],
                row["language"],
                row["id"],
                row["attachments"],
            )
        )
        count += 1
    return count


WRITERS: dict[str, Callable[[sqlite_utils.Database, TextIO], int]] = {
    "jsonl": write_jsonl,
    "csv": write_csv,
    "geojson": write_geojson,
    "uwazi-csv": write_uwazi_csv,
}
