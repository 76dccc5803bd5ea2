"""The control client (standard library, unix socket) against real sockets: good answers,
and every way an answer can be wrong gives None (``fieldsync status``: "not running")."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldsync import control_client
from fieldsync.control_client import request


@pytest.fixture
def answering(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A unix socket that reads one request and sends ``answers[0]``, per connection."""
    path = tmp_path / "c.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    answers: list[bytes] = []
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                seen.append(conn.recv(65536))
                conn.sendall(answers.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield path, answers
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        server.close()
        thread.join(5)
        assert not thread.is_alive()
    assert all(r.startswith(b"GET /") and b"Connection: close" in r for r in seen)


def test_a_json_answer_with_content_length(answering: tuple[Path, list[bytes]]) -> None:
    path, answers = answering
    body = b'{"running": true}'
    answers.append(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert request(path, "status") == {"running": True}


def test_a_chunked_answer(answering: tuple[Path, list[bytes]]) -> None:
    path, answers = answering
    answers.append(
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n'
    )
    assert request(path, "peers") == {"a": 1}


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnot j",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",
        b"garbage",
        b"",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_a_wrong_answer_is_none(answering: tuple[Path, list[bytes]], answer: bytes) -> None:
    path, answers = answering
    answers.append(answer)
    assert request(path, "status") is None


def test_an_oversized_answer_is_none(
    answering: tuple[Path, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, answers = answering
    monkeypatch.setattr(control_client, "MAX_ANSWER", 100)
    answers.append(b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + b" " * 300)
    assert request(path, "status") is None


def test_no_daemon_is_none(tmp_path: Path) -> None:
    assert request(tmp_path / "absent.sock", "status") is None
    (tmp_path / "file.sock").write_text("not a socket")
    assert request(tmp_path / "file.sock", "status") is None
