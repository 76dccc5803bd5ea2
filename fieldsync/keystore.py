"""Secrets at rest: passphrase-sealed files (Argon2id + XSalsa20-Poly1305) and plain key files.

A sealed file is canonical msgpack ``{"box", "kdf": "argon2id13", "mem", "nonce", "ops",
"salt", "v": 1}`` (SPEC.md §15.3): the KDF cost travels with the file, so a key made on a
laptop still opens on a Pi. Files from before ``v`` existed (format 0, no ``v``) still open.
Files are written atomically (temp file, fsync, rename) with mode 0600.
"""

from __future__ import annotations

import os
import secrets
import unicodedata
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret

from fieldsync.errors import FieldsyncError, InputRefused, NotFound, WrongPassphrase
from fieldsync_protocol import codec
from fieldsync_protocol.errors import RemoteProtocolError

#: Argon2id costs. "moderate" (256 MiB, ~0.4 s on x86; a few s on a Pi 3) is the default.
KDF_PROFILES: dict[str, tuple[int, int]] = {
    "interactive": (
        nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    ),
    "moderate": (nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE),
    "sensitive": (nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE, nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE),
}
DEFAULT_KDF_PROFILE = "moderate"
MIN_PASSPHRASE = 8
_MAX_SEALED_FILE = 64 * 1024
#: Format version of sealed files written here; files without "v" are format 0 (same fields).
SEALED_FORMAT_VERSION = 1


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, readable only by the owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check_output(path: Path, what: str) -> None:
    """Refuse, with a clear message, an output path whose directory does not exist."""
    if path.is_dir():
        raise FieldsyncError(f"{path} is a directory; name the {what} to write inside it")
    if not path.parent.is_dir():
        raise NotFound(f"cannot write {what} {path}: directory {path.parent} does not exist")


def read_file(path: Path, what: str, hint: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{what} not found at {path}; {hint}") from None


def _passphrase_bytes(passphrase: str) -> bytes:
    """NFC-normalised UTF-8: "café" opens the key however the keyboard composed the é."""
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def seal_with_passphrase(
    plaintext: bytes, passphrase: str, profile: str = DEFAULT_KDF_PROFILE
) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise InputRefused(f"passphrase is too short: use at least {MIN_PASSPHRASE} characters")
    try:
        ops, mem = KDF_PROFILES[profile]
    except KeyError:
        raise InputRefused(
            f"unknown KDF profile {profile!r}; use one of {', '.join(KDF_PROFILES)}"
        ) from None
    salt = secrets.token_bytes(nacl.pwhash.argon2id.SALTBYTES)
    secret = _passphrase_bytes(passphrase)
    key = nacl.pwhash.argon2id.kdf(32, secret, salt, opslimit=ops, memlimit=mem)
    nonce = secrets.token_bytes(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(key).encrypt(plaintext, nonce).ciphertext
    return codec.encode(
        {
            "box": box,
            "kdf": "argon2id13",
            "mem": mem,
            "nonce": nonce,
            "ops": ops,
            "salt": salt,
            "v": SEALED_FORMAT_VERSION,
        }
    )


def open_with_passphrase(sealed: bytes, passphrase: str, what: str) -> bytes:
    try:
        fields = codec.as_map(
            codec.decode(sealed, max_size=_MAX_SEALED_FILE, what=what),
            what,
            {"box", "kdf", "mem", "nonce", "ops", "salt"},
            {"v"},
        )
        version = codec.get_int(fields, "v", what, 1) if "v" in fields else 0
        if version > SEALED_FORMAT_VERSION:
            raise InputRefused(
                f"{what} has format version {version}; this fieldsync reads versions 0 to"
                f" {SEALED_FORMAT_VERSION}: upgrade fieldsync to open it"
            )
        if fields["kdf"] != "argon2id13":
            raise InputRefused(f"{what} uses an unknown key derivation {fields['kdf']!r:.20}")
        # Capped at the strongest profile we write: a damaged or hostile file must not make
        # an unlock run for hours or exhaust a Pi's memory.
        ops = codec.get_int(fields, "ops", what, 1, nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE)
        mem = codec.get_int(fields, "mem", what, 8192, nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE)
        salt = codec.get_bytes(fields, "salt", what, nacl.pwhash.argon2id.SALTBYTES)
        nonce = codec.get_bytes(fields, "nonce", what, nacl.secret.SecretBox.NONCE_SIZE)
        box = codec.get_bytes(fields, "box", what)
    except RemoteProtocolError as exc:
        raise InputRefused(f"{what} is damaged: {exc}") from exc
    secret = _passphrase_bytes(passphrase)
    key = nacl.pwhash.argon2id.kdf(32, secret, salt, opslimit=ops, memlimit=mem)
    try:
        return nacl.secret.SecretBox(key).decrypt(box, nonce)
    except nacl.exceptions.CryptoError:
        raise WrongPassphrase(f"wrong passphrase for {what}") from None


def load_map(data: bytes, what: str, keys: set[str]) -> dict[str, Any]:
    """Decode one of our own msgpack files, turning damage into a clear error."""
    try:
        return codec.as_map(codec.decode(data, what=what), what, keys)
    except RemoteProtocolError as exc:
        raise InputRefused(f"{what} is damaged ({exc}); restore it from a backup") from exc
