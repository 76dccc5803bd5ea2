"""Report envelopes: sign, pad, seal to HQ; and HQ's open-and-verify (SPEC.md §8).

Inner header (signed by the author, domain ``report``)::

    {"a": author key, "b": report body bytes, "hk": HQ key id, "l": TTL class,
     "n": network id, "p": previous header hash, "q": per-author sequence,
     "t": claimed time, "v": 1}

Signed inner ``{"h": header bytes, "s": signature}`` is padded (``0x80`` then zeros) so the
sealed ciphertext is exactly one of ``SIZE_CLASSES`` bytes, then sealed to HQ's key
``hk``. The outer item relays see is ``{"c": ciphertext, "k": hk, "l": ttl class,
"t": "e", "v": 1}``: no author, no time, no content.

Binding network id and HQ key id *inside* the signature stops surreptitious forwarding:
an inner re-sealed to another HQ key or network fails HQ's check, not just decryption.
The TTL class is bound too, so every outer field is either authenticated (``k``, ``l``,
``c``) or a constant (``t``, ``v``): no change to an envelope's bytes reaches HQ intact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

from fieldsync_protocol import codec
from fieldsync_protocol.crypto import (
    SEAL_OVERHEAD,
    Domain,
    seal,
    sign,
    signing_public_key,
    unseal,
    verify,
)
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.membership import (
    KEY_SIZE,
    MAX_KEY_ID,
    NETWORK_ID_SIZE,
    VERSION,
    is_version,
)

# MAX_CIPHERTEXT and SIZE_CLASSES are re-exported: callers import them from here.
from fieldsync_protocol.padding import MAX_CIPHERTEXT as MAX_CIPHERTEXT
from fieldsync_protocol.padding import SIZE_CLASSES as SIZE_CLASSES
from fieldsync_protocol.padding import pad, unpad
from fieldsync_protocol.padding import size_class as _size_class
from fieldsync_protocol.report import validate_report

#: TTL classes: how long a holder keeps an item after *it* received it (seconds).
TTL_CLASSES = {0: 7 * 86400, 1: 30 * 86400, 2: 90 * 86400, 3: 365 * 86400}
DEFAULT_TTL_CLASS = 3
GENESIS = bytes(32)  # "previous hash" of an author's first report
MAX_SEQUENCE = 2**63 - 1
#: 9999-12-31T23:59:59Z: the last second every calendar library can show (SPEC.md §8.1).
MAX_CLAIMED_TIME = 253_402_300_799


class RefusedSignedReport(RemoteProtocolError):
    """An enrolled author's valid signature over a header HQ refuses (§8.6 steps 9-13):
    ``author_key`` says who signed it, so HQ can name the author in its alert."""

    def __init__(self, message: str, author_key: bytes) -> None:
        super().__init__(message)
        self.author_key = author_key


class NotSealedToHQ(RemoteProtocolError):
    """The envelope does not open under HQ's key for its key id (SPEC.md §8.6 step 3): junk."""


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
    return _size_class(plain_length, SEAL_OVERHEAD, "report")


def _check_input(spec: SealInput) -> None:
    problems = [
        (len(spec.network_id) != NETWORK_ID_SIZE, "network id must be 16 bytes"),
        (not 0 <= spec.hq_key_id <= MAX_KEY_ID, f"HQ key id must be 0..{MAX_KEY_ID}"),
        (len(spec.hq_public_key) != KEY_SIZE, "HQ public key must be 32 bytes"),
        (not 1 <= spec.sequence <= MAX_SEQUENCE, "sequence numbers start at 1"),
        (len(spec.previous) != KEY_SIZE, "previous header hash must be 32 bytes"),
        (not 0 <= spec.claimed_time <= MAX_CLAIMED_TIME, "claimed time is out of range"),
        (spec.ttl_class not in TTL_CLASSES, f"unknown TTL class {spec.ttl_class}"),
    ]
    for bad, message in problems:
        if bad:
            raise LocalProtocolError(message)


def seal_report(spec: SealInput, ephemeral_secret: bytes) -> SealedReport:
    """Sign the report as the author, pad it, seal it to HQ and wrap it as an item."""
    validate_report(spec.body)
    _check_input(spec)
    header = codec.encode(
        {
            "a": signing_public_key(spec.author_seed),
            "b": codec.encode(spec.body),
            "hk": spec.hq_key_id,
            "l": spec.ttl_class,
            "n": spec.network_id,
            "p": spec.previous,
            "q": spec.sequence,
            "t": spec.claimed_time,
            "v": VERSION,
        }
    )
    signed = codec.encode({"h": header, "s": sign(Domain.REPORT, spec.author_seed, header)})
    padded = pad(signed, SEAL_OVERHEAD, "report")
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
    """Check the fields of a decoded envelope item (what every holder can check)."""
    what = "envelope"
    codec.as_map(item, what, {"c", "k", "l", "t", "v"})
    if item["t"] != "e" or not is_version(item["v"]):
        raise RemoteProtocolError("envelope item has the wrong type or version")
    ciphertext = codec.get_bytes(item, "c", what)
    if len(ciphertext) not in SIZE_CLASSES:
        raise RemoteProtocolError(
            f"envelope ciphertext of {len(ciphertext)} bytes is not a size class"
        )
    ttl_class = codec.get_int(item, "l", what, 0, max(TTL_CLASSES))
    return OuterEnvelope(codec.get_int(item, "k", what, 0, MAX_KEY_ID), ttl_class, ciphertext)


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


def open_report(
    outer: OuterEnvelope,
    network_id: bytes,
    hq_secrets: Mapping[int, bytes],
    authors: Container[bytes],
) -> OpenedReport:
    """Decrypt and verify; ``authors`` holds the enrolled author keys.

    ``authors`` may be any container: a set, or a mapping from key to name.

    Raises ``RemoteProtocolError`` with the reason HQ records for a refused envelope:
    ``NotSealedToHQ`` when it does not open under HQ's key (junk HQ may drop), any other
    when HQ could not rule out a real report (HQ holds it, SPEC.md §9). The checks run in the order
    of SPEC.md §8.6.
    """
    secret = hq_secrets.get(outer.hq_key_id)
    if secret is None:  # held, not junk: HQ may have lost or not yet restored that key
        raise RemoteProtocolError(
            f"envelope is sealed to HQ key id {outer.hq_key_id}, which HQ does not hold"
        )
    try:
        padded = unseal(outer.ciphertext, secret, "envelope")
    except RemoteProtocolError as exc:
        raise NotSealedToHQ(str(exc)) from exc
    what = "signed report"
    signed = codec.as_map(
        codec.decode(unpad(padded, "envelope"), max_size=MAX_CIPHERTEXT, what=what),
        what,
        {"h", "s"},
    )
    header_bytes = codec.get_bytes(signed, "h", what)
    signature = codec.get_bytes(signed, "s", what, 64)
    what = "report header"
    header = codec.as_map(
        codec.decode(header_bytes, max_size=MAX_CIPHERTEXT, what=what),
        what,
        {"a", "b", "hk", "l", "n", "p", "q", "t", "v"},
    )
    version = codec.get_int(header, "v", what)
    if version != VERSION:
        raise RemoteProtocolError(f"report header version {version} is not {VERSION}")
    author = codec.get_bytes(header, "a", what, KEY_SIZE)
    if author not in authors:
        raise RemoteProtocolError("report is signed by an author key HQ never enrolled")
    verify(Domain.REPORT, author, header_bytes, signature, "report")
    try:
        return _verified_report(outer, network_id, author, header, header_bytes)
    except RemoteProtocolError as exc:
        raise RefusedSignedReport(str(exc), author) from exc


def _verified_report(
    outer: OuterEnvelope,
    network_id: bytes,
    author: bytes,
    header: dict[str, Any],
    header_bytes: bytes,
) -> OpenedReport:
    """SPEC.md §8.6 steps 9-13, once the author's signature is known to be good."""
    what = "report header"
    if codec.get_bytes(header, "n", what, NETWORK_ID_SIZE) != network_id:
        raise RemoteProtocolError("report was written for another network (forwarded?)")
    if codec.get_int(header, "hk", what, 0, MAX_KEY_ID) != outer.hq_key_id:
        raise RemoteProtocolError(
            "report was signed for another HQ key than it is sealed to (re-sealed?)"
        )
    if codec.get_int(header, "l", what, 0, max(TTL_CLASSES)) != outer.ttl_class:
        raise RemoteProtocolError("envelope TTL class differs from the signed one (altered?)")
    body_bytes = codec.get_bytes(header, "b", what)
    body = validate_report(codec.decode(body_bytes, max_size=MAX_CIPHERTEXT, what="report body"))
    return OpenedReport(
        author_key=author,
        sequence=codec.get_int(header, "q", what, 1, MAX_SEQUENCE),
        previous=codec.get_bytes(header, "p", what, KEY_SIZE),
        claimed_time=codec.get_int(header, "t", what, 0, MAX_CLAIMED_TIME),
        body=body,
        body_bytes=body_bytes,
        header_hash=header_hash(header_bytes),
    )
