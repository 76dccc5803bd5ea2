"""A member that floods is cut off at its quota; other peers still sync (issue 3 "Must show").

The flooder is a real member (valid certificate, real handshake, the real peer driver) whose
item source offers 100,000 well-formed envelopes: random ciphertext of a valid size class,
which every relay must accept as well-formed (only HQ can tell them from real reports).
The receiver is a real ``Server`` on 127.0.0.1 with a per-peer quota of 5,000 items a day:
its store grows by at most the quota, the connection ends with an error naming the quota,
the flooder's next connection gets nothing in, and an honest member syncs fully both while
the flood runs and afterwards.

Then a member that completes the handshake and sends 10,000 invalid frames (undecryptable
noise, or well-encrypted frames carrying invalid session messages) is disconnected at the
first one: the receiver reads no further than that frame's chunk and stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from fieldsync import synthetic
from fieldsync.peer import PeerContext, PeerLimits, SyncOutcome, SyncSource, run_peer
from fieldsync.runtime import Runtime, Server
from fieldsync.store import Store
from fieldsync.transport import READ_SIZE, connect_tcp
from fieldsync_protocol import codec
from fieldsync_protocol.crypto import content_id
from fieldsync_protocol.handshake import MSG2_SIZE, PeerHandshake
from fieldsync_protocol.membership import Manifest
from fieldsync_protocol.reconcile_index import ItemIndex, SortedListIndex
from fieldsync_protocol.session import SessionConfig
from tests.integration.sync_support import item_ids

FLOOD = 100_000
QUOTA = 5_000
HONEST = 50
#: What the receiver says about the first invalid frame, by kind of flood.
FIRST_FAILURE = {"noise": "frame", "bad-messages": "not allowed in state await-hello"}
LIMITS = PeerLimits(quota_items_per_day=QUOTA, silent_close=(0.0, 0.01))


@dataclasses.dataclass(frozen=True)
class Net:
    root: Path
    manifest: Manifest
    honest_ids: frozenset[bytes]

    @property
    def receiver(self) -> Path:
        return self.root / "receiver"

    @property
    def flooder(self) -> Path:
        return self.root / "flooder"

    @property
    def honest(self) -> Path:
        return self.root / "honest"


@pytest.fixture(scope="module")
def base_net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    root = tmp_path_factory.mktemp("flood") / "net"
    network = synthetic.create_network(root)
    for name in ("receiver", "flooder", "honest"):
        network.add_node(name)
    reports = synthetic.sealed_reports(network.manifest, HONEST)
    synthetic.fill_store(root / "honest", network.manifest, reports)
    return Net(root, network.manifest, frozenset(content_id(r) for r in reports))


@pytest.fixture
def net(base_net: Net, tmp_path: Path) -> Net:
    shutil.copytree(base_net.root, tmp_path / "net")
    return dataclasses.replace(base_net, root=tmp_path / "net")


@pytest.fixture(scope="module")
def flood_items(base_net: Net) -> list[bytes]:
    """100,000 distinct well-formed envelopes (nobody but HQ can tell they are noise)."""
    key_id = base_net.manifest.current_hq_key_id
    return [
        codec.encode({"c": os.urandom(512), "k": key_id, "l": 3, "t": "e", "v": 1})
        for _ in range(FLOOD)
    ]


class FloodSource(SyncSource):
    """An item source that offers ``items`` from memory and wants nothing back."""

    def __init__(self, store: Store, items: Sequence[bytes]) -> None:
        super().__init__(store)
        self._items = {content_id(item): item for item in items}
        self._flood_index = SortedListIndex.from_sorted(sorted(self._items))

    def refresh(self) -> bool:
        """The flood does not come from the store (and is never held)."""
        return False

    @property
    def index(self) -> ItemIndex:
        return self._flood_index

    def items_after(
        self, seq: int, limit: int, skip_origin: bytes | None = None
    ) -> list[tuple[int, bytes]]:
        return []

    def get(self, ids: Sequence[bytes]) -> list[bytes]:
        return [self._items[i] for i in ids if i in self._items]

    def wants(self, ids: Sequence[bytes]) -> list[bytes]:
        return []

    def send_later(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        return []  # no media here: every item goes as found


@contextlib.asynccontextmanager
async def serving(
    home: Path, limits: PeerLimits | None = None, session_config: SessionConfig | None = None
) -> AsyncIterator[tuple[Runtime, str]]:
    runtime = await Runtime.open(home, limits=limits, session_config=session_config)
    server = Server(runtime)
    try:
        host, port = await server.listen_tcp("127.0.0.1", 0)
        yield runtime, f"{host}:{port}"
    finally:
        await server.close()
        await runtime.close()


@contextlib.asynccontextmanager
async def flooder(home: Path, items: Sequence[bytes]) -> AsyncIterator[Runtime]:
    runtime = await Runtime.open(home, limits=LIMITS)
    try:
        source = await runtime.worker.call(lambda store: FloodSource(store, items))
        runtime.context = dataclasses.replace(runtime.context, source=source)
        yield runtime
    finally:
        await runtime.close()


@contextlib.asynccontextmanager
async def member(home: Path) -> AsyncIterator[Runtime]:
    runtime = await Runtime.open(home, limits=LIMITS)
    try:
        yield runtime
    finally:
        await runtime.close()


async def flood_with(runtime: Runtime, target: str) -> SyncOutcome:
    host, _, port = target.rpartition(":")
    return await run_peer(await connect_tcp(host, int(port)), runtime.context, initiator=True)


async def server_outcome(receiver: Runtime, count: int) -> list[SyncOutcome]:
    """The server's outcomes once ``count`` connections have been filed."""
    deadline = time.monotonic() + 30
    while len(receiver.outcomes) < count:
        assert time.monotonic() < deadline, "the server never filed its outcome"
        await asyncio.sleep(0.01)
    return list(receiver.outcomes)


async def test_flood_is_cut_off_at_the_quota_and_honest_peers_still_sync(
    net: Net, flood_items: list[bytes]
) -> None:
    before = await asyncio.to_thread(item_ids, net.receiver)
    async with (
        serving(net.receiver, limits=LIMITS) as (receiver, target),
        flooder(net.flooder, flood_items) as flood,
        member(net.honest) as honest,
    ):
        started = time.monotonic()
        flooded, honest_during = await asyncio.gather(
            flood_with(flood, target), honest.sync_with(target)
        )
        elapsed = time.monotonic() - started

        assert honest_during.complete, honest_during.error
        assert honest_during.stats.items_sent == HONEST
        assert not flooded.complete
        assert flooded.stats.items_sent <= QUOTA + 16 * 256  # at most a window past it
        outcomes = await server_outcome(receiver, 2)
        cut = [o.error for o in outcomes if o.error is not None]
        assert len(cut) == 1 and "quota" in cut[0], cut

        grown = await asyncio.to_thread(item_ids, net.receiver)
        new = grown - before
        assert net.honest_ids <= new
        flood_new = len(new - net.honest_ids)
        assert QUOTA - 256 < flood_new <= QUOTA
        print(
            f"\nflood of {FLOOD} offered: {flooded.stats.items_sent} sent before the cut,"
            f" {flood_new} stored (quota {QUOTA}); honest peer synced alongside;"
            f" {elapsed:.2f} s; receiver said: {cut[0]}"
        )

        # The quota is per certificate and per day: the flooder's next connection stores
        # nothing at all, and an honest member still syncs afterwards.
        again = await flood_with(flood, target)
        assert not again.complete
        outcomes = await server_outcome(receiver, 3)
        assert outcomes[-1].error is not None and "quota" in outcomes[-1].error
        assert await asyncio.to_thread(item_ids, net.receiver) == grown

        extra = synthetic.sealed_reports(net.manifest, 10)
        await asyncio.to_thread(synthetic.fill_store, net.honest, net.manifest, extra)
        after = await honest.sync_with(target)
        assert after.complete, after.error
        assert after.stats.items_sent == 10
        final = await asyncio.to_thread(item_ids, net.receiver)
        assert final == grown | {content_id(x) for x in extra}  # and not one more flood item


async def test_announced_session_quota_stops_an_honest_sender(
    net: Net, flood_items: list[bytes]
) -> None:
    """The per-session quota in HELLO: a conforming sender stops there by itself."""
    before = await asyncio.to_thread(item_ids, net.receiver)
    config = SessionConfig(quota_items=QUOTA)
    async with (
        serving(net.receiver, session_config=config) as (_receiver, target),
        flooder(net.flooder, flood_items) as flood,
    ):
        outcome = await flood_with(flood, target)
    assert outcome.complete, outcome.error
    assert outcome.stats.truncated
    assert outcome.stats.items_sent == QUOTA
    grown = await asyncio.to_thread(item_ids, net.receiver)
    assert len(grown - before) == QUOTA


async def raw_member_handshake(
    target: str, ctx: PeerContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, PeerHandshake]:
    """A member's connection driven by hand: messages 1 and 2 done, message 3 pending."""
    host, _, port = target.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    handshake = PeerHandshake(
        initiator=True,
        network_key=ctx.network_key,
        static_secret=ctx.static_secret,
        certificate=ctx.certificate,
        manifest=ctx.manifest,
        ephemeral_secret=secrets.token_bytes(32),
    )
    writer.write(handshake.data_to_send())
    handshake.receive_data(await asyncio.wait_for(reader.readexactly(MSG2_SIZE), 10))
    return reader, writer, handshake


@pytest.mark.parametrize("kind", ["noise", "bad-messages"])
async def test_invalid_frames_after_handshake_disconnect_at_once(net: Net, kind: str) -> None:
    before = await asyncio.to_thread(item_ids, net.receiver)
    async with (
        serving(net.receiver, limits=LIMITS) as (receiver, target),
        member(net.flooder) as peer,
    ):
        reader, writer, handshake = await raw_member_handshake(target, peer.context)
        writer.write(handshake.data_to_send())
        assert handshake.is_complete
        handshake_done = time.monotonic()
        sender, _receiver = handshake.transport()

        frames = 10_000
        sent = 0
        with contextlib.suppress(ConnectionError):
            for n in range(frames):
                if kind == "noise":
                    frame = os.urandom(98)  # the size of the smallest real frame
                else:
                    frame = sender.send(codec.encode({"t": "data", "n": n, "i": [b"x"]}))
                writer.write(frame)
                sent += 1
                if n % 100 == 99:
                    await writer.drain()
            await writer.drain()
        reply = b""
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(10):
                while chunk := await reader.read(65536):
                    reply += chunk
        closed_after = time.monotonic() - handshake_done
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

        outcome = (await server_outcome(receiver, 1))[-1]
    assert reply == b""  # not a byte after the handshake, and then the end of the stream
    assert outcome.error is not None and "violated" in outcome.error, outcome.error
    assert outcome.peer is not None  # a member: it is the frames that were refused
    # It is the very first frame that was refused: noise fails to open as a frame; the
    # first well-framed message is refused in the session's first state (any later one
    # would have been judged in another state, had the first been accepted).
    first = FIRST_FAILURE[kind]
    assert first in outcome.error, outcome.error
    assert outcome.stats.items_received == 0 and outcome.items_new == 0
    assert await asyncio.to_thread(item_ids, net.receiver) == before
    print(
        f"\n{kind}: {sent} of {frames} frames written; the receiver closed"
        f" {closed_after:.3f} s after the handshake, having read {outcome.wire_bytes_received} B"
        f" (read ahead of its session: up to {READ_SIZE} B per read); it said: {outcome.error}"
    )


async def test_a_member_ignoring_the_window_is_cut_off_before_buffering_unboundedly(
    net: Net,
) -> None:
    """Frames that decrypt fine but arrive faster than the session allows are not queued
    without bound: past ``max_queued_bytes`` the connection is a protocol violation."""
    limits = dataclasses.replace(LIMITS, max_queued_bytes=16 * 1024)  # < one 64 KiB read
    before = await asyncio.to_thread(item_ids, net.receiver)
    async with (
        serving(net.receiver, limits=limits) as (receiver, target),
        member(net.flooder) as peer,
    ):
        reader, writer, handshake = await raw_member_handshake(target, peer.context)
        sender, _receiver = handshake.transport()
        junk = b"".join(sender.send(os.urandom(4000)) for _ in range(100))  # 400 KB at once
        writer.write(handshake.data_to_send() + junk)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            async with asyncio.timeout(10):
                while await reader.read(65536):
                    pass
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        outcome = (await server_outcome(receiver, 1))[-1]
    assert outcome.error is not None and "window" in outcome.error, outcome.error
    assert await asyncio.to_thread(item_ids, net.receiver) == before
