"""Report envelopes: sign, pad, seal to HQ; and HQ's open-and-verify (SPEC.md §8).

Inner header (signed by the author, domain ``report``)::

    {"a": author key, "b": report body bytes, "hk": HQ key id, "n": network id,
     "p": previous header hash, "q": per-author sequence, "t": claimed time, "v": 1}

Signed inner ``{"h": header bytes, "s": signature}`` is padded (``0x80`` then zeros) so the
sealed ciphertext is exactly one of ``SIZE_CLASSES`` bytes, then sealed to HQ's key
``hk``. The outer item relays see is ``{"c": ciphertext, "k": hk, "l": ttl class,
"t": "e", "v": 1}``: no author, no time, no content.

Binding network id and HQ key id *inside* the signature stops surreptitious forwarding:
an inner re-sealed to another HQ key or network fails HQ's check, not just decryption.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from fieldsync_protocol import codec
from fieldsync_protocol.crypto import SEAL_OVERHEAD, Domain, seal, sign, signing_public_key, unseal, verify
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.membership import KEY_SIZE, NETWORK_ID_SIZE, VERSION
from fieldsync_protocol.report import validate_report

#: Sealed ciphertext sizes. Relays see only which class a report falls in.
SIZE_CLASSES = tuple(512 << i for i in range(10))  # 512 B .. 256 KiB
MAX_CIPHERTEXT = SIZE_CLASSES[-1]
#: TTL classes: how long a holder keeps an item after *it* received it (seconds).
TTL_CLASSES = {0: 7 * 86400, 1: 30 * 86400, 2: 90 * 86400, 3: 365 * 86400}
DEFAULT_TTL_CLASS = 3
GENESIS = bytes(32)  # "previous hash" of an author's first report
_PAD_MARK = b"\x80"


def header_hash(header: bytes) -> bytes:
    """Chains an author's reports: report ``q`` names the hash of report ``q-1``."""
    return hashlib.blake2b(header, digest_size=32, person=b"fs-report-chain").digest()


@dataclass(frozen=True)
class SealInput:
    network_id: bytes
    hq_key_id: int
    hq_public_key: bytes
    author_seed: bytes
    sequence: int
    previous: bytes
    claimed_time: int
    body: dict[str, Any]
    ttl_class: int = DEFAULT_TTL_CLASS


@dataclass(frozen=True)
class SealedReport:
    item: bytes  # the outer envelope item, what is stored and synced
    header_hash: bytes  # becomes ``previous`` of the author's next report


def size_class(plain_length: int) -> int:
    """The smallest class that holds ``plain_length`` bytes plus mark and seal overhead."""
    for size in SIZE_CLASSES:
        if plain_length + len(_PAD_MARK) + SEAL_OVERHEAD <= size:
            return size
    raise LocalProtocolError(
        f"report is too large ({plain_length} bytes); the limit is about {MAX_CIPHERTEXT // 1024} KiB"
    )


def seal_report(spec: SealInput, ephemeral_secret: bytes) -> SealedReport:
    validate_report(spec.body)
    if spec.ttl_class not in TTL_CLASSES:
        raise LocalProtocolError(f"unknown TTL class {spec.ttl_class}")
    header = codec.encode(
        {
            "a": signing_public_key(spec.author_seed),
            "b": codec.encode(spec.body),
            "hk": spec.hq_key_id,
            "n": spec.network_id,
            "p": spec.previous,
            "q": spec.sequence,
            "t": spec.claimed_time,
            "v": VERSION,
        }
    )
    signed = codec.encode({"h": header, "s": sign(Domain.REPORT, spec.author_seed, header)})
    target = size_class(len(signed))
    padded = signed + _PAD_MARK + bytes(target - SEAL_OVERHEAD - len(signed) - 1)
    ciphertext = seal(padded, spec.hq_public_key, ephemeral_secret)
    item = codec.encode(
        {"c": ciphertext, "k": spec.hq_key_id, "l": spec.ttl_class, "t": "e", "v": VERSION}
    )
    return SealedReport(item=item, header_hash=header_hash(header))


@dataclass(frozen=True)
class OuterEnvelope:
    """What any holder can see and must check before storing an envelope."""

    hq_key_id: int
    ttl_class: int
    ciphertext: bytes


def parse_outer(item: dict[str, Any]) -> OuterEnvelope:
    what = "envelope"
    codec.as_map(item, what, {"c", "k", "l", "t", "v"})
    ciphertext = codec.get_bytes(item, "c", what)
    if len(ciphertext) not in SIZE_CLASSES:
        raise RemoteProtocolError(f"envelope ciphertext of {len(ciphertext)} bytes is not a size class")
    ttl_class = codec.get_int(item, "l", what, 0, max(TTL_CLASSES))
    return OuterEnvelope(codec.get_int(item, "k", what, 0, 2**32 - 1), ttl_class, ciphertext)


@dataclass(frozen=True)
class OpenedReport:
    """A verified report as HQ sees it."""

    author_key: bytes
    sequence: int
    previous: bytes
    claimed_time: int
    body: dict[str, Any]
    body_bytes: bytes
    header_hash: bytes


def _unpad(padded: bytes) -> bytes:
    stripped = padded.rstrip(b"\0")
    if not stripped.endswith(_PAD_MARK):
        raise RemoteProtocolError("envelope padding is malformed")
    return stripped[:-1]


def open_report(
    outer: OuterEnvelope,
    network_id: bytes,
    hq_secrets: dict[int, bytes],
    authors: dict[bytes, object] | frozenset[bytes] | set[bytes],
) -> OpenedReport:
    """Decrypt and verify; ``authors`` holds the enrolled author keys.

    Raises ``RemoteProtocolError`` with the reason HQ records for a rejected envelope.
    """
    secret = hq_secrets.get(outer.hq_key_id)
    if secret is None:
        raise RemoteProtocolError(f"envelope is sealed to HQ key id {outer.hq_key_id}, which HQ does not hold")
    padded = unseal(outer.ciphertext, secret, "envelope")
    what = "signed report"
    signed = codec.as_map(codec.decode(_unpad(padded), max_size=MAX_CIPHERTEXT, what=what), what, {"h", "s"})
    header_bytes = codec.get_bytes(signed, "h", what)
    signature = codec.get_bytes(signed, "s", what, 64)
    what = "report header"
    header = codec.as_map(
        codec.decode(header_bytes, max_size=MAX_CIPHERTEXT, what=what),
        what,
        {"a", "b", "hk", "n", "p", "q", "t", "v"},
    )
    if codec.get_int(header, "v", what) != VERSION:
        raise RemoteProtocolError(f"report header version {header['v']} is not {VERSION}")
    author = codec.get_bytes(header, "a", what, KEY_SIZE)
    if author not in authors:
        raise RemoteProtocolError("report is signed by an author key HQ never enrolled")
    verify(Domain.REPORT, author, header_bytes, signature, "report")
    if codec.get_bytes(header, "n", what, NETWORK_ID_SIZE) != network_id:
        raise RemoteProtocolError("report was written for another network (forwarded?)")
    if codec.get_int(header, "hk", what, 0, 2**32 - 1) != outer.hq_key_id:
        raise RemoteProtocolError("report was signed for another HQ key than it is sealed to (re-sealed?)")
    body_bytes = codec.get_bytes(header, "b", what)
    body = validate_report(codec.decode(body_bytes, max_size=MAX_CIPHERTEXT, what="report body"))
    return OpenedReport(
        author_key=author,
        sequence=codec.get_int(header, "q", what, 1),
        previous=codec.get_bytes(header, "p", what, 32),
        claimed_time=codec.get_int(header, "t", what, 0, 2**40),
        body=body,
        body_bytes=body_bytes,
        header_hash=header_hash(header_bytes),
    )
