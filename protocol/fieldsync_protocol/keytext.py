"""Text forms of public keys that people read aloud and compare by phone (SPEC.md §3).

``author:ABCDE-FGHIJ-...-XYZ12`` — a kind label, then base32 (RFC 4648 alphabet, no
padding) of the 32-byte key followed by a 3-byte check value, in groups of five.
The check value is BLAKE2b over the kind and the key, so a mistyped character, a swapped
group or a key of another kind pasted in the wrong place is refused with a clear message.
``fingerprint`` is the short form people compare when a whole key is too long to read.
"""

from __future__ import annotations

import base64
import hashlib
from enum import Enum

from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError

KEY_SIZE = 32
NETWORK_ID_SIZE = 16
_CHECK_SIZE = 3
_GROUP = 5


class KeyKind(Enum):
    """Each public key has one kind; its label starts the text form."""

    ROOT = "root"  # ed25519: signs the network manifest (kept offline)
    HQ_ENCRYPTION = "hqenc"  # x25519: reports are sealed to it
    RECEIPT = "receipt"  # ed25519: signs delivery receipts
    CERTIFICATE = "certsign"  # ed25519: signs node certificates
    NODE = "node"  # x25519: a node's Noise static key
    AUTHOR = "author"  # ed25519: a monitor's report-signing key
    NETWORK = "network"  # 16-byte network id (public; not a key, same text form)


def _size(kind: KeyKind) -> int:
    return NETWORK_ID_SIZE if kind is KeyKind.NETWORK else KEY_SIZE


def _check(kind: KeyKind, key: bytes) -> bytes:
    return hashlib.blake2b(
        key, digest_size=_CHECK_SIZE, person=b"fs-keytext", salt=kind.value.encode()[:16]
    ).digest()


def _group(text: str) -> str:
    return "-".join(text[i : i + _GROUP] for i in range(0, len(text), _GROUP))


def _body(kind: KeyKind, key: bytes) -> str:
    return base64.b32encode(key + _check(kind, key)).decode("ascii").rstrip("=")


def key_to_text(kind: KeyKind, key: bytes) -> str:
    """Render ``key`` as ``kind:GROUP-GROUP-...``."""
    if len(key) != _size(kind):
        raise LocalProtocolError(f"a {kind.value} key is {_size(kind)} bytes, not {len(key)}")
    return f"{kind.value}:{_group(_body(kind, key))}"


def key_from_text(kind: KeyKind, text: str) -> bytes:
    """Parse a text form; raise ``RemoteProtocolError`` naming what is wrong.

    Case, spaces and the grouping dashes are free; everything else must be exact.
    """
    label, sep, rest = text.strip().partition(":")
    if not sep:
        raise RemoteProtocolError(f"expected '{kind.value}:...', got no kind label")
    if label != kind.value:
        raise RemoteProtocolError(f"expected a {kind.value} key but this is a {label!r:.20} key")
    compact = rest.replace("-", "").replace(" ", "").upper()
    expected = len(_body(kind, bytes(_size(kind))))
    if len(compact) != expected:
        raise RemoteProtocolError(
            f"{kind.value} key has {len(compact)} characters, not {expected}: some are missing"
            " or extra"
        )
    try:
        raw = base64.b32decode(compact + "=" * (-len(compact) % 8))
    except ValueError as exc:
        raise RemoteProtocolError(f"{kind.value} key has characters outside A-Z, 2-7") from exc
    key, check = raw[:-_CHECK_SIZE], raw[-_CHECK_SIZE:]
    if _body(kind, key) != compact or _check(kind, key) != check:
        raise RemoteProtocolError(
            f"{kind.value} key fails its check characters: a character is wrong or missing"
        )
    return key


def fingerprint(kind: KeyKind, key: bytes) -> str:
    """A short phrase to compare by voice: four groups of five base32 characters."""
    if len(key) != _size(kind):
        raise LocalProtocolError(f"a {kind.value} key is {_size(kind)} bytes, not {len(key)}")
    digest = hashlib.blake2b(key, digest_size=15, person=b"fs-fingerprint").digest()
    body = base64.b32encode(digest).decode("ascii")[:20]
    return f"{kind.value}:{_group(body)}"
