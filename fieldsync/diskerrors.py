"""Disk trouble in words an operator can act on: full, read-only, failing, unopenable.

SQLite and the OS report a full or read-only disk in several ways (``ENOSPC``,
``SQLITE_FULL``, and on tmpfs or an SD card often just "disk I/O error" while growing the
WAL index), so the file system itself is asked what is wrong before anything is said.
Nothing already stored is lost in any of these cases: SQLite rolls the transaction back.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Final

from fieldsync.errors import FieldsyncError
from fieldsync.sqlite_tx import DB_ERRORS

#: sysexits.h EX_IOERR: the disk is full, read-only or failing (README "Exit codes").
EXIT_STORAGE: Final = 74
#: Below this much free space a failed write is put down to a full disk.
_NEARLY_FULL_BYTES: Final = 256 * 1024

_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 8, 10, 13, 14


class StorageUnavailable(FieldsyncError):
    """The disk holding the node is full, read-only or failing; nothing stored was lost."""

    exit_code = EXIT_STORAGE


def storage_problem(exc: BaseException, where: Path | None = None) -> StorageUnavailable | None:
    """A clear ``StorageUnavailable`` for a disk-related ``exc``; None for anything else.

    ``where`` is a file or directory on the affected disk (the node home), used to tell a
    full or read-only file system from a failing one.
    """
    if isinstance(exc, StorageUnavailable):
        return exc
    if isinstance(exc, DB_ERRORS):
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code not in (_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN):
            return None
        kind = {_SQLITE_FULL: "full", _SQLITE_READONLY: "read-only"}.get(code, "io")
    elif isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            kind = "full"
        elif exc.errno == errno.EROFS:
            kind = "read-only"
        elif exc.errno == errno.EIO:
            kind = "io"
        else:
            return None
        where = where or (Path(exc.filename) if isinstance(exc.filename, str) else None)
    else:
        return None
    return StorageUnavailable(_message(_diagnose(kind, where), where, exc))


def _diagnose(kind: str, where: Path | None) -> str:
    """Ask the file system: a vague I/O error on a full or read-only disk is named so."""
    if where is None:
        return kind
    probe = where if where.exists() else where.parent
    try:
        stats = os.statvfs(probe)
    except OSError:
        return kind
    if stats.f_flag & os.ST_RDONLY:
        return "read-only"
    if stats.f_bavail * stats.f_frsize < _NEARLY_FULL_BYTES:
        return "full"
    return kind


def _message(kind: str, where: Path | None, exc: BaseException) -> str:
    place = f" holding {where}" if where is not None else ""
    cause = getattr(exc, "strerror", None) or str(exc)
    if kind == "full":
        return (
            f"the disk{place} is full ({cause}): free some space (or raise the disk's quota)"
            " and try again; nothing already stored was lost"
        )
    if kind == "read-only":
        return (
            f"the disk{place} is read-only ({cause}): remount it read-write, or check the SD"
            " card or USB disk, which the kernel makes read-only after errors; nothing already"
            " stored was lost"
        )
    return (
        f"the disk{place} failed to read or write ({cause}): the storage device may be"
        " failing; copy the node home elsewhere (`fieldsync bundle export`) and check the"
        " card or disk"
    )
