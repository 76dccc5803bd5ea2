"""Give freed heap memory back to the operating system (glibc ``malloc_trim``).

After a bulk receive, the store thread's and the event loop's arenas hold megabytes of
freed blocks (decoded frames, batches, SQLite pages): glibc keeps them for reuse, so a
relay on a Raspberry Pi would stay at its peak for good. ``malloc_trim(0)`` returns the
free pages of every arena. Elsewhere (musl, macOS) there is no such call and nothing is done.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The interpreter's own symbols include its C library's (no find_library: that
        # would start ldconfig in a subprocess).
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def available() -> bool:
    """True where freed memory can be returned (glibc)."""
    return _malloc_trim() is not None


def release_free_memory() -> bool:
    """Return the free pages of every malloc arena to the system; True if any were."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
