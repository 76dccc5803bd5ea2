"""Secrets at rest: passphrase-sealed files (Argon2id + XSalsa20-Poly1305) and plain key files.

A sealed file is canonical msgpack ``{"box", "kdf": "argon2id13", "mem", "nonce", "ops",
"salt", "v": 2}`` (SPEC.md §15.3): the KDF cost travels with the file, so a key made on a
laptop still opens on a Pi. Files from before ``v`` existed (format 0, no ``v``) still open.
Files are written atomically (temp file, fsync, rename) with mode 0600; ``replace_private``
also overwrites the replaced file's bytes (a passphrase change: the old passphrase was seen).

An author key file also holds a second box, ``alt`` (format 2): random bytes, or the decoy
seed sealed under a *duress* passphrase with the same salt and costs, so one Argon2id run
tries both and the file looks the same whether a duress passphrase is set or not.

New passphrases must be at least ``MIN_PASSPHRASE`` characters and score at least
``MIN_STRENGTH`` (of 4) on zxcvbn's guessability estimate.
"""

from __future__ import annotations

import os
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret

from fieldsync import cipher_db
from fieldsync.errors import FieldsyncError, InputRefused, NotFound, WrongPassphrase
from fieldsync.faults import crash_point
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
MIN_PASSPHRASE = 12
#: zxcvbn score (0-4) a new passphrase needs: 3 = "safely unguessable" offline at ~10^10 guesses.
MIN_STRENGTH = 3
#: zxcvbn's cost grows with length; the first characters are enough to judge strength.
_STRENGTH_INPUT = 100
_MAX_SEALED_FILE = 64 * 1024
#: Format version of sealed files written here; files without "v" are format 0 (same fields),
#: format 1 has no ``alt``.
SEALED_FORMAT_VERSION = 2
_NONCE = nacl.secret.SecretBox.NONCE_SIZE
#: ``alt``: nonce || secretbox(32-byte seed), the same size whether it is real or random.
ALT_BOX_SIZE = _NONCE + 32 + nacl.secret.SecretBox.MACBYTES


def _write_beside(path: Path, data: bytes) -> Path:
    """``data`` in a new 0600 file next to ``path`` (``.NAME.tmp``, which a wipe destroys
    too), fsynced; returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, readable only by the owner."""
    os.replace(_write_beside(path, data), path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def replace_private(path: Path, data: bytes, crash_label: str) -> None:
    """Replace ``path`` with ``data`` as ``write_private`` does, then overwrite the old
    file's bytes: a key sealed under a passphrase someone saw must not stay readable in
    the file system's free blocks (``cipher_db.replace_destroying``).

    Crash points (``fieldsync.faults.crash_point``): ``LABEL:written`` with the new file
    complete beside the old one, ``LABEL:replaced`` once it is in place."""
    tmp = _write_beside(path, data)
    crash_point(f"{crash_label}:written")
    cipher_db.replace_destroying(tmp, path)
    crash_point(f"{crash_label}:replaced")


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


def check_passphrase_strength(passphrase: str, user_inputs: Sequence[str] = ()) -> None:
    """Refuse a new passphrase that is short or guessable, saying why and what to do.

    ``user_inputs``: words an attacker would try first (the author's pseudonym, the network).
    """
    if len(passphrase) < MIN_PASSPHRASE:
        raise InputRefused(
            f"passphrase is too short: use at least {MIN_PASSPHRASE} characters"
            " (several uncommon words are easiest to remember)"
        )
    import zxcvbn  # imported here: it loads large word lists, needed only for new passphrases

    result = zxcvbn.zxcvbn(passphrase[:_STRENGTH_INPUT], user_inputs=list(user_inputs))
    score = int(result["score"])
    if score < MIN_STRENGTH:
        feedback = result.get("feedback") or {}
        advice = [str(feedback.get("warning") or "").strip()]
        advice += [str(s).strip() for s in feedback.get("suggestions") or ()]
        why = " ".join(a if a.endswith(".") else a + "." for a in advice if a)
        raise InputRefused(
            f"passphrase is too easy to guess (strength {score} of 4, {MIN_STRENGTH} needed)."
            f" {why or 'Add another word or two.'} Uncommon words, not a sentence from a song"
            " or a book, make a strong passphrase"
        )


def _profile_costs(profile: str) -> tuple[int, int]:
    try:
        return KDF_PROFILES[profile]
    except KeyError:
        raise InputRefused(
            f"unknown KDF profile {profile!r}; use one of {', '.join(KDF_PROFILES)}"
        ) from None


def seal_with_passphrase(
    plaintext: bytes,
    passphrase: str,
    profile: str = DEFAULT_KDF_PROFILE,
    *,
    with_alt: bool = False,
    user_inputs: Sequence[str] = (),
    check_strength: bool = True,
    like: bytes | None = None,
) -> bytes:
    """Seal ``plaintext`` under a new passphrase (checked for strength first).

    ``with_alt``: add an ``alt`` box of random bytes (author keys), which ``set_duress``
    can later replace by a decoy sealed under a duress passphrase. ``check_strength``
    False only re-seals under a passphrase that was checked when it was set.
    ``like``: another sealed file whose salt and costs to reuse (``profile`` is then
    ignored), so that one key derivation tries every author key of a node (``open_first``).
    """
    if like is None:
        ops, mem = _profile_costs(profile)
        salt = secrets.token_bytes(nacl.pwhash.argon2id.SALTBYTES)
    else:
        model = _parse_sealed(like, "author key")
        ops, mem, salt = model.ops, model.mem, model.salt
    if check_strength:
        check_passphrase_strength(passphrase, user_inputs)
    secret = _passphrase_bytes(passphrase)
    key = nacl.pwhash.argon2id.kdf(32, secret, salt, opslimit=ops, memlimit=mem)
    nonce = secrets.token_bytes(_NONCE)
    box = nacl.secret.SecretBox(key).encrypt(plaintext, nonce).ciphertext
    fields: dict[str, codec.Value] = {
        "box": box,
        "kdf": "argon2id13",
        "mem": mem,
        "nonce": nonce,
        "ops": ops,
        "salt": salt,
        "v": SEALED_FORMAT_VERSION,
    }
    if with_alt:
        fields["alt"] = secrets.token_bytes(ALT_BOX_SIZE)
    return codec.encode(fields)


@dataclass(frozen=True)
class _Sealed:
    """A sealed key file, parsed: Argon2id cost and salt, the box of the secret, and the
    duress passphrase's box (``alt``) when there is one."""

    ops: int
    mem: int
    salt: bytes
    nonce: bytes
    box: bytes
    alt: bytes | None
    fields: dict[str, codec.Value]


def _parse_sealed(sealed: bytes, what: str) -> _Sealed:
    try:
        fields = codec.as_map(
            codec.decode(sealed, max_size=_MAX_SEALED_FILE, what=what),
            what,
            {"box", "kdf", "mem", "nonce", "ops", "salt"},
            {"v", "alt"},
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
        nonce = codec.get_bytes(fields, "nonce", what, _NONCE)
        box = codec.get_bytes(fields, "box", what)
        alt = codec.get_bytes(fields, "alt", what, ALT_BOX_SIZE) if "alt" in fields else None
    except RemoteProtocolError as exc:
        raise InputRefused(f"{what} is damaged: {exc}") from exc
    return _Sealed(ops, mem, salt, nonce, box, alt, fields)


def _derive(parsed: _Sealed, passphrase: str) -> nacl.secret.SecretBox:
    secret = _passphrase_bytes(passphrase)
    key = nacl.pwhash.argon2id.kdf(
        32, secret, parsed.salt, opslimit=parsed.ops, memlimit=parsed.mem
    )
    return nacl.secret.SecretBox(key)


def box_size(sealed: bytes, what: str) -> int:
    """Bytes of the main box's plaintext (a decoy written in its place keeps the size)."""
    return len(_parse_sealed(sealed, what).box) - nacl.secret.SecretBox.MACBYTES


def profile_of(sealed: bytes, what: str) -> str:
    """The KDF profile a sealed file was written with (the default if it matches none)."""
    parsed = _parse_sealed(sealed, what)
    for name, costs in KDF_PROFILES.items():
        if costs == (parsed.ops, parsed.mem):
            return name
    return DEFAULT_KDF_PROFILE


def open_with_passphrase(sealed: bytes, passphrase: str, what: str) -> bytes:
    """The main box's content; a duress passphrase does *not* open it (see ``open_either``)."""
    parsed = _parse_sealed(sealed, what)
    try:
        return _derive(parsed, passphrase).decrypt(parsed.box, parsed.nonce)
    except nacl.exceptions.CryptoError:
        raise WrongPassphrase(f"wrong passphrase for {what}") from None


@dataclass(frozen=True)
class Opened:
    """What a passphrase opened in a sealed key file."""

    plaintext: bytes
    #: True: the passphrase opened the ``alt`` box (a duress passphrase) and ``plaintext``
    #: is the decoy seed.
    duress: bool


def open_either(sealed: bytes, passphrase: str, what: str) -> Opened:
    """Open the main box or, failing that, the ``alt`` box, with one key derivation."""
    return open_first([sealed], passphrase, what)[1]


def open_first(sealed_files: Sequence[bytes], passphrase: str, what: str) -> tuple[int, Opened]:
    """The first of ``sealed_files`` whose main or ``alt`` box ``passphrase`` opens, and its
    index. Files that share salt and costs (``seal_with_passphrase(like=...)``) cost one key
    derivation in all, so unlocking one author of many costs as much as unlocking one."""
    derived: dict[tuple[int, int, bytes], nacl.secret.SecretBox] = {}
    parsed = [_parse_sealed(sealed, what) for sealed in sealed_files]
    for index, one in enumerate(parsed):
        costs = (one.ops, one.mem, one.salt)
        if costs not in derived:
            derived[costs] = _derive(one, passphrase)
        box = derived[costs]
        try:
            return index, Opened(box.decrypt(one.box, one.nonce), duress=False)
        except nacl.exceptions.CryptoError:
            pass
    for index, one in enumerate(parsed):  # every main box before any duress box
        if one.alt is None:
            continue
        try:
            box = derived[(one.ops, one.mem, one.salt)]
            plain = box.decrypt(one.alt[_NONCE:], one.alt[:_NONCE])
        except nacl.exceptions.CryptoError:
            continue
        return index, Opened(plain, duress=True)
    raise WrongPassphrase(f"wrong passphrase for {what}")


def reseal(sealed: bytes, passphrase: str, new_passphrase: str, what: str) -> bytes:
    """``sealed`` with its main box opened by ``passphrase`` and sealed again under
    ``new_passphrase`` (checked for strength by the caller), with a new nonce.

    Salt, costs and the ``alt`` box stay as they are: the ``alt`` box is sealed under a key
    derived from the duress passphrase *with this salt*, so a duress passphrase keeps
    opening its decoy, and the authors of one node keep sharing one key derivation
    (``open_first``). Raises ``WrongPassphrase`` if ``passphrase`` does not open the main box.
    """
    parsed = _parse_sealed(sealed, what)
    plaintext = open_with_passphrase(sealed, passphrase, what)
    nonce = secrets.token_bytes(_NONCE)
    box = _derive(parsed, new_passphrase).encrypt(plaintext, nonce).ciphertext
    return codec.encode({**parsed.fields, "box": box, "nonce": nonce, "v": SEALED_FORMAT_VERSION})


def set_duress(sealed: bytes, duress_passphrase: str, decoy_seed: bytes, what: str) -> bytes:
    """``sealed`` with its ``alt`` box replaced by ``decoy_seed`` under ``duress_passphrase``
    (same salt and costs as the main box, so one derivation tries both)."""
    check_passphrase_strength(duress_passphrase)
    parsed = _parse_sealed(sealed, what)
    nonce = secrets.token_bytes(_NONCE)
    alt = nonce + _derive(parsed, duress_passphrase).encrypt(decoy_seed, nonce).ciphertext
    if len(alt) != ALT_BOX_SIZE:
        raise InputRefused(f"a decoy seed is 32 bytes, not {len(decoy_seed)}")
    return codec.encode({**parsed.fields, "alt": alt, "v": SEALED_FORMAT_VERSION})


def load_map(data: bytes, what: str, keys: set[str]) -> dict[str, Any]:
    """Decode one of our own msgpack files, turning damage into a clear error."""
    try:
        return codec.as_map(codec.decode(data, what=what), what, keys)
    except RemoteProtocolError as exc:
        raise InputRefused(f"{what} is damaged ({exc}); restore it from a backup") from exc
