"""The control API's client: one GET over the daemon's unix socket, standard library only.

``fieldsync status`` and ``fieldsync peers`` import this and nothing of the server side
(aiohttp, asyncio), nor ``http.client`` (which loads ssl and the email parser): the
command must start within its budget on a Pi (issue 13 item 6). The server is the daemon's
``fieldsync.control`` (its own thread, no HTTP framework), which answers with a
``Content-Length`` body and ``Connection: close``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Largest answer read from the daemon (status and peers are a few KiB).
MAX_ANSWER = 8 * 1024 * 1024


def request(path: Path, what: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """GET ``/what`` from a running daemon; None if no daemon answers on ``path``."""
    try:
        if not path.exists():
            return None  # no daemon: no need to load the socket module to find that out
    except OSError:  # a directory on the way we may not search: nobody answers us there
        return None
    try:
        raw = _get(path, what, timeout)
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or not status[0].startswith("HTTP/1.") or status[1] != "200":
            return None
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        if "content-length" in headers:
            body = body[: int(headers["content-length"])]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = _unchunk(body)
        data = json.loads(body)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _get(path: Path, what: str, timeout: float) -> bytes:
    import socket  # here: ``status`` without a daemon never needs it

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(
            f"GET /{what} HTTP/1.1\r\nHost: fieldsync\r\nConnection: close\r\n\r\n".encode()
        )
        chunks: list[bytes] = []
        size = 0
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER:
                raise ValueError("the daemon's answer is too large")
        return b"".join(chunks)


def _unchunk(body: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            return bytes(out)
        out += body[:size]
        body = body[size + 2 :]
