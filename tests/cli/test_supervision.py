"""Supervision of the daemon's background components (issue 8, Deliver 3).

Each test breaks one component of a real daemon (real store, real sockets) - with a real
fault where one can be made (the control socket file removed, a discovery interface that
has no address) and otherwise with the documented ``[debug] inject_faults`` hook - and
checks what an operator sees: the log, ``fieldsync status --json`` (a real process reading
the control socket), and either recovery or a non-zero exit of ``fieldsync run``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fieldsync import synthetic
from fieldsync.config import Config, load_config
from fieldsync.control import query
from fieldsync.daemon import DaemonFailed, FieldDaemon
from fieldsync.errors import EXIT_DAEMON_FAILED
from fieldsync.supervisor import Policy
from tests.cli.cli_support import clean_env, fieldsync_command

#: Fast back-off so a test sees several restarts; the same shape as the default policy.
FAST = Policy(max_failures=3, backoff_initial=0.2, backoff_max=0.4)
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
FIELDSYNC = fieldsync_command()  # looked up once, not on an event loop


@pytest.fixture
def network(tmp_path: Path) -> synthetic.SyntheticNetwork:
    return synthetic.create_network(tmp_path)


async def config_for(home: Path, faults: list[str], **settings: object) -> Config:
    overrides = {
        "node.home": str(home),
        "listen.addresses": ["127.0.0.1:0"],
        "discovery.enabled": False,
        "privacy.offer_delay_minutes": 0,  # offer at once (timing privacy has its own tests)
        "debug.inject_faults": faults,
        **settings,
    }
    # Reading the config stats files (cwd, paths): off the event loop, as the CLI does.
    return await asyncio.to_thread(load_config, None, {}, overrides)


async def started(config: Config, policy: Policy = FAST) -> FieldDaemon:
    daemon = FieldDaemon(config, policy=policy)
    daemon.HEALTH_SECONDS = 0.1
    daemon.LOCAL_POLL_SECONDS = 0.1
    await daemon.start()
    return daemon


async def wait_until(predicate: Callable[[], Awaitable[bool]], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.05)


async def component(socket: Path, name: str) -> dict[str, Any]:
    status = await query(socket, "status")
    assert status is not None, "the daemon's control API does not answer"
    info: dict[str, Any] = status["components"].get(name, {})
    return {**info, "degraded": name in status["degraded"]}


async def status_json(home: Path) -> dict[str, Any]:
    """``fieldsync --home HOME status --json``, run as a real process."""
    data: dict[str, Any] = json.loads(await cli("--home", str(home), "status", "--json"))
    return data


async def cli(*args: str) -> str:
    """``fieldsync ARGS`` as a real process; its stdout (it must succeed)."""
    process = await asyncio.create_subprocess_exec(
        *FIELDSYNC,
        *args,
        env=clean_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


def failures_logged(caplog: pytest.LogCaptureFixture, name: str, error: str) -> int:
    return sum(
        1
        for record in caplog.records
        if record.name == "fieldsync.supervisor"
        and record.getMessage().startswith(f"{name} failed ({error}")
    )


async def test_janitor_failure_is_logged_restarted_and_shown_in_status(
    network: synthetic.SyntheticNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    home = await asyncio.to_thread(network.add_node, "a")
    daemon = await started(await config_for(home, ["janitor:2"]))
    try:

        async def recovered() -> bool:
            info = await component(home / "control.sock", "janitor")
            return bool(info["state"] == "running" and info["restarts"] == 2)

        await wait_until(recovered)
        status = await status_json(home)
        assert status["daemon"] is True
        janitor = status["components"]["janitor"]
        assert janitor["restarts"] == 2
        assert janitor["last_error"] == "InjectedFault: injected fault in janitor" + (
            " ([debug] inject_faults)"
        )
        assert "janitor" not in status["degraded"]
        assert daemon.janitor is not None and daemon.janitor.last.used_bytes > 0  # it ran again
    finally:
        await daemon.stop()
    assert failures_logged(caplog, "janitor", "InjectedFault") == 2


async def test_store_thread_failure_stops_the_daemon_with_an_exit_code_and_no_watchdog(
    network: synthetic.SyntheticNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    home = await asyncio.to_thread(network.add_node, "a")
    daemon = await started(await config_for(home, ["store"]))
    try:
        with pytest.raises(DaemonFailed, match="store failed 3 times in a row") as failed:
            await asyncio.wait_for(daemon.wait(asyncio.Event()), 60)
        assert failed.value.exit_code == EXIT_DAEMON_FAILED
        assert daemon.supervisor.healthy is False  # the watchdog pings no more
        status = await status_json(home)  # still answering until stop()
        assert status["components"]["store"]["state"] == "failed"
        assert "store" in status["degraded"]
    finally:
        await daemon.stop()
    assert failures_logged(caplog, "store", "InjectedFault") == 2
    assert any(
        r.levelno == logging.CRITICAL and "store failed 3 times" in r.getMessage()
        for r in caplog.records
    )
    assert not await asyncio.to_thread(
        (home / "control.sock").exists
    )  # stop() cleaned up after the failure


async def test_control_socket_removed_is_noticed_and_bound_again(
    network: synthetic.SyntheticNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    home = await asyncio.to_thread(network.add_node, "a")
    daemon = await started(await config_for(home, []))
    socket = home / "control.sock"
    try:
        assert await query(socket, "status") is not None
        await asyncio.to_thread(socket.unlink)  # tmpfiles or an operator cleaning up /run
        await wait_until(lambda: asyncio.to_thread(socket.exists))

        async def rebound() -> bool:
            status = await query(socket, "status")
            return status is not None and status["components"]["control"]["restarts"] == 1

        await wait_until(rebound)
        status = await status_json(home)
        control = status["components"]["control"]
        assert control["state"] == "running"
        assert control["last_error"].startswith("ControlSocketLost: control socket")
    finally:
        await daemon.stop()
    assert failures_logged(caplog, "control", "ControlSocketLost") == 1


async def test_discovery_without_an_interface_address_is_degraded_and_keeps_trying(
    network: synthetic.SyntheticNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    # The first run fails by injection, later ones for real: no such interface, so nothing
    # is ever multicast. Discovery is never fatal (a restart would not make the interface
    # appear); the daemon keeps syncing and says what is wrong.
    home = await asyncio.to_thread(network.add_node, "a")
    config = await config_for(
        home, ["discovery:1"], **{"discovery.enabled": True, "discovery.interfaces": ["fsnone0"]}
    )
    daemon = await started(config)
    try:

        async def failed_for_real() -> bool:
            info = await component(home / "control.sock", "discovery")
            return bool(info["restarts"] >= 2 and info["degraded"])

        await wait_until(failed_for_real)
        status = await status_json(home)
        assert "discovery" in status["degraded"]
        discovery = status["components"]["discovery"]
        assert discovery["last_error"] == "DiscoveryUnavailable: no IPv4 address on fsnone0"
        assert status["components"]["scheduler"]["state"] == "running"
        assert daemon.supervisor.fatal.is_set() is False
        human = await cli("--home", str(home), "status")
        assert "DEGRADED    discovery: restarting (DiscoveryUnavailable: no IPv4 address" in human
    finally:
        await daemon.stop()
    assert failures_logged(caplog, "discovery", "InjectedFault") == 1
    assert failures_logged(caplog, "discovery", "DiscoveryUnavailable") >= 2


async def test_scheduler_that_keeps_failing_makes_fieldsync_run_exit_non_zero(
    network: synthetic.SyntheticNetwork,
) -> None:
    home = await asyncio.to_thread(network.add_node, "a")
    process = await asyncio.create_subprocess_exec(
        *FIELDSYNC,
        "--home",
        str(home),
        "run",
        "--listen",
        "127.0.0.1:0",
        env=clean_env(FIELDSYNC_DISCOVERY_ENABLED="0", FIELDSYNC_DEBUG_INJECT_FAULTS="scheduler"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = err.decode()
    assert process.returncode == EXIT_DAEMON_FAILED, log
    assert len(re.findall(r"scheduler failed \(InjectedFault", log)) == 4
    assert "scheduler failed 5 times in a row" in log
    assert "fieldsync: error: scheduler failed 5 times in a row" in log
    assert not await asyncio.to_thread((home / "control.sock").exists)


def test_default_policy_gives_up_well_within_the_units_watchdog() -> None:
    """Repeated failures end the daemon before systemd's WatchdogSec would have to."""
    unit = (DEPLOY / "fieldsync.service").read_text()
    match = re.search(r"^WatchdogSec=(\d+)$", unit, re.MULTILINE)
    assert match is not None
    policy = Policy()
    assert policy.max_failures is not None
    give_up_after = sum(policy.backoff(n) for n in range(1, policy.max_failures))
    assert give_up_after < int(match.group(1)) / 2  # the ping interval is half of it


async def test_a_stalled_store_thread_is_reported_and_stops_the_watchdog_until_it_answers(
    network: synthetic.SyntheticNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    """The store thread busy for long (a stalled SD card): status still answers, with the
    store's counts (read on the reader connection), and says so; the watchdog stops pinging,
    and all is well again once the thread answers."""
    caplog.set_level(logging.INFO)
    home = await asyncio.to_thread(network.add_node, "a")
    daemon = FieldDaemon(await config_for(home, []), policy=FAST)
    daemon.HEALTH_SECONDS = 0.1
    daemon.STORE_ANSWER_SECONDS = 0.5
    await daemon.start()
    assert daemon.runtime is not None
    stall = threading.Event()
    stalled = asyncio.ensure_future(daemon.runtime.worker.call(lambda store: stall.wait(60)))
    try:

        async def unhealthy() -> bool:
            info = await component(home / "control.sock", "store")
            return "unhealthy" in info

        await wait_until(unhealthy)
        assert daemon.supervisor.healthy is False  # the watchdog pings no more
        status = await status_json(home)
        assert "store" in status["degraded"]
        assert status["components"]["store"]["unhealthy"].startswith("the store thread has not")
        # Its counts come through the reader connection, which the busy thread does not hold.
        assert "store_error" not in status and status["items_total"] == 1  # the manifest
        stall.set()
        assert await stalled is True

        async def answers_again() -> bool:
            return (
                daemon.supervisor.healthy
                and not (await component(home / "control.sock", "store"))["degraded"]
            )

        await wait_until(answers_again)
    finally:
        stall.set()
        await daemon.stop()
    assert any("the store thread answers again" in r.getMessage() for r in caplog.records)


@pytest.mark.netns
def test_discovery_recovers_when_its_interface_comes_up(tmp_path: Path) -> None:
    """Real zeroconf in a network namespace of its own: discovery fails for real while the
    configured interface has no address, and works once the interface comes up - the
    daemon never stops syncing meanwhile."""
    home = synthetic.create_network(tmp_path / "net").add_node("a")
    env = clean_env(
        FIELDSYNC_DISCOVERY_ENABLED="1",
        FIELDSYNC_DISCOVERY_INTERFACES="fs0",
        FIELDSYNC_DISCOVERY_ROTATE_MINUTES="0.05",
    )
    script = f"ip link set lo up && exec {' '.join(FIELDSYNC)} --home {home} run --json" + (
        " --listen 127.0.0.1:0"
    )
    daemon = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def status() -> dict[str, Any]:
        done = subprocess.run(
            [*FIELDSYNC, "--home", str(home), "status", "--json"],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    def until(check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while True:
            data = status()
            if data["daemon"] and check(data):
                return data
            assert daemon.poll() is None, daemon.communicate()[1]
            assert time.monotonic() < deadline, data
            time.sleep(0.2)

    try:
        assert daemon.stdout is not None and daemon.stdout.readline()  # listening
        down = until(lambda d: "discovery" in d["degraded"])
        assert down["discovery"] is False
        assert down["components"]["discovery"]["last_error"] == (
            "DiscoveryUnavailable: no IPv4 address on fs0"
        )
        in_namespace = ["nsenter", f"--target={daemon.pid}", "--net", "ip"]
        for args in (
            # A veth pair inside the daemon's own namespace: what it multicasts stays there.
            ["link", "add", "fs0", "type", "veth", "peer", "name", "fs0peer"],
            ["link", "set", "fs0peer", "up"],
            ["link", "set", "fs0", "up"],
            ["addr", "add", "10.99.0.1/24", "dev", "fs0"],
        ):
            subprocess.run([*in_namespace, *args], check=True, timeout=30)
        up = until(lambda d: d["discovery"] is True and "discovery" not in d["degraded"])
        assert up["components"]["discovery"]["state"] == "running"
        assert up["components"]["discovery"]["restarts"] >= 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            _, log = daemon.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            _, log = daemon.communicate()
    assert daemon.returncode == 0, log
    assert "discovery: announcing and browsing on 10.99.0.1" in log
    assert "Traceback" not in log
