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
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
