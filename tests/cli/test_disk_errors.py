"""A full disk and a read-only disk, for real: the node home sits on a small tmpfs in a
private mount namespace (``unshare``), filled with a file or remounted read-only. Every
command answers with a clear message and exit code 74, never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from fieldsync import synthetic
from fieldsync.control import query
from fieldsync.diskerrors import EXIT_STORAGE
from tests.cli.cli_support import clean_env, fieldsync_command

COMMANDS = {
    "status": ["status", "--json"],
    "report": [
        "report",
        "add",
        "--narrative",
        "written to a bad disk",
        "--category",
        "threats-harassment",
        "--occurred",
        "2025-03-01",
        "--json",
    ],
    "run": ["run", "--listen", "127.0.0.1:0", "--json"],
}


def in_namespace(
    tmp_path: Path, home: Path, how: str
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Copy ``home`` onto a 1 MiB tmpfs, make the disk ``full`` or ``read-only``, and run
    each of ``COMMANDS`` there; their exit codes and output come back through files."""
    mount = tmp_path / "disk"
    out = tmp_path / "out"
    mount.mkdir()
    out.mkdir()
    command = " ".join(shlex.quote(part) for part in fieldsync_command())
    lines = [
        "set -u",
        f"mount -t tmpfs -o size=1m,mode=0700 tmpfs {mount}",
        f"cp -a {home} {mount}/home",
    ]
    if how == "full":
        lines.append(f"dd if=/dev/zero of={mount}/filler bs=4k 2>/dev/null || true")
    else:
        lines.append(f"mount -o remount,ro {mount}")
    for name, args in COMMANDS.items():
        arguments = " ".join(shlex.quote(a) for a in args)
        lines.append(
            f"timeout 60 {command} --home {mount}/home {arguments} </dev/null"
            f" >{out}/{name}.out 2>{out}/{name}.err; echo $? >{out}/{name}.rc"
        )
    namespace = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        namespace.append("--map-root-user")  # unprivileged user namespaces, where allowed
    done = subprocess.run(
        [*namespace, "sh", "-c", "\n".join(lines)],
        env=clean_env(FIELDSYNC_PASSPHRASE=synthetic.PASSPHRASE, FIELDSYNC_DISCOVERY_ENABLED="0"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {
        name: subprocess.CompletedProcess(
            COMMANDS[name],
            int((out / f"{name}.rc").read_text()),
            (out / f"{name}.out").read_text(),
            (out / f"{name}.err").read_text(),
        )
        for name in COMMANDS
    }


@pytest.fixture
def author_home(tmp_path: Path) -> Path:
    return synthetic.create_network(tmp_path / "net").add_node("a", author=True)


def refused(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == EXIT_STORAGE, result.stderr
    assert "Traceback" not in result.stderr
    assert words in result.stderr and "nothing already stored was lost" in result.stderr
    error = json.loads(result.stdout)
    assert error["exit_code"] == EXIT_STORAGE and error["kind"] == "StorageUnavailable"


def test_a_full_disk_gives_a_clear_message_and_exit_code(tmp_path: Path, author_home: Path) -> None:
    results = in_namespace(tmp_path, author_home, "full")
    refused(results["report"], "is full")
    refused(results["run"], "is full")
    status = results["status"]
    assert "Traceback" not in status.stderr
    if status.returncode == 0:  # reading may still work on a full disk: even better
        assert json.loads(status.stdout)["items_total"] == 1
    else:
        refused(status, "is full")


def test_a_read_only_disk_gives_a_clear_message_and_exit_code(
    tmp_path: Path, author_home: Path
) -> None:
    results = in_namespace(tmp_path, author_home, "read-only")
    refused(results["report"], "is read-only")
    refused(results["run"], "is read-only")
    # SQLite cannot open a WAL database whose -shm file it may not create: a clear refusal.
    refused(results["status"], "is read-only")


def test_the_daemon_on_a_full_disk_says_so_keeps_running_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """A peer pushes reports to a daemon whose disk is full: the daemon logs a clear line
    (no traceback), keeps answering, and takes them all once space is freed."""
    network = synthetic.create_network(tmp_path / "net")
    author = network.add_node("author")
    synthetic.fill_store(author, network.manifest, synthetic.sealed_reports(network.manifest, 200))
    relay = network.add_node("relay")
    disk, socket = tmp_path / "disk", tmp_path / "control.sock"
    disk.mkdir()
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[control]\nsocket = "{socket}"\n[listen]\naddresses = ["127.0.0.1:0"]\n'
        "[discovery]\nenabled = false\n"
    )
    command = " ".join(shlex.quote(part) for part in fieldsync_command())
    script = (
        f"mount -t tmpfs -o size=2m,mode=0700 tmpfs {disk} && cp -a {relay} {disk}/home &&"
        f" exec {command} --home {disk}/home --config {config} run --json"
    )
    namespace = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        namespace.append("--map-root-user")
    daemon = subprocess.Popen(
        [*namespace, "sh", "-c", script],
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def fieldsync(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*fieldsync_command(), *map(str, args)],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def on_the_disk(shell: str) -> None:
        subprocess.run(
            ["nsenter", f"--target={daemon.pid}", "--mount", "sh", "-c", shell],
            check=True,
            timeout=60,
        )

    try:
        assert daemon.stdout is not None
        listening = json.loads(daemon.stdout.readline())["listening"][0]
        on_the_disk(f"dd if=/dev/zero of={disk}/filler bs=4k 2>/dev/null || true")
        refused = fieldsync("--home", author, "sync", listening, "--json")
        assert refused.returncode != 0, refused.stdout
        status = asyncio.run(query(socket, "status"))  # the daemon's own view of its store
        assert status is not None and status["items"]["envelope"] == 0  # still answering
        on_the_disk(f"rm {disk}/filler")
        synced = fieldsync("--home", author, "sync", listening, "--json")
        assert synced.returncode == 0, synced.stderr
        live = asyncio.run(query(socket, "status"))
        assert live is not None and live["items"]["envelope"] == 200  # nothing was lost
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            _, log = daemon.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            _, log = daemon.communicate()
    assert daemon.returncode == 0, log
    assert "is full" in log and "Traceback" not in log, log
