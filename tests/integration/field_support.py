"""Support for the field tests (issue 4 "Must show"): real daemons in network namespaces.

* ``Deployment`` is one fieldsync network on disk, made with the CLI a user runs:
  ``network create``, ``init``, ``hq enroll``, ``join``.
* ``add_uplink`` gives a host a private point-to-point link to a new host that is *not* on
  the LAN bridge (the HQ hub), so the hub is reachable from that one host only.
* ``Daemon`` runs ``fieldsync run --config ... --json`` inside a host's namespace (optionally
  with libfaketime preloaded: a wall clock a year off, the monotonic clock real) and reads
  its first stdout line. libfaketime comes from the Debian package ``faketime``.
* ``cli``, ``status`` and ``peers`` run the CLI (from the root namespace: control sockets are
  unix paths, which work across network namespaces); ``wait_for`` polls observable state
  under a deadline. Nothing here sleeps to synchronise.
* ``tcp_segments`` parses a bridge capture (``netns.read_pcap``) into TCP payloads.

Every address used is inside namespaces the test creates; nothing touches real interfaces.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cli.cli_support import NO_OFFER_DELAY
from tests.environment import libfaketime_path
from tests.integration.netns import Host, Network

PASSPHRASE = "correct horse battery staple field"
#: How long one CLI command may take before the test gives up on it.
COMMAND_TIMEOUT = 60.0
PORT = 7341
HUB_PORT = 7400
#: Short periods so the story takes seconds: rotation (and the re-query that comes with
#: it) every ~3 s, re-sync every 2 s, retries after at most 2 s.
FAST_SETTINGS = {
    "discovery": {"rotate_minutes": 0.05},
    "sync": {"interval_seconds": 2.0, "backoff_initial": 0.5, "backoff_max": 2.0},
    "upstream": {"interval_seconds": 1.5},
}


def fieldsync_command() -> list[str]:
    """The installed console script, as a user runs it (else ``python -m fieldsync_cli``)."""
    script = Path(sys.executable).parent / "fieldsync"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fieldsync_cli"]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any FIELDSYNC_* setting (no stray config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIELDSYNC_", "FAKETIME"))}
    env.pop("LD_PRELOAD", None)
    env["FIELDSYNC_PASSPHRASE"] = PASSPHRASE
    env.update(NO_OFFER_DELAY)  # tests about other things; test_timing_netns.py sets its own
    env.update(extra)
    return env


def cli(
    *args: str,
    host: Host | PeerHost | None = None,
    timeout: float = COMMAND_TIMEOUT,
    ok: tuple[int, ...] = (0,),
) -> Any:
    """Run ``fieldsync ARGS`` (in ``host``'s namespace if given); parsed JSON if ``--json``.
    An exit code outside ``ok`` fails the test."""
    argv = [*fieldsync_command(), *args]
    if host is not None:
        argv = host.command(argv)
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=clean_env(), check=False
    )
    if proc.returncode not in ok:
        raise AssertionError(
            f"`fieldsync {' '.join(args)}` exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return json.loads(proc.stdout) if "--json" in args else proc.stdout


def status(home: Path) -> dict[str, Any]:
    """``fieldsync status --json``: the store's counts, plus the daemon's view if one runs."""
    result: dict[str, Any] = cli("--home", str(home), "status", "--json")
    return result


def peers(home: Path) -> list[dict[str, Any]]:
    """``fieldsync peers --json`` of the running daemon."""
    result: list[dict[str, Any]] = cli("--home", str(home), "peers", "--json")
    return result


def envelopes(home: Path) -> int:
    return int(status(home)["items"]["envelope"])


def receipts(home: Path) -> int:
    return int(status(home)["items"]["receipt"])


def report_statuses(home: Path) -> list[str]:
    return [row["status"] for row in cli("--home", str(home), "report", "list", "--json")]


def peer_hosts(home: Path, origin: str | None = None) -> set[str]:
    """The host part of every scheduler target of ``home``'s daemon (optionally one origin)."""
    return {
        p["target"].rpartition(":")[0]
        for p in peers(home)
        if origin is None or p["origin"] == origin
    }


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    explain: Callable[[], str] | None = None,
    interval: float = 0.3,
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` s saying what we waited for."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            detail = ""
            if explain is not None:
                try:
                    detail = "\n" + explain()
                except Exception as exc:
                    detail = f"\n(could not explain: {exc!r})"
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)  # polling interval, not synchronisation: the condition decides


# --- a network on disk ----------------------------------------------------------------------


@dataclass
class Deployment:
    """One fieldsync network: its HQ directory and the homes of its nodes."""

    root: Path
    name: str
    homes: dict[str, Path] = field(default_factory=dict)

    @property
    def hq(self) -> Path:
        return self.root / "hq"

    @classmethod
    def create(cls, root: Path, name: str) -> Deployment:
        root.mkdir(parents=True, exist_ok=True)
        deployment = cls(root, name)
        cli(
            "network",
            "create",
            "--name",
            name,
            "--out",
            str(deployment.hq),
            "--kdf-profile",
            "interactive",
            "--json",
        )
        return deployment

    def add_node(self, name: str, role: str, author: str | None = None) -> Path:
        """``init`` (with an author key if ``author``), ``hq enroll --role``, ``join``."""
        home = self.root / name
        init = ["--home", str(home), "init", "--kdf-profile", "interactive", "--json"]
        if author is not None:
            init += ["--author", author]
        cli(*init)
        enrolment = self.root / f"{name}.enrolment"
        cli(
            "hq",
            "enroll",
            str(home / "request.txt"),
            "--hq",
            str(self.hq),
            "--out",
            str(enrolment),
            "--role",
            role,
            "--json",
        )
        cli("--home", str(home), "join", str(enrolment), "--json")
        self.homes[name] = home
        return home

    def ingest(self, hub_url: str, host: Host | PeerHost) -> dict[str, Any]:
        """``hq ingest --hub`` run where the hub is reachable. Exit 8 (new alerts, e.g. a
        gap while a report's predecessor is still on its way) is a successful ingest."""
        result: dict[str, Any] = cli(
            "hq", "ingest", "--hq", str(self.hq), "--hub", hub_url, "--json", host=host, ok=(0, 8)
        )
        assert result["attention"] == bool(result["alerts_total"])
        return result

    def export(self) -> list[dict[str, Any]]:
        text = cli("hq", "export", "--hq", str(self.hq), "--format", "jsonl")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def add_report(home: Path, narrative: str) -> None:
    cli(
        "--home",
        str(home),
        "report",
        "add",
        "--narrative",
        narrative,
        "--category",
        "arbitrary-detention",
        "--occurred",
        "2025-03-01",
        "--json",
    )


# --- a host outside the bridge --------------------------------------------------------------


@dataclass
class PeerHost:
    """A namespace joined to one other host by a veth pair (``up0`` at both ends)."""

    network: Network
    name: str
    namespace: str
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        kwargs.setdefault("text", True)
        proc: subprocess.Popen[str] = subprocess.Popen(self.command(argv), **kwargs)
        self.network.processes.append(proc)
        return proc


@dataclass
class Uplink:
    """A private link from a LAN host to a host that is on no bridge (the hub's line)."""

    near: Host
    far: PeerHost
    near_address: str
    iface: str = "up0"

    def down(self) -> None:
        """Unplug: the far end goes down, the near end sees NO-CARRIER (no route to the hub)."""
        _ip("-n", self.far.namespace, "link", "set", self.iface, "down")

    def up(self) -> None:
        _ip("-n", self.far.namespace, "link", "set", self.iface, "up")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def add_uplink(network: Network, near: Host, name: str, subnet: str = "10.78.0") -> Uplink:
    """A new host ``name`` reachable only from ``near``, over a veth pair on ``subnet``.

    The namespace is registered with ``network`` so its cleanup removes it (and the pair).
    """
    namespace = f"{network.tag}-{name}"
    network._add_namespace(namespace)
    far = PeerHost(network, name, namespace, f"{subnet}.2")
    near_address = f"{subnet}.1"
    _ip(
        "-n",
        near.namespace,
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
    _ip("-n", near.namespace, "addr", "add", f"{near_address}/30", "dev", "up0")
    _ip("-n", namespace, "addr", "add", f"{far.address}/30", "dev", "up0")
    _ip("-n", near.namespace, "link", "set", "up0", "up")
    _ip("-n", namespace, "link", "set", "up0", "up")
    return Uplink(near, far, near_address)


# --- daemons --------------------------------------------------------------------------------


def write_config(
    path: Path,
    *,
    interfaces: Sequence[str] = (),
    static: Sequence[str] = (),
    upstream: str | None = None,
) -> Path:
    """A daemon's TOML config: discovery on ``interfaces`` only, fast periods.

    The control socket stays at its default, HOME/control.sock, where ``status`` looks.
    """
    sections: dict[str, dict[str, Any]] = {
        "discovery": {"interfaces": list(interfaces), **FAST_SETTINGS["discovery"]},
        "peers": {"static": list(static)},
        "sync": dict(FAST_SETTINGS["sync"]),
        "upstream": {**FAST_SETTINGS["upstream"], **({"url": upstream} if upstream else {})},
        "log": {"level": "DEBUG"},
    }
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Daemon:
    """``fieldsync run`` in one host; its log (stderr) goes to a file."""

    name: str
    host: Host | PeerHost
    home: Path
    config: Path
    listen: str  # "": no --listen, [listen] addresses = "auto" (the node's role decides)
    log: Path
    hub: bool = False
    clock: str | None = None  # a libfaketime offset such as "+365d"
    proc: subprocess.Popen[str] | None = None
    listening: list[str] = field(default_factory=list)

    def start(self, clock: str | None = None, timeout: float = 30.0) -> Daemon:
        self.clock = clock
        argv = [
            *fieldsync_command(),
            "--home",
            str(self.home),
            "run",
            "--config",
            str(self.config),
            *(("--listen", self.listen) if self.listen else ()),  # "": the role's default
            "--json",
        ]
        if self.hub:
            argv.append("--hub")
        env = clean_env()
        if clock is not None:
            # libfaketime preloaded directly, not through the ``faketime`` wrapper: the wrapper
            # forks and does not pass signals on, so SIGTERM would orphan the daemon. The wall
            # clock is wrong; the monotonic clock (asyncio's timers) must stay real.
            env.update(LD_PRELOAD=libfaketime(), FAKETIME=clock, FAKETIME_DONT_FAKE_MONOTONIC="1")
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"\n=== start {self.name} clock={clock} at {time.time():.3f}\n")
        log_handle = self.log.open("a", encoding="utf-8")
        try:
            self.proc = self.host.popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_handle, env=env
            )
        finally:
            log_handle.close()
        first = _read_line(self.proc, timeout)
        if not first:
            raise AssertionError(
                f"daemon {self.name} did not start (exit {self.proc.poll()}):\n{self.tail()}"
            )
        info = json.loads(first)
        self.listening = info["listening"]
        return self

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``signum`` and wait for the exit; returns the exit status."""
        proc = self.proc
        assert proc is not None
        proc.send_signal(signum)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"daemon {self.name} did not stop:\n{self.tail()}") from None
        if proc.stdout is not None:
            proc.stdout.close()
        return code

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line, or "" if the process exits or ``timeout`` passes first."""
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


def libfaketime() -> str:
    """The libfaketime library to preload; tests that use it carry ``@pytest.mark.faketime``."""
    path = libfaketime_path()
    if path is None:
        raise AssertionError("libfaketime is not installed: apt-get install faketime")
    return path


# --- capture analysis -----------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    source: str
    destination: str
    sport: int
    dport: int
    payload: bytes


def tcp_segments(frames: Sequence[bytes]) -> list[Segment]:
    """IPv4 TCP segments of Ethernet frames, payload cut at the IP total length."""
    out = []
    for frame in frames:
        if len(frame) < 34 or struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue
        ip = frame[14:]
        if ip[9] != 6:
            continue
        header = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        tcp = ip[header:total]
        sport, dport = struct.unpack_from("!HH", tcp, 0)
        offset = (tcp[12] >> 4) * 4
        out.append(
            Segment(
                socket.inet_ntoa(ip[12:16]),
                socket.inet_ntoa(ip[16:20]),
                sport,
                dport,
                bytes(tcp[offset:]),
            )
        )
    return out


def dns_labels(frames: Sequence[bytes]) -> set[str]:
    """Every label of every name in every mDNS packet (lowercased)."""
    from zeroconf._dns import DNSPointer, DNSService
    from zeroconf._protocol.incoming import DNSIncoming

    labels: set[str] = set()
    for frame in frames:
        if len(frame) < 34 or struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue
        ip = frame[14:]
        if ip[9] != 17:
            continue
        header = (ip[0] & 0x0F) * 4
        sport, dport = struct.unpack_from("!HH", ip, header)
        if 5353 not in (sport, dport):
            continue
        message = DNSIncoming(ip[header + 8 :])
        names = [q.name for q in message.questions]
        for record in message.answers():
            names.append(record.name)
            if isinstance(record, DNSPointer):
                names.append(record.alias)
            elif isinstance(record, DNSService):
                names.append(record.server)
        for name in names:
            labels.update(label.lower() for label in name.split(".") if label)
    return labels
