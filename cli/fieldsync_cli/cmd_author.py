"""``author add|list|passphrase``: several monitors on one node, each with their own key
and passphrase.

Author names are sealed inside each author's key file, so a seized node shows how many
author keys it holds but not whose they are: ``list`` names only the author whose
passphrase is typed.
"""

from __future__ import annotations

from pathlib import Path

import click

from fieldsync.keystore import DEFAULT_KDF_PROFILE, KDF_PROFILES
from fieldsync_cli.common import (
    emit,
    get_new_passphrase,
    get_passphrase,
    handle_errors,
    json_option,
    new_passphrase_option,
    passphrase_option,
    say,
)
from fieldsync_cli.main import author_node
from fieldsync_protocol.keytext import KeyKind, fingerprint


@click.group()
def author() -> None:
    """Monitors of this node: add an author key, see yours, change your passphrase."""


@author.command()
@click.argument("name")
@click.option(
    "--kdf-profile",
    type=click.Choice(sorted(KDF_PROFILES)),
    default=DEFAULT_KDF_PROFILE,
    show_default=True,
    help="Argon2id cost of the first author key; later keys reuse the node's (one unlock"
    " finds any author).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the new author's passphrase from this file"
    " (else FIELDSYNC_PASSPHRASE, else a hidden prompt, asked twice).",
)
@json_option
@click.pass_context
@handle_errors
def add(
    ctx: click.Context, name: str, kdf_profile: str, passphrase_file: Path | None, as_json: bool
) -> None:
    """Create an author key for monitor NAME and an enrolment request for HQ.

    Take the request to HQ in person, as for `init`; `join` with HQ's answer then removes it.
    """
    node = author_node(ctx)
    try:
        passphrase = get_passphrase(passphrase_file, f"the new author key of {name!r}", True)
        path = node.add_author(name, passphrase, kdf_profile)
        request = path.read_text(encoding="ascii").strip()
    finally:
        node.close()
    from fieldsync_protocol.membership import decode_request

    key = decode_request(request).author_key
    assert key is not None  # noqa: S101 - add_author always names the new key
    print_fingerprint = fingerprint(KeyKind.AUTHOR, key)
    say(
        f"author key for {name!r} created; hand {path} to HQ in person and compare this"
        f" fingerprint: {print_fingerprint}; then run `fieldsync join` with HQ's answer"
    )
    emit(
        as_json,
        {"request": str(path), "name": name, "author_fingerprint": print_fingerprint},
        str(path),
    )


@author.command("list")
@click.option(
    "--unlock",
    is_flag=True,
    help="Ask for a passphrase and show whose it is (name and key fingerprint).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --unlock: read the passphrase from this file (else FIELDSYNC_PASSPHRASE,"
    " else a hidden prompt).",
)
@json_option
@click.pass_context
@handle_errors
def list_(ctx: click.Context, unlock: bool, passphrase_file: Path | None, as_json: bool) -> None:
    """How many author keys this node holds; with --unlock, which one is yours.

    Names are sealed under each author's passphrase: nobody can list them all.
    """
    node = author_node(ctx)
    try:
        count = len(node.author_files())
        mine = None
        if unlock:
            opened = node.unlock(get_passphrase(passphrase_file, "your author key"))
            mine = {"name": opened.name, "fingerprint": fingerprint(KeyKind.AUTHOR, opened.key)}
    finally:
        node.close()
    lines = [f"{count} author key{'' if count == 1 else 's'} on this node (names are sealed)"]
    if mine is not None:
        lines.append(f"yours: {mine['name'] or '(no name kept)'}  {mine['fingerprint']}")
    emit(as_json, {"authors": count, "you": mine}, "\n".join(lines))


@author.command()
@passphrase_option
@new_passphrase_option
@json_option
@click.pass_context
@handle_errors
def passphrase(
    ctx: click.Context,
    passphrase_file: Path | None,
    new_passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Change your passphrase: asks the current one (it says which author you are), then the
    new one twice. The old passphrase stops working; a duress passphrase keeps working.

    A wrong current passphrase counts towards [security] wipe_after_wrong_passphrases.
    """
    node = author_node(ctx)
    try:
        current = get_passphrase(passphrase_file, "your author key (the current passphrase)")
        node.change_passphrase(
            current, lambda: get_new_passphrase(new_passphrase_file, "your author key")
        )
    finally:
        node.close()
    # No name or fingerprint: after a duress passphrase the key is the decoy, and whoever
    # forced the change and knows the real fingerprint must not be able to tell.
    say("passphrase changed: use the new one from now on; the old one no longer opens your key")
    emit(as_json, {"changed": True})
