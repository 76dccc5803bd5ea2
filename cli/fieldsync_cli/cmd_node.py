"""Node set-up and state: ``init``, ``join``, ``status``."""

from __future__ import annotations

from pathlib import Path

import click

from fieldsync.errors import NotFound
from fieldsync.keystore import DEFAULT_KDF_PROFILE, KDF_PROFILES
from fieldsync.node import Node
from fieldsync_cli.common import emit, get_passphrase, handle_errors, json_option, passphrase_option, say
from fieldsync_cli.main import home_of


@click.command()
@click.option("--author", "author_name", help="Create an author key for this monitor (pseudonym).")
@click.option(
    "--kdf-profile",
    type=click.Choice(sorted(KDF_PROFILES)),
    default=DEFAULT_KDF_PROFILE,
    show_default=True,
    help="Argon2id cost for the author passphrase (interactive = 64 MiB for small devices).",
)
@passphrase_option
@json_option
@click.pass_context
@handle_errors
def init(ctx: click.Context, author_name: str | None, kdf_profile: str, passphrase_file: Path | None, as_json: bool) -> None:
    """Create this node's keys and write an enrolment request for HQ.

    Without --author the node is relay-only: it carries sealed items and can read nothing.
    """
    node = Node(home_of(ctx))
    passphrase = None
    if author_name is not None:
        passphrase = get_passphrase(passphrase_file, f"the new author key of {author_name!r}", confirm=True)
    try:
        path = node.init(author_name, passphrase, kdf_profile)
    finally:
        node.close()
    say(f"node created in {node.home}; hand {path} to HQ in person (or show it as a QR code)")
    emit(as_json, {"request": str(path), "author": author_name is not None}, str(path))


@click.command()
@click.argument("enrolment", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@click.pass_context
@handle_errors
def join(ctx: click.Context, enrolment: Path, as_json: bool) -> None:
    """Join the network with the ENROLMENT file HQ made for this node."""
    node = Node(home_of(ctx))
    try:
        text = enrolment.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise NotFound(f"enrolment file {enrolment} does not exist") from None
    try:
        member = node.join(text)
    finally:
        node.close()
    from fieldsync_protocol.keytext import KeyKind, fingerprint

    root = fingerprint(KeyKind.ROOT, member.manifest.root_key)
    say(f"joined network {member.manifest.name!r} as {member.certificate_info.role}")
    say(f"compare HQ's root fingerprint with HQ by phone: {root}")
    emit(
        as_json,
        {"network": member.manifest.name, "role": member.certificate_info.role, "root_fingerprint": root},
    )


@click.command()
@json_option
@click.pass_context
@handle_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Items held, outbox by status, tombstones and disk used."""
    node = Node(home_of(ctx))
    try:
        info = node.status()
    finally:
        node.close()
    if as_json:
        emit(True, info)
        return
    lines = [f"node        {info['home']} ({info['role']})"]
    if info["joined"]:
        lines.append(f"network     {info['network']}  {info['network_id']}")
        lines.append(f"node key    {info['node']}")
    else:
        lines.append("network     not joined yet")
    items = info["items"]
    lines.append(
        f"items       {info['items_total']} held: {items['envelope']} reports (sealed),"
        f" {items['receipt']} receipts, {items['manifest']} manifests"
    )
    lines.append(f"outbox      {info['outbox']['sealed']} sealed, {info['outbox']['delivered']} delivered")
    lines.append(f"tombstones  {info['tombstones']}")
    lines.append(f"disk        {info['disk_bytes'] / 1024:.0f} KiB")
    click.echo("\n".join(lines))
