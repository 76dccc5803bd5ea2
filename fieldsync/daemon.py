"""The composition root: builds a node's runtime from its home and runs servers and syncs.

Nothing else in ``fieldsync`` wires modules together; there are no module-level singletons.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from fieldsync.errors import InputRefused
from fieldsync.node import STORE, Node
from fieldsync.peer import PeerContext, PeerLimits, SyncOutcome, SyncSource, run_peer
from fieldsync.store_worker import StoreWorker
from fieldsync.transport import (
    Transport,
    TransportError,
    connect_tcp,
    connect_websocket,
    serve_tcp,
    websocket_route,
)
from fieldsync_protocol.session import SessionConfig

log = logging.getLogger(__name__)

WEBSOCKET_PATH = "/sync"


def parse_host_port(text: str, what: str = "address") -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InputRefused(f"{what} {text!r} must look like HOST:PORT, e.g. 127.0.0.1:7341")
    return host.strip("[]"), int(port_text)


@dataclass
class Runtime:
    """A node's live state for networking: one store thread, one index, one context."""

    node: Node
    worker: StoreWorker
    context: PeerContext
    outcomes: list[SyncOutcome] = field(default_factory=list)

    @classmethod
    async def open(
        cls, home: Path, limits: PeerLimits | None = None, session_config: SessionConfig | None = None
    ) -> Runtime:
        node = Node(home)
        member = node.membership()
        static_secret = node.node_secret()
        worker = StoreWorker(home / STORE)
        await worker.open()
        source = await worker.call(SyncSource)
        context = PeerContext(
            network_key=member.network_key,
            static_secret=static_secret,
            certificate=member.certificate,
            manifest=member.manifest,
            worker=worker,
            source=source,
            limits=limits or PeerLimits(),
            session_config=session_config or SessionConfig(),
        )
        return cls(node, worker, context)

    async def close(self) -> None:
        await self.worker.close()

    async def sync_with(self, target: str) -> SyncOutcome:
        """One session as initiator with ``HOST:PORT`` (TCP) or a ``ws://``/``wss://`` URL."""
        transport: Transport
        if target.startswith(("ws://", "wss://", "http://", "https://")):
            transport = await connect_websocket(target)
        else:
            host, port = parse_host_port(target, "peer")
            transport = await connect_tcp(host, port)
        outcome = await run_peer(transport, self.context, initiator=True)
        self.outcomes.append(outcome)
        return outcome


class Server:
    """Accepts sync connections on TCP and/or WebSocket for one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._tcp: list[asyncio.Server] = []
        self._web: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.addresses: list[tuple[str, int]] = []

    async def _handle(self, transport: Transport) -> None:
        outcome = await run_peer(transport, self.runtime.context, initiator=False)
        self.runtime.outcomes.append(outcome)
        if outcome.complete:
            log.info(
                "%s: synced: %d items in, %d out", transport.label,
                outcome.stats.items_received, outcome.stats.items_sent,
            )

    async def listen_tcp(self, host: str, port: int) -> tuple[str, int]:
        server = await serve_tcp(host, port, self._handle)
        self._tcp.append(server)
        address = server.sockets[0].getsockname()[:2]
        self.addresses.append((str(address[0]), int(address[1])))
        return self.addresses[-1]

    async def listen_websocket(self, host: str, port: int) -> tuple[str, int]:
        app = web.Application()
        app.router.add_get(WEBSOCKET_PATH, websocket_route(self._handle))
        self._web = web.AppRunner(app, handle_signals=False)
        await self._web.setup()
        site = web.TCPSite(self._web, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise TransportError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        server = site._server  # aiohttp exposes no public accessor for the bound port
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[:2] if sockets else (host, port)
        self.addresses.append((str(bound[0]), int(bound[1])))
        return self.addresses[-1]

    async def close(self) -> None:
        for server in self._tcp:
            server.close()
        for server in self._tcp:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        if self._web is not None:
            await self._web.cleanup()


async def run_until(stop: asyncio.Event, *jobs: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run background ``jobs`` until ``stop`` is set, then cancel them."""
    tasks = [asyncio.create_task(job()) for job in jobs]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
