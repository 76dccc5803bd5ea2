"""No outsider and no single member can stop delivery (issue 7, Deliver 5 and 6, "Must show").

A real ``fieldsync run`` process (a relay on TCP, or the hub with ``--hub`` on WebSocket)
writes its log to a file. Against it:

* **64 outsider connections**, held open for the whole test: half send nothing, half
  trickle one random byte every 0.5 s. They come from eight loopback addresses
  (127.0.0.1-8, eight each), so both the per-address cap and the node-wide pool of
  pre-authentication slots are full; whenever the daemon closes one, the outsider opens it
  again at once. The members start only once the daemon has closed as many outsider
  connections as there are outsiders (no slot is held), and the attack goes on throughout.
  On the hub they are upgraded WebSockets, plus 16 TCP connections that never finish their
  HTTP request. Meanwhile 10 ``fieldsync sync`` runs by 5 members must all
  complete, every outsider must get zero bytes, and the daemon's log must grow by less than
  1 MB.
* **30 parallel sessions of one member**: real handshakes with one certificate, each a real
  HELLO and RECONCILE, then DATA batches of well-formed envelopes as fast as the socket takes
  them, ignoring the window (security review M2: 52 -> 450 MiB before the limits).
  The daemon's RSS (``/proc/PID/status``) may grow by less than 32 MiB, and two honest
  members sync during the flood and after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import aiohttp
import pytest

from fieldsync import synthetic
from fieldsync.node import Node
from fieldsync_protocol import codec
from fieldsync_protocol.crypto import content_id
from fieldsync_protocol.handshake import MSG2_SIZE, PeerHandshake
from fieldsync_protocol.membership import Manifest
from fieldsync_protocol.reconcile_index import ItemIndex, SortedListIndex
from fieldsync_protocol.session import SyncSession
from fieldsync_protocol.session_messages import BATCH_ITEMS, Cursor
from tests.integration.sync_support import ServerProcess, item_ids, run_sync, start_server

OUTSIDERS = 64
OUTSIDER_ADDRESSES = [f"127.0.0.{n}" for n in range(1, 9)]
#: TCP connections to the hub that never send their HTTP request (aiohttp holds them).
HTTP_IDLERS = 16
TRICKLE_EVERY = 0.5
JUNK_BYTES = 256 * 1024
MEMBERS = 5
SYNCS = 10
REPORTS_PER_MEMBER = 4
LOG_BUDGET = 1_000_000
FLOOD_SESSIONS = 30
#: What each flooding session tries to push before the daemon cuts it off.
FLOOD_BYTES_PER_SESSION = 16 * 1024 * 1024
RSS_BUDGET_KIB = 32 * 1024


@dataclasses.dataclass(frozen=True)
class Net:
    root: Path
    relay: Path
    members: tuple[Path, ...]
    flooder: Path
    reports: frozenset[bytes]


@pytest.fixture(scope="module")
def base_net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    root = tmp_path_factory.mktemp("admission") / "net"
    network = synthetic.create_network(root)
    relay = network.add_node("relay")
    members = tuple(network.add_node(f"member{n}") for n in range(MEMBERS))
    flooder = network.add_node("flooder")
    reports: set[bytes] = set()
    for n, home in enumerate(members):
        sealed = synthetic.sealed_reports(
            network.manifest, REPORTS_PER_MEMBER, author_seed=bytes([n + 1]) * 32
        )
        synthetic.fill_store(home, network.manifest, sealed)
        reports |= {content_id(r) for r in sealed}
    return Net(root, relay, members, flooder, frozenset(reports))


@pytest.fixture
def net(base_net: Net, tmp_path: Path) -> Net:
    import shutil

    shutil.copytree(base_net.root, tmp_path / "net")
    moved = tmp_path / "net"
    return Net(
        moved,
        moved / base_net.relay.name,
        tuple(moved / m.name for m in base_net.members),
        moved / base_net.flooder.name,
        base_net.reports,
    )


@pytest.fixture
def daemon(net: Net, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    kind = request.param
    process = start_server(net.relay, hub=kind == "ws", log=tmp_path / "run.log")
    try:
        yield process
    finally:
        code = process.stop()
        assert code == 0, process.log_text()[-4000:]


async def until(done: Callable[[], bool], seconds: float) -> None:
    """Poll ``done`` (observable state, no sleeping to synchronise) under a deadline."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the expected state was never reached"
        await asyncio.sleep(0.05)


# --- the outsiders -------------------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    connections: int = 0
    closed_by_daemon: int = 0
    bytes_received: int = 0
    open_now: int = 0


async def _hold_tcp(
    host: str, port: int, source: str, trickle: bool, tally: Tally, junk: int = 0
) -> None:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    tally.connections += 1
    tally.open_now += 1
    try:
        writer.write(os.urandom(junk))
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(4096), TRICKLE_EVERY)
            except TimeoutError:
                if trickle:
                    writer.write(os.urandom(1))
                continue
            tally.bytes_received += len(chunk)
            if not chunk:
                tally.closed_by_daemon += 1
                return
    except ConnectionError:
        tally.closed_by_daemon += 1
    finally:
        tally.open_now -= 1
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _hold_ws(url: str, source: str, trickle: bool, tally: Tally) -> None:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        ws = await session.ws_connect(url, autoping=True)
        tally.connections += 1
        tally.open_now += 1
        try:
            while True:
                try:
                    message = await ws.receive(timeout=TRICKLE_EVERY)
                except TimeoutError:
                    if trickle:
                        await ws.send_bytes(os.urandom(1))
                    continue
                if message.type is aiohttp.WSMsgType.BINARY:
                    tally.bytes_received += len(message.data)
                elif message.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    tally.closed_by_daemon += 1
                    return
        except (ConnectionError, aiohttp.ClientError):
            tally.closed_by_daemon += 1
        finally:
            tally.open_now -= 1
            await ws.close()


async def outsider(
    kind: str,
    daemon: ServerProcess,
    source: str,
    trickle: bool,
    tally: Tally,
    stop: asyncio.Event,
    junk: int = 0,
) -> None:
    """One outsider connection, re-opened whenever the daemon closes it, until ``stop``."""
    host, _, port = daemon.addresses[0].rpartition(":")
    while not stop.is_set():
        with contextlib.suppress(OSError, aiohttp.ClientError, TimeoutError):
            if kind == "ws":
                await _hold_ws(daemon.ws_url, source, trickle, tally)
            else:
                await _hold_tcp(host, int(port), source, trickle, tally, junk)


async def http_idler(daemon: ServerProcess, source: str, stop: asyncio.Event) -> None:
    """A TCP connection to the hub that never sends its HTTP request."""
    host, _, port = daemon.addresses[0].rpartition(":")
    _reader, writer = await asyncio.open_connection(host, int(port), local_addr=(source, 0))
    try:
        await stop.wait()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.parametrize("daemon", ["tcp", "ws"], indirect=True)
async def test_outsiders_holding_connections_cannot_keep_members_out(
    net: Net, daemon: ServerProcess
) -> None:
    kind = "ws" if daemon.ws else "tcp"
    target = daemon.ws_url if kind == "ws" else daemon.tcp_target
    tally = Tally()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(
            outsider(kind, daemon, OUTSIDER_ADDRESSES[n % 8], n % 2 == 1, tally, stop)
        )
        for n in range(OUTSIDERS)
    ]
    if kind == "ws":
        tasks += [
            asyncio.create_task(http_idler(daemon, OUTSIDER_ADDRESSES[n % 8], stop))
            for n in range(HTTP_IDLERS)
        ]
    log_before = (await asyncio.to_thread(daemon.log.stat)).st_size
    started = time.monotonic()
    try:
        await until(lambda: tally.open_now == OUTSIDERS, 120)
        # Nobody holds a slot: every outsider has been closed and has come back at
        # least once (first-message deadline, or dropped for a newer connection).
        await until(lambda: tally.closed_by_daemon >= OUTSIDERS, 120)
        results = []
        for n in range(SYNCS):
            home = net.members[n % MEMBERS]
            results.append(await asyncio.to_thread(run_sync, home, target))
            assert tally.open_now > OUTSIDERS // 2  # the attack is still on
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.monotonic() - started
    assert daemon.proc.poll() is None, daemon.log_text()[-4000:]
    log_growth = (await asyncio.to_thread(daemon.log.stat)).st_size - log_before

    completed = [r for r in results if r.complete]
    assert len(completed) == SYNCS, [r.stderr[-500:] for r in results if not r.complete]
    assert tally.bytes_received == 0  # not one byte to an outsider
    # Every member's reports reached the daemon.
    await asyncio.to_thread(daemon.stop)
    assert net.reports <= await asyncio.to_thread(item_ids, net.relay)
    print(
        f"\n{kind}: {OUTSIDERS} outsiders held open ({tally.connections} connections made,"
        f" {tally.closed_by_daemon} closed by the daemon, 0 B to them)"
        f"{f' + {HTTP_IDLERS} idle HTTP connections' if kind == 'ws' else ''};"
        f" {len(completed)}/{SYNCS} member syncs complete in {elapsed:.1f} s;"
        f" daemon log grew by {log_growth} B"
    )
    assert log_growth < LOG_BUDGET, daemon.log_text()[-4000:]


@pytest.mark.parametrize("daemon", ["tcp"], indirect=True)
async def test_outsiders_sending_junk_make_the_daemon_buffer_nothing(
    net: Net, daemon: ServerProcess
) -> None:
    """64 outsiders each send 256 KiB of junk at once, then hold the connection: a failed
    handshake reads and drops what follows during its close delay, so neither the pending
    nor the lingering connections buffer it."""
    warm = await asyncio.to_thread(run_sync, net.members[0], daemon.tcp_target)
    assert warm.complete, warm.stderr[-2000:]
    baseline = await asyncio.to_thread(daemon.rss_kib)
    tally = Tally()
    stop = asyncio.Event()
    samples: list[int] = []
    sampler = asyncio.create_task(sample_rss(daemon, samples, stop))
    tasks = [
        asyncio.create_task(
            outsider("tcp", daemon, OUTSIDER_ADDRESSES[n % 8], False, tally, stop, JUNK_BYTES)
        )
        for n in range(OUTSIDERS)
    ]
    try:
        await until(lambda: tally.closed_by_daemon >= 2 * OUTSIDERS, 120)
        results = [
            await asyncio.to_thread(run_sync, net.members[n], daemon.tcp_target)
            for n in range(1, MEMBERS)
        ]
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sampler
    peak = max(samples)
    print(
        f"\n{OUTSIDERS} outsiders sending {JUNK_BYTES // 1024} KiB each:"
        f" {tally.connections} connections, {tally.connections * JUNK_BYTES / 2**20:.0f} MiB"
        f" of junk, 0 B back; daemon RSS {baseline} KiB -> peak {peak} KiB"
        f" ({peak - baseline:+d} KiB)"
    )
    assert all(r.complete for r in results), [r.stderr[-500:] for r in results]
    assert tally.bytes_received == 0
    assert peak - baseline < RSS_BUDGET_KIB, (baseline, peak)


# --- 30 parallel sessions of one member ---------------------------------------------------------


class EmptySource:
    """A member's item source with nothing in it (only its HELLO is needed)."""

    def __init__(self) -> None:
        self.index: ItemIndex = SortedListIndex.from_sorted([])

    def items_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        return []

    def get(self, ids: Sequence[bytes]) -> list[bytes]:
        return []

    def wants(self, ids: Sequence[bytes]) -> list[bytes]:
        return list(ids)

    def send_later(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        return []  # no media here: every item goes as found


@dataclasses.dataclass
class FloodTally:
    handshakes: int = 0
    attempts: int = 0
    bytes_written: int = 0


def flood_batches(key_id: int) -> list[list[bytes]]:
    """A window of DATA batches (16 x 256 well-formed envelopes): only HQ could tell they
    are noise, so the daemon verifies and stores them like real ones."""
    return [
        [
            codec.encode({"c": os.urandom(512), "k": key_id, "l": 3, "t": "e", "v": 1})
            for _ in range(BATCH_ITEMS)
        ]
        for _ in range(16)
    ]


async def flood_session(
    keys: dict[str, object], port: int, batches: list[list[bytes]], tally: FloodTally
) -> None:
    """A real handshake with the member's certificate, then a real HELLO and RECONCILE and
    DATA batches as fast as the socket takes them, never waiting for an acknowledgement."""
    while True:
        tally.attempts += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        handshake = PeerHandshake(
            initiator=True,
            ephemeral_secret=secrets.token_bytes(32),
            **keys,  # type: ignore[arg-type]
        )
        try:
            writer.write(handshake.data_to_send())
            handshake.receive_data(await asyncio.wait_for(reader.readexactly(MSG2_SIZE), 30))
            break
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            writer.close()  # dropped before authentication (per-address cap): try again
    tally.handshakes += 1
    writer.write(handshake.data_to_send())
    sender, _receiver = handshake.transport()
    session = SyncSession(EmptySource(), initiator=True, local=Cursor(b"\x01" * 16, 0))
    messages = list(session.messages_to_send())  # HELLO and the first RECONCILE
    sent = 0
    n = 0
    try:
        while sent < FLOOD_BYTES_PER_SESSION:
            if not messages:
                messages = [codec.encode({"t": "data", "n": n, "i": batches[n % len(batches)]})]
                n += 1
            data = sender.send(messages.pop(0))
            writer.write(data)
            await writer.drain()
            sent += len(data)
            tally.bytes_written += len(data)
    except ConnectionError:
        pass  # the daemon cut this session off
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def member_keys(home: Path) -> dict[str, object]:
    node = Node(home)
    try:
        member = node.membership()
        return {
            "network_key": member.network_key,
            "static_secret": node.node_secret(),
            "certificate": member.certificate,
            "manifest": member.manifest,
        }
    finally:
        node.close()


async def sample_rss(daemon: ServerProcess, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(await asyncio.to_thread(daemon.rss_kib))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


def vm_hwm_kib(daemon: ServerProcess) -> int:
    for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("daemon", ["tcp"], indirect=True)
async def test_thirty_parallel_sessions_of_one_member_stay_within_memory(
    net: Net, daemon: ServerProcess
) -> None:
    # Warm up: a first honest sync (imports, the store's index) before the baseline.
    warm = await asyncio.to_thread(run_sync, net.members[0], daemon.tcp_target)
    assert warm.complete, warm.stderr[-2000:]
    baseline = await asyncio.to_thread(daemon.rss_kib)
    keys = await asyncio.to_thread(member_keys, net.flooder)
    manifest = keys["manifest"]
    assert isinstance(manifest, Manifest)
    batches = flood_batches(manifest.current_hq_key_id)
    tally = FloodTally()
    samples: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(daemon, samples, stop))
    rng = random.Random(7)
    try:
        floods = [
            asyncio.create_task(flood_session(keys, daemon.port, batches, tally))
            for _ in range(FLOOD_SESSIONS)
        ]
        during = [
            asyncio.to_thread(run_sync, net.members[n], daemon.tcp_target)
            for n in rng.sample(range(1, MEMBERS), 2)
        ]
        honest_during = await asyncio.gather(*during)
        async with asyncio.timeout(300):
            await asyncio.gather(*floods)
        honest_after = await asyncio.gather(
            *(asyncio.to_thread(run_sync, net.members[n], daemon.tcp_target) for n in (3, 4))
        )
    finally:
        stop.set()
        await sampler
    peak = max(samples)
    hwm = await asyncio.to_thread(vm_hwm_kib, daemon)
    print(
        f"\n{FLOOD_SESSIONS} parallel sessions of one member: {tally.handshakes} authenticated"
        f" ({tally.attempts} attempts), {tally.bytes_written / 2**20:.0f} MiB written;"
        f" daemon RSS {baseline} KiB -> peak {peak} KiB ({peak - baseline:+d} KiB,"
        f" {len(samples)} samples), VmHWM {hwm} KiB, after {samples[-1]} KiB"
    )
    assert tally.handshakes == FLOOD_SESSIONS
    for result in [*honest_during, *honest_after]:
        assert result.complete, result.stderr[-2000:]
    assert peak - baseline < RSS_BUDGET_KIB, (baseline, peak)
    assert hwm - baseline < RSS_BUDGET_KIB, (baseline, hwm)
