"""Helpers every command shares: ``--json``, passphrases, output, error mapping, progress."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from fieldsync.cipher_db import DB_ERRORS
from fieldsync.diskerrors import storage_problem
from fieldsync.errors import FieldsyncError, InputRefused, NotFound

P = ParamSpec("P")
R = TypeVar("R")

EXIT_INTERRUPTED = 130


def json_option(func: Callable[P, R]) -> Callable[P, R]:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout."
    )(func)


def _passphrase_file_option(
    flag: str, help_text: str
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    return click.option(flag, type=click.Path(dir_okay=False, path_type=Path), help=help_text)


def passphrase_option(func: Callable[P, R]) -> Callable[P, R]:
    return _passphrase_file_option(
        "--passphrase-file",
        "Read the passphrase from this file (else FIELDSYNC_PASSPHRASE, else a hidden prompt).",
    )(func)


def _given_passphrase(path: Path | None, variable: str, flag: str, needs: str) -> str | None:
    """The passphrase from the file ``path``, else the environment ``variable``; None when a
    person must type it (refused, saying how to give it, when there is no terminal)."""
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise FieldsyncError(f"cannot read passphrase file {path}: {exc.strerror}") from exc
    from_env = os.environ.get(variable)
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise FieldsyncError(f"{needs}: use {flag} FILE or set {variable}")
    return None


def get_passphrase(passphrase_file: Path | None, what: str, confirm: bool = False) -> str:
    """From --passphrase-file, then FIELDSYNC_PASSPHRASE, then a hidden prompt on a terminal."""
    given = _given_passphrase(
        passphrase_file, "FIELDSYNC_PASSPHRASE", "--passphrase-file", f"{what} needs a passphrase"
    )
    if given is not None:
        return given
    return str(click.prompt(f"Passphrase for {what}", hide_input=True, confirmation_prompt=confirm))


def new_passphrase_option(func: Callable[P, R]) -> Callable[P, R]:
    return _passphrase_file_option(
        "--new-passphrase-file",
        "Read the new passphrase from this file (else FIELDSYNC_NEW_PASSPHRASE, else a"
        " hidden prompt, asked twice).",
    )(func)


def get_new_passphrase(new_passphrase_file: Path | None, what: str) -> str:
    """The new passphrase of a change: --new-passphrase-file, then FIELDSYNC_NEW_PASSPHRASE,
    then a hidden prompt asked twice; two different entries are refused (no second try:
    the command is run again, so nothing half-typed is ever kept)."""
    given = _given_passphrase(
        new_passphrase_file,
        "FIELDSYNC_NEW_PASSPHRASE",
        "--new-passphrase-file",
        f"{what} needs a new passphrase",
    )
    if given is not None:
        return given
    first = str(click.prompt(f"New passphrase for {what}", hide_input=True, err=True))
    second = str(click.prompt("The new passphrase again", hide_input=True, err=True))
    if first != second:
        raise InputRefused(
            "the two entries of the new passphrase differ, so the passphrase was not changed:"
            " run the command again and type the same new passphrase twice"
        )
    return first


def hq_passphrase(hq_dir: Path, passphrase_file: Path | None) -> str:
    """The HQ passphrase for a command that reads or writes ``hq.db`` (encrypted under it);
    a directory that is not an HQ is refused before anyone types a passphrase."""
    from fieldsync.hq import HQ_SECRET

    if not (hq_dir / HQ_SECRET).exists():
        raise NotFound(f"{hq_dir} is not an HQ directory (no {HQ_SECRET})")
    return get_passphrase(passphrase_file, "the HQ database")


def say(message: str) -> None:
    """A line for humans, on stderr."""
    click.echo(message, err=True)


def emit(as_json: bool, data: Any, human: str | None = None) -> None:
    """Data on stdout: JSON when asked, else the human form (or nothing)."""
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, sort_keys=True, default=str))
    elif human is not None:
        click.echo(human)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Map typed errors to one message and a documented exit code (README "Exit codes")."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        as_json = bool(kwargs.get("as_json"))
        try:
            return func(*args, **kwargs)
        except FieldsyncError as exc:
            _fail(as_json, str(exc), type(exc).__name__, exc.exit_code)
        except KeyboardInterrupt:
            _fail(as_json, "interrupted", "Interrupted", EXIT_INTERRUPTED)
        except click.Abort:
            # click.prompt turns Ctrl-C and Ctrl-D at a prompt into Abort.
            _fail(
                as_json,
                "cancelled at the prompt; nothing was changed",
                "Interrupted",
                EXIT_INTERRUPTED,
            )
        except BrokenPipeError:
            raise  # stdout closed by the reader (`| head`): click ends quietly
        except (OSError, *DB_ERRORS) as exc:
            problem = storage_problem(exc, _home_or_none())
            if problem is not None:
                _fail(as_json, str(problem), type(problem).__name__, problem.exit_code)
            elif isinstance(exc, OSError):
                # A foreign error translated at the boundary: what the system said, about
                # which file.
                where = f": {exc.filename}" if exc.filename else ""
                _fail(as_json, f"{exc.strerror or exc}{where}", "OSError", 1)
            else:
                _fail(as_json, f"database error: {exc}", "DatabaseError", 1)
        raise AssertionError("unreachable")  # pragma: no cover - _fail always exits

    return wrapper


def _home_or_none() -> Path | None:
    """The node home of the running command, to diagnose its disk; None if unknown."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    from fieldsync_cli.main import home_of

    try:
        return home_of(ctx)
    except (FieldsyncError, KeyError, TypeError):
        return None


def _fail(as_json: bool, message: str, kind: str, code: int) -> None:
    if as_json:
        click.echo(json.dumps({"error": message, "kind": kind, "exit_code": code}))
    click.echo(f"fieldsync: error: {message}", err=True)
    sys.exit(code)


def progress_printer(label: str) -> Callable[[int, int], None] | None:
    """Progress on stderr for long work, only when a person is watching."""
    if not sys.stderr.isatty():
        return None
    last = [-1]

    def show(done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if percent != last[0]:
            last[0] = percent
            click.echo(f"\r{label}: {percent:3d}%", err=True, nl=percent >= 100)

    return show
