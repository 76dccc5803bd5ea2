"""Several monitors on one node (issue 10 item 1), through the real ``fieldsync`` command:
``author add`` makes a second passphrase-protected key and an HQ request for it, HQ enrols
it in person, ``join`` removes the request, and each report is signed by the author whose
passphrase unlocked it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from fieldsync.errors import InputRefused, WrongPassphrase
from tests.cli.cli_support import Run
from tests.fieldsync.offline_support import AUTHOR_NAME, PASSPHRASE, Net

SECOND = "monitor-42"
SECOND_PASSPHRASE = "lantern orchard quietly folding maps"


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    return done


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(_ok(done).stdout)


def add_second_author(run: Run, net: Net) -> None:
    """``author add`` on A, enrolled at HQ, joined: the in-person flow of ``init``."""
    added = _json(
        run("--home", net.a, "author", "add", SECOND, "--json", passphrase=SECOND_PASSPHRASE)
    )
    request = Path(added["request"])
    assert request == net.a / "request.txt" and added["author_fingerprint"].startswith("author:")
    enrolled = _json(
        run("hq", "enroll", request, "--hq", net.hq, "--out", net.usb / "enrol-2.txt", "--json")
    )
    assert enrolled["author_name"] == SECOND
    assert enrolled["author_fingerprint"] == added["author_fingerprint"]
    _ok(run("--home", net.a, "join", net.usb / "enrol-2.txt"))
    assert not request.exists()  # it named the author and their key


def report(run: Run, home: Path, narrative: str, passphrase: str, *extra: str) -> Any:
    return run(
        "--home", home, "report", "add", "--narrative", narrative,
        "--category", "arbitrary-detention", "--occurred", "2025-03-01", "--json", *extra,
        passphrase=passphrase,
    )  # fmt: skip


def test_two_authors_each_sign_their_own_reports(run: Run, net: Net) -> None:
    add_second_author(run, net)
    listed = _json(run("--home", net.a, "author", "list", "--json", passphrase=None))
    assert listed == {"authors": 2, "you": None}  # names are sealed
    for passphrase, name in ((PASSPHRASE, AUTHOR_NAME), (SECOND_PASSPHRASE, SECOND)):
        mine = _json(
            run("--home", net.a, "author", "list", "--unlock", "--json", passphrase=passphrase)
        )
        assert mine["you"]["name"] == name

    first = _json(report(run, net.a, "seen by the first monitor", PASSPHRASE))["id"]
    second = _json(report(run, net.a, "seen by the second", SECOND_PASSPHRASE, "--author", SECOND))[
        "id"
    ]
    # --author is a check: another author's name with this passphrase is a wrong passphrase.
    refused = report(run, net.a, "x", SECOND_PASSPHRASE, "--author", AUTHOR_NAME)
    assert refused.returncode == WrongPassphrase.exit_code, refused.stderr
    refused = report(run, net.a, "x", "not the passphrase of anyone here")
    assert refused.returncode == WrongPassphrase.exit_code, refused.stderr

    _ok(run("--home", net.a, "bundle", "export", net.usb / "a.bundle"))
    _ok(run("hq", "ingest", "--hq", net.hq, net.usb / "a.bundle"))
    for report_id, name in ((first, AUTHOR_NAME), (second, SECOND)):
        shown = _json(run("hq", "report", "show", report_id, "--hq", net.hq, "--json"))
        assert name in json.dumps(shown), shown


def test_a_new_author_needs_a_strong_unused_passphrase(run: Run, net: Net) -> None:
    weak = run("--home", net.a, "author", "add", SECOND, passphrase="password1234")
    assert weak.returncode == InputRefused.exit_code and "too easy to guess" in weak.stderr
    taken = run("--home", net.a, "author", "add", SECOND, passphrase=PASSPHRASE)
    assert taken.returncode == InputRefused.exit_code and "choose another" in taken.stderr
    assert not (net.a / "authors").exists() or not list((net.a / "authors").iterdir())
