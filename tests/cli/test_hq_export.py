"""``fieldsync hq export`` as an analyst runs it: filters, the confidential count on stderr,
private files, the Excel and Uwazi options, refusals."""

from __future__ import annotations

import csv
import io
import json
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

from fieldsync.node import Node
from tests.cli.cli_support import Run
from tests.fieldsync.offline_support import (
    PASSPHRASE,
    Net,
    add_reports,
    copy_network,
    export,
    fields,
    ingest,
)

OK, USAGE = 0, 2


@pytest.fixture(scope="module")
def hq_net(base_net: Net, tmp_path_factory: pytest.TempPathFactory) -> Net:
    """Public, restricted (with a formula), confidential, a correction, and two reports with
    a photo each: one confidential, one public."""
    net = copy_network(base_net, tmp_path_factory.mktemp("hq-export") / "net")
    location = {"source": "gps", "lat": 12.3657123, "lon": -1.5339456, "accuracy_m": 10}
    add_reports(net.a, ["Public report."], sensitivity="public", location=location)
    [restricted] = add_reports(
        net.a,
        ['=HYPERLINK("http://evil.example","open me")'],
        categories=["threats"],
        location=location,
        consent={"share_with_hq": True, "publish": True},
    )
    add_reports(net.a, ["Confidential witness account."], sensitivity="confidential")
    add_reports(net.a, ["Corrected: threats by phone."], categories=["threats"],
                supersedes=restricted)  # fmt: skip
    node = Node(net.a)
    try:
        for name, sensitivity in (("witness-Aung.jpg", "confidential"), ("scene.JPG", "public")):
            photo = net.root / name
            photo.write_bytes(name.encode() * 500)
            node.add_report(
                fields(f"With a photo ({sensitivity}).", sensitivity=sensitivity),
                PASSPHRASE,
                [photo],
            )
    finally:
        node.close()
    export(net.a, net.usb / "a.bundle")
    assert ingest(net, net.usb / "a.bundle").new == 6
    return net


def _rows(text: str, delimiter: str = ",") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))


def test_confidential_reports_are_left_out_and_counted(
    hq_net: Net, tmp_path: Path, run: Run
) -> None:
    out = tmp_path / "r.csv"
    done = run("hq", "export", "--hq", hq_net.hq, "--format", "csv", "--out", out, "--json")
    assert done.returncode == OK, done.stderr
    assert json.loads(done.stdout) == {
        "format": "csv",
        "reports": 4,
        "left_out": {"confidential": 2, "filtered": 0},
        "media_copied": 1,
        "out": str(out),
    }
    assert "left out 2 confidential report(s); give --include-confidential" in done.stderr
    assert "copied 1 verified media file(s)" in done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = _rows(out.read_text("utf-8"))
    # Only the exported report's photo is copied, under a name that says nothing.
    copied = [p for p in (tmp_path / "media").rglob("*") if p.is_file()]
    [photo_row] = [r for r in rows if r["attachments"]]
    assert [str(p.relative_to(tmp_path)) for p in copied] == [photo_row["attachments"]]
    assert photo_row["attachments"].endswith("/01.jpg") and "scene" not in photo_row["attachments"]
    assert copied[0].read_bytes() == b"scene.JPG" * 500
    assert stat.S_IMODE(copied[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(copied[0].parent.stat().st_mode) == 0o700
    assert not any("Confidential" in r["narrative"] for r in rows)
    formula = next(r for r in rows if "HYPERLINK" in r["narrative"])
    assert formula["narrative"].startswith("'=HYPERLINK(")
    assert (formula["lat"], formula["lon"]) == ("12.37", "-1.53")  # restricted: 2 decimals
    assert formula["status"] == "superseded" and formula["superseded_by"]
    public = next(r for r in rows if r["narrative"] == "Public report.")
    assert (public["lat"], public["lon"]) == ("12.36571", "-1.53395")

    everything = run("hq", "export", "--hq", hq_net.hq, "--format", "csv", "--include-confidential",
                     "--exact-coordinates")  # fmt: skip
    assert everything.returncode == OK and "left out" not in everything.stderr
    rows = _rows(everything.stdout)
    assert len(rows) == 6 and {r["lat"] for r in rows} >= {"12.365712"}


def test_filters_and_their_count(hq_net: Net, run: Run) -> None:
    def export_(*args: str) -> subprocess.CompletedProcess[str]:
        return run("hq", "export", "--hq", hq_net.hq, "--format", "jsonl", *args)

    threats = export_("--category", "threats", "--status", "current")
    assert threats.returncode == OK
    [record] = [json.loads(line) for line in threats.stdout.splitlines()]
    assert record["narrative"].startswith("Corrected") and record["hq"]["supersedes"]
    assert "left out 3 report(s) that did not match the filters" in threats.stderr
    publish = export_("--consent", "publish")
    assert [json.loads(line)["narrative"][:1] for line in publish.stdout.splitlines()] == ["="]
    public = export_("--max-sensitivity", "public", "--since", "2025-03", "--until", "2025-03")
    assert len(public.stdout.splitlines()) == 2
    nothing = export_("--received-until", "2001", "--author", "monitor-17")
    assert nothing.returncode == OK and nothing.stdout == ""


def test_excel_semicolon_csv_and_uwazi_zip(hq_net: Net, tmp_path: Path, run: Run) -> None:
    excel = tmp_path / "excel.csv"
    done = run("hq", "export", "--hq", hq_net.hq, "--format", "csv", "--excel", "--delimiter",
               ";", "--out", excel)  # fmt: skip
    assert done.returncode == OK, done.stderr
    raw = excel.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfpublication_id;") and b"\r\n" in raw
    assert len(_rows(raw.decode("utf-8-sig"), ";")) == 4
    (tmp_path / "uwazi").mkdir()
    archive_path = tmp_path / "uwazi" / "u.zip"
    done = run("hq", "export", "--hq", hq_net.hq, "--format", "uwazi-zip", "--out", archive_path)
    assert done.returncode == OK, done.stderr
    assert stat.S_IMODE(archive_path.stat().st_mode) == 0o600
    archive = zipfile.ZipFile(archive_path)
    rows = _rows(archive.read("import.csv").decode("utf-8"))
    assert {r["location_geolocation"] for r in rows} == {"12.37|-1.53", "12.36571|-1.53395", ""}
    [photo] = [r["attachments"] for r in rows if r["attachments"]]
    assert archive.namelist() == ["import.csv", photo]  # not the confidential report's photo
    assert archive.read(photo) == b"scene.JPG" * 500
    assert not (tmp_path / "uwazi" / "media").exists()  # the ZIP holds its files
    corrected = next(r for r in rows if r["corrects"])
    assert corrected["corrects"] in {r["publication_id"] for r in rows}


@pytest.mark.parametrize(
    ("args", "code", "phrase"),
    [
        (["--format", "geojson", "--excel"], USAGE, "--excel is for --format csv"),
        (["--format", "uwazi-zip"], USAGE, "give --out FILE"),
        (["--format", "csv", "--delimiter", "|"], USAGE, "'|' is not one of"),
        (["--format", "csv", "--since", "yesterday"], USAGE, "--since 'yesterday'"),
        (["--format", "csv", "--max-sensitivity", "confidential"], USAGE,
         "needs --include-confidential"),
        (["--format", "csv", "--status", "deleted"], USAGE, "'deleted' is not one of"),
    ],
)  # fmt: skip
def test_refusals_name_the_option(
    hq_net: Net, run: Run, args: list[str], code: int, phrase: str
) -> None:
    done = run("hq", "export", "--hq", hq_net.hq, *args)
    assert done.returncode == code and phrase in done.stderr, done.stderr
    assert done.stdout == ""
