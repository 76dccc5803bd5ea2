"""HQ commands that change who belongs to the network (SPEC.md §17): ``hq revoke``,
``hq revoked``, ``hq renew`` and ``hq rotate-network-key``. Registered on the ``hq`` group
by ``fieldsync_cli.cmd_hq``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from fieldsync import hq_revocation
from fieldsync_cli.common import (
    emit,
    get_passphrase,
    handle_errors,
    hq_passphrase,
    json_option,
    passphrase_option,
    say,
)
from fieldsync_cli.main import open_hq

#: The ``--hq HQDIR`` option of ``fieldsync_cli.cmd_hq`` (passed in: no import cycle).
Decorator = Callable[[Callable[..., None]], Callable[..., None]]


def register_key_commands(group: click.Group, hq_dir_option: Decorator) -> None:
    """Add the membership commands to ``group`` (``fieldsync hq``)."""

    @group.command()
    @click.argument("target")
    @hq_dir_option
    @click.option("--reason", default="", help="Why (kept at HQ only; never sent to nodes).")
    @passphrase_option
    @json_option
    @handle_errors
    def revoke(
        target: str, hq_dir: Path, reason: str, passphrase_file: Path | None, as_json: bool
    ) -> None:
        """Revoke a node or an author: TARGET is a node:… or author:… key, a fingerprint,
        or an author's name. The node and the author enrolled with it go together.

        HQ signs a new revocation list; it travels in `hq receipts` bundles and through the
        hub (`hq ingest --hub`) like receipts. Every member that has it refuses the revoked
        node in the handshake and ends its running sessions; reports the author writes after
        the cut-off (the highest sequence HQ has from it now) raise a "revoked author" alert.
        """
        headquarters = open_hq(hq_dir)
        try:
            passphrase = get_passphrase(passphrase_file, "the HQ keys")
            keys = headquarters.unlock(passphrase)
            done = hq_revocation.revoke(
                headquarters.database(), headquarters.manifest(), keys.root_seed, target, reason
            )
        finally:
            headquarters.close()
        for node in done.nodes:
            say(f"revoked node {node}")
        for author, cutoff in done.authors.items():
            say(f"revoked author {author} (reports after sequence {cutoff} raise an alert)")
        say(
            f"signed revocation list {done.serial}: deliver it with `fieldsync hq receipts`"
            " or `fieldsync hq ingest --hub`"
        )
        emit(as_json, done.as_dict())

    @group.command()
    @hq_dir_option
    @passphrase_option
    @json_option
    @handle_errors
    def revoked(hq_dir: Path, passphrase_file: Path | None, as_json: bool) -> None:
        """Every revoked node and author key, with cut-off, reason and list serial."""
        headquarters = open_hq(hq_dir, hq_passphrase(hq_dir, passphrase_file))
        try:
            rows = hq_revocation.revoked_rows(headquarters.database())
        finally:
            headquarters.close()
        text = "\n".join(
            f"{r['revoked_at']}  {r['key']}"
            + (f"  cut-off {r['cutoff']}" if r["kind"] == "author" else "")
            + (f"  ({r['reason']})" if r["reason"] else "")
            for r in rows
        )
        emit(as_json, rows, text or "nothing is revoked")

    @group.command()
    @hq_dir_option
    @click.option(
        "--days",
        type=int,
        default=hq_revocation.CERTIFICATE_DAYS,
        show_default=True,
        help="Validity of the new certificates (HQ time).",
    )
    @passphrase_option
    @json_option
    @handle_errors
    def renew(hq_dir: Path, days: int, passphrase_file: Path | None, as_json: bool) -> None:
        """Renew every member's certificate (revoked nodes excluded), sealed to each node.

        Also signs a fresh revocation list: its time is the clock members judge certificate
        expiry by, so run this at least every half of --days. Deliver with `hq receipts` or
        `hq ingest --hub`, like revocations."""
        headquarters = open_hq(hq_dir)
        try:
            passphrase = get_passphrase(passphrase_file, "the HQ keys")
            keys = headquarters.unlock(passphrase)
            done = hq_revocation.renew(
                hq_dir, headquarters.database(), headquarters.manifest(), keys, days
            )
        finally:
            headquarters.close()
        data = done.as_dict()
        say(
            f"renewed {done.certificates} certificates until {data['expires_utc']}; signed"
            f" revocation list {done.list_serial}: deliver with `fieldsync hq receipts` or"
            " `fieldsync hq ingest --hub`"
        )
        emit(as_json, data)

    @group.command("rotate-network-key")
    @hq_dir_option
    @click.option(
        "--grace",
        "grace_days",
        type=int,
        default=7,
        show_default=True,
        help="Days (of each node's running time) both keys are accepted before the switch.",
    )
    @passphrase_option
    @json_option
    @handle_errors
    def rotate_network_key(
        hq_dir: Path, grace_days: int, passphrase_file: Path | None, as_json: bool
    ) -> None:
        """Replace the network key: every member that is not revoked gets the new one sealed
        to its own node key (with a renewed certificate); after --grace days they use it
        alone, and a revoked device or an ex-member holding the old key gets nothing and
        recognises no announcement. Revoke first, then rotate."""
        headquarters = open_hq(hq_dir)
        try:
            passphrase = get_passphrase(passphrase_file, "the HQ keys")
            keys = headquarters.unlock(passphrase)
            done = hq_revocation.rotate_network_key(
                hq_dir, headquarters.database(), headquarters.manifest(), keys, grace_days
            )
        finally:
            headquarters.close()
        say(
            f"network key {done.network_key_id} sealed to {done.certificates} members; nodes"
            f" switch {grace_days} days (of their running time) after receiving it. Deliver"
            " with `fieldsync hq receipts` or `fieldsync hq ingest --hub`"
        )
        emit(as_json, done.as_dict())
