"""What an operator meets running the daemon (issue 8, Deliver 8): one daemon per home,
``status``/``peers`` finding the daemon through the config, ``[node] home`` for every
command, log lines with timestamps, and a quiet SIGTERM. Real ``fieldsync`` processes."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fieldsync import synthetic
from fieldsync.homelock import EXIT_ALREADY_RUNNING
from tests.cli.cli_support import Run, clean_env, fieldsync_command

#: A log line outside journald: "2026-12-05 08:20:01,123 INFO fieldsync.daemon: ...".
TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")


@pytest.fixture
def network(tmp_path: Path) -> synthetic.SyntheticNetwork:
    return synthetic.create_network(tmp_path / "net")


@contextmanager
def daemon(
    *args: str | Path, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], dict[str, object]]]:
    """``fieldsync ARGS run --json --listen 127.0.0.1:0``; yields the process and its first
    JSON line (``ARGS`` are global options; ``--log-level`` goes after ``run``)."""
    options = [str(a) for a in args]
    level = []
    if "--log-level" in options:
        at = options.index("--log-level")
        level = options[at : at + 2]
        del options[at : at + 2]
    process = subprocess.Popen(
        [*fieldsync_command(), *options, "run", "--json", "--listen", "127.0.0.1:0", *level],
        env=clean_env(FIELDSYNC_DISCOVERY_ENABLED="0") if env is None else env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, f"the daemon ended before listening: {process.communicate()[1]}"
        yield process, json.loads(line)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM, wait, and return everything the daemon logged."""
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return err


def test_a_second_daemon_on_the_same_home_exits_with_a_message_and_code(
    network: synthetic.SyntheticNetwork, run: Run
) -> None:
    home = network.add_node("a")
    with daemon("--home", home, "--log-level", "info") as (first, _):
        second = run("--home", home, "run", "--listen", "127.0.0.1:0")
        assert second.returncode == EXIT_ALREADY_RUNNING
        assert f"another fieldsync daemon (pid {first.pid}) is already running on {home}" in (
            second.stderr
        )
        assert "Traceback" not in second.stderr
        again = run("--home", home, "run", "--json", "--listen", "127.0.0.1:0")
        assert json.loads(again.stdout)["exit_code"] == EXIT_ALREADY_RUNNING
        assert run("--home", home, "status", "--json").returncode == 0  # not a daemon
        log = stop(first)
    assert "Traceback" not in log
    # The lock died with the first daemon: a new one starts.
    with daemon("--home", home) as (third, info):
        assert info["listening"]
        stop(third)


def test_status_and_peers_find_the_daemon_through_the_config_and_its_socket(
    network: synthetic.SyntheticNetwork, run: Run, tmp_path: Path
) -> None:
    home = network.add_node("a")
    socket = tmp_path / "run" / "c.sock"
    socket.parent.mkdir()
    config = tmp_path / "fieldsync.toml"
    config.write_text(
        f'[node]\nhome = "{home}"\n[control]\nsocket = "{socket}"\n'
        '[listen]\naddresses = ["127.0.0.1:0"]\n[discovery]\nenabled = false\n'
        '[peers]\nstatic = ["127.0.0.1:9"]\n'
    )
    with daemon("--config", config, env=clean_env()) as (process, info):
        assert info["control"] == str(socket)
        # --config before the command, FIELDSYNC_CONFIG, and the deploy/README alias (only
        # --home): all three reach the daemon on the configured socket.
        for args, env in (
            (["--config", str(config)], clean_env()),
            ([], clean_env(FIELDSYNC_CONFIG=str(config))),
            (["--home", str(home)], clean_env()),
        ):
            status = run(*args, "status", "--json", env=env)
            assert status.returncode == 0, status.stderr
            data = json.loads(status.stdout)
            assert data["daemon"] is True, (args, data)
            assert data["home"] == str(home)
            peers = run(*args, "peers", "--json", env=env)
            assert peers.returncode == 0, peers.stderr
            assert [p["target"] for p in json.loads(peers.stdout)] == ["127.0.0.1:9"]
        stop(process)
    gone = run("--config", config, "status", "--json", env=clean_env())
    assert json.loads(gone.stdout)["daemon"] is False


def test_node_home_from_the_config_counts_for_every_command(
    network: synthetic.SyntheticNetwork, run: Run, tmp_path: Path
) -> None:
    home = network.add_node("author", author=True)
    config = tmp_path / "fieldsync.toml"
    config.write_text(f'[node]\nhome = "{home}"\n')
    env = clean_env(FIELDSYNC_CONFIG=str(config), FIELDSYNC_PASSPHRASE=synthetic.PASSPHRASE)
    added = run(
        "report",
        "add",
        "--narrative",
        "home from the config",
        "--category",
        "threats-harassment",
        "--occurred",
        "2025-03-01",
        "--json",
        env=env,
    )
    assert added.returncode == 0, added.stderr
    listed = run("report", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1
    status = run("status", "--json", env=env)
    assert json.loads(status.stdout)["home"] == str(home)
    # --home still wins over the config.
    other = network.add_node("relay")
    relay = run("--home", other, "status", "--json", env=env)
    assert json.loads(relay.stdout)["home"] == str(other)
    # A relay has no author, hence no reports to list (and says so).
    listed = run("--home", other, "report", "list", "--json", env=env)
    assert listed.returncode == 1 and "relay-only" in json.loads(listed.stdout)["error"]


def test_log_lines_carry_timestamps_outside_journald_and_sigterm_is_quiet(
    network: synthetic.SyntheticNetwork,
) -> None:
    home = network.add_node("a")
    with daemon("--home", home, "--log-level", "info") as (process, _):
        log = stop(process)
    lines = [line for line in log.splitlines() if " fieldsync." in line]
    assert lines and all(TIMESTAMPED.match(line) for line in lines), log
    assert "Traceback" not in log and "CancelledError" not in log
    env = clean_env(FIELDSYNC_DISCOVERY_ENABLED="0", JOURNAL_STREAM="8:12345")
    with daemon("--home", home, "--log-level", "info", env=env) as (process, _):
        log = stop(process)
    lines = [line for line in log.splitlines() if " fieldsync." in line]
    assert lines and not any(TIMESTAMPED.match(line) for line in lines), log


def test_sigterm_during_the_delayed_close_of_failed_handshakes_logs_no_traceback(
    network: synthetic.SyntheticNetwork,
) -> None:
    home = network.add_node("a")
    with daemon("--home", home, "--log-level", "info") as (process, info):
        listening = info["listening"]
        assert isinstance(listening, list)
        host, port = str(listening[0]).rsplit(":", 1)
        strangers = [socket.create_connection((host, int(port)), timeout=10) for _ in range(3)]
        for stranger in strangers:
            stranger.sendall(b"\x00" * 200)  # not a handshake: silence, then a delayed close
        assert process.stderr is not None
        failed = 0
        while failed < 3:  # each refusal is logged before its delayed close starts
            line = process.stderr.readline()
            assert line, "the daemon stopped logging"
            failed += "handshake failed" in line
        log = stop(process)
        for stranger in strangers:
            assert stranger.recv(1) == b""  # closed by the daemon, no byte sent
            stranger.close()
    assert "Traceback" not in log and "CancelledError" not in log, log


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["sync", "127.0.0.1:0"], 3, "port 0 is out of range 1–65535"),
        (["sync", "junk"], 3, "expected HOST:PORT"),
        (["sync", "::1:7341"], 3, "put an IPv6 address in brackets"),
        (["sync", "bad_host!:7341"], 3, "neither an IP address nor a valid host name"),
        (["run", "--ws-listen", "127.0.0.1:x"], 78, "--ws-listen '127.0.0.1:x': port"),
    ],
)
def test_addresses_on_the_command_line_follow_the_configs_strict_rule(
    network: synthetic.SyntheticNetwork, run: Run, args: list[str], code: int, words: str
) -> None:
    home = network.add_node("a")
    result = run("--home", home, *args, "--json")
    assert result.returncode == code, result.stderr
    assert words in result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["exit_code"] == code


def test_status_says_how_many_reports_wait_for_timing_privacy(
    network: synthetic.SyntheticNetwork, run: Run
) -> None:
    """With an offer delay (SPEC.md §14.10), a new report waits; ``status`` says so."""
    home = network.add_node("author", author=True)
    env = clean_env(
        FIELDSYNC_DISCOVERY_ENABLED="0",
        FIELDSYNC_PRIVACY_OFFER_DELAY_MINUTES="30",
        FIELDSYNC_PASSPHRASE=synthetic.PASSPHRASE,
        FIELDSYNC_WEB_LISTEN="",
    )
    with daemon("--home", home, env=env) as (process, _):
        added = run(
            "--home", home, "report", "add", "--narrative", "held", "--category",
            "threats-harassment", "--occurred", "2025-03-01", "--json", env=env,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        deadline = time.monotonic() + 60
        while True:  # the daemon's watcher assesses it within a few seconds
            status = json.loads(run("--home", home, "status", "--json", env=env).stdout)
            if status.get("offer_held") == 1:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)  # polling interval, not synchronisation
        assert status["offer_delay_minutes"] == 30
        text = run("--home", home, "status", env=env).stdout
        assert "held        1 report items wait a random delay" in text
        assert "offer_delay_minutes = 30" in text
        stop(process)
