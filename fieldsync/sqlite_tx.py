"""The one transaction helper for every SQLite database of fieldsync (store, HQ).

``BEGIN IMMEDIATE`` takes the write lock at the start, so a transaction never fails half-way
for want of it; ``COMMIT`` is durable under ``synchronous=FULL``. On any exception the
transaction is rolled back - unless SQLite already did so itself (it does after a full disk
or an I/O error), in which case a second ROLLBACK would fail with "no transaction is
active" and hide the real error.

Use it directly on the connection, not through sqlite-utils' write helpers, which commit on
their own and would end the transaction early.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlcipher3

#: Exceptions of either SQLite binding: the stdlib's, and sqlcipher3's (the encrypted store
#: and hq.db, ``fieldsync.cipher_db``), whose classes are its own.
DB_ERRORS = (sqlite3.Error, sqlcipher3.Error)

#: How often a writer retries for the write lock while another connection holds it.
LOCK_POLL_SECONDS = 0.0005


def begin_polling(conn: sqlite3.Connection, timeout: float) -> None:
    """``BEGIN IMMEDIATE``, retrying every ``LOCK_POLL_SECONDS`` for up to ``timeout`` s.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25... 100 ms between attempts:
    behind a daemon committing short transactions back to back it can wait tens of ms for
    a lock that is free half the time (a ``report add`` during a bulk sync, perf S11).
    ``busy_timeout`` is off during the attempts and set to ``timeout`` again afterwards.
    """
    deadline = time.monotonic() + timeout
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except DB_ERRORS as exc:
                if (
                    getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY
                    or time.monotonic() >= deadline
                ):
                    raise
                time.sleep(LOCK_POLL_SECONDS)
            else:
                return
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")


@contextmanager
def immediate_transaction(
    conn: sqlite3.Connection, *, lock_timeout: float | None = None
) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on any exception.

    ``lock_timeout``: wait for the write lock by polling (``begin_polling``), not through
    SQLite's busy handler."""
    if lock_timeout is None:
        conn.execute("BEGIN IMMEDIATE")
    else:
        begin_polling(conn, lock_timeout)
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
