"""HQ's attachment files sealed at rest (``fieldsync.hq_media_seal``): a round trip at the
block edges, and every way a sealed file can be changed is refused, real files on disk."""

from __future__ import annotations

import io
import secrets
from pathlib import Path

import pytest

from fieldsync.hq_media_seal import (
    BLOCK,
    HEADER_SIZE,
    OVERHEAD,
    MediaDamaged,
    copy_out,
    new_key,
    read_sealed,
    write_sealed,
)


def sealed(tmp_path: Path, data: bytes, piece: int = 1000) -> tuple[Path, bytes]:
    key = new_key()
    path = tmp_path / "01.sealed"
    write_sealed(path, key, (data[i : i + piece] for i in range(0, len(data), piece)))
    return path, key


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 7])
def test_a_sealed_file_opens_to_the_same_bytes_and_holds_none_of_them(
    tmp_path: Path, size: int
) -> None:
    data = secrets.token_bytes(size)
    path, key = sealed(tmp_path, data)
    raw = path.read_bytes()
    records = max(1, -(-size // BLOCK))
    assert len(raw) == HEADER_SIZE + size + records * OVERHEAD
    assert all(len(block) <= BLOCK for block in read_sealed(path, key))
    assert b"".join(read_sealed(path, key)) == data
    if size >= 64:
        assert data[:64] not in raw and data[-64:] not in raw
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_file_that_fails_while_written_is_removed(tmp_path: Path) -> None:
    def failing() -> object:
        yield b"x" * (BLOCK + 1)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_sealed(tmp_path / "01.sealed", new_key(), failing())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def _changed(raw: bytes, how: str) -> bytes:
    record = BLOCK + OVERHEAD
    first, second = HEADER_SIZE, HEADER_SIZE + record
    if how == "flipped byte":
        return raw[: second + 5] + bytes([raw[second + 5] ^ 1]) + raw[second + 6 :]
    if how == "flipped header":
        return bytes([raw[0] ^ 0x80]) + raw[1:]
    if how == "final record dropped":
        return raw[: HEADER_SIZE + 2 * record]
    if how == "cut inside a record":
        return raw[: second + 100]
    if how == "records swapped":
        return (
            raw[:first] + raw[second : second + record] + raw[first:second] + raw[second + record :]
        )
    if how == "bytes appended":
        return raw + b"\x00"
    if how == "header only":
        return raw[:HEADER_SIZE]
    if how == "empty":
        return b""
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "flipped byte",
        "flipped header",
        "final record dropped",
        "cut inside a record",
        "records swapped",
        "bytes appended",
        "header only",
        "empty",
    ],
)
def test_a_changed_sealed_file_is_refused(tmp_path: Path, how: str) -> None:
    data = secrets.token_bytes(3 * BLOCK + 7)
    path, key = sealed(tmp_path, data)
    path.write_bytes(_changed(path.read_bytes(), how))
    with pytest.raises(MediaDamaged, match="damaged or was tampered with"):
        copy_out(path, key, io.BytesIO())


def test_another_key_does_not_open_it(tmp_path: Path) -> None:
    path, _ = sealed(tmp_path, b"a photograph")
    with pytest.raises(MediaDamaged, match=str(path)):
        b"".join(read_sealed(path, new_key()))


def test_a_plaintext_file_of_an_older_hq_is_copied_as_it_is(tmp_path: Path) -> None:
    data = secrets.token_bytes(BLOCK + 3)
    (tmp_path / "01-photo.jpg").write_bytes(data)
    sink = io.BytesIO()
    copy_out(tmp_path / "01-photo.jpg", None, sink)
    assert sink.getvalue() == data
