"""Deterministic wrappers over libsodium: domain-separated signatures and sealed boxes.

Every signature covers ``b"fieldsync/1/" + domain + b"\\0" + body`` so a signature made for
one purpose (a receipt) can never be replayed as another (a certificate). Sealing takes
the ephemeral secret as an argument so vectors are byte-exact; the result is exactly what
libsodium's ``crypto_box_seal`` produces and ``crypto_box_seal_open`` opens.
"""

from __future__ import annotations

import hashlib
from enum import Enum

import nacl.bindings as sodium
import nacl.exceptions

from fieldsync_protocol.errors import RemoteProtocolError

SEAL_OVERHEAD = sodium.crypto_box_SEALBYTES  # 48: ephemeral public key + MAC


class Domain(Enum):
    """What a signature is for. Values are part of the signed bytes: never change them."""

    MANIFEST = b"manifest"
    CERTIFICATE = b"certificate"
    ENROLMENT_REQUEST = b"enrolment-request"
    REPORT = b"report"
    RECEIPT = b"receipt"
    REVOCATION = b"revocation"
    KEY_DELIVERY = b"key-delivery"


def _signed_message(domain: Domain, body: bytes) -> bytes:
    return b"fieldsync/1/" + domain.value + b"\0" + body


def sign(domain: Domain, signing_seed: bytes, body: bytes) -> bytes:
    """Ed25519 signature (64 bytes) of ``body`` under ``domain``."""
    secret = sodium.crypto_sign_seed_keypair(signing_seed)[1]
    signed = sodium.crypto_sign(_signed_message(domain, body), secret)
    return signed[: sodium.crypto_sign_BYTES]


def verify(domain: Domain, verify_key: bytes, body: bytes, signature: bytes, what: str) -> None:
    """Raise ``RemoteProtocolError`` unless ``signature`` is valid for ``body``."""
    if (
        len(signature) != sodium.crypto_sign_BYTES
        or len(verify_key) != sodium.crypto_sign_PUBLICKEYBYTES
    ):
        raise RemoteProtocolError(f"{what}: signature or key has the wrong length")
    try:
        sodium.crypto_sign_open(signature + _signed_message(domain, body), verify_key)
    except nacl.exceptions.CryptoError as exc:
        # BadSignatureError; libsodium also refuses small-order keys and non-canonical S.
        raise RemoteProtocolError(f"{what}: signature is not valid") from exc


def signing_public_key(signing_seed: bytes) -> bytes:
    """The ed25519 public key of a 32-byte seed."""
    return sodium.crypto_sign_seed_keypair(signing_seed)[0]


def box_public_key(secret: bytes) -> bytes:
    """The X25519 public key of a 32-byte secret."""
    return sodium.crypto_scalarmult_base(secret)


def _seal_nonce(ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return hashlib.blake2b(ephemeral_public + recipient_public, digest_size=24).digest()


def seal(message: bytes, recipient_public: bytes, ephemeral_secret: bytes) -> bytes:
    """``crypto_box_seal`` with a caller-chosen ephemeral key (fresh random in production).

    ``ephemeral_public || crypto_box(message, nonce, recipient_public, ephemeral_secret)``
    with ``nonce = BLAKE2b-192(ephemeral_public || recipient_public)``.
    """
    ephemeral_public = box_public_key(ephemeral_secret)
    nonce = _seal_nonce(ephemeral_public, recipient_public)
    return ephemeral_public + sodium.crypto_box(message, nonce, recipient_public, ephemeral_secret)


def unseal(sealed: bytes, recipient_secret: bytes, what: str) -> bytes:
    """Open a sealed box; any failure (tampering, wrong key, low-order point) is one error."""
    recipient_public = box_public_key(recipient_secret)
    try:
        return sodium.crypto_box_seal_open(sealed, recipient_public, recipient_secret)
    except (nacl.exceptions.CryptoError, RuntimeError) as exc:
        # CryptoError covers a short input (PyNaCl's TypeError subclasses it) and a bad MAC;
        # PyNaCl raises RuntimeError, not CryptoError, for some low-order points.
        raise RemoteProtocolError(
            f"{what}: cannot be opened with this key (wrong key or damaged)"
        ) from exc


def content_id(data: bytes) -> bytes:
    """BLAKE2b-256 of an item's bytes: its id everywhere."""
    return hashlib.blake2b(data, digest_size=32).digest()


def delivery_tag(item: bytes) -> bytes:
    """What receipts and tombstones name instead of the item id (SPEC.md §9).

    Only someone holding the item's bytes can link a tag to it, so receipts and tombstones
    left on a seized device do not reveal which items it carried.
    """
    return hashlib.blake2b(item, digest_size=32, person=b"fs-delivered").digest()


def derive_key(network_key: bytes, purpose: bytes) -> bytes:
    """A 32-byte subkey of the network key for one purpose (bundle files, pseudonyms)."""
    return hashlib.blake2b(purpose, digest_size=32, key=network_key, person=b"fs-subkey").digest()
