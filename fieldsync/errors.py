"""Typed errors of the fieldsync application, each with the exit code the CLI maps it to.

Messages say what happened and what to do; the CLI prints them as they are.
"""

from __future__ import annotations

#: sysexits.h EX_SOFTWARE: a daemon component failed repeatedly; systemd restarts the daemon.
EXIT_DAEMON_FAILED = 70


class FieldsyncError(Exception):
    """Base class; ``exit_code`` is documented in README.md "Exit codes"."""

    exit_code = 1


class InputRefused(FieldsyncError):
    """Untrusted input (a bundle, a request, a report field) is malformed or forged."""

    exit_code = 3


class NotFound(FieldsyncError):
    """A file, report or directory named by the user does not exist."""

    exit_code = 4


class NotInitialised(FieldsyncError):
    """The node home has not been set up (``fieldsync init``) or has not joined a network."""

    exit_code = 10


class WrongPassphrase(FieldsyncError):
    """A passphrase did not unlock a key."""

    exit_code = 12


class KeysDestroyed(WrongPassphrase):
    """The last wrong passphrase a limit allows (``fieldsync.wrong_passphrases``): the keys
    were destroyed. Still a ``WrongPassphrase`` (the same exit code); a caller that must do
    more tells it apart: asking again is pointless, and a daemon holding keys must stop."""
