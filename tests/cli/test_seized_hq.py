"""A seized HQ directory, without the passphrase (issue 11 item 4; security review H7):
``hq.db`` is encrypted under a key sealed with the HQ passphrase, so no file of the HQ
directory shows a narrative, a place or an author name, and every command that reads the
analyst database, ``hq export`` included, needs the passphrase."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fieldsync import cipher_db
from fieldsync.hq import DATABASE, DATABASE_KEY
from tests.cli.cli_support import Run
from tests.fieldsync.offline_support import (
    AUTHOR_NAME,
    Net,
    add_reports,
    export,
    files_under,
    hq_db_connect,
)

OK = 0
WRONG_PASSPHRASE = 12
NARRATIVE = "NARRATIVEMARK held at the checkpoint overnight"
PLACE = "PLACEMARK crossing"


def _ingested(net: Net, run: Run) -> None:
    add_reports(
        net.a,
        [NARRATIVE],
        location={"source": "gps", "lat": 12.5, "lon": -1.25, "place": PLACE},
    )
    export(net.a, net.usb / "a.bundle")
    done = run("hq", "ingest", "--hq", net.hq, net.usb / "a.bundle", "--json")
    assert done.returncode == OK, done.stderr
    assert json.loads(done.stdout)["new"] == 1


def _leaks(directory: Path) -> dict[str, list[str]]:
    markers = {
        "narrative": b"NARRATIVEMARK",
        "place": b"PLACEMARK",
        "author name": AUTHOR_NAME.encode(),
        "plaintext SQLite page": b"SQLite format 3",
    }
    found: dict[str, list[str]] = {}
    for path in files_under(directory):
        data = path.read_bytes()
        hits = [what for what, marker in markers.items() if marker in data]
        if hits:
            found[str(path.relative_to(directory))] = hits
    return found


def test_a_seized_hq_directory_shows_no_narrative_place_or_author(net: Net, run: Run) -> None:
    _ingested(net, run)
    # The WAL is part of what is seized: look at it as a running HQ leaves it, too.
    conn = hq_db_connect(net.hq)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        (name,) = conn.execute("SELECT name FROM authors").fetchone()
        (place,) = conn.execute("SELECT place FROM reports").fetchone()
        assert (name, place) == (AUTHOR_NAME, PLACE)  # positive control, with the passphrase
        assert not cipher_db.is_plaintext(net.hq / DATABASE)
        assert _leaks(net.hq) == {}
    finally:
        conn.close()
    assert _leaks(net.hq) == {}
    assert (net.hq / DATABASE_KEY).stat().st_mode & 0o077 == 0
    # Without the key SQLite sees no database at all.
    with pytest.raises(sqlite3.DatabaseError, match="file is not a database"):
        sqlite3.connect(net.hq / DATABASE).execute("SELECT count(*) FROM sqlite_master")


def test_hq_export_and_the_other_readers_need_the_passphrase(
    net: Net, run: Run, tmp_path: Path
) -> None:
    _ingested(net, run)
    readers = [
        ["hq", "export", "--hq", net.hq, "--format", "jsonl"],
        ["hq", "alerts", "--hq", net.hq],
        ["hq", "report", "show", "1", "--hq", net.hq],
        ["hq", "quarantine", "list", "--hq", net.hq],
        ["hq", "media", "--hq", net.hq],
        ["hq", "revoked", "--hq", net.hq],
    ]
    for args in readers:
        missing = run(*args, "--json", passphrase=None)
        assert missing.returncode != OK, args
        assert "the HQ database needs a passphrase" in missing.stderr, args
        assert "NARRATIVEMARK" not in missing.stdout
        wrong = run(*args, "--json", passphrase="not the HQ passphrase at all")
        assert wrong.returncode == WRONG_PASSPHRASE, (args, wrong.stderr)
        assert "wrong passphrase for HQ database key" in wrong.stderr, args
    exported = run("hq", "export", "--hq", net.hq, "--format", "jsonl")
    assert exported.returncode == OK, exported.stderr
    assert NARRATIVE in exported.stdout


def test_a_plaintext_hq_database_is_encrypted_once_the_passphrase_opens_hq(
    net: Net, run: Run
) -> None:
    """An HQ made before encryption: its plaintext hq.db and no hq.dbkey. A wrong
    passphrase changes nothing; the right one encrypts it, every row kept."""
    _ingested(net, run)
    plain = net.hq / "plain.db"
    conn = hq_db_connect(net.hq)
    conn.execute("ATTACH DATABASE ? AS plain KEY ''", (str(plain),))
    conn.execute("SELECT sqlcipher_export('plain')")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    for name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", DATABASE_KEY):
        (net.hq / name).unlink(missing_ok=True)
    plain.rename(net.hq / DATABASE)
    with sqlite3.connect(net.hq / DATABASE) as legacy:
        legacy.execute(f"PRAGMA user_version = {version}")
    legacy.close()

    wrong = run("hq", "export", "--hq", net.hq, "--format", "jsonl", passphrase="not it at all!")
    assert wrong.returncode == WRONG_PASSPHRASE, wrong.stderr
    assert cipher_db.is_plaintext(net.hq / DATABASE)
    assert not (net.hq / DATABASE_KEY).exists()

    exported = run("hq", "export", "--hq", net.hq, "--format", "jsonl")
    assert exported.returncode == OK, exported.stderr
    assert NARRATIVE in exported.stdout
    assert not cipher_db.is_plaintext(net.hq / DATABASE)
    assert _leaks(net.hq) == {}
