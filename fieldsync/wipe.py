"""Panic wipe: destroy every key of a node home at once, leaving only ciphertext.

``wipe_node(home)`` is what ``fieldsync wipe`` runs and what another front end (a web app's
quick exit, a GPIO button, a USB-stick trigger) calls. In order, fastest and most important
first:

1. every key file is overwritten with random bytes, flushed, and unlinked: the author key
   (``author.secret`` and any other ``*.secret``), the node's transport key, the membership
   file (network key and certificate), the enrolment request, the outbox key, a store key if
   there is one, and leftovers of interrupted atomic writes;
2. a daemon running on the home is killed (``SIGKILL``: it holds keys in memory);
3. the store is encrypted under ``store.key`` (``fieldsync.cipher_db``), destroyed in step
   1: the database, its WAL and every old copy of its pages are noise from then on, and its
   files are unlinked (the home can be set up again with ``init``). A store
   still in plaintext (written before encryption and not opened since) keeps its sealed
   items but loses what linked this node's owner to them: own-report marks, the sealed
   outbox, attachment records, peers met; then the WAL is truncated.

Overwriting a file does not reach copies that flash wear levelling or a journaling file
system kept; what makes the rest unreadable is that nothing left can decrypt it (README
"Panic wipe"). Every step runs even if an earlier one failed; the result says what was done.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from fieldsync.cipher_db import DB_ERRORS, connect, destroy_file, is_plaintext, read_key, rotate
from fieldsync.errors import FieldsyncError

#: Key files of a node home (SPEC.md §15), by name. ``*.secret`` adds any others.
KEY_FILES: Final = (
    "author.secret",
    "node.secret",
    "membership.bin",
    "request.txt",
    "outbox.key",
    "store.key",
    "store.key.next",  # a store-key rotation in progress (cipher_db.rotate)
    "unlock.failures",
    "wipe-trigger.hashes",  # not a key, but it would tie a trigger stick to this node
)
STORE_FILE: Final = "store.db"
LOCK_FILE: Final = "daemon.lock"
#: A wipe never waits long for a busy store: keys are already gone by then.
_STORE_TIMEOUT_MS: Final = 500


@dataclass
class WipeResult:
    """What a wipe destroyed; ``problems`` lists steps that could not be completed."""

    home: Path
    destroyed: list[str] = field(default_factory=list)
    daemon_killed: int | None = None
    store_scrubbed: bool = False
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "home": str(self.home),
            "destroyed": list(self.destroyed),
            "daemon_killed": self.daemon_killed,
            "store_scrubbed": self.store_scrubbed,
            "problems": list(self.problems),
            "seconds": round(self.seconds, 3),
        }


def key_files(home: Path) -> list[Path]:
    """Every file of ``home`` that holds or names a key, whatever the node's role."""
    found = {home / name for name in KEY_FILES}
    found.update(home.glob("*.secret"))
    found.update(home.glob(".*.tmp"))  # an interrupted write_private of any of them
    authors = home / "authors"  # room for more than one author key per node
    if authors.is_dir():
        found.update(p for p in authors.rglob("*") if p.is_file())
    return sorted(p for p in found if p.is_file() or p.is_symlink())


def wipe_node(home: Path, *, kill_daemon: bool = True) -> WipeResult:
    """Destroy every key of the node in ``home``; see the module's docstring.

    ``kill_daemon=False``: the caller is the daemon itself (quick exit, USB-stick trigger),
    which stops on its own once the wipe returns."""
    started = time.monotonic()
    result = WipeResult(home)
    for path in key_files(home):
        try:
            destroy_file(path)
        except OSError as exc:
            result.problems.append(f"{path.name}: {exc.strerror or exc}")
        else:
            result.destroyed.append(str(path.relative_to(home)))
    _sync_directory(home, result)
    if kill_daemon:
        result.daemon_killed = _kill_daemon(home, result)
    result.store_scrubbed = scrub_store(home / STORE_FILE, result.problems)
    result.seconds = time.monotonic() - started
    return result


#: Key files of an HQ directory (``fieldsync.hq``), by name; ``*.secret`` adds any others
#: (``network-keys.secret``). Names only: wipe.py imports nothing of HQ's.
HQ_KEY_FILES: Final = (
    "hq.secret",  # root, certificate, receipt and HQ encryption keys, the network key
    "hq.dbkey",  # the key of hq.db: without it the database and every attachment are noise
    "hq.secret.new",  # an HQ passphrase change in progress (or cut short)
    "hq.dbkey.new",
    "hq.dbkey.next",  # an hq.db rekey in progress (or cut short)
    "unlock.failures",
)
#: The analyst database's files, unlinked once its key is gone (noise without it).
HQ_DATABASE_FILES: Final = ("hq.db", "hq.db-wal", "hq.db-shm")
#: HQ's own relay node (``HQ.hub_node``), wiped as any node.
HQ_NODE: Final = "node"


def wipe_hq(directory: Path) -> WipeResult:
    """Destroy every key of the HQ directory ``directory``, as ``wipe_node`` does a node's.

    1. the key files (``HQ_KEY_FILES``, any ``*.secret``, interrupted writes) are
       overwritten and unlinked: the HQ secrets and the network key, and ``hq.dbkey``, under
       which ``hq.db`` is encrypted; each attachment file under ``media/`` is encrypted under
       its own key kept in ``hq.db``, so all of them become noise at once;
    2. HQ's own node (``node/``, with the network key and its store) is wiped as a node;
    3. ``hq.db`` and its WAL are unlinked (noise already).

    What stays: ``manifest.item`` (public: every member holds it), forms, and the noise of
    ``media/``. Not reached: exports and extracted attachments written elsewhere, an
    ``hq.db`` still in plaintext (an older release's never opened since: only unlinked),
    and the memory of a running ``hq serve``, which holds the database key until it stops.
    """
    started = time.monotonic()
    result = WipeResult(directory)
    found = {directory / name for name in HQ_KEY_FILES}
    found.update(directory.glob("*.secret"))
    found.update(directory.glob(".*.tmp"))
    for path in sorted(p for p in found if p.is_file() or p.is_symlink()):
        try:
            destroy_file(path)
        except OSError as exc:
            result.problems.append(f"{path.name}: {exc.strerror or exc}")
        else:
            result.destroyed.append(path.name)
    _sync_directory(directory, result)
    node = directory / HQ_NODE
    if node.is_dir():
        inner = wipe_node(node)
        result.destroyed.extend(f"{HQ_NODE}/{name}" for name in inner.destroyed)
        result.problems.extend(f"{HQ_NODE}/{problem}" for problem in inner.problems)
        result.daemon_killed = inner.daemon_killed
    for name in HQ_DATABASE_FILES:
        try:
            (directory / name).unlink(missing_ok=True)
        except OSError as exc:
            result.problems.append(f"{name}: {exc.strerror or exc}")
    result.store_scrubbed = not (directory / HQ_DATABASE_FILES[0]).exists()
    result.seconds = time.monotonic() - started
    return result


def _sync_directory(home: Path, result: WipeResult) -> None:
    try:
        fd = os.open(home, os.O_RDONLY)
    except OSError as exc:
        result.problems.append(f"{home}: {exc.strerror or exc}")
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _kill_daemon(home: Path, result: WipeResult) -> int | None:
    """Kill the daemon that holds ``home``'s lock, if one does; its pid."""
    path = home / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    except OSError as exc:
        result.problems.append(f"{LOCK_FILE}: {exc.strerror or exc}")
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: a daemon runs
        else:
            return None  # nobody holds it (the pid in it, if any, is stale)
        try:
            pid = int(json.loads(os.pread(fd, 4096, 0) or b"{}").get("pid", 0))
        except (ValueError, AttributeError):
            pid = 0
        if pid <= 1 or pid == os.getpid():
            result.problems.append("a daemon holds the home but its pid is not recorded")
            return None
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        except PermissionError:
            result.problems.append(f"daemon pid {pid} runs as another user: stop it")
            return None
        return pid
    finally:
        os.close(fd)


#: What links the node's owner to reports and peers; the items themselves stay (sealed).
_SCRUB: Final = (
    "UPDATE items SET own = 0, origin = NULL WHERE own = 1 OR origin IS NOT NULL",
    "DELETE FROM sealed_outbox",
    "DELETE FROM outbox_tips",  # the outbox tip migration: chain positions, own report ids
    "DELETE FROM outbox_ids",
    "DELETE FROM outbox",  # the plaintext tables of a store from before migration 7
    "DELETE FROM author_chain",
    "DELETE FROM own_attachments",
    "DELETE FROM own_chunks",
    "DELETE FROM peers",
    "DELETE FROM origins",
)


def scrub_store(path: Path, problems: list[str]) -> bool:
    """Remove authorship and peer records from the store at ``path``; False if it could not.

    An encrypted store whose key is gone (a wipe destroyed ``store.key``) is noise: its
    files are unlinked (no overwrite needed), so the home can be set up again. One whose key
    is still there (a duress passphrase) is opened with it."""
    key_file = path.with_suffix(".key")
    if not path.exists():
        return True
    if not (is_plaintext(path) or key_file.exists()):
        for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
            try:
                (path.parent / name).unlink(missing_ok=True)
            except OSError as exc:
                problems.append(f"{name}: {exc.strerror or exc}")
        return True
    try:
        if is_plaintext(path):
            conn = sqlite3.connect(path, isolation_level=None, timeout=_STORE_TIMEOUT_MS / 1000)
        else:
            conn = connect(path, read_key(key_file), timeout=_STORE_TIMEOUT_MS / 1000)
    except (*DB_ERRORS, FieldsyncError) as exc:
        problems.append(f"{STORE_FILE}: {exc}")
        return False
    try:
        conn.execute("PRAGMA secure_delete=ON")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        conn.execute("BEGIN IMMEDIATE")
        for statement in scrub_statements(tables):
            conn.execute(statement)
        conn.execute("COMMIT")
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if not busy and key_file.exists():
            # Duress: the deleted rows' old page images become noise under a new key.
            busy = not rotate(conn, key_file)
    except DB_ERRORS as exc:
        with contextlib.suppress(*DB_ERRORS):
            conn.execute("ROLLBACK")
        problems.append(f"{STORE_FILE}: {exc}")
        return False
    finally:
        conn.close()
    if busy:
        problems.append(f"{STORE_FILE}: the write-ahead log is in use and was not truncated")
    return True


def scrub_statements(tables: set[str]) -> list[str]:
    """The ``_SCRUB`` statements whose table exists (an older store lacks some)."""
    return [s for s in _SCRUB if s.split()[2 if s.startswith("DELETE") else 1] in tables]
