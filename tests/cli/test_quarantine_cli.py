"""``fieldsync hq quarantine list|show|reingest`` and what the author's device shows (issue 7
"Must show": an author removed at HQ while its report is in flight). Real processes, real
files: the operator removes the author the only way there is today (deleting its row).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.cli.cli_support import Run
from tests.fieldsync.offline_support import Net, add_reports, hq_db_connect

NOT_FOUND = 4
ATTENTION = 8
USAGE = 2
WRONG_PASSPHRASE = 12


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _hq_sql(net: Net, statement: str, *args: object) -> list[tuple[Any, ...]]:
    conn = hq_db_connect(net.hq)
    try:
        return conn.execute(statement, args).fetchall()
    finally:
        conn.close()


def _statuses(run: Run, home: Path) -> list[str]:
    return [r["status"] for r in _json(run("--home", home, "report", "list", "--json"))]


def test_a_report_of_a_removed_author_is_held_then_delivered_after_reingest(
    net: Net, run: Run
) -> None:
    (report_id,) = add_reports(net.a, ["written before HQ removed this author"])
    _json(run("--home", net.a, "bundle", "export", net.usb / "a.bundle", "--json"))
    (author_row,) = _hq_sql(net, "SELECT * FROM authors")
    _hq_sql(net, "DELETE FROM authors")  # the operator "revokes" the author

    held = run("hq", "ingest", "--hq", net.hq, net.usb / "a.bundle", "--json")
    assert held.returncode == ATTENTION, held.stderr  # a held envelope is a new alert
    ingested = json.loads(held.stdout)
    assert (ingested["new"], ingested["quarantined"], ingested["failed"]) == (0, 1, 0)
    (alert,) = ingested["alerts"]
    assert alert["kind"] == "quarantined" and "never enrolled" in alert["detail"]

    (entry,) = _json(run("hq", "quarantine", "list", "--hq", net.hq, "--json"))
    assert entry["id"] == 1 and "never enrolled" in entry["reason"]
    shown = _json(run("hq", "quarantine", "show", "1", "--hq", net.hq, "--json"))
    assert shown == entry
    human = run("hq", "quarantine", "list", "--hq", net.hq)
    assert human.returncode == 0 and "never enrolled" in human.stdout
    missing = run("hq", "quarantine", "show", "99", "--hq", net.hq, "--json")
    assert missing.returncode == NOT_FOUND
    assert "no envelope 99 in the quarantine" in json.loads(missing.stdout)["error"]

    # Held is receipted (relays delete it) but the author's device does not say delivered.
    _json(run("hq", "receipts", "--hq", net.hq, "--out", net.usb / "r1.bundle", "--json"))
    imported = _json(run("--home", net.a, "bundle", "import", net.usb / "r1.bundle", "--json"))
    assert (imported["held_own"], imported["delivered_own"], imported["purged"]) == (1, 0, 1)
    assert _statuses(run, net.a) == ["held"]
    listed = run("--home", net.a, "report", "list")
    assert f"{report_id}" in listed.stdout and "held at HQ" in listed.stdout
    assert "delivered" not in listed.stdout

    # Refusals first: no IDs, unknown ID, wrong passphrase; nothing changes.
    assert run("hq", "quarantine", "reingest", "--hq", net.hq).returncode == USAGE
    assert run("hq", "quarantine", "reingest", "1", "--all", "--hq", net.hq).returncode == USAGE
    unknown = run("hq", "quarantine", "reingest", "42", "--hq", net.hq, "--json")
    assert unknown.returncode == NOT_FOUND
    wrong = run("hq", "quarantine", "reingest", "--all", "--hq", net.hq, passphrase="not it!!")
    assert wrong.returncode == WRONG_PASSPHRASE
    still = _json(run("hq", "quarantine", "reingest", "--all", "--hq", net.hq, "--json"))
    assert (still["accepted"], still["still_held"], still["receipts_new"]) == (0, 1, 0)

    # The operator re-adds the author; reingest accepts it and issues an accepted receipt.
    marks = ", ".join("?" for _ in author_row)
    _hq_sql(net, f"INSERT INTO authors VALUES ({marks})", *author_row)  # noqa: S608
    done = _json(run("hq", "quarantine", "reingest", "1", "--hq", net.hq, "--json"))
    assert (done["accepted"], done["still_held"], done["receipts_new"]) == (1, 0, 1)
    assert _json(run("hq", "quarantine", "list", "--hq", net.hq, "--json")) == []
    _json(run("hq", "receipts", "--hq", net.hq, "--out", net.usb / "r2.bundle", "--json"))
    imported = _json(run("--home", net.a, "bundle", "import", net.usb / "r2.bundle", "--json"))
    # Purged when held, so not counted here (the store cannot tell a receipted tag was
    # its author's); the author's outbox, opened with the passphrase, says delivered.
    assert (imported["delivered_own"], imported["held_own"]) == (0, 0)
    assert _statuses(run, net.a) == ["delivered"]
    exported = run("hq", "export", "--hq", net.hq, "--format", "jsonl", "--device-ids")
    assert [json.loads(line)["id"] for line in exported.stdout.splitlines()] == [report_id]
