"""Wrong passphrases in a row, counted in a file, and what the last one allowed destroys:
author keys (``[security] wipe_after_wrong_passphrases``, ``Node``) and HQ keys
(``[security] hq_wipe_after_wrong_passphrases``, ``HQ``) share this one mechanism.

Each try is counted *before* the passphrase is tried, under an exclusive lock of the
directory: killing the process during the key derivation, or starting many at once, gets
no guess for free. A right passphrase sets the count back to 0; a try that ended without an
answer (``kill -9``, Ctrl-C, a power cut) stays counted until then. Once the count has
reached the limit, a wrong try destroys the keys, and so does any further try before one
is made (the limit was used up by tries that were cut short): at most ``limit`` passphrases
are ever tried between two right ones.

What this does not do: it bounds guessing through fieldsync on the seized machine only.
Whoever copies the files first (or deletes the count) guesses offline, slowed only by
Argon2id (README "Panic wipe").
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fieldsync import keystore
from fieldsync.errors import FieldsyncError, KeysDestroyed, WrongPassphrase
from fieldsync.faults import crash_point

#: The count's file, in the node home or the HQ directory (only while a limit is set).
UNLOCK_FAILURES: Final = "unlock.failures"


@dataclass(frozen=True)
class WrongPassphraseLimit:
    """Count the passphrases tried in ``directory``; destroy its keys at ``limit``."""

    directory: Path
    #: Wrong passphrases in a row that destroy the keys; 0 (or less): never, nothing counted.
    limit: int
    #: The setting, for messages: ``[security] wipe_after_wrong_passphrases``.
    setting: str
    #: Destroys the keys; returns the names of what it destroyed (for the message).
    destroy: Callable[[], Sequence[str]]
    #: What ``destroy`` destroys, as the message says it: "every key on this node".
    what: str
    #: What to do afterwards, for the message.
    then: str

    @property
    def counter(self) -> Path:
        return self.directory / UNLOCK_FAILURES

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        """One try of a passphrase: the block tries it and raises ``WrongPassphrase`` if it
        is wrong. Another ``FieldsyncError`` (a damaged or missing key file) says nothing
        about the passphrase, so that try is taken off the count again."""
        if self.limit <= 0:
            yield
            return
        tries = self._count(+1)
        if tries > self.limit:
            self._count(-1)  # not tried: the count stays what it was (the limit)
            raise self._destroyed(
                "this passphrase was not tried: the"
                f" {self.limit} wrong passphrases in a row that {self.setting} allows had"
                " already been used up (a try cut short counts)",
                None,
            )
        # Counted, not yet tried: a kill -9 here must leave the try on the count (tests).
        crash_point("wrong-passphrase:counted")
        try:
            yield
        except WrongPassphrase as exc:
            if tries >= self.limit:
                raise self._destroyed(
                    f"{exc}; that was wrong passphrase {tries} of {self.limit} in a row"
                    f" ({self.setting})",
                    exc,
                ) from exc
            raise
        except FieldsyncError:
            self._count(-1)
            raise
        self.reset()

    def reset(self) -> None:
        """A right passphrase: the count starts again from 0."""
        self.counter.unlink(missing_ok=True)

    def _count(self, change: int) -> int:
        """Add ``change`` to the count, durably and under the directory's lock; the new count."""
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                count = int(self.counter.read_text(encoding="ascii").strip() or 0)
            except FileNotFoundError:
                count = 0
            except ValueError:
                # Only a hand could garble it (it is replaced atomically): one try short of
                # the limit, so that damaging the file buys no tries and destroys nothing
                # until a wrong passphrase is typed.
                count = self.limit - 1
            count = max(0, count + change)
            if count:
                keystore.write_private(self.counter, f"{count}\n".encode())
            else:
                self.counter.unlink(missing_ok=True)  # no trace of a try taken back
            return count
        finally:
            os.close(fd)  # releases the lock

    def _destroyed(self, what_happened: str, exc: WrongPassphrase | None) -> KeysDestroyed:
        destroyed = self.destroy()
        return KeysDestroyed(
            f"{what_happened}, so {self.what} was destroyed"
            f" ({', '.join(destroyed) or 'nothing was left'}); {self.then}"
        )
