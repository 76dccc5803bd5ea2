"""The composition root: ``FieldDaemon`` (``fieldsync run``) wires a node's runtime, servers,
scheduler, discovery, janitor and control API together and supervises them.

Nothing else in ``fieldsync`` wires modules together; there are no module-level singletons.
The runtime and the server are in ``fieldsync.runtime``; HQ's pull from the hub is in
``fieldsync.hq_hub``, which a daemon never imports: it would bring HQ's database layer
(sqlite_utils, and numpy when installed: ~15 MB resident) into every relay (issue 13 item 7).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldsync import heap, offer_hold, sdnotify
from fieldsync.aiohttp_import import import_aiohttp
from fieldsync.cipher_db import DB_ERRORS
from fieldsync.config import Config
from fieldsync.config_addresses import WebSocketURL
from fieldsync.control import ControlServer, LoopView
from fieldsync.diskerrors import storage_problem
from fieldsync.errors import EXIT_DAEMON_FAILED, FieldsyncError
from fieldsync.faults import Faults
from fieldsync.homelock import HomeLock
from fieldsync.janitor import Janitor
from fieldsync.lognames import address_name
from fieldsync.offer_hold import OfferDelay
from fieldsync.peer import CODED_STEP_IDS, PeerLimits, SyncOutcome, SyncSource
from fieldsync.runtime import WEBSOCKET_PATH, Runtime, Server
from fieldsync.scheduler import Scheduler, SchedulerPolicy, SyncResult
from fieldsync.store import Store
from fieldsync.store_worker import ThreadReader
from fieldsync.supervisor import Policy, Supervisor
from fieldsync.transport import TransportError
from fieldsync.wipe import wipe_node
from fieldsync.wipe_trigger import TriggerWatcher, known_hashes

if TYPE_CHECKING:
    from fieldsync.discovery import Discovery, OwnNames, PeerAddress
    from fieldsync.web.server import WebServer

log = logging.getLogger(__name__)


def peer_limits(config: Config) -> PeerLimits:
    """The daemon's per-peer quotas and admission limits from its configuration."""
    return PeerLimits(
        quota_items_per_day=config.sync.quota_items_per_day,
        quota_bytes_per_day=config.sync.quota_bytes_per_day,
        max_pending_handshakes=config.limits.pending_handshakes,
        max_pending_per_address=config.limits.pending_per_address,
        max_sessions=config.limits.sessions,
        max_total_queued_bytes=config.limits.buffer_mb * 1024 * 1024,
    )


def _coded_step(source: SyncSource, limit: int, _store: Store) -> bool:
    """One step of the coded symbols (``SyncSource.build_coded_step``), on the store thread."""
    return source.build_coded_step(limit)


class FieldDaemon:
    """``fieldsync run``: server, scheduler, discovery, janitor and control API together.

    Every background task runs under one ``Supervisor`` (fieldsync/supervisor.py): a task
    that fails is logged and restarted with back-off, shown in ``status`` as degraded, and
    after repeated failures stops the daemon (``wait`` raises ``DaemonFailed``) so that
    systemd restarts it. ``stop()`` always closes the server, the control socket and the
    store, whatever a component did.
    """

    #: How often the daemon looks for items written by other processes (``report add``).
    LOCAL_POLL_SECONDS = 2.0
    #: How often the janitor runs (expiry, disk budget, checkpoint).
    JANITOR_SECONDS = 60.0
    #: How often the store thread and the control socket are checked.
    HEALTH_SECONDS = 5.0
    #: A store thread silent this long is unresponsive: status says so, the watchdog stops.
    STORE_ANSWER_SECONDS = 10.0
    #: How often ready coded symbols are checked again (rebuilt if the index was dropped).
    CODED_RECHECK_SECONDS = 5.0
    #: Pause between two steps of the coded symbols while sessions move items (a step of
    #: ~1 ms per 0.1 s: about 1 % of the store thread during a bulk transfer).
    CODED_SETTLE_PAUSE_SECONDS = 0.1
    #: How long after the last item stored or read to send a contact counts as under way
    #: (flights of one session come tens of ms apart; a slow link's further apart).
    CODED_SETTLE_QUIET_SECONDS = 1.0
    #: How long a control-API answer waits for the event loop's fresh view of its state
    #: (scheduler, components, ...) once its store read is done; after that it shows the
    #: view from the loop's last free moment: status must not wait behind a sync's long
    #: callbacks (perf S11, p99 <= 10 ms).
    LOOP_GRACE_SECONDS = 0.002

    def __init__(
        self,
        config: Config,
        *,
        rng: random.Random | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.config = config
        self.rng = rng or random.Random()  # noqa: S311 - jitter for timing, not secrets
        self.policy = policy or Policy()
        self.faults = Faults(config.debug.inject_faults)
        self.runtime: Runtime | None = None
        self.server: Server | None = None
        self.scheduler: Scheduler | None = None
        self.discovery: Discovery | None = None
        self.janitor: Janitor | None = None
        self.control: ControlServer | None = None
        self.web: WebServer | None = None
        home = config.node.home
        self.supervisor = Supervisor(explain=lambda exc: _storage_message(exc, home))
        self.last_upstream_contact: float | None = None
        self._lock: HomeLock | None = None
        #: Our discovery names outlive one Discovery instance (it restarts on failure).
        #: Made when discovery first starts: a node without discovery never imports zeroconf.
        self._own_names: OwnNames | None = None
        #: Set once the node was wiped (quick exit, wipe trigger, the last wrong passphrase
        #: allowed in the web app): ``wait`` returns, and the daemon stops, since it holds
        #: keys in memory.
        self.wiped = asyncio.Event()
        self.wipe_trigger: TriggerWatcher | None = None
        privacy = config.privacy
        #: Report items wait this long before they are offered (SPEC.md §14.10). While it is
        #: on, new items never trigger a sync by themselves: the watcher passes items on
        #: when they become offerable, so a sync wave does not start at the author. Never on
        #: the hub: it is on no LAN, and HQ should not wait for what reached it.
        minutes = 0.0 if config.hub.enabled else privacy.offer_delay_minutes
        self.offer_delay = OfferDelay(minutes * 60.0, privacy.offer_delay_jitter)

    async def start(self) -> None:
        config = self.config
        if self.faults:
            log.warning("fault injection is on: %s", ", ".join(config.debug.inject_faults))
        limits = peer_limits(config)
        self._lock = await asyncio.to_thread(
            HomeLock.acquire, config.node.home, config.control_socket
        )
        try:
            # Now, before the store thread starts: see ``_import_aiohttp``.
            await asyncio.to_thread(self._import_aiohttp)
            self.runtime = runtime = await Runtime.open(
                config.node.home, limits=limits, offer_delay=self.offer_delay
            )
            await self._start_serving(runtime)
        except BaseException:
            await self.stop()
            raise
        # Starting (imports, the store's index, the web app's catalogues) leaves freed heap
        # behind that glibc would keep for good: give it back before settling down.
        await asyncio.to_thread(heap.release_free_memory)
        sdnotify.ready(f"serving on {len(self.server.addresses) if self.server else 0} address(es)")

    def _import_aiohttp(self) -> None:
        """Import aiohttp now if this node will use it (a WebSocket listener or dial),
        without the CA bundles its import loads (``aiohttp_import``: it sets an environment
        variable, so before any other thread of ours runs). Blocking. The web app does not
        use aiohttp (``fieldsync.web.http``): an author node serving it never imports it."""
        config = self.config
        websocket = (
            config.hub.enabled
            or config.upstream.url is not None
            or any(isinstance(peer, WebSocketURL) for peer in config.peers.static)
        )
        if websocket:
            import_aiohttp()

    async def _start_serving(self, runtime: Runtime) -> None:
        config = self.config
        runtime.on_outcome = self._on_incoming
        self.server = server = Server(runtime)
        listen = config.listen.for_role(is_author=runtime.is_author, hub=config.hub.enabled)
        try:
            for address in listen:
                if config.hub.enabled:
                    bound = await server.listen_websocket(address.host, address.port)
                    log.info("hub: serving WebSocket sync on %s:%d%s", *bound, WEBSOCKET_PATH)
                else:
                    bound = await server.listen_tcp(address.host, address.port)
                    log.info("serving sync on tcp %s:%d", *bound)
        except TransportError as exc:
            raise FieldsyncError(str(exc)) from exc
        self.scheduler = scheduler = Scheduler(self._sync_target, self._policy(), rng=self.rng)
        runtime.on_key_switch = functools.partial(self._forget_discovered, scheduler)
        if not self.offer_delay.active:
            scheduler.on_new_items = lambda target: scheduler.poke(except_target=target)
        for peer in config.peers.static:
            scheduler.add(str(peer), "static")
        if config.upstream.url is not None:
            scheduler.add(str(config.upstream.url), "upstream")
        for line in config.notices(is_author=runtime.is_author):
            log.warning("%s", line)
        if self.offer_delay.active:
            log.info(
                "timing privacy: report items are offered a random delay after they arrive"
                " (%g minutes on average, %s; [privacy] offer_delay_minutes)",
                self.offer_delay.mean_seconds / 60,
                self.offer_delay.jitter,
            )
        await self._start_web(runtime)
        self.janitor = Janitor(
            runtime.worker,
            runtime.context.source,
            disk_budget_bytes=config.storage.disk_budget_mb * 1024 * 1024,
            interval=self.JANITOR_SECONDS,
            checkpoint_every=config.storage.checkpoint_minutes * 60.0,
            forget_peers_after=config.sync.forget_peers_days * 86400,
            rotate_key_every=config.storage.key_rotation_hours * 3600.0,
        )
        runtime.context.source.unrecorded_seconds = self.janitor.unrecorded_seconds
        try:
            self.control = await self._open_control()
        except OSError as exc:
            # The daemon's work matters more than its dashboard: carry on, and keep trying.
            log.warning(
                "control API off for now: cannot listen on %s (%s); set [control] socket to a"
                " short path such as /run/fieldsync/control.sock",
                config.control_socket,
                exc.strerror or exc,
            )
        supervise = self.supervisor.start
        janitor = self.janitor
        supervise("store", lambda: self._probe_store(runtime), self.policy)
        supervise("scheduler", lambda: self._run_scheduler(scheduler), self.policy)
        supervise("janitor", lambda: self._run_janitor(janitor), self.policy)
        supervise("coded symbols", lambda: self._keep_coded_symbols(runtime), self.policy)
        supervise("watcher", lambda: self._watch_local_changes(runtime, scheduler), self.policy)
        supervise("control", self._run_control, self._keep_trying())
        if config.discovery.active and not config.hub.enabled:
            # Without a listener (an author's default) discovery browses and announces nothing:
            # the node dials the members it hears, and a watcher hears nothing from it.
            port = server.addresses[0][1] if server.addresses else None
            supervise(
                "discovery",
                lambda: self._run_discovery(runtime, scheduler, port),
                self._keep_trying(),
            )
        if config.privacy.wipe_trigger:
            watcher = TriggerWatcher(config.node.home, config.privacy.wipe_trigger, self.panic_wipe)
            self.wipe_trigger = watcher
            log.info("wipe trigger: watching %s ([privacy] wipe_trigger)", watcher.pattern)
            if not await asyncio.to_thread(known_hashes, config.node.home):
                log.warning(
                    "wipe trigger: no trigger was made for this node yet, so no stick can wipe"
                    " it; run fieldsync wipe-trigger create PATH"
                )
            supervise("wipe trigger", watcher.run, self._keep_trying())
        interval = sdnotify.watchdog_interval()
        if interval:
            supervise("watchdog", lambda: self._watchdog(interval), self.policy)

    async def _start_web(self, runtime: Runtime) -> None:
        """The monitor's web app: author nodes only, never on the hub, its own listener."""
        listen = self.config.web.listen
        if listen is None or self.config.hub.enabled or not runtime.is_author:
            return
        # Imported here: Jinja2, Babel and the templates cost a relay or the hub nothing. And
        # imported off the loop: Babel reads the system time zone from disk while it loads.
        server_module = await asyncio.to_thread(importlib.import_module, "fieldsync.web.server")
        web_server: type[WebServer] = server_module.WebServer
        web = web_server(
            listen,
            self.config.node.home,
            runtime.worker,
            self.status,
            self.config.web.max_upload_mb * 1024 * 1024,
            tls_mode=self.config.web.tls,
            on_quick_exit=self.panic_wipe if self.config.privacy.quick_exit_wipes else None,
            # Passphrases typed in the app count as on the command line; the last wrong one
            # allowed wipes the node in the unlock itself, and the daemon then stops.
            wipe_after_wrong_passphrases=self.config.security.wipe_after_wrong_passphrases,
            on_wiped=self.wiped_by_wrong_passphrases,
        )
        try:
            await web.start()
        except FieldsyncError as exc:
            # Syncing matters more than the app: carry on without it, and say why.
            log.error("%s", exc)  # noqa: TRY400 - said clearly, no traceback
            return
        self.web = web

    def _policy(self) -> SchedulerPolicy:
        sync = self.config.sync
        return SchedulerPolicy(
            interval=sync.interval_seconds,
            upstream_interval=self.config.upstream.interval_seconds,
            max_concurrent=sync.max_concurrent,
            backoff_initial=sync.backoff_initial,
            backoff_max=sync.backoff_max,
        )

    def _keep_trying(self) -> Policy:
        return dataclasses.replace(self.policy, max_failures=None)

    # --- components (each runs until cancelled; raising means "restart me") ---------------

    async def _open_control(self) -> ControlServer:
        # Served from its own thread; what the loop owns comes through a LoopView, built on
        # the loop, and the store's counts through the reader connection (no loop at all).
        loop_view = LoopView(asyncio.get_running_loop(), self._loop_state)
        reader = self.runtime.worker.reader_for_this_thread() if self.runtime else None
        control = ControlServer(
            self.config.control_socket,
            functools.partial(self._control_status, loop_view, reader),
            functools.partial(self._control_peers, loop_view),
            closing=reader.close if reader else None,
        )
        try:
            await control.start()
        except BaseException:
            await control.stop()
            raise
        return control

    async def _run_control(self) -> None:
        control = self.control or await self._open_control()
        self.control = control
        try:
            while True:
                self.faults.check("control")
                await control.watch(self.HEALTH_SECONDS)
        finally:
            self.control = None
            await control.stop()

    async def _run_scheduler(self, scheduler: Scheduler) -> None:
        self.faults.check("scheduler")
        await scheduler.run()

    async def _keep_coded_symbols(self, runtime: Runtime) -> None:
        """Keep coded symbols of the store's ids ready for first contacts (SPEC.md §13.3.6).

        Built in steps of a few ms, each its own call in the store thread's bulk lane, so a
        local write queued meanwhile goes before the next step. Items that sessions store or
        purge are owed to the symbols and settled by the same steps: while sessions move
        items (receive or send) a short step goes between their flights now and then, the
        rest once the contacts end. Once ready this only looks again now and then: the
        index (and the symbols with it) is dropped when another process changes the store."""
        source = runtime.context.source
        while True:
            busy = source.busy_within(self.CODED_SETTLE_QUIET_SECONDS)
            # Short steps while sessions move items: a local write or ``status`` waits for
            # the step in progress (the GIL, the store thread), about 1 ms then.
            step = CODED_STEP_IDS // 4 if busy else CODED_STEP_IDS
            more = await runtime.worker.call(
                functools.partial(_coded_step, source, step), bulk=True
            )
            if not more:
                await asyncio.sleep(self.CODED_RECHECK_SECONDS)
            elif busy:
                await asyncio.sleep(self.CODED_SETTLE_PAUSE_SECONDS)

    async def _run_janitor(self, janitor: Janitor) -> None:
        self.faults.check("janitor")
        # Janitor.run, not a sleep loop: a nudge after a session that brought items must
        # wake it (SPEC.md §14.2), or a flood stays over budget until the next pass.
        await janitor.run(pass_first=True)

    async def _probe_store(self, runtime: Runtime) -> None:
        """Ask the store thread a cheap question now and then; mark it unhealthy if silent."""
        faults = self.faults

        def probe(store: Store) -> int:
            faults.check("store")  # on the store thread, where a disk error would arise
            return store.data_version()

        while True:
            answer = asyncio.ensure_future(runtime.worker.call(probe))
            done, _ = await asyncio.wait({answer}, timeout=self.STORE_ANSWER_SECONDS)
            if not done:
                reason = f"the store thread has not answered for {self.STORE_ANSWER_SECONDS:g} s"
                log.error("store: %s (disk stalled?); the watchdog stops pinging", reason)
                self.supervisor.set_unhealthy("store", reason)
                try:
                    await answer
                finally:
                    self.supervisor.set_unhealthy("store", None)
                log.info("store: the store thread answers again")
            answer.result()
            await asyncio.sleep(self.HEALTH_SECONDS)

    async def _run_discovery(
        self, runtime: Runtime, scheduler: Scheduler, port: int | None
    ) -> None:
        self.faults.check("discovery")
        interfaces = self.config.discovery.interfaces
        addresses = await asyncio.to_thread(interface_addresses, interfaces)
        if not addresses:
            # The interface may come up later (a hotspot switched on): retry with back-off.
            raise DiscoveryUnavailable(f"no IPv4 address on {', '.join(interfaces)}")
        # Imported here, not at the top: zeroconf costs a few MB that a node with discovery
        # off (the default: no interfaces named) never needs.
        from fieldsync.discovery import Discovery, OwnNames

        if self._own_names is None:
            self._own_names = OwnNames()
        own_names = self._own_names

        def appeared(peer: PeerAddress) -> None:
            if peer.host in addresses and peer.port == port:
                return  # ourselves, by address: never list or dial our own server
            if runtime.context.network_key != browsing_key:
                return  # found under a key switched away from (§17.5): not a lead any more
            scheduler.add(f"{peer.host}:{peer.port}", "discovered")

        def gone(peer: PeerAddress) -> None:
            scheduler.remove(f"{peer.host}:{peer.port}")

        while True:
            # Pseudonyms derive from the network key: after a rotation (SPEC.md §17.5)
            # discovery starts again under the new key, and the old key recognises nothing.
            runtime.keys_changed.clear()
            browsing_key = runtime.context.network_key  # what ``appeared`` compares with
            discovery = Discovery(
                network_key=runtime.context.network_key,
                port=port,
                interfaces=addresses,
                on_peer=appeared,
                on_peer_gone=gone,
                service_type=self.config.discovery.service_type,
                rotate_seconds=self.config.discovery.rotate_minutes * 60.0,
                own_names=own_names,
                also_recognise=runtime.context.also_accept,
            )
            await discovery.start()
            self.discovery = discovery
            doing = "announcing and browsing" if port is not None else "browsing (no announcement)"
            log.info("discovery: %s on %s", doing, ", ".join(addresses))
            changed = asyncio.ensure_future(runtime.keys_changed.wait())
            ended = asyncio.ensure_future(discovery.wait())
            try:
                done, _ = await asyncio.wait({changed, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                ended.cancel()
                self.discovery = None
                found = discovery.peers
                await discovery.stop()
            if changed not in done:
                ended.result()  # discovery itself ended: its error restarts us
                return
            for peer in found:  # found under the old key: found again under the new, or not
                scheduler.remove(f"{peer.host}:{peer.port}", even_in_flight=True)

    def _forget_discovered(self, scheduler: Scheduler) -> None:
        """The network key switched (SPEC.md §17.5): what discovery found under the previous
        key may be an ex-member, so forget it and end the syncs running with it now; the
        restarted discovery finds again, under the new key, whoever still holds it."""
        forgotten = scheduler.forget_discovered()
        if forgotten:
            log.info("discovery: forgot %d peers found under the previous network key", forgotten)

    async def _watch_local_changes(self, runtime: Runtime, scheduler: Scheduler) -> None:
        """Items written by another process (``report add``, ``bundle import``): pass them on."""
        last = await runtime.worker.call(lambda store: store.data_version())
        holding = self.offer_delay.active
        while True:
            await asyncio.sleep(self.LOCAL_POLL_SECONDS)
            self.faults.check("watcher")
            version = await runtime.worker.call(lambda store: store.data_version())
            # With an offer delay, new report items are held: pass on only what became
            # offerable (receipts at once, reports when their hold ends), whoever wrote it.
            offerable = await runtime.refresh_offers() if holding else False
            changed, last = version != last, version
            if changed:
                await runtime.refresh_revocations()  # a bundle may have brought a new list
            if offerable or (changed and not holding):
                scheduler.poke()
            await runtime.refresh_keys()  # a rotation's grace may be over (SPEC.md §17.5)

    async def _watchdog(self, interval: float) -> None:
        """Ping systemd only while the loop runs and every component is healthy; keep the
        ``systemctl status`` line saying which components are degraded."""
        shown: list[str] | None = None  # nothing said yet
        while True:
            if self.supervisor.healthy:
                sdnotify.watchdog_ping()
            degraded = self.supervisor.degraded
            if degraded != shown:
                shown = degraded
                sdnotify.status(
                    f"degraded: {', '.join(degraded)} (fieldsync status)" if degraded else "running"
                )
            await asyncio.sleep(interval)

    # --- syncing ----------------------------------------------------------------------------

    async def _sync_target(self, target: str) -> SyncResult:
        runtime = self.runtime
        if runtime is None:
            return SyncResult(ok=False, error="daemon stopped")
        try:
            outcome = await runtime.sync_with(target)
        except (TransportError, FieldsyncError) as exc:
            return SyncResult(ok=False, error=str(exc))
        except (OSError, *DB_ERRORS) as exc:
            problem = storage_problem(exc, self.config.node.home)
            if problem is None:
                raise
            log.error("sync with %s ended: %s", address_name(target), problem)  # noqa: TRY400 - said clearly, no traceback
            return SyncResult(ok=False, error=str(problem))
        if outcome.items_new and self.janitor is not None:
            self.janitor.nudge()  # over budget? evict now (SPEC.md §14.2)
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
        if outcome.items_new and self.scheduler is not None and not self.offer_delay.active:
            self.scheduler.poke()  # with an offer delay, the watcher pokes on release

    # --- the control API --------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """The daemon's status, on the event loop (the web app's status page)."""
        runtime = self.runtime
        if runtime is None:
            return {"running": False}
        return self._compose_status(await self._store_status(runtime), self._loop_state())

    def _control_status(self, loop_view: LoopView, reader: ThreadReader | None) -> dict[str, Any]:
        """``status`` on the control API's thread: the store's counts from that thread's own
        reader connection while the loop builds its part; never waits for a busy loop."""
        if self.runtime is None or reader is None:
            return {"running": False}
        asked = loop_view.ask()
        try:
            store = reader.read(self._store_part)
        except Exception as exc:
            store = self._store_error(exc)
        return self._compose_status(store, loop_view.view(asked, self.LOOP_GRACE_SECONDS))

    def _control_peers(self, loop_view: LoopView) -> dict[str, Any]:
        return {"peers": loop_view.view(loop_view.ask(), self.LOOP_GRACE_SECONDS)["peers"]}

    @staticmethod
    def _compose_status(store: dict[str, Any], loop_state: dict[str, Any]) -> dict[str, Any]:
        if not loop_state["running"]:
            return {"running": False}  # stopped while the store was read
        first = {key: loop_state[key] for key in ("running", "home", "role")}
        return {**first, **store, **loop_state}

    def _loop_state(self) -> dict[str, Any]:
        """What ``status`` shows of the state the event loop owns (built on the loop)."""
        runtime = self.runtime
        if runtime is None:
            return {"running": False, "peers": self._peer_list()}
        supervisor = self.supervisor
        return {
            "running": True,
            "home": str(self.config.node.home),
            "role": "author" if runtime.is_author else "relay",
            # Read on the loop, not the store thread: a build step never delays status.
            **runtime.context.source.coded_state(),
            "listening": [f"{h}:{p}" for h, p in (self.server.addresses if self.server else [])],
            "hub": self.config.hub.enabled,
            "web": self.web.describe() if self.web else None,
            "discovery": self.discovery is not None,
            **runtime.membership_status(),
            "peers": self._peer_list(),
            "last_upstream_contact": self.last_upstream_contact,
            "clock": self.janitor.last.clock if self.janitor else None,
            "components": supervisor.report(),
            "degraded": supervisor.degraded,
        }

    def _store_part(self, store: Store) -> dict[str, Any]:
        return {
            **store.status(),
            # Report items not offered yet (timing privacy, SPEC.md §14.10).
            "offer_held": offer_hold.held_count(store),
            "offer_delay_minutes": self.offer_delay.mean_seconds / 60,
        }

    async def _store_status(self, runtime: Runtime) -> dict[str, Any]:
        """The store's counts, or why there are none: status must answer even then."""
        try:
            async with asyncio.timeout(self.STORE_ANSWER_SECONDS):
                # The reader connection: a status never queues behind a sync's slices.
                return await runtime.worker.read(self._store_part)
        except TimeoutError:
            return {"store_error": "the store thread does not answer"}
        except Exception as exc:
            return self._store_error(exc)

    def _store_error(self, exc: Exception) -> dict[str, Any]:
        explained = _storage_message(exc, self.config.node.home)
        return {"store_error": explained or f"{type(exc).__name__}: {exc}"}

    def _peer_list(self) -> list[dict[str, Any]]:
        scheduler = self.scheduler
        return [] if scheduler is None else [s.as_dict() for s in scheduler.targets.values()]

    async def panic_wipe(self, reason: str) -> None:
        """Destroy every key of the node now (``fieldsync.wipe``), then have the daemon stop."""
        if self.wiped.is_set():
            return
        result = await asyncio.to_thread(wipe_node, self.config.node.home, kill_daemon=False)
        self.wiped.set()
        log.critical(
            "%s: every key on this node was destroyed in %.0f ms (%s); stopping%s",
            reason,
            result.seconds * 1000,
            ", ".join(result.destroyed) or "nothing was left",
            f"; problems: {'; '.join(result.problems)}" if result.problems else "",
        )

    async def wiped_by_wrong_passphrases(self, message: str) -> None:
        """The last wrong author passphrase ``[security] wipe_after_wrong_passphrases``
        allows (typed in the web app) wiped the node: stop, as after ``panic_wipe``."""
        if self.wiped.is_set():
            return
        self.wiped.set()
        log.critical("%s; stopping", message)

    # --- running and stopping ---------------------------------------------------------------

    async def wait(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set; raises ``DaemonFailed`` if a component gave up first."""
        stopped = asyncio.ensure_future(stop.wait())
        failed = asyncio.ensure_future(self.supervisor.fatal.wait())
        wiped = asyncio.ensure_future(self.wiped.wait())
        try:
            await asyncio.wait({stopped, failed, wiped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            failed.cancel()
            wiped.cancel()
        if self.wiped.is_set():
            return
        if self.supervisor.fatal.is_set():
            raise DaemonFailed(
                f"{self.supervisor.fatal_reason}; stopped so that the service manager can"
                " restart the daemon (see the log above for the cause)"
            )

    async def stop(self) -> None:
        """Stop everything; each step runs even if an earlier one raised."""
        sdnotify.stopping()
        await self.supervisor.stop()
        steps: list[tuple[str, Callable[[], Coroutine[Any, Any, None]] | None]] = [
            ("control API", self.control.stop if self.control else None),
            ("discovery", self.discovery.stop if self.discovery else None),
            ("web app", self.web.stop if self.web else None),
            ("server", self.server.close if self.server else None),
            ("store", self.runtime.close if self.runtime else None),
        ]
        lock, self._lock = self._lock, None
        if lock is not None:
            steps.append(("home lock", lambda: asyncio.to_thread(lock.release)))
        self.control = self.discovery = self.web = None
        self.runtime = None
        for what, step in steps:
            if step is None:
                continue
            try:
                await step()
            except Exception:
                log.exception("stopping the %s failed; carrying on with the rest", what)


def _storage_message(exc: Exception, home: Path) -> str | None:
    problem = storage_problem(exc, home)
    return None if problem is None else str(problem)


class DiscoveryUnavailable(FieldsyncError):
    """None of the configured discovery interfaces has an IPv4 address (yet)."""


class DaemonFailed(FieldsyncError):
    """A component of the daemon failed repeatedly; the daemon stopped (README "Exit codes")."""

    exit_code = EXIT_DAEMON_FAILED


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
