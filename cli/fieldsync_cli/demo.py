"""``make demo``: the whole offline loop with the real CLI, in a temporary directory.

HQ creates a network; node A (a monitor) and node B (a relay-only Raspberry Pi) enrol;
A writes three reports; a courier carries them A → B → HQ on "USB" bundle files; HQ
ingests and exports JSON Lines; HQ's receipts travel back; A shows "delivered" and B holds
nothing. Every step runs ``fieldsync`` as a separate process, exactly as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fieldsync_cli.cmd_hq import EXIT_ATTENTION

REPORTS = (
    (
        "Three traders detained at the central market by men in uniform.",
        "arbitrary-detention",
        "2025-03-01T09:30Z",
        12.3657,
        -1.5339,
        "Central market, sector 4",
    ),
    (
        "Community radio journalist threatened by phone after a broadcast.",
        "threats-harassment",
        "2025-03-02",
        None,
        None,
        "Koudougou",
    ),
    (
        "Fence erected on communal grazing land; families told to leave.",
        "forced-displacement",
        "2025-03",
        12.2530,
        -2.3625,
        None,
    ),
)


class Demo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "FIELDSYNC_PASSPHRASE": "demo passphrase, never use in the field"}
        self.env.pop("FIELDSYNC_HOME", None)
        self.step_no = 0

    def fieldsync(self, *args: str) -> Any:
        """Run one CLI command with --json and return its parsed output."""
        return self.json_step([sys.executable, "-m", "fieldsync_cli", *args, "--json"], args)

    def json_step(self, command: list[str], args: tuple[str, ...]) -> Any:
        """Run ``command`` (fieldsync ``args`` with --json); stop the demo if it fails."""
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, check=False)  # noqa: S603
        # `hq ingest` exits 8 when it raised alerts (a gap while a report is still on its
        # way is one): the ingest itself worked.
        if done.returncode not in ((0, EXIT_ATTENTION) if args[:2] == ("hq", "ingest") else (0,)):
            sys.stderr.write(done.stderr)
            raise SystemExit(
                f"demo step failed: fieldsync {' '.join(args)} (exit {done.returncode})"
            )
        lines = done.stdout.strip().splitlines()
        return json.loads(lines[-1]) if lines else None

    def write_reports(self, home: Path) -> list[str]:
        """The author writes the demo's reports with ``report add``; returns their ids."""
        ids = []
        for narrative, category, occurred, lat, lon, place in REPORTS:
            args = [
                "--home",
                str(home),
                "report",
                "add",
                "--narrative",
                narrative,
                "--category",
                category,
                "--occurred",
                occurred,
            ]
            if lat is not None:
                args += ["--lat", str(lat), "--lon", str(lon), "--accuracy", "50"]
            if place:
                args += ["--place", place]
            ids.append(str(self.fieldsync(*args)["id"]))
        return ids

    def create_network(self, hq: Path) -> Any:
        """HQ's ``network create`` with the small-device KDF profile (demo speed)."""
        return self.fieldsync(
            "network",
            "create",
            "--name",
            "demo-network",
            "--out",
            str(hq),
            "--kdf-profile",
            "interactive",
        )

    def step(self, message: str) -> None:
        self.step_no += 1
        print(f"[{self.step_no:2d}] {message}", flush=True)

    def run(self) -> None:
        hq, a, b = self.root / "hq", self.root / "node-a", self.root / "node-b"
        usb = self.root / "usb"
        usb.mkdir(parents=True)
        made = self.create_network(hq)
        self.step(
            f"HQ created network 'demo-network' (root fingerprint {made['root_fingerprint']})"
        )
        self.fieldsync(
            "--home", str(a), "init", "--author", "monitor-17", "--kdf-profile", "interactive"
        )
        self.step("node A (monitor-17) created its node key and passphrase-protected author key")
        self.fieldsync("--home", str(b), "init")
        self.step(
            "node B (relay-only Raspberry Pi) created its node key; it will hold nothing readable"
        )
        for node, name in ((a, "a"), (b, "b")):
            summary = self.fieldsync(
                "hq",
                "enroll",
                str(node / "request.txt"),
                "--hq",
                str(hq),
                "--out",
                str(usb / f"enrol-{name}.txt"),
            )
            joined = self.fieldsync("--home", str(node), "join", str(usb / f"enrol-{name}.txt"))
            self.step(
                f"HQ enrolled node {name.upper()} as {summary['role']}; it joined"
                f" '{joined['network']}'"
            )
        ids = self.write_reports(a)
        self.step(
            f"A wrote 3 reports, signed by monitor-17 and sealed to HQ:"
            f" {', '.join(i[:13] for i in ids)}…"
        )
        moved = self.fieldsync("--home", str(a), "bundle", "export", str(usb / "a-to-b.bundle"))
        self.step(
            f"courier exported {moved['items']} items from A to a USB bundle (encrypted, no"
            " clear text)"
        )
        got = self.fieldsync("--home", str(b), "bundle", "import", str(usb / "a-to-b.bundle"))
        self.step(f"B imported the bundle: {got['new']} new items, carried sealed")
        moved = self.fieldsync("--home", str(b), "bundle", "export", str(usb / "b-to-hq.bundle"))
        self.step(f"courier exported {moved['items']} items from B for HQ")
        ingest = self.fieldsync("hq", "ingest", "--hq", str(hq), str(usb / "b-to-hq.bundle"))
        self.step(
            f"HQ ingested: {ingest['new']} new, {ingest['duplicate']} duplicate,"
            f" {ingest['quarantined']} held in quarantine, {ingest['junk']} junk,"
            f" {ingest['forks']} forks, gaps: {ingest['gaps'] or 'none'}"
        )
        export = self.root / "reports.jsonl"
        self.fieldsync("hq", "export", "--hq", str(hq), "--format", "jsonl", "--out", str(export))
        first = json.loads(export.read_text().splitlines()[0])
        self.step(
            f"HQ exported {len(export.read_text().splitlines())} reports to {export.name};"
            f" first: {first['narrative'][:48]!r}"
        )
        receipts = self.fieldsync(
            "hq", "receipts", "--hq", str(hq), "--out", str(usb / "receipts.bundle")
        )
        self.step(
            f"HQ signed {receipts['receipts_total']} receipt covering"
            f" {receipts['envelopes_receipted']} envelopes"
        )
        got_b = self.fieldsync("--home", str(b), "bundle", "import", str(usb / "receipts.bundle"))
        self.step(f"B imported receipts and securely deleted {got_b['purged']} delivered reports")
        got_a = self.fieldsync("--home", str(a), "bundle", "import", str(usb / "receipts.bundle"))
        self.step(f"A imported receipts: {got_a['delivered_own']} of its reports now delivered")
        listed = self.fieldsync("--home", str(a), "report", "list")
        self.step("A's reports: " + ", ".join(f"{r['id'][:13]}… {r['status']}" for r in listed))
        status_b = self.fieldsync("--home", str(b), "status")
        self.step(
            f"B holds {status_b['items']['envelope']} reports (tombstones:"
            f" {status_b['tombstones']})"
        )
        if any(r["status"] != "delivered" for r in listed) or status_b["items"]["envelope"]:
            raise SystemExit("demo failed: not every report was delivered and purged")
        print("demo complete: reports crossed A → B → HQ, receipts came back, relays hold nothing.")


class NetworkDemo(Demo):
    """Part two: the same loop over the network, daemons relaying on their own.

    Hub H (``run --hub``), connected node C (upstream = H), relay B and author A, all on
    loopback with static peers (A → B → C → H): the demo never multicasts on this machine's
    real interfaces. In the field, discovery finds the peers instead: as root the demo runs
    ``demo_netns.NetnsNetworkDemo`` (network namespaces, real zeroconf) in its place.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.daemons: list[subprocess.Popen[str]] = []

    def daemon(self, home: Path, *args: str, **settings: str) -> str:
        env = {
            **self.env,
            "FIELDSYNC_DISCOVERY_ENABLED": "false",
            "FIELDSYNC_SYNC_INTERVAL_SECONDS": "1",
            "FIELDSYNC_UPSTREAM_INTERVAL_SECONDS": "1",
            "FIELDSYNC_SYNC_BACKOFF_INITIAL": "0.5",
            "FIELDSYNC_SYNC_BACKOFF_MAX": "2",
            # The demo shows reports crossing in seconds; the field default holds each
            # report for minutes before offering it (timing privacy, README).
            "FIELDSYNC_PRIVACY_OFFER_DELAY_MINUTES": "0",
            # The web app on a free port: the machine may run a real node on the default one.
            "FIELDSYNC_WEB_LISTEN": "127.0.0.1:0",
            **settings,
        }
        command = [
            sys.executable,
            "-m",
            "fieldsync_cli",
            "--home",
            str(home),
            "run",
            "--listen",
            "127.0.0.1:0",
            *args,
            "--json",
            "--log-level",
            "warning",
        ]
        process = subprocess.Popen(  # noqa: S603 - our own CLI
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.daemons.append(process)
        line = process.stdout.readline() if process.stdout else ""
        if not line:
            raise SystemExit(f"demo failed: the daemon for {home.name} did not start")
        return str(json.loads(line)["listening"][0])

    def wait_for(self, what: str, check: Callable[[], bool], seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise SystemExit(f"demo failed: timed out waiting for {what}")
            time.sleep(0.3)

    def enrol_four_nodes(self, hq: Path, a: Path, b: Path, c: Path, h: Path) -> None:
        """Network, author A, relays B and C, hub H: created, enrolled and joined."""
        self.create_network(hq)
        self.fieldsync(
            "--home", str(a), "init", "--author", "monitor-17", "--kdf-profile", "interactive"
        )
        for node in (b, c, h):
            self.fieldsync("--home", str(node), "init")
        for node, role in ((a, "author"), (b, "relay"), (c, "relay"), (h, "hub")):
            self.fieldsync(
                "hq",
                "enroll",
                str(node / "request.txt"),
                "--hq",
                str(hq),
                "--out",
                str(node / "enrolment.txt"),
                "--role",
                role,
            )
            self.fieldsync("--home", str(node), "join", str(node / "enrolment.txt"))

    def run(self) -> None:
        hq, a, b, c, h = (self.root / n for n in ("hq", "node-a", "node-b", "node-c", "hub"))
        self.enrol_four_nodes(hq, a, b, c, h)
        self.step("network part: HQ enrolled author A, relays B and C, and the hub H")
        hub = self.daemon(h, "--hub")
        hub_url = f"ws://{hub}/sync"
        c_addr = self.daemon(c, FIELDSYNC_UPSTREAM_URL=hub_url)
        b_addr = self.daemon(b, FIELDSYNC_PEERS_STATIC=c_addr)
        self.daemon(a, FIELDSYNC_PEERS_STATIC=b_addr)
        self.step(
            f"daemons up on loopback: hub {hub}, C {c_addr} (upstream: hub), B {b_addr}, A"
            " → B (static peers; no multicast)"
        )
        self.write_reports(a)
        self.step("A wrote 3 reports; its daemon notices and starts passing them on")
        self.wait_for(
            "the reports to reach the hub",
            lambda: self.fieldsync("--home", str(h), "status")["items"]["envelope"] >= 3,
        )
        self.step("the reports hopped A → B → C → hub, sealed all the way")
        ingest = self.fieldsync("hq", "ingest", "--hq", str(hq), "--hub", hub_url)
        self.step(
            f"HQ pulled from the hub: {ingest['new']} new reports; receipts pushed back to the hub"
        )

        def delivered() -> bool:
            return all(
                r["status"] == "delivered"
                for r in self.fieldsync("--home", str(a), "report", "list")
            )

        self.wait_for("receipts to reach A", delivered)
        held = [self.fieldsync("--home", str(n), "status")["items"]["envelope"] for n in (b, c, h)]
        self.step(
            f"receipts flowed hub → C → B → A: A shows all delivered; B, C, hub hold {held} reports"
        )
        if any(held):
            raise SystemExit("demo failed: relays still hold delivered reports")
        print("network demo complete: daemons relayed reports to HQ and receipts back, unattended.")

    def stop(self) -> None:
        for process in self.daemons:
            process.terminate()
        for process in self.daemons:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the cleanup (daemons, namespaces) on SIGTERM too


def main() -> None:
    try:
        _main()
    except KeyboardInterrupt:
        print("demo interrupted: daemons stopped, temporary files removed", file=sys.stderr)
        raise SystemExit(130) from None


def _main() -> None:
    from fieldsync_cli.demo_netns import Namespaces, NetnsNetworkDemo, netns_available

    signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="fieldsync-demo-") as tmp:
        print("== part 1: offline, by USB bundles", flush=True)
        offline = Demo(Path(tmp) / "offline")
        offline.run()
        print("== part 2: over the network, daemons relaying on their own", flush=True)
        why = (
            "FIELDSYNC_DEMO_LOOPBACK=1"
            if os.environ.get("FIELDSYNC_DEMO_LOOPBACK") == "1"
            else netns_available()
        )
        if why is None:
            with Namespaces() as net:
                network: NetworkDemo = NetnsNetworkDemo(Path(tmp) / "network", net)
                network.step_no = offline.step_no
                try:
                    network.run()
                finally:
                    network.stop()
            return
        print(f"{why}: running on loopback with static peers, no discovery", flush=True)
        network = NetworkDemo(Path(tmp) / "network")
        network.step_no = offline.step_no
        try:
            network.run()
        finally:
            network.stop()


if __name__ == "__main__":
    main()
