"""A process about to write the store says so, and the daemon lets it go first (perf S11).

A ``fieldsync report add`` runs in its own process and needs SQLite's write lock, which a
daemon storing a sync flight takes again right after each bounded slice: the writer, polling
for the lock, can lose that race several slices in a row. So a writer holds a shared
``flock`` on a small file next to the store (``store.intent``) while it waits for the lock and
writes; the daemon, between two bulk slices, tests for it (an exclusive non-blocking
``flock``) and, while some writer holds it, waits before its next slice - at most
``MAX_WAIT_SECONDS`` each time, so a writer that never stops cannot stall a sync.

The file is empty and says nothing but that the store exists; it is created 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

#: Longest the daemon defers one bulk slice for announced writers (a report commit takes a
#: few ms; the bound keeps a sync moving under a stream of them).
MAX_WAIT_SECONDS = 0.025
#: How often the daemon tests whether the announced writers are done.
POLL_SECONDS = 0.0005
#: Polls at most in one wait (the sleeps may run long on a loaded machine: time bounds too).
MAX_POLLS = int(MAX_WAIT_SECONDS / POLL_SECONDS)


def intent_file(store_path: Path) -> Path:
    """``store.intent`` beside ``store.db``."""
    return store_path.with_suffix(".intent")


def _open(store_path: Path) -> int:
    return os.open(intent_file(store_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


@contextlib.contextmanager
def announced(store_path: Path) -> Iterator[None]:
    """Hold the write intent for the block (blocking: a writer's own thread)."""
    fd = _open(store_path)
    try:
        # Blocks only for the instant a daemon's probe holds the lock exclusively.
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


class IntentProbe:
    """The daemon's side: whether some other process has announced a write right now."""

    def __init__(self, store_path: Path) -> None:
        self._fd: int | None = _open(store_path)

    def writer_waiting(self) -> bool:
        """Non-blocking: True while any process holds the intent."""
        if self._fd is None:
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        return False

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
