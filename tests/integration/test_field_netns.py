"""The daemon in the field, on a namespaced multi-host network (issue 4 "Must show").

The story: author A, relay B and connected node C share a LAN (one bridge); the HQ hub H is
on a private line to C only. Only A–B are linked at first. A writes 5 reports; B finds A by
zeroconf and takes them; A walks away and C arrives; B finds C; C pushes to H; HQ ingests
from the hub exactly once; receipts go back H → C → B → A; A sees "delivered" and the relays
hold nothing. A passive capture of the bridge sees no identity, key or content, and an
outsider (another network) on the same bridge is found by nobody and gets 0 bytes.

A second, smaller network (A–B on a LAN, H on B's line) shows that SIGTERM and kill -9 of the
relay and a wall clock a year ahead or behind change nothing about delivery.

Every host is a network namespace created here; discovery is bound to namespace addresses
only. Every wait polls observable state (``status --json``, ``peers --json``, ``report list
--json``, the HQ export) under a generous deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import secrets
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fieldsync.hq import HQ
from fieldsync.node import Node
from tests.integration.field_support import (
    HUB_PORT,
    PASSPHRASE,
    PORT,
    Daemon,
    Deployment,
    Uplink,
    add_report,
    add_uplink,
    dns_labels,
    envelopes,
    peer_hosts,
    peers,
    receipts,
    report_statuses,
    status,
    tcp_segments,
    wait_for,
    write_config,
)
from tests.integration.netns import Host, Network, read_pcap

pytestmark = pytest.mark.netns

#: Per step; a normal run needs a few seconds for each.
DEADLINE = 90.0
REPORTS = 5


def marker() -> str:
    """A unique string that can only be on the wire if report text leaks."""
    return f"xq{secrets.token_hex(10)}"


def hub_url(uplink: Uplink) -> str:
    return f"ws://{uplink.far.address}:{HUB_PORT}/sync"


def start_daemon(
    name: str,
    host: Host | Any,
    home: Path,
    root: Path,
    *,
    hub: bool = False,
    upstream: str | None = None,
    static: tuple[str, ...] = (),
    clock: str | None = None,
) -> Daemon:
    """A daemon with discovery on the host's LAN address only (none for the hub)."""
    config = write_config(
        root / f"{name}.toml",
        interfaces=() if hub else (host.address,),
        static=static,
        upstream=upstream,
    )
    listen = f"{host.address}:{HUB_PORT if hub else PORT}"
    daemon = Daemon(name, host, home, config, listen, root / f"{name}.log", hub=hub)
    return daemon.start(clock=clock)


def explain(daemons: dict[str, Daemon]) -> str:
    """What each node holds and knows, and its log tail: the message of a failed wait."""
    parts = []
    for name, daemon in daemons.items():
        try:
            info = status(daemon.home)
            state = f"items {info['items']} outbox {info['outbox']} peers {info.get('peers')}"
        except AssertionError as exc:
            state = f"status failed: {exc}"
        parts.append(f"--- {name} (alive={daemon.alive()}): {state}\n{daemon.tail(15)}")
    return "\n".join(parts)


# --- the story ------------------------------------------------------------------------------


@dataclass
class FieldRun:
    network: Network
    deployment: Deployment
    outsider: Deployment
    hosts: dict[str, Host]
    uplink: Uplink
    daemons: dict[str, Daemon]
    pcap: Path
    markers: list[str]
    ingests: list[dict[str, Any]] = field(default_factory=list)
    #: Every scheduler target each member's daemon reported in any status poll of the run.
    seen_targets: dict[str, set[str]] = field(default_factory=dict)

    def observe(self, name: str) -> dict[str, Any]:
        info = status(self.daemons[name].home)
        self.seen_targets.setdefault(name, set()).update(p["target"] for p in info["peers"])
        return info

    def explain(self) -> str:
        return explain(self.daemons)


@pytest.fixture(scope="module")
def field_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FieldRun]:
    root = tmp_path_factory.mktemp("field")
    deployment = Deployment.create(root / "net", "Coastal monitors")
    homes = {
        "a": deployment.add_node("a", "author", author="monitor-a"),
        "b": deployment.add_node("b", "relay"),
        "c": deployment.add_node("c", "relay"),
        "h": deployment.add_node("h", "hub"),
    }
    outsider = Deployment.create(root / "other", "Another network")
    homes["x"] = outsider.add_node("x", "relay")

    with Network() as network:
        hosts = {name: network.add_host(name) for name in ("a", "b", "c", "x")}
        uplink = add_uplink(network, hosts["c"], "h")
        hosts["c"].link_down()  # C has not arrived yet
        pcap = root / "bridge.pcap"
        with network.capture(pcap):
            dialled_by_outsider = tuple(f"{hosts[n].address}:{PORT}" for n in "abc")
            daemons = {
                "h": start_daemon("h", uplink.far, homes["h"], root, hub=True),
                "a": start_daemon("a", hosts["a"], homes["a"], root),
                "b": start_daemon("b", hosts["b"], homes["b"], root),
                "c": start_daemon("c", hosts["c"], homes["c"], root, upstream=hub_url(uplink)),
                # The outsider dials every member itself (as if it had guessed them), so
                # "0 bytes back" is tested against real attempts, not mere silence.
                "x": start_daemon("x", hosts["x"], homes["x"], root, static=dialled_by_outsider),
            }
            run = FieldRun(
                network,
                deployment,
                outsider,
                hosts,
                uplink,
                daemons,
                pcap,
                markers=[marker() for _ in range(REPORTS)],
            )
            _tell_the_story(run)
        try:
            yield run
        finally:
            for daemon in daemons.values():  # as systemd would stop them
                if daemon.alive():
                    daemon.stop(signal.SIGTERM)


def _tell_the_story(run: FieldRun) -> None:
    a, b, h = (run.daemons[n].home for n in "abh")
    hosts = run.hosts
    why = run.explain

    # A writes 5 reports; B finds A by zeroconf (no member has static peers), takes them.
    for text in run.markers:
        add_report(a, f"Checkpoint at the river crossing, ref {text}. Two held overnight.")
    assert report_statuses(a) == ["sealed"] * REPORTS
    wait_for(
        lambda: run.observe("b")["items"]["envelope"] == REPORTS,
        DEADLINE,
        "B to take A's 5 reports",
        why,
    )
    assert hosts["a"].address in peer_hosts(b, "discovered")

    # A walks out of range; C arrives. B finds C by zeroconf, C takes the reports.
    hosts["a"].link_down()
    hosts["c"].link_up()
    wait_for(
        lambda: run.observe("c")["items"]["envelope"] == REPORTS,
        DEADLINE,
        "C to take the reports from B",
        why,
    )
    wait_for(
        lambda: hosts["c"].address in peer_hosts(b, "discovered"),
        DEADLINE,
        "B to list C as a discovered peer",
        why,
    )

    # C reaches the hub on its line; HQ ingests from the hub: all 5, exactly once.
    wait_for(lambda: envelopes(h) == REPORTS, DEADLINE, "the hub to hold the 5 reports", why)
    first = run.deployment.ingest(hub_url(run.uplink), run.uplink.far)
    second = run.deployment.ingest(hub_url(run.uplink), run.uplink.far)
    run.ingests = [first, second]

    # Receipts flow back: hub → C → B. Then C leaves and A returns: B → A.
    wait_for(
        lambda: (s := run.observe("c")["items"])["envelope"] == 0 and s["receipt"] > 0,
        DEADLINE,
        "C to get the receipts and purge",
        why,
    )
    wait_for(
        lambda: (s := run.observe("b")["items"])["envelope"] == 0 and s["receipt"] > 0,
        DEADLINE,
        "B to get the receipts from C and purge",
        why,
    )
    hosts["c"].link_down()
    hosts["a"].link_up()
    wait_for(
        lambda: bool(run.observe("a")) and report_statuses(a) == ["delivered"] * REPORTS,
        DEADLINE,
        "A to see all 5 reports delivered",
        why,
    )
    for name in "bc":
        run.observe(name)


def test_reports_cross_by_discovery_reach_hq_once_and_receipts_come_back(
    field_run: FieldRun,
) -> None:
    run = field_run
    first, second = run.ingests
    counts = (first["new"], first["duplicate"], first["quarantined"], first["forks"])
    assert counts == (REPORTS, 0, 0, 0)
    assert first["gaps"] == {}
    assert first["hub"]["receipts_new"] >= 1
    # Nothing new the second time, and nothing offered again: the hub purged what HQ receipted.
    assert (second["new"], second["duplicate"], second["quarantined"]) == (0, 0, 0)

    rows = run.deployment.export()
    assert len(rows) == REPORTS
    for text in run.markers:
        assert sum(text in row["narrative"] for row in rows) == 1

    # A: every report delivered. B, C and the hub: no report left, only receipts.
    a = run.daemons["a"].home
    assert report_statuses(a) == ["delivered"] * REPORTS
    for name in "abch":
        info = status(run.daemons[name].home)
        assert info["items"]["envelope"] == 0, (name, info["items"])
    for name in "bc":
        assert receipts(run.daemons[name].home) >= 1
    # The relays met each other by discovery: no static peers were configured.
    assert {p["origin"] for name in "abc" for p in peers(run.daemons[name].home)} == {
        "discovered",
        "upstream",
    }


def test_the_bridge_capture_shows_no_identity_key_or_content(field_run: FieldRun) -> None:
    run = field_run
    frames = read_pcap(run.pcap)
    segments = tcp_segments(frames)
    members = {run.hosts[n].address for n in "abc"}
    # The capture saw the story: sync sessions between the members on the bridge.
    assert sum(len(s.payload) for s in segments if {s.source, s.destination} <= members) > 10_000

    forbidden: dict[bytes, str] = {b"fieldsync": "the app name"}
    homes = {name: d.home for name, d in run.daemons.items()}
    homes["hq-node"] = run.deployment.hq / "node"
    for name, home in homes.items():
        if not (home / "membership.bin").exists():
            continue
        node = Node(home)
        try:
            member = node.membership()
        finally:
            node.close()
        forbidden[member.certificate_info.node_key] = f"{name}'s node key"
        certificate = member.certificate
        for i in range(len(certificate) - 15):
            forbidden[certificate[i : i + 16]] = f"{name}'s certificate bytes {i}..{i + 16}"
        forbidden[member.network_key] = f"{name}'s network key"
        forbidden[member.manifest.network_id] = f"{name}'s network id"
    for deployment in (run.deployment, run.outsider):
        hq = HQ(deployment.hq, passphrase=PASSPHRASE)
        try:
            for key, author in hq.enrolled_authors().items():
                forbidden[key] = f"author key of {author}"
        finally:
            hq.close()
    assert any(v.startswith("author key") for v in forbidden.values())
    for text in run.markers:
        forbidden[text.encode()] = "report text"
    forbidden[b"river crossing"] = "report text"
    names = [host.namespace for host in run.hosts.values()] + [run.uplink.far.namespace]
    hostname = socket.gethostname()
    names.append(hostname)
    for name in names:
        # A very short hostname ("vm") occurs by chance in ciphertext; it is checked as a
        # DNS label below instead.
        if len(name) >= 6:
            forbidden[name.encode()] = f"host name {name}"

    for number, frame in enumerate(frames):
        lowered = frame.lower()
        leaks = [what for needle, what in forbidden.items() if needle in frame]
        if b"fieldsync" in lowered:
            leaks.append("the app name (any case)")
        assert not leaks, f"frame {number} carries {sorted(set(leaks))}"

    labels = dns_labels(frames)
    assert labels, "the capture holds mDNS traffic"
    for name in names:
        assert name.lower() not in labels
        if len(name) >= 6:  # shorter ones could occur by chance inside a base32 pseudonym
            assert not any(name.lower() in label for label in labels)


def test_an_outsider_on_the_bridge_is_found_by_nobody_and_gets_no_bytes(
    field_run: FieldRun,
) -> None:
    run = field_run
    outsider = run.hosts["x"].address
    members = {run.hosts[n].address for n in "abc"}
    for name in "abc":
        now = {p["target"] for p in peers(run.daemons[name].home)}
        seen = run.seen_targets.get(name, set()) | now
        assert not any(t.startswith(f"{outsider}:") for t in seen), (name, seen)
    # Nor does the outsider recognise a member: its only targets are the static ones it was
    # given, and none of its sessions ever completed.
    x_peers = peers(run.daemons["x"].home)
    assert {p["origin"] for p in x_peers} == {"static"}
    assert all(p["last_success"] is None for p in x_peers), x_peers
    assert all(p["failures"] > 0 or p["in_flight"] for p in x_peers), x_peers

    segments = tcp_segments(read_pcap(run.pcap))
    out = [s for s in segments if s.source == outsider and s.destination in members]
    back = [s for s in segments if s.source in members and s.destination == outsider]
    sent = sum(len(s.payload) for s in out)
    received = sum(len(s.payload) for s in back)
    # The outsider did try (handshake first messages to members), and got not one byte back.
    assert sent > 0
    assert received == 0, f"{received} bytes went from members to the outsider"
    # Its connections reached the members' listeners (their SYN/ACKs are there), so the 0
    # is the members' silence, not a connection that never opened. (C was on the bridge
    # only for a while; A and B from the start.)
    answered = {s.source for s in back if s.sport == PORT}
    assert {run.hosts["a"].address, run.hosts["b"].address} <= answered


# --- restarts and wrong clocks --------------------------------------------------------------


@pytest.mark.faketime
def test_relay_restarts_and_a_wrong_clock_lose_nothing(tmp_path: Path) -> None:
    """A–B on a LAN, the hub on B's line. B runs a year behind, then a year ahead; it is
    stopped by SIGTERM and killed with -9 while it is the only carrier; all reach HQ once."""
    root = tmp_path
    deployment = Deployment.create(root / "net", "Restart drill")
    a_home = deployment.add_node("a", "author", author="monitor-r")
    b_home = deployment.add_node("b", "relay")
    h_home = deployment.add_node("h", "hub")
    markers = [marker() for _ in range(REPORTS)]

    with Network(subnet="10.79.0") as network:
        a_host, b_host = network.add_host("a"), network.add_host("b")
        uplink = add_uplink(network, b_host, "h", subnet="10.80.0")
        uplink.down()  # B cannot reach the hub yet: it must carry the reports itself
        url = hub_url(uplink)
        daemons = {
            "h": start_daemon("h", uplink.far, h_home, root, hub=True),
            "a": start_daemon("a", a_host, a_home, root),
            "b": start_daemon("b", b_host, b_home, root, upstream=url, clock="-365d"),
        }

        def why() -> str:
            return explain(daemons)

        def restart_b(clock: str | None) -> None:
            daemons["b"].start(clock=clock)

        def b_wall_clock() -> float:
            """When B's current daemon last synced with A, by B's own wall clock."""
            last: list[float] = []

            def synced() -> bool:
                last[:] = [
                    p["last_success"]
                    for p in peers(b_home)
                    if p["target"].startswith(f"{a_host.address}:") and p["last_success"]
                ]
                return bool(last)

            wait_for(synced, DEADLINE, "B to complete a session it started with A", why)
            return last[0]

        # B, a year behind, takes 3 reports.
        for text in markers[:3]:
            add_report(a_home, f"Land survey team turned back, ref {text}.")
        wait_for(lambda: envelopes(b_home) == 3, DEADLINE, "B to take 3 reports", why)
        # B's daemon really lives a year behind: it stamps its sessions with its wall clock.
        assert b_wall_clock() < time.time() - 300 * 86400

        # A leaves; B is the only carrier. SIGTERM, and back a year *ahead*: relative TTLs
        # must not expire what B received "two years earlier".
        a_host.link_down()
        assert daemons["b"].stop(signal.SIGTERM) == 0
        assert envelopes(b_home) == 3
        restart_b("+365d")
        assert envelopes(b_home) == 3

        # A returns with 2 more; B takes them and is killed at once (kill -9).
        a_host.link_up()
        for text in markers[3:]:
            add_report(a_home, f"Land survey team turned back, ref {text}.")
        wait_for(lambda: envelopes(b_home) == REPORTS, DEADLINE, "B to take all 5", why)
        assert b_wall_clock() > time.time() + 300 * 86400  # a year ahead
        a_host.link_down()
        assert daemons["b"].stop(signal.SIGKILL) == -signal.SIGKILL
        assert envelopes(b_home) == REPORTS  # acknowledged = durable

        # Back a year ahead; the line to the hub comes up; all 5 reach HQ exactly once.
        restart_b("+365d")
        uplink.up()
        wait_for(lambda: envelopes(h_home) == REPORTS, DEADLINE, "the hub to hold all 5", why)
        first = deployment.ingest(url, uplink.far)
        second = deployment.ingest(url, uplink.far)
        assert (first["new"], first["duplicate"], first["quarantined"]) == (REPORTS, 0, 0)
        assert first["gaps"] == {}
        assert (second["new"], second["duplicate"]) == (0, 0)
        rows = deployment.export()
        found = [m for row in rows for m in markers if m in row["narrative"]]
        assert sorted(found) == sorted(markers)

        # Receipts: hub → B (still a year ahead), then A returns and hears "delivered".
        wait_for(
            lambda: (s := status(b_home)["items"])["envelope"] == 0 and s["receipt"] > 0,
            DEADLINE,
            "B to get the receipts and purge",
            why,
        )
        a_host.link_up()
        wait_for(
            lambda: report_statuses(a_home) == ["delivered"] * REPORTS,
            DEADLINE,
            "A to see all 5 delivered",
            why,
        )
        assert envelopes(b_home) == 0
        assert daemons["b"].stop(signal.SIGTERM) == 0
