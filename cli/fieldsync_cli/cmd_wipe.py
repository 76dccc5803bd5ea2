"""Panic and duress: ``wipe``, ``wipe-trigger`` and ``duress-set`` (README "Panic wipe",
"Duress passphrase")."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from fieldsync.errors import FieldsyncError, NotInitialised
from fieldsync.node import NODE_SECRET, Node
from fieldsync.wipe import key_files, wipe_node
from fieldsync.wipe_trigger import create_trigger
from fieldsync_cli.common import (
    emit,
    get_passphrase,
    handle_errors,
    json_option,
    passphrase_option,
    say,
)
from fieldsync_cli.main import home_of


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts, panic buttons).")
@json_option
@click.pass_context
@handle_errors
def wipe(ctx: click.Context, yes: bool, as_json: bool) -> None:
    """Destroy every key on this node at once: author, node and network keys.

    What stays is ciphertext nobody can open with anything left on the device. The node
    cannot sync or write reports afterwards; it must be initialised and enrolled again.
    Kills a daemon running on this home. Cannot be undone.
    """
    home = home_of(ctx)
    if not key_files(home) and not (home / NODE_SECRET).exists():
        raise NotInitialised(f"{home} holds no fieldsync keys; nothing to wipe")
    if not yes:
        if not sys.stdin.isatty():
            raise FieldsyncError("wipe destroys every key on this node: add --yes to confirm")
        click.confirm(
            f"Destroy every key in {home}? Reports not yet delivered can no longer be read"
            " by you; this cannot be undone",
            abort=True,
            err=True,
        )
    result = wipe_node(home)
    say(
        f"wiped {home} in {result.seconds:.2f} s: destroyed {', '.join(result.destroyed) or '-'}"
        + (f"; killed daemon pid {result.daemon_killed}" if result.daemon_killed else "")
        + ("; store scrubbed of authorship and peers" if result.store_scrubbed else "")
    )
    for problem in result.problems:
        say(f"warning: {problem}")
    emit(as_json, result.as_dict())


@click.group("wipe-trigger")
def wipe_trigger() -> None:
    """USB-stick wipe trigger: a file that wipes this node when the daemon sees it."""


@wipe_trigger.command("create")
@click.argument("path", type=click.Path(path_type=Path))
@json_option
@click.pass_context
@handle_errors
def wipe_trigger_create(ctx: click.Context, path: Path, as_json: bool) -> None:
    """Write a trigger file at PATH (or in the directory PATH) holding a new random token.

    Only the token's hash stays in the node's home, so a stick made for another node, or
    any other file, wipes nothing. The daemon acts on it when [privacy] wipe_trigger is a
    glob matching where the file shows up (e.g. "/media/*/*/fieldsync-wipe-*").
    """
    home = home_of(ctx)
    if not key_files(home):
        raise NotInitialised(f"{home} holds no fieldsync keys; run fieldsync init first")
    written = create_trigger(home, path)
    say(
        f"wrote wipe trigger {written}: when a file matching [privacy] wipe_trigger holds it,"
        " the daemon wipes every key on this node; earlier triggers keep working"
    )
    emit(as_json, {"trigger": str(written), "home": str(home)})


def _duress_passphrase(path: Path | None) -> str:
    """From --duress-passphrase-file, FIELDSYNC_DURESS_PASSPHRASE, or a hidden prompt."""
    if path is not None:
        return get_passphrase(path, "the duress passphrase")
    from_env = os.environ.get("FIELDSYNC_DURESS_PASSPHRASE")
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise FieldsyncError(
            "the duress passphrase: use --duress-passphrase-file FILE or set"
            " FIELDSYNC_DURESS_PASSPHRASE"
        )
    return str(
        click.prompt("Duress passphrase", hide_input=True, confirmation_prompt=True, err=True)
    )


@click.command("duress-set")
@click.option(
    "--duress-passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the duress passphrase from this file (else FIELDSYNC_DURESS_PASSPHRASE,"
    " else a hidden prompt).",
)
@passphrase_option
@json_option
@click.pass_context
@handle_errors
def duress_set(
    ctx: click.Context,
    duress_passphrase_file: Path | None,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Set a duress passphrase: typed instead of yours, it opens an empty-looking author
    and silently destroys your real key and your list of reports.

    Your reports already sealed stay on the node and still travel to HQ. Asks for your
    passphrase first. Setting it again replaces the previous duress passphrase.
    """
    node = Node(home_of(ctx))
    try:
        passphrase = get_passphrase(passphrase_file, "your author key")
        duress = _duress_passphrase(duress_passphrase_file)
        node.set_duress_passphrase(passphrase, duress)
    finally:
        node.close()
    say("duress passphrase set: typed at any passphrase prompt it opens an empty author")
    emit(as_json, {"duress": True})
