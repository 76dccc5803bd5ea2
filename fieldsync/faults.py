"""Fault injection for the supervision tests; off unless ``[debug] inject_faults`` names some.

Each entry is ``COMPONENT`` (fail every time it runs) or ``COMPONENT:N`` (fail its first N
runs, then work). The fault is raised where a real one would surface: in the component's
loop on the event loop, and for ``store`` on the store thread itself. Nothing else in the
daemon changes, so the tests see exactly what an operator would: the log, ``status`` and the
exit code. Never set this on a node in the field.

``crash_point(name)`` marks a step of a crash-safe file change (a passphrase change, an HQ
database rekey): when the environment variable ``FIELDSYNC_CRASH_AT`` names that point, the
process sends itself SIGKILL there, so the tests see what a power cut or ``kill -9`` at that
exact step leaves on disk. Unset, it does nothing.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable
from typing import Final

#: Components of the daemon a fault can be injected into (``fieldsync.daemon.FieldDaemon``).
COMPONENTS: Final = ("control", "discovery", "janitor", "scheduler", "store", "watcher")
#: Environment variable naming the ``crash_point`` at which the process kills itself (tests).
CRASH_AT_VARIABLE: Final = "FIELDSYNC_CRASH_AT"


class InjectedFault(RuntimeError):
    """A failure asked for by ``[debug] inject_faults`` (tests only)."""


def parse_fault(text: str) -> str:
    """Check one ``COMPONENT`` or ``COMPONENT:N`` entry; ``ValueError`` says what is wrong."""
    name, sep, count = text.strip().partition(":")
    if name not in COMPONENTS:
        raise ValueError(f"unknown component {name!r}; one of {', '.join(COMPONENTS)}")
    if sep and not (count.isdigit() and count.isascii() and int(count) > 0):
        raise ValueError(f"{text!r}: the count after ':' must be a whole number > 0")
    return f"{name}:{int(count)}" if sep else name


class Faults:
    """Which components still have to fail; safe to call from the store thread too."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        #: component -> failures still to inject (None: every time).
        self._left: dict[str, int | None] = {}
        for entry in entries:
            name, _, count = parse_fault(entry).partition(":")
            self._left[name] = int(count) if count else None
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._left)

    def check(self, component: str) -> None:
        """Raise ``InjectedFault`` if a failure of ``component`` is due."""
        if component not in self._left:
            return
        with self._lock:
            left = self._left[component]
            if left == 0:
                return
            if left is not None:
                self._left[component] = left - 1
        raise InjectedFault(f"injected fault in {component} ([debug] inject_faults)")


def crash_point(name: str) -> None:
    """SIGKILL this process here if ``FIELDSYNC_CRASH_AT`` is ``name`` (tests only).

    SIGKILL rather than an exception: no ``finally`` block, buffered write or atexit handler
    may run, exactly as with ``kill -9`` or a power cut."""
    if os.environ.get(CRASH_AT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
