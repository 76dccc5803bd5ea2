"""systemd readiness and watchdog: one datagram to ``$NOTIFY_SOCKET`` (sd_notify(3)).

Outside systemd (``NOTIFY_SOCKET`` unset) every call is a no-op. A send never blocks (the
socket is non-blocking, so it is safe on the event loop) and never raises into the daemon: the
first failure is logged as a warning, later ones at debug level. ``Type=notify`` units wait for
``ready()``; with ``WatchdogSec=`` the daemon calls ``watchdog_ping()`` every
``watchdog_interval()`` seconds from a task on its event loop, so a stuck loop gets restarted.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)
_warned = False  # the first failure is a warning, later ones are debug noise


def notify(state: str) -> bool:
    """Send ``state`` (``"READY=1"``, newline-separated assignments); True if it was sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.connect(address)
            sock.send(state.encode("utf-8", "replace"))
    except OSError as exc:
        global _warned
        level = logging.DEBUG if _warned else logging.WARNING
        _warned = True
        log.log(level, "sd_notify to %r failed (%s); carrying on without it", address, exc)
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    return notify("READY=1" if status_text is None else f"READY=1\nSTATUS={_line(status_text)}")


def stopping() -> bool:
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """One line shown by ``systemctl status``."""
    return notify(f"STATUS={_line(text)}")


def watchdog_ping() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None if not watched."""
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
        pid = int(os.environ.get("WATCHDOG_PID", str(os.getpid())))
    except ValueError:
        return None
    if usec <= 0 or pid != os.getpid():
        return None
    return usec / 2_000_000


def _line(text: str) -> str:
    return " ".join(text.split())
