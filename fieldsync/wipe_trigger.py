"""USB-stick wipe trigger (``[privacy] wipe_trigger``, ``fieldsync wipe-trigger create``).

A trigger file holds a random token; the node's home keeps only the token's SHA-256
(``wipe-trigger.hashes``, one per line, so several sticks can each hold one). The daemon
globs ``[privacy] wipe_trigger`` every ``POLL_SECONDS``; a matching file whose token hashes to
one of those wipes the node (``fieldsync.wipe``) and stops the daemon. A random stick, or
one made for another node, matches nothing: it is logged once and ignored.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from fieldsync import keystore
from fieldsync.errors import FieldsyncError

log = logging.getLogger(__name__)

HASHES_FILE: Final = "wipe-trigger.hashes"
MAGIC: Final = "fieldsync-wipe-trigger v1"
#: A trigger file is a few dozen bytes; anything read past this is not one.
MAX_TRIGGER_BYTES: Final = 4096
POLL_SECONDS: Final = 1.0


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_trigger(home: Path, path: Path) -> Path:
    """Write a new trigger file at ``path`` (a directory: a file named in it) for ``home``.

    The token's hash is added to the home's list; earlier triggers keep working."""
    if path.is_dir():
        path = path / f"fieldsync-wipe-{secrets.token_hex(4)}"
    if path.exists():
        raise FieldsyncError(f"{path} exists: name a new file, or a directory to put it in")
    token = secrets.token_hex(32)
    hashes = home / HASHES_FILE
    try:
        known = hashes.read_bytes() if hashes.exists() else b""
        path.write_text(f"{MAGIC}\n{token}\n", encoding="ascii")
    except OSError as exc:
        raise FieldsyncError(
            f"cannot write the trigger file {path}: {exc.strerror or exc}"
        ) from exc
    keystore.write_private(hashes, known + f"{_digest(token)}\n".encode())
    return path


def known_hashes(home: Path) -> list[str]:
    try:
        text = (home / HASHES_FILE).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def holds_token(path: Path, hashes: list[str]) -> bool:
    """Whether the file at ``path`` is a trigger whose token is one of ``hashes``."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_TRIGGER_BYTES + 1)
    except OSError:
        return False
    lines = data[:MAX_TRIGGER_BYTES].decode("ascii", "replace").split()
    if len(data) > MAX_TRIGGER_BYTES or len(lines) != 3 or " ".join(lines[:2]) != MAGIC:
        return False
    found = _digest(lines[2])
    # Every hash is compared, in constant time each: nothing tells which one matched.
    return any([hmac.compare_digest(found, known) for known in hashes])


class TriggerWatcher:
    """Polls ``pattern``; calls ``wipe`` once when a file matching it holds a known token."""

    def __init__(self, home: Path, pattern: str, wipe: Callable[[str], Awaitable[None]]) -> None:
        self.home = home
        self.pattern = pattern
        self.wipe = wipe
        #: Files that matched the glob but hold no token of this node (logged once each).
        self.rejected: set[Path] = set()
        #: Set after each look that found no trigger (tests wait on it, not on the clock).
        self.looked = asyncio.Event()

    def check(self) -> Path | None:
        """The first file matching the glob that holds a known token (blocking: a thread)."""
        matches = sorted(glob.glob(self.pattern))
        if not matches:
            return None
        hashes = known_hashes(self.home)
        for name in matches:
            path = Path(name)
            if hashes and holds_token(path, hashes):
                return path
            if path not in self.rejected:
                self.rejected.add(path)
                log.warning(
                    "wipe trigger: %s matches [privacy] wipe_trigger but holds no token of"
                    " this node; ignored%s",
                    path,
                    "" if hashes else " (no trigger was created: fieldsync wipe-trigger create)",
                )
        return None

    async def run(self) -> None:
        while True:
            found = await asyncio.to_thread(self.check)
            if found is not None:
                await self.wipe(f"wipe trigger {found}")
                await asyncio.Future()  # nothing left to watch; the daemon is stopping
            self.looked.set()

            await asyncio.sleep(POLL_SECONDS)
