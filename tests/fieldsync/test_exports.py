"""HQ export formats parse back with standard tools: JSON Lines, CSV, GeoJSON, Uwazi CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from fieldsync.exports import CSV_COLUMNS, FORMATS, WRITERS
from tests.fieldsync.offline_support import Net, add_reports, copy_network, export, ingest, open_hq

TRICKY = 'Line one, with "quotes"\nline two; naïve café — ünïcode, | pipe'


@pytest.fixture(scope="module")
def exported_net(base_net: Net, tmp_path_factory: pytest.TempPathFactory) -> Net:
    """HQ holding three reports: with coordinates, with a place only, with neither."""
    net = copy_network(base_net, tmp_path_factory.mktemp("exports") / "net")
    add_reports(
        net.a,
        ["Three traders detained at the market."],
        categories=["arbitrary-detention", "threats"],
        location={
            "source": "gps",
            "lat": 12.3657,
            "lon": -1.5339,
            "accuracy_m": 50,
            "place": "Market",
        },
        title="Market detentions",
    )
    add_reports(net.a, [TRICKY], location={"source": "text", "place": "Koudougou"})
    add_reports(net.a, ["Fence on grazing land."], categories=["land-grab"])
    export(net.a, net.usb / "a.bundle")
    assert ingest(net, net.usb / "a.bundle").new == 3
    return net


def _export(net: Net, fmt: str) -> str:
    out = io.StringIO()
    with open_hq(net) as headquarters:
        count = WRITERS[fmt](headquarters.database(), out)
    assert count == 3
    return out.getvalue()


def _by_narrative(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r["narrative"])[:10]: r for r in rows}


def test_formats_are_the_documented_four() -> None:
    assert FORMATS == ("jsonl", "csv", "geojson", "uwazi-csv")
    assert set(WRITERS) == set(FORMATS)


def test_jsonl_is_one_report_body_per_line_with_provenance(exported_net: Net) -> None:
    lines = _export(exported_net, "jsonl").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 3
    by = _by_narrative(records)
    market = by["Three trad"]
    assert market["schema"] == "fieldsync.report/1"
    assert market["categories"] == ["arbitrary-detention", "threats"]
    assert market["location"]["lat"] == 12.3657 and market["location"]["lon"] == -1.5339
    assert market["title"] == "Market detentions"
    hq = market["hq"]
    assert hq["author_name"] == "monitor-17" and hq["author_key"].startswith("author:")
    assert set(hq) == {
        "author_key",
        "author_name",
        "sequence",
        "envelope_id",
        "received_at",
        "claimed_time",
        "attachments",
    }
    assert hq["attachments"] == []
    assert by[TRICKY[:10]]["narrative"] == TRICKY
    assert any("naïve" in line for line in lines)  # UTF-8, not \\u escapes
    # Stable order: creation time, then id.
    assert [r["created_at"] for r in records] == sorted(r["created_at"] for r in records)


def test_csv_has_a_header_and_round_trips_through_the_csv_module(exported_net: Net) -> None:
    text = _export(exported_net, "csv")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    rows = _by_narrative(list(reader))
    market = rows["Three trad"]
    assert market["categories"] == "arbitrary-detention|threats"
    assert market["primary_category"] == "arbitrary-detention"
    assert (float(market["lat"]), float(market["lon"])) == (12.3657, -1.5339)
    assert rows[TRICKY[:10]]["narrative"] == TRICKY  # quotes, commas and the newline survive
    fence = rows["Fence on g"]
    assert fence["lat"] == "" and fence["lon"] == "" and fence["place"] == ""


def test_geojson_is_a_feature_collection_with_lon_lat_and_null_geometry(exported_net: Net) -> None:
    doc = json.loads(_export(exported_net, "geojson"))
    assert doc["type"] == "FeatureCollection"
    features = {f["properties"]["narrative"][:10]: f for f in doc["features"]}
    assert len(features) == 3
    market = features["Three trad"]
    assert market["type"] == "Feature"
    assert market["geometry"] == {"type": "Point", "coordinates": [-1.5339, 12.3657]}  # lon, lat
    assert market["id"] == market["properties"]["id"]
    assert features[TRICKY[:10]]["geometry"] is None  # a place name only
    assert features["Fence on g"]["geometry"] is None


def test_uwazi_csv_uses_pipes_for_multi_values_and_lat_pipe_lon(exported_net: Net) -> None:
    reader = csv.DictReader(io.StringIO(_export(exported_net, "uwazi-csv"), newline=""))
    assert reader.fieldnames is not None and reader.fieldnames[0] == "title"
    rows = _by_narrative(list(reader))
    market = rows["Three trad"]
    assert market["title"] == "Market detentions"
    assert market["categories"] == "arbitrary-detention|threats"
    assert market["location"] == "12.3657|-1.5339"  # Uwazi geolocation: lat|lon
    fence = rows["Fence on g"]
    assert fence["location"] == "" and fence["categories"] == "land-grab"
    assert fence["title"].startswith("land-grab ")  # a title is made when the report has none
    assert rows[TRICKY[:10]]["place"] == "Koudougou"
    assert all(len(r["source_id"]) == 36 for r in rows.values())


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_database_exports_valid_empty_documents(
    base_net: Net, tmp_path: Path, fmt: str
) -> None:
    net = copy_network(base_net, tmp_path / "empty")
    out = io.StringIO()
    with open_hq(net) as headquarters:
        assert WRITERS[fmt](headquarters.database(), out) == 0
    text = out.getvalue()
    if fmt == "jsonl":
        assert text == ""
    elif fmt == "geojson":
        assert json.loads(text) == {"type": "FeatureCollection", "features": []}
    else:
        assert len(list(csv.reader(io.StringIO(text)))) == 1  # the header only
