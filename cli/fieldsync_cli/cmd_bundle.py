"""``bundle export`` / ``bundle import``: items carried on a USB stick."""

from __future__ import annotations

import re
from pathlib import Path

import click

from fieldsync.node import Node
from fieldsync_cli.common import emit, handle_errors, json_option, progress_printer, say
from fieldsync_cli.main import home_of


@click.group()
def bundle() -> None:
    """Carry sealed items between nodes and HQ on removable media."""


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``4G``, ``700M``, ``512K`` or a number of bytes (binary units: 4G = 4 GiB)."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([KMG]?)(i?B)?\s*", text, re.IGNORECASE)
    if match is None:
        raise click.BadParameter(f"{text!r} is not a size like 4G, 700M or 1000000")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


@bundle.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--max-size",
    help="Split into files of at most this size (e.g. 4G for FAT32 sticks); each file imports"
    " on its own. Report texts go in the first file, media after.",
)
@json_option
@click.pass_context
@handle_errors
def export_(ctx: click.Context, file: Path, max_size: str | None, as_json: bool) -> None:
    """Write every item this node holds to FILE (encrypted under the network key)."""
    limit = None if max_size is None else parse_size(max_size)
    node = Node(home_of(ctx))
    try:
        parts = node.export_bundles(file, limit, progress_printer("export"))
    finally:
        node.close()
    count = sum(items for _, items in parts)
    for path, items in parts:
        say(f"exported {items} items to {path}")
    data: dict[str, object] = {"file": str(file), "items": count}
    if len(parts) > 1 or limit is not None:
        data["files"] = [{"file": str(path), "items": items} for path, items in parts]
    emit(as_json, data)


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
