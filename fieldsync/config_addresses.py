"""Network addresses in the configuration: endpoints, WebSocket URLs, interfaces, DNS-SD types.

Each parser takes the text a user wrote and returns a canonical typed value, or raises
``ValueError`` saying what is wrong and what is expected; ``config_schema`` turns that into a
``ConfigError`` naming where the value came from. The CLI and the daemon parse addresses
given on the command line with the same functions (one copy of every rule).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit


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
HOST_PORT_EXAMPLE = "HOST:PORT such as 192.168.1.20:23817 or [fe80::1%wlan0]:23817"


def check_host(host: str) -> str:
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
            raise ValueError(f"expected {HOST_PORT_EXAMPLE}")
        port_text = rest[1:]
        if ":" not in host:
            raise ValueError("brackets are only for IPv6 addresses")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected {HOST_PORT_EXAMPLE}")
        if ":" in host:
            raise ValueError("put an IPv6 address in brackets: [::1]:23817")
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port {port} is out of range {low}–65535")
    return HostPort(check_host(host), port)


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
    host = check_host(parts.hostname)
    return WebSocketURL(text, host, port or (443 if secure else 80), secure)


def parse_peer(text: str) -> Peer:
    """A static peer: ``HOST:PORT`` (raw TCP) or a ``ws://`` / ``wss://`` URL."""
    if "://" in text:
        return parse_websocket_url(text)
    peer = parse_host_port(text)
    if is_ip(peer.host) and ipaddress.ip_address(peer.host).is_unspecified:
        raise ValueError(f"{peer.host} is not an address one can connect to")
    return peer


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_interface(text: str) -> str:
    text = text.strip()
    if text.lower() in _ALL_INTERFACES:
        raise ValueError(
            "name each interface (wlan0) or address (192.168.4.1); fieldsync never "
            "multicasts on all interfaces"
        )
    if is_ip(text):
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


def check_service_type(value: str) -> str:
    """A DNS-SD service type in its canonical form ``_name._tcp.local.``; ``ValueError`` if
    it is none (the name is at most 15 characters, RFC 6335)."""
    name = value.strip().lower()  # DNS names are case-insensitive; zeroconf wants lowercase
    name = name.removesuffix(".")
    name = name.removesuffix(".local")
    if not _SERVICE_TYPE.fullmatch(name):
        raise ValueError(f"{value!r} is not a DNS-SD service type")
    return f"{name}.local."
