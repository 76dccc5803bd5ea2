"""Quiet by default (issue 11 item 2), in-process on loopback: an author's node listens on
nothing and still delivers by dialling; a relay listens on a port the kernel picks, never a
project constant; the hub must be told where to listen. What the LAN sees (no announcement
from the author, the relay's port in its own) is in tests/integration/test_quiet_netns.py.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from fieldsync import synthetic
from fieldsync.config import Config, ConfigError, load_config
from fieldsync.daemon import FieldDaemon
from fieldsync.node import Node

#: The port every node listened on until issue 11; nothing may use it by default any more.
OLD_PROJECT_PORT = 7341


@pytest.fixture
def network(tmp_path: Path) -> synthetic.SyntheticNetwork:
    return synthetic.create_network(tmp_path)


async def default_config(home: Path, **settings: object) -> Config:
    """The defaults but for what a test on a shared machine must set: no discovery, no web
    app (it has its own loopback listener, not a sync one), fast retries."""
    overrides = {
        "node.home": str(home),
        "discovery.enabled": False,
        "web.listen": "",
        "privacy.offer_delay_minutes": 0,  # offer at once (timing privacy has its own tests)
        "sync.interval_seconds": 1,
        "sync.backoff_initial": 0.2,
        "sync.backoff_max": 1,
        **settings,
    }
    return await asyncio.to_thread(load_config, None, {}, overrides)


def listening_ports_of_this_process() -> set[int]:
    """TCP ports in LISTEN state held by a socket of this process (``/proc/net/tcp{,6}``
    matched with our own file descriptors by socket inode)."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed while we looked
        if target.startswith("socket:["):
            ours.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table, encoding="ascii") as lines:
            next(lines)  # the header
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and inode in ours:  # 0A: TCP_LISTEN
                    ports.add(int(local.rpartition(":")[2], 16))
    return ports


async def add_report(home: Path, narrative: str) -> None:
    node = Node(home)
    try:
        await asyncio.to_thread(
            node.add_report,
            {
                "narrative": narrative,
                "categories": ["threats"],
                "occurred": {"start": "2025-03-01", "precision": "day", "approximate": False},
            },
            synthetic.PASSPHRASE,
        )
    finally:
        node.close()


async def wait_until(predicate, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await predicate():
        assert loop.time() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.1)


async def test_an_author_listens_nowhere_and_delivers_by_dialling_a_relay_on_a_kernel_port(
    network: synthetic.SyntheticNetwork,
) -> None:
    author = await asyncio.to_thread(network.add_node, "a", author=True)
    relay = await asyncio.to_thread(network.add_node, "r")
    other = await asyncio.to_thread(network.add_node, "s")
    before = await asyncio.to_thread(listening_ports_of_this_process)
    relay_daemon = FieldDaemon(await default_config(relay))
    other_daemon = FieldDaemon(await default_config(other))
    await relay_daemon.start()
    await other_daemon.start()
    daemons = [relay_daemon, other_daemon]
    try:
        assert relay_daemon.server is not None and other_daemon.server is not None
        [(host, port)] = relay_daemon.server.addresses
        [(_, other_port)] = other_daemon.server.addresses
        assert host == "0.0.0.0"  # noqa: S104 - the relay's default serves the LAN
        assert OLD_PROJECT_PORT not in (port, other_port)
        assert port != other_port  # the kernel's pick, per start: no shared port marks them
        now = await asyncio.to_thread(listening_ports_of_this_process)
        assert now - before == {port, other_port}

        author_daemon = FieldDaemon(
            await default_config(author, **{"peers.static": [f"127.0.0.1:{port}"]})
        )
        await author_daemon.start()
        daemons.append(author_daemon)
        status = await author_daemon.status()
        assert status["role"] == "author" and status["listening"] == []
        assert author_daemon.server is not None and author_daemon.server.addresses == []
        # Nothing new listens: the author's daemon opened no TCP listener at all.
        now = await asyncio.to_thread(listening_ports_of_this_process)
        assert now - before == {port, other_port}

        await add_report(author, "dialled out, never listened")

        async def relay_has_it() -> bool:
            return bool((await relay_daemon.status())["items"]["envelope"] == 1)

        await wait_until(relay_has_it)
    finally:
        for daemon in reversed(daemons):
            await daemon.stop()


async def test_an_author_that_sets_an_address_listens_there(
    network: synthetic.SyntheticNetwork,
) -> None:
    author = await asyncio.to_thread(network.add_node, "a", author=True)
    daemon = FieldDaemon(await default_config(author, **{"listen.addresses": ["127.0.0.1:0"]}))
    await daemon.start()
    try:
        [listening] = (await daemon.status())["listening"]
        assert listening.startswith("127.0.0.1:")
    finally:
        await daemon.stop()


async def test_the_hub_without_a_listen_address_refuses_to_start_and_says_what_to_set(
    network: synthetic.SyntheticNetwork,
) -> None:
    hub = await asyncio.to_thread(network.add_node, "h")
    daemon = FieldDaemon(await default_config(hub, **{"hub.enabled": True}))
    with pytest.raises(ConfigError, match=r"hub needs \[listen\] addresses.*127\.0\.0\.1:7342"):
        await daemon.start()
    # Nothing stays behind: the home is unlocked and a correct start works.
    daemon = FieldDaemon(
        await default_config(hub, **{"hub.enabled": True, "listen.addresses": ["127.0.0.1:0"]})
    )
    await daemon.start()
    try:
        assert daemon.server is not None and len(daemon.server.addresses) == 1
    finally:
        await daemon.stop()
