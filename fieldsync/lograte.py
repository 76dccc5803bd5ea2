"""Rate-limited logging: repetitive lines become a counter summarised once per interval.

An outsider can open thousands of connections a minute, and each failed handshake is worth a
line to an operator only the first few times. ``QuietLog`` writes at most ``burst`` lines of
each kind per ``interval`` and counts the rest; when the interval is over it writes one
summary line ("… and 23,412 more like this in the last 60 s"). Log volume under attack is
therefore bounded by (kinds × (burst + 1)) lines per interval, whatever the attack rate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Window:
    started: float
    written: int = 0
    suppressed: int = 0
    level: int = logging.INFO


class QuietLog:
    """At most ``burst`` lines per ``kind`` and ``interval``; the rest counted, then summarised."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        burst: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._summary_due: asyncio.TimerHandle | None = None

    def log(self, kind: str, level: int, message: str, *args: object) -> None:
        """Write ``message % args`` unless ``kind`` already used its lines this interval."""
        now = self._clock()
        window = self._windows.get(kind)
        if window is None or now - window.started >= self.interval:
            if window is not None:
                self._summarise(kind, window, now)
            window = self._windows[kind] = _Window(now)
        if window.written < self.burst:
            window.written += 1
            self._logger.log(level, message, *args)
            return
        window.suppressed += 1
        window.level = max(window.level, level)
        self._schedule_summary()

    def flush(self) -> None:
        """Write the summaries of every interval that is over."""
        self._flush(force=False)

    def close(self) -> None:
        """Write every pending summary now (the daemon is stopping)."""
        if self._summary_due is not None:
            self._summary_due.cancel()
            self._summary_due = None
        self._flush(force=True)

    def _flush(self, *, force: bool) -> None:
        now = self._clock()
        for kind, window in list(self._windows.items()):
            if force or now - window.started >= self.interval:
                self._summarise(kind, window, now)
                del self._windows[kind]

    def _summarise(self, kind: str, window: _Window, now: float) -> None:
        if window.suppressed:
            self._logger.log(
                window.level,
                "%s: %d more like this in the last %.0f s (at most %d lines a kind per %.0f s)",
                kind,
                window.suppressed,
                now - window.started,
                self.burst,
                self.interval,
            )
            window.suppressed = 0

    def _schedule_summary(self) -> None:
        """The summary must come even if the attack stops: a timer, once per interval."""
        if self._summary_due is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test): the next ``log`` or ``flush`` writes it

        def due() -> None:
            self._summary_due = None
            self._flush(force=False)
            if any(w.suppressed for w in self._windows.values()):
                self._schedule_summary()

        self._summary_due = loop.call_later(self.interval, due)
