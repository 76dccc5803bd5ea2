"""A seized HQ directory, without the passphrase (issue 11 item 4; security review H7):
``hq.db`` is encrypted under a key sealed with the HQ passphrase, so no file of the HQ
directory shows a narrative, a place or an author name, and every command that reads the
analyst database, ``hq export`` included, needs the passphrase. Attachment files are
sealed under per-file keys kept in hq.db: no window of a photo's bytes in any file."""

from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path

import pytest

from fieldsync import cipher_db, hq_media_seal
from fieldsync.hq import DATABASE, DATABASE_KEY
from fieldsync.node import Node
from tests.cli.cli_support import Run
from tests.fieldsync.offline_support import (
    AUTHOR_NAME,
    PASSPHRASE,
    Net,
    add_reports,
    export,
    fields,
    files_under,
    hq_db_connect,
)

OK = 0
INPUT_REFUSED = 3
WRONG_PASSPHRASE = 12
PHOTO_NAME = "PHOTONAMEMARK-checkpoint.jpg"
WINDOW = 64
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


# --- attachment files at rest ------------------------------------------------------------


def _photo(tmp_path: Path) -> bytes:
    """A photograph (random bytes after a JPEG header and a marker), 3 sealed blocks long."""
    data = b"\xff\xd8\xff\xe0PHOTOBYTESMARK" + secrets.token_bytes(2 * hq_media_seal.BLOCK + 99)
    (tmp_path / PHOTO_NAME).write_bytes(data)
    return data


def _ingested_with_photo(net: Net, run: Run, tmp_path: Path) -> tuple[str, bytes]:
    photo = _photo(tmp_path)
    node = Node(net.a)
    try:
        report_id = node.add_report(fields(NARRATIVE), PASSPHRASE, [tmp_path / PHOTO_NAME])
    finally:
        node.close()
    export(net.a, net.usb / "a.bundle")
    done = run("hq", "ingest", "--hq", net.hq, net.usb / "a.bundle", "--json")
    assert done.returncode == OK, done.stderr
    assert json.loads(done.stdout)["media"]["verified"] == 1, done.stdout
    return report_id, photo


def _photo_leaks(directory: Path, photo: bytes) -> list[str]:
    """Files holding any 64-byte window of ``photo`` (or its file name): every such window
    contains one of the 32-byte pieces at offsets that are multiples of 32."""
    pieces = [photo[i : i + WINDOW // 2] for i in range(0, len(photo) - WINDOW // 2, WINDOW // 2)]
    leaks = []
    for path in files_under(directory):
        data = path.read_bytes()
        if PHOTO_NAME.encode() in data or "PHOTONAMEMARK" in str(path):
            leaks.append(f"{path}: file name")
        if any(piece in data for piece in pieces):
            leaks.append(f"{path}: photo bytes")
    return leaks


def _sealed_files(net: Net) -> list[Path]:
    return [p for p in files_under(net.hq / "media") if p.name.endswith(hq_media_seal.SUFFIX)]


def test_a_seized_hq_directory_holds_no_window_of_a_reports_photo(
    net: Net, run: Run, tmp_path: Path
) -> None:
    report_id, photo = _ingested_with_photo(net, run, tmp_path)
    [sealed] = _sealed_files(net)
    assert sealed.stat().st_mode & 0o077 == 0
    assert _photo_leaks(net.hq, photo) == []
    assert _leaks(net.hq) == {}
    # Positive control: with the passphrase, the byte-identical photograph where asked.
    out = tmp_path / "out"
    extracted = run("hq", "media", report_id, "--out", out, "--hq", net.hq, "--json")
    assert extracted.returncode == OK, extracted.stderr
    [written] = json.loads(extracted.stdout)["files"]
    assert Path(written) == out / f"01-{PHOTO_NAME}"
    assert Path(written).read_bytes() == photo
    # The check finds the photo where it is in clear (it would find a leak).
    assert _photo_leaks(out, photo) == [f"{written}: file name", f"{written}: photo bytes"]
    # An export copies the photo decrypted into the export directory, and only there.
    (tmp_path / "e").mkdir()
    exported = run(
        "hq", "export", "--hq", net.hq, "--format", "jsonl", "--out", tmp_path / "e" / "r.jsonl"
    )
    assert exported.returncode == OK, exported.stderr
    [link] = json.loads((tmp_path / "e" / "r.jsonl").read_text())["hq"]["attachments"]
    assert (tmp_path / "e" / link).read_bytes() == photo
    assert _photo_leaks(net.hq, photo) == []
    # Without the passphrase there is no photo to extract.
    refused = run(
        "hq", "media", report_id, "--out", tmp_path / "no", "--hq", net.hq, passphrase=None
    )
    assert refused.returncode != OK and not (tmp_path / "no").exists()


def test_a_tampered_sealed_photo_is_refused_never_served(
    net: Net, run: Run, tmp_path: Path
) -> None:
    report_id, photo = _ingested_with_photo(net, run, tmp_path)
    [sealed] = _sealed_files(net)
    raw = bytearray(sealed.read_bytes())
    raw[hq_media_seal.HEADER_SIZE + hq_media_seal.BLOCK + hq_media_seal.OVERHEAD + 10] ^= 1
    sealed.write_bytes(bytes(raw))
    out = tmp_path / "out"
    refused = run("hq", "media", report_id, "--out", out, "--hq", net.hq)
    assert refused.returncode == INPUT_REFUSED, refused.stderr
    assert "damaged or was tampered with" in refused.stderr and str(sealed) in refused.stderr
    assert not out.exists() or list(out.iterdir()) == []  # no partial photo left behind
    for fmt, target in (("jsonl", "r.jsonl"), ("uwazi-zip", "r.zip")):
        (tmp_path / fmt).mkdir()
        exported = run(
            "hq", "export", "--hq", net.hq, "--format", fmt, "--out", tmp_path / fmt / target
        )
        assert exported.returncode == INPUT_REFUSED, (fmt, exported.stderr)
        assert "damaged or was tampered with" in exported.stderr
        assert [p for p in files_under(tmp_path / fmt) if photo[:4096] in p.read_bytes()] == []
    # Cut short at a record boundary (its final record dropped): refused too.
    sealed.write_bytes(
        bytes(raw[: hq_media_seal.HEADER_SIZE + hq_media_seal.BLOCK + hq_media_seal.OVERHEAD])
    )
    cut = run("hq", "media", report_id, "--out", out, "--hq", net.hq)
    assert cut.returncode == INPUT_REFUSED and "final record is missing" in cut.stderr


def test_a_plaintext_photo_of_an_older_hq_is_sealed_once_the_passphrase_opens_hq(
    net: Net, run: Run, tmp_path: Path
) -> None:
    """An HQ from before sealing: media/ENVELOPE/01-NAME in clear, no file key. A wrong
    passphrase changes nothing; the right one seals it and destroys the plaintext."""
    report_id, photo = _ingested_with_photo(net, run, tmp_path)
    [sealed] = _sealed_files(net)
    plain = sealed.with_name(f"01-{PHOTO_NAME}")
    plain.write_bytes(photo)
    plain.chmod(0o600)
    sealed.unlink()
    conn = hq_db_connect(net.hq)
    try:
        conn.execute(
            "UPDATE media_attachments SET path = ?, file_key = NULL",
            (str(plain.relative_to(net.hq)),),
        )
    finally:
        conn.close()
    assert _photo_leaks(net.hq, photo) != []  # the older HQ's seized disk

    wrong = run("hq", "media", "--hq", net.hq, passphrase="not the HQ passphrase at all")
    assert wrong.returncode == WRONG_PASSPHRASE, wrong.stderr
    assert plain.read_bytes() == photo and _sealed_files(net) == []

    listed = run("hq", "media", "--hq", net.hq, "--json")
    assert listed.returncode == OK, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["status"] == "verified" and row["path"].endswith("/01.sealed")
    assert not plain.exists()
    assert _photo_leaks(net.hq, photo) == []
    out = tmp_path / "out"
    extracted = run("hq", "media", report_id, "--out", out, "--hq", net.hq)
    assert extracted.returncode == OK, extracted.stderr
    assert (out / f"01-{PHOTO_NAME}").read_bytes() == photo
    # A crash after the sealed copy was recorded, before the plaintext was destroyed:
    # the next open destroys the leftover (and keeps the sealed copy).
    plain.write_bytes(photo)
    again = run("hq", "media", "--hq", net.hq, "--json")
    assert again.returncode == OK, again.stderr
    assert not plain.exists() and _photo_leaks(net.hq, photo) == []
    assert len(_sealed_files(net)) == 1


def test_a_plaintext_photo_that_no_longer_matches_its_hash_is_sealed_and_alerted(
    net: Net, run: Run, tmp_path: Path
) -> None:
    report_id, photo = _ingested_with_photo(net, run, tmp_path)
    [sealed] = _sealed_files(net)
    plain = sealed.with_name(f"01-{PHOTO_NAME}")
    plain.write_bytes(photo[:-1] + bytes([photo[-1] ^ 1]))
    sealed.unlink()
    conn = hq_db_connect(net.hq)
    try:
        conn.execute(
            "UPDATE media_attachments SET path = ?, file_key = NULL",
            (str(plain.relative_to(net.hq)),),
        )
    finally:
        conn.close()
    refused = run("hq", "media", report_id, "--out", tmp_path / "out", "--hq", net.hq)
    assert refused.returncode == INPUT_REFUSED, refused.stderr
    assert "SHA-256 of HQ's plaintext copy differs" in refused.stderr
    assert not plain.exists() and _photo_leaks(net.hq, photo) == []
    alerts = run("hq", "alerts", "--hq", net.hq, "--json")
    assert "SHA-256 of HQ's plaintext copy differs" in alerts.stdout
