"""Real zeroconf discovery between processes on a private bridge (DESIGN §4, issue 4, T21).

Every host is a network namespace created here (see ``netns.py``); each agent binds only
to its namespace's address, so no packet can reach the machine's real interfaces. Tests
wait on what the agents report (JSON lines), with deadlines; nothing sleeps to synchronise.
Rotation runs every ~2 s so several periods fit in a few seconds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from base64 import b32encode, b64encode
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# The record classes live in zeroconf's submodules; its top level re-exports them only for
# backwards compatibility (not in __all__).
from zeroconf._dns import DNSAddress, DNSNsec, DNSPointer, DNSService, DNSText
from zeroconf._protocol.incoming import DNSIncoming

from fieldsync.discovery import DEFAULT_SERVICE_TYPE, HOST_LABEL_LENGTH, INSTANCE_LABEL_LENGTH
from fieldsync_protocol.crypto import derive_key
from tests.integration.netns import Host, Network, read_pcap

pytestmark = pytest.mark.netns

AGENT = Path(__file__).with_name("discovery_agent.py")
ROTATE_SECONDS = 2.0
SERVICE_TYPE = DEFAULT_SERVICE_TYPE
DEADLINE = 40.0  # generous for a loaded CI box; a normal run settles in ~8 s


# -- agents ----------------------------------------------------------------------------------

_changed = threading.Condition()


@dataclass
class Agent:
    """A ``discovery_agent.py`` process in one host, and what it has reported so far."""

    host: Host
    port: int
    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, host: Host, key: bytes, port: int) -> Agent:
        proc = host.popen(
            [
                sys.executable,
                str(AGENT),
                "--key",
                key.hex(),
                "--address",
                host.address,
                "--port",
                str(port),
                "--rotate",
                str(ROTATE_SECONDS),
                "--service-type",
                SERVICE_TYPE,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        agent = cls(host, port, proc)
        threading.Thread(target=agent._read_stdout, daemon=True).start()
        threading.Thread(target=agent._read_stderr, daemon=True).start()
        return agent

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            with _changed:
                self.events.append(event)
                _changed.notify_all()
        with _changed:
            self.events.append({"event": "exited"})
            _changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def snapshot(self) -> list[dict[str, Any]]:
        with _changed:
            return list(self.events)

    def peer_hosts(self, since: int = 0) -> list[str]:
        """Addresses in ``peer`` events, in order, from event index ``since`` on."""
        return [e["host"] for e in self.snapshot()[since:] if e["event"] == "peer"]

    def gone_hosts(self) -> set[str]:
        return {e["host"] for e in self.snapshot() if e["event"] == "gone"}

    def announced(self, since: int = 0) -> list[str]:
        return [e["name"] for e in self.snapshot()[since:] if e["event"] == "announce"]

    def mark(self) -> int:
        return len(self.snapshot())

    def stop(self) -> None:
        """SIGTERM, as systemd would: the agent says goodbye and reports ``stopped``."""
        self.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: self.proc.poll() is not None, 15, f"{self.host.name} to exit")
        assert self.proc.returncode == 0, "".join(self.stderr)
        assert self.snapshot()[-2:] == [{"event": "stopped"}, {"event": "exited"}]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Block until ``condition()`` holds, re-checking whenever an agent reports something."""
    deadline = time.monotonic() + timeout
    with _changed:
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            # The timeout only bounds how long a condition that is not event-driven (process
            # exit) goes unnoticed; the wake-ups that matter come from notify_all.
            _changed.wait(min(remaining, 0.2))


@pytest.fixture
def network() -> Iterator[Network]:
    with Network() as net:
        yield net


def test_members_find_each_other_outsider_stays_invisible_and_the_wire_says_nothing(
    network: Network, tmp_path: Path
) -> None:
    key, outsider_key = os.urandom(32), os.urandom(32)
    member_hosts = [network.add_host(name) for name in ("a", "b", "c")]
    outsider_host = network.add_host("x")
    pcap = tmp_path / "bridge.pcap"

    with network.capture(pcap):
        members = [Agent.start(h, key, 7001 + i) for i, h in enumerate(member_hosts)]
        outsider = Agent.start(outsider_host, outsider_key, 7100)
        everyone = [*members, outsider]

        def settled() -> bool:
            for m in members:
                others = {o.host.address for o in members if o is not m}
                if not others <= set(m.peer_hosts()):
                    return False
            # Three periods each, so the capture shows rotation and the outsider has had
            # three chances to be (wrongly) recognised and to (wrongly) recognise.
            return all(len(a.announced()) >= 3 for a in everyone)

        wait_until(settled, DEADLINE, "members to find each other over 3 rotations")

        # A goodbye makes the others drop a member at once (no waiting for TTL expiry).
        outsider.stop()
        members[0].stop()
        wait_until(
            lambda: all(member_hosts[0].address in m.gone_hosts() for m in members[1:]),
            10,
            "the others to see a's goodbye",
        )
        for m in members[1:]:
            m.stop()

    # Membership: members found exactly the members, with their ports; the outsider nobody.
    for m in members:
        seen = {(e["host"], e["port"]) for e in m.snapshot() if e["event"] == "peer"}
        assert seen == {(o.host.address, o.port) for o in members if o is not m}
    assert outsider.peer_hosts() == []

    wire = _parse_capture(pcap)
    addresses = {h.address for h in [*member_hosts, outsider_host]}

    # The negative results mean something: the outsider's announcements did reach the
    # members (and theirs reached it), three periods' worth each.
    assert set(wire.instance_labels) == addresses
    for agent in everyone:
        announced = {n.removesuffix("." + SERVICE_TYPE) for n in agent.announced()}
        assert announced <= set(wire.instance_labels[agent.host.address])

    # Nothing but pseudonyms, the service type and addresses (T21, issue 4 "Must show").
    assert wire.unexpected_names == set()
    assert wire.txt_payloads == {b"\x00"}, "TXT must be the empty record"
    assert wire.a_records <= addresses
    assert wire.non_mdns_udp == []

    forbidden = {b"fieldsync"}
    hostname = socket.gethostname().lower().encode()
    # A shorter name would match random bytes too easily; the DNS name check covers it.
    if len(hostname) >= 6:
        forbidden.add(hostname)
    for k in (key, outsider_key):
        for secret in (k, derive_key(k, b"discovery")):
            forbidden |= {secret.hex().encode(), b64encode(secret), b32encode(secret).lower()}
            forbidden |= {secret[i : i + 8] for i in range(len(secret) - 7)}
    for frame in wire.frames:
        lowered = frame.lower()
        leaks = sorted(repr(f) for f in forbidden if f in frame or f in lowered)
        assert not leaks, f"capture contains {leaks}"

    # Rotation: >= 3 distinct instance and host labels per host, and none shares a 6-byte
    # substring with another, so names from different periods cannot be linked by content.
    for address in addresses:
        instance = wire.instance_labels[address]
        hosts = wire.host_labels[address]
        assert len(instance) >= 3
        assert len(hosts) >= 3
        labels = [*instance, *hosts]
        for i, first in enumerate(labels):
            for second in labels[i + 1 :]:
                assert _common_substring(first, second, 6) is None, (first, second)


def test_a_member_that_drops_off_the_link_is_rediscovered_when_it_returns(
    network: Network,
) -> None:
    key = os.urandom(32)
    hosts = [network.add_host(name) for name in ("a", "b", "c")]
    a, b, c = (Agent.start(h, key, 7001 + i) for i, h in enumerate(hosts))
    everyone = (a, b, c)

    def all_see_all(since: dict[str, int]) -> bool:
        return all(
            {o.host.address for o in everyone if o is not m}
            <= set(m.peer_hosts(since[m.host.name]))
            for m in everyone
        )

    wait_until(lambda: all_see_all(dict.fromkeys("abc", 0)), DEADLINE, "initial discovery")

    a_mark, b_mark = a.mark(), b.mark()
    b.host.link_down()

    # Time passes on the network, measured by its own events: a hears c rotate twice, and b
    # rotates twice. Between c's first and second new announcement nothing can still be in
    # flight from before the cut, so a must hear nothing from b in that span, and b nothing.
    def c_rotated_twice_for_a() -> bool:
        return a.peer_hosts(a_mark).count(c.host.address) >= 2

    wait_until(
        lambda: c_rotated_twice_for_a() and len(b.announced(b_mark)) >= 2,
        DEADLINE,
        "c to rotate twice (seen by a) and b to rotate twice while b is unplugged",
    )
    after_cut = a.peer_hosts(a_mark)
    first_c = after_cut.index(c.host.address)
    assert b.host.address not in after_cut[first_c + 1 :], "a heard b through a cut link"
    b_events = b.snapshot()[b_mark:]
    first_b_announce = next(i for i, e in enumerate(b_events) if e["event"] == "announce")
    assert not [e for e in b_events[first_b_announce + 1 :] if e["event"] == "peer"], (
        "b heard a peer through a cut link"
    )

    marks = {agent.host.name: agent.mark() for agent in everyone}
    b.host.link_up()
    wait_until(lambda: all_see_all(marks), DEADLINE, "a, b and c to find each other again")

    for agent in everyone:
        agent.stop()


# -- capture analysis ------------------------------------------------------------------------

_INSTANCE_RE = re.compile(
    f"([a-z2-7]{{{INSTANCE_LABEL_LENGTH}}})\\.{re.escape(SERVICE_TYPE)}", re.IGNORECASE
)
_HOST_RE = re.compile(f"([a-z2-7]{{{HOST_LABEL_LENGTH}}})\\.local\\.", re.IGNORECASE)
_ALLOWED_FIXED_NAMES = {SERVICE_TYPE, "_services._dns-sd._udp.local."}


@dataclass
class Wire:
    frames: list[bytes] = field(default_factory=list)
    # Per source address, labels in order of first appearance in the sender's own records.
    instance_labels: dict[str, list[str]] = field(default_factory=dict)
    host_labels: dict[str, list[str]] = field(default_factory=dict)
    unexpected_names: set[str] = field(default_factory=set)
    txt_payloads: set[bytes] = field(default_factory=set)
    a_records: set[str] = field(default_factory=set)
    non_mdns_udp: list[tuple[str, int, int]] = field(default_factory=list)


def _parse_capture(path: Path) -> Wire:
    wire = Wire(frames=read_pcap(path))
    for frame in wire.frames:
        if struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue  # ARP and IPv6 neighbour discovery: no payload of ours
        ip = frame[14:]
        header_length = (ip[0] & 0x0F) * 4
        if ip[9] != 17:
            continue
        source = socket.inet_ntoa(ip[12:16])
        sport, dport = struct.unpack_from("!HH", ip, header_length)
        if 5353 not in (sport, dport):
            wire.non_mdns_udp.append((source, sport, dport))
            continue
        message = DNSIncoming(ip[header_length + 8 :])
        assert message.valid, f"unparseable mDNS packet from {source}"
        for question in message.questions:
            _check_name(wire, question.name)
        records = message.answers()
        # A sender's own records: every record of a response, the authority section of a
        # query (its probes). A query's answer section lists what it already knows about
        # *others* (known-answer suppression), so it is checked but not attributed.
        # answers() keeps wire order: answers, then authorities, then additionals.
        if message.is_response():
            own = records
        else:
            start = message.num_answers
            own = records[start : start + message.num_authorities]
        for record in records:
            _check_name(wire, record.name)
            if isinstance(record, DNSPointer):
                _check_name(wire, record.alias)
            elif isinstance(record, DNSService):
                _check_name(wire, record.server)
            elif isinstance(record, DNSNsec):
                _check_name(wire, record.next_name)
            elif isinstance(record, DNSText):
                wire.txt_payloads.add(record.text)
            elif isinstance(record, DNSAddress):
                wire.a_records.add(socket.inet_ntoa(record.address))
        for record in own:
            if isinstance(record, DNSPointer) and (match := _INSTANCE_RE.fullmatch(record.alias)):
                _first_seen(wire.instance_labels, source, match.group(1).lower())
            if isinstance(record, DNSService) and (match := _HOST_RE.fullmatch(record.server)):
                _first_seen(wire.host_labels, source, match.group(1).lower())
    return wire


def _check_name(wire: Wire, name: str) -> None:
    if name in _ALLOWED_FIXED_NAMES or _INSTANCE_RE.fullmatch(name) or _HOST_RE.fullmatch(name):
        return
    wire.unexpected_names.add(name)


def _first_seen(table: dict[str, list[str]], source: str, label: str) -> None:
    labels = table.setdefault(source, [])
    if label not in labels:
        labels.append(label)


def _common_substring(first: str, second: str, length: int) -> str | None:
    pieces = {first[i : i + length] for i in range(len(first) - length + 1)}
    return next(
        (
            second[i : i + length]
            for i in range(len(second) - length + 1)
            if second[i : i + length] in pieces
        ),
        None,
    )
