"""Suite-wide marker policy.

- ``@pytest.mark.slow``: long soak tests, skipped unless ``FIELDSYNC_SOAK=1``. They are opt-in
  by design: not an environment skip.
- Environment markers (``netns``, ``root``, ``systemd``, ``faketime``, ``browser``,
  ``loopmount``): the test needs that from the machine. Without it the test is skipped with
  what to install, or fails under ``FIELDSYNC_REQUIRE_ALL=1`` (CI); see
  ``tests/environment.py``.

- Every ``async def`` test runs under blockbuster (as python-zeroconf's tests do): any
  blocking call made on the running event loop - file I/O, ``time.sleep``, a blocking
  socket, SQLite - raises ``BlockingError`` and fails the test. Shipped code moves such
  work to the store thread or ``asyncio.to_thread``; tests do the same.

The skip reasons show in the ``-ra`` summary, so a skipped run is never silent.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from tests.environment import ENVIRONMENT_MARKERS, REQUIRE_ALL, everything_required, missing


def _slow_skip_reason() -> str | None:
    if os.environ.get("FIELDSYNC_SOAK") == "1":
        return None
    return "slow soak test: set FIELDSYNC_SOAK=1 to run"


def pytest_report_header(config: pytest.Config) -> list[str]:
    lacking = [
        f"{marker}: {reason}"
        for marker, check in ENVIRONMENT_MARKERS.items()
        if (reason := check()) is not None
    ]
    mode = "fail" if everything_required() else "skip"
    return [
        f"environment ({REQUIRE_ALL}: missing means {mode}): "
        + ("; ".join(lacking) or "all present")
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _slow_skip_reason()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture: a test whose environment is missing is skipped, or fails in CI."""
    lacking = [
        reason
        for marker, check in ENVIRONMENT_MARKERS.items()
        if item.get_closest_marker(marker) is not None and (reason := check()) is not None
    ]
    if lacking:
        missing("; ".join(lacking))


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """Fail an async test if anything blocks its event loop (sync tests have no loop)."""
    if not inspect.iscoroutinefunction(getattr(request.node, "function", None)):
        yield None
        return
    with blockbuster_ctx() as detector:
        yield detector
