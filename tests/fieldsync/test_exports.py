"""HQ export formats on a small network, and the rules every format shares: the OWASP cell
rule, CommonMark escaping, occurred spans, rounding, publication ids, option refusals."""

from __future__ import annotations

import csv
import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from fieldsync.errors import InputRefused
from fieldsync.export_csv import COLUMNS, neutralise
from fieldsync.export_filters import (
    PUBLICATION_KEY,
    ExportOptions,
    occurred_span,
    publication_id,
    publication_key,
    round_coordinates,
)
from fieldsync.export_uwazi import markdown_text, property_name, safe_name
from fieldsync.exports import FORMATS, TEXT_FORMATS, CsvStyle, export_file, export_stream
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
        sensitivity="public",
    )
    add_reports(net.a, [TRICKY], location={"source": "text", "place": "Koudougou"})
    add_reports(net.a, ["Fence on grazing land."], categories=["land-grab"])
    export(net.a, net.usb / "a.bundle")
    assert ingest(net, net.usb / "a.bundle").new == 3
    return net


def _export(net: Net, fmt: str, **options: Any) -> str:
    out = io.StringIO(newline="")
    with open_hq(net) as headquarters:
        result = export_stream(headquarters.database(), net.hq, fmt, out, ExportOptions(**options))
    assert result.counts.exported == 3
    return out.getvalue()


def _by_narrative(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r["narrative"])[:10]: r for r in rows}


def test_formats() -> None:
    assert FORMATS == ("jsonl", "csv", "geojson", "uwazi-csv", "uwazi-zip")
    assert set(TEXT_FORMATS) == set(FORMATS) - {"uwazi-zip"}


def test_jsonl_is_one_report_body_per_line_with_hq_fields(exported_net: Net) -> None:
    lines = _export(exported_net, "jsonl").splitlines()
    records = [json.loads(line) for line in lines]
    by = _by_narrative(records)
    market = by["Three trad"]
    assert market["schema"] == "fieldsync.report/1"
    assert "id" not in market and "supersedes" not in market  # the device's ids: device_ids only
    assert market["categories"] == ["arbitrary-detention", "threats"]
    assert market["location"]["lat"] == 12.3657 and market["location"]["lon"] == -1.5339
    hq = market["hq"]
    assert hq["author_name"] == "monitor-17" and hq["publication_id"].startswith("hq-")
    assert "author_key" not in hq and "envelope_id" not in hq  # only with device_ids
    assert (hq["status"], hq["supersedes"], hq["superseded_by"]) == ("current", None, [])
    assert hq["coordinate_decimals"] == 5 and hq["attachments"] == []
    fence = by["Fence on g"]
    assert fence["sensitivity"] == "restricted" and fence["hq"]["coordinate_decimals"] is None
    assert by[TRICKY[:10]]["narrative"] == TRICKY
    assert any("naïve" in line for line in lines)  # UTF-8, not \\u escapes
    assert [r["created_at"] for r in records] == sorted(r["created_at"] for r in records)
    with_ids = [
        json.loads(line) for line in _export(exported_net, "jsonl", device_ids=True).splitlines()
    ]
    assert all(r["hq"]["author_key"].startswith("author:") for r in with_ids)
    assert sorted(r["hq"]["sequence"] for r in with_ids)[0] == 1
    assert all(len(r["id"]) == 36 for r in with_ids)


def test_csv_round_trips_and_names_reports_by_publication_id(exported_net: Net) -> None:
    text = _export(exported_net, "csv")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    rows = _by_narrative(list(reader))
    market = rows["Three trad"]
    assert market["categories"] == "arbitrary-detention|threats"
    assert market["primary_category"] == "arbitrary-detention"
    assert (float(market["lat"]), float(market["lon"])) == (12.3657, -1.5339)
    assert rows[TRICKY[:10]]["narrative"] == TRICKY  # quotes, commas and the newline survive
    fence = rows["Fence on g"]
    assert fence["lat"] == "" and fence["lon"] == "" and fence["place"] == ""
    assert "\r\n" in text and text.count("\r\n") == 4  # header + 3 records; the LF in TRICKY
    assert {r["publication_id"][:3] for r in rows.values()} == {"hq-"}


def test_geojson_is_a_feature_collection_with_lon_lat_and_null_geometry(exported_net: Net) -> None:
    doc = json.loads(_export(exported_net, "geojson"))
    assert doc["type"] == "FeatureCollection"
    features = {f["properties"]["narrative"][:10]: f for f in doc["features"]}
    market = features["Three trad"]
    assert market["geometry"] == {"type": "Point", "coordinates": [-1.5339, 12.3657]}  # lon, lat
    assert market["id"] == market["properties"]["publication_id"]
    assert market["properties"]["category"] == "arbitrary-detention"
    assert market["properties"]["author"] == "monitor-17"
    assert features[TRICKY[:10]]["geometry"] is None  # a place name only
    assert features[TRICKY[:10]]["properties"]["place"] == "Koudougou"


def test_uwazi_csv_columns_match_the_template(exported_net: Net) -> None:
    reader = csv.DictReader(io.StringIO(_export(exported_net, "uwazi-csv"), newline=""))
    assert reader.fieldnames is not None and reader.fieldnames[0] == "title"
    rows = _by_narrative(list(reader))
    market = rows["Three trad"]
    assert market["title"] == "Market detentions"
    assert market["categories"] == "Arbitrary detention|Threats and intimidation"
    assert market["location_geolocation"] == "12.36570|-1.53390"  # Uwazi geolocation: lat|lon
    assert market["occurred"] == "2025-03-01:2025-03-01"
    fence = rows["Fence on g"]
    assert fence["location_geolocation"] == "" and fence["categories"] == "Land grab"
    assert fence["title"] == "Land grab, 2025-03-01"  # a title is made when the report has none
    assert rows["Line one\\,"]["place"] == "Koudougou"  # narrative escaped as markdown


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_database_exports_valid_empty_documents(
    base_net: Net, tmp_path: Path, fmt: str
) -> None:
    net = copy_network(base_net, tmp_path / "empty")
    out = tmp_path / f"empty.{fmt}"
    with open_hq(net) as headquarters:
        result = export_file(headquarters.database(), net.hq, fmt, out)
    assert result.counts.exported == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    if fmt == "uwazi-zip":
        return
    text = out.read_text("utf-8")
    if fmt == "jsonl":
        assert text == ""
    elif fmt == "geojson":
        assert json.loads(text) == {"type": "FeatureCollection", "features": []}
    else:
        assert len(list(csv.reader(io.StringIO(text)))) == 1  # the header only


def test_export_files_are_private_and_replace_atomically(exported_net: Net, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    out.write_text("old")
    out.chmod(0o644)
    with open_hq(exported_net) as headquarters:
        export_file(
            headquarters.database(), exported_net.hq, "csv", out, style=CsvStyle(excel=True)
        )
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes().startswith(b"\xef\xbb\xbfpublication_id,")
    assert not list(tmp_path.glob(".*partial"))
    key = exported_net.hq / PUBLICATION_KEY
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    assert stat.S_IMODE(exported_net.hq.stat().st_mode) == 0o700


# --- shared rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ("=1+2", "'=1+2"),
        ("+SUM(1,1)", "'+SUM(1,1)"),
        ("-2", "'-2"),
        ("@cmd", "'@cmd"),
        ("\t=1", "'\t=1"),
        ("\rx", "'\rx"),
        ("\0x", "'\0x"),
        ("  =1", "'  =1"),
        ("\n\n@x", "'\n\n@x"),
        ("\u00a0=1", "'\u00a0=1"),  # a no-break space is whitespace too
        ("a=1", "a=1"),
        ("", ""),
        ("'=1", "'=1"),
        ("اعتقل =1", "اعتقل =1"),
    ],
)
def test_the_owasp_cell_rule(cell: str, safe: str) -> None:
    assert neutralise(cell) == safe


def test_markdown_escaping_shows_the_text_and_nothing_else() -> None:
    assert markdown_text("a *b* [c](d)\n<img>") == "a \\*b\\* \\[c\\]\\(d\\)\\\n\\<img\\>"
    assert markdown_text("x\r\ny\rz") == "x\\\ny\\\nz"
    assert markdown_text("اعتقل ثلاثة") == "اعتقل ثلاثة"


def test_uwazi_names_follow_its_source() -> None:
    assert safe_name(" Location accuracy m ") == "location_accuracy_m"
    assert safe_name("Date (approx.)") == "date__approx__"
    assert property_name("Location", "geolocation") == "location_geolocation"
    assert property_name("Narrative", "markdown") == "narrative"


def _span(start: str, precision: str, end: str | None = None) -> tuple[str, str]:
    occurred: dict[str, Any] = {"start": start, "precision": precision, "approximate": False}
    if end:
        occurred["end"] = end
    first, last = occurred_span({"occurred": occurred})
    return first.isoformat(), last.isoformat()


def test_occurred_spans_widen_to_the_precision_on_the_written_calendar() -> None:
    assert _span("2025-02", "month") == ("2025-02-01T00:00:00", "2025-02-28T23:59:59")
    assert _span("2024-02", "month") == ("2024-02-01T00:00:00", "2024-02-29T23:59:59")
    assert _span("2025", "year") == ("2025-01-01T00:00:00", "2025-12-31T23:59:59")
    assert _span("2025-03-10T09:00Z", "month") == ("2025-03-01T00:00:00", "2025-03-31T23:59:59")
    assert _span("2025-03-01T23:30+03:00", "minute") == (
        "2025-03-01T23:30:00",
        "2025-03-01T23:30:59",
    )
    assert _span("2025-03-01", "unknown", "2025-04") == (
        "2025-03-01T00:00:00",
        "2025-04-30T23:59:59",
    )


def test_rounding_by_sensitivity_never_claims_more_accuracy() -> None:
    assert round_coordinates(12.3657123, -1.5339456, 5.0, 2) == (12.37, -1.53, 1113.2)
    assert round_coordinates(-0.001, -0.001, None, 2) == (0.0, 0.0, 1113.2)
    lat, lon, _ = round_coordinates(-0.001, 0.0, None, 2)
    assert str(lat) == "0.0" and str(lon) == "0.0"  # never "-0.0"
    assert round_coordinates(1.23456789, 2.0, 3.0, 6) == (1.234568, 2.0, 3.0)
    assert round_coordinates(None, None, 7.0, 2) == (None, None, 7.0)


def test_publication_ids_are_keyed_stable_and_unlinkable(tmp_path: Path) -> None:
    key = publication_key(tmp_path)
    assert publication_key(tmp_path) == key  # made once, then read
    pid = publication_id(key, "author:abc", "0190f0e0-0000-7000-8000-000000000001")
    assert pid == publication_id(key, "author:abc", "0190f0e0-0000-7000-8000-000000000001")
    assert pid != publication_id(key, "author:xyz", "0190f0e0-0000-7000-8000-000000000001")
    assert pid != publication_id(bytes(32), "author:abc", "0190f0e0-0000-7000-8000-000000000001")
    assert len(pid) == 27 and pid.startswith("hq-")
    (tmp_path / PUBLICATION_KEY).write_bytes(b"short")
    with pytest.raises(InputRefused, match="damaged"):
        publication_key(tmp_path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"since": "last week"}, "--since 'last week': give a date"),
        ({"until": "2025-02-30"}, "not a real date"),
        ({"received_since": "2025-13"}, "--received-since '2025-13' is not a real date"),
        ({"status": "deleted"}, "--status must be one of current, superseded"),
        ({"max_sensitivity": "secret"}, "--max-sensitivity must be one of"),
        ({"consent": ("always",)}, "--consent must be one of"),
        ({"max_sensitivity": "confidential"}, "needs --include-confidential"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InputRefused, match=message.replace("(", r"\(")):
        ExportOptions(**options).check()


def test_dates_in_the_options_are_partial_and_inclusive() -> None:
    ExportOptions(since="2025", until="2025-03-01T09:30", received_since="2025-03-01Z").check()
