"""A node's networking runtime: its store thread, sync context and the server accepting peers.

``Runtime`` opens a node home for syncing (keys read on a thread, the store on its own thread)
and dials one peer; ``Server`` accepts peers on TCP and WebSocket. Both are built and wired by
the composition root (``daemon``, ``hq_hub``, the CLI), never at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fieldsync import heap
from fieldsync.config import HostPort, parse_host_port
from fieldsync.diskerrors import storage_problem
from fieldsync.errors import InputRefused
from fieldsync.lognames import address_name
from fieldsync.node import STORE, Membership, Node, current_revocations
from fieldsync.offer_hold import OfferDelay
from fieldsync.peer import REVOKED, PeerContext, PeerLimits, SyncOutcome, SyncSource, run_peer
from fieldsync.store import RELAY_CACHE_KIB, Store
from fieldsync.store_worker import StoreWorker
from fieldsync.synclog import log_session
from fieldsync.transport import (
    Transport,
    TransportError,
    connect_tcp,
    connect_websocket,
    serve_tcp,
    websocket_route,
)
from fieldsync_protocol.crypto import box_public_key
from fieldsync_protocol.items import Checked
from fieldsync_protocol.revocation import RevocationList, supersedes
from fieldsync_protocol.session import SessionConfig

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

WEBSOCKET_PATH = "/sync"
#: A session that moved at least this many items (in and out) is a bulk one: after it the
#: freed heap is given back to the system (``heap``), or a relay keeps its peak for good.
BULK_SESSION_ITEMS = 1000


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
    #: The node holds an author key (read once at start: no file checks on the loop).
    is_author: bool = False
    #: HQ's revocation list this node follows (SPEC.md §17), None before the first one.
    revocations: RevocationList | None = None
    #: The loop the runtime was opened on: sessions are cut from the store thread through it.
    loop: asyncio.AbstractEventLoop | None = None
    #: Set (on the loop) when the network keys changed: discovery restarts with them.
    keys_changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Certificate expiry of this node (HQ time), from its membership.
    own_expiry: int = 0
    #: Id of the network key in use (0: the enrolment's).
    network_key_id: int = 0
    #: Called on the loop when the network key switches (SPEC.md §17.5), before the new key
    #: is used: the daemon forgets the peers discovery found under the previous key and ends
    #: the syncs with them, so nothing dials them under the new one.
    on_key_switch: Callable[[], None] | None = None
    #: Items a session must move to count as bulk (``BULK_SESSION_ITEMS``).
    bulk_session_items: int = BULK_SESSION_ITEMS
    #: Releases of freed memory to the system begun after bulk sessions (tests read it).
    heap_releases: int = 0

    @classmethod
    async def open(
        cls,
        home: Path,
        limits: PeerLimits | None = None,
        session_config: SessionConfig | None = None,
        offer_delay: OfferDelay | None = None,
    ) -> Runtime:
        """``offer_delay``: how long report items wait before they are offered (SPEC.md
        §14.10); None offers them at once (a one-off ``fieldsync sync`` sends what it has)."""
        node = Node(home)
        # Key files are read on a thread: nothing blocks the event loop, not even at start.
        member, static_secret, is_author = await asyncio.to_thread(
            lambda: (node.membership(), node.node_secret(), node.is_author())
        )
        # A relay's page cache is capped (Store); an author's serves its web app's pages.
        # An author's reports must never wait behind a long sync slice (perf S11).
        worker = StoreWorker(
            home / STORE,
            cache_kib=None if is_author else RELAY_CACHE_KIB,
            local_writes=is_author,
        )
        await worker.open()
        source = await worker.call(lambda store: SyncSource(store, offer_delay))
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
        runtime = cls(node, worker, context, is_author=is_author, loop=asyncio.get_running_loop())
        runtime._follow(member)
        context.on_manifest = runtime.adopt_manifest
        context.on_revocation = runtime.adopt_revocation
        context.on_deliveries = runtime.adopt_deliveries
        await runtime.refresh_revocations()
        await runtime.refresh_keys()
        return runtime

    def _follow(self, member: Membership) -> None:
        """Use the keys and certificate of ``member`` for every later handshake. A switch of
        the current key happens on the loop, in one step with ``on_key_switch``: no dial can
        fall between the two."""
        context = self.context
        switched = member.network_key != context.network_key
        if switched and self.loop is not None and not self._on_loop():
            self.loop.call_soon_threadsafe(self._follow, member)
            return
        if switched and self.on_key_switch is not None:
            self.on_key_switch()
        changed = (member.network_key, member.network_keys) != (
            context.network_key,
            (context.network_key, *context.also_accept),
        )
        context.network_key = member.network_key
        context.also_accept = member.network_keys[1:]
        context.certificate = member.certificate
        self.own_expiry = member.certificate_info.expires
        self.network_key_id = member.network_key_id
        if changed and self.loop is not None:
            self.loop.call_soon_threadsafe(self.keys_changed.set)

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:  # a thread without a loop: the store thread
            return False

    def membership_status(self) -> dict[str, object]:
        """What ``status`` shows of revocation, expiry and network keys (SPEC.md §17)."""
        context = self.context
        return {
            "revocation_list": None if self.revocations is None else self.revocations.serial,
            "revoked_nodes": len(context.revoked_nodes),
            "hq_time": context.hq_time,
            "certificate_expires": self.own_expiry,
            "network_key_id": self.network_key_id,
            "network_key_rotating": bool(context.also_accept),
        }

    def adopt_deliveries(self, store: Store, items: list[Checked]) -> None:
        """Key deliveries arrived (by sync): take the ones sealed to this node (SPEC.md
        §17.5), on the store thread."""
        adopted = False
        for delivery in self.node.open_deliveries(items):
            adopted |= self.node.adopt_delivery(delivery, store.local_clock())
        if adopted:
            member = self.node.membership()
            self._follow(member)
            log.info(
                "HQ renewed this node's certificate (valid until HQ time %d)%s",
                member.certificate_info.expires,
                ""
                if member.next_key is None
                else f"; next network key {member.next_key.key_id}"
                f" from running time {member.next_key.switch_at}",
            )

    async def refresh_keys(self) -> None:
        """Switch to the next network key once its grace period is over (SPEC.md §17.5),
        and follow a membership another process changed (a bundle import)."""

        def switch(store: Store) -> tuple[bool, Membership]:
            switched = self.node.switch_network_key(store.local_clock())
            return switched, self.node.membership()

        switched, member = await self.worker.call(switch)
        self._follow(member)  # on the loop: a switch forgets discovered peers first
        if switched:
            log.info(
                "switched to network key %d: the previous one opens nothing now",
                member.network_key_id,
            )

    async def refresh_offers(self) -> bool:
        """Assess new items and end due offer holds (SPEC.md §14.10); True when items
        became offerable that peers should hear about."""
        source = self.context.source
        return await self.worker.call(lambda _store: source.refresh())

    async def refresh_revocations(self) -> None:
        """Follow the newest revocation list in the store (one may have come from a bundle
        imported by another process while the daemon runs)."""

        def newest(store: Store) -> None:
            found = current_revocations(store, self.context.manifest)
            if found is not None:
                self.adopt_revocation(found)

        await self.worker.call(newest)

    def adopt_revocation(self, revocations: RevocationList) -> None:
        """Follow a newer revocation list: refuse its node keys in every later handshake and
        end the sessions running with them now. Runs on the store thread."""
        if not supersedes(revocations, self.revocations):
            return
        self.revocations = revocations
        revoked = frozenset(revocations.nodes)
        self.context.revoked_nodes = revoked
        self.context.hq_time = revocations.time
        if self.own_expiry < revocations.time:
            log.error(
                "this node's certificate expired (valid until HQ time %d, HQ's time is %d):"
                " members refuse it until HQ renews it (`fieldsync hq renew`)",
                self.own_expiry,
                revocations.time,
            )
        log.info(
            "following HQ revocation list %d (%d node keys revoked)",
            revocations.serial,
            len(revoked),
        )
        if box_public_key(self.context.static_secret) in revoked:
            log.error("HQ has revoked this node: members refuse it; ask HQ to enrol it again")
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.context.live.drop, revoked, REVOKED)

    def adopt_manifest(self, checked: Checked) -> None:
        """A newer root-signed manifest arrived by sync: use it from now on."""
        if self.node.adopt_manifest(checked) and checked.manifest is not None:
            self.context.manifest = checked.manifest
            log.info("adopted network manifest epoch %d", checked.manifest.epoch)

    async def close(self) -> None:
        await self.worker.close()

    async def release_after(self, outcome: SyncOutcome) -> None:
        """After a bulk session, return the freed heap to the system (off the loop: the
        trim walks every arena)."""
        moved = outcome.stats.items_received + outcome.stats.items_sent
        if moved < self.bulk_session_items or not heap.available():
            return
        self.heap_releases += 1  # counted as it starts: a test sees it the moment it is due
        await asyncio.to_thread(heap.release_free_memory)

    async def _connect(self, target: str) -> Transport:
        try:
            if target.startswith(("ws://", "wss://", "http://", "https://")):
                return await connect_websocket(target)
            address = peer_address(target)
            return await connect_tcp(address.host, address.port)
        except TransportError as exc:
            # The error text names the address: only at DEBUG level (fieldsync.lognames).
            log.info("cannot reach %s", address_name(target))
            log.debug("cannot reach %s: %s", target, exc)
            raise

    async def sync_with(self, target: str) -> SyncOutcome:
        """One session as initiator with ``HOST:PORT`` (TCP) or a ``ws://``/``wss://`` URL."""
        started = time.monotonic()
        # During a network-key rotation a peer may hold only the previous key or already
        # only the next one: dial with the current key, then with the next (SPEC.md §17.5).
        first, *others = (self.context.network_key, *self.context.also_accept)
        outcome = await run_peer(
            await self._connect(target), self.context, initiator=True, network_key=first
        )
        for key in others:
            if outcome.peer is not None or outcome.wire_bytes_received:
                # A peer that answered holds the key we dialled with: its failure is no key
                # mismatch, and it is never dialled again under another key (SPEC.md §17.5).
                break
            outcome = await run_peer(
                await self._connect(target), self.context, initiator=True, network_key=key
            )
        self.outcomes.append(outcome)
        await self.release_after(outcome)
        log_session(
            self.context.static_secret,
            address_name(target),
            outcome,
            time.monotonic() - started,
            initiator=True,
        )
        return outcome


class Server:
    """Accepts sync connections on TCP and/or WebSocket for one runtime.

    Every listener shares the runtime's admission policy (``PeerContext.admission``, SPEC
    §14.8): pre-authentication slots with oldest-first dropping and a per-address cap, one
    session per peer certificate, a session cap and a node-wide buffer budget.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._tcp: list[asyncio.Server] = []
        self._web: web.AppRunner | None = None
        #: Sessions running now; ``close()`` cancels and awaits them.
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.addresses: list[tuple[str, int]] = []

    async def _handle(self, transport: Transport) -> None:
        """One connection: its session runs as a task of ours, so ``close()`` can end it."""
        session = asyncio.create_task(self._session(transport))
        self._tasks.add(session)
        session.add_done_callback(self._tasks.discard)
        try:
            await session
        except asyncio.CancelledError:
            # Ended by close(): finish normally so the connection closes without a
            # traceback (asyncio's stream callback reports a cancelled handler as an error).
            if not self._closing:
                raise
        except Exception as exc:
            problem = storage_problem(exc, self.runtime.worker.path)
            if problem is None:
                log.exception("%s: session failed", transport.label)
            else:
                log.error("%s: session ended: %s", transport.label, problem)  # noqa: TRY400 - no traceback for a full disk

    async def _session(self, transport: Transport) -> None:
        started = time.monotonic()
        outcome = await run_peer(transport, self.runtime.context, initiator=False)
        self.runtime.outcomes.append(outcome)
        if self.runtime.on_outcome is not None:
            self.runtime.on_outcome(outcome)
        await self.runtime.release_after(outcome)
        if outcome.peer is not None:  # outsiders are logged by the handshake already
            log_session(
                self.runtime.context.static_secret,
                transport.label,
                outcome,
                time.monotonic() - started,
                initiator=False,
            )

    async def listen_tcp(self, host: str, port: int) -> tuple[str, int]:
        server = await serve_tcp(host, port, self._handle)
        self._tcp.append(server)
        address = server.sockets[0].getsockname()[:2]
        self.addresses.append((str(address[0]), int(address[1])))
        return self.addresses[-1]

    async def listen_websocket(self, host: str, port: int) -> tuple[str, int]:
        from aiohttp import web  # only the hub and WebSocket listeners load aiohttp

        app = web.Application()
        app.router.add_get(WEBSOCKET_PATH, websocket_route(self._handle))
        # No access log: it would write every field node's address and User-Agent to the
        # hub's disk, which the hub must not keep (deploy/README), and one line per
        # connection is unbounded log volume under a flood.
        self._web = web.AppRunner(app, handle_signals=False, access_log=None)
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
        """Stop accepting, end every session (even one in a delayed close), then return."""
        self._closing = True
        for server in self._tcp:
            server.close()
        # Connections in their handshake or lingering in a delayed close end now (their
        # handlers close them); sessions are cancelled and awaited, not torn down with the loop.
        self.runtime.context.admission.close()
        sessions = list(self._tasks)
        for session in sessions:
            session.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)
        for server in self._tcp:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await server.wait_closed()
        if self._web is not None:
            await self._web.cleanup()
        self.runtime.context.quiet_log.close()  # the counts of what was not logged


def peer_address(target: str) -> HostPort:
    """A peer to dial as ``HOST:PORT``, by the same strict rule as the config's."""
    try:
        return parse_host_port(target)
    except ValueError as exc:
        raise InputRefused(f"peer {target!r}: {exc}") from None
