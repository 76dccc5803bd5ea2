"""Peers without the network key get zero bytes from a real server (issue 3 "Must show").

The server is a real listener on 127.0.0.1 in its own process, so its memory can be read
from ``/proc``. 1,000 attempts, at most 8 at a time (well within the server's 8 pending
handshakes per source address, SPEC §14.8):

* random bytes of many lengths, from 0 to 64 KiB, with and without a half-close;
* a well-formed first message under the wrong network key (a member of another network);
* a replay of a member's real first message, which the server answered once: the
  listener-wide replay cache turns every replay into silence;
* a slow trickle of a member's valid first message, one byte per 100 ms: the server must
  not answer and must close at its handshake timeout (1 s here).

Each attempt reads until the server closes and must have received ``b""``. The server's
RSS grows by less than 20 MiB over the 1,000 attempts, and a member still syncs afterwards.
This test server closes after a failed handshake at once (``silent_close=(0, 0.01)``); a
second test checks that the real ``fieldsync run`` waits at least 1 s before closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldsync import synthetic
from fieldsync.node import Node
from fieldsync.runtime import Runtime
from fieldsync_protocol.handshake import MSG1_SIZE, MSG2_SIZE, PeerHandshake
from fieldsync_protocol.membership import Manifest
from tests.integration.sync_support import ServerProcess, start_helper_server, start_server

ATTEMPTS = 1_000
CONCURRENCY = 8
HANDSHAKE_TIMEOUT = 1.0
RSS_BUDGET_KIB = 20 * 1024
SEED = 4242


@dataclasses.dataclass(frozen=True)
class Keys:
    network_key: bytes
    static_secret: bytes
    certificate: bytes
    manifest: Manifest

    def first_message(self) -> bytes:
        """A fresh, well-formed handshake message 1 under this member's network key."""
        handshake = PeerHandshake(
            initiator=True,
            network_key=self.network_key,
            static_secret=self.static_secret,
            certificate=self.certificate,
            manifest=self.manifest,
            ephemeral_secret=secrets.token_bytes(32),
        )
        message = handshake.data_to_send()
        assert len(message) == MSG1_SIZE
        return message


def keys_of(home: Path) -> Keys:
    node = Node(home)
    try:
        member = node.membership()
        return Keys(member.network_key, node.node_secret(), member.certificate, member.manifest)
    finally:
        node.close()


@dataclasses.dataclass(frozen=True)
class Net:
    root: Path
    server: Path
    member: Path
    member_keys: Keys
    outsider_keys: Keys


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    root = tmp_path_factory.mktemp("outsiders") / "net"
    network = synthetic.create_network(root)
    server, member = network.add_node("server"), network.add_node("member")
    synthetic.fill_store(member, network.manifest, synthetic.sealed_reports(network.manifest, 20))
    outsider = synthetic.create_network(root / "other", "other").add_node("x")
    return Net(root, server, member, keys_of(member), keys_of(outsider))


@pytest.fixture
def server(net: Net) -> Iterator[ServerProcess]:
    process = start_helper_server(
        net.server, handshake_timeout=HANDSHAKE_TIMEOUT, silent_close=(0.0, 0.01)
    )
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log_text()


# --- one attempt -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Probe:
    kind: str
    payload: bytes
    half_close: bool = True
    trickle: float | None = None  # seconds between single bytes


@dataclasses.dataclass(frozen=True)
class Seen:
    received: bytes
    open_for: float  # seconds from connecting to the end of the stream
    after_last_byte: float  # seconds from the last byte sent to the end of the stream
    bytes_sent: int


async def probe(port: int, p: Probe, deadline: float = 15.0) -> Seen:
    """Send ``p.payload`` and read until the server closes the connection."""
    connected = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    sent = 0
    sent_at = time.monotonic()
    try:
        async with asyncio.timeout(deadline):
            if p.trickle is not None:
                for i in range(len(p.payload)):
                    writer.write(p.payload[i : i + 1])
                    await writer.drain()
                    sent, sent_at = i + 1, time.monotonic()
                    try:  # the pace of the trickle, and a look at what came back
                        chunk = await asyncio.wait_for(reader.read(4096), p.trickle)
                    except TimeoutError:
                        continue
                    received += chunk
                    if not chunk:
                        break
            else:
                writer.write(p.payload)
                await writer.drain()
                sent, sent_at = len(p.payload), time.monotonic()
                if p.half_close:
                    writer.write_eof()
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionError:
        pass  # a reset is a close too; what arrived before it is in ``received``
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    end = time.monotonic()
    return Seen(received, end - connected, end - sent_at, sent)


def probes(net: Net, replayed: bytes) -> list[Probe]:
    rng = random.Random(SEED)
    lengths = [0, 1, 2, 16, 31, 47, 48, 49, 64, 96, 100, 351, 352, 353, 720, 1500, 4096, 65536]
    out: list[Probe] = []
    for n in range(600):
        size = lengths[n % len(lengths)] if n < 360 else rng.randrange(0, 2048)
        out.append(Probe("random", os.urandom(size), half_close=n % 3 != 0))
    for n in range(300):
        out.append(Probe("wrong-psk", net.outsider_keys.first_message(), half_close=n % 2 == 0))
    for n in range(92):
        out.append(Probe("replay", replayed, half_close=n % 2 == 0))
    for _ in range(8):
        out.append(Probe("trickle", net.member_keys.first_message(), trickle=0.1))
    rng.shuffle(out)
    assert len(out) == ATTEMPTS
    return out


async def member_sync(home: Path, target: str) -> None:
    runtime = await Runtime.open(home)
    try:
        outcome = await runtime.sync_with(target)
    finally:
        await runtime.close()
    assert outcome.complete, outcome.error


# --- the tests ---------------------------------------------------------------------------------


async def test_outsiders_get_zero_bytes_and_memory_stays_flat(
    net: Net, server: ServerProcess
) -> None:
    port = server.port
    # Positive controls: a member's real first message is answered (with message 2) ...
    replayed = net.member_keys.first_message()
    answer = await probe(port, Probe("member", replayed))
    assert len(answer.received) == MSG2_SIZE
    # ... and a member syncs. Both also warm the server up before its memory is read.
    await member_sync(net.member, server.tcp_target)
    rss_before = await asyncio.to_thread(server.rss_kib)

    started = time.monotonic()
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(p: Probe) -> tuple[Probe, Seen]:
        async with limit:
            return p, await probe(port, p)

    results = await asyncio.gather(*(one(p) for p in probes(net, replayed)))
    elapsed = time.monotonic() - started
    rss_after = await asyncio.to_thread(server.rss_kib)

    leaked = [(p.kind, len(p.payload), seen.received[:16]) for p, seen in results if seen.received]
    assert leaked == [], leaked
    # A trickle is closed by the handshake timeout (or earlier, when dropped for a newer
    # connection), long before its 48 bytes are in (4.8 s).
    trickles = [seen for p, seen in results if p.kind == "trickle"]
    assert all(t.open_for < HANDSHAKE_TIMEOUT + 1 and t.bytes_sent < MSG1_SIZE for t in trickles)
    growth = rss_after - rss_before
    kinds = Counter(p.kind for p, _ in results)
    spans = sorted(round(t.open_for, 2) for t in trickles)
    print(
        f"\n{ATTEMPTS} outsider attempts {dict(kinds)} in {elapsed:.1f} s, every one got 0 B;"
        f" trickles closed after {spans} s;"
        f" server RSS {rss_before} KiB -> {rss_after} KiB ({growth:+d} KiB)"
    )
    assert growth < RSS_BUDGET_KIB, (rss_before, rss_after)

    # The server still serves members.
    await member_sync(net.member, server.tcp_target)
    assert server.proc.poll() is None


async def test_slow_trickle_is_closed_at_the_handshake_timeout(
    net: Net, server: ServerProcess
) -> None:
    seen = await probe(server.port, Probe("trickle", net.member_keys.first_message(), trickle=0.1))
    assert seen.received == b""
    assert HANDSHAKE_TIMEOUT <= seen.open_for < HANDSHAKE_TIMEOUT + 1, seen
    assert 5 <= seen.bytes_sent < MSG1_SIZE, seen  # it was trickling, and never finished


async def test_real_daemon_closes_on_a_bad_first_message_after_a_delay(
    net: Net, tmp_path: Path
) -> None:
    """``fieldsync run`` with its defaults: silence, then a close 1-3 s after the bad message."""
    daemon = await asyncio.to_thread(start_server, net.server, log=tmp_path / "run.log")
    try:
        bad = [
            Probe("random", os.urandom(MSG1_SIZE), half_close=False),
            Probe("wrong-psk", net.outsider_keys.first_message(), half_close=False),
            Probe("random", os.urandom(MSG1_SIZE + 1), half_close=False),
        ]
        results = await asyncio.gather(*(probe(daemon.port, p) for p in bad))
    finally:
        code = await asyncio.to_thread(daemon.stop)
        assert code == 0, await asyncio.to_thread(daemon.log_text)
    delays = [round(seen.after_last_byte, 2) for seen in results]
    print(f"\nfieldsync run closed after bad first messages with delays of {delays} s")
    for seen in results:
        assert seen.received == b""
        assert 1.0 <= seen.after_last_byte < 3.0 + 1.0, seen
