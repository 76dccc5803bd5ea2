"""One conformance suite for every transport: in-memory pair, TCP and WebSocket on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from fieldsync.transport import (
    Transport,
    TransportError,
    connect_tcp,
    connect_websocket,
    memory_pair,
    serve_tcp,
    websocket_route,
)

KINDS = ["memory", "tcp", "websocket"]


class Pair:
    def __init__(self, client: Transport, server: Transport) -> None:
        self.client = client
        self.server = server


@pytest.fixture(params=KINDS)
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    kind = request.param
    if kind == "memory":
        a, b = memory_pair()
        yield Pair(a, b)
        await a.close()
        await b.close()
        return
    accepted: asyncio.Queue[Transport] = asyncio.Queue()
    done = asyncio.Event()

    async def handler(transport: Transport) -> None:
        await accepted.put(transport)
        await done.wait()

    if kind == "tcp":
        server = await serve_tcp("127.0.0.1", 0, handler)
        port = server.sockets[0].getsockname()[1]
        client: Transport = await connect_tcp("127.0.0.1", port)
        yield Pair(client, await accepted.get())
        done.set()
        await client.close()
        server.close()
        await server.wait_closed()
        return
    app = web.Application()
    app.router.add_get("/sync", websocket_route(handler))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = await connect_websocket(f"http://127.0.0.1:{port}/sync")
    yield Pair(client, await accepted.get())
    done.set()
    await client.close()
    await runner.cleanup()


async def read_exactly(transport: Transport, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = await transport.receive()
        assert chunk, f"end of stream after {len(out)} of {size} bytes"
        out += chunk
    return bytes(out)


async def test_bytes_arrive_in_order_both_ways(pair: Pair) -> None:
    await pair.client.send(b"hello ")
    await pair.client.send(b"server")
    assert await read_exactly(pair.server, 12) == b"hello server"
    await pair.server.send(b"hi client")
    assert await read_exactly(pair.client, 9) == b"hi client"


async def test_large_transfer_is_intact(pair: Pair) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)

    async def sender() -> None:
        for start in range(0, len(payload), 50_000):
            await pair.client.send(payload[start : start + 50_000])

    task = asyncio.create_task(sender())
    received = await read_exactly(pair.server, len(payload))
    await task
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


async def test_close_is_seen_as_end_of_stream(pair: Pair) -> None:
    await pair.client.send(b"last words")
    closing = asyncio.create_task(pair.client.close())  # a WebSocket close waits for the peer
    assert await read_exactly(pair.server, 10) == b"last words"
    assert await asyncio.wait_for(pair.server.receive(), 5) == b""
    await closing


async def test_send_after_close_raises_transport_error(pair: Pair) -> None:
    closing = asyncio.create_task(pair.client.close())
    assert await asyncio.wait_for(pair.server.receive(), 5) == b""
    await closing
    with pytest.raises(TransportError):
        for _ in range(100):  # TCP may accept a few writes into the kernel buffer first
            await pair.client.send(b"x" * 65536)
            await asyncio.sleep(0)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connect_failures_raise_transport_error() -> None:
    port = _unused_port()
    with pytest.raises(TransportError, match="cannot connect"):
        await connect_tcp("127.0.0.1", port)
    with pytest.raises(TransportError, match="cannot open websocket"):
        await connect_websocket(f"http://127.0.0.1:{port}/sync")


async def test_listen_failure_raises_transport_error() -> None:
    async def handler(transport: Transport) -> None:  # pragma: no cover - never connected
        return

    server = await serve_tcp("127.0.0.1", 0, handler)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TransportError, match="cannot listen"):
            await serve_tcp("127.0.0.1", port, handler)
    finally:
        server.close()
        await server.wait_closed()
