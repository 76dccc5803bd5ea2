"""Suite-wide marker policy.

- ``@pytest.mark.slow``: long soak tests, skipped unless ``FIELDSYNC_SOAK=1``.
- ``@pytest.mark.netns``: tests that build network namespaces; skipped unless running as
  root with ``ip`` (iproute2) on PATH.

- Every ``async def`` test runs under blockbuster (as python-zeroconf's tests do): any
  blocking call made on the running event loop - file I/O, ``time.sleep``, a blocking
  socket, SQLite - raises ``BlockingError`` and fails the test. Shipped code moves such
  work to the store thread or ``asyncio.to_thread``; tests do the same.

The skip reasons show in the ``-ra`` summary, so a skipped integration run is never silent.
"""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx


def _slow_skip_reason() -> str | None:
    if os.environ.get("FIELDSYNC_SOAK") == "1":
        return None
    return "slow soak test: set FIELDSYNC_SOAK=1 to run"


def _netns_skip_reason() -> str | None:
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None or geteuid() != 0:
        return "netns test: needs root (ip netns add)"
    if shutil.which("ip") is None:
        return "netns test: needs `ip` from iproute2 on PATH"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons = {"slow": _slow_skip_reason(), "netns": _netns_skip_reason()}
    for item in items:
        for marker, reason in reasons.items():
            if reason is not None and item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """Fail an async test if anything blocks its event loop (sync tests have no loop)."""
    if not inspect.iscoroutinefunction(getattr(request.node, "function", None)):
        yield None
        return
    with blockbuster_ctx() as detector:
        yield detector
