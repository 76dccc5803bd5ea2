"""Revocation and network-key rotation on a namespaced LAN (issue 11 item 1 "Must show").

Author A, relay B and author C run real daemons with zeroconf discovery on one bridge; C also
dials A and B directly (as a seized device would). HQ revokes C and rotates the network key
(grace 1 day); the receipts bundle reaches A (``bundle import`` while A's daemon runs) and A
passes it to B by sync. From then on C gets no item from A or B and can push none. A day of
A's and B's running time later they switch to the new key; then a capture of the bridge
shows that a device holding the old key (C, an ex-member) recognises none of A's and B's
announcements and gets 0 bytes from them, while A and B go on syncing under the new key.

Every host is a network namespace created here; discovery binds to namespace addresses only.
Every wait polls observable state under a deadline; nothing sleeps to synchronise. "A day
passes" is the one shortcut: the test adds 86,400 s to the stores' running clocks (SPEC.md
§14.1), which is all a day of running would change for the switch.
"""

from __future__ import annotations

import functools
import signal
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from zeroconf._dns import DNSService
from zeroconf._protocol.incoming import DNSIncoming

from fieldsync.discovery import INSTANCE_LABEL_LENGTH, Pseudonyms
from fieldsync.node import STORE, Node
from fieldsync.store import connect_store
from tests.integration.field_support import (
    PORT,
    Daemon,
    Deployment,
    add_report,
    cli,
    envelopes,
    status,
    tcp_segments,
    wait_for,
    write_config,
)
from tests.integration.netns import Host, Network, read_pcap

pytestmark = pytest.mark.netns

DEADLINE = 90.0
DAY = 86_400


def start(name: str, host: Host, home: Path, root: Path, static: Sequence[str] = ()) -> Daemon:
    config = write_config(root / f"{name}.toml", interfaces=(host.address,), static=static)
    daemon = Daemon(name, host, home, config, f"{host.address}:{PORT}", root / f"{name}.log")
    return daemon.start()


def network_key(home: Path) -> bytes:
    node = Node(home)
    try:
        return node.membership().network_key
    finally:
        node.close()


def let_a_day_pass(home: Path) -> None:
    """Add a day to the store's running clock, as a day of running would (SPEC.md §14.1)."""
    conn = connect_store(home / STORE, timeout=30)
    try:
        conn.execute("UPDATE store_meta SET value = value + ? WHERE key = 'clock'", (DAY,))
    finally:
        conn.close()


def attempts(home: Path) -> dict[str, int]:
    """Sync attempts so far per scheduler target (``failures`` resets when discovery sees a
    target again; ``syncs`` only grows)."""
    return {p["target"]: int(p["syncs"]) for p in status(home)["peers"]}


def tried_again(home: Path, before: dict[str, int], targets: Iterable[str]) -> bool:
    """Two more attempts at every target since ``before``, none of them a success."""
    now = {p["target"]: p for p in status(home)["peers"]}
    return all(
        t in now and now[t]["syncs"] >= before.get(t, 0) + 2 and now[t]["last_error"]
        for t in targets
    )


def holds_some(home: Path) -> bool:
    return envelopes(home) >= 1


def switched(home: Path) -> bool:
    return bool(status(home).get("network_key_id") == 1)


def announced(frames: Sequence[bytes]) -> dict[str, set[str]]:
    """Instance labels by the address that announced them: the names of SRV records, which
    only a name's owner sends (a known-answer list in a query holds PTR records only).
    Goodbyes (TTL 0) withdraw a name announced before the switch and are left out."""
    found: dict[str, set[str]] = {}
    for frame in frames:
        if len(frame) < 34 or struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue
        ip = frame[14:]
        header = (ip[0] & 0x0F) * 4
        if ip[9] != 17 or 5353 not in struct.unpack_from("!HH", ip, header):
            continue
        source = ".".join(str(b) for b in ip[12:16])
        for record in DNSIncoming(ip[header + 8 :]).answers():
            if isinstance(record, DNSService) and record.ttl > 0:  # not a goodbye
                label = record.name.split(".")[0].lower()
                if len(label) == INSTANCE_LABEL_LENGTH:
                    found.setdefault(source, set()).add(label)
    return found


def test_revoked_and_ex_member_get_nothing_and_honest_nodes_go_on(tmp_path: Path) -> None:
    root = tmp_path
    deployment = Deployment.create(root / "net", "Revocation on a LAN")
    homes = {
        "a": deployment.add_node("a", "author", author="monitor-a"),
        "b": deployment.add_node("b", "relay"),
        "c": deployment.add_node("c", "author", author="monitor-c"),
    }
    old_key = network_key(homes["c"])
    with Network() as network:
        hosts = {name: network.add_host(name) for name in homes}
        members = {name: f"{hosts[name].address}:{PORT}" for name in "ab"}
        daemons = {
            "a": start("a", hosts["a"], homes["a"], root),
            "b": start("b", hosts["b"], homes["b"], root),
            "c": start("c", hosts["c"], homes["c"], root, static=tuple(members.values())),
        }

        def explain() -> str:
            return "\n".join(f"--- {n}\n{d.tail(20)}" for n, d in daemons.items())

        try:
            # The network works: A's report reaches B and C.
            add_report(homes["a"], "before the seizure")
            for name in "bc":
                wait_for(functools.partial(holds_some, homes[name]), DEADLINE, name, explain)

            # HQ revokes C, then rotates the network key; A imports the receipts bundle.
            hq = str(deployment.hq)
            revoked = cli("hq", "revoke", "monitor-c", "--hq", hq, "--reason", "seized", "--json")
            assert revoked["nodes"] and revoked["authors"]
            rotated = cli("hq", "rotate-network-key", "--hq", hq, "--grace", "1", "--json")
            assert rotated["network_key_id"] == 1 and rotated["certificates"] == 2  # A and B
            bundle = root / "receipts.bundle"
            cli("hq", "receipts", "--hq", hq, "--out", str(bundle), "--json")
            cli("--home", str(homes["a"]), "bundle", "import", str(bundle), "--json")

            def follows(name: str) -> bool:
                info = status(homes[name])
                return info.get("revocation_list") == 2 and bool(info.get("network_key_rotating"))

            wait_for(lambda: follows("a"), DEADLINE, "A to follow the bundle's list", explain)
            wait_for(lambda: follows("b"), DEADLINE, "B to get the list from A by sync", explain)

            # C gets nothing from A or B now, and can push nothing to them.
            held = {name: envelopes(homes[name]) for name in "ab"}
            add_report(homes["c"], "written on the seized device")
            c_before = envelopes(homes["c"])  # its own new report included
            add_report(homes["a"], "after the revocation")
            wait_for(lambda: envelopes(homes["b"]) == held["b"] + 1, DEADLINE, "A -> B", explain)

            tried = attempts(homes["c"])
            wait_for(
                lambda: tried_again(homes["c"], tried, members.values()),
                DEADLINE,
                "C to try A and B twice more",
                explain,
            )
            assert envelopes(homes["c"]) == c_before  # C got 0 items
            assert envelopes(homes["a"]) == held["a"] + 1  # only A's own new one, nothing of C
            assert envelopes(homes["b"]) == held["b"] + 1

            # A day of running later, A and B use the new key alone.
            for name in "ab":
                let_a_day_pass(homes[name])
            for name in "ab":
                wait_for(
                    functools.partial(switched, homes[name]),
                    DEADLINE,
                    f"{name} to switch to the new network key",
                    explain,
                )
            new_key = network_key(homes["a"])
            assert new_key != old_key and network_key(homes["b"]) == new_key

            pcap = root / "after-switch.pcap"
            with network.capture(pcap):
                held_b = envelopes(homes["b"])
                add_report(homes["a"], "after the switch")
                wait_for(
                    lambda: envelopes(homes["b"]) == held_b + 1,
                    DEADLINE,
                    "A and B to sync under the new key",
                    explain,
                )
                tried = attempts(homes["c"])
                wait_for(
                    lambda: tried_again(homes["c"], tried, members.values()),
                    DEADLINE,
                    "C to dial A and B again",
                    explain,
                )

                def both_announced() -> bool:
                    seen = announced(read_pcap(pcap))
                    return all(seen.get(hosts[n].address) for n in "ab")

                wait_for(both_announced, DEADLINE, "A and B to announce", explain)
        finally:
            for daemon in daemons.values():
                if daemon.alive():
                    daemon.stop(signal.SIGTERM)

    frames = read_pcap(pcap)
    labels = announced(frames)
    honest = [label for n in "ab" for label in labels[hosts[n].address]]
    assert honest
    # The old key recognises none of A's and B's announcements; the new key all of them.
    assert not [label for label in honest if Pseudonyms(old_key).recognise(label)]
    assert all(Pseudonyms(new_key).recognise(label) for label in honest)
    # C dialled A and B and got not one byte back on those connections (A's and B's
    # listeners answered C's SYNs and stayed silent); A and B talked to each other.
    segments = tcp_segments(frames)
    c, ab = hosts["c"].address, {hosts[n].address for n in "ab"}
    dialled = [s for s in segments if s.source == c and s.destination in ab and s.dport == PORT]
    assert sum(len(s.payload) for s in dialled) > 0
    answers = [s for s in segments if s.source in ab and s.destination == c and s.sport == PORT]
    assert answers  # the connections opened (SYN/ACK): the silence is A's and B's
    assert sum(len(s.payload) for s in answers) == 0
    # Nor do A and B dial C any more: what discovery found under the old key was forgotten.
    assert not [s for s in segments if s.source in ab and s.destination == c and s.payload]
    assert any(s.source in ab and s.destination in ab and s.payload for s in segments)
