"""``hq form set|show``: HQ sets the network's report form (SPEC.md §18.4).

Registered on the ``hq`` group at the end of cmd_hq.py (kept apart to avoid conflicts).
"""

from __future__ import annotations

from pathlib import Path

import click

from fieldsync.forms import hq_form, read_form_file, set_hq_form
from fieldsync_cli.cmd_form import form_text
from fieldsync_cli.cmd_hq import hq_dir_option
from fieldsync_cli.cmd_report import ui_language
from fieldsync_cli.common import (
    emit,
    get_passphrase,
    handle_errors,
    json_option,
    passphrase_option,
    say,
)


@click.group("form")
def hq_form_group() -> None:
    """Set or show the network's report form (root-signed; it spreads with receipts)."""


@hq_form_group.command("set")
@click.argument("form_file", type=click.Path(dir_okay=False, path_type=Path))
@hq_dir_option
@passphrase_option
@json_option
@handle_errors
def hq_form_set(form_file: Path, hq_dir: Path, passphrase_file: Path | None, as_json: bool) -> None:
    """Check FORM_FILE (JSON, SPEC.md §18.1), sign it with the root key, make it the form.

    It goes out with the next `hq receipts` bundle; nodes adopt it when its version is
    higher than theirs.
    """
    from fieldsync_cli.main import open_hq

    new = read_form_file(form_file)  # checked before anyone types a passphrase
    headquarters = open_hq(hq_dir)
    try:
        manifest = headquarters.manifest()
        keys = headquarters.unlock(get_passphrase(passphrase_file, "HQ's keys"))
        set_hq_form(hq_dir, new, manifest, keys.root_seed)
    finally:
        headquarters.close()
    say(f"form version {new.version} signed; it travels with the next `hq receipts` bundle")
    emit(as_json, {"version": new.version, "categories": len(new.categories)})


@hq_form_group.command("show")
@hq_dir_option
@click.option("--language", help="Show labels in this language (default: the locale).")
@json_option
@handle_errors
def hq_form_show(hq_dir: Path, language: str | None, as_json: bool) -> None:
    """Print the network's current form (the built-in one until HQ sets its own)."""
    from fieldsync_cli.main import open_hq

    headquarters = open_hq(hq_dir)
    try:
        current = hq_form(hq_dir, headquarters.manifest())
    finally:
        headquarters.close()
    emit(as_json, current.to_map(), form_text(current, ui_language(language)))
