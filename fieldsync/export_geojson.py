"""GeoJSON (RFC 7946) for QGIS and web maps: one Feature per report, flat typed properties.

Every feature has the same properties with the same JSON type (or ``null``), so OGR readers
(QGIS, GDAL, pyogrio) make one typed column of each: text, booleans, numbers, and
``occurred_start``/``occurred_end`` (the whole span a month- or year-precision date means)
and ``received_at`` as ISO date-times that they read as DateTime fields. Coordinates are
``[lon, lat]`` with at most six decimals (RFC 7946 §11.2), fewer as sensitivity asks; a
report without coordinates has ``"geometry": null``. No ``crs`` member (WGS 84 is implied).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TextIO

from fieldsync.export_filters import ExportRow, iso, person_text


def properties(r: ExportRow, *, include_names: bool, device_ids: bool) -> dict[str, Any]:
    body = r.body
    location = body.get("location") or {}
    occurred = body["occurred"]
    people = r.people(include_names)
    props: dict[str, Any] = {
        "publication_id": r.publication_id,
        "status": r.status,
        "supersedes": r.supersedes,
        "superseded_by": "|".join(r.superseded_by) or None,
        "title": body.get("title"),
        "category": body["categories"][0],
        "categories": "|".join(body["categories"]),
        # The span as date-times (typed DateTime in OGR, for QGIS's time filter), and the
        # text as the author wrote it (with its zone and precision).
        "occurred_start": iso(r.occurred_from),
        "occurred_end": iso(r.occurred_to),
        "occurred_as_reported": occurred["start"]
        + (f"/{occurred['end']}" if occurred.get("end") else ""),
        "occurred_precision": occurred["precision"],
        "occurred_approximate": bool(occurred["approximate"]),
        "place": location.get("place"),
        "admin": "|".join(location.get("admin") or []) or None,
        "location_source": location.get("source"),
        "coordinate_decimals": r.decimals,
        "accuracy_m": None if r.accuracy_m is None else float(r.accuracy_m),
        "sensitivity": body["sensitivity"],
        "language": body["language"],
        "narrative": body["narrative"],
        "people": person_text(people) or None,
        "people_count": sum(int(p.get("count") or 1) for p in people),
        "consent_publish": r.consent("publish"),
        "consent_informed": r.consent("informed"),
        "consent_contact_ok": r.consent("contact_ok"),
        "author": r.row["author_name"] or None,
        "created_at": body["created_at"],
        "received_at": r.row["received_at"],
        "attachments": "|".join(a.name for a in r.attachments) or None,
        "attachment_count": len(r.attachments),
    }
    if device_ids:
        props.update(
            {
                "report_id": body["id"],
                "envelope_id": r.row["envelope_id"],
                "author_key": r.row["author_key"],
                "sequence": r.row["sequence"],
            }
        )
    return props


def write_geojson(
    rows: Iterable[ExportRow],
    out: TextIO,
    *,
    include_names: bool = False,
    device_ids: bool = False,
) -> int:
    """A FeatureCollection, streamed feature by feature."""
    out.write('{"type": "FeatureCollection", "features": [\n')
    count = 0
    for r in rows:
        geometry = None
        if r.lat is not None and r.lon is not None:
            geometry = {"type": "Point", "coordinates": [r.lon, r.lat]}  # RFC 7946: lon, lat
        feature = {
            "type": "Feature",
            "id": r.publication_id,
            "geometry": geometry,
            "properties": properties(r, include_names=include_names, device_ids=device_ids),
        }
        out.write((",\n" if count else "") + json.dumps(feature, ensure_ascii=False))
        count += 1
    out.write("\n]}\n")
    return count
