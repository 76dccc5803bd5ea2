"""Size classes and padding shared by envelopes and attachment chunks (SPEC.md §8.3, §16).

Relays see only which class a ciphertext falls in, never its exact length.
"""

from __future__ import annotations

from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError

#: Ciphertext sizes of envelopes and chunks: 512 B .. 256 KiB.
SIZE_CLASSES = tuple(512 << i for i in range(10))
MAX_CIPHERTEXT = SIZE_CLASSES[-1]
#: Largest item of any kind: the largest ciphertext plus its small map overhead.
MAX_ITEM = MAX_CIPHERTEXT + 64
PAD_MARK = b"\x80"


def size_class(plain_length: int, overhead: int, what: str) -> int:
    """The smallest class holding ``plain_length`` bytes, the pad mark and ``overhead``."""
    for size in SIZE_CLASSES:
        if plain_length + len(PAD_MARK) + overhead <= size:
            return size
    raise LocalProtocolError(
        f"{what} is too large ({plain_length} bytes);"
        f" the limit is about {MAX_CIPHERTEXT // 1024} KiB"
    )


def pad(plain: bytes, overhead: int, what: str) -> bytes:
    """ISO/IEC 7816-4 padding: ``plain || 0x80 || zeros`` to a class minus ``overhead``."""
    target = size_class(len(plain), overhead, what) - overhead
    return plain + PAD_MARK + bytes(target - len(plain) - len(PAD_MARK))


def unpad(padded: bytes, what: str) -> bytes:
    """Remove trailing zeros and exactly one ``0x80``; refuse anything else."""
    stripped = padded.rstrip(b"\0")
    if not stripped.endswith(PAD_MARK):
        raise RemoteProtocolError(f"{what} padding is malformed")
    return stripped[:-1]
