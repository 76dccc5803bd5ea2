"""One daemon per node home: an ``fcntl`` lock on ``HOME/daemon.lock``.

Two daemons on one home would serve the same store and keys twice, announce the node twice
and race each other's janitor. The lock is held for the daemon's lifetime and released by
the kernel however the process ends (even ``kill -9``), so a crash never leaves a stale lock.

The file also records the daemon's pid and control socket, so ``fieldsync status`` finds
the running daemon of a home whichever config file started it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Final

from fieldsync.errors import FieldsyncError, NotInitialised

LOCK_FILE: Final = "daemon.lock"
#: sysexits.h EX_TEMPFAIL: another daemon holds the home; trying later may succeed.
EXIT_ALREADY_RUNNING: Final = 75


class DaemonAlreadyRunning(FieldsyncError):
    """Another daemon holds this node home (README "Exit codes")."""

    exit_code = EXIT_ALREADY_RUNNING


class HomeLock:
    """Held from ``acquire`` until ``release`` (blocking file calls: use a thread)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, home: Path, control_socket: Path) -> HomeLock:
        if not home.is_dir():
            raise NotInitialised(
                f"{home} is not a fieldsync node; run `fieldsync --home {home} init`"
            )
        path = home / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(path).get("pid", "unknown")
            os.close(fd)
            raise DaemonAlreadyRunning(
                f"another fieldsync daemon (pid {holder}) is already running on {home}; stop it"
                " first (`systemctl stop fieldsync` or `kill "
                f"{holder}`): two daemons must never share one node home"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        record = {"pid": os.getpid(), "control_socket": str(control_socket)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no stale pid or socket for `status` to find
            os.close(fd)  # closing drops the lock


def recorded_control_socket(home: Path) -> Path | None:
    """The control socket of the daemon running on ``home``, as it recorded it, if any."""
    socket = _read(home / LOCK_FILE).get("control_socket")
    return Path(socket) if isinstance(socket, str) and socket else None


def _read(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_bytes() or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
