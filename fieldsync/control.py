"""The control API: a small aiohttp app on a unix socket, read by ``fieldsync status``
and ``fieldsync peers``. The socket is created 0600 (owner only): it reveals which peers a
node has met, which a watcher on the device must not learn without the node's account.

The client side is ``fieldsync.control_client`` (the standard library only, no asyncio):
``fieldsync status`` must start fast on a Pi, and importing aiohttp alone costs more than
the whole command's budget (issue 13 item 6). The server imports aiohttp when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldsync.control_client import request
from fieldsync.errors import FieldsyncError

if TYPE_CHECKING:
    from aiohttp import web

StatusProvider = Callable[[], Awaitable[dict[str, Any]]]


class ControlSocketLost(FieldsyncError):
    """The control socket file was removed or replaced while the daemon ran."""


class ControlServer:
    def __init__(self, path: Path, status: StatusProvider, peers: StatusProvider) -> None:
        self.path = path
        self._status = status
        self._peers = peers
        self._runner: web.AppRunner | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/status", self._handle(self._status))
        app.router.add_get("/peers", self._handle(self._peers))
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await asyncio.to_thread(self._remove_stale)
        old_umask = os.umask(0o177)
        try:
            await web.UnixSite(self._runner, str(self.path)).start()
        finally:
            os.umask(old_umask)
        self._inode = await asyncio.to_thread(self._bound_inode)

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

    @staticmethod
    def _handle(provider: StatusProvider) -> Callable[[web.Request], Awaitable[web.Response]]:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            return web.json_response(await provider())

        return handle

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        inode, self._inode = self._inode, None
        if inode is not None and inode == await asyncio.to_thread(self._bound_inode):
            # Only our own socket: a newer daemon's socket at the same path stays.
            await asyncio.to_thread(self._remove_stale)


__all__ = ["ControlServer", "ControlSocketLost", "query", "request"]


async def query(path: Path, what: str, timeout: float = 5.0) -> dict[str, Any] | None:  # noqa: ASYNC109
    """``request`` from asyncio code, off the event loop."""
    return await asyncio.to_thread(request, path, what, timeout)
