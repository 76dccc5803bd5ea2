"""``bundle export`` / ``bundle import``: items carried on a USB stick."""

from __future__ import annotations

from pathlib import Path

import click

from fieldsync.node import Node
from fieldsync_cli.common import emit, handle_errors, json_option, progress_printer, say
from fieldsync_cli.main import home_of


@click.group()
def bundle() -> None:
    """Carry sealed items between nodes and HQ on removable media."""


@bundle.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@click.pass_context
@handle_errors
def export_(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Write every item this node holds to FILE (encrypted under the network key)."""
    node = Node(home_of(ctx))
    try:
        count = node.export_bundle(file, progress_printer("export"))
    finally:
        node.close()
    say(f"exported {count} items to {file}")
    emit(as_json, {"file": str(file), "items": count})


@bundle.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@click.pass_context
@handle_errors
def import_(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Take the items in FILE into this node (all or nothing)."""
    node = Node(home_of(ctx))
    try:
        result = node.import_bundle(file, progress_printer("import"))
    finally:
        node.close()
    counts = result.counts
    say(
        f"imported {file}: {counts.new} new, {counts.duplicate} already held,"
        f" {counts.already_delivered} already delivered; {counts.purged} delivered items deleted;"
        f" {counts.delivered_own} of your reports now delivered"
        + (f", {counts.held_own} held at HQ for review" if counts.held_own else "")
    )
    emit(as_json, {"file": str(file), "items_in_file": result.items_in_file, **counts.as_dict()})
