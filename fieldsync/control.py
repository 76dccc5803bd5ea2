"""The control API: two JSON resources (``GET /status``, ``GET /peers``) over HTTP/1.1 on a
unix socket, read by ``fieldsync status`` and ``fieldsync peers``. The socket is created
0600 (owner only): it reveals which peers a node has met, which a watcher on the device must
not learn without the node's account.

The server runs on a thread of its own, not on the daemon's event loop: a sync session's
callbacks on that loop (decrypting and queueing a flight) would otherwise hold every
``status`` behind them (perf S11: p99 <= 10 ms while 100k items arrive, issue 13 item 3).
So the providers are plain functions called on that thread; what they need from the loop
they take from a ``LoopView``, which never waits for a busy loop.

It is a few lines over ``selectors``, not an HTTP framework: every daemon runs it, and
aiohttp (with its client, which it always imports) would cost a relay ~14 MB resident for
two fixed answers (issue 13 item 7); nor an event loop of its own, whose every step would
count as blocking if a provider read the store on it. One request per connection: the
request head is read within ``REQUEST_TIMEOUT`` and at most ``MAX_REQUEST_HEAD`` bytes,
answered with ``Content-Length`` and ``Connection: close``. Connections are served side by
side, so a client that sends its head slowly holds up nobody else. The client side is
``fieldsync.control_client`` (the standard library only, no asyncio).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import selectors
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldsync.control_client import request
from fieldsync.errors import FieldsyncError

#: Answers one resource; called on the control thread (never on the daemon's event loop).
StatusProvider = Callable[[], dict[str, Any]]

#: Longest request head read (request line and headers); a longer one gets no answer.
MAX_REQUEST_HEAD = 8 * 1024
#: Seconds a client has to send its request head (and, then, to read the answer).
REQUEST_TIMEOUT = 5.0
#: Seconds the first answer waits for the loop's view (there is no older one to give).
FIRST_VIEW_TIMEOUT = 10.0
#: Seconds ``stop`` waits for the control thread (a provider may be inside a store read).
STOP_TIMEOUT = 15.0
HEAD_END = b"\r\n\r\n"
READ_CHUNK = 64 * 1024

log = logging.getLogger(__name__)


class ControlSocketLost(FieldsyncError):
    """The control socket file was removed or replaced while the daemon ran."""


class ControlThreadEnded(FieldsyncError):
    """The control API's thread ended by itself (a bug: its traceback is in the log)."""


class LoopView:
    """A dict built on an event loop (``build``), read from other threads without waiting
    for a busy loop.

    ``ask`` has the loop build a fresh one when it next gets to it; ``view`` returns that
    one if the loop built it within the grace given, else the latest the loop built before.
    Every answer is at least as fresh as the one before it, so a caller polling for a change
    sees it once the loop got round to one build after it. Asks made while a build is
    pending share it: a loop blocked for a while finds one build waiting, not one per ask.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, build: Callable[[], dict[str, Any]]):
        self._loop = loop
        self._build = build
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future[dict[str, Any]] | None = None
        self._latest: dict[str, Any] | None = None

    def ask(self) -> concurrent.futures.Future[dict[str, Any]]:
        """Have the loop build a fresh view (thread-safe; the build runs on the loop)."""
        with self._lock:
            pending = self._pending
            if pending is None or pending.done():
                pending = concurrent.futures.Future()
                # Raises once the loop is closed: then no ask may wait on a build never run.
                self._loop.call_soon_threadsafe(self._build_on_loop, pending)
                self._pending = pending
            return pending

    def _build_on_loop(self, pending: concurrent.futures.Future[dict[str, Any]]) -> None:
        try:
            built = self._build()
        except Exception as exc:  # handed to whoever asked, who answers with an error
            pending.set_exception(exc)
            return
        self._latest = built  # published before the waiters are woken: never older than theirs
        pending.set_result(built)

    def view(
        self, asked: concurrent.futures.Future[dict[str, Any]], grace: float
    ) -> dict[str, Any]:
        """``asked`` if the loop built it within ``grace`` seconds, else the latest built;
        when there is none yet, ``asked`` within ``FIRST_VIEW_TIMEOUT`` (else TimeoutError)."""
        with contextlib.suppress(TimeoutError):
            return asked.result(timeout=grace)
        latest = self._latest
        if latest is not None:
            return latest
        return asked.result(timeout=FIRST_VIEW_TIMEOUT)


@dataclass
class _Client:
    """One connection: its request head so far, then its answer, and its deadline."""

    conn: socket.socket
    deadline: float
    head: bytearray = field(default_factory=bytearray)
    answer: memoryview | None = None


class ControlServer:
    def __init__(
        self,
        path: Path,
        status: StatusProvider,
        peers: StatusProvider,
        closing: Callable[[], None] | None = None,
    ) -> None:
        """``closing``: called on the control thread as it ends, to close what the providers
        opened there (an SQLite connection may only be closed by its own thread)."""
        self.path = path
        self._resources = {"/status": status, "/peers": peers}
        self._closing = closing
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        # Written to by ``stop`` to wake the control thread out of its select().
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        listener = await asyncio.to_thread(self._bind)
        self._listener = listener
        self._wake = socket.socketpair()
        self._wake[0].setblocking(False)  # written to from the event loop
        self._inode = await asyncio.to_thread(self._bound_inode)
        # A daemon thread: should stop() never run (a crash), it must not keep the process.
        self._thread = threading.Thread(
            target=self._serve,
            args=(listener, self._wake[1]),
            name="fieldsync-control",
            daemon=True,
        )
        self._thread.start()

    def _bind(self) -> socket.socket:
        self._remove_stale()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)  # created 0600: never a moment open to others
            try:
                listener.bind(str(self.path))
            finally:
                os.umask(old_umask)
            listener.listen(64)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        return listener

    # --- the control thread -------------------------------------------------------------

    def _serve(self, listener: socket.socket, wake: socket.socket) -> None:
        clients: dict[socket.socket, _Client] = {}
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            try:
                while True:
                    now = time.monotonic()
                    for client in [c for c in clients.values() if c.deadline <= now]:
                        self._drop(selector, clients, client)  # too slow: no answer
                    deadline = min((c.deadline for c in clients.values()), default=None)
                    timeout = None if deadline is None else max(deadline - now, 0.0)
                    for key, events in selector.select(timeout):
                        if key.fileobj is wake:
                            return
                        if key.fileobj is listener:
                            self._accept(listener, selector, clients)
                            continue
                        client = clients.get(key.fileobj)  # type: ignore[call-overload]
                        if client is not None:
                            self._handle(selector, clients, client, events)
            finally:
                for client in list(clients.values()):
                    self._drop(selector, clients, client)
                if self._closing is not None:
                    try:
                        self._closing()
                    except Exception:
                        log.exception("control API: closing its thread's resources failed")

    def _handle(
        self,
        selector: selectors.BaseSelector,
        clients: dict[socket.socket, _Client],
        client: _Client,
        events: int,
    ) -> None:
        try:
            if events & selectors.EVENT_READ:
                self._read(selector, clients, client)
            elif events & selectors.EVENT_WRITE:
                self._write(selector, clients, client)
        except OSError:
            self._drop(selector, clients, client)  # the client went away
        except Exception:
            # A bug with one client must not end the API for every later one.
            log.exception("control API: serving a request failed")
            self._drop(selector, clients, client)

    def _accept(
        self,
        listener: socket.socket,
        selector: selectors.BaseSelector,
        clients: dict[socket.socket, _Client],
    ) -> None:
        # One connection per wake-up (select wakes again for the next) and its request read
        # at once, mostly there already: while a sync runs each system call hands the GIL
        # back and waits for it again, so the fewer the sooner the answer (perf S11).
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # e.g. out of file descriptors: try again on the next one
            log.warning("control API: cannot accept a connection: %s", exc)
            return
        conn.setblocking(False)
        client = clients[conn] = _Client(conn, time.monotonic() + REQUEST_TIMEOUT)
        selector.register(conn, selectors.EVENT_READ)
        self._handle(selector, clients, client, selectors.EVENT_READ)

    def _read(
        self,
        selector: selectors.BaseSelector,
        clients: dict[socket.socket, _Client],
        client: _Client,
    ) -> None:
        # Whatever is there, as asyncio's streams read: closing with a too-long head still
        # unread would reset the client's side of the socket instead of ending it.
        try:
            data = client.conn.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return  # not sent yet: select says when
        if not data:
            self._drop(selector, clients, client)  # cut short: no answer
            return
        client.head += data
        end = client.head.find(HEAD_END)
        if end < 0 or end + len(HEAD_END) > MAX_REQUEST_HEAD:
            if len(client.head) > MAX_REQUEST_HEAD:
                self._drop(selector, clients, client)  # too long: no answer
            return
        status, body = self.answer(bytes(client.head[: end + len(HEAD_END)]))
        client.answer = memoryview(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        client.deadline = time.monotonic() + REQUEST_TIMEOUT
        selector.modify(client.conn, selectors.EVENT_WRITE)
        self._write(selector, clients, client)  # most answers fit the socket buffer at once

    def _write(
        self,
        selector: selectors.BaseSelector,
        clients: dict[socket.socket, _Client],
        client: _Client,
    ) -> None:
        answer = client.answer
        if answer is None:
            return
        try:
            sent = client.conn.send(answer)
        except (BlockingIOError, InterruptedError):
            return
        client.answer = answer = answer[sent:]
        if not answer:
            self._drop(selector, clients, client)  # answered: Connection: close

    @staticmethod
    def _drop(
        selector: selectors.BaseSelector,
        clients: dict[socket.socket, _Client],
        client: _Client,
    ) -> None:
        clients.pop(client.conn, None)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(client.conn)
        client.conn.close()

    def answer(self, head: bytes) -> tuple[str, bytes]:
        """The status line and JSON body for one request head (on the control thread)."""
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
            body = json.dumps(provider()).encode()
        except Exception:
            log.exception("control API: %s failed", target)
            return "500 Internal Server Error", b'{"error": "internal error; see the log"}'
        return "200 OK", body

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
        """Return never; raise ``ControlSocketLost`` once the socket file is gone or replaced
        (``ControlThreadEnded`` if the thread serving it ended).

        tmpfiles cleaning /run, or an operator deleting the file, would otherwise leave a
        daemon that ``fieldsync status`` reports as "not running" while it runs.
        """
        while True:
            await asyncio.sleep(interval)
            inode = await asyncio.to_thread(self._bound_inode)
            if inode is None or inode != self._inode:
                raise ControlSocketLost(f"control socket {self.path} was removed or replaced")
            if self._thread is not None and not self._thread.is_alive():
                raise ControlThreadEnded("the control API's thread ended; see the log")

    async def stop(self) -> None:
        thread, self._thread = self._thread, None
        wake, self._wake = self._wake, None
        if wake is not None:
            with contextlib.suppress(OSError):
                wake[0].send(b"x")
        if thread is not None:
            # Joined off the loop: the thread may be inside a store read (bounded by the
            # provider's own timeout); a daemon must still stop if it never comes back.
            await asyncio.to_thread(thread.join, STOP_TIMEOUT)
            if thread.is_alive():
                log.error("control API: its thread did not stop within %g s", STOP_TIMEOUT)
        if wake is not None:
            for end in wake:
                end.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        inode, self._inode = self._inode, None
        if inode is not None and inode == await asyncio.to_thread(self._bound_inode):
            # Only our own socket: a newer daemon's socket at the same path stays.
            await asyncio.to_thread(self._remove_stale)


__all__ = [
    "ControlServer",
    "ControlSocketLost",
    "ControlThreadEnded",
    "LoopView",
    "query",
    "request",
]


async def query(path: Path, what: str, timeout: float = 5.0) -> dict[str, Any] | None:  # noqa: ASYNC109
    """``request`` from asyncio code, off the event loop."""
    return await asyncio.to_thread(request, path, what, timeout)
