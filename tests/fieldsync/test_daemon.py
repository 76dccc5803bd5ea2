"""The field daemon in-process on loopback: control API, static peers relaying, clean stop."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fieldsync import synthetic
from fieldsync.config import Config, load_config
from fieldsync.control import query, request
from fieldsync.daemon import FieldDaemon
from fieldsync.lognames import address_name
from fieldsync.node import Node
from fieldsync.peer import SyncOutcome
from fieldsync.runtime import Runtime
from tests.integration.evict_support import junk


@pytest.fixture
def network(tmp_path: Path) -> synthetic.SyntheticNetwork:
    return synthetic.create_network(tmp_path)


async def config_for(home: Path, **settings: object) -> Config:
    overrides = {
        "node.home": str(home),
        "listen.addresses": ["127.0.0.1:0"],
        "discovery.enabled": False,
        "privacy.offer_delay_minutes": 0,  # offer at once (timing privacy has its own tests)
        "sync.interval_seconds": 1,
        "sync.backoff_initial": 0.2,
        "sync.backoff_max": 1,
        **settings,
    }
    # Reading the config stats files (cwd, paths): off the event loop, as the CLI does.
    return await asyncio.to_thread(load_config, None, {}, overrides)


async def sync_once(home: Path, target: str) -> SyncOutcome:
    """One session from the node at ``home`` with ``target``, as ``fieldsync sync`` runs it."""
    runtime = await Runtime.open(home)
    try:
        return await runtime.sync_with(target)
    finally:
        await runtime.close()


async def wait_until(predicate, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.1)


async def test_control_api_reports_status_and_peers(network: synthetic.SyntheticNetwork) -> None:
    home = await asyncio.to_thread(network.add_node, "a")
    daemon = FieldDaemon(await config_for(home, **{"peers.static": ["127.0.0.1:9"]}))
    await daemon.start()
    try:
        socket = home / "control.sock"
        assert (
            await asyncio.to_thread(socket.stat)
        ).st_mode & 0o077 == 0  # only the node's own account may ask
        status = await query(socket, "status")
        assert status is not None and status["running"] is True
        assert status["items"]["manifest"] == 1
        assert status["listening"] and status["listening"][0].startswith("127.0.0.1:")

        async def failed_once() -> bool:
            peers = await query(socket, "peers")
            return bool(peers and peers["peers"] and peers["peers"][0]["failures"] >= 1)

        await wait_until(failed_once)
        peers = await query(socket, "peers")
        assert peers is not None
        assert peers["peers"][0]["target"] == "127.0.0.1:9"
        assert "cannot connect" in peers["peers"][0]["last_error"]
    finally:
        await daemon.stop()
    assert not await asyncio.to_thread((home / "control.sock").exists)
    assert await query(home / "control.sock", "status") is None


async def test_status_answers_while_the_event_loop_is_busy(
    network: synthetic.SyntheticNetwork,
) -> None:
    """The control API has its own thread: a long callback on the daemon's loop (a sync
    session's, say) does not hold ``status``, which still shows the store's counts and the
    loop's state as the loop last saw it."""
    home = await asyncio.to_thread(network.add_node, "a")
    daemon = FieldDaemon(await config_for(home))
    await daemon.start()
    socket = home / "control.sock"
    answered = threading.Event()
    answers: list[dict[str, Any] | None] = []
    answered_while_busy: list[bool] = []

    def ask() -> None:
        answers.append(request(socket, "status", 60.0))
        answered.set()

    asker = threading.Thread(target=ask)

    def long_callback() -> None:
        asker.start()
        # Busy, as a callback decrypting a flight is: nothing else runs on this loop until
        # it returns. The deadline only keeps a broken build from hanging the test.
        deadline = time.monotonic() + 60
        while not answered.is_set() and time.monotonic() < deadline:
            pass
        answered_while_busy.append(answered.is_set())

    try:
        assert await query(socket, "status") is not None  # the loop's state seen once
        asyncio.get_running_loop().call_soon(long_callback)
        await asyncio.sleep(0)  # the callback runs (and returns) before this resumes
        await asyncio.to_thread(asker.join, 60)
    finally:
        await daemon.stop()
    assert answered_while_busy == [True]
    (status,) = answers
    assert status is not None and status["running"] is True
    assert status["items"]["manifest"] == 1  # from the store
    assert status["listening"] and "components" in status  # the loop's last view
    assert not [t for t in threading.enumerate() if t.name == "fieldsync-control"]


async def test_daemons_relay_new_reports_and_receipts_through_static_peers(
    network: synthetic.SyntheticNetwork,
) -> None:
    a = await asyncio.to_thread(network.add_node, "a", author=True)
    b = await asyncio.to_thread(network.add_node, "b")
    daemon_b = FieldDaemon(await config_for(b))
    await daemon_b.start()
    assert daemon_b.server is not None
    host, port = daemon_b.server.addresses[0]
    daemon_a = FieldDaemon(await config_for(a, **{"peers.static": [f"{host}:{port}"]}))
    await daemon_a.start()
    try:
        node = Node(a)
        report_id = await asyncio.to_thread(
            node.add_report,
            {
                "narrative": "relay me",
                "categories": ["threats"],
                "occurred": {"start": "2025-03-01", "precision": "day", "approximate": False},
            },
            synthetic.PASSPHRASE,
        )
        node.close()
        assert report_id

        async def b_has_it() -> bool:
            status = await daemon_b.status()
            return bool(status["items"]["envelope"] == 1)

        await wait_until(b_has_it)  # noticed as a local change by A's daemon, then synced

        async def coded_ready() -> bool:
            # B's daemon keeps coded symbols of its ids ready for first contacts (§13.3.6)
            status = await daemon_b.status()
            return bool(status["coded_symbols"] == "ready")

        await wait_until(coded_ready)
    finally:
        await daemon_a.stop()
        await daemon_b.stop()


async def test_daemon_tells_systemd_it_is_ready_pings_the_watchdog_and_says_stopping(
    network: synthetic.SyntheticNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    home = await asyncio.to_thread(network.add_node, "a")
    path = home / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    received: list[str] = []

    async def heard(state: str) -> bool:
        while True:
            try:
                received.append(listener.recv(4096).decode())
            except BlockingIOError:
                break
        return any(state in message for message in received)

    daemon = FieldDaemon(await config_for(home))
    await daemon.start()
    try:
        await wait_until(lambda: heard("READY=1"))
        await wait_until(lambda: heard("WATCHDOG=1"))
        await wait_until(lambda: heard("STATUS=running"))  # no component degraded
    finally:
        await daemon.stop()
    await wait_until(lambda: heard("STOPPING=1"))
    listener.close()


async def test_both_sides_log_each_sync_and_the_dialler_logs_failed_dials(
    network: synthetic.SyntheticNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.INFO)
    a = await asyncio.to_thread(network.add_node, "a")
    b = await asyncio.to_thread(network.add_node, "b")
    daemon_b = FieldDaemon(await config_for(b))
    await daemon_b.start()
    assert daemon_b.server is not None
    host, port = daemon_b.server.addresses[0]
    static = [f"{host}:{port}", "127.0.0.1:9"]
    daemon_a = FieldDaemon(await config_for(a, **{"peers.static": static}))
    await daemon_a.start()
    try:

        async def logged() -> bool:
            text = [r.getMessage() for r in caplog.records]
            dialled = [t for t in text if t.startswith("synced with peer-") and "dialled" in t]
            accepted = [t for t in text if t.startswith("synced with peer-") and "accepted" in t]
            refused = [t for t in text if t == f"cannot reach {address_name('127.0.0.1:9')}"]
            return bool(dialled and accepted and refused)

        await wait_until(logged)
    finally:
        await daemon_a.stop()
        await daemon_b.stop()
    synced = [r.getMessage() for r in caplog.records if r.getMessage().startswith("synced with")]
    assert all(re.search(r"\d+ items in \(\d+ new\), \d+ out, \d+\.\d s$", t) for t in synced)
    # Pseudonyms, not keys: the same peer has one name in a node's log, and none is a key.
    names = {t.split()[2] for t in synced if "dialled" in t}
    assert len(names) == 1 and re.fullmatch(r"peer-[a-z2-7]{8}", names.pop())
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "fieldsync.sync")
    # Addresses only at DEBUG level (issue #11): no INFO line names the peer's address.
    info = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO and not r.getMessage().startswith("serving sync on")  # own
    ]
    assert not [t for t in info if f":{port}" in t or "127.0.0.1:9" in t or "tcp:127" in t]


async def test_the_hub_keeps_no_access_log_of_field_addresses(
    network: synthetic.SyntheticNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    hub = await asyncio.to_thread(network.add_node, "hub", role="hub")
    a = await asyncio.to_thread(network.add_node, "a")
    daemon = FieldDaemon(await config_for(hub, **{"hub.enabled": True}))
    await daemon.start()
    try:
        assert daemon.server is not None and daemon.runtime is not None
        host, port = daemon.server.addresses[0]
        outcome = await sync_once(a, f"ws://{host}:{port}/sync")
        assert outcome.complete
    finally:
        await daemon.stop()
    assert not [r for r in caplog.records if r.name == "aiohttp.access"]
    assert not [r for r in caplog.records if "Python/" in r.getMessage()]  # no User-Agent


async def test_a_session_that_brings_items_wakes_the_janitor_loop(
    network: synthetic.SyntheticNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The running daemon's janitor loop wakes on the nudge after a session that brought new
    items and fits the disk budget then (SPEC.md §14.2), not at its next pass: with passes a
    year apart, only the nudge can have evicted."""
    monkeypatch.setattr(FieldDaemon, "JANITOR_SECONDS", 365 * 86_400.0)
    relay = await asyncio.to_thread(network.add_node, "relay")
    flooder = await asyncio.to_thread(network.add_node, "flooder")
    await asyncio.to_thread(
        synthetic.fill_store, flooder, network.manifest, junk(network.manifest, 40, size_class=7)
    )
    daemon = FieldDaemon(await config_for(relay, **{"storage.disk_budget_mb": 1}))
    await daemon.start()
    try:
        janitor, runtime = daemon.janitor, daemon.runtime
        assert janitor is not None and runtime is not None and daemon.server is not None
        await janitor.counted(passes=1)  # the pass at start, before anything came in
        host, port = daemon.server.addresses[0]
        outcome = await sync_once(flooder, f"{host}:{port}")
        assert outcome.complete and outcome.stats.items_sent == 40
        async with asyncio.timeout(60):  # a hang guard: without the wake-up, a year
            await janitor.counted(fits=1)
        assert janitor.passes == 1
        assert await runtime.worker.call(lambda store: store.used_bytes()) <= 1024 * 1024
    finally:
        await daemon.stop()
