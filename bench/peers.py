"""``bench --peers``: Syncthing on fieldsync's workloads, side by side (issue 13 item 8).

Two Syncthing instances on loopback only: every discovery, relay, NAT, usage-report,
crash-report and upgrade feature off, each device told the other's ``tcp://127.0.0.1``
address, the GUI/REST API on 127.0.0.1 with a fixed key. One item becomes one file of the
same bytes (the closest Syncthing analogue of a sealed report).

- bulk: A holds N files (already scanned), B starts empty; time from B's REST API
  answering until B holds all N. Compared with S1 (N items, one session).
- repeat contact: A and B hold the same base set and are in sync; B stops, A gains the
  same new files as S3.real's new items (rescanned), B starts again; bytes on B's
  connection until it holds them all. Compared with S3.real (fieldsync's repeat contact
  with those new items of the same base).

Syncthing absent: one "skipped" line, nothing else. Never part of ``make test``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

FOLDER = "bench"
TIMEOUT_S = 1800.0
SKIPPED = "peers: skipped: syncthing not installed (Debian: apt-get install syncthing)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _set(options: ET.Element, name: str, value: str) -> None:
    element = options.find(name)
    if element is None:
        element = ET.SubElement(options, name)
    element.text = value


class Syncthing:
    """One Syncthing instance: home, data folder, ports, REST client, process."""

    def __init__(self, binary: str, root: Path, name: str) -> None:
        self.binary = binary
        self.home = root / f"{name}-home"
        self.folder = root / f"{name}-data"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.api_key = secrets.token_hex(16)
        self.gui_port = _free_port()
        self.sync_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        subprocess.run(
            [binary, "generate", f"--home={self.home}", "--no-default-folder"],
            check=True,
            capture_output=True,
            env=self._env(),
            timeout=60,
        )
        self.device_id = subprocess.run(
            [binary, "serve", f"--home={self.home}", "--device-id"],
            check=True,
            capture_output=True,
            text=True,
            env=self._env(),
            timeout=60,
        ).stdout.strip()

    def _env(self) -> dict[str, str]:
        return {**os.environ, "STNOUPGRADE": "1", "STNODEFAULTFOLDER": "1", "HOME": str(self.home)}

    def configure(self, peer: Syncthing) -> None:
        """Loopback only, no discovery/relay/NAT/reporting; share FOLDER with ``peer``."""
        path = self.home / "config.xml"
        tree = ET.parse(path)  # noqa: S314 - the file Syncthing just generated here
        root = tree.getroot()
        options = root.find("options")
        gui = root.find("gui")
        if options is None or gui is None:
            raise RuntimeError(f"unexpected Syncthing config layout in {path}")
        for name, value in {
            "listenAddress": f"tcp://127.0.0.1:{self.sync_port}",
            "globalAnnounceEnabled": "false",
            "localAnnounceEnabled": "false",
            "relaysEnabled": "false",
            "natEnabled": "false",
            "urAccepted": "-1",
            "autoUpgradeIntervalH": "0",
            "crashReportingEnabled": "false",
            "startBrowser": "false",
            "setLowPriority": "false",
            "reconnectionIntervalS": "1",
        }.items():
            _set(options, name, value)
        _set(gui, "address", f"127.0.0.1:{self.gui_port}")
        _set(gui, "apikey", self.api_key)
        device = ET.SubElement(
            root, "device", {"id": peer.device_id, "name": peer.name, "compression": "metadata"}
        )
        ET.SubElement(device, "address").text = f"tcp://127.0.0.1:{peer.sync_port}"
        folder = ET.SubElement(
            root,
            "folder",
            {
                "id": FOLDER,
                "label": FOLDER,
                "path": str(self.folder),
                "type": "sendreceive",
                "rescanIntervalS": "3600",
                "fsWatcherEnabled": "false",
            },
        )
        ET.SubElement(folder, "device", {"id": self.device_id})
        ET.SubElement(folder, "device", {"id": peer.device_id})
        tree.write(path)

    def start(self) -> float:
        """Start; return the monotonic time the REST API first answered."""
        self._log = (self.home / "run.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "serve", f"--home={self.home}", "--no-browser", "--no-restart"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env(),
        )
        self.wait_for(lambda: self.get("/rest/system/ping") is not None, "its REST API")
        return time.monotonic()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def request(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.gui_port}{path}",
            method=method,
            headers={"X-API-Key": self.api_key},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                body = response.read()
        except OSError:
            return None
        return json.loads(body) if body else {}

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def status(self) -> dict[str, Any]:
        return self.get(f"/rest/db/status?folder={FOLDER}") or {}

    def connection_bytes(self) -> int:
        data = self.get("/rest/system/connections") or {}
        total = data.get("total", {})
        return int(total.get("inBytesTotal", 0)) + int(total.get("outBytesTotal", 0))

    def holds(self, count: int) -> bool:
        s = self.status()
        return s.get("state") == "idle" and s.get("localFiles") == count and s.get("needFiles") == 0

    def wait_for(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not done():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"Syncthing {self.name} exited; see {self.home / 'run.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Syncthing {self.name}: timed out waiting for {what}")
            time.sleep(0.05)


def _write(folder: Path, items: Sequence[bytes], first: int) -> None:
    stamp = 1_700_000_000  # one mtime for every copy: equal files are equal to Syncthing
    for k, data in enumerate(items, start=first):
        path = folder / f"{k:07d}.item"
        path.write_bytes(data)
        os.utime(path, (stamp, stamp))


def _pair(binary: str, root: Path) -> tuple[Syncthing, Syncthing]:
    a, b = Syncthing(binary, root, "A"), Syncthing(binary, root, "B")
    a.configure(b)
    b.configure(a)
    return a, b


def bulk(binary: str, root: Path, items: Sequence[bytes]) -> dict[str, Any]:
    a, b = _pair(binary, root)
    _write(a.folder, items, 0)
    try:
        a.start()
        a.wait_for(lambda: a.holds(len(items)), "A to scan its files")
        started = b.start()
        b.wait_for(lambda: b.holds(len(items)), "B to receive every file")
        seconds = time.monotonic() - started
        return {"n": len(items), "seconds": round(seconds, 3), "wire_bytes": b.connection_bytes()}
    finally:
        b.stop()
        a.stop()


def repeat(binary: str, root: Path, base: Sequence[bytes], new: Sequence[bytes]) -> dict[str, Any]:
    a, b = _pair(binary, root)
    _write(a.folder, base, 0)
    _write(b.folder, base, 0)
    total = len(base) + len(new)
    try:
        a.start()
        b.start()
        a.wait_for(lambda: a.holds(len(base)), "A to hold the base set")
        b.wait_for(lambda: b.holds(len(base)), "B to hold the base set")
        time.sleep(1.0)  # let the index exchange of the first contact settle
        b.stop()
        _write(a.folder, new, len(base))
        a.request("POST", f"/rest/db/scan?folder={FOLDER}")
        a.wait_for(lambda: a.holds(total), "A to scan the new files")
        started = b.start()
        b.wait_for(lambda: b.holds(total), "B to receive the new files")
        seconds = time.monotonic() - started
        return {
            "base": len(base),
            "new": len(new),
            "seconds": round(seconds, 3),
            "wire_bytes": b.connection_bytes(),
        }
    finally:
        b.stop()
        a.stop()


def run(
    items: Sequence[bytes],
    bulk_n: int,
    base_n: int,
    new_n: int,
    fieldsync: dict[str, Any],
    root: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Both workloads; ``fieldsync``: {"bulk_items_per_s", "repeat_wire_bytes"} of this run,
    whose repeat contact brought ``items[base_n : base_n + new_n]``."""
    binary = shutil.which("syncthing")
    if binary is None:
        return {"skipped": True, "lines": [SKIPPED]}
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout.split()[:2]
    name = " ".join(version)
    log(f"peers: {name}: {bulk_n} files A -> B")
    got_bulk = bulk(binary, root / "bulk", items[:bulk_n])
    log(f"peers: repeat contact, {new_n} new of {base_n} files")
    new = items[base_n : base_n + new_n]
    got_repeat = repeat(binary, root / "repeat", items[:base_n], new)
    return {
        "skipped": False,
        "syncthing": name,
        "bulk": got_bulk,
        "repeat": got_repeat,
        **compare(name, got_bulk, got_repeat, new, fieldsync),
    }


def compare(
    version: str,
    got_bulk: dict[str, Any],
    got_repeat: dict[str, Any],
    new: Sequence[bytes],
    fieldsync: dict[str, Any],
) -> dict[str, Any]:
    """The ratios and the printed lines, from Syncthing's results (``bulk``, ``repeat``),
    the ``new`` items both repeat contacts carried, and fieldsync's figures."""
    syncthing_rate = got_bulk["n"] / max(got_bulk["seconds"], 1e-9)
    speed = fieldsync["bulk_items_per_s"] / syncthing_rate
    fewer = got_repeat["wire_bytes"] / max(fieldsync["repeat_wire_bytes"], 1)
    # Both carry the same new items (random ciphertext: nothing to compress); what each
    # spends beyond them is its own: reconciliation, index exchange, framing, handshake.
    payload = sum(map(len, new))
    beyond = {
        "syncthing": got_repeat["wire_bytes"] - payload,
        "fieldsync": fieldsync["repeat_wire_bytes"] - payload,
    }
    beyond_fewer = beyond["syncthing"] / max(beyond["fieldsync"], 1)
    lines = [
        f"peers ({version}, loopback, no discovery/relay/NAT):",
        f"  bulk {got_bulk['n']} items: Syncthing {syncthing_rate:,.0f}/s, fieldsync"
        f" {fieldsync['bulk_items_per_s']:,.0f}/s: fieldsync {speed:.1f}x faster",
        f"  repeat contact, {len(new)} new of {got_repeat['base']}: Syncthing"
        f" {got_repeat['wire_bytes']:,} B, fieldsync {fieldsync['repeat_wire_bytes']:,} B:"
        f" fieldsync {fewer:.1f}x fewer bytes",
        f"    beyond the items themselves ({payload:,} B): Syncthing {beyond['syncthing']:,} B,"
        f" fieldsync {beyond['fieldsync']:,} B: fieldsync {beyond_fewer:.1f}x fewer",
    ]
    return {
        "fieldsync": fieldsync,
        "bulk_speedup": round(speed, 2),
        "repeat_bytes_ratio": round(fewer, 2),
        "repeat_payload_bytes": payload,
        "repeat_beyond_payload_bytes": beyond,
        "repeat_beyond_ratio": round(beyond_fewer, 2),
        "lines": lines,
    }
