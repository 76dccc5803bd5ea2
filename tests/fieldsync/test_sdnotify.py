"""sd_notify against a real AF_UNIX datagram socket, as systemd listens for it."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldsync import sdnotify


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket at a path in tmp, named by NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


@pytest.fixture
def abstract_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """The same in the abstract namespace: NOTIFY_SOCKET=@name."""
    name = f"fieldsync-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield sock


def test_states_arrive_at_a_path_socket(receiver: socket.socket) -> None:
    assert sdnotify.ready() is True
    assert receiver.recv(4096) == b"READY=1"
    assert sdnotify.status("syncing with 2 peers") is True
    assert receiver.recv(4096) == b"STATUS=syncing with 2 peers"
    assert sdnotify.watchdog_ping() is True
    assert receiver.recv(4096) == b"WATCHDOG=1"
    assert sdnotify.stopping() is True
    assert receiver.recv(4096) == b"STOPPING=1"
    assert sdnotify.notify("RELOADING=1") is True
    assert receiver.recv(4096) == b"RELOADING=1"


def test_states_arrive_at_an_abstract_socket(abstract_receiver: socket.socket) -> None:
    assert sdnotify.ready("listening on 0.0.0.0:7341") is True
    assert abstract_receiver.recv(4096) == b"READY=1\nSTATUS=listening on 0.0.0.0:7341"
    assert sdnotify.status("x") is True
    assert abstract_receiver.recv(4096) == b"STATUS=x"
    assert sdnotify.watchdog_ping() is True
    assert abstract_receiver.recv(4096) == b"WATCHDOG=1"


def test_status_is_one_line(receiver: socket.socket) -> None:
    sdnotify.status("two\nlines\n\nWATCHDOG=1")
    assert receiver.recv(4096) == b"STATUS=two lines WATCHDOG=1"


def test_unset_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.watchdog_ping() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.status("x") is False


def test_dead_socket_never_raises_and_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sdnotify, "_warned", False)
    caplog.set_level(logging.DEBUG, logger="fieldsync.sdnotify")
    # A socket file nobody listens on any more (the receiver closed), then no file at all.
    path = tmp_path / "dead"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "missing"))
    assert sdnotify.watchdog_ping() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "@fieldsync-test-nobody-" + secrets.token_hex(8))
    assert sdnotify.stopping() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "/" + "x" * 200)  # longer than sun_path
    assert sdnotify.status("x") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")  # newer systemd; not supported here
    assert sdnotify.status("x") is False
    levels = [r.levelno for r in caplog.records if r.name == "fieldsync.sdnotify"]
    assert levels == [logging.WARNING] + [logging.DEBUG] * 4


def test_full_receiver_does_not_block(receiver: socket.socket) -> None:
    """A receiver that never reads fills up; sends then fail fast instead of blocking."""
    results = {sdnotify.status("x" * 1024) for _ in range(5000)}
    assert False in results  # the queue filled and the send was dropped, not waited for
    assert True in results


async def test_safe_on_the_event_loop(receiver: socket.socket) -> None:
    """No blocking socket call on the loop (the suite's blockbuster fixture raises on one)."""
    assert sdnotify.ready() is True
    assert sdnotify.watchdog_ping() is True
    assert await asyncio.to_thread(receiver.recv, 4096) == b"READY=1"
    assert await asyncio.to_thread(receiver.recv, 4096) == b"WATCHDOG=1"


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")  # WatchdogSec=60
    assert sdnotify.watchdog_interval() == 30.0  # ping at half the interval
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", "x")
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("0", "-5", "", "soon"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert sdnotify.watchdog_interval() is None
