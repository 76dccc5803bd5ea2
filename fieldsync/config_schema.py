"""What the configuration may hold: every section, key, default and how a value is checked.

``Config`` is one frozen dataclass per ``[section]``; each field's metadata carries its ``Kind``:
how a TOML value (or command-line override) and an environment variable's text become the
typed value, or an ``Invalid`` saying what is expected. ``config`` (the loader) applies the
layers; this module holds every default (the one copy: discovery imports its defaults from
here).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar

from fieldsync import limits
from fieldsync.config_addresses import (
    HOST_PORT_EXAMPLE,
    HostPort,
    Peer,
    WebSocketURL,
    check_service_type,
    parse_host_port,
    parse_interface,
    parse_peer,
    parse_websocket_url,
)
from fieldsync.errors import FieldsyncError
from fieldsync.faults import parse_fault

#: Where a relay listens when ``[listen] addresses`` is not set: every interface, on a port the
#: kernel picks at each start. There is no project port: a fixed one (7341 until 2026-12)
#: marked every fieldsync node to a watcher. Discovery announces the port it got; a node that
#: others dial by ``[peers] static`` (or the hub, behind its proxy) sets a fixed address.
RELAY_DEFAULT_LISTEN: Final = (HostPort("0.0.0.0", 0),)  # noqa: S104 - a relay serves the LAN
#: The monitor's web app (fieldsync.web), on loopback unless ``[web] listen`` says otherwise.
DEFAULT_WEB_PORT: Final = 7343
# Discovery's defaults live here, the one place of every default (fieldsync.discovery imports
# them without importing zeroconf into every command).
#
# A common, generic service type rather than one of our own. A dedicated type
# (``_fieldsync._tcp``) would name the software; a per-deployment random type
# (``_x3fa9c1._tcp``) would be a stable identifier of the *network*, letting a watcher who
# learns it once spot any member anywhere, for ever. Under ``_http._tcp`` our records sit among
# printers, NAS boxes and routers, and a watcher must fingerprint the record shape instead of
# reading a label. The cost: generic HTTP browsers may list or probe us (they get the
# handshake's silence and a delayed close), and members see foreign ``_http._tcp`` services,
# which they drop by the tag in the name without resolving them. A deployment may pick another
# common type in its config; all members of a network must use the same one.
DEFAULT_SERVICE_TYPE: Final = "_http._tcp.local."
#: Long enough that rotation traffic (3 probes + announcements + goodbye) is negligible on a
#: busy Wi-Fi, short enough that a name never lives for hours in anybody's cache or log.
DEFAULT_ROTATE_MINUTES: Final = 15.0
DEFAULT_HOME: Final = Path("~/.local/share/fieldsync")
#: sysexits.h EX_CONFIG; the systemd unit does not restart on it (RestartPreventExitStatus).
EXIT_CONFIG: Final = 78
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: ``sockaddr_un.sun_path`` holds 108 bytes including the terminating NUL.
MAX_UNIX_SOCKET_PATH: Final = 107


class ConfigError(FieldsyncError):
    """The configuration (file, environment or command line) is invalid; nothing was started."""

    exit_code = EXIT_CONFIG


# --- how one key is read -----------------------------------------------------------------------


class Invalid(Exception):
    """A value was refused; the message says what is expected."""


@dataclass(frozen=True, slots=True)
class Kind:
    """How one key is read (its field's metadata)."""

    #: TOML / override value (and the directory relative paths start from) -> typed value.
    from_value: Callable[[object, Path], Any]
    #: Environment text -> a value ``from_value`` accepts.
    from_env: Callable[[str], object]


def _boolean() -> Kind:
    words = {"1": True, "true": True, "yes": True, "on": True}
    words |= {"0": False, "false": False, "no": False, "off": False}

    def from_value(value: object, _base: Path) -> bool:
        if not isinstance(value, bool):
            raise Invalid("expected true or false")
        return value

    def from_env(text: str) -> object:
        try:
            return words[text.strip().lower()]
        except KeyError:
            raise Invalid("expected true or false (or 1/0, yes/no, on/off)") from None

    return Kind(from_value, from_env)


def _integer(minimum: int, maximum: int | None = None) -> Kind:
    span = f"≥ {minimum}" if maximum is None else f"in {minimum}–{maximum}"
    expected = f"expected a whole number {span}"

    def from_value(value: object, _base: Path) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(expected)
        if value < minimum or (maximum is not None and value > maximum):
            raise Invalid(expected)
        return value

    def from_env(text: str) -> object:
        try:
            return int(text.strip())
        except ValueError:
            raise Invalid(expected) from None

    return Kind(from_value, from_env)


def _real(expected: str, accepts: Callable[[float], bool]) -> Kind:
    """A finite number (int or float in TOML) that ``accepts`` allows."""

    def from_value(value: object, _base: Path) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(expected)
        if not math.isfinite(value) or not accepts(value):
            raise Invalid(expected)
        return float(value)

    def from_env(text: str) -> object:
        try:
            return float(text.strip())
        except ValueError:
            raise Invalid(expected) from None

    return Kind(from_value, from_env)


def _seconds() -> Kind:
    return _real("expected a number of seconds > 0", lambda value: value > 0)


def _minutes(minimum: float, maximum: float) -> Kind:
    """A number of minutes, whole or fractional (tests rotate every few seconds)."""
    return _real(
        f"expected a number of minutes in {minimum:g}–{maximum:g}",
        lambda value: minimum <= value <= maximum,
    )


def _text(check: Callable[[str], str], expected: str) -> Kind:
    def from_value(value: object, _base: Path) -> str:
        if not isinstance(value, str):
            raise Invalid(expected)
        try:
            return check(value)
        except ValueError as exc:
            raise Invalid(f"{exc}; {expected}") from None

    return Kind(from_value, lambda text: text)


def _check_log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"unknown level {value!r}")
    return level


#: ``[web] tls``: when the web app serves HTTPS (see ``fieldsync.web.server.serves_https``).
WEB_TLS_MODES = ("auto", "always")


def _check_web_tls(value: str) -> str:
    mode = value.strip().lower()
    if mode not in WEB_TLS_MODES:
        raise ValueError(f"unknown mode {value!r}")
    return mode


def _path(*, optional: bool, socket: bool = False) -> Kind:
    expected = "expected a path" + (' (or "" for the default)' if optional else "")

    def from_value(value: object, base: Path) -> Path | None:
        if optional and value == "":
            return None
        if not isinstance(value, str | Path) or str(value) == "" or "\0" in str(value):
            raise Invalid(expected)
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        if socket and len(os.fsencode(path)) > MAX_UNIX_SOCKET_PATH:
            raise Invalid(
                f"a unix socket path is at most {MAX_UNIX_SOCKET_PATH} bytes; "
                f"choose a shorter one, e.g. /run/fieldsync/control.sock"
            )
        return path

    return Kind(from_value, lambda text: text)


def _optional_url() -> Kind:
    def from_value(value: object, _base: Path) -> WebSocketURL | None:
        if value == "":
            return None
        if not isinstance(value, str):
            raise Invalid('expected a ws:// or wss:// URL (or "" for none)')
        try:
            return parse_websocket_url(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    return Kind(from_value, lambda text: text)


def _optional_listen() -> Kind:
    def from_value(value: object, _base: Path) -> HostPort | None:
        if value == "":
            return None
        if not isinstance(value, str):
            raise Invalid(f'expected {HOST_PORT_EXAMPLE} (or "" for off)')
        try:
            return parse_host_port(value, allow_port_zero=True)
        except ValueError as exc:
            raise Invalid(f'{exc} (or "" for off)') from None

    return Kind(from_value, lambda text: text)


_T = TypeVar("_T")


def _list(parse: Callable[[str], _T], expected_item: str) -> Kind:
    expected = f"expected a list of {expected_item}"

    def from_value(value: object, _base: Path) -> tuple[_T, ...]:
        if not isinstance(value, list | tuple):
            raise Invalid(f'{expected}, like ["..."]')
        items: list[_T] = []
        for item in value:
            if not isinstance(item, str):
                raise Invalid(f"item {show_value(item)} is not a string; {expected}")
            try:
                parsed = parse(item)
            except ValueError as exc:
                raise Invalid(f"item {show_value(item)}: {exc}") from None
            if parsed in items:
                raise Invalid(f"item {show_value(item)} is listed twice")
            items.append(parsed)
        return tuple(items)

    def from_env(text: str) -> object:
        return [part.strip() for part in text.split(",") if part.strip()]

    return Kind(from_value, from_env)


#: ``[listen] addresses = "auto"`` (the default): the node's role decides
#: (``ListenConfig.for_role``).
LISTEN_AUTO: Final = "auto"


def _listen_addresses() -> Kind:
    """A list of HOST:PORT (port 0: the kernel picks), or ``"auto"`` (``None``)."""
    addresses = _list(lambda text: parse_host_port(text, allow_port_zero=True), HOST_PORT_EXAMPLE)

    def from_value(value: object, base: Path) -> tuple[HostPort, ...] | None:
        if value == LISTEN_AUTO:
            return None
        try:
            parsed: tuple[HostPort, ...] = addresses.from_value(value, base)
        except Invalid as exc:
            role_default = f'or "{LISTEN_AUTO}" for the default of the node\'s role'
            raise Invalid(f"{exc}; {role_default}") from None
        return parsed

    def from_env(text: str) -> object:
        return LISTEN_AUTO if text.strip() == LISTEN_AUTO else addresses.from_env(text)

    return Kind(from_value, from_env)


_KIND = "fieldsync.config.kind"


def _meta(kind: Kind) -> dict[str, Kind]:
    return {_KIND: kind}


# --- the sections ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """``[node]``: where this node lives."""

    #: The node's home directory (keys, database). ``fieldsync --home`` overrides it.
    home: Path = field(
        default_factory=lambda: DEFAULT_HOME.expanduser(), metadata=_meta(_path(optional=False))
    )


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """``[listen]``: where peers connect to this node."""

    #: Where peers connect (raw TCP; the hub serves WebSocket here). Empty: dial out only.
    #: ``None`` (``"auto"`` in the file, the default): the node's role decides, see
    #: ``for_role``.
    addresses: tuple[HostPort, ...] | None = field(
        default=None, metadata=_meta(_listen_addresses())
    )

    def for_role(self, *, is_author: bool, hub: bool) -> tuple[HostPort, ...]:
        """The addresses to listen on: the configured ones, else the role's default.

        An author's node dials out and listens nowhere (a listener, and its announcement,
        would show a watcher holding the network key where a monitor's device is); a relay
        listens on a fresh port each start (``RELAY_DEFAULT_LISTEN``). The hub has no
        default: every node's ``[upstream] url`` names its port, so it must be set.
        """
        if self.addresses is not None:
            return self.addresses
        if hub:
            raise ConfigError(
                "the hub needs [listen] addresses: set the address its TLS proxy forwards to, "
                'e.g. addresses = ["127.0.0.1:7342"] (or run --hub --listen HOST:PORT)'
            )
        return () if is_author else RELAY_DEFAULT_LISTEN


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """``[discovery]``: finding peers on the LAN over DNS-SD (zeroconf)."""

    enabled: bool = field(default=True, metadata=_meta(_boolean()))
    #: DNS-SD service type, normalised to ``_name._tcp.local.``.
    service_type: str = field(
        default=DEFAULT_SERVICE_TYPE,
        metadata=_meta(
            _text(check_service_type, 'expected a DNS-SD type like "_http._tcp" (name ≤ 15 chars)')
        ),
    )
    #: Interface names or IPv4 addresses to announce and browse on. Empty = none (discovery
    #: off). The daemon resolves names to the interface's current IPv4 addresses.
    interfaces: tuple[str, ...] = field(
        default=(), metadata=_meta(_list(parse_interface, "interface names or IPv4 addresses"))
    )
    #: How often the pseudonymous instance and host names change (discovery adds jitter).
    #: Fractions are allowed (0.05 = 3 s, the least): each rotation also re-queries the link,
    #: so a short period finds peers sooner after a link comes up, at the cost of traffic.
    rotate_minutes: float = field(
        default=DEFAULT_ROTATE_MINUTES, metadata=_meta(_minutes(0.05, 24 * 60))
    )

    @property
    def active(self) -> bool:
        """Enabled and at least one interface named: the only case that multicasts."""
        return self.enabled and bool(self.interfaces)


@dataclass(frozen=True, slots=True)
class PeersConfig:
    """``[peers]``: peers dialled without discovery."""

    #: Peers dialled without discovery: ``HostPort`` (raw TCP) or ``WebSocketURL``.
    static: tuple[Peer, ...] = field(
        default=(), metadata=_meta(_list(parse_peer, "HOST:PORT or ws:// / wss:// URLs"))
    )


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """``[upstream]``: the HQ hub this node reaches when it can."""

    #: The HQ hub. ``None``: this node has no upstream.
    url: WebSocketURL | None = field(default=None, metadata=_meta(_optional_url()))
    #: How often to try the hub (when there is an upstream).
    interval_seconds: float = field(default=60.0, metadata=_meta(_seconds()))


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """``[sync]``: how often and how much this node syncs with each peer."""

    #: Periodic re-sync with known peers.
    interval_seconds: float = field(default=300.0, metadata=_meta(_seconds()))
    #: Sessions running at once (no storm when many peers appear).
    max_concurrent: int = field(default=4, metadata=_meta(_integer(1, 256)))
    #: Retry delay after a failure grows from ``backoff_initial`` up to ``backoff_max``.
    backoff_initial: float = field(default=2.0, metadata=_meta(_seconds()))
    backoff_max: float = field(default=300.0, metadata=_meta(_seconds()))
    #: Per-peer quotas (keyed by the peer's certificate), per day; defaults in ``limits``.
    quota_items_per_day: int = field(
        default=limits.QUOTA_ITEMS_PER_DAY, metadata=_meta(_integer(1))
    )
    quota_bytes_per_day: int = field(
        default=limits.QUOTA_BYTES_PER_DAY, metadata=_meta(_integer(1))
    )
    #: The store forgets a peer (its cursor and quota counters, a keyed hash of its key)
    #: after this many days of running time without a session with it, so a seized node
    #: does not show everyone it ever met. A forgotten peer that comes back reconciles once.
    forget_peers_days: int = field(default=30, metadata=_meta(_integer(1, 3650)))


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Admission limits of incoming connections (SPEC §14.8)."""

    #: Incoming connections in their handshake at once; the oldest is dropped for a newcomer.
    pending_handshakes: int = field(default=64, metadata=_meta(_integer(1, 65_536)))
    #: ... of which at most this many from one source address (the hub behind a reverse
    #: proxy sees every client at the proxy's address: raise it to ``pending_handshakes``).
    pending_per_address: int = field(default=8, metadata=_meta(_integer(1, 65_536)))
    #: Authenticated incoming sessions at once (one per peer certificate).
    sessions: int = field(default=16, metadata=_meta(_integer(1, 4096)))
    #: Session data buffered ahead of processing, all sessions together (MiB).
    buffer_mb: int = field(default=32, metadata=_meta(_integer(8, 65_536)))


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """``[storage]``: the store's disk budget and upkeep."""

    #: Disk the store may use before the janitor evicts (expired items first).
    disk_budget_mb: int = field(default=1024, metadata=_meta(_integer(1)))
    #: Period of the truncating WAL checkpoint.
    checkpoint_minutes: int = field(default=5, metadata=_meta(_integer(1, 24 * 60)))
    #: Period of the store-key rotation (every page re-encrypted, the old key destroyed:
    #: issue 11 item 4). After a purge the key is also rotated at the next checkpoint.
    key_rotation_hours: int = field(default=24, metadata=_meta(_integer(1, 24 * 366)))


@dataclass(frozen=True, slots=True)
class HubConfig:
    """``[hub]``: serving as HQ's hub."""

    #: Serve sync over WebSocket as the HQ hub (``fieldsync run --hub``).
    enabled: bool = field(default=False, metadata=_meta(_boolean()))


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The monitor's web app (fieldsync.web): author nodes only, never on the hub."""

    #: Where the app listens. Loopback (the default) serves plain HTTP to this computer's
    #: browser; any other address serves HTTPS with a certificate the node makes (its
    #: fingerprint is in ``fieldsync status``). ``""``: off.
    listen: HostPort | None = field(
        default=HostPort("127.0.0.1", DEFAULT_WEB_PORT), metadata=_meta(_optional_listen())
    )
    #: ``"auto"`` (the default): HTTPS on any non-loopback ``listen``, plain HTTP on
    #: loopback. ``"always"``: HTTPS on loopback too (a browser reached through an SSH
    #: tunnel, or a test). There is no "never": off the loopback the app is always HTTPS.
    tls: str = field(
        default="auto",
        metadata=_meta(_text(_check_web_tls, f"expected one of {', '.join(WEB_TLS_MODES)}")),
    )
    #: Largest report submission (all attachments together), in MiB.
    max_upload_mb: int = field(default=512, metadata=_meta(_integer(1, 1536)))


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """``[control]``: the control API the command line asks."""

    #: Unix socket of the control API. ``None``: ``<home>/control.sock``.
    socket: Path | None = field(default=None, metadata=_meta(_path(optional=True, socket=True)))


@dataclass(frozen=True, slots=True)
class LogConfig:
    """``[log]``: how much the daemon logs."""

    #: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case on input).
    level: str = field(
        default="INFO",
        metadata=_meta(_text(_check_log_level, f"expected one of {', '.join(LOG_LEVELS)}")),
    )


#: ``[privacy] offer_delay_jitter`` values (the one copy is ``fieldsync.offer_hold.JITTERS``,
#: which this module may not import: it would load the store for every command).
OFFER_JITTERS = ("exponential", "uniform")


def _check_jitter(value: str) -> str:
    jitter = value.strip().lower()
    if jitter not in OFFER_JITTERS:
        raise ValueError(f"unknown jitter {value!r}")
    return jitter


def _check_trigger_glob(value: str) -> str:
    pattern = value.strip()
    if pattern and not pattern.startswith("/"):
        raise ValueError(f"{value!r} is not absolute")
    return pattern


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    """Timing privacy (SPEC.md §14.10, docs/timing-privacy.md)."""

    #: Mean delay, in minutes, before a report item (own or relayed) is first offered to
    #: peers, so the first node of a sync wave is not reliably the author. 0: offer at once
    #: (the old behaviour, which marks the author to anyone watching the LAN).
    offer_delay_minutes: float = field(default=5.0, metadata=_meta(_minutes(0, 24 * 60)))
    #: ``"exponential"`` (the default; memoryless, cut at 6 means) or ``"uniform"`` (0 to
    #: twice the mean).
    offer_delay_jitter: str = field(
        default="exponential",
        metadata=_meta(_text(_check_jitter, f"expected one of {', '.join(OFFER_JITTERS)}")),
    )
    #: The web app's quick exit (``/exit``) also wipes the node (``fieldsync wipe``) before
    #: it leaves for the neutral page. Off by default: anyone who can reach the app's page
    #: can then wipe the node (README "Panic wipe").
    quick_exit_wipes: bool = field(default=False, metadata=_meta(_boolean()))
    #: A path glob the daemon checks every second (e.g. ``"/media/*/*/fieldsync-wipe-*"``):
    #: a file matching it that holds this node's trigger token (``fieldsync wipe-trigger
    #: create``) wipes the node and stops the daemon. Empty (the default): off.
    wipe_trigger: str = field(
        default="", metadata=_meta(_text(_check_trigger_glob, "expected an absolute path glob"))
    )


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """``[security]``: what wrong passphrases set off."""

    #: Wipe every key on the node (``fieldsync wipe``) after this many wrong author
    #: passphrases in a row. 0 (the default): never. README "Panic wipe" says what it costs.
    wipe_after_wrong_passphrases: int = field(default=0, metadata=_meta(_integer(0, 1000)))
    #: The same for the HQ passphrase (``fieldsync hq ...`` on an HQ directory): after this
    #: many wrong ones in a row every HQ key is destroyed (``fieldsync.wipe.wipe_hq``).
    #: 0 (the default): never.
    hq_wipe_after_wrong_passphrases: int = field(default=0, metadata=_meta(_integer(0, 1000)))


@dataclass(frozen=True, slots=True)
class DebugConfig:
    """``[debug]``: for tests only."""

    #: Fault injection for the supervision tests (``fieldsync.faults``): ``"janitor"`` fails
    #: the janitor every time it runs, ``"janitor:2"`` its first two runs. Empty (the
    #: default) injects nothing. Never set it on a node in the field.
    inject_faults: tuple[str, ...] = field(
        default=(), metadata=_meta(_list(parse_fault, "COMPONENT or COMPONENT:N entries"))
    )


@dataclass(frozen=True, slots=True)
class Config:
    """Every section of the configuration, each a frozen dataclass."""

    node: NodeConfig = field(default_factory=NodeConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    peers: PeersConfig = field(default_factory=PeersConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    web: WebConfig = field(default_factory=WebConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    log: LogConfig = field(default_factory=LogConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    #: The TOML file that was read, if any (for logs and ``doctor``; not part of equality).
    source: Path | None = field(default=None, compare=False)

    @property
    def control_socket(self) -> Path:
        """Where the control API listens and ``fieldsync status`` connects."""
        return self.control.socket or self.node.home / "control.sock"

    def notices(self, *, is_author: bool = False) -> tuple[str, ...]:
        """Lines the daemon logs at start-up about settings that switch things off."""
        lines = []
        if self.discovery.enabled and not self.discovery.interfaces:
            lines.append(
                "discovery is off: [discovery] interfaces is empty, so nothing is announced or "
                'browsed; name the interfaces to use (e.g. interfaces = ["wlan0"]) to turn it on'
            )
        if self.listen.addresses == ():
            lines.append("not listening: [listen] addresses is empty; this node only dials out")
        elif self.listen.addresses is None and is_author and not self.hub.enabled:
            lines.append(
                "not listening: this node holds an author key, so by default it only dials out "
                "and announces nothing (discovery still finds peers to dial); set [listen] "
                "addresses to accept connections"
            )
        elif self.listen.addresses is None and not self.hub.enabled and not self.discovery.active:
            lines.append(
                "listening on a port chosen afresh at each start, and discovery is off, so no "
                "peer can find it; set a fixed [listen] addresses for peers that dial this "
                "node by [peers] static"
            )
        if (
            not self.discovery.active
            and not self.peers.static
            and self.upstream.url is None
            and not self.hub.enabled
        ):
            lines.append(
                "no way to meet peers: discovery is off and there are no [peers] static and no "
                "[upstream] url; only incoming connections and bundles will move items"
            )
        return tuple(lines)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The settings as JSON-ready values, in the TOML file's shape."""
        out: dict[str, dict[str, Any]] = {}
        for name, section in SECTIONS.items():
            values = getattr(self, name)
            out[name] = {key: _plain(getattr(values, key)) for key in keys_of(section)}
        if self.listen.addresses is None:
            out["listen"]["addresses"] = LISTEN_AUTO  # as the file says it
        return out


def _plain(value: object) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, HostPort | WebSocketURL | Path):
        return str(value)
    return value


#: Section name -> its dataclass, in file order (``Config``'s fields but ``source``).
SECTIONS: Final[Mapping[str, type]] = MappingProxyType(
    {
        "node": NodeConfig,
        "listen": ListenConfig,
        "discovery": DiscoveryConfig,
        "peers": PeersConfig,
        "upstream": UpstreamConfig,
        "sync": SyncConfig,
        "limits": LimitsConfig,
        "storage": StorageConfig,
        "hub": HubConfig,
        "web": WebConfig,
        "control": ControlConfig,
        "log": LogConfig,
        "privacy": PrivacyConfig,
        "security": SecurityConfig,
        "debug": DebugConfig,
    }
)


def keys_of(section: type) -> dict[str, Kind]:
    """Key name -> how it is read, for one section's dataclass."""
    return {f.name: f.metadata[_KIND] for f in dataclasses.fields(section)}


def show_value(value: object) -> str:
    """A value as TOML-like text for messages, shortened."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
