"""The control API: two JSON resources (``GET /status``, ``GET /peers``) over HTTP/1.1 on a
unix socket, read by ``fieldsync status`` and ``fieldsync peers``. The socket is created
0600 (owner only): it reveals which peers a node has met, which a watcher on the device must
not learn without the node's account.

The server is a few lines of asyncio, not an HTTP framework: every daemon runs it, and
aiohttp (with its client, which it always imports) would cost a relay ~14 MB resident for
two fixed answers (issue 13 item 7). One request per connection: the request head is read
within ``REQUEST_TIMEOUT`` and at most ``MAX_REQUEST_HEAD`` bytes, answered with
``Content-Length`` and ``Connection: close``. The client side is
``fieldsync.control_client`` (the standard library only, no asyncio).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fieldsync.control_client import request
from fieldsync.errors import FieldsyncError

StatusProvider = Callable[[], Awaitable[dict[str, Any]]]

#: Longest request head read (request line and headers); a longer one gets no answer.
MAX_REQUEST_HEAD = 8 * 1024
#: Seconds a client has to send its request head.
REQUEST_TIMEOUT = 5.0

log = logging.getLogger(__name__)


class ControlSocketLost(FieldsyncError):
    """The control socket file was removed or replaced while the daemon ran."""


class ControlServer:
    def __init__(self, path: Path, status: StatusProvider, peers: StatusProvider) -> None:
        self.path = path
        self._resources = {"/status": status, "/peers": peers}
        self._server: asyncio.Server | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self._remove_stale)
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST_HEAD
            )
        finally:
            os.umask(old_umask)
        self._inode = await asyncio.to_thread(self._bound_inode)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body = await self.answer(head)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # a request cut short, too long or too slow: no answer
        except ConnectionError:
            pass  # the client went away
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def answer(self, head: bytes) -> tuple[str, bytes]:
        """The status line and JSON body for one request head."""
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return "400 Bad Request", b'{"error": "bad request"}'
        method, target, _ = parts
        provider = self._resources.get(target.partition("?")[0])
        if provider is None:
            return "404 Not Found", b'{"error": "no such resource: GET /status or /peers"}'
        if method != "GET":
            return "405 Method Not Allowed", b'{"error": "only GET"}'
        try:
            data = await provider()
        except Exception:
            log.exception("control API: %s failed", target)
            return "500 Internal Server Error", b'{"error": "internal error; see the log"}'
        return "200 OK", json.dumps(data).encode()

    def _remove_stale(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from a crash

    def _bound_inode(self) -> int | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return info.st_ino if stat.S_ISSOCK(info.st_mode) else None

    async def watch(self, interval: float) -> None:
        """Return never; raise ``ControlSocketLost`` once the socket file is gone or replaced.

        tmpfiles cleaning /run, or an operator deleting the file, would otherwise leave a
        daemon that ``fieldsync status`` reports as "not running" while it runs.
        """
        while True:
            await asyncio.sleep(interval)
            inode = await asyncio.to_thread(self._bound_inode)
            if inode is None or inode != self._inode:
                raise ControlSocketLost(f"control socket {self.path} was removed or replaced")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        inode, self._inode = self._inode, None
        if inode is not None and inode == await asyncio.to_thread(self._bound_inode):
            # Only our own socket: a newer daemon's socket at the same path stays.
            await asyncio.to_thread(self._remove_stale)


__all__ = ["ControlServer", "ControlSocketLost", "query", "request"]


async def query(path: Path, what: str, timeout: float = 5.0) -> dict[str, Any] | None:  # noqa: ASYNC109
    """``request`` from asyncio code, off the event loop."""
    return await asyncio.to_thread(request, path, what, timeout)
