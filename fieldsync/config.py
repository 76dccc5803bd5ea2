"""Daemon configuration: one frozen, typed ``Config`` built from four layers.

Later layers win, key by key::

    defaults  <  TOML file  <  environment  <  explicit overrides (command line)

- **TOML file**: ``load_config(path=...)`` (``fieldsync run --config PATH``), else the file
  named by ``FIELDSYNC_CONFIG``, else none (defaults only). Read with stdlib ``tomllib``.
  Relative paths in the file are relative to the file's directory.
- **Environment**: ``FIELDSYNC_<SECTION>_<KEY>`` for every key, e.g.
  ``FIELDSYNC_SYNC_MAX_CONCURRENT=2`` or ``FIELDSYNC_LISTEN_ADDRESSES=127.0.0.1:7341,[::1]:7341``
  (lists are comma-separated; booleans are 1/0, true/false, yes/no, on/off; an empty value
  clears ``[upstream] url`` and ``[control] socket``). A variable naming a known section but an
  unknown key is an error, so typos never pass silently; other ``FIELDSYNC_*`` variables
  (``FIELDSYNC_HOME``, ``FIELDSYNC_PASSPHRASE``, ...) are not configuration and are ignored.
- **Overrides**: a mapping ``{"section.key": value}`` from command-line options, with the same
  types a TOML file would hold (``Path`` is accepted for paths, tuples for lists). ``None``
  means "option not given" and is skipped.

Anything unknown, of the wrong type, out of range or malformed raises ``ConfigError`` naming
where it came from (file, environment variable or override), the section, the key, the bad
value and what is expected. Nothing is guessed: an empty ``[discovery] interfaces`` list means
no multicast at all, never "all interfaces".
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from fieldsync import limits
from fieldsync.errors import FieldsyncError
from fieldsync.faults import parse_fault

CONFIG_ENV: Final = "FIELDSYNC_CONFIG"
ENV_PREFIX: Final = "FIELDSYNC_"
DEFAULT_PORT: Final = 7341
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


# --- value types -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostPort:
    """A TCP endpoint: ``host`` is an IP literal (IPv6 without brackets) or a DNS name."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class WebSocketURL:
    """A ``ws://`` or ``wss://`` URL (the hub, or a static peer reached over WebSocket)."""

    url: str
    host: str
    port: int
    secure: bool

    def __str__(self) -> str:
        return self.url


Peer = HostPort | WebSocketURL

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_SERVICE_TYPE = re.compile(r"_[a-z0-9](?:[a-z0-9-]{0,13}[a-z0-9])?\._(?:tcp|udp)")
_INTERFACE_NAME = re.compile(r"[^\s/:%]{1,15}")
_ALL_INTERFACES = frozenset({"all", "any", "*", "0.0.0.0", "::"})  # noqa: S104 - to refuse
_HOST_PORT_EXAMPLE = "HOST:PORT such as 192.168.1.20:7341 or [fe80::1%wlan0]:7341"


def _check_host(host: str) -> str:
    """An IP literal or an RFC 1123 host name; returns the canonical form."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if "%" in host:  # scoped IPv6 (fe80::1%wlan0): ipaddress knows the scope since 3.9
        raise ValueError(f"{host!r} is not a valid IP address")
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(p) for p in name.split(".")):
        raise ValueError(f"{host!r} is neither an IP address nor a valid host name")
    return name.lower()


def parse_host_port(text: str, *, allow_port_zero: bool = False) -> HostPort:
    """``HOST:PORT`` or ``[IPv6]:PORT`` to a ``HostPort``; ``ValueError`` says what is wrong.

    Port 0 (the kernel picks a free port) is allowed only with ``allow_port_zero`` (listening).
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"expected {_HOST_PORT_EXAMPLE}")
        port_text = rest[1:]
        if ":" not in host:
            raise ValueError("brackets are only for IPv6 addresses")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected {_HOST_PORT_EXAMPLE}")
        if ":" in host:
            raise ValueError("put an IPv6 address in brackets: [::1]:7341")
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port {port} is out of range {low}–65535")
    return HostPort(_check_host(host), port)


def parse_websocket_url(text: str) -> WebSocketURL:
    """``ws://host[:port]/path`` or ``wss://...``; ``ValueError`` says what is wrong."""
    text = text.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError("expected a ws:// or wss:// URL such as wss://hub.example.org/sync")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials do not belong in the URL")
    if parts.fragment:
        raise ValueError("a WebSocket URL has no #fragment")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the URL's port is not a number in 1–65535") from None
    if port == 0:
        raise ValueError("the URL's port is not a number in 1–65535")
    secure = parts.scheme == "wss"
    host = _check_host(parts.hostname)
    return WebSocketURL(text, host, port or (443 if secure else 80), secure)


def parse_peer(text: str) -> Peer:
    """A static peer: ``HOST:PORT`` (raw TCP) or a ``ws://`` / ``wss://`` URL."""
    if "://" in text:
        return parse_websocket_url(text)
    peer = parse_host_port(text)
    if _is_ip(peer.host) and ipaddress.ip_address(peer.host).is_unspecified:
        raise ValueError(f"{peer.host} is not an address one can connect to")
    return peer


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _parse_interface(text: str) -> str:
    text = text.strip()
    if text.lower() in _ALL_INTERFACES:
        raise ValueError(
            "name each interface (wlan0) or address (192.168.4.1); fieldsync never "
            "multicasts on all interfaces"
        )
    if _is_ip(text):
        address = ipaddress.ip_address(text)
        if address.version != 4 or address.is_multicast:
            raise ValueError(
                f"{text!r}: discovery runs over IPv4; give an interface name (wlan0) or one of "
                f"this host's unicast IPv4 addresses"
            )
        return str(address)
    if not _INTERFACE_NAME.fullmatch(text) or text in (".", ".."):
        raise ValueError(f"{text!r} is neither an IP address nor an interface name like wlan0")
    return text


# --- how one key is read -----------------------------------------------------------------------


class _Invalid(Exception):
    """A value was refused; the message says what is expected."""


@dataclass(frozen=True, slots=True)
class _Kind:
    #: TOML / override value (and the directory relative paths start from) -> typed value.
    from_value: Callable[[object, Path], Any]
    #: Environment text -> a value ``from_value`` accepts.
    from_env: Callable[[str], object]


def _boolean() -> _Kind:
    words = {"1": True, "true": True, "yes": True, "on": True}
    words |= {"0": False, "false": False, "no": False, "off": False}

    def from_value(value: object, _base: Path) -> bool:
        if not isinstance(value, bool):
            raise _Invalid("expected true or false")
        return value

    def from_env(text: str) -> object:
        try:
            return words[text.strip().lower()]
        except KeyError:
            raise _Invalid("expected true or false (or 1/0, yes/no, on/off)") from None

    return _Kind(from_value, from_env)


def _integer(minimum: int, maximum: int | None = None) -> _Kind:
    span = f"≥ {minimum}" if maximum is None else f"in {minimum}–{maximum}"
    expected = f"expected a whole number {span}"

    def from_value(value: object, _base: Path) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(expected)
        if value < minimum or (maximum is not None and value > maximum):
            raise _Invalid(expected)
        return value

    def from_env(text: str) -> object:
        try:
            return int(text.strip())
        except ValueError:
            raise _Invalid(expected) from None

    return _Kind(from_value, from_env)


def _real(expected: str, accepts: Callable[[float], bool]) -> _Kind:
    """A finite number (int or float in TOML) that ``accepts`` allows."""

    def from_value(value: object, _base: Path) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(expected)
        if not math.isfinite(value) or not accepts(value):
            raise _Invalid(expected)
        return float(value)

    def from_env(text: str) -> object:
        try:
            return float(text.strip())
        except ValueError:
            raise _Invalid(expected) from None

    return _Kind(from_value, from_env)


def _seconds() -> _Kind:
    return _real("expected a number of seconds > 0", lambda value: value > 0)


def _minutes(minimum: float, maximum: float) -> _Kind:
    """A number of minutes, whole or fractional (tests rotate every few seconds)."""
    return _real(
        f"expected a number of minutes in {minimum:g}–{maximum:g}",
        lambda value: minimum <= value <= maximum,
    )


def _text(check: Callable[[str], str], expected: str) -> _Kind:
    def from_value(value: object, _base: Path) -> str:
        if not isinstance(value, str):
            raise _Invalid(expected)
        try:
            return check(value)
        except ValueError as exc:
            raise _Invalid(f"{exc}; {expected}") from None

    return _Kind(from_value, lambda text: text)


def _check_log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"unknown level {value!r}")
    return level


def check_service_type(value: str) -> str:
    """A DNS-SD service type in its canonical form ``_name._tcp.local.``; ``ValueError`` if
    it is none (the name is at most 15 characters, RFC 6335)."""
    name = value.strip().lower()  # DNS names are case-insensitive; zeroconf wants lowercase
    name = name.removesuffix(".")
    name = name.removesuffix(".local")
    if not _SERVICE_TYPE.fullmatch(name):
        raise ValueError(f"{value!r} is not a DNS-SD service type")
    return f"{name}.local."


def _path(*, optional: bool, socket: bool = False) -> _Kind:
    expected = "expected a path" + (' (or "" for the default)' if optional else "")

    def from_value(value: object, base: Path) -> Path | None:
        if optional and value == "":
            return None
        if not isinstance(value, str | Path) or str(value) == "" or "\0" in str(value):
            raise _Invalid(expected)
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        if socket and len(os.fsencode(path)) > MAX_UNIX_SOCKET_PATH:
            raise _Invalid(
                f"a unix socket path is at most {MAX_UNIX_SOCKET_PATH} bytes; "
                f"choose a shorter one, e.g. /run/fieldsync/control.sock"
            )
        return path

    return _Kind(from_value, lambda text: text)


def _optional_url() -> _Kind:
    def from_value(value: object, _base: Path) -> WebSocketURL | None:
        if value == "":
            return None
        if not isinstance(value, str):
            raise _Invalid('expected a ws:// or wss:// URL (or "" for none)')
        try:
            return parse_websocket_url(value)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None

    return _Kind(from_value, lambda text: text)


_T = TypeVar("_T")


def _list(parse: Callable[[str], _T], expected_item: str) -> _Kind:
    expected = f"expected a list of {expected_item}"

    def from_value(value: object, _base: Path) -> tuple[_T, ...]:
        if not isinstance(value, list | tuple):
            raise _Invalid(f'{expected}, like ["..."]')
        items: list[_T] = []
        for item in value:
            if not isinstance(item, str):
                raise _Invalid(f"item {_show(item)} is not a string; {expected}")
            try:
                parsed = parse(item)
            except ValueError as exc:
                raise _Invalid(f"item {_show(item)}: {exc}") from None
            if parsed in items:
                raise _Invalid(f"item {_show(item)} is listed twice")
            items.append(parsed)
        return tuple(items)

    def from_env(text: str) -> object:
        return [part.strip() for part in text.split(",") if part.strip()]

    return _Kind(from_value, from_env)


_KIND = "fieldsync.config.kind"


def _meta(kind: _Kind) -> dict[str, _Kind]:
    return {_KIND: kind}


# --- the sections ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeConfig:
    #: The node's home directory (keys, database). ``fieldsync --home`` overrides it.
    home: Path = field(
        default_factory=lambda: DEFAULT_HOME.expanduser(), metadata=_meta(_path(optional=False))
    )


@dataclass(frozen=True, slots=True)
class ListenConfig:
    #: Where peers connect (raw TCP; the hub serves WebSocket here). Empty: dial out only.
    addresses: tuple[HostPort, ...] = field(
        default=(HostPort("0.0.0.0", DEFAULT_PORT),),  # noqa: S104 - a LAN node listens on the LAN
        metadata=_meta(
            _list(lambda text: parse_host_port(text, allow_port_zero=True), _HOST_PORT_EXAMPLE)
        ),
    )


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
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
        default=(), metadata=_meta(_list(_parse_interface, "interface names or IPv4 addresses"))
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
    #: Peers dialled without discovery: ``HostPort`` (raw TCP) or ``WebSocketURL``.
    static: tuple[Peer, ...] = field(
        default=(), metadata=_meta(_list(parse_peer, "HOST:PORT or ws:// / wss:// URLs"))
    )


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    #: The HQ hub. ``None``: this node has no upstream.
    url: WebSocketURL | None = field(default=None, metadata=_meta(_optional_url()))
    #: How often to try the hub (when there is an upstream).
    interval_seconds: float = field(default=60.0, metadata=_meta(_seconds()))


@dataclass(frozen=True, slots=True)
class SyncConfig:
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
    #: Disk the store may use before the janitor evicts (expired items first).
    disk_budget_mb: int = field(default=1024, metadata=_meta(_integer(1)))
    #: Period of the truncating WAL checkpoint.
    checkpoint_minutes: int = field(default=5, metadata=_meta(_integer(1, 24 * 60)))


@dataclass(frozen=True, slots=True)
class HubConfig:
    #: Serve sync over WebSocket as the HQ hub (``fieldsync run --hub``).
    enabled: bool = field(default=False, metadata=_meta(_boolean()))


@dataclass(frozen=True, slots=True)
class ControlConfig:
    #: Unix socket of the control API. ``None``: ``<home>/control.sock``.
    socket: Path | None = field(default=None, metadata=_meta(_path(optional=True, socket=True)))


@dataclass(frozen=True, slots=True)
class LogConfig:
    #: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case on input).
    level: str = field(
        default="INFO",
        metadata=_meta(_text(_check_log_level, f"expected one of {', '.join(LOG_LEVELS)}")),
    )


@dataclass(frozen=True, slots=True)
class DebugConfig:
    #: Fault injection for the supervision tests (``fieldsync.faults``): ``"janitor"`` fails
    #: the janitor every time it runs, ``"janitor:2"`` its first two runs. Empty (the
    #: default) injects nothing. Never set it on a node in the field.
    inject_faults: tuple[str, ...] = field(
        default=(), metadata=_meta(_list(parse_fault, "COMPONENT or COMPONENT:N entries"))
    )


@dataclass(frozen=True, slots=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    peers: PeersConfig = field(default_factory=PeersConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    log: LogConfig = field(default_factory=LogConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    #: The TOML file that was read, if any (for logs and ``doctor``; not part of equality).
    source: Path | None = field(default=None, compare=False)

    @property
    def control_socket(self) -> Path:
        """Where the control API listens and ``fieldsync status`` connects."""
        return self.control.socket or self.node.home / "control.sock"

    def notices(self) -> tuple[str, ...]:
        """Lines the daemon logs at start-up about settings that switch things off."""
        lines = []
        if self.discovery.enabled and not self.discovery.interfaces:
            lines.append(
                "discovery is off: [discovery] interfaces is empty, so nothing is announced or "
                'browsed; name the interfaces to use (e.g. interfaces = ["wlan0"]) to turn it on'
            )
        if not self.listen.addresses:
            lines.append("not listening: [listen] addresses is empty; this node only dials out")
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
        for name, section in _SECTIONS.items():
            values = getattr(self, name)
            out[name] = {key: _plain(getattr(values, key)) for key in _keys(section)}
        return out


def _plain(value: object) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, HostPort | WebSocketURL | Path):
        return str(value)
    return value


#: Section name -> its dataclass, in file order (``Config``'s fields but ``source``).
_SECTIONS: Final[Mapping[str, type]] = MappingProxyType(
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
        "control": ControlConfig,
        "log": LogConfig,
        "debug": DebugConfig,
    }
)


def _keys(section: type) -> dict[str, _Kind]:
    return {f.name: f.metadata[_KIND] for f in dataclasses.fields(section)}


# --- loading -----------------------------------------------------------------------------------

#: One layer of settings: (section, key) -> (typed value, where it came from).
_Layer = dict[tuple[str, str], tuple[Any, str]]


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] = MappingProxyType({}),
    overrides: Mapping[str, Any] = MappingProxyType({}),
) -> Config:
    """Build the ``Config``: defaults < TOML file < environment < ``overrides``.

    ``path`` is the ``--config`` file; without it ``env["FIELDSYNC_CONFIG"]`` names one; with
    neither only defaults, environment and overrides apply. The daemon passes ``os.environ``.
    """
    layers: _Layer = {}
    cwd = Path.cwd()
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV]).expanduser()
        where_path = f"config file {path} (from {CONFIG_ENV})"
    else:
        where_path = f"config file {path}"
    if path is not None:
        path = path if path.is_absolute() else cwd / path
        layers.update(_from_file(path, where_path))
    layers.update(_from_env(env, cwd))
    layers.update(_from_overrides(overrides, cwd))

    built: dict[str, Any] = {}
    for name, section in _SECTIONS.items():
        values = {key: value for (sec, key), (value, _) in layers.items() if sec == name}
        built[name] = section(**values)
    config = Config(**built, source=path)
    _cross_checks(config, {setting: origin for setting, (_, origin) in layers.items()})
    return config


def _cross_checks(config: Config, origins: Mapping[tuple[str, str], str]) -> None:
    def show(section: str, key: str) -> str:
        value = getattr(getattr(config, section), key)
        origin = origins.get((section, key), "default")
        return f"[{section}] {key} = {_show(value)} ({origin})"

    if config.sync.backoff_initial > config.sync.backoff_max:
        raise ConfigError(
            f"{show('sync', 'backoff_initial')} is larger than {show('sync', 'backoff_max')}: "
            f"the first retry delay must not exceed the longest one"
        )


def _from_file(path: Path, where: str) -> _Layer:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"{where} does not exist: create it (deploy/fieldsync.example.toml documents every "
            f"key) or leave out --config"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{where} is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigError(
            f"{where} is not readable by this user: check its owner and mode "
            f"(the service reads it as user fieldsync)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where} could not be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None

    sections = _SECTIONS
    out: _Layer = {}
    for name, table in document.items():
        if name not in sections:
            if isinstance(table, dict):
                raise ConfigError(
                    f"{where}: unknown section [{name}]{_did_you_mean(name, sections)}; "
                    f"known sections: {', '.join(f'[{s}]' for s in sections)}"
                )
            raise ConfigError(
                f"{where}: key {name} = {_show(table)} is outside any section; every setting "
                f"belongs under a [section] header{_section_hint(name, sections)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(
                f"{where}: {name} = {_show(table)}: expected a [{name}] section (a table)"
            )
        kinds = _keys(sections[name])
        for key, value in table.items():
            if key not in kinds:
                raise ConfigError(
                    f"{where}: [{name}] has no key {key!r}{_did_you_mean(key, kinds)}; "
                    f"known keys: {', '.join(kinds)}"
                )
            out[(name, key)] = (
                _convert(
                    kinds[key], value, path.parent, f"{where}: [{name}] {key} = {_show(value)}"
                ),
                where,
            )
    return out


def _from_env(env: Mapping[str, str], cwd: Path) -> _Layer:
    sections = _SECTIONS
    out: _Layer = {}
    for variable in sorted(env):
        if not variable.startswith(ENV_PREFIX):
            continue
        section, _, key = variable[len(ENV_PREFIX) :].partition("_")
        section = section.lower()
        if section not in sections:
            continue  # FIELDSYNC_HOME, FIELDSYNC_CONFIG, FIELDSYNC_PASSPHRASE ...: not settings
        key = key.lower()
        kinds = _keys(sections[section])
        if key not in kinds:
            known = ", ".join(f"{ENV_PREFIX}{section.upper()}_{k.upper()}" for k in kinds)
            raise ConfigError(
                f"environment variable {variable}: [{section}] has no key {key!r}"
                f"{_did_you_mean(key, kinds)}; known variables for [{section}]: {known}"
            )
        text = env[variable]
        where = f"environment variable {variable}={_show(text)} ([{section}] {key})"
        try:
            value = kinds[key].from_env(text)
        except _Invalid as exc:
            raise ConfigError(f"{where}: {exc}") from None
        out[(section, key)] = (_convert(kinds[key], value, cwd, where), f"from {variable}")
    return out


def _from_overrides(overrides: Mapping[str, Any], cwd: Path) -> _Layer:
    sections = _SECTIONS
    out: _Layer = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if section not in sections or key not in _keys(sections[section]):
            raise ConfigError(
                f'override {dotted!r} names no setting: expected "section.key" such as '
                f'"sync.max_concurrent"'
            )
        where = f"command-line override {dotted} = {_show(value)} ([{section}] {key})"
        kind = _keys(sections[section])[key]
        out[(section, key)] = (_convert(kind, value, cwd, where), "from the command line")
    return out


def _convert(kind: _Kind, value: object, base: Path, where: str) -> Any:
    try:
        return kind.from_value(value, base)
    except _Invalid as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _did_you_mean(word: str, choices: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _section_hint(key: str, sections: Mapping[str, type]) -> str:
    homes = [name for name, section in sections.items() if key in _keys(section)]
    return f" (it belongs in [{homes[0]}])" if len(homes) == 1 else ""


def _show(value: object) -> str:
    """A value as TOML-like text for messages, shortened."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
