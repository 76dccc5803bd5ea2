"""The control API's server (its own thread, on a real unix socket), read by the real client
and by raw sockets for what the client never sends: unknown resources, other methods,
garbage, oversized request heads, a provider that fails, a client that goes away or is slow."""

from __future__ import annotations

import asyncio
import json
import stat
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldsync.control import MAX_REQUEST_HEAD, ControlServer, LoopView
from fieldsync.control_client import request


def _status() -> dict[str, Any]:
    return {"daemon": True, "items": 3, "name": "relay é"}


def _peers() -> dict[str, Any]:
    return {"peers": [{"address": "192.0.2.1:7342"}]}


def _broken() -> dict[str, Any]:
    raise RuntimeError("the store went away")


@pytest.fixture
def socket_path() -> Iterator[Path]:
    # A short directory: AF_UNIX paths are limited to ~107 bytes.
    with tempfile.TemporaryDirectory(prefix="fsc-") as scratch:
        yield Path(scratch) / "control.sock"


@pytest.fixture
async def served(socket_path: Path) -> AsyncIterator[ControlServer]:
    server = ControlServer(socket_path, _status, _peers)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def raw(path: Path, data: bytes) -> bytes:
    """Send ``data`` as is; everything the server answers before it closes."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


async def test_the_client_reads_status_and_peers(served: ControlServer) -> None:
    assert await asyncio.to_thread(request, served.path, "status") == _status()
    assert await asyncio.to_thread(request, served.path, "peers") == _peers()
    mode = (await asyncio.to_thread(served.path.stat)).st_mode
    assert stat.S_IMODE(mode) == 0o600


async def test_answers_are_http_with_a_length_and_close(served: ControlServer) -> None:
    answer = await raw(served.path, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    assert "Connection: close" in lines and "Content-Type: application/json" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body) == _status()


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET /nothing HTTP/1.1\r\n\r\n", "404 Not Found"),
        (b"GET /../status HTTP/1.1\r\n\r\n", "404 Not Found"),
        (b"POST /status HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "405 Method Not Allowed"),
        (b"DELETE /peers HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
        (b"GET /status\r\n\r\n", "400 Bad Request"),
        (b"GET /status SPDY/3\r\n\r\n", "400 Bad Request"),
        (b"\xff\xfe garbage \x00\r\n\r\n", "400 Bad Request"),
    ],
)
async def test_other_requests_get_a_clear_error(
    served: ControlServer, request_head: bytes, status: str
) -> None:
    answer = await raw(served.path, request_head)
    assert answer.startswith(f"HTTP/1.1 {status}\r\n".encode())
    assert "error" in json.loads(answer.partition(b"\r\n\r\n")[2])
    # ... and the server still answers the next client.
    assert await asyncio.to_thread(request, served.path, "status") == _status()


async def test_an_oversized_or_cut_request_gets_no_answer(served: ControlServer) -> None:
    oversized = b"GET /status HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST_HEAD + b"\r\n\r\n"
    assert await raw(served.path, oversized) == b""
    assert await raw(served.path, b"GET /status HTTP/1.1\r\n") == b""  # EOF before the end
    assert await asyncio.to_thread(request, served.path, "peers") == _peers()


async def test_a_failing_provider_is_a_500_and_the_server_carries_on(
    socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = ControlServer(socket_path, _broken, _peers)
    await server.start()
    try:
        answer = await raw(server.path, b"GET /status HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
        assert b"store went away" not in answer  # details go to the log only
        assert "the store went away" in caplog.text
        assert await asyncio.to_thread(request, server.path, "status") is None
        assert await asyncio.to_thread(request, server.path, "peers") == _peers()
    finally:
        await server.stop()
    assert not await asyncio.to_thread(server.path.exists)


async def test_a_client_that_leaves_early_does_not_stop_the_server(
    served: ControlServer,
) -> None:
    for _ in range(20):
        _, writer = await asyncio.open_unix_connection(str(served.path))
        writer.write(b"GET /sta")
        writer.close()
    assert await asyncio.to_thread(request, served.path, "status") == _status()


async def test_a_slow_client_holds_up_nobody_else_and_stop_leaves_no_thread(
    socket_path: Path,
) -> None:
    server = ControlServer(socket_path, _status, _peers)
    await server.start()
    try:
        _, slow = await asyncio.open_unix_connection(str(server.path))
        slow.write(b"GET /sta")  # the rest of its head never comes
        await slow.drain()
        assert await asyncio.to_thread(request, server.path, "status") == _status()
        slow.close()
    finally:
        await server.stop()
    assert not [t for t in threading.enumerate() if t.name == "fieldsync-control"]
    assert not await asyncio.to_thread(server.path.exists)


async def test_a_loop_view_answers_from_the_last_build_while_the_loop_is_busy() -> None:
    loop = asyncio.get_running_loop()
    builds: list[int] = []

    def build() -> dict[str, Any]:
        builds.append(len(builds) + 1)
        return {"build": builds[-1]}

    view = LoopView(loop, build)
    assert await asyncio.to_thread(lambda: view.view(view.ask(), 30.0)) == {"build": 1}
    seen: list[object] = []
    done = threading.Event()

    def from_another_thread() -> None:
        asked = view.ask()
        seen.append(view.ask() is asked)  # one build pending serves every ask meanwhile
        seen.append(view.view(asked, 0.0))  # the loop is busy: the last build
        done.set()

    asker = threading.Thread(target=from_another_thread)

    def busy() -> None:
        asker.start()
        deadline = time.monotonic() + 60  # only so that a bug cannot hang the test
        while not done.is_set() and time.monotonic() < deadline:
            pass

    loop.call_soon(busy)
    await asyncio.sleep(0)  # busy runs, and returns, before this resumes
    await asyncio.to_thread(asker.join, 60)
    assert seen == [True, {"build": 1}]
    later = await asyncio.to_thread(lambda: view.view(view.ask(), 30.0))
    assert later["build"] >= 2 and len(builds) <= 3  # fresh again; the busy asks built once


async def test_a_loop_view_whose_build_fails_raises_in_the_asker() -> None:
    view = LoopView(asyncio.get_running_loop(), _broken)
    with pytest.raises(RuntimeError, match="store went away"):
        await asyncio.to_thread(lambda: view.view(view.ask(), 30.0))


def test_a_loop_view_of_a_closed_loop_fails_every_ask_at_once() -> None:
    loop = asyncio.new_event_loop()
    view = LoopView(loop, _status)
    loop.close()
    for _ in range(2):  # the second ask does not wait on a build the first never scheduled
        with pytest.raises(RuntimeError, match="closed"):
            view.ask()
