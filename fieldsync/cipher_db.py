"""Encrypted SQLite (SQLCipher) for the node store and HQ's database: crypto-erase at rest.

Every page of the database and of its WAL is encrypted (AES-256, HMAC-SHA512 per page) under
a raw 32-byte key kept apart from the data: for the node store, the file ``store.key`` next
to ``store.db`` (SPEC.md §15); for HQ, a key sealed under the HQ passphrase. Deleting a row
leaves its old page images in the WAL, in freed file-system blocks and on flash cells that
wear levelling moved; they are ciphertext, and ``rotate`` makes them noise: it rewrites
every page under a new key and destroys the old one, after which nothing left on the device
decrypts them (issue 11 item 4; security review M1).

``connect`` is the one way fieldsync opens such a database: the key is set before the first
read, and a wrong or missing key is a ``WrongDatabaseKey`` naming the file, never a half-open
connection. The connection is sqlcipher3's (the DB-API of ``sqlite3``, its own exception
classes): catch ``DB_ERRORS``, not ``sqlite3.Error``, around it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Final, cast

import sqlcipher3

from fieldsync.errors import FieldsyncError
from fieldsync.sqlite_tx import DB_ERRORS as DB_ERRORS

KEY_SIZE: Final = 32
#: The first 16 bytes of every plaintext SQLite database; an encrypted one starts with salt.
PLAINTEXT_HEADER: Final = b"SQLite format 3\x00"
SQLITE_NOTADB: Final = 26
#: Bytes per database page (``PRAGMA cipher_page_size``, SPEC.md §15). SQLCipher's default is
#: 4096. Every transaction of a bulk receive rewrites most pages of the random-key indexes
#: (id, tag), and each page written costs a WAL write and its own AES pass and HMAC: at 4 KiB
#: the per-page part dominates. Larger pages cut writes and reads in store order (deltas),
#: but a random read (a first contact sends in id order) decrypts a whole page for one
#: item. Measured per item, raw SQLCipher with the store's schema, 100k items, a relay's
#: 6 MiB cache (write: 1,024-item transactions; AES-NI on / off as on a Raspberry Pi 4):
#:   page    write         random read   read in seq order
#:   4 KiB   44 / 56 us    18 / 29 us    5.6 / 9.3 us
#:   8 KiB   33 / 47 us    27 / 45 us    3.7 / 6.5 us
#:   16 KiB  29 / 46 us    42 / 84 us    3.0 / 5.9 us
#: 8 KiB keeps most of the gain without tripling a first contact's reads on a Pi.
PAGE_SIZE: Final = 8192
#: The page size of a database written before PAGE_SIZE: opened as it is, never converted.
LEGACY_PAGE_SIZE: Final = 4096
#: Suffix of the key being rotated to, written before ``PRAGMA rekey`` so that a crash
#: mid-rotation leaves a key that opens the database (``open_keyed`` finishes the switch).
NEXT_KEY_SUFFIX: Final = ".next"


class WrongDatabaseKey(FieldsyncError):
    """The key does not decrypt the database (wrong, destroyed, or not the file's)."""

    exit_code = 12


def key_pragma(verb: str, key: bytes, schema: str = "") -> str:
    """``PRAGMA key``/``rekey`` with a raw key: SQLCipher skips its own PBKDF2 for it."""
    if len(key) != KEY_SIZE:
        raise ValueError(f"a database key is {KEY_SIZE} bytes, not {len(key)}")
    prefix = f"{schema}." if schema else ""
    return f"PRAGMA {prefix}{verb} = \"x'{key.hex()}'\""


def is_plaintext(path: Path) -> bool:
    """True if ``path`` is an unencrypted SQLite database (one written before encryption)."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(PLAINTEXT_HEADER)) == PLAINTEXT_HEADER
    except FileNotFoundError:
        return False


def connect(
    path: Path | str, key: bytes, *, timeout: float = 5.0, what: str = "database"
) -> sqlite3.Connection:
    """Open ``path`` (or ``":memory:"``) encrypted under ``key``; autocommit, any thread.

    Raises ``WrongDatabaseKey`` if the key does not open the file. The caller sets its own
    pragmas (journal mode, synchronous) afterwards, as with ``sqlite3.connect``.
    """
    conn = _connect_paged(path, key, PAGE_SIZE, timeout)
    if conn is None:
        # Not under PAGE_SIZE: a database written before it, kept as it is (SQLCipher reads
        # a page size from the connection, never from the file), or the wrong key.
        conn = _connect_paged(path, key, LEGACY_PAGE_SIZE, timeout)
    if conn is None:
        raise WrongDatabaseKey(
            f"{path}: the key does not open this {what} (a wrong key or passphrase,"
            " or the key was destroyed by a wipe); nothing was read or written"
        )
    # Same DB-API as sqlite3.Connection; typed as it so callers need not care which.
    return cast(sqlite3.Connection, conn)


def _connect_paged(
    path: Path | str, key: bytes, page_size: int, timeout: float
) -> sqlcipher3.Connection | None:
    """A connection to ``path`` under ``key`` and ``page_size``; None if they do not open it."""
    conn = sqlcipher3.connect(
        str(path), isolation_level=None, check_same_thread=False, timeout=timeout
    )
    try:
        # SQLCipher logs failed page decryptions to stderr; the caller's error says it all.
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(key_pragma("key", key))
        conn.execute(f"PRAGMA cipher_page_size = {int(page_size)}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlcipher3.DatabaseError as exc:
        conn.close()
        if getattr(exc, "sqlite_errorcode", None) == SQLITE_NOTADB:
            return None
        raise
    return conn


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def overwrite_open_file(fd: int) -> None:
    """Overwrite the whole file behind ``fd`` with random bytes and fsync it.

    On ext4 (data=ordered, no copy-on-write) and most Linux file systems this writes over the
    same disk blocks, so the old bytes are gone from the block device. It does not reach
    copies the file system or the device made elsewhere: the ext4 journal in data=journal
    mode, btrfs/ZFS copy-on-write, snapshots, and above all flash wear levelling (SD cards,
    SSDs remap writes to fresh cells and keep the old ones until garbage collection). That
    is why what matters is the key being gone, not the overwrite: a 32-byte key is a small
    target that is rewritten in one page, and without it the database pages are noise.
    """
    size = os.fstat(fd).st_size
    if size:
        os.pwrite(fd, secrets.token_bytes(size), 0)
    os.fsync(fd)


def destroy_file(path: Path) -> None:
    """Overwrite ``path`` in place with random bytes, flush, unlink (a symlink: unlink only)."""
    if not path.is_symlink():
        fd = os.open(path, os.O_WRONLY)
        try:
            overwrite_open_file(fd)
        finally:
            os.close(fd)
    path.unlink()


def replace_destroying(new: Path, target: Path) -> None:
    """``os.replace(new, target)``, then overwrite the replaced file's old bytes.

    The old inode is held open across the rename, so the overwrite reaches its blocks only
    after the new file is in place: a crash in between leaves the old bytes on disk, never a
    missing file.
    """
    try:
        old_fd: int | None = os.open(target, os.O_WRONLY)
    except FileNotFoundError:
        old_fd = None
    try:
        os.replace(new, target)
        _sync_directory(target.parent)
        if old_fd is not None:
            overwrite_open_file(old_fd)
    finally:
        if old_fd is not None:
            os.close(old_fd)


def _write_key_file(path: Path, key: bytes, *, replace: bool) -> bool:
    """Write ``key`` to a new 0600 file, fsynced, and move it to ``path``: replacing what is
    there (``replace``), or only if nothing is (returns False then, leaving it).

    (Not ``keystore.write_private``: this module sits below keystore in the layers, and the
    create-only case needs ``link`` rather than ``rename``.)"""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    _sync_directory(path.parent)
    return True


def read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != KEY_SIZE:
        raise WrongDatabaseKey(
            f"{path} is damaged ({len(key)} bytes, a key is {KEY_SIZE}); the database it"
            " opens cannot be read without it"
        )
    return key


def create_key(path: Path) -> bytes:
    """A new random key in ``path`` (0600, fsynced); the one already there if another
    process created it first (link() fails rather than replace it)."""
    key = secrets.token_bytes(KEY_SIZE)
    if not _write_key_file(path, key, replace=False):
        return read_key(path)
    return key


def encrypt_plaintext(path: Path, key: bytes) -> None:
    """Replace the plaintext database ``path`` by an encrypted copy under ``key``.

    ``sqlcipher_export`` copies schema and rows into a new file (it does not copy
    ``user_version``, which is set by hand); the copy is fsynced and renamed over the
    original, whose bytes are then overwritten (``replace_destroying``), and the old
    WAL and shared-memory files are removed the same way.
    """
    tmp = path.with_name(f".{path.name}.encrypting")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left by an interrupted migration: the plaintext is still whole
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # owner-only, as before
    plain = sqlcipher3.connect(str(path), isolation_level=None)
    try:
        plain.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        version = int(plain.execute("PRAGMA user_version").fetchone()[0])
        plain.execute(f"ATTACH DATABASE ? AS encrypted KEY \"x'{key.hex()}'\"", (str(tmp),))
        plain.execute(f"PRAGMA encrypted.cipher_page_size = {PAGE_SIZE}")
        plain.execute("SELECT sqlcipher_export('encrypted')")
        plain.execute(f"PRAGMA encrypted.user_version = {version}")
        plain.execute("DETACH DATABASE encrypted")
    finally:
        plain.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for side in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            destroy_file(path.with_name(path.name + side))
    replace_destroying(tmp, path)


def open_keyed(path: Path, key_file: Path, *, timeout: float = 5.0) -> sqlite3.Connection:
    """Open the database ``path`` under the key in ``key_file``, creating the key for a new
    database and encrypting a plaintext one first; see ``connect`` for errors.

    Finishes a rotation a crash interrupted: if the current key no longer opens the file
    but the next one (``key_file`` + ``NEXT_KEY_SUFFIX``) does, that one becomes current.
    """
    next_file = key_file.with_name(key_file.name + NEXT_KEY_SUFFIX)
    fresh = not path.exists() or path.stat().st_size == 0
    if key_file.exists():
        key = read_key(key_file)
    elif fresh or is_plaintext(path):
        key = create_key(key_file)
    else:
        raise WrongDatabaseKey(
            f"{path} is encrypted and its key file {key_file} is missing (destroyed by a"
            f" wipe?): it cannot be opened. Move {path} aside to start with an empty store"
        )
    if is_plaintext(path):
        encrypt_plaintext(path, key)
    try:
        conn = connect(path, key, timeout=timeout, what="store")
    except WrongDatabaseKey:
        if not next_file.exists():
            raise
        conn = connect(path, read_key(next_file), timeout=timeout, what="store")
        replace_destroying(next_file, key_file)
        return conn
    if next_file.exists():  # a rotation that never reached PRAGMA rekey
        destroy_file(next_file)
    return conn


def rotate(conn: sqlite3.Connection, key_file: Path) -> bool:
    """Rewrite every page of ``conn``'s database under a new key, then destroy the old key.

    1. checkpoint and truncate the WAL (its frames are under the old key);
    2. write the new key to ``key_file.next`` (fsynced) *before* the rekey, so a crash at
       any point leaves a key file that opens the database;
    3. ``PRAGMA rekey`` re-encrypts every page, free pages included, in one transaction,
       and a second truncating checkpoint writes them over the old ones in the file;
    4. the new key replaces the old file, whose bytes are then overwritten.

    Returns False, changing nothing, if another connection holds the WAL (the caller
    retries later). No transaction may be open on ``conn``.
    """
    if conn.in_transaction:
        raise RuntimeError("rotate() inside a transaction")
    if conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
        return False
    key = secrets.token_bytes(KEY_SIZE)
    next_file = key_file.with_name(key_file.name + NEXT_KEY_SUFFIX)
    _write_key_file(next_file, key, replace=True)
    conn.execute(key_pragma("rekey", key))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    replace_destroying(next_file, key_file)
    return True
