"""``make demo``: the whole offline loop with the real CLI, in a temporary directory.

HQ creates a network; node A (a monitor) and node B (a relay-only Raspberry Pi) enrol;
A writes three reports; a courier carries them A → B → HQ on "USB" bundle files; HQ
ingests and exports JSON Lines; HQ's receipts travel back; A shows "delivered" and B holds
nothing. Every step runs ``fieldsync`` as a separate process, exactly as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPORTS = (
    ("Three traders detained at the central market by men in uniform.", "arbitrary-detention",
     "2025-03-01T09:30Z", 12.3657, -1.5339, "Central market, sector 4"),
    ("Community radio journalist threatened by phone after a broadcast.", "threats",
     "2025-03-02", None, None, "Koudougou"),
    ("Fence erected on communal grazing land; families told to leave.", "land-grab",
     "2025-03", 12.2530, -2.3625, None),
)


class Demo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "FIELDSYNC_PASSPHRASE": "demo passphrase, never use in the field"}
        self.env.pop("FIELDSYNC_HOME", None)
        self.step_no = 0

    def fieldsync(self, *args: str) -> Any:
        """Run one CLI command with --json and return its parsed output."""
        command = [sys.executable, "-m", "fieldsync_cli", *args, "--json"]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise SystemExit(f"demo step failed: fieldsync {' '.join(args)} (exit {done.returncode})")
        lines = done.stdout.strip().splitlines()
        return json.loads(lines[-1]) if lines else None

    def step(self, message: str) -> None:
        self.step_no += 1
        print(f"[{self.step_no:2d}] {message}", flush=True)

    def run(self) -> None:
        hq, a, b = self.root / "hq", self.root / "node-a", self.root / "node-b"
        usb = self.root / "usb"
        usb.mkdir()
        made = self.fieldsync("network", "create", "--name", "demo-network", "--out", str(hq), "--kdf-profile", "interactive")
        self.step(f"HQ created network 'demo-network' (root fingerprint {made['root_fingerprint']})")
        self.fieldsync("--home", str(a), "init", "--author", "monitor-17", "--kdf-profile", "interactive")
        self.step("node A (monitor-17) created its node key and passphrase-protected author key")
        self.fieldsync("--home", str(b), "init")
        self.step("node B (relay-only Raspberry Pi) created its node key; it will hold nothing readable")
        for node, name in ((a, "a"), (b, "b")):
            summary = self.fieldsync("hq", "enroll", str(node / "request.txt"), "--hq", str(hq), "--out", str(usb / f"enrol-{name}.txt"))
            joined = self.fieldsync("--home", str(node), "join", str(usb / f"enrol-{name}.txt"))
            self.step(f"HQ enrolled node {name.upper()} as {summary['role']}; it joined '{joined['network']}'")
        ids = []
        for narrative, category, occurred, lat, lon, place in REPORTS:
            args = ["--home", str(a), "report", "add", "--narrative", narrative, "--category", category, "--occurred", occurred]
            if lat is not None:
                args += ["--lat", str(lat), "--lon", str(lon), "--accuracy", "50"]
            if place:
                args += ["--place", place]
            ids.append(self.fieldsync(*args)["id"])
        self.step(f"A wrote 3 reports, signed by monitor-17 and sealed to HQ: {', '.join(i[:13] for i in ids)}…")
        moved = self.fieldsync("--home", str(a), "bundle", "export", str(usb / "a-to-b.bundle"))
        self.step(f"courier exported {moved['items']} items from A to a USB bundle (encrypted, no clear text)")
        got = self.fieldsync("--home", str(b), "bundle", "import", str(usb / "a-to-b.bundle"))
        self.step(f"B imported the bundle: {got['new']} new items, carried sealed")
        moved = self.fieldsync("--home", str(b), "bundle", "export", str(usb / "b-to-hq.bundle"))
        self.step(f"courier exported {moved['items']} items from B for HQ")
        ingest = self.fieldsync("hq", "ingest", "--hq", str(hq), str(usb / "b-to-hq.bundle"))
        self.step(
            f"HQ ingested: {ingest['new']} new, {ingest['duplicate']} duplicate, {ingest['rejected']} rejected,"
            f" {ingest['forks']} forks, gaps: {ingest['gaps'] or 'none'}"
        )
        export = self.root / "reports.jsonl"
        self.fieldsync("hq", "export", "--hq", str(hq), "--format", "jsonl", "--out", str(export))
        first = json.loads(export.read_text().splitlines()[0])
        self.step(f"HQ exported {len(export.read_text().splitlines())} reports to {export.name}; first: {first['narrative'][:48]!r}")
        receipts = self.fieldsync("hq", "receipts", "--hq", str(hq), "--out", str(usb / "receipts.bundle"))
        self.step(f"HQ signed {receipts['receipts_total']} receipt covering {receipts['envelopes_receipted']} envelopes")
        got_b = self.fieldsync("--home", str(b), "bundle", "import", str(usb / "receipts.bundle"))
        self.step(f"B imported receipts and securely deleted {got_b['purged']} delivered reports")
        got_a = self.fieldsync("--home", str(a), "bundle", "import", str(usb / "receipts.bundle"))
        self.step(f"A imported receipts: {got_a['delivered_own']} of its reports now delivered")
        listed = self.fieldsync("--home", str(a), "report", "list")
        self.step("A's reports: " + ", ".join(f"{r['id'][:13]}… {r['status']}" for r in listed))
        status_b = self.fieldsync("--home", str(b), "status")
        self.step(f"B holds {status_b['items']['envelope']} reports (tombstones: {status_b['tombstones']})")
        if any(r["status"] != "delivered" for r in listed) or status_b["items"]["envelope"]:
            raise SystemExit("demo failed: not every report was delivered and purged")
        print("demo complete: reports crossed A → B → HQ, receipts came back, relays hold nothing.")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fieldsync-demo-") as tmp:
        Demo(Path(tmp)).run()


if __name__ == "__main__":
    main()
