"""Private multi-host networks for integration tests: network namespaces on one bridge.

Nothing here touches the machine's own interfaces. Every device is created inside a
namespace this module creates: the bridge lives in its own namespace, and each host's veth
pair is created there with its far end moved straight into the host's namespace, so not
even a down interface ever appears in the root namespace. Multicast sent by a host reaches
only the other hosts on the bridge.

    with Network() as net:
        a = net.add_host("a")                   # 10.77.0.11 on eth0
        b = net.add_host("b")
        with net.capture(tmp_path / "bridge.pcap"):
            proc = a.popen([sys.executable, "agent.py", ...], stdout=subprocess.PIPE)
            ...
            b.link_down(); b.link_up()

Run as a script it is the capturer: ``python netns.py capture IFACE OUT.pcap`` records every
frame on IFACE (promiscuous, so frames the bridge forwards between ports are included) to a
classic pcap file until SIGTERM. It needs only the standard library, so CI needs no tcpdump.

Needs root and ``ip`` (iproute2); tests using it carry ``@pytest.mark.netns``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

BRIDGE = "br0"
HOST_IFACE = "eth0"
_counter = itertools.count()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


class Host:
    """One machine: a namespace with ``lo`` and ``eth0`` plugged into the bridge."""

    def __init__(self, network: Network, name: str, namespace: str, port: str, address: str):
        self.network = network
        self.name = name
        self.namespace = namespace
        self.bridge_port = port  # the veth end inside the bridge namespace
        self.address = address

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start a process in this host; it is killed at cleanup if still running."""
        kwargs.setdefault("text", True)
        proc: subprocess.Popen[str] = subprocess.Popen(self.command(argv), **kwargs)
        self.network.processes.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(argv), check=True, capture_output=True, text=True, timeout=timeout
        )

    def link_down(self) -> None:
        """Unplug the cable: the bridge port goes down, the host sees NO-CARRIER.

        The host keeps its address and its processes notice nothing, as when a device walks
        out of Wi-Fi range: frames in either direction are lost.
        """
        _ip("-n", self.network.bridge_namespace, "link", "set", self.bridge_port, "down")

    def link_up(self) -> None:
        _ip("-n", self.network.bridge_namespace, "link", "set", self.bridge_port, "up")


class Network:
    """A bridge in its own namespace plus hosts; everything is removed on exit."""

    def __init__(self, subnet: str = "10.77.0") -> None:
        # Unique per process and per network, so parallel or leftover runs never collide.
        self.tag = f"fs{os.getpid()}n{next(_counter)}"
        self.subnet = subnet
        self.bridge_namespace = f"{self.tag}-br"
        self.hosts: list[Host] = []
        self.processes: list[subprocess.Popen[str]] = []
        self._namespaces: list[str] = []
        self._created = False

    def __enter__(self) -> Network:
        self.create()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def create(self) -> None:
        if self._created:
            return
        self._created = True
        try:
            self._add_namespace(self.bridge_namespace)
            _ip("-n", self.bridge_namespace, "link", "add", BRIDGE, "type", "bridge")
            _ip("-n", self.bridge_namespace, "link", "set", BRIDGE, "up")
        except BaseException:
            self.cleanup()
            raise

    def add_host(self, name: str) -> Host:
        """A new host at ``<subnet>.<11 + n>/24``, linked up."""
        index = len(self.hosts)
        namespace = f"{self.tag}-{name}"
        port = f"p{index}"
        address = f"{self.subnet}.{11 + index}"
        self._add_namespace(namespace)
        # Created in the bridge namespace, far end moved directly into the host: the root
        # namespace never sees either end.
        _ip(
            "-n",
            self.bridge_namespace,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            HOST_IFACE,
            "netns",
            namespace,
        )
        _ip("-n", self.bridge_namespace, "link", "set", port, "master", BRIDGE, "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", HOST_IFACE)
        _ip("-n", namespace, "link", "set", HOST_IFACE, "up")
        host = Host(self, name, namespace, port, address)
        self.hosts.append(host)
        return host

    @contextlib.contextmanager
    def capture(self, path: Path) -> Iterator[Path]:
        """Record every frame crossing the bridge to ``path`` (pcap) while the block runs."""
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.bridge_namespace,
                sys.executable,
                __file__,
                "capture",
                BRIDGE,
                str(path),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.processes.append(proc)
        assert proc.stdout is not None
        # The capturer says "ready" once its socket is bound: nothing sent after that is lost.
        ready = proc.stdout.readline().strip()
        if ready != "ready":
            proc.kill()
            raise RuntimeError(f"capture did not start (got {ready!r}, exit {proc.poll()})")
        try:
            yield path
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cleanup(self) -> None:
        """Kill processes we started, then delete our namespaces (and with them the veths)."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.processes.clear()
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        self._namespaces.clear()


# -- pcap ------------------------------------------------------------------------------------

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # LINKTYPE_ETHERNET


def read_pcap(path: Path) -> list[bytes]:
    """The frames of a classic little-endian pcap file, in order."""
    data = path.read_bytes()
    if data[:24] != _PCAP_HEADER:
        raise ValueError(f"{path}: not a pcap file written by this module")
    frames = []
    offset = 24
    while offset < len(data):
        _sec, _usec, included, _original = struct.unpack_from("<IIII", data, offset)
        offset += 16
        frames.append(data[offset : offset + included])
        offset += included
    return frames


def _write_record(f: IO[bytes], frame: bytes) -> None:
    now = time.time()
    f.write(struct.pack("<IIII", int(now), int(now % 1 * 1e6), len(frame), len(frame)))
    f.write(frame)


def _capture(iface: str, out: str) -> None:
    eth_p_all = 0x0003
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(eth_p_all))
    sock.bind((iface, 0))
    # PACKET_ADD_MEMBERSHIP(PACKET_MR_PROMISC): a promiscuous bridge passes frames it
    # forwards between its ports up to its own device too, so we see all of them.
    sol_packet, packet_add_membership, packet_mr_promisc = 263, 1, 1
    mreq = struct.pack("iHH8s", socket.if_nametoindex(iface), packet_mr_promisc, 0, b"")
    sock.setsockopt(sol_packet, packet_add_membership, mreq)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.settimeout(0.1)
    stop = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    with open(out, "wb") as f:
        f.write(_PCAP_HEADER)
        print("ready", flush=True)
        while not stop:
            try:
                frame = sock.recv(65535)
            except TimeoutError:
                continue
            _write_record(f, frame)
        # Drain what the kernel already queued before SIGTERM arrived.
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                _write_record(f, sock.recv(65535))


def _main(argv: list[str], stdout: IO[str]) -> int:
    if len(argv) == 3 and argv[0] == "capture":
        _capture(argv[1], argv[2])
        return 0
    print("usage: netns.py capture IFACE OUT.pcap", file=stdout)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:], sys.stdout))
