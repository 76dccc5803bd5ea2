"""What the machine running the tests lacks, and the one rule for it: skip locally, fail in CI.

Some tests need something from the machine: root and ``ip`` (network namespaces), systemd's
tools, libfaketime, a browser. On a developer's machine without it such a test is skipped
with a reason that says what to install. With ``FIELDSYNC_REQUIRE_ALL=1`` (``.ci/run`` sets
it) the same test fails instead, naming what is missing: a CI run that skipped a test is not
green.

Tests declare what they need with a marker (``netns``, ``root``, ``systemd``, ``faketime``,
``browser``; checked before any fixture runs, see ``tests/conftest.py``) or, for a need
found while running, by calling :func:`missing`. Soak tests (``slow``, ``FIELDSYNC_SOAK=1``)
are opt-in by design, not an environment skip, and stay skipped under this variable.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Callable
from typing import NoReturn

import pytest

#: Set to "1" to turn every environment skip into a failure.
REQUIRE_ALL = "FIELDSYNC_REQUIRE_ALL"

#: Where Debian/Ubuntu (multiarch) and other distributions put libfaketime.
_LIBFAKETIME_GLOBS = (
    "/usr/lib/*/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
    "/usr/lib64/faketime/libfaketime.so.1",
)
#: Browser executables the browser tests can drive (Debian: chromium; Ubuntu: chromium-browser).
_BROWSERS = ("chromium", "chromium-browser")


def everything_required() -> bool:
    return os.environ.get(REQUIRE_ALL) == "1"


def missing(what: str) -> NoReturn:
    """Stop the running test because the machine lacks ``what``: a skip, or under
    ``FIELDSYNC_REQUIRE_ALL=1`` a failure."""
    if everything_required():
        pytest.fail(f"{what} ({REQUIRE_ALL}=1: a missing environment fails)", pytrace=False)
    pytest.skip(what)


def missing_root() -> str | None:
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None or geteuid() != 0:
        return "needs root"
    return None


def missing_command(name: str, package: str) -> str | None:
    if shutil.which(name) is None:
        return f"needs `{name}` on PATH (Debian: apt-get install {package})"
    return None


def missing_netns() -> str | None:
    lacking = [
        reason
        for reason in (missing_root(), missing_command("ip", "iproute2"))
        if reason is not None
    ]
    return "netns test: " + ", ".join(lacking) if lacking else None


def libfaketime_path() -> str | None:
    """The libfaketime library to preload (Debian package ``faketime``), if installed."""
    for pattern in _LIBFAKETIME_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def missing_libfaketime() -> str | None:
    if libfaketime_path() is None:
        return "needs libfaketime (Debian: apt-get install faketime)"
    return None


def browser_path() -> str | None:
    for name in _BROWSERS:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def missing_browser() -> str | None:
    if browser_path() is None:
        return "needs a browser: `chromium` on PATH (Debian: apt-get install chromium)"
    # Selenium drives it through the machine's driver (it must never download one).
    return missing_command("chromedriver", "chromium-driver")


def missing_loop_mount() -> str | None:
    """Root, loop devices (/dev/loop-control) and the ext4 tools: to mount a disk image."""
    lacking = [
        reason
        for reason in (
            missing_root(),
            missing_command("mkfs.ext4", "e2fsprogs"),
            missing_command("mount", "mount"),
            None if os.path.exists("/dev/loop-control") else "needs loop devices (loop module)",
        )
        if reason is not None
    ]
    return "loop-mount test: " + ", ".join(lacking) if lacking else None


#: Marker name -> what the machine lacks for it (None: nothing).
ENVIRONMENT_MARKERS: dict[str, Callable[[], str | None]] = {
    "netns": missing_netns,
    "root": missing_root,
    "systemd": lambda: missing_command("systemd-analyze", "systemd"),
    "faketime": missing_libfaketime,
    "browser": missing_browser,
    "loopmount": missing_loop_mount,
}
