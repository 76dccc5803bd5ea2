"""The composition root: builds a node's runtime from its home and runs servers and syncs.

Nothing else in ``fieldsync`` wires modules together; there are no module-level singletons.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from fieldsync import sdnotify
from fieldsync.config import Config
from fieldsync.control import ControlServer
from fieldsync.discovery import Discovery, PeerAddress
from fieldsync.errors import FieldsyncError, InputRefused
from fieldsync.hq import HQ, IngestSummary
from fieldsync.janitor import Janitor
from fieldsync.node import STORE, Node
from fieldsync.peer import PeerContext, PeerLimits, SyncOutcome, SyncSource, run_peer
from fieldsync.scheduler import Scheduler, SchedulerPolicy, SyncResult
from fieldsync.store import Store, now_seconds
from fieldsync.store_worker import StoreWorker
from fieldsync.transport import (
    Transport,
    TransportError,
    connect_tcp,
    connect_websocket,
    serve_tcp,
    websocket_route,
)
from fieldsync_protocol.items import Checked, check_item
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
    #: The most recent session outcomes (bounded: a daemon runs for months).
    outcomes: deque[SyncOutcome] = field(default_factory=lambda: deque(maxlen=100))
    #: Called after every incoming session (the daemon passes new items on).
    on_outcome: Callable[[SyncOutcome], None] | None = None

    @classmethod
    async def open(
        cls,
        home: Path,
        limits: PeerLimits | None = None,
        session_config: SessionConfig | None = None,
    ) -> Runtime:
        node = Node(home)
        # Key files are read on a thread: nothing blocks the event loop, not even at start.
        member, static_secret = await asyncio.to_thread(
            lambda: (node.membership(), node.node_secret())
        )
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
        runtime = cls(node, worker, context)
        context.on_manifest = runtime.adopt_manifest
        return runtime

    def adopt_manifest(self, checked: Checked) -> None:
        """A newer root-signed manifest arrived by sync: use it from now on."""
        if self.node.adopt_manifest(checked) and checked.manifest is not None:
            self.context.manifest = checked.manifest
            log.info("adopted network manifest epoch %d", checked.manifest.epoch)

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
        if self.runtime.on_outcome is not None:
            self.runtime.on_outcome(outcome)
        if outcome.complete:
            log.info(
                "%s: synced: %d items in, %d out",
                transport.label,
                outcome.stats.items_received,
                outcome.stats.items_sent,
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


class FieldDaemon:
    """``fieldsync run``: server, scheduler, discovery, janitor and control API together."""

    #: How often the daemon looks for items written by other processes (``report add``).
    LOCAL_POLL_SECONDS = 2.0

    def __init__(self, config: Config, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()  # noqa: S311 - jitter for timing, not secrets
        self.runtime: Runtime | None = None
        self.server: Server | None = None
        self.scheduler: Scheduler | None = None
        self.discovery: Discovery | None = None
        self.janitor: Janitor | None = None
        self.control: ControlServer | None = None
        self.last_upstream_contact: float | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        config = self.config
        limits = PeerLimits(
            quota_items_per_day=config.sync.quota_items_per_day,
            quota_bytes_per_day=config.sync.quota_bytes_per_day,
        )
        self.runtime = runtime = await Runtime.open(config.node.home, limits=limits)
        runtime.on_outcome = self._on_incoming
        self.server = server = Server(runtime)
        try:
            for address in config.listen.addresses:
                if config.hub.enabled:
                    bound = await server.listen_websocket(address.host, address.port)
                    log.info("hub: serving WebSocket sync on %s:%d%s", *bound, WEBSOCKET_PATH)
                else:
                    bound = await server.listen_tcp(address.host, address.port)
                    log.info("serving sync on tcp %s:%d", *bound)
        except TransportError as exc:
            await self.stop()
            raise FieldsyncError(str(exc)) from exc
        policy = SchedulerPolicy(
            interval=config.sync.interval_seconds,
            upstream_interval=config.upstream.interval_seconds,
            max_concurrent=config.sync.max_concurrent,
            backoff_initial=config.sync.backoff_initial,
            backoff_max=config.sync.backoff_max,
        )
        self.scheduler = scheduler = Scheduler(self._sync_target, policy, rng=self.rng)
        scheduler.on_new_items = lambda target: scheduler.poke(except_target=target)
        for peer in config.peers.static:
            scheduler.add(str(peer), "static")
        if config.upstream.url is not None:
            scheduler.add(str(config.upstream.url), "upstream")
        for line in config.notices():
            log.warning("%s", line)
        if config.discovery.active and server.addresses and not config.hub.enabled:
            await self._start_discovery(runtime, server.addresses[0][1])
        self.janitor = Janitor(
            runtime.worker,
            runtime.context.source,
            disk_budget_bytes=config.storage.disk_budget_mb * 1024 * 1024,
            checkpoint_every=config.storage.checkpoint_minutes * 60.0,
        )
        await self.janitor.tick()
        control = ControlServer(config.control_socket, self.status, self.peers)
        try:
            await control.start()
        except OSError as exc:
            # The daemon's work matters more than its dashboard: carry on without it.
            log.warning(
                "control API off: cannot listen on %s (%s); set [control] socket to a short"
                " path such as /run/fieldsync/control.sock",
                config.control_socket,
                exc.strerror or exc,
            )
        else:
            self.control = control
        self._tasks = [
            asyncio.create_task(scheduler.run()),
            asyncio.create_task(self.janitor.run()),
            asyncio.create_task(self._watch_local_changes()),
        ]
        interval = sdnotify.watchdog_interval()
        if interval:
            self._tasks.append(asyncio.create_task(self._watchdog(interval)))
        sdnotify.ready(f"serving on {len(server.addresses)} address(es)")

    async def _start_discovery(self, runtime: Runtime, port: int) -> None:
        addresses = await asyncio.to_thread(interface_addresses, self.config.discovery.interfaces)
        if not addresses:
            log.warning(
                "discovery is off: no IPv4 address on %s",
                ", ".join(self.config.discovery.interfaces),
            )
            return
        scheduler = self.scheduler
        if scheduler is None:
            return

        def appeared(peer: PeerAddress) -> None:
            scheduler.add(f"{peer.host}:{peer.port}", "discovered")

        def gone(peer: PeerAddress) -> None:
            scheduler.remove(f"{peer.host}:{peer.port}")

        self.discovery = Discovery(
            network_key=runtime.context.network_key,
            port=port,
            interfaces=addresses,
            on_peer=appeared,
            on_peer_gone=gone,
            service_type=self.config.discovery.service_type,
            rotate_seconds=self.config.discovery.rotate_minutes * 60.0,
        )
        await self.discovery.start()
        log.info("discovery: announcing and browsing on %s", ", ".join(addresses))

    async def _sync_target(self, target: str) -> SyncResult:
        runtime = self.runtime
        if runtime is None:
            return SyncResult(ok=False, error="daemon stopped")
        try:
            outcome = await runtime.sync_with(target)
        except (TransportError, FieldsyncError) as exc:
            return SyncResult(ok=False, error=str(exc))
        if outcome.items_new and self.janitor is not None:
            self.janitor.nudge()
        if outcome.complete and self.scheduler is not None:
            state = self.scheduler.targets.get(target)
            if state is not None and state.origin == "upstream":
                self.last_upstream_contact = time.time()
        return SyncResult(
            ok=outcome.complete,
            items_in=outcome.items_new,
            items_out=outcome.stats.items_sent,
            error=outcome.error,
        )

    def _on_incoming(self, outcome: SyncOutcome) -> None:
        if outcome.items_new and self.janitor is not None:
            self.janitor.nudge()  # over budget? evict now (SPEC.md §14.2)
        if outcome.items_new and self.scheduler is not None:
            self.scheduler.poke()

    async def _watch_local_changes(self) -> None:
        """Items written by another process (``report add``, ``bundle import``): pass them on."""
        runtime = self.runtime
        if runtime is None:
            return
        last = await runtime.worker.call(lambda store: store.data_version())
        while True:
            await asyncio.sleep(self.LOCAL_POLL_SECONDS)
            version = await runtime.worker.call(lambda store: store.data_version())
            if version != last and self.scheduler is not None:
                last = version
                self.scheduler.poke()

    async def _watchdog(self, interval: float) -> None:
        while True:
            sdnotify.watchdog_ping()
            await asyncio.sleep(interval)

    async def status(self) -> dict[str, Any]:
        runtime = self.runtime
        if runtime is None:
            return {"running": False}
        local = await runtime.worker.call(lambda store: store.status())
        return {
            "running": True,
            "home": str(self.config.node.home),
            "role": "author" if runtime.node.is_author() else "relay",
            **local,
            "listening": [f"{h}:{p}" for h, p in (self.server.addresses if self.server else [])],
            "hub": self.config.hub.enabled,
            "discovery": self.discovery is not None,
            "peers": (await self.peers())["peers"],
            "last_upstream_contact": self.last_upstream_contact,
            "clock": self.janitor.last.clock if self.janitor else None,
        }

    async def peers(self) -> dict[str, Any]:
        scheduler = self.scheduler
        targets = [] if scheduler is None else [s.as_dict() for s in scheduler.targets.values()]
        return {"peers": targets}

    async def stop(self) -> None:
        sdnotify.stopping()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.control is not None:
            await self.control.stop()
        if self.discovery is not None:
            await self.discovery.stop()
        if self.server is not None:
            await self.server.close()
        if self.runtime is not None:
            await self.runtime.close()
            self.runtime = None


def interface_addresses(names_or_addresses: Sequence[str]) -> list[str]:
    """IPv4 addresses for the configured interfaces (names resolved with ifaddr; blocking)."""
    import ipaddress

    import ifaddr

    out: list[str] = []
    adapters = {adapter.nice_name: adapter for adapter in ifaddr.get_adapters()}
    for entry in names_or_addresses:
        try:
            ipaddress.IPv4Address(entry)
        except ValueError:
            adapter = adapters.get(entry)
            if adapter is None:
                log.warning("discovery: no interface named %s", entry)
                continue
            out.extend(str(ip.ip) for ip in adapter.ips if isinstance(ip.ip, str))
        else:
            out.append(entry)
    return out


@dataclass
class HubIngest:
    pulled: SyncOutcome
    pushed: SyncOutcome | None
    receipts_new: int


async def ingest_from_hub(
    headquarters: HQ, hub_url: str, passphrase: str, summary: IngestSummary | None = None
) -> tuple[IngestSummary, HubIngest]:
    """Pull new items from the hub, ingest them, and push the new receipts back.

    HQ syncs through its own node home (HQDIR/node), enrolled like any relay; the
    hub never sees an HQ secret. Ingest commits before receipts are issued, and receipts
    are stored in HQ's node store before they are pushed, so a crash at any point loses
    nothing and re-running repeats nothing.
    """
    keys = headquarters.unlock(passphrase)
    home = headquarters.hub_node(passphrase)
    runtime = await Runtime.open(home)
    try:
        pulled = await runtime.sync_with(hub_url)
        if not pulled.complete:
            raise FieldsyncError(f"could not sync with the hub {hub_url}: {pulled.error}")
        envelopes = await runtime.worker.call(lambda store: list(store.iter_items()))
        summary = summary or IngestSummary()
        headquarters.ingest_items(iter(envelopes), keys, summary)
        summary.gaps = headquarters.gaps()
        made = headquarters.issue_receipts(passphrase)
        receipts = headquarters.receipt_items()
        manifest = runtime.context.manifest

        def store_receipts(store: Store) -> None:
            checked = [check_item(item, manifest) for item in receipts]
            counts = store.add_batch(checked, now_seconds())
            runtime.context.source.note_changes(counts.new_ids, counts.purged_ids)

        await runtime.worker.call(store_receipts)
        pushed = await runtime.sync_with(hub_url)
        return summary, HubIngest(pulled, pushed, made)
    finally:
        await runtime.close()
