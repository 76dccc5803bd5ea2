"""The control API: a small aiohttp app on a unix socket, read by ``fieldsync status``
and ``fieldsync peers``. The socket is created 0600 (owner only): it reveals which peers a
node has met, which a watcher on the device must not learn without the node's account.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

StatusProvider = Callable[[], Awaitable[dict[str, Any]]]


class ControlServer:
    def __init__(self, path: Path, status: StatusProvider, peers: StatusProvider) -> None:
        self.path = path
        self._status = status
        self._peers = peers
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/status", self._handle(self._status))
        app.router.add_get("/peers", self._handle(self._peers))
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from a crash
        old_umask = os.umask(0o177)
        try:
            await web.UnixSite(self._runner, str(self.path)).start()
        finally:
            os.umask(old_umask)

    @staticmethod
    def _handle(provider: StatusProvider) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return web.json_response(await provider())

        return handle

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def query(path: Path, what: str, timeout: float = 5.0) -> dict[str, Any] | None:  # noqa: ASYNC109
    """GET ``/what`` from a running daemon; None if no daemon answers on ``path``."""
    connector = aiohttp.UnixConnector(path=str(path))
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as session,
            session.get(f"http://fieldsync/{what}") as response,
        ):
            data: dict[str, Any] = await response.json()
            return data
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None
