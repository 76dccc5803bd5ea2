"""Quiet by default on a namespaced LAN (issue 11 item 2): what a watcher on the link sees.

Author A and relay R run real daemons with default ``[listen]`` (no ``--listen``) and
discovery on one bridge. A listens on nothing and announces nothing, yet finds R by browsing
and delivers its report by dialling; R listens on a port the kernel picked (not the old
project port 7341) and its announcements carry that port. A capture of the bridge shows it.
(An ex-member's old key recognising nothing after a rotation is shown by
test_revocation_netns.py.)

Every host is a network namespace created here; nothing sleeps to synchronise.
"""

from __future__ import annotations

import functools
import signal
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
from zeroconf._dns import DNSService
from zeroconf._protocol.incoming import DNSIncoming

from fieldsync.discovery import INSTANCE_LABEL_LENGTH
from tests.integration.field_support import (
    Daemon,
    Deployment,
    add_report,
    envelopes,
    status,
    wait_for,
    write_config,
)
from tests.integration.netns import Host, Network, read_pcap

pytestmark = pytest.mark.netns

DEADLINE = 90.0
OLD_PROJECT_PORT = 7341


def mdns_packets(frames: Sequence[bytes]) -> list[tuple[str, bytes]]:
    """(source IPv4 address, DNS payload) of every mDNS packet in ``frames``."""
    packets = []
    for frame in frames:
        if len(frame) < 34 or struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue
        ip = frame[14:]
        header = (ip[0] & 0x0F) * 4
        if ip[9] != 17 or 5353 not in struct.unpack_from("!HH", ip, header):
            continue
        packets.append((".".join(str(b) for b in ip[12:16]), ip[header + 8 :]))
    return packets


def announced_ports(frames: Sequence[bytes]) -> dict[str, set[int]]:
    """Ports in the SRV records each address sent for our instance names (only a name's
    owner sends its SRV record; goodbyes, TTL 0, left out)."""
    found: dict[str, set[int]] = {}
    for source, payload in mdns_packets(frames):
        for record in DNSIncoming(payload).answers():
            label = record.name.split(".")[0]
            is_ours = len(label) == INSTANCE_LABEL_LENGTH
            if isinstance(record, DNSService) and record.ttl > 0 and is_ours:
                found.setdefault(source, set()).add(record.port)
    return found


def listening_ports(host: Host) -> set[int]:
    """TCP ports in LISTEN state in ``host``'s namespace (its /proc/net/tcp{,6})."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in host.run(["cat", table]).stdout.splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def test_an_author_is_silent_on_the_lan_and_a_relay_announces_its_kernel_port(
    tmp_path: Path,
) -> None:
    root = tmp_path
    deployment = Deployment.create(root / "net", "Quiet LAN")
    homes = {
        "a": deployment.add_node("a", "author", author="monitor-a"),
        "r": deployment.add_node("r", "relay"),
    }
    with Network() as network:
        hosts = {name: network.add_host(name) for name in homes}
        pcap = root / "lan.pcap"
        daemons: dict[str, Daemon] = {}

        def explain() -> str:
            return "\n".join(f"--- {n}\n{d.tail(20)}" for n, d in daemons.items())

        try:
            with network.capture(pcap):
                for name in ("r", "a"):
                    config = write_config(root / f"{name}.toml", interfaces=(hosts[name].address,))
                    daemons[name] = Daemon(
                        name, hosts[name], homes[name], config, "", root / f"{name}.log"
                    ).start()
                assert daemons["a"].listening == []
                [relay_listen] = daemons["r"].listening
                relay_host, _, port_text = relay_listen.rpartition(":")
                relay_port = int(port_text)
                assert relay_host == "0.0.0.0"  # noqa: S104 - a relay serves the LAN
                assert relay_port != OLD_PROJECT_PORT
                # The web app is the author's one listener, on loopback (7343, not the LAN).
                assert listening_ports(hosts["a"]) <= {7343}
                assert relay_port in listening_ports(hosts["r"])

                add_report(homes["a"], "dialled out to a relay it heard")
                wait_for(
                    functools.partial(lambda home: envelopes(home) >= 1, homes["r"]),
                    DEADLINE,
                    "R to receive A's report",
                    explain,
                )
                relay_target = f"{hosts['r'].address}:{relay_port}"
                targets = {p["target"]: p for p in status(homes["a"])["peers"]}
                assert targets[relay_target]["origin"] == "discovered"
                assert not status(homes["r"])["peers"]  # R never learnt of A to dial it

                def relay_announced() -> bool:
                    return bool(announced_ports(read_pcap(pcap)).get(hosts["r"].address))

                wait_for(relay_announced, DEADLINE, "R's announcement in the capture", explain)
        finally:
            for daemon in daemons.values():
                if daemon.alive():
                    daemon.stop(signal.SIGTERM)

    frames = read_pcap(pcap)
    ports = announced_ports(frames)
    assert ports == {hosts["r"].address: {relay_port}}  # A announced nothing at all
    # A did browse: it sent mDNS queries (and nothing else carries its address on 5353).
    assert any(source == hosts["a"].address for source, _ in mdns_packets(frames))
