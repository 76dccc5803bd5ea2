"""``make demo`` part two in private network namespaces, with real zeroconf discovery.

Used when the demo runs as root with ``ip`` (iproute2). Every device lives in a namespace
created here: a bridge namespace, one veth per host into the bridge (the far end created
straight inside the host, so nothing ever appears in the root namespace), and a private
line C — H to the hub. Multicast reaches only the hosts on that bridge; nothing is sent on
this machine's interfaces. Everything is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from fieldsync_cli.demo import NetworkDemo

LAN = "10.213.0"  # the bridge: A .11, B .12, C .13
LINE = "10.213.1"  # C's private line to the hub: C .1, H .2
PORT = 7341
HUB_PORT = 7400


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)  # noqa: S603, S607


def netns_available() -> str | None:
    """None if network namespaces can be made here, else why not (one short phrase)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no `ip` (iproute2)"
    probe = f"fsdemo{os.getpid()}probe"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.SubprocessError):
        return "cannot create network namespaces"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        _ip("netns", "del", probe)
    return None


class Namespaces:
    """A bridge namespace, hosts plugged into it, a point-to-point line; removed on exit."""

    def __init__(self) -> None:
        self.tag = f"fsdemo{os.getpid()}"
        self.bridge = f"{self.tag}-br"
        self.names: list[str] = []
        self.ports: dict[str, str] = {}  # host namespace -> its port in the bridge namespace

    def __enter__(self) -> Namespaces:
        try:
            self._add(self.bridge)
            _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge, "link", "set", "br0", "up")
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def _add(self, name: str) -> None:
        self.names.append(name)  # first: an interrupt right after ``add`` must not leak it
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_host(self, name: str, address: str) -> str:
        """A host namespace with ``eth0`` = ``address``/24 on the bridge; its name."""
        namespace, port = f"{self.tag}-{name}", f"p-{name}"
        self._add(namespace)
        _ip(
            "-n",
            self.bridge,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            namespace,
        )
        _ip("-n", self.bridge, "link", "set", port, "master", "br0", "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        self.ports[namespace] = port
        return namespace

    def add_line(self, near: str, name: str, near_address: str, far_address: str) -> str:
        """A host namespace on no bridge, joined to ``near`` only by a veth pair (/30)."""
        namespace = f"{self.tag}-{name}"
        self._add(namespace)
        _ip(
            "-n",
            near,
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            namespace,
        )
        _ip("-n", near, "addr", "add", f"{near_address}/30", "dev", "up0")
        _ip("-n", namespace, "addr", "add", f"{far_address}/30", "dev", "up0")
        _ip("-n", near, "link", "set", "up0", "up")
        _ip("-n", namespace, "link", "set", "up0", "up")
        return namespace

    def plug(self, namespace: str, up: bool) -> None:
        """Plug in or pull the host's cable (its bridge port up or down)."""
        _ip("-n", self.bridge, "link", "set", self.ports[namespace], "up" if up else "down")

    @staticmethod
    def command(namespace: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", namespace, *argv]

    def cleanup(self) -> None:
        for name in reversed(self.names):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)  # noqa: S603, S607
        self.names.clear()


class NetnsNetworkDemo(NetworkDemo):
    """Hub H, connected node C, relay B, author A, each in its own network namespace.

    A, B and C share one private bridge and find each other by zeroconf (no static peers),
    discovery bound to their bridge addresses; H is on a private line to C only. C starts
    unplugged: B takes A's reports, A walks away, C arrives and takes them from B, C pushes
    to H, HQ ingests from the hub, receipts go back H → C → B and, when A returns, to A.
    """

    def __init__(self, root: Path, net: Namespaces) -> None:
        super().__init__(root)
        self.net = net
        self.logs = root / "logs"

    def in_ns(self, namespace: str, *args: str) -> Any:
        """``fieldsync ARGS --json`` inside ``namespace`` (for commands that use the network)."""
        argv = [sys.executable, "-m", "fieldsync_cli", *args, "--json"]
        return self.json_step(self.net.command(namespace, argv), args)

    def ns_daemon(
        self, namespace: str, home: Path, listen: str, *args: str, **settings: str
    ) -> str:
        env = {
            **self.env,
            "FIELDSYNC_DISCOVERY_ENABLED": "true",
            "FIELDSYNC_DISCOVERY_ROTATE_MINUTES": "0.05",
            "FIELDSYNC_SYNC_INTERVAL_SECONDS": "1",
            "FIELDSYNC_UPSTREAM_INTERVAL_SECONDS": "1",
            "FIELDSYNC_SYNC_BACKOFF_INITIAL": "0.5",
            "FIELDSYNC_SYNC_BACKOFF_MAX": "2",
            # Reports cross in seconds here; the field default holds each for minutes.
            "FIELDSYNC_PRIVACY_OFFER_DELAY_MINUTES": "0",
            **settings,
        }
        argv = [
            sys.executable,
            "-m",
            "fieldsync_cli",
            "--home",
            str(home),
            "run",
            "--listen",
            listen,
            *args,
            "--json",
            "--log-level",
            "info",
        ]
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{home.name}.log"
        with log.open("a", encoding="utf-8") as err:
            process = subprocess.Popen(  # noqa: S603 - our own CLI
                self.net.command(namespace, argv),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.daemons.append(process)
        line = process.stdout.readline() if process.stdout else ""
        if not line:
            sys.stderr.write(log.read_text(encoding="utf-8", errors="replace")[-3000:])
            raise SystemExit(f"demo failed: the daemon for {home.name} did not start")
        return listen

    def envelopes(self, home: Path) -> int:
        return int(self.fieldsync("--home", str(home), "status")["items"]["envelope"])

    def discovered(self, home: Path) -> set[str]:
        """Host addresses ``home``'s daemon found by discovery."""
        return {
            p["target"].rpartition(":")[0]
            for p in self.fieldsync("--home", str(home), "peers")
            if p["origin"] == "discovered"
        }

    def run(self) -> None:
        hq, a, b, c, h = (self.root / n for n in ("hq", "node-a", "node-b", "node-c", "hub"))
        self.step(
            "discovery: real zeroconf inside network namespaces (nothing on this machine's"
            " interfaces)"
        )
        self.enrol_four_nodes(hq, a, b, c, h)
        self.step("network part: HQ enrolled author A, relays B and C, and the hub H")

        net = self.net
        ns = {n: net.add_host(n, f"{LAN}.{11 + i}") for i, n in enumerate("abc")}
        addr = {n: f"{LAN}.{11 + i}" for i, n in enumerate("abc")}
        ns["h"] = net.add_line(ns["c"], "h", f"{LINE}.1", f"{LINE}.2")
        net.plug(ns["c"], up=False)  # C has not arrived yet
        self.step(
            f"namespaces: A {addr['a']}, B {addr['b']}, C {addr['c']} on one private bridge"
            f" (C not plugged in yet); hub H {LINE}.2 on a private line to C only"
        )
        hub_url = f"ws://{LINE}.2:{HUB_PORT}/sync"
        self.ns_daemon(ns["h"], h, f"{LINE}.2:{HUB_PORT}", "--hub")
        self.ns_daemon(
            ns["c"],
            c,
            f"{addr['c']}:{PORT}",
            FIELDSYNC_UPSTREAM_URL=hub_url,
            FIELDSYNC_DISCOVERY_INTERFACES=addr["c"],
        )
        for n, home in (("b", b), ("a", a)):
            self.ns_daemon(ns[n], home, f"{addr[n]}:{PORT}", FIELDSYNC_DISCOVERY_INTERFACES=addr[n])
        self.step(
            f"daemons up: hub on H, C (upstream {hub_url}), B, A; no static peers, discovery"
            " bound to the bridge addresses"
        )
        self.write_reports(a)
        self.step("A wrote 3 reports, signed and sealed to HQ")
        self.wait_for("B to take A's reports", lambda: self.envelopes(b) >= 3)
        self.wait_for("B to list A as discovered", lambda: addr["a"] in self.discovered(b))
        self.step("B found A by zeroconf and took the 3 reports (sealed; B cannot read them)")
        net.plug(ns["a"], up=False)
        net.plug(ns["c"], up=True)
        self.step("A walked out of range; C arrived on the bridge")
        self.wait_for("C to take the reports from B", lambda: self.envelopes(c) >= 3)
        self.wait_for("B to list C as discovered", lambda: addr["c"] in self.discovered(b))
        self.step("B and C found each other by zeroconf; C took the 3 reports")
        self.wait_for("the hub to hold the reports", lambda: self.envelopes(h) >= 3)
        self.step("C pushed them up its private line: the hub holds 3 sealed reports")
        ingest = self.in_ns(ns["h"], "hq", "ingest", "--hq", str(hq), "--hub", hub_url)
        self.step(
            f"HQ (on the hub's line) ingested from the hub: {ingest['new']} new,"
            f" {ingest['duplicate']} duplicate, {ingest['quarantined']} held; receipts pushed"
            " back to the hub"
        )
        if ingest["new"] != 3:
            raise SystemExit("demo failed: HQ did not get the 3 reports")

        def purged(home: Path) -> bool:
            items = self.fieldsync("--home", str(home), "status")["items"]
            return bool(items["envelope"] == 0 and items["receipt"] > 0)

        self.wait_for("C to get the receipts", lambda: purged(c))
        self.wait_for("B to get the receipts", lambda: purged(b))
        self.step("receipts flowed hub → C → B; both securely deleted the delivered reports")
        net.plug(ns["a"], up=True)

        def delivered() -> bool:
            return all(
                r["status"] == "delivered"
                for r in self.fieldsync("--home", str(a), "report", "list")
            )

        self.wait_for("receipts to reach A", delivered)
        listed = self.fieldsync("--home", str(a), "report", "list")
        self.step(
            "A came back; B passed it the receipts: "
            + ", ".join(f"{r['id'][:13]}… {r['status']}" for r in listed)
        )
        held = [self.envelopes(n) for n in (b, c, h)]
        self.step(f"B, C, hub hold {held} reports")
        if any(held):
            raise SystemExit("demo failed: relays still hold delivered reports")
        print(
            "network demo complete: reports crossed A → B → C → hub by discovery and sync,"
            " HQ ingested, receipts came back; namespaces removed."
        )
