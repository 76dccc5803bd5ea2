"""The ``fieldsync`` command line: the issue's commands exactly as written, in real processes;
``--json`` everywhere (errors too); documented exit codes; passphrases from the environment,
a file or a hidden prompt on a real terminal; the interactive ``report add``; the demo.

Fast argument-parsing checks use click's ``CliRunner``; everything else runs the installed
``fieldsync`` console script as a separate process, as a user would.
"""

from __future__ import annotations

import csv
import io
import json
import os
import select
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fieldsync_cli.cmd_hq import _ranges
from fieldsync_cli.main import COMMANDS, main
from tests.cli.cli_support import Run, clean_env, fieldsync_command
from tests.fieldsync.offline_support import PASSPHRASE, Net, add_reports, export, open_hq, snapshot

# README "Exit codes"
OK, ERROR, USAGE, REFUSED, NOT_FOUND = 0, 1, 2, 3, 4
NOT_INITIALISED, WRONG_PASSPHRASE, INTERRUPTED = 10, 12, 130


def add_x(*extra: str, category: str = "threats-harassment") -> list[str]:
    """``report add`` of a minimal report ("x"), plus ``extra`` options."""
    minimal = ["--narrative", "x", "--category", category, "--occurred", "2025"]
    return ["report", "add", *minimal, *extra]


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    """The single JSON document a ``--json`` run printed on stdout."""
    return json.loads(done.stdout)


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == OK, f"exit {done.returncode}: {done.stderr}"
    return done


def _fails(done: subprocess.CompletedProcess[str], code: int, phrase: str) -> None:
    assert done.returncode == code, f"exit {done.returncode} (wanted {code}): {done.stderr}"
    assert done.stderr.startswith("fieldsync: error: "), done.stderr
    assert phrase in done.stderr, done.stderr


# --- argument parsing (CliRunner: fast, in process) ---------------------------------------


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner(
        env={"FIELDSYNC_HOME": None, "FIELDSYNC_PASSPHRASE": None, "FIELDSYNC_HQ": None}
    )


def test_help_lists_every_command_and_each_has_help(cli: CliRunner) -> None:
    result = cli.invoke(main, ["--help"])
    assert result.exit_code == OK
    for name in COMMANDS:
        assert name in result.stdout
    for args in (
        ["network", "create"],
        ["init"],
        ["join"],
        ["status"],
        ["report", "add"],
        ["report", "list"],
        ["report", "show"],
        ["bundle", "export"],
        ["bundle", "import"],
        ["hq", "enroll"],
        ["hq", "ingest"],
        ["hq", "export"],
        ["hq", "receipts"],
    ):
        helped = cli.invoke(main, [*args, "--help"])
        assert helped.exit_code == OK, args
        assert "--json" in helped.stdout, f"{args} has no --json"


def test_version(cli: CliRunner) -> None:
    result = cli.invoke(main, ["--version"])
    assert result.exit_code == OK and "0.1.0" in result.stdout


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["bogus"], "No such command"),
        (["--bogus", "status"], "No such option"),
        (["network", "create", "--out", "x"], "Missing option '--name'"),
        (["hq", "export", "--hq", "x", "--format", "xml"], "'xml' is not one of"),
        (["hq", "enroll", "--hq", "x", "--out", "y"], "Missing argument"),
        (["report", "add", "--lat", "north"], "is not a valid float"),
        (["report", "add", "--sensitivity", "secret"], "'secret' is not one of"),
        (["init", "--kdf-profile", "none"], "'none' is not one of"),
    ],
)
def test_usage_errors_exit_2_and_answer_json(cli: CliRunner, args: list[str], phrase: str) -> None:
    plain = cli.invoke(main, args)
    assert plain.exit_code == USAGE
    assert phrase in plain.stderr and plain.stdout == ""
    as_json = cli.invoke(main, [*args, "--json"])
    assert as_json.exit_code == USAGE
    error = json.loads(as_json.stdout)
    assert error["kind"] == "UsageError" and error["exit_code"] == USAGE
    assert phrase in error["error"]


def test_a_directory_is_not_a_bundle_file(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(
        main, ["--home", str(tmp_path), "bundle", "import", str(tmp_path), "--json"]
    )
    assert result.exit_code == USAGE
    assert "is a directory" in json.loads(result.stdout)["error"]


def test_gap_ranges_are_compact() -> None:
    assert _ranges([{"first": 2, "last": 2, "count": 1}]) == "2"
    ranges = [
        {"first": 2, "last": 4, "count": 3},
        {"first": 7, "last": 10**12, "count": 10**12 - 6},
    ]
    assert _ranges(ranges) == "2-4 (3), 7-1000000000000 (999,999,999,994)"


def test_report_add_refusals_before_any_passphrase(cli: CliRunner, net: Net) -> None:
    home = ["--home", str(net.a)]
    no_fields = cli.invoke(main, [*home, "report", "add", "--json"])  # stdin is not a terminal
    assert no_fields.exit_code == REFUSED
    assert (
        "give at least --narrative, --category and --occurred"
        in json.loads(no_fields.stdout)["error"]
    )
    no_when = cli.invoke(
        main, [*home, "report", "add", "--narrative", "x", "--category", "threats-harassment"]
    )
    assert no_when.exit_code == REFUSED
    assert "--occurred: This field is required." in no_when.stderr
    missing = cli.invoke(main, [*home, "report", "add", "--json-file", str(net.root / "nope.json")])
    assert missing.exit_code == NOT_FOUND
    for name, content, phrase in (
        ("bad.json", "{not json", "is not valid JSON"),
        ("list.json", "[1, 2]", "must hold a JSON object"),
    ):
        path = net.root / name
        path.write_text(content)
        result = cli.invoke(main, [*home, "report", "add", "--json-file", str(path)])
        assert result.exit_code == REFUSED and phrase in result.stderr
    on_relay = cli.invoke(
        main,
        ["--home", str(net.b), *add_x()],
        env={"FIELDSYNC_PASSPHRASE": PASSPHRASE},
    )
    assert on_relay.exit_code == ERROR and "relay-only" in on_relay.stderr
    assert snapshot(net.a)["outbox"] == []


def test_report_add_validation_errors_name_the_field(cli: CliRunner, net: Net) -> None:
    result = cli.invoke(
        main,
        ["--home", str(net.a), *add_x("--json", category="Bad Key")],
        env={"FIELDSYNC_PASSPHRASE": PASSPHRASE},
    )
    assert result.exit_code == REFUSED
    error = json.loads(result.stdout)["error"]
    assert "--category: Unknown category 'Bad Key'; choose from: unclassified," in error
    only_lat = cli.invoke(
        main,
        ["--home", str(net.a), *add_x("--lat", "12.5")],
        env={"FIELDSYNC_PASSPHRASE": PASSPHRASE},
    )
    assert only_lat.exit_code == REFUSED
    assert "--lat/--lon/--accuracy: Give both latitude and longitude" in only_lat.stderr


def test_report_show_and_list_in_process(cli: CliRunner, net: Net) -> None:
    (report_id,) = add_reports(net.a, ["one"])
    home = ["--home", str(net.a)]
    secret = {"FIELDSYNC_PASSPHRASE": PASSPHRASE}
    shown = cli.invoke(main, [*home, "report", "show", report_id[:13], "--json"], env=secret)
    assert shown.exit_code == OK
    assert json.loads(shown.stdout)["id"] == report_id
    assert json.loads(shown.stdout)["status"] == "sealed"
    human = cli.invoke(main, [*home, "report", "show", report_id], env=secret)
    assert human.exit_code == OK and report_id in human.stdout
    absent = cli.invoke(main, [*home, "report", "show", "ffff", "--json"], env=secret)
    assert absent.exit_code == NOT_FOUND and json.loads(absent.stdout)["kind"] == "NotFound"
    listed = cli.invoke(main, [*home, "report", "list"], env=secret)
    assert (
        listed.exit_code == OK and listed.stdout.startswith(report_id) and "sealed" in listed.stdout
    )
    wrong = cli.invoke(main, [*home, "report", "list"], env={"FIELDSYNC_PASSPHRASE": "nope" * 4})
    assert wrong.exit_code != OK and report_id not in wrong.output
    relay = cli.invoke(main, ["--home", str(net.b), "report", "list"], env=secret)
    assert relay.exit_code == ERROR and "relay-only" in relay.stderr


def test_status_human_and_json(cli: CliRunner, net: Net, tmp_path: Path) -> None:
    human = cli.invoke(main, ["--home", str(net.b), "status"])
    assert human.exit_code == OK
    assert "(relay)" in human.stdout and "test-net" in human.stdout and "tombstones" in human.stdout
    data = json.loads(cli.invoke(main, ["--home", str(net.a), "status", "--json"]).stdout)
    assert data["role"] == "author" and data["joined"] is True
    for key in ("items", "items_total", "outbox", "tombstones", "disk_bytes", "network_id", "node"):
        assert key in data
    not_a_node = cli.invoke(main, ["--home", str(tmp_path / "nothing"), "status", "--json"])
    assert not_a_node.exit_code == NOT_INITIALISED
    assert json.loads(not_a_node.stdout)["kind"] == "NotInitialised"
    assert "fieldsync --home" in not_a_node.stderr and "init" in not_a_node.stderr


def test_home_from_the_environment(cli: CliRunner, net: Net) -> None:
    result = cli.invoke(main, ["status", "--json"], env={"FIELDSYNC_HOME": str(net.b)})
    assert result.exit_code == OK and json.loads(result.stdout)["home"] == str(net.b)


def test_exit_codes_of_typed_errors(cli: CliRunner, net: Net, tmp_path: Path) -> None:
    home_a = ["--home", str(net.a)]
    again = cli.invoke(main, [*home_a, "init", "--json"])
    assert again.exit_code == ERROR and json.loads(again.stdout)["kind"] == "FieldsyncError"
    wrong = cli.invoke(
        main,
        [*home_a, *add_x("--json")],
        env={"FIELDSYNC_PASSPHRASE": "not the passphrase"},
    )
    assert wrong.exit_code == WRONG_PASSPHRASE
    assert json.loads(wrong.stdout) == {
        "error": "wrong passphrase for author key",
        "kind": "WrongPassphrase",
        "exit_code": WRONG_PASSPHRASE,
    }
    missing_enrolment = cli.invoke(main, [*home_a, "join", str(tmp_path / "nope.txt")])
    assert missing_enrolment.exit_code == NOT_FOUND
    missing_request = cli.invoke(
        main,
        [
            "hq",
            "enroll",
            str(tmp_path / "nope.txt"),
            "--hq",
            str(net.hq),
            "--out",
            str(tmp_path / "e"),
        ],
    )
    assert missing_request.exit_code == NOT_FOUND
    not_joined = cli.invoke(
        main, ["--home", str(tmp_path / "x"), "bundle", "export", str(tmp_path / "f")]
    )
    assert not_joined.exit_code == NOT_INITIALISED
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("hello")
    bad_enrolment = cli.invoke(main, ["--home", str(net.b), "join", str(garbage), "--json"])
    assert bad_enrolment.exit_code == REFUSED
    assert "enrolment refused" in json.loads(bad_enrolment.stdout)["error"]


def test_passphrase_needed_without_a_terminal(cli: CliRunner, net: Net, tmp_path: Path) -> None:
    result = cli.invoke(
        main,
        ["--home", str(net.a), *add_x("--json")],
    )
    assert result.exit_code == ERROR
    assert json.loads(result.stdout)["error"] == (
        "your author key needs a passphrase: use --passphrase-file FILE or set FIELDSYNC_PASSPHRASE"
    )
    unreadable = cli.invoke(
        main,
        [
            "hq",
            "receipts",
            "--hq",
            str(net.hq),
            "--out",
            str(tmp_path / "r"),
            "--passphrase-file",
            str(tmp_path / "missing"),
        ],
    )
    assert unreadable.exit_code == ERROR and "cannot read passphrase file" in unreadable.stderr


# A table, one row per command (argv, error kind, exit code): kept one row a line.
@pytest.mark.parametrize(
    ("args", "kind", "code"),
    [
        (["network", "create", "--name", "x", "--out", "{hq}"], "FieldsyncError", ERROR),
        (["--home", "{a}", "init"], "FieldsyncError", ERROR),
        (["--home", "{a}", "join", "{missing}"], "NotFound", NOT_FOUND),
        (["--home", "{nothing}", "status"], "NotInitialised", NOT_INITIALISED),
        (["--home", "{nothing}", *add_x()], "NotInitialised", NOT_INITIALISED),
        (["--home", "{nothing}", "report", "list"], "NotInitialised", NOT_INITIALISED),
        (["--home", "{nothing}", "report", "show", "0"], "NotInitialised", NOT_INITIALISED),
        (["--home", "{nothing}", "bundle", "export", "{missing}"], "NotInitialised",
         NOT_INITIALISED),
        (["--home", "{b}", "bundle", "import", "{missing}"], "NotFound", NOT_FOUND),
        (["hq", "enroll", "{missing}", "--hq", "{hq}", "--out", "{missing}"], "NotFound",
         NOT_FOUND),
        (["hq", "ingest", "--hq", "{nothing}", "{missing}"], "NotFound", NOT_FOUND),
        (["hq", "export", "--hq", "{nothing}", "--format", "csv"], "NotFound", NOT_FOUND),
        (["hq", "receipts", "--hq", "{nothing}", "--out", "{missing}"], "NotFound", NOT_FOUND),
    ],
    ids=lambda v: "-".join(a for a in v if a[0] not in "-{") if isinstance(v, list) else None,
)  # fmt: skip
def test_every_command_answers_errors_in_json(
    cli: CliRunner, net: Net, args: list[str], kind: str, code: int
) -> None:
    paths = {
        "hq": net.hq,
        "a": net.a,
        "b": net.b,
        "nothing": net.root / "nothing",
        "missing": net.root / "missing.file",
    }
    argv = [a.format(**paths) for a in args]
    result = cli.invoke(main, [*argv, "--json"], env={"FIELDSYNC_PASSPHRASE": PASSPHRASE})
    assert result.exit_code == code, result.stderr
    error = json.loads(result.stdout)
    assert (error["kind"], error["exit_code"]) == (kind, code)
    assert result.stderr == f"fieldsync: error: {error['error']}\n"


def test_ingest_prints_rejections_forks_and_gaps_per_author(net: Net, run: Run) -> None:
    from tests.fieldsync.offline_support import author_seed, hq_manifest, seal, write_bundle

    manifest, seed = hq_manifest(net), author_seed(net)
    items = [
        seal(manifest, seed, 1, "one").item,
        seal(manifest, seed, 1, "another one").item,  # fork
        seal(manifest, seed, 4, "four").item,  # gap: 2, 3
        seal(manifest, bytes(range(32)), 1, "stranger").item,  # never enrolled
    ]
    write_bundle(net, net.usb / "mixed.bundle", items)
    done = run("hq", "ingest", "--hq", net.hq, net.usb / "mixed.bundle")
    assert done.returncode == 8, done.stderr  # new alerts: the attention code
    lines = done.stderr.splitlines()
    assert lines[0] == (
        "ingested 4 envelopes: 2 new, 0 duplicate, 1 forks, 1 held in quarantine, 0 junk dropped"
    )
    assert "  held 1: report is signed by an author key HQ never enrolled" in lines
    assert any(line.startswith("  ALERT 1 fork monitor-17: envelopes ") for line in lines)
    assert any(line.startswith("  ALERT 2 quarantined -: held in quarantine: ") for line in lines)
    # The gap names the author as the fork does: by name, not by key.
    assert "  gap: monitor-17 is missing sequence numbers 2-3 (2)" in lines
    assert lines[-1].startswith("ATTENTION: 3 new alert(s)")


def test_output_paths_that_cannot_be_written(net: Net, run: Run) -> None:
    add_reports(net.a, ["one"])
    export(net.a, net.usb / "a.bundle")
    _ok(run("hq", "ingest", "--hq", net.hq, net.usb / "a.bundle"))
    missing_dir = net.root / "no-such-dir"
    for args in (
        ["--home", net.a, "bundle", "export", missing_dir / "a.bundle"],
        ["hq", "receipts", "--hq", net.hq, "--out", missing_dir / "r.bundle"],
        ["hq", "export", "--hq", net.hq, "--format", "csv", "--out", missing_dir / "r.csv"],
    ):
        done = run(*args, "--json")
        assert done.returncode == NOT_FOUND, done.stderr
        assert _json(done)["error"].endswith(f"directory {missing_dir} does not exist")
    with open_hq(net) as headquarters:  # receipts were not issued for nothing
        assert headquarters.database().execute("SELECT count(*) FROM receipts").fetchone()[0] == 0
    if Path("/proc/self").is_dir():  # a directory nobody can create files in, even root
        done = run("--home", net.a, "bundle", "export", "/proc/self/a.bundle", "--json")
        assert done.returncode == ERROR
        assert _json(done)["kind"] == "OSError"
        assert done.stderr.startswith("fieldsync: error: ") and "Traceback" not in done.stderr


def test_bundle_import_from_a_pipe(net: Net) -> None:
    add_reports(net.a, ["one"])
    export(net.a, net.usb / "a.bundle")
    command = [
        *fieldsync_command(),
        "--home",
        str(net.b),
        "bundle",
        "import",
        "/dev/stdin",
        "--json",
    ]
    with open(net.usb / "a.bundle", "rb") as stdin:
        done = subprocess.run(
            command, stdin=stdin, capture_output=True, env=clean_env(), check=False
        )
    assert done.returncode == OK, done.stderr
    assert json.loads(done.stdout)["new"] == 1
    empty = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, env=clean_env(), check=False
    )
    assert empty.returncode == REFUSED and b"the file is empty" in empty.stderr


# --- the issue's command list, exactly as written, in real processes ----------------------


def test_the_offline_loop_as_written_in_the_issue(tmp_path: Path, run: Run) -> None:
    """``fieldsync network create`` … ``status --json``: every command of issue 2, for real."""
    hq, a, b = tmp_path / "HQ", tmp_path / "A", tmp_path / "B"
    usb = tmp_path / "usb"
    usb.mkdir()
    secret_file = tmp_path / "passphrase.txt"
    secret_file.write_text(PASSPHRASE + "\n")

    created = _json(_ok(run("network", "create", "--name", "field-net", "--out", hq, "--json")))
    assert created["name"] == "field-net" and created["root_fingerprint"].startswith("root:")
    assert (
        "root fingerprint"
        in run("network", "create", "--name", "x", "--out", tmp_path / "HQ2").stderr
    )

    request_a = _ok(run("--home", a, "init", "--author", "monitor-17")).stdout.strip()
    assert request_a == str(a / "request.txt")
    request_b = _json(_ok(run("--home", b, "init", "--json", passphrase=None)))["request"]

    enrolled_a = _json(
        _ok(run("hq", "enroll", request_a, "--hq", hq, "--out", usb / "enrol-a.txt", "--json"))
    )
    assert enrolled_a["role"] == "author" and enrolled_a["author_name"] == "monitor-17"
    _ok(
        run(
            "hq",
            "enroll",
            request_b,
            "--hq",
            hq,
            "--out",
            usb / "enrol-b.txt",
            "--passphrase-file",
            secret_file,
            passphrase=None,
        )
    )
    joined = _json(_ok(run("--home", a, "join", usb / "enrol-a.txt", "--json", passphrase=None)))
    assert joined == {
        "network": "field-net",
        "role": "author",
        "root_fingerprint": created["root_fingerprint"],
    }
    assert (
        "compare HQ's root fingerprint" in _ok(run("--home", b, "join", usb / "enrol-b.txt")).stderr
    )

    first = _ok(
        run(
            "--home",
            a,
            "report",
            "add",
            "--narrative",
            "Three traders detained at the market.",
            "--category",
            "arbitrary-detention",
            "--category",
            "threats-harassment",
            "--occurred",
            "2025-03-01T09:30Z",
            "--approximate",
            "--title",
            "Market detentions",
            "--place",
            "Central market",
            "--lat",
            "12.3657",
            "--lon",
            "-1.5339",
            "--accuracy",
            "50",
            "--sensitivity",
            "confidential",
            "--language",
            "fr",
        )
    ).stdout.strip()
    json_file = tmp_path / "report.json"
    json_file.write_text(
        json.dumps(
            {
                "narrative": "Journalist threatened.",
                "categories": ["threats-harassment"],
                "occurred": {"start": "2025-03-02", "precision": "day", "approximate": False},
            }
        )
    )
    second = _json(
        _ok(
            run(
                "--home",
                a,
                "report",
                "add",
                "--json-file",
                json_file,
                "--sensitivity",
                "internal",
                "--json",
                passphrase=None,
                env=clean_env(FIELDSYNC_PASSPHRASE=PASSPHRASE),
            )
        )
    )
    assert second["status"] == "sealed"
    listed = _json(_ok(run("--home", a, "report", "list", "--json")))
    assert [(r["id"], r["sequence"], r["status"]) for r in listed] == [
        (first, 1, "sealed"),
        (second["id"], 2, "sealed"),
    ]
    assert all(r["created"].endswith("Z") and r["delivered"] is None for r in listed)

    exported = _json(_ok(run("--home", a, "bundle", "export", usb / "a.bundle", "--json")))
    assert exported["items"] == 3
    imported = _json(_ok(run("--home", b, "bundle", "import", usb / "a.bundle", "--json")))
    assert (imported["new"], imported["duplicate"], imported["items_in_file"]) == (2, 1, 3)
    _ok(run("--home", b, "bundle", "export", usb / "b.bundle"))

    ingested = _ok(run("hq", "ingest", "--hq", hq, usb / "b.bundle", usb / "a.bundle"))
    assert (
        "ingested 4 envelopes: 2 new, 2 duplicate, 0 forks, 0 held in quarantine, 0 junk dropped"
        in ingested.stderr
    )
    again = _json(_ok(run("hq", "ingest", "--hq", hq, usb / "b.bundle", "--json")))
    assert (again["new"], again["duplicate"], again["quarantined"], again["forks"]) == (0, 2, 0, 0)
    assert (again["junk"], again["gaps"], again["alerts"]) == (0, {}, [])

    everything = ("--include-confidential", "--exact-coordinates", "--device-ids")
    for fmt in ("jsonl", "csv", "geojson", "uwazi-csv"):
        args = ("hq", "export", "--hq", hq, "--format", fmt)
        to_stdout = _ok(run(*args, *everything))
        out = tmp_path / f"reports.{fmt}"
        meta = _json(_ok(run(*args, *everything, "--out", out, "--json")))
        assert (meta["format"], meta["reports"], meta["out"]) == (fmt, 2, str(out))
        assert out.read_text(encoding="utf-8") == to_stdout.stdout
        default = _json(_ok(run(*args, "--out", tmp_path / f"default.{fmt}", "--json")))
        assert (default["reports"], default["left_out"]["confidential"]) == (1, 1)
    records = [json.loads(line) for line in (tmp_path / "reports.jsonl").read_text().splitlines()]
    market = next(r for r in records if r["id"] == first)
    assert market["categories"] == ["arbitrary-detention", "threats-harassment"]
    assert market["occurred"] == {
        "start": "2025-03-01T09:30Z",
        "precision": "minute",
        "approximate": True,
    }
    assert market["location"] == {
        "source": "gps",
        "place": "Central market",
        "lat": 12.3657,
        "lon": -1.5339,
        "accuracy_m": 50.0,
    }
    assert (market["sensitivity"], market["language"], market["title"]) == (
        "confidential",
        "fr",
        "Market detentions",
    )
    assert market["hq"]["author_name"] == "monitor-17"
    rows = list(csv.DictReader(io.StringIO((tmp_path / "reports.csv").read_text(), newline="")))
    assert {r["report_id"] for r in rows} == {first, second["id"]}
    features = json.loads((tmp_path / "reports.geojson").read_text())["features"]
    geometry = {f["properties"]["report_id"]: f["geometry"] for f in features}
    assert geometry == {
        first: {"type": "Point", "coordinates": [-1.5339, 12.3657]},
        second["id"]: None,
    }
    uwazi = list(
        csv.DictReader(io.StringIO((tmp_path / "reports.uwazi-csv").read_text(), newline=""))
    )
    assert {r["location_geolocation"] for r in uwazi} == {"12.365700|-1.533900", ""}

    made = _json(_ok(run("hq", "receipts", "--hq", hq, "--out", usb / "receipts.bundle", "--json")))
    assert made == {
        "out": str(usb / "receipts.bundle"),
        "receipts_new": 1,
        "receipts_total": 1,
        "envelopes_receipted": 2,
    }
    at_b = _json(_ok(run("--home", b, "bundle", "import", usb / "receipts.bundle", "--json")))
    assert (at_b["purged"], at_b["receipts_applied"]) == (2, 1)
    at_a = _ok(run("--home", a, "bundle", "import", usb / "receipts.bundle"))
    assert "2 of your reports now delivered" in at_a.stderr

    delivered = _json(_ok(run("--home", a, "report", "list", "--json")))
    assert {r["status"] for r in delivered} == {"delivered"}
    assert all(r["delivered"] for r in delivered)
    status_a = _json(_ok(run("--home", a, "status", "--json")))
    assert status_a["outbox"] == {"sealed": 0}  # the rest is the author's: report list
    status_b = _json(_ok(run("--home", b, "status", "--json")))
    assert status_b["items"]["envelope"] == 0 and status_b["tombstones"] == 2
    assert status_b["role"] == "relay" and status_b["network"] == "field-net"


def test_errors_in_real_processes(tmp_path: Path, run: Run, net: Net) -> None:
    done = run("--home", tmp_path / "nothing", "status")
    _fails(done, NOT_INITIALISED, "is not a fieldsync node")
    assert done.stdout == ""
    as_json = run("--home", tmp_path / "nothing", "status", "--json")
    assert as_json.returncode == NOT_INITIALISED
    assert _json(as_json)["kind"] == "NotInitialised"
    wrong = run("--home", net.a, *add_x(), passphrase="wrong passphrase")
    _fails(wrong, WRONG_PASSPHRASE, "wrong passphrase for author key")
    _fails(
        run("hq", "ingest", "--hq", net.hq, tmp_path / "none.bundle"), NOT_FOUND, "does not exist"
    )
    usage = run("hq", "ingest", "--json")
    assert usage.returncode == USAGE and _json(usage)["kind"] == "UsageError"
    needs = run("hq", "receipts", "--hq", net.hq, "--out", tmp_path / "r", passphrase=None)
    _fails(
        needs, ERROR, "needs a passphrase: use --passphrase-file FILE or set FIELDSYNC_PASSPHRASE"
    )


# --- a real terminal ----------------------------------------------------------------------


class Terminal:
    """A child process on a pseudo-terminal that is its controlling terminal (stdlib only)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=_make_controlling_terminal,  # after setsid
        )
        os.close(slave)
        self.seen = b""  # output not yet matched by expect()
        self.transcript = b""  # everything the child wrote

    def expect(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        needle = text.encode()
        while needle not in self.seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out waiting for {text!r}; saw {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                chunk = self._read()
                assert chunk, f"terminal closed before {text!r}; saw {self.seen!r}"
        self.seen = self.seen[self.seen.index(needle) + len(needle) :]

    def _read(self) -> bytes:
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        self.seen += chunk
        self.transcript += chunk
        return chunk

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def finish(self, timeout: float = 60) -> tuple[int, bytes]:
        """Read everything until the child exits; return its exit code and the full output."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "child did not finish"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready and not self._read():
                break
        os.close(self.master)
        return self.proc.wait(timeout=timeout), self.transcript


def _make_controlling_terminal() -> None:
    import fcntl

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_hidden_passphrase_prompt_on_a_terminal(tmp_path: Path) -> None:
    typed = "a passphrase nobody sees"
    term = Terminal(
        [
            *fieldsync_command(),
            "--home",
            str(tmp_path / "A"),
            "init",
            "--author",
            "monitor-3",
            "--kdf-profile",
            "interactive",
        ],
        clean_env(),
    )
    term.expect("Passphrase for the new author key of 'monitor-3': ")
    term.send(typed + "\n")
    term.expect("Repeat for confirmation: ")
    term.send(typed + "\n")
    code, transcript = term.finish()
    assert code == OK, transcript
    assert typed.encode() not in transcript, "the passphrase was echoed"
    from fieldsync.node import Node

    assert len(Node(tmp_path / "A").unlock_author(typed)) == 32


def test_ctrl_c_at_the_prompt_exits_130(tmp_path: Path) -> None:
    term = Terminal(
        [*fieldsync_command(), "--home", str(tmp_path / "A"), "init", "--author", "x", "--json"],
        clean_env(),
    )
    term.expect("Passphrase for the new author key")
    term.send("\x03")
    code, transcript = term.finish()
    assert code == INTERRUPTED, transcript
    assert b'"kind": "Interrupted"' in transcript and b"fieldsync: error: cancelled" in transcript
    assert not (tmp_path / "A").exists()


def test_wrong_passphrase_at_the_prompt_exits_12(net: Net) -> None:
    term = Terminal(
        [*fieldsync_command(), "--home", str(net.a), *add_x()],
        clean_env(),
    )
    for _ in range(3):  # asked again twice, the answers kept (tests/cli/test_report_form.py)
        term.expect("Passphrase for your author key: ")
        term.send("not the right one\n")
    code, transcript = term.finish()
    assert code == WRONG_PASSPHRASE and b"wrong passphrase" in transcript


def test_long_work_shows_progress_on_a_terminal(net: Net) -> None:
    add_reports(net.a, ["one"])
    term = Terminal(
        [*fieldsync_command(), "--home", str(net.a), "bundle", "export", str(net.usb / "a.bundle")],
        clean_env(),
    )
    code, transcript = term.finish()
    assert code == OK, transcript
    assert b"export: 100%" in transcript and b"exported 2 items" in transcript


# --- the demo -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["auto", "loopback"])
def test_demo_runs_to_completion(variant: str) -> None:
    """``auto``: in network namespaces as root with ``ip``, else on loopback (as ``loopback``,
    which forces it, so a root run covers both; without root both run on loopback)."""
    extra = {"FIELDSYNC_DEMO_LOOPBACK": "1"} if variant == "loopback" else {}
    with subprocess.Popen(
        [sys.executable, "-m", "fieldsync_cli.demo"],
        env=clean_env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as demo:
        stdout, stderr = demo.communicate(timeout=300)
    assert demo.returncode == OK, stdout + stderr
    steps = [line for line in stdout.splitlines() if line.startswith("[")]
    assert [line[:4] for line in steps] == [f"[{n:2d}]" for n in range(1, len(steps) + 1)]
    assert len(steps) >= 16, "every step prints one line"
    assert "demo complete: reports crossed A → B → HQ" in stdout
    assert "B holds 0 reports" in stdout and "delivered" in stdout
    assert "network demo complete" in stdout
    if variant == "loopback":
        assert "running on loopback with static peers, no discovery" in stdout
    elif "real zeroconf inside network namespaces" in stdout:
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
        assert f"fsdemo{demo.pid}-" not in left.stdout, "the demo left namespaces behind"


def test_attach_and_show_delivery_progress(cli: CliRunner, net: Net, tmp_path: Path) -> None:
    """--attach (repeatable); report show lists each attachment's size and chunks receipted
    of total, with names sealed on the node unless --names opens them with the passphrase."""
    photo = tmp_path / "burned-house.jpg"
    photo.write_bytes(b"\xff\xd8" + bytes(range(256)) * 2000)
    note = tmp_path / "witness.ogg"
    note.write_bytes(b"OggS" + bytes(700_000))
    home = ["--home", str(net.a)]
    added = cli.invoke(
        main,
        [*home, "report", "add", "--narrative", "house burned", "--category",
         "property-destruction", "--occurred", "2025-03-01", "--attach", str(photo),
         "--attach", str(note), "--json"],
        env={"FIELDSYNC_PASSPHRASE": PASSPHRASE},
    )  # fmt: skip
    assert added.exit_code == OK, added.output
    report_id = json.loads(added.stdout)["id"]
    assert json.loads(added.stdout)["attachments"] == 2
    locked = cli.invoke(main, [*home, "report", "show", report_id, "--json"])
    assert locked.exit_code != OK  # sealed to the author's key: no passphrase, nothing shown
    assert "burned-house.jpg" not in locked.output and report_id not in locked.output
    secret = {"FIELDSYNC_PASSPHRASE": PASSPHRASE}
    shown = cli.invoke(main, [*home, "report", "show", report_id[:8], "--json"], env=secret)
    attachments = json.loads(shown.stdout)["attachments"]
    assert [(a["name"], a["size"], a["receipted"], a["chunks"]) for a in attachments] == [
        ("burned-house.jpg", photo.stat().st_size, 0, 2),
        ("witness.ogg", 700_004, 0, 3),
    ]
    human = cli.invoke(main, [*home, "report", "show", report_id], env=secret)
    assert "witness.ogg" in human.stdout and "0/3 chunks receipted" in human.stdout
    missing = cli.invoke(
        main, [*home, "report", "add", "--narrative", "x", "--category", "property-destruction",
               "--occurred", "2025", "--attach", str(tmp_path / "nope.jpg")],
        env={"FIELDSYNC_PASSPHRASE": PASSPHRASE},
    )  # fmt: skip
    assert missing.exit_code == NOT_FOUND and "nope.jpg does not exist" in missing.output
    listed = cli.invoke(main, [*home, "report", "list", "--json"], env=secret)
    assert len(json.loads(listed.stdout)) == 1


def test_bundle_export_max_size(cli: CliRunner, net: Net, tmp_path: Path) -> None:
    from fieldsync_cli.cmd_bundle import parse_size

    assert [parse_size(t) for t in ("4G", "700M", "512k", "1000", "2GiB")] == [
        4 << 30, 700 << 20, 512 << 10, 1000, 2 << 30,
    ]  # fmt: skip
    add_reports(net.a, ["one", "two"])
    home = ["--home", str(net.a)]
    out = tmp_path / "stick.bundle"
    done = cli.invoke(main, [*home, "bundle", "export", str(out), "--max-size", "4G", "--json"])
    assert done.exit_code == OK, done.output
    data = json.loads(done.stdout)
    assert data["items"] == 3 and data["files"] == [{"file": str(out), "items": 3}]
    bad = cli.invoke(main, [*home, "bundle", "export", str(tmp_path / "x"), "--max-size", "lots"])
    assert bad.exit_code == USAGE and "not a size like 4G" in bad.output
    tiny = cli.invoke(main, [*home, "bundle", "export", str(tmp_path / "y"), "--max-size", "1K"])
    assert tiny.exit_code != OK and "--max-size must be at least" in tiny.output
