"""The web app's HTTP server (``fieldsync.web.http``) against hostile clients, over raw sockets.

Each test starts the real server on a loopback port the kernel picks, with short limits
where a limit is under test, and writes bytes a browser never would: oversized or trickled
heads, smuggling shapes (Content-Length with Transfer-Encoding, bad chunk sizes, more body
than declared), bodies over a cap, too many connections, a page that raises. What is checked
is the answer and that the connection is closed, never how long anything took. The last
tests send the same shapes to a real daemon serving the app (static files, uploads).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import formatdate
from pathlib import Path

import pytest

from fieldsync.web import tls
from fieldsync.web.http import (
    HTTPServer,
    Limits,
    Request,
    Response,
    Router,
    http_date,
    load_static,
)
from tests.fieldsync.offline_support import Net
from tests.web.support import BOUNDARY, raw_multipart, served, url_of

#: The longest a test waits for an answer: far above every short limit used here.
PATIENCE = 20.0
#: A limit under test: short, so that a test ends soon after it fires.
SHORT = 0.3
SECRET = "the monitor typed this"


async def echo(request: Request) -> Response:
    """Reads the whole body (at most 1000 bytes) and says how long it was."""
    if request.path == "/boom":
        raise ValueError(SECRET)
    size = 0
    async for piece in request.chunks(1000):
        size += len(piece)
    return Response.text(f"{request.method} {request.path} {size}")


def echo_router() -> Router:
    router = Router()
    router.add("GET", "/page", echo)
    router.add("POST", "/page", echo)
    router.add("GET", "/boom", echo)
    return router


@asynccontextmanager
async def serving(**limits: float) -> AsyncIterator[int]:
    server = HTTPServer(echo_router().handle, Limits(**limits))  # type: ignore[arg-type]
    await server.start("127.0.0.1", 0)
    try:
        yield server.port
    finally:
        await server.stop()


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, then read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(PATIENCE):
            return await reader.read()  # to EOF: the server closed it
    finally:
        writer.close()


def statuses(answer: bytes) -> list[int]:
    # Not anchored to a line: a pipelined response follows the previous body directly.
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


GET = b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n"
CLOSE = b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def test_oversized_head_is_refused_with_431_and_closed() -> None:
    async with serving(max_head_bytes=4096) as port:
        answer = await exchange(port, b"GET /page HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000)
    assert statuses(answer) == [431]


async def test_trickled_head_times_out_with_408_and_closed() -> None:
    async with serving(head_timeout=SHORT) as port:
        answer = await exchange(port, b"GET /page HTTP/1.1\r\nHost: x\r\n")  # never ends
    assert statuses(answer) == [408]


async def test_silent_and_idle_connections_are_closed_without_an_answer() -> None:
    async with serving(head_timeout=SHORT, idle_timeout=SHORT) as port:
        assert await exchange(port, b"") == b""  # connected, sent nothing
        answer = await exchange(port, GET)  # one request, then idle on keep-alive
    assert statuses(answer) == [200]


@pytest.mark.parametrize(
    "request_bytes",
    [
        # Content-Length and Transfer-Encoding both: the smuggled GET is never answered.
        b"POST /page HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /page HTTP/1.1\r\nHost: x\r\n\r\n",
        # An invalid chunk size.
        b"POST /page HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n",
    ],
    ids=["content-length-with-transfer-encoding", "invalid-chunk-size"],
)
async def test_smuggling_shapes_are_refused_with_400_only(request_bytes: bytes) -> None:
    async with serving() as port:
        answer = await exchange(port, request_bytes)
    assert statuses(answer) == [400]


async def test_body_longer_than_declared_is_read_as_the_next_request_and_refused() -> None:
    request = (
        b"POST /page HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"not a request line\r\n\r\n"
    )
    async with serving() as port:
        answer = await exchange(port, request)
    assert statuses(answer) == [200, 400]
    assert b"POST /page 5" in answer


async def test_pipelined_requests_are_answered_in_order() -> None:
    requests = (
        b"GET /page?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /page HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + CLOSE
    )
    async with serving() as port:
        answer = await exchange(port, requests)
    assert statuses(answer) == [200, 200, 200]
    assert re.findall(rb"(?:GET|POST) /page \d", answer) == [
        b"GET /page 0",
        b"POST /page 3",
        b"GET /page 0",
    ]


async def test_chunked_body_over_the_cap_is_413_like_a_declared_one() -> None:
    chunk = b"%x\r\n%s\r\n" % (600, b"x" * 600)
    chunked = (
        b"POST /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 2 + b"0\r\n\r\n"
    )
    declared = (
        b"POST /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1200\r\n\r\n"
        + b"x" * 1200
    )
    async with serving(linger_seconds=SHORT) as port:
        for request in (chunked, declared):
            answer = await exchange(port, request)
            assert statuses(answer) == [413], request[:60]


async def test_a_stalled_body_times_out_with_408() -> None:
    request = b"POST /page HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten.."
    async with serving(body_read_timeout=SHORT, linger_seconds=SHORT) as port:
        answer = await exchange(port, request)
    assert statuses(answer) == [408]


async def test_connections_over_the_cap_get_503() -> None:
    async with serving(max_connections=2) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        try:
            for reader, writer in held:  # each answered once: both are being served now
                writer.write(GET)
                async with asyncio.timeout(PATIENCE):
                    assert (await reader.readuntil(b"GET /page 0")).startswith(b"HTTP/1.1 200")
            assert statuses(await exchange(port, CLOSE)) == [503]
        finally:
            for _, writer in held:
                writer.close()
        async with asyncio.timeout(PATIENCE):
            # Polling: a slot is free once the server has seen the two closes.
            while statuses(await exchange(port, CLOSE)) != [200]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)


async def test_a_page_that_raises_is_500_without_details_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="fieldsync.web.http")
    async with serving() as port:
        answer = await exchange(port, b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert statuses(answer) == [500]
        assert SECRET.encode() not in answer and b"Traceback" not in answer
        assert statuses(await exchange(port, CLOSE)) == [200]
    assert "ValueError" in caplog.text  # logged, where it failed ...
    assert SECRET not in caplog.text  # ... without what it carried


async def test_head_unknown_methods_and_paths() -> None:
    async with serving() as port:
        ending = b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        head = await exchange(port, b"HEAD /page" + ending)
        put = await exchange(port, b"PUT /page" + ending)
        missing = await exchange(port, b"GET /nope" + ending)
    assert statuses(head) == [200]
    assert b"Content-Length: 12\r\n" in head and head.endswith(b"\r\n\r\n")  # no body
    assert statuses(put) == [405] and b"Allow: GET,HEAD,POST\r\n" in put
    assert statuses(missing) == [404]


async def test_tls_handshake_that_never_comes_is_cut_off(tmp_path: Path) -> None:
    cert, key = await asyncio.to_thread(tls.ensure_certificate, tmp_path, "127.0.0.1")
    context = await asyncio.to_thread(tls.server_context, cert, key)
    server = HTTPServer(echo_router().handle, Limits(tls_handshake_timeout=SHORT))
    await server.start("127.0.0.1", 0, context)
    try:
        assert await exchange(server.port, b"") == b""  # no ClientHello: closed
    finally:
        await server.stop()


def test_static_files_are_regular_files_by_exact_name(tmp_path: Path) -> None:
    (tmp_path / "app.css").write_text("body {}")
    (tmp_path / "notes.txt").write_text("no type of ours")
    (tmp_path / "link.css").symlink_to(tmp_path / "app.css")
    (tmp_path / "dir.css").mkdir()
    files = load_static(tmp_path)
    assert set(files) == {"app.css"}
    assert files["app.css"].content_type == "text/css"


async def test_a_query_of_too_many_fields_is_refused() -> None:
    query = "&".join(f"f{n}=1" for n in range(500))
    async with serving() as port:
        answer = await exchange(port, f"GET /page?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert statuses(answer) == [400]
    assert b"X-Content-Type-Options: nosniff\r\n" in answer


async def test_a_trickled_body_is_cut_off_though_each_read_brings_a_byte() -> None:
    limits = {"body_read_timeout": 0.5, "min_body_bytes_per_second": 100.0}
    async with serving(**limits, linger_seconds=SHORT) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"POST /page HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n")
            answer = b""
            async with asyncio.timeout(PATIENCE):
                while True:  # a byte, then a pause of 0.1 s: under 10 B/s
                    if not answer:
                        writer.write(b"x")
                    try:
                        async with asyncio.timeout(0.1):
                            piece = await reader.read(65536)
                    except TimeoutError:
                        continue
                    if not piece:  # EOF: the server gave up on this body
                        break
                    answer += piece
        finally:
            writer.close()
    assert statuses(answer) == [408]


async def test_multipart_files_arrive_in_pieces_never_whole() -> None:
    """The reader hands a part out a socket read at a time: a 2 MiB file never in one piece."""
    pieces: list[int] = []

    async def upload(request: Request) -> Response:
        reader = request.multipart(10 * 1024 * 1024)
        while (part := await reader.next()) is not None:
            while chunk := await part.read_chunk():
                if part.filename:
                    pieces.append(len(chunk))
        return Response.text("ok")

    router = Router()
    router.add("POST", "/upload", upload)
    server = HTTPServer(router.handle, Limits())
    await server.start("127.0.0.1", 0)
    content = bytes(range(256)) * (8 * 1024)  # 2 MiB
    body = raw_multipart([("note", None, b"hello"), ("file", "a.bin", content)])
    head = (
        "POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        answer = await exchange(server.port, head + body)
    finally:
        await server.stop()
    assert statuses(answer) == [200]
    assert sum(pieces) == len(content)
    assert max(pieces) <= 64 * 1024 and len(pieces) >= 32


def test_http_dates_are_the_standard_library_s() -> None:
    for seconds in (0.0, 951782400.0, 1733529600.5, 1765000000.9):
        assert http_date(seconds) == formatdate(seconds, usegmt=True)


# --- the same shapes against a daemon serving the app ----------------------------------------


def _request(target: str, port: int, extra: bytes = b"") -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n".encode()
        + extra
        + b"\r\n"
    )


async def test_static_paths_outside_the_directory_are_404(net: Net) -> None:
    async with served(net.a) as daemon:
        assert daemon.web is not None
        port = daemon.web.port
        css = await exchange(port, _request("/static/app.css", port))
        assert statuses(css) == [200] and b"Content-Type: text/css\r\n" in css
        assert b"Cache-Control: no-store\r\n" in css
        js = await exchange(port, _request("/static/app.js", port))
        assert b"Content-Type: application/javascript\r\n" in js
        for target in (
            "/static/../app.py",
            "/static/%2e%2e/app.py",
            "/static/..%2fapp.py",
            "/static/%2E%2E%2Fapp.py",
            "/static//etc/passwd",
            "/static/%2Fetc%2Fpasswd",
            "/static/app.css/",
            "/static/./app.css",
            "/static/",
            "/static/templates/base.html",
        ):
            answer = await exchange(port, _request(target, port))
            assert statuses(answer) == [404], target
            assert b"Content-Security-Policy:" in answer  # the app's headers on errors too


async def test_chunked_upload_over_the_limit_gets_the_too_large_page(net: Net) -> None:
    async with served(net.a, **{"web.max_upload_mb": 1}) as daemon:
        assert daemon.web is not None
        port = daemon.web.port
        body = raw_multipart([("attachment_files", "big.mp4", b"\0" * (2 * 1024 * 1024))])
        step = 256 * 1024
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + step]), body[i : i + step])
            for i in range(0, len(body), step)
        )
        head = (
            f"POST /write HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {url_of(daemon)}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        answer = await exchange(port, head + chunks + b"0\r\n\r\n")
        assert statuses(answer) == [413]
        assert b"Too large" in answer


async def test_malformed_multipart_is_400_and_the_app_goes_on(net: Net) -> None:
    async with served(net.a) as daemon:
        assert daemon.web is not None
        port = daemon.web.port
        for content_type, body in (
            (f"multipart/form-data; boundary={BOUNDARY}", b"no boundary anywhere"),
            ("multipart/form-data", b"--x\r\n\r\n"),  # no boundary parameter
            (  # a part that is not a form field
                f"multipart/form-data; boundary={BOUNDARY}",
                f"--{BOUNDARY}\r\nContent-Disposition: attachment\r\n\r\nx\r\n"
                f"--{BOUNDARY}--\r\n".encode(),
            ),
            (  # a part header line far longer than any browser writes (held in memory)
                f"multipart/form-data; boundary={BOUNDARY}",
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{"n" * 64_000}"'
                f"\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
            ),
            (  # a part with more headers than any browser writes
                f"multipart/form-data; boundary={BOUNDARY}",
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="x"\r\n'.encode()
                + b"".join(b"X-Filler-%d: y\r\n" % k for k in range(64))
                + f"\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
            ),
        ):
            head = (
                f"POST /write HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            answer = await exchange(port, head + body)
            assert statuses(answer) == [400], body
        assert statuses(await exchange(port, _request("/write", port))) == [200]
