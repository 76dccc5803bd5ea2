"""One supervisor for the daemon's background components: nothing dies silently.

Every long-running task of the daemon (janitor, scheduler, discovery, control API, the
local-change watcher, the store-thread probe) runs as a *component*: a coroutine that is
meant to run until cancelled. When one raises (or returns), the supervisor

- logs the cause with its traceback, naming the component;
- restarts it after an exponential back-off, and shows it as ``restarting`` in ``report()``
  (so ``fieldsync status`` lists it as degraded) until it runs again;
- gives up after ``max_failures`` failures in a row when its policy has a limit: the
  component is ``failed``, ``fatal`` is set and the daemon stops with a non-zero exit code,
  so systemd (``Restart=on-failure``) starts it afresh. A component whose failures a restart
  of the whole daemon cannot fix (the control API, discovery on a missing interface) has no
  limit and keeps retrying at ``backoff_max``.

Consecutive failures are forgotten once a component has run for ``stable_seconds``.
Failures that ``explain`` recognises as the environment's (a full or read-only disk) are
logged in its words without a traceback and never end the daemon: a restart would not free
the disk, and a degraded node still relays what it holds and answers ``status``.
``stop()`` cancels everything and never raises, so the daemon's cleanup always runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fieldsync.errors import FieldsyncError

log = logging.getLogger(__name__)

Run = Callable[[], Coroutine[Any, Any, None]]


class ComponentExited(Exception):
    """A component's coroutine returned although it is meant to run until cancelled."""


@dataclass(frozen=True)
class Policy:
    #: Failures in a row before the daemon gives up on the component; None = never give up.
    max_failures: int | None = 5
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    #: A run this long without failing forgets earlier failures.
    stable_seconds: float = 60.0

    def backoff(self, failures: int) -> float:
        return float(min(self.backoff_max, self.backoff_initial * 2 ** (failures - 1)))


#: Never fatal: restarting the whole daemon would not help, and syncing matters more.
KEEP_TRYING = Policy(max_failures=None)


@dataclass
class ComponentState:
    name: str
    policy: Policy
    #: ``running``, ``restarting`` (waiting out a back-off), ``failed`` (gave up), ``stopped``.
    state: str = "running"
    failures_in_a_row: int = 0
    restarts: int = 0
    last_error: str | None = None
    #: Wall-clock time of the last failure (for people; the supervisor itself uses monotonic).
    last_failure: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "restarts": self.restarts,
            "failures_in_a_row": self.failures_in_a_row,
            "last_error": self.last_error,
            "last_failure": self.last_failure,
        }


@dataclass
class Supervisor:
    clock: Callable[[], float] = time.monotonic
    #: A clear message for failures caused by the environment (see the module docstring).
    explain: Callable[[Exception], str | None] = lambda exc: None
    components: dict[str, ComponentState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.fatal = asyncio.Event()
        self.fatal_reason: str | None = None
        self._unhealthy: dict[str, str] = {}

    def start(self, name: str, run: Run, policy: Policy | None = None) -> None:
        """Run ``run()`` as component ``name`` until ``stop()``, restarting it on failure."""
        if name in self._tasks:
            raise ValueError(f"component {name!r} is already supervised")
        state = ComponentState(name, policy or Policy())
        self.components[name] = state
        self._tasks[name] = asyncio.create_task(self._keep(state, run), name=f"fieldsync-{name}")

    def set_unhealthy(self, name: str, reason: str | None) -> None:
        """A component reports trouble it survives (a slow store), or its end (None)."""
        if reason is None:
            self._unhealthy.pop(name, None)
        else:
            self._unhealthy[name] = reason

    @property
    def degraded(self) -> list[str]:
        """Components not running normally right now, by name."""
        names = {n for n, s in self.components.items() if s.state != "running"}
        return sorted(names | set(self._unhealthy))

    @property
    def healthy(self) -> bool:
        """True while the watchdog may ping: nothing failed for good, nothing unresponsive.

        A component waiting out a back-off is degraded but still healthy here: it either
        recovers or exhausts its failures and stops the daemon, well within WatchdogSec.
        """
        return not self.fatal.is_set() and not self._unhealthy

    def report(self) -> dict[str, dict[str, object]]:
        out = {name: state.as_dict() for name, state in sorted(self.components.items())}
        for name, reason in self._unhealthy.items():
            entry = out.setdefault(name, {"state": "running"})
            entry["unhealthy"] = reason
        return out

    async def _keep(self, state: ComponentState, run: Run) -> None:
        while True:
            state.state = "running"
            started = self.clock()
            try:
                await run()
                raise ComponentExited("stopped by itself")  # noqa: TRY301 - same handling
            except asyncio.CancelledError:
                state.state = "stopped"
                raise
            except Exception as exc:
                if self.clock() - started >= state.policy.stable_seconds:
                    state.failures_in_a_row = 0
                state.failures_in_a_row += 1
                state.last_failure = time.time()
                explained = self.explain(exc)
                if explained is not None:
                    state.last_error = explained
                    await self._wait_out(state, state.policy.backoff_max, explained)
                    continue
                state.last_error = f"{type(exc).__name__}: {exc}"
                limit = state.policy.max_failures
                if limit is not None and state.failures_in_a_row >= limit:
                    state.state = "failed"
                    self.fatal_reason = (
                        f"{state.name} failed {state.failures_in_a_row} times in a row"
                        f" (last: {state.last_error})"
                    )
                    log.critical(
                        "%s; stopping the daemon",
                        self.fatal_reason,
                        exc_info=None if isinstance(exc, FieldsyncError) else exc,
                    )
                    self.fatal.set()
                    return
                delay = state.policy.backoff(state.failures_in_a_row)
                log.error(  # noqa: TRY400 - a traceback only where it helps (below)
                    "%s failed (%s); restarting in %.1f s (failure %d in a row)",
                    state.name,
                    state.last_error,
                    delay,
                    state.failures_in_a_row,
                    # A typed error says what is wrong in its message; anything else is a
                    # bug, and its traceback is what a maintainer needs.
                    exc_info=None if isinstance(exc, FieldsyncError) else exc,
                )
                await self._restart_after(state, delay)

    async def _wait_out(self, state: ComponentState, delay: float, explained: str) -> None:
        log.error("%s failed: %s; retrying in %.1f s", state.name, explained, delay)
        await self._restart_after(state, delay)

    async def _restart_after(self, state: ComponentState, delay: float) -> None:
        state.state = "restarting"
        await asyncio.sleep(delay)
        state.restarts += 1
        log.info("%s: restarting", state.name)

    async def stop(self) -> None:
        """Cancel every component and wait for them; never raises (cleanup must go on)."""
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        # return_exceptions: one component's error must not skip waiting for the others.
        await asyncio.gather(*tasks, return_exceptions=True)
        for state in self.components.values():
            if state.state != "failed":
                state.state = "stopped"
