"""LAN discovery over mDNS / DNS-SD that tells a watcher nothing stable (DESIGN.md §4).

What goes on the wire, per rotation of one node (RFC 8882; security_anchors T21):

- the configured service type (default ``_http._tcp.local.``, see ``DEFAULT_SERVICE_TYPE``);
- an instance label of 24 lowercase base32 characters: ``nonce (8 B) || tag (7 B)`` where
  ``tag = BLAKE2b_k("instance" || nonce)`` and ``k`` is a subkey of the network key;
- a host name ``<16 base32 chars>.local.`` with ``label = BLAKE2b_k("host" || nonce)``;
- the node's port and interface addresses (needed to connect, and visible in the IP header
  anyway), and an empty TXT record (the single zero byte RFC 6763 §6.1 asks for). By default
  the port is whatever the kernel gave the listener at this start (config_schema
  ``RELAY_DEFAULT_LISTEN``), so it marks neither the software nor, across restarts, the node.

Only listening nodes announce. An author's node listens nowhere by default and so only
browses: it dials the members it hears and sends no record of its own (issue 11).

No node id, key, hostname, app name or version appears. To anyone without the network key
every label is random bytes; a member recomputes the tag from the nonce and so recognises a
peer from the browse answer alone, before it sends a single resolve query.

Why the tag is in the instance name and not in a TXT record: T21 asks for an empty or fixed
TXT record, and a tag in the name lets members drop foreign services (printers, NAS, other
people's web servers under the same common type) without resolving them.

Why rotation is clock-independent: a period index ``floor(now / period)`` would tie
recognition to wall clocks, and field clocks can be off by a year (issue 4). Here nothing
depends on time: every rotation draws a fresh random nonce, members verify any nonce, and
rotation runs on a local monotonic timer. The price: an outsider can record an announcement
and replay it later. That gains them nothing but a connection attempt from members, which
the Noise handshake (psk = network key) rejects; mDNS is only ever a hint (DESIGN §4).

What rotation does not hide: the sender's IP and MAC addresses link successive pseudonyms
for anyone on the same link. Rotation prevents linking across networks and over time once
the addresses change (MAC randomisation, DHCP), and keeps names out of caches and logs.

``Discovery`` knows nothing of the store (DESIGN §2): it turns announcements into
``PeerAddress`` hints for the daemon's scheduler and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from zeroconf import IPVersion, NonUniqueNameException, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from fieldsync.config import DEFAULT_ROTATE_MINUTES, DEFAULT_SERVICE_TYPE, check_service_type
from fieldsync_protocol.crypto import derive_key

__all__ = [
    "DEFAULT_ROTATE_SECONDS",
    "DEFAULT_SERVICE_TYPE",
    "Discovery",
    "OwnNames",
    "PeerAddress",
    "Pseudonym",
    "Pseudonyms",
    "instance_label_of",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: The one copy of these defaults is in fieldsync.config (reasons given there).
DEFAULT_ROTATE_SECONDS = DEFAULT_ROTATE_MINUTES * 60.0

_NONCE_BYTES = 8  # 64 bits: no two announcements on a LAN ever share a nonce
_TAG_BYTES = 7  # 56 bits: a forged name passes with probability 2**-56 and still buys nothing
_HOST_BYTES = 10
# 15 and 10 bytes are multiples of 5, so base32 needs no "=" padding.
INSTANCE_LABEL_LENGTH = (_NONCE_BYTES + _TAG_BYTES) * 8 // 5  # 24
HOST_LABEL_LENGTH = _HOST_BYTES * 8 // 5  # 16
_INSTANCE_LABEL_RE = re.compile(f"[a-z2-7]{{{INSTANCE_LABEL_LENGTH}}}")
_PERSON = b"fs-discovery"  # BLAKE2b personalisation: these MACs mean nothing elsewhere

# Host records (SRV, A) keep zeroconf's RFC 6762 default of 120 s. PTR and TXT default to
# 75 minutes; a pseudonym that outlives its rotation in caches only helps a watcher, and a
# crashed peer would linger for that long, so they get the same bound.
_HOST_TTL = 120
_OTHER_TTL = 120
#: How long we recognise one of our own names after withdrawing it: the longest any cache
#: (ours included) may keep its records, plus a margin for a goodbye that was lost.
OWN_NAME_MEMORY_SECONDS = 2 * max(_HOST_TTL, _OTHER_TTL)
_RESOLVE_TIMEOUT_MS = 3000
_REGISTER_ATTEMPTS = 3
# Bound on names tracked at once (resolving or verified), so a flood of replayed member
# announcements cannot grow memory without limit. A real LAN has far fewer members.
_MAX_TRACKED_NAMES = 256

# What ``interfaces`` does and does not scope. zeroconf sends (announcements, queries) only
# through sockets bound to these addresses and joins 224.0.0.251 only on them. But it also
# listens on one wildcard socket (0.0.0.0:5353), and Linux delivers to it the group traffic
# of *every* interface on which any socket in the network namespace joined the group (an
# avahi or a second zeroconf on an uplink). zeroconf then learns services from that link
# and answers its QU queries by unicast out of it. Turning IP_MULTICAST_ALL off on that
# socket looks like the fix, but was measured to be worse (kernel 6.18, netns): inside an
# SO_REUSEPORT group — which every python-zeroconf of the same uid joins — it did not stop
# the leak and it silently starved the *other* process's socket of all mDNS. So no socket
# tricks here: confine the daemon's sockets to its interfaces from outside instead
# (systemd ``RestrictNetworkInterfaces=``, or a namespace holding only the LAN interface).


class OwnNames:
    """Our own instance labels, current and withdrawn within ``memory`` seconds.

    Our announcements come back to us (multicast loop), and records of a withdrawn name live
    on in caches for up to their TTL. A count of names would not do: at a 3 s rotation eight
    names cover 24 s, and a node would then list and dial itself. So names are kept by time.
    """

    def __init__(
        self,
        memory: float = OWN_NAME_MEMORY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        limit: int = 4096,
    ) -> None:
        self._memory = memory
        self._clock = clock
        self._limit = limit  # a bound on memory, far above memory / the shortest rotation
        #: label -> when it was withdrawn (None: still announced), oldest first.
        self._labels: OrderedDict[str, float | None] = OrderedDict()

    def add(self, label: str) -> None:
        self._forget_old()
        self._labels[label.lower()] = None
        while len(self._labels) > self._limit:
            self._labels.popitem(last=False)

    def withdraw(self, label: str) -> None:
        if label.lower() in self._labels:
            self._labels[label.lower()] = self._clock()

    def __contains__(self, label: object) -> bool:
        if not isinstance(label, str) or label.lower() not in self._labels:
            return False
        withdrawn = self._labels[label.lower()]
        return withdrawn is None or self._clock() - withdrawn <= self._memory

    def __len__(self) -> int:
        return len(self._labels)

    def _forget_old(self) -> None:
        now = self._clock()
        for label, withdrawn in list(self._labels.items()):
            if withdrawn is not None and now - withdrawn > self._memory:
                del self._labels[label]


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").lower()


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """Where a member announced it can be reached. A hint, not an identity."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Pseudonym:
    """The names one node uses for one rotation."""

    instance_label: str
    host_label: str

    @property
    def server(self) -> str:
        """The host name for the SRV record and our A records."""
        return f"{self.host_label}.local."

    def instance_name(self, service_type: str) -> str:
        return f"{self.instance_label}.{service_type}"


class Pseudonyms:
    """Keyed, clock-independent pseudonyms: pure functions of the network key and a nonce."""

    def __init__(self, network_key: bytes) -> None:
        if len(network_key) != 32:
            raise ValueError("network key must be 32 bytes")
        # A subkey, so these MACs can never be confused with any other use of the network key
        # (the Noise psk, bundle files).
        self._key = derive_key(network_key, b"discovery")

    def _mac(self, domain: bytes, nonce: bytes, size: int) -> bytes:
        return hashlib.blake2b(
            domain + b"\0" + nonce, digest_size=size, key=self._key, person=_PERSON
        ).digest()

    def for_nonce(self, nonce: bytes) -> Pseudonym:
        """The names for ``nonce`` (deterministic: vectors and verification use this)."""
        if len(nonce) != _NONCE_BYTES:
            raise ValueError(f"nonce must be {_NONCE_BYTES} bytes")
        tag = self._mac(b"instance", nonce, _TAG_BYTES)
        return Pseudonym(
            instance_label=_b32(nonce + tag),
            host_label=_b32(self._mac(b"host", nonce, _HOST_BYTES)),
        )

    def fresh(self, random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> Pseudonym:
        """New names for a new rotation, unlinkable to all earlier ones."""
        return self.for_nonce(random_bytes(_NONCE_BYTES))

    def recognise(self, instance_label: str) -> Pseudonym | None:
        """The pseudonym a member would announce under ``instance_label``, or None.

        None means "not a member" (or a damaged name); the caller learns nothing more. The
        returned ``host_label`` is what the SRV record must point to.
        """
        label = instance_label.lower()  # DNS names compare case-insensitively
        if _INSTANCE_LABEL_RE.fullmatch(label) is None:
            return None
        raw = base64.b32decode(label.upper())
        nonce, tag = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        if not hmac.compare_digest(tag, self._mac(b"instance", nonce, _TAG_BYTES)):
            return None
        return self.for_nonce(nonce)


def instance_label_of(name: str, service_type: str) -> str | None:
    """The first label of a full instance name of ``service_type``, or None."""
    suffix = "." + service_type
    if not name.lower().endswith(suffix.lower()):
        return None
    label = name[: -len(suffix)]
    return label if label and "." not in label else None


def _is_canonical_service_type(service_type: str) -> bool:
    """Valid by the config's rule and already in its canonical form (lowercase, ``.local.``)."""
    try:
        return check_service_type(service_type) == service_type
    except ValueError:
        return False


def _check_interfaces(interfaces: Sequence[str]) -> list[str]:
    """Explicit IPv4 addresses only: never "all interfaces" by accident."""
    if not interfaces:
        raise ValueError(
            "discovery needs at least one interface address; it never binds to all interfaces"
        )
    checked: list[str] = []
    for text in interfaces:
        try:
            address = ipaddress.ip_address(text)
        except ValueError as exc:
            raise ValueError(f"interface {text!r} is not an IP address") from exc
        if address.version != 4 or address.is_unspecified or address.is_multicast:
            raise ValueError(f"interface {text!r} must be a unicast IPv4 address of this host")
        checked.append(str(address))
    return checked


class Discovery:
    """Announce ourselves under rotating pseudonyms and report members we hear.

    ``on_peer`` is called with a ``PeerAddress`` for every newly verified announcement: when
    a member first appears, and again after each of its rotations or when it comes back
    after a link outage. Treat it as "a member is (still) there", dedupe by address, and let
    the scheduler decide when to sync. A member announcing several addresses gives one call
    per address. ``on_peer_gone`` is called when no live announcement names an address any
    more (a goodbye, or TTL expiry at most ~2 minutes after a peer vanished silently).
    ``on_announce`` gets each of our own full instance names as it is announced (logging and
    tests; the names are pseudonyms, but keep them out of anything kept long). ``own_names``
    carries our own names across a restart of discovery (see ``OwnNames``). ``port=None``
    browses only: nothing is announced (a node that does not listen, an author's default).

    Callbacks run in the event loop and must not block; an exception in one is logged and
    does not stop discovery.
    """

    def __init__(
        self,
        *,
        network_key: bytes,
        port: int | None,
        interfaces: Sequence[str],
        on_peer: Callable[[PeerAddress], None],
        on_peer_gone: Callable[[PeerAddress], None] | None = None,
        service_type: str = DEFAULT_SERVICE_TYPE,
        rotate_seconds: float = DEFAULT_ROTATE_SECONDS,
        on_announce: Callable[[str], None] | None = None,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        own_names: OwnNames | None = None,
        also_recognise: Sequence[bytes] = (),
    ) -> None:
        """``also_recognise``: further network keys whose members' announcements count
        (the next key while a network-key rotation is in its grace, SPEC.md §17.5); we
        announce under ``network_key`` alone."""
        if not _is_canonical_service_type(service_type):
            raise ValueError(
                f"service type {service_type!r} must look like '_name._tcp.local.' "
                "(lowercase, at most 15 characters in the name)"
            )
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range")
        if not rotate_seconds >= 1.0:
            raise ValueError("rotate_seconds must be at least 1 second")
        self._pseudonyms = Pseudonyms(network_key)
        self._recognisers = [self._pseudonyms, *(Pseudonyms(k) for k in also_recognise)]
        self._port = port
        self._interfaces = _check_interfaces(interfaces)
        self._service_type = service_type
        self._rotate_seconds = rotate_seconds
        self._on_peer = on_peer
        self._on_peer_gone = on_peer_gone
        self._on_announce = on_announce
        self._random_bytes = random_bytes

        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._announced: AsyncServiceInfo | None = None
        # Our own names, for as long as any cache may still hold them (see OwnNames).
        # Passed in by a caller that restarts discovery, so a new instance still knows the
        # names the previous one announced.
        self._own_labels = own_names if own_names is not None else OwnNames()
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._live: dict[str, tuple[PeerAddress, ...]] = {}
        self._rotation: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def peers(self) -> frozenset[PeerAddress]:
        """Addresses of members with a live, verified announcement right now."""
        return frozenset(address for group in self._live.values() for address in group)

    async def start(self) -> None:
        """Open mDNS sockets on our interfaces only, browse, and announce the first name."""
        if self._aiozc is not None:
            raise RuntimeError("discovery already started")
        self._stopping = False
        # Explicit addresses and IPv4 only: zeroconf must never fall back to "all interfaces".
        aiozc = AsyncZeroconf(interfaces=list(self._interfaces), ip_version=IPVersion.V4Only)
        self._aiozc = aiozc
        try:
            await aiozc.zeroconf.async_wait_for_start()
            # Browse before announcing, so announcements answering our first query are not
            # missed while our own probes run (~1 s).
            await self.refresh()
            await self._announce()
        except BaseException:
            await self.stop()
            raise
        self._rotation = asyncio.create_task(self._rotate_forever(), name="discovery-rotation")

    async def wait(self) -> None:
        """Until discovery stops: raises what ended the rotation task (for the supervisor)."""
        rotation = self._rotation
        if rotation is None:
            raise RuntimeError("discovery is not running")
        await rotation

    async def refresh(self) -> None:
        """Ask the link again who is there (call after a link comes up or an address changes).

        zeroconf's browser queries 4 times at start (0, 1, 4, 9 s) and afterwards only to
        refresh records it already holds, so without this a node that came back to a link
        would learn of the others only when they rotate. A fresh browser sends a QU query
        that every member answers. Services still cached are re-reported to us, but an
        unchanged address is not news, so ``on_peer`` stays quiet for them.
        """
        aiozc = self._aiozc
        if aiozc is None:
            return
        old, self._browser = self._browser, None
        if old is not None:
            await old.async_cancel()
        # No await between cancelling and replacing: no record update can fall in between.
        self._browser = AsyncServiceBrowser(
            aiozc.zeroconf, self._service_type, handlers=[self._on_state_change]
        )

    async def stop(self) -> None:
        """Say goodbye (so members forget our name at once) and close the sockets."""
        self._stopping = True
        tasks = [t for t in (self._rotation, *self._resolving.values()) if t is not None]
        self._rotation = None
        self._resolving.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        aiozc, self._aiozc = self._aiozc, None
        browser, self._browser = self._browser, None
        self._announced = None
        self._live.clear()
        if aiozc is None:
            return
        if browser is not None:
            await browser.async_cancel()
        # async_close unregisters every service (goodbye packets) before closing sockets.
        await aiozc.async_close()

    # -- announcing ------------------------------------------------------------------------

    async def _rotate_forever(self) -> None:
        while True:
            # ±10 % jitter so nodes that started together do not rotate in lock-step, and the
            # rotation instant is not a clock-like fingerprint.
            jitter = 0.9 + secrets.randbelow(201) / 1000
            await asyncio.sleep(self._rotate_seconds * jitter)
            try:
                await self._announce()
                # Rotation doubles as a periodic look-around, so peers that arrived on a
                # link we were cut from are found within one period even if they never
                # rotate themselves.
                await self.refresh()
            except Exception:
                # A transient failure (interface gone, a squatted name) must not end rotation
                # for good: the old name stays announced and the next period tries again.
                log.exception("discovery: rotation failed; keeping the previous name")

    async def _announce(self) -> None:
        """Register a fresh pseudonym, then withdraw the previous one.

        New before old, so members see no gap: they get the new name (on_peer) before the
        old one's goodbye, which then changes nothing because the address is still live.
        """
        aiozc = self._aiozc
        if aiozc is None or self._port is None:
            return
        info = await self._register_fresh(aiozc, self._port)
        previous, self._announced = self._announced, info
        self._notify(self._on_announce, info.name)
        if previous is not None:
            self._own_labels.withdraw(instance_label_of(previous.name, self._service_type) or "")
            await aiozc.async_unregister_service(previous)

    async def _register_fresh(self, aiozc: AsyncZeroconf, port: int) -> AsyncServiceInfo:
        attempt = 1
        while True:
            pseudonym = self._pseudonyms.fresh(self._random_bytes)
            info = AsyncServiceInfo(
                self._service_type,
                pseudonym.instance_name(self._service_type),
                port=port,
                # Set explicitly: zeroconf would otherwise reuse the instance name, and
                # nothing here may fall back to the machine's hostname.
                server=pseudonym.server,
                parsed_addresses=list(self._interfaces),
                properties=b"\x00",  # an empty TXT record (RFC 6763 §6.1)
                host_ttl=_HOST_TTL,
                other_ttl=_OTHER_TTL,
            )
            self._own_labels.add(pseudonym.instance_label)
            try:
                await aiozc.async_register_service(info)
            except NonUniqueNameException:
                # Random 64-bit nonces do not collide; someone is squatting our new name.
                # Draw another rather than use zeroconf's "name (2)" renaming, which would
                # break the tag.
                self._own_labels.withdraw(pseudonym.instance_label)
                if attempt == _REGISTER_ATTEMPTS:
                    raise
                attempt += 1
            else:
                return info

    # -- browsing --------------------------------------------------------------------------

    def _on_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        """Browser callback (in the event loop): filter by tag, then resolve or forget."""
        if self._stopping:
            return
        label = instance_label_of(name, service_type)
        if label is None or label.lower() in self._own_labels:
            return
        key = name.lower()
        if state_change is ServiceStateChange.Removed:
            task = self._resolving.pop(key, None)
            if task is not None:
                task.cancel()
            self._forget(key)
            return
        expected = next(
            (found for p in self._recognisers if (found := p.recognise(label)) is not None),
            None,
        )
        if expected is None:
            # Not a member: never resolved, so we send nothing about it.
            return
        if key in self._resolving:
            return
        if key not in self._live and len(self._live) + len(self._resolving) >= _MAX_TRACKED_NAMES:
            log.warning("discovery: too many announcements at once; ignoring one")
            return
        self._resolving[key] = asyncio.create_task(
            self._resolve(zeroconf, service_type, name, key, expected),
            name="discovery-resolve",
        )

    async def _resolve(
        self, zeroconf: Zeroconf, service_type: str, name: str, key: str, expected: Pseudonym
    ) -> None:
        try:
            info = AsyncServiceInfo(service_type, name)
            if not await info.async_request(zeroconf, _RESOLVE_TIMEOUT_MS):
                return
            # The SRV target must be the host name bound to this nonce, so a replayed
            # instance name cannot be pointed at someone else's host record.
            if info.server is None or info.server.lower() != expected.server:
                return
            port = info.port
            if port is None or not 0 < port < 65536:
                return
            addresses = tuple(
                PeerAddress(host, port) for host in sorted(info.parsed_addresses(IPVersion.V4Only))
            )
            if not addresses or self._live.get(key) == addresses:
                return  # a re-resolve that changed nothing is not news
            before = self.peers
            self._live[key] = addresses
            for address in addresses:
                self._notify(self._on_peer, address)
            self._notify_gone(before)
        finally:
            if self._resolving.get(key) is asyncio.current_task():
                del self._resolving[key]

    def _forget(self, key: str) -> None:
        if key in self._live:
            before = self.peers
            del self._live[key]
            self._notify_gone(before)

    def _notify_gone(self, before: frozenset[PeerAddress]) -> None:
        if self._on_peer_gone is None:
            return
        now = self.peers
        for address in sorted(before - now, key=lambda a: (a.host, a.port)):
            self._notify(self._on_peer_gone, address)

    def _notify(self, callback: Callable[[_T], None] | None, value: _T) -> None:
        if callback is None:
            return
        try:
            callback(value)
        except Exception:
            # The daemon's callbacks must not be able to stop discovery.
            log.exception("discovery: callback failed")
