"""Byte-stream transports under the encrypted session: raw TCP, aiohttp WebSocket, memory.

A transport moves opaque bytes in order and reports the end of the stream; it knows
nothing of frames, peers or the store. All three pass one conformance suite
(tests/fieldsync/test_transport_conformance.py). Foreign exceptions (``OSError``,
``aiohttp.ClientError``, ``ConnectionResetError``…) are translated here, at the adapter
boundary, into ``TransportError`` so the peer driver handles exactly one type.

aiohttp is imported only when a WebSocket is opened or served: a relay on TCP never loads
it for its transport (issue 13 item 7: aiohttp and its client are ~14 MB resident).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web

from fieldsync.aiohttp_import import client_context
from fieldsync.lognames import address_name

#: Largest single read handed to the protocol machines.
READ_SIZE = 64 * 1024
#: WebSocket messages above this are refused (frames are far smaller).
MAX_WS_MESSAGE = 1024 * 1024
#: How long a closing side waits for the peer's close frame (a dead peer must not stall us).
CLOSE_TIMEOUT = 2.0


class TransportError(Exception):
    """The connection failed or could not be made; the message says where."""


class Transport(Protocol):
    label: str
    #: The peer's network address without a port (per-address admission limits).
    address: str

    async def send(self, data: bytes) -> None:
        """Queue ``data`` and wait until the transport has taken it (back-pressure)."""

    async def receive(self) -> bytes:
        """Next bytes from the peer; ``b""`` once the peer has closed its side."""

    async def close(self) -> None:
        """Close both directions; idempotent."""


# --- TCP -----------------------------------------------------------------------------------


class TcpTransport:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        peer = writer.get_extra_info("peername")
        # Logs name the peer by a pseudonym, never by address (fieldsync.lognames).
        self.label = (
            f"tcp:{address_name(f'{peer[0]}:{peer[1]}')}" if isinstance(peer, tuple) else "tcp"
        )
        self.address = str(peer[0]) if isinstance(peer, tuple) else "tcp"

    async def send(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            raise TransportError(f"{self.label}: send failed: {exc}") from exc

    async def receive(self) -> bytes:
        try:
            return await self._reader.read(READ_SIZE)
        except OSError as exc:
            raise TransportError(f"{self.label}: receive failed: {exc}") from exc

    async def close(self) -> None:
        if self._writer.is_closing():
            return
        self._writer.close()
        with contextlib.suppress(OSError, RuntimeError):
            await self._writer.wait_closed()


async def connect_tcp(host: str, port: int, connect_timeout: float = 10.0) -> TcpTransport:
    try:
        # asyncio.timeout, not wait_for: a stop must not be lost as the connection opens.
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        raise TransportError(f"cannot connect to {host}:{port}: {str(exc) or 'timed out'}") from exc
    return TcpTransport(reader, writer)


Handler = Callable[["Transport"], Awaitable[None]]


async def serve_tcp(host: str, port: int, handler: Handler) -> asyncio.Server:
    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = TcpTransport(reader, writer)
        try:
            await handler(transport)
        finally:
            await transport.close()

    try:
        return await asyncio.start_server(on_connection, host, port)
    except OSError as exc:
        raise TransportError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


# --- WebSocket (aiohttp) ----------------------------------------------------------------------


class WebSocketTransport:
    """Binary WebSocket messages carry the same bytes a TCP stream would."""

    def __init__(
        self,
        ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        label: str,
        session: aiohttp.ClientSession | None = None,
        address: str = "ws",
    ) -> None:
        self._ws = ws
        self._session = session
        self.label = label
        self.address = address

    async def send(self, data: bytes) -> None:
        import aiohttp  # loaded already: this transport wraps an aiohttp WebSocket

        try:
            await self._ws.send_bytes(data)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise TransportError(f"{self.label}: send failed: {exc}") from exc

    async def receive(self) -> bytes:
        import aiohttp

        try:
            message = await self._ws.receive()
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise TransportError(f"{self.label}: receive failed: {exc}") from exc
        if message.type is aiohttp.WSMsgType.BINARY:
            data: bytes = message.data
            return data if data else await self.receive()
        if message.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
        ):
            return b""
        if message.type is aiohttp.WSMsgType.ERROR:
            raise TransportError(f"{self.label}: websocket error: {self._ws.exception()}")
        raise TransportError(f"{self.label}: unexpected websocket message type {message.type.name}")

    async def close(self) -> None:
        import aiohttp

        with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


async def connect_websocket(url: str, connect_timeout: float = 10.0) -> WebSocketTransport:
    import aiohttp

    # Our own context with the system's CA certificates, not aiohttp's default: the daemon
    # imports aiohttp without them (fieldsync.aiohttp_import). Read once, off the loop.
    secure = url.lower().startswith(("wss:", "https:"))
    tls = await asyncio.to_thread(client_context) if secure else True
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout)
    )
    try:
        ws = await session.ws_connect(
            url,
            max_msg_size=MAX_WS_MESSAGE,
            heartbeat=30,
            timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
            ssl=tls,
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        await session.close()
        raise TransportError(f"cannot open websocket {url}: {str(exc) or 'timed out'}") from exc
    except BaseException:
        await session.close()  # cancelled (e.g. SIGTERM) while connecting: leak nothing
        raise
    return WebSocketTransport(ws, f"ws:{address_name(url)}", session)


def websocket_route(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp request handler that runs ``handler`` on the upgraded connection."""

    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE, heartbeat=30, timeout=CLOSE_TIMEOUT)
        await ws.prepare(request)
        # Behind a reverse proxy this is the proxy's address: the per-address admission limit
        # then covers the proxy as a whole (limit clients at the proxy too; SPEC §14.8).
        remote = request.remote or "ws"
        transport = WebSocketTransport(ws, f"ws:{address_name(remote)}", address=remote)
        try:
            await handler(transport)
        finally:
            await transport.close()
        return ws

    return handle


# --- in memory -------------------------------------------------------------------------------


class MemoryTransport:
    """One end of an in-process pipe; ``memory_pair()`` makes two connected ends."""

    def __init__(
        self, inbox: asyncio.Queue[bytes], outbox: asyncio.Queue[bytes], label: str
    ) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._closed = False
        self._eof = False
        self.label = label
        self.address = label
        self.bytes_sent = 0

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise TransportError(f"{self.label}: send on a closed transport")
        if data:
            self.bytes_sent += len(data)
            await self._outbox.put(bytes(data))

    async def receive(self) -> bytes:
        if self._eof:
            return b""
        data = await self._inbox.get()
        if not data:
            self._eof = True
        return data

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._outbox.put_nowait(b"")  # the peer reads end of stream
            self._eof = True
            self._inbox.put_nowait(b"")  # wake our own pending receive


def memory_pair(maxsize: int = 0) -> tuple[MemoryTransport, MemoryTransport]:
    a_to_b: asyncio.Queue[bytes] = asyncio.Queue(maxsize)
    b_to_a: asyncio.Queue[bytes] = asyncio.Queue(maxsize)
    return MemoryTransport(b_to_a, a_to_b, "memory:a"), MemoryTransport(a_to_b, b_to_a, "memory:b")
