"""Every file HQ writes is readable by HQ's user only (0600) and its directories are 0700
(issue 12: the analyst database holds every report in clear): ``hq.db`` and its WAL and
shared-memory files, the quarantine inside it, exports, receipts bundles, enrolment files,
media, HQ's own node. An HQ directory left 0755 with a 0644 ``hq.db`` by an older release
is tightened on first use. Real ``fieldsync`` processes, real files."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from fieldsync.hq import DATABASE
from tests.cli.cli_support import Run
from tests.fieldsync.offline_support import (
    Net,
    add_reports,
    export,
    hq_manifest,
    open_hq,
    seal,
    write_bundle,
)


def _ok(done: subprocess.CompletedProcess[str], *codes: int) -> None:
    assert done.returncode in (codes or (0,)), done.stderr


def _modes(*roots: Path) -> dict[str, str]:
    """Every file and directory under ``roots`` (and the roots) with its mode."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            found[str(path)] = oct(stat.S_IMODE(path.lstat().st_mode))
    return found


def test_every_file_hq_writes_is_private(net: Net, run: Run, tmp_path: Path) -> None:
    previous = os.umask(0o022)  # as a login shell has it: HQ must not depend on the caller's
    try:
        _write_everything(net, run, tmp_path)
    finally:
        os.umask(previous)


def _write_everything(net: Net, run: Run, tmp_path: Path) -> None:
    outputs = tmp_path / "out"
    outputs.mkdir(mode=0o755)
    fresh = tmp_path / "fresh-hq"
    _ok(run("network", "create", "--name", "n", "--out", fresh, "--kdf-profile", "interactive"))

    add_reports(net.a, ["accepted"])
    export(net.a, net.usb / "a.bundle")
    stranger = seal(hq_manifest(net), bytes(range(32)), 1, "held in the quarantine")
    write_bundle(net, net.usb / "held.bundle", [stranger.item])
    _ok(run("hq", "ingest", "--hq", net.hq, net.usb / "a.bundle", net.usb / "held.bundle"), 8)
    _ok(run("hq", "export", "--hq", net.hq, "--format", "jsonl", "--out", outputs / "r.jsonl"))
    _ok(run("hq", "receipts", "--hq", net.hq, "--out", outputs / "receipts.bundle"))
    _ok(run("--home", tmp_path / "c", "init", passphrase=None))
    request = tmp_path / "c" / "request.txt"
    _ok(run("hq", "enroll", request, "--hq", net.hq, "--out", outputs / "c.enrolment"))
    _ok(run("hq", "alerts", "--hq", net.hq, "--ack", "1"))

    with open_hq(net) as headquarters:  # open: the WAL and shared-memory files exist
        headquarters.database().execute("SELECT count(*) FROM reports").fetchone()
        side_files = _modes(*(net.hq / f"{DATABASE}{s}" for s in ("-wal", "-shm")))
    assert set(side_files.values()) == {"0o600"}
    written = _modes(net.hq, fresh)
    written.update(
        {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in outputs.iterdir() if p.is_file()}
    )
    assert str(outputs / "r.jsonl") in written and str(outputs / "receipts.bundle") in written
    assert str(net.hq / DATABASE) in written
    loose = {
        path: mode
        for path, mode in written.items()
        if mode != ("0o700" if Path(path).is_dir() else "0o600")
    }
    # HQ's own node (HQDIR/node) is only made by `hq ingest --hub`; none here.
    assert loose == {}


def test_an_older_hq_left_readable_is_tightened_on_first_use(net: Net, run: Run) -> None:
    net.hq.chmod(0o755)
    (net.hq / DATABASE).chmod(0o644)
    _ok(run("hq", "alerts", "--hq", net.hq, "--json"))
    assert stat.S_IMODE(net.hq.stat().st_mode) == 0o700
    for name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm"):
        path = net.hq / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
