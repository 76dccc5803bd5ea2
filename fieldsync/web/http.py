"""The web app's HTTP/1.1 server: asyncio streams, h11's strict parser, python-multipart.

The app used to be served by aiohttp.web, whose import (aiohttp's client half comes with it)
added about 13 MB to an author daemon's memory (bench/web.py). This module is what the app
needs of a server, and no more: requests parsed by h11 (sans-IO, strict: it refuses
Content-Length with Transfer-Encoding, bad chunk sizes, bodies longer than declared), bodies
read as a stream with a size cap, urlencoded forms, a streaming multipart reader
(python-multipart's parser, fed a socket read at a time), responses, a router and the
connection loop with its limits.

It is the phone-facing surface, with an adversary on the same Wi-Fi: every limit below is on
by default (``Limits``). Malformed requests are answered 400 (431 for an oversized head, 408
for a slow one, 413 for a large body) with a short text, and the connection is closed; a
handler that raises is answered 500 without its traceback, and the error is logged without
the exception's message (it may hold what a monitor typed). There is no access log: it would
write monitors' addresses and pages to the node's disk.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload
from urllib.parse import parse_qsl, unquote

import h11
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

log = logging.getLogger(__name__)

#: Socket reads: a multipart body is parsed a read at a time, so this bounds what one part's
#: ``read_chunk`` hands out.
READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """What one client may make the server hold or wait for. Tests shorten the timeouts."""

    #: Request line and headers together (h11's ``max_incomplete_event_size``).
    max_head_bytes: int = 16 * 1024
    #: From the connection's start (or the first byte of a later request) to the end of
    #: the head: a client that trickles headers (slowloris) is cut off after this.
    head_timeout: float = 15.0
    #: An open keep-alive connection with no request under way is closed after this.
    idle_timeout: float = 30.0
    #: Each read of a body must bring data within this long ...
    body_read_timeout: float = 30.0
    #: ... and a body must arrive at this average rate at least, after its first
    #: ``body_read_timeout`` (a photo on a poor Wi-Fi still arrives far faster).
    min_body_bytes_per_second: float = 1024.0
    #: Connections served at once; one more is answered 503 and closed.
    max_connections: int = 64
    #: An HTTPS connection must finish its TLS handshake within this long.
    tls_handshake_timeout: float = 15.0
    #: Each write of a response must be taken by the client within this long (one that
    #: never reads would otherwise hold its connection for good).
    write_timeout: float = 30.0
    #: An urlencoded form (``Request.post``).
    max_form_bytes: int = 64 * 1024
    #: After a response sent before its request's body was read (a refused upload), the
    #: rest of the body is read and dropped for this long, so that the client sees the
    #: response rather than a connection reset, then the connection is closed.
    linger_seconds: float = 10.0


# --- errors a handler (or the server) answers with ---------------------------------------


class HTTPError(Exception):
    """Answer ``status`` with ``text`` (plain text); the connection may stay open."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class BadRequest(HTTPError):
    """The request (its head or body) is malformed."""

    def __init__(self, text: str) -> None:
        super().__init__(400, text)


class BodyTooLarge(HTTPError):
    """The body is larger than the handler reading it allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")
        self.limit = limit


# --- requests ----------------------------------------------------------------------------


class _Body:
    """A request's body as h11 hands it out, a socket read at a time, counted."""

    def __init__(self, connection: _Connection, length: int | None) -> None:
        self._connection = connection
        self.declared_length = length
        self.received = 0
        self.finished = False
        #: When the handler first asked for the body (what it did before is not the
        #: client's delay).
        self.started: float | None = None

    async def chunk(self, limit: int) -> bytes:
        """The next piece of the body (b"" at its end); raises ``BodyTooLarge`` once more
        than ``limit`` bytes came, however the body is framed (Content-Length or chunked)."""
        if self.finished:
            return b""
        if self.declared_length is not None and self.declared_length > limit:
            raise BodyTooLarge(limit)
        data = await self._connection.body_data(self)
        if not data:
            self.finished = True
            return b""
        self.received += len(data)
        if self.received > limit:
            raise BodyTooLarge(limit)
        return data


class Request:
    """One request: its head as parsed, and its body to read (once)."""

    def __init__(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        remote: str | None,
        body: _Body,
        max_form_bytes: int,
    ) -> None:
        self.method = method
        path, _, query = target.partition("?")
        #: Percent-decoded, as routes and templates compare it.
        self.path = unquote(path)
        #: The raw path (still percent-encoded), for the static files' strict check.
        self.raw_path = path
        self.query: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True, max_num_fields=100):
            self.query.setdefault(name, value)
        self.headers = Headers(headers)
        self.remote = remote
        self._body = body
        self._max_form_bytes = max_form_bytes

    @property
    def host(self) -> str:
        return self.headers.get("Host", "")

    @property
    def cookies(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for header in self.headers.get_all("Cookie"):
            for pair in header.split(";"):
                name, sep, value = pair.strip().partition("=")
                if sep and name:
                    found.setdefault(name, value.strip('"'))
        return found

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters ("" when none was sent)."""
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    @property
    def content_length(self) -> int | None:
        return self._body.declared_length

    async def chunks(self, limit: int) -> AsyncIterator[bytes]:
        """The body, a piece at a time, at most ``limit`` bytes (``BodyTooLarge``)."""
        while data := await self._body.chunk(limit):
            yield data

    async def post(self) -> dict[str, str]:
        """An urlencoded form (the first value of each field), at most ``max_form_bytes``;
        empty for a body of another type (left unread: the connection closes after it)."""
        if self.content_type != "application/x-www-form-urlencoded":
            return {}
        data = bytearray()
        async for piece in self.chunks(self._max_form_bytes):
            data += piece
        try:
            text = data.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=100)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest("malformed form") from exc
        form: dict[str, str] = {}
        for name, value in pairs:
            form.setdefault(name, value)
        return form

    def multipart(self, limit: int) -> MultipartReader:
        """A multipart/form-data body, read as a stream of parts, at most ``limit`` bytes."""
        _, options = parse_options_header(self.headers.get("Content-Type", ""))
        boundary = options.get(b"boundary")
        if not boundary:
            raise BadRequest("multipart form without a boundary")
        return MultipartReader(self, boundary, limit)


class Headers:
    """Header lookup by name, any case (values decoded as Latin-1, as HTTP has them)."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._items = [(n.decode("ascii").lower(), v.decode("latin-1")) for n, v in raw]

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self._items:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self._items if key == name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(key == name.lower() for key, _ in self._items)


# --- multipart -----------------------------------------------------------------------------


@dataclass
class Part:
    """One part of a multipart form; ``read_chunk`` streams its content."""

    reader: MultipartReader
    headers: dict[str, str]
    name: str
    #: None: a text field; "" or a name: a file field.
    filename: str | None
    done: bool = False

    async def read_chunk(self) -> bytes:
        """The next piece of this part's content; b"" at its end."""
        return await self.reader._part_data(self)


_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class MultipartReader:
    """multipart/form-data parts in order, each streamed: nothing holds a whole file.

    python-multipart's parser is push-style (callbacks); each socket read is written to it
    and the events it produced are handed out before the next read, so memory is bounded
    by a read (``READ_SIZE``) however large a part is.
    """

    def __init__(self, request: Request, boundary: bytes, limit: int) -> None:
        self._body = request.chunks(limit)
        #: (kind, data, headers): "headers" (a part's headers), "data", "end" (of a part),
        #: "done" (of the form). One write can hold several parts: each event keeps its own.
        self._events: deque[tuple[str, bytes, dict[str, str]]] = deque()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._ended = False
        self._part: Part | None = None
        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": lambda: self._headers.clear(),
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": lambda: self._events.append(
                        ("headers", b"", dict(self._headers))
                    ),
                    "on_part_data": lambda data, start, end: self._events.append(
                        ("data", bytes(data[start:end]), {})
                    ),
                    "on_part_end": lambda: self._events.append(("end", b"", {})),
                    "on_end": lambda: self._events.append(("done", b"", {})),
                },
            )
        except FormParserError as exc:
            raise BadRequest("malformed multipart boundary") from exc

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        # As h11 for the request's own headers: no control characters but tab (RFC 9110
        # §5.5). A file name carrying one is refused here, before anything is kept.
        if _CONTROL.search(self._header_value) or _CONTROL.search(self._header_name):
            raise BadRequest("control character in a multipart part header")
        self._headers[self._header_name.decode("latin-1").strip().lower()] = (
            self._header_value.decode("latin-1").strip()
        )
        self._header_name.clear()
        self._header_value.clear()

    async def _event(self) -> tuple[str, bytes, dict[str, str]]:
        while not self._events:
            if self._ended:
                raise BadRequest("multipart form ends before its closing boundary")
            data = await anext(self._body, b"")
            try:
                if data:
                    self._parser.write(data)
                else:
                    self._ended = True
                    self._parser.finalize()
            except FormParserError as exc:
                raise BadRequest("malformed multipart form") from exc
        return self._events.popleft()

    async def next(self) -> Part | None:
        """The next part (its headers read), or None after the last."""
        if self._part is not None:
            while await self._part.read_chunk():  # the caller left some of it unread
                pass
        while True:
            kind, _, headers = await self._event()
            if kind == "done":
                self._part = None
                return None
            if kind == "headers":
                break
            if kind == "data":
                raise BadRequest("malformed multipart form")
        disposition, options = parse_options_header(headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise BadRequest("multipart part without a form-data name")
        if headers.get("content-type", "").lower().startswith("multipart/"):
            raise BadRequest("nested multipart is not accepted")
        filename = options.get(b"filename")
        self._part = Part(
            self,
            headers,
            options[b"name"].decode("utf-8", errors="replace"),
            None if filename is None else filename.decode("utf-8", errors="replace"),
        )
        return self._part

    async def _part_data(self, part: Part) -> bytes:
        if part.done:
            return b""
        kind, data, _ = await self._event()
        if kind == "data":
            return data
        if kind == "end":
            part.done = True
            return b""
        raise BadRequest("malformed multipart form")


# --- responses -----------------------------------------------------------------------------

#: Reason phrases of the statuses this app answers with.
REASONS = {
    200: "OK",
    303: "See Other",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    410: "Gone",
    413: "Content Too Large",
    421: "Misdirected Request",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    #: Names as they are sent; ``Set-Cookie`` values go in ``cookies``.
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode("utf-8"))

    @classmethod
    def html(cls, html: str, status: int = 200) -> Response:
        return cls(status, html.encode("utf-8"), "text/html; charset=utf-8")

    def set_cookie(
        self,
        name: str,
        value: str,
        *,
        secure: bool,
        max_age: int | None = None,
        path: str = "/",
    ) -> None:
        """A cookie for our pages only: HttpOnly, SameSite=Strict, Secure over HTTPS."""
        _check_cookie_text(name, value)
        parts = [f"{name}={value}", "HttpOnly"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        parts += [f"Path={path}", "SameSite=Strict"]
        if secure:
            parts.append("Secure")
        self.cookies.append("; ".join(parts))

    def del_cookie(self, name: str, *, secure: bool, path: str = "/") -> None:
        # Secure too over HTTPS: a browser ignores a __Host- cookie without it, deletion
        # included.
        _check_cookie_text(name, "")
        parts = [f'{name}=""', "expires=Thu, 01 Jan 1970 00:00:00 GMT", "Max-Age=0"]
        parts.append(f"Path={path}")
        if secure:
            parts.append("Secure")
        self.cookies.append("; ".join(parts))

    def head_fields(self) -> list[tuple[str, str]]:
        fields = [("Content-Type", self.content_type), *self.headers.items()]
        fields += [("Set-Cookie", cookie) for cookie in self.cookies]
        fields.append(("Content-Length", str(len(self.body))))
        fields.append(("Date", http_date(time.time())))
        return fields


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: float) -> str:
    """An HTTP date (RFC 9110 §5.6.7), always in English. Not email.utils.formatdate: its
    import brings the email package (about 0.5 MB) for this one line."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year}"
        f" {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def _check_cookie_text(name: str, value: str) -> None:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    if not name or not set(name) <= allowed or not set(value) <= allowed:
        raise ValueError("cookie names and values are tokens")


def redirect(location: str) -> Response:
    """303 See Other: after a POST, the browser GETs ``location``."""
    return Response(303, b"303: See Other", headers={"Location": location})


Handler = Callable[[Request], Awaitable[Response]]


# --- static files --------------------------------------------------------------------------

#: Content types of the static files we ship (no mimetypes: it reads the system's tables).
STATIC_TYPES = {
    ".css": "text/css",
    ".js": "application/javascript",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    last_modified: str
    etag: str


def load_static(directory: Path) -> dict[str, StaticFile]:
    """Every regular file directly in ``directory`` with a known type, read now (blocking).

    Served from memory by exact name: a request cannot name anything else (no ``..``, no
    encoded separators, no absolute paths), and symlinks are skipped, not followed.
    """
    files: dict[str, StaticFile] = {}
    for entry in directory.iterdir():
        info = entry.lstat()
        content_type = STATIC_TYPES.get(entry.suffix)
        if content_type is None or not entry.is_file() or entry.is_symlink():
            continue
        files[entry.name] = StaticFile(
            entry.read_bytes(),
            content_type,
            http_date(info.st_mtime),
            f'"{info.st_mtime_ns:x}-{info.st_size:x}"',
        )
    return files


def static_response(files: dict[str, StaticFile], name: str) -> Response | None:
    found = files.get(name)
    if found is None:
        return None
    return Response(
        200,
        found.body,
        found.content_type,
        {"Etag": found.etag, "Last-Modified": found.last_modified},
    )


# --- routing -------------------------------------------------------------------------------


class Router:
    """Exact paths -> method -> handler, and one prefix of static files."""

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Handler]] = {}
        self._static_prefix = ""
        self._static: dict[str, StaticFile] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        methods = self._routes.setdefault(path, {})
        methods[method] = handler
        if method == "GET":  # HEAD is a GET without its body (the server drops it)
            methods.setdefault("HEAD", handler)

    def add_static(self, prefix: str, files: dict[str, StaticFile]) -> None:
        self._static_prefix = prefix.rstrip("/") + "/"
        self._static = files

    async def handle(self, request: Request) -> Response:
        if self._static_prefix and request.raw_path.startswith(self._static_prefix):
            name = request.raw_path[len(self._static_prefix) :]
            if request.method not in ("GET", "HEAD"):
                return _method_not_allowed(("GET", "HEAD"))
            found = static_response(self._static, name)
            return found if found is not None else Response.text("404: Not Found", 404)
        methods = self._routes.get(request.path)
        if methods is None:
            return Response.text("404: Not Found", 404)
        handler = methods.get(request.method)
        if handler is None:
            return _method_not_allowed(methods)
        return await handler(request)


def _method_not_allowed(methods: Iterable[str]) -> Response:
    response = Response.text("405: Method Not Allowed", 405)
    response.headers["Allow"] = ",".join(sorted(methods))
    return response


# --- the server ----------------------------------------------------------------------------


class _Closed(Exception):
    """The connection ended (the client left, a limit fired, or a protocol error)."""


class _Connection:
    """One client connection: requests read with h11, one at a time (pipelined ones wait)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handler: Handler,
        limits: Limits,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.handler = handler
        self.limits = limits
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)
        peer = writer.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) and peer else None

    async def _receive(self, within: float) -> None:
        """One socket read into h11; raises ``TimeoutError`` after ``within`` seconds."""
        async with asyncio.timeout(max(0.0, within)):
            data = await self.reader.read(READ_SIZE)
        self.h11.receive_data(data)  # b"": the client closed its side

    async def _send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            async with asyncio.timeout(self.limits.write_timeout):
                await self.writer.drain()

    async def _send_error(self, status: int, text: str) -> None:
        """A short plain answer, then the connection closes (for protocol-level errors)."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f"{text}\n".encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            *SERVER_HEADERS.items(),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
        reason = REASONS.get(status, "").encode()
        try:
            await self._send(h11.Response(status_code=status, headers=headers, reason=reason))
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
        except (h11.LocalProtocolError, ConnectionError):
            pass

    async def serve(self) -> None:
        first = True
        while True:
            try:
                event = await self._next_request(first)
            except _Closed:
                return
            except TimeoutError:
                # Part of a head came: answer it. Nothing came: an idle connection, closed.
                if self.h11.trailing_data[0]:
                    await self._send_error(408, "request head not received in time")
                return
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint  # 431: the head passed max_head_bytes
                await self._send_error(status, _protocol_text(status))
                return
            if not isinstance(event, h11.Request):
                return  # the client closed the connection
            first = False
            keep = await self._answer(event)
            if not keep or self.h11.our_state is h11.MUST_CLOSE:
                return
            try:
                self.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _next_request(self, first: bool) -> h11.Event:
        """The next event, once a request's head (or the end of the connection) came."""
        loop = asyncio.get_running_loop()
        limits = self.limits
        head_deadline = loop.time() + limits.head_timeout if first else None
        idle_deadline = loop.time() + limits.idle_timeout
        while True:
            event = self.h11.next_event()
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:  # only after a request, which ``serve`` never leaves so
                raise _Closed
            if head_deadline is None and self.h11.trailing_data[0]:
                head_deadline = loop.time() + limits.head_timeout
            deadline = head_deadline if head_deadline is not None else idle_deadline
            await self._receive(deadline - loop.time())
            if head_deadline is None and self.h11.trailing_data[0]:
                head_deadline = loop.time() + limits.head_timeout

    async def body_data(self, body: _Body) -> bytes:
        """The next piece of the body under way; b"" at its end."""
        if self.h11.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        limits = self.limits
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise BadRequest("malformed request body") from exc
            if isinstance(event, h11.Data):
                return bytes(event.data)
            if isinstance(event, h11.EndOfMessage):
                return b""
            if event is h11.NEED_DATA:
                if body.started is None:
                    body.started = time.monotonic()
                elapsed = time.monotonic() - body.started
                rate = limits.min_body_bytes_per_second
                allowed = limits.body_read_timeout + body.received / rate
                try:
                    await self._receive(min(limits.body_read_timeout, allowed - elapsed))
                except TimeoutError:
                    raise HTTPError(408, "request body not received in time") from None
                continue
            raise BadRequest("request body ended early")  # ConnectionClosed

    async def _answer(self, event: h11.Request) -> bool:
        """Handle one request; whether the connection may serve another."""
        length = None
        for name, value in event.headers:
            if name == b"content-length":
                length = int(value)  # h11 checked it is a number, and one value
        if length is not None and any(n == b"transfer-encoding" for n, _ in event.headers):
            # h11 lets chunked framing win, as RFC 9112 allows; a proxy in front might have
            # read the other one (request smuggling), so neither is trusted.
            await self._send_error(400, "Content-Length with Transfer-Encoding")
            return False
        try:
            target = event.target.decode("ascii")
        except UnicodeDecodeError:
            await self._send_error(400, "request target is not ASCII")
            return False
        body = _Body(self, length)
        try:
            request = Request(
                event.method.decode("ascii"),
                target,
                list(event.headers),
                self.remote,
                body,
                self.limits.max_form_bytes,
            )
        except ValueError:  # more query fields than parse_qsl's max_num_fields
            await self._send_error(400, "malformed query")
            return False
        try:
            response = await self.handler(request)
        except HTTPError as exc:
            response = Response.text(exc.text + "\n", exc.status)
            response.headers.update(SERVER_HEADERS)
        except Exception as exc:
            # Not log.exception: the message may hold what a monitor typed. The frames say
            # where it failed.
            log.error(  # noqa: TRY400
                "web app: a request failed with %s\n%s",
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            response = Response.text("500: Internal Server Error", 500)
            response.headers.update(SERVER_HEADERS)
        body_read = self._body_read(body)
        fields = response.head_fields()
        if not body_read:
            fields.append(("Connection", "close"))
        await self._send(
            h11.Response(
                status_code=response.status,
                headers=fields,
                reason=REASONS.get(response.status, "").encode(),
            )
        )
        if request.method != "HEAD" and response.body:
            await self._send(h11.Data(data=response.body))
        await self._send(h11.EndOfMessage())
        if not body_read:
            await self._linger()
        return body_read

    def _body_read(self, body: _Body) -> bool:
        """Whether the request's body was read to its end (or is, from what is buffered:
        a request without a body, or one the handler did not need), so another request
        may follow on this connection (if the client keeps it open)."""
        try:
            while self.h11.their_state is h11.SEND_BODY:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    return False
                if isinstance(event, h11.EndOfMessage):
                    body.finished = True
        except h11.RemoteProtocolError:
            return False
        return self.h11.their_state in (h11.DONE, h11.MUST_CLOSE)

    async def _linger(self) -> None:
        """Read and drop what the client still sends (a refused upload), for a while."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.linger_seconds
        try:
            if self.writer.can_write_eof():  # plain TCP: the client sees the response end
                self.writer.write_eof()
            while loop.time() < deadline:
                async with asyncio.timeout(deadline - loop.time()):
                    if not await self.reader.read(READ_SIZE):
                        return
        except (TimeoutError, OSError):
            return


def _protocol_text(status: int) -> str:
    if status == 431:
        return "request head too large"
    return f"malformed request ({REASONS.get(status, 'error').lower()})"


#: On the server's own answers (errors the app never saw): nothing in them may run, be
#: framed, sniffed or cached.
SERVER_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class HTTPServer:
    """Serves ``handler`` on one listener with ``limits``."""

    def __init__(self, handler: Handler, limits: Limits | None = None) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self._server: asyncio.Server | None = None
        #: Connections being served: their tasks and writers.
        self._tasks: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.port = 0

    async def start(self, host: str, port: int, context: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(
            self._connected,
            host,
            port,
            ssl=context,
            ssl_handshake_timeout=self.limits.tls_handshake_timeout if context else None,
            limit=READ_SIZE,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    @property
    def addresses(self) -> set[str]:
        """The addresses the listener is bound to."""
        sockets = self._server.sockets if self._server is not None else ()
        return {str(sock.getsockname()[0]) for sock in sockets}

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None:
            raise AssertionError("unreachable: asyncio runs each connection in a task")
        if len(self._tasks) >= self.limits.max_connections:
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n"
            )
            # Closing with the request unread would reset the connection before the client
            # reads the answer: end our side, and give its request a moment to arrive.
            try:
                if writer.can_write_eof():
                    writer.write_eof()
                async with asyncio.timeout(1.0):
                    await reader.read(READ_SIZE)
            except (OSError, TimeoutError):
                pass
            await _close(writer)
            return
        self._tasks[task] = writer
        try:
            await _Connection(reader, writer, self.handler, self.limits).serve()
        except (ConnectionError, TimeoutError, ssl.SSLError):
            pass  # the client left (or stalled) mid-response: nothing to answer
        except Exception as exc:
            # As for a page that fails: no message, it may hold a monitor's data.
            log.error("web app: a connection failed with %s", type(exc).__name__)  # noqa: TRY400
        finally:
            self._tasks.pop(task, None)
            await _close(writer)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Connections are cut, not their tasks cancelled: asyncio's stream server logs a
        # cancelled connection task as an error. Each task ends at its next read or write.
        for writer in self._tasks.values():
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        await server.wait_closed()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(2.0):
            await writer.wait_closed()
    except (OSError, TimeoutError, ssl.SSLError):
        pass
