"""HQ commands that change what opens HQ's secrets: ``hq passphrase`` (a new HQ passphrase)
and ``hq rekey`` (a new key for the analyst database). Registered on the ``hq`` group by
``fieldsync_cli.cmd_hq``."""

from __future__ import annotations

from pathlib import Path

import click

from fieldsync_cli.cmd_hq_keys import Decorator
from fieldsync_cli.common import (
    emit,
    get_new_passphrase,
    handle_errors,
    hq_passphrase,
    json_option,
    new_passphrase_option,
    passphrase_option,
    say,
)
from fieldsync_cli.main import open_hq


def register_passphrase_commands(group: click.Group, hq_dir_option: Decorator) -> None:
    """Add ``passphrase`` and ``rekey`` to ``group`` (``fieldsync hq``)."""

    @group.command()
    @hq_dir_option
    @passphrase_option
    @new_passphrase_option
    @json_option
    @handle_errors
    def passphrase(
        hq_dir: Path,
        passphrase_file: Path | None,
        new_passphrase_file: Path | None,
        as_json: bool,
    ) -> None:
        """Change the HQ passphrase: asks the current one, then the new one twice, and seals
        hq.secret and hq.dbkey under the new one. The old one stops working at once.

        Safe to interrupt: the old passphrase or the new one works, never neither. If the
        analyst database key itself may have leaked, run `hq rekey` too."""
        headquarters = open_hq(hq_dir)
        try:
            current = hq_passphrase(hq_dir, passphrase_file)
            headquarters.change_passphrase(
                current, lambda: get_new_passphrase(new_passphrase_file, "the HQ keys")
            )
        finally:
            headquarters.close()
        say(
            f"HQ passphrase changed for {hq_dir}: every hq command now needs the new one;"
            " copies of hq.secret or hq.dbkey made before still open with the old one"
        )
        emit(as_json, {"changed": True, "hq": str(hq_dir)})

    @group.command()
    @hq_dir_option
    @passphrase_option
    @json_option
    @handle_errors
    def rekey(hq_dir: Path, passphrase_file: Path | None, as_json: bool) -> None:
        """Re-encrypt the analyst database (hq.db) under a new random key and destroy the old
        key: after a suspected leak of hq.dbkey's key, the old key opens nothing any more.

        Rewrites the whole database; stop `hq serve` and `hq ingest --hub` first. Safe to
        interrupt: the old key or the new one opens the database, never neither."""
        headquarters = open_hq(hq_dir, hq_passphrase(hq_dir, passphrase_file))
        try:
            headquarters.rekey_database()
        finally:
            headquarters.close()
        say(
            f"{hq_dir / 'hq.db'} re-encrypted under a new key; the old key opens nothing"
            " (backups of hq.db made before are still under the old one)"
        )
        emit(as_json, {"rekeyed": True, "hq": str(hq_dir)})
