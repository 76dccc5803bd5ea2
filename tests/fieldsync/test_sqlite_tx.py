"""The one transaction helper (fieldsync/sqlite_tx.py) on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fieldsync.sqlite_tx import immediate_transaction


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    connection.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    return connection


def rows(conn: sqlite3.Connection) -> list[int]:
    return [x for (x,) in conn.execute("SELECT x FROM t ORDER BY x")]


def in_transaction(conn: sqlite3.Connection) -> bool:
    """A call, so the type checker does not narrow the property across statements."""
    return conn.in_transaction


def test_commits_on_success(conn: sqlite3.Connection, tmp_path: Path) -> None:
    with immediate_transaction(conn):
        conn.execute("INSERT INTO t VALUES (1), (2)")
        assert in_transaction(conn)
    assert not in_transaction(conn)
    other = sqlite3.connect(tmp_path / "t.db")  # committed: visible to another connection
    assert [x for (x,) in other.execute("SELECT x FROM t")] == [1, 2]


def test_rolls_back_on_any_exception(conn: sqlite3.Connection) -> None:
    with pytest.raises(KeyboardInterrupt), immediate_transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        raise KeyboardInterrupt
    assert rows(conn) == []
    assert not conn.in_transaction


def test_the_real_error_survives_when_sqlite_already_rolled_back(
    conn: sqlite3.Connection,
) -> None:
    # SQLite ends the transaction itself after some errors (a full disk, an I/O error); a
    # ROLLBACK then would fail with "no transaction is active" and hide the cause.
    with pytest.raises(ValueError, match="the cause"), immediate_transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("ROLLBACK")  # as SQLite does on SQLITE_FULL
        raise ValueError("the cause")
    assert rows(conn) == []


def test_takes_the_write_lock_at_once(conn: sqlite3.Connection, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None, timeout=0)
    with immediate_transaction(conn), pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")
