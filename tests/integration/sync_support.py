"""Shared support for the peer-sync integration tests (issue 3 "Must show").

* ``build_pair`` makes a real network on disk (HQ, nodes ``a`` and ``b``) whose stores each
  hold their own real sealed reports; ``shared_pair`` builds it once per test session
  (sealing 20,000 reports costs seconds) and ``copy_pair`` gives each test its own copy.
* ``start_server`` runs ``fieldsync --home A run --listen 127.0.0.1:0 --json`` and reads the
  bound port from its first stdout line; ``run_sync`` runs ``fieldsync --home B sync``.
* ``start_helper_server`` runs *this file* as a script: an in-process ``Server`` with chosen
  ``PeerLimits`` (the CLI has no knob for handshake timeouts), in its own process so its
  memory can be measured from outside.
* ``check_store`` reads a store file with plain ``sqlite3``: integrity, no duplicates, every
  item's bytes hash to its id.

Nothing here sleeps to synchronise: every wait polls observable state under a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldsync import synthetic
from fieldsync.node import STORE
from fieldsync.store import connect_store
from fieldsync_protocol.crypto import content_id

#: Reports sealed into each of the two stores of the shared pair.
ITEMS_PER_NODE = 10_000
#: Bytes of the three fixed-size handshake messages (48 + 352 + 320).
HANDSHAKE_BYTES = 720
#: How long a command may take before the test gives up on it.
COMMAND_TIMEOUT = 120.0


def fieldsync_command() -> list[str]:
    """The installed console script, as a user runs it (else ``python -m fieldsync_cli``)."""
    script = Path(sys.executable).parent / "fieldsync"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fieldsync_cli"]


def clean_env() -> dict[str, str]:
    """The test's environment without any FIELDSYNC_* setting (no stray config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
    # Offer at once (timing privacy has its own tests). Spelt out, not imported from
    # tests.cli: this file also runs as a script, where the tests package is not importable.
    return {**env, "FIELDSYNC_PRIVACY_OFFER_DELAY_MINUTES": "0"}


# --- a pair of filled nodes -----------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """Two enrolled nodes of one network; ``ids_a``/``ids_b`` are what each held at first."""

    root: Path
    ids_a: frozenset[bytes]
    ids_b: frozenset[bytes]

    @property
    def a(self) -> Path:
        return self.root / "a"

    @property
    def b(self) -> Path:
        return self.root / "b"

    @property
    def union(self) -> frozenset[bytes]:
        return self.ids_a | self.ids_b


def build_pair(root: Path, items_per_node: int = ITEMS_PER_NODE) -> Pair:
    network = synthetic.create_network(root)
    a, b = network.add_node("a"), network.add_node("b")
    for home in (a, b):
        reports = synthetic.sealed_reports(network.manifest, items_per_node)
        counts = synthetic.fill_store(home, network.manifest, reports)
        assert counts.new == items_per_node
    pair = Pair(root, frozenset(item_ids(a)), frozenset(item_ids(b)))
    # each store holds its reports plus the network manifest (the same item on both)
    assert len(pair.ids_a) == len(pair.ids_b) == items_per_node + 1
    assert len(pair.union) == 2 * items_per_node + 1
    return pair


_BUILT: dict[Path, Pair] = {}


def shared_pair(base_dir: Path) -> Pair:
    """``build_pair`` once per test session (``base_dir``: the session's basetemp)."""
    if base_dir not in _BUILT:
        _BUILT[base_dir] = build_pair(base_dir / "sync-pair")
    return _BUILT[base_dir]


def copy_pair(base: Pair, root: Path) -> Pair:
    """A private copy of the two node homes (the stores must be closed)."""
    for name in ("a", "b"):
        shutil.copytree(base.root / name, root / name)
    return Pair(root, base.ids_a, base.ids_b)


# --- looking at a store from outside --------------------------------------------------------


def store_file(home: Path) -> Path:
    return home / STORE


def item_ids(home: Path) -> set[bytes]:
    conn = connect_store(store_file(home))
    try:
        return {row[0] for row in conn.execute("SELECT id FROM items")}
    finally:
        conn.close()


def item_count(home: Path) -> int:
    conn = connect_store(store_file(home))
    try:
        return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])
    finally:
        conn.close()


def check_store(home: Path) -> set[bytes]:
    """Assert integrity, no duplicate and every item hashing to its id; return the ids."""
    conn = connect_store(store_file(home))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        total, distinct = conn.execute("SELECT count(*), count(DISTINCT id) FROM items").fetchone()
        assert total == distinct
        ids: set[bytes] = set()
        for item_id, data in conn.execute("SELECT id, data FROM items"):
            assert content_id(data) == item_id
            ids.add(item_id)
        assert len(ids) == total
        return ids
    finally:
        conn.close()


# --- processes ------------------------------------------------------------------------------


def read_line(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    """One line of ``proc``'s stdout, or fail at ``deadline`` (no blocking read past it)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = bytearray()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no line from {proc.args!r} in time; got {bytes(line)!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                raise AssertionError(
                    f"{proc.args!r} closed stdout (exit {proc.poll()}) after {bytes(line)!r}"
                )
            line += chunk
    return bytes(line)


@dataclass
class ServerProcess:
    """A running server process and the addresses it printed."""

    proc: subprocess.Popen[bytes]
    log: Path
    addresses: list[str]
    ws: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def tcp_target(self) -> str:
        return self.addresses[0]

    @property
    def ws_url(self) -> str:
        return f"ws://{self.addresses[-1]}/sync"

    @property
    def port(self) -> int:
        return int(self.addresses[0].rpartition(":")[2])

    def target(self, kind: str) -> str:
        return self.ws_url if kind == "ws" else self.tcp_target

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for a clean exit; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._close_pipe()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def rss_kib(self) -> int:
        """VmRSS of the server process in KiB (Linux /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _start(
    args: list[str], log: Path, startup_timeout: float
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=clean_env()
        )
    try:
        first = json.loads(read_line(proc, time.monotonic() + startup_timeout))
        assert isinstance(first, dict) and "listening" in first, first
    except (AssertionError, ValueError):
        proc.kill()
        proc.wait(30)
        raise AssertionError(f"server did not start: {log.read_text(errors='replace')}") from None
    return proc, first


def start_server(
    home: Path,
    *,
    ws: bool = False,
    hub: bool = False,
    log: Path | None = None,
    startup_timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> ServerProcess:
    """``fieldsync --home HOME run`` on 127.0.0.1, port 0 (and a WebSocket listener); with
    ``hub``, ``run --hub``: the one listener serves WebSocket (``ws_url``) as the HQ hub;
    ``extra_args`` go after ``run`` (e.g. ``--config FILE``)."""
    args = [*fieldsync_command(), "--home", str(home), "run", *extra_args]
    args += ["--listen", "127.0.0.1:0", "--json"]
    if ws:
        args += ["--ws-listen", "127.0.0.1:0"]
    if hub:
        args += ["--hub"]
    log = log or home.parent / f"{home.name}-run.log"
    proc, first = _start(args, log, startup_timeout)
    addresses = list(first["listening"])
    assert len(addresses) == (2 if ws else 1), first
    assert all(a.startswith("127.0.0.1:") for a in addresses), first
    return ServerProcess(proc, log, addresses, ws or hub, first)


def start_helper_server(
    home: Path,
    *,
    handshake_timeout: float = 10.0,
    silent_close: tuple[float, float] = (1.0, 3.0),
    log: Path | None = None,
) -> ServerProcess:
    """An in-process ``Server`` with these ``PeerLimits``, in a child process of its own."""
    args = [
        sys.executable,
        str(Path(__file__).resolve()),
        "serve",
        str(home),
        "--handshake-timeout",
        str(handshake_timeout),
        "--silent-close",
        f"{silent_close[0]},{silent_close[1]}",
    ]
    log = log or home.parent / f"{home.name}-helper.log"
    proc, first = _start(args, log, 30.0)
    return ServerProcess(proc, log, list(first["listening"]), False, first)


@dataclass(frozen=True)
class SyncResult:
    returncode: int
    summary: dict[str, Any]
    stderr: str

    @property
    def complete(self) -> bool:
        return self.returncode == 0 and bool(self.summary.get("complete"))

    @property
    def wire_bytes(self) -> int:
        return int(self.summary["wire_bytes_sent"]) + int(self.summary["wire_bytes_received"])


def sync_args(home: Path, target: str) -> list[str]:
    where = ["--ws", target] if target.startswith("ws://") else [target]
    return [*fieldsync_command(), "--home", str(home), "sync", *where, "--json"]


def start_sync(home: Path, target: str, log: Path) -> subprocess.Popen[bytes]:
    """``fieldsync sync`` in the background (stdout: its JSON summary; stderr: ``log``)."""
    with open(log, "ab") as err:
        return subprocess.Popen(
            sync_args(home, target),
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=clean_env(),
        )


def run_sync(home: Path, target: str, timeout: float = COMMAND_TIMEOUT) -> SyncResult:
    """One ``fieldsync --home HOME sync TARGET --json`` to completion."""
    done = subprocess.run(
        sync_args(home, target),
        capture_output=True,
        timeout=timeout,
        env=clean_env(),
        check=False,
    )
    out = done.stdout.decode().strip().splitlines()
    summary = json.loads(out[-1]) if out else {}
    return SyncResult(done.returncode, summary, done.stderr.decode(errors="replace"))


# --- the helper server (run as a script) ----------------------------------------------------


async def _serve(home: Path, handshake_timeout: float, silent_close: tuple[float, float]) -> None:
    from fieldsync.peer import PeerLimits
    from fieldsync.runtime import Runtime, Server

    limits = PeerLimits(handshake_timeout=handshake_timeout, silent_close=silent_close)
    runtime = await Runtime.open(home, limits=limits)
    server = Server(runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        host, port = await server.listen_tcp("127.0.0.1", 0)
        print(json.dumps({"listening": [f"{host}:{port}"]}), flush=True)
        await stop.wait()
    finally:
        await server.close()
        await runtime.close()


def _main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("home", type=Path)
    serve.add_argument("--handshake-timeout", type=float, default=10.0)
    serve.add_argument("--silent-close", default="1.0,3.0")
    args = parser.parse_args(argv)
    low, high = (float(x) for x in args.silent_close.split(","))
    asyncio.run(_serve(args.home, args.handshake_timeout, (low, high)))


if __name__ == "__main__":
    _main(sys.argv[1:])
