"""Headquarters commands: ``network create`` and
``hq enroll|ingest|export|receipts|quarantine|media``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

from fieldsync.errors import FieldsyncError, NotFound
from fieldsync.exports import FORMATS, WRITERS
from fieldsync.hq import HQ, IngestSummary, create_network
from fieldsync.keystore import DEFAULT_KDF_PROFILE, KDF_PROFILES, check_output, write_private
from fieldsync_cli.common import (
    emit,
    get_passphrase,
    handle_errors,
    json_option,
    passphrase_option,
    progress_printer,
    say,
)
from fieldsync_protocol.keytext import KeyKind, fingerprint, key_to_text

hq_dir_option = click.option(
    "--hq",
    "hq_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="FIELDSYNC_HQ",
    required=True,
    help="HQ directory (or FIELDSYNC_HQ).",
)


@click.group()
def network() -> None:
    """Create a network (run once, at HQ)."""


@network.command()
@click.option("--name", required=True, help="Network name (shown to members).")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="New HQ directory.",
)
@click.option(
    "--kdf-profile",
    type=click.Choice(sorted(KDF_PROFILES)),
    default=DEFAULT_KDF_PROFILE,
    show_default=True,
)
@passphrase_option
@json_option
@handle_errors
def create(
    name: str, out: Path, kdf_profile: str, passphrase_file: Path | None, as_json: bool
) -> None:
    """Make HQ keys, the network key and the root-signed manifest in OUT."""
    passphrase = get_passphrase(passphrase_file, "the new HQ keys", confirm=True)
    manifest = create_network(out, name, passphrase, kdf_profile)
    root = fingerprint(KeyKind.ROOT, manifest.root_key)
    say(f"network {name!r} created in {out}; root fingerprint {root}")
    say("keep the HQ passphrase safe: without it HQ cannot read any report")
    emit(
        as_json,
        {
            "name": name,
            "hq": str(out),
            "root_fingerprint": root,
            "network_id": key_to_text(KeyKind.NETWORK, manifest.network_id),
        },
    )


@click.group()
def hq() -> None:
    """Headquarters: enrol nodes, ingest reports, export, issue receipts."""


@hq.command()
@click.argument("request", type=click.Path(dir_okay=False, path_type=Path))
@hq_dir_option
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Enrolment file to write.",
)
@click.option(
    "--role",
    type=click.Choice(["author", "relay", "hub"]),
    help="Default: author if the request has an author key.",
)
@passphrase_option
@json_option
@handle_errors
def enroll(
    request: Path,
    hq_dir: Path,
    out: Path,
    role: str | None,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Enrol the node that wrote REQUEST; write its enrolment file to OUT."""
    try:
        text = request.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise NotFound(f"enrolment request {request} does not exist") from None
    headquarters = HQ(hq_dir)
    try:
        passphrase = get_passphrase(passphrase_file, "the HQ keys")
        enrolment, summary = headquarters.enroll(text, passphrase, role)
    finally:
        headquarters.close()
    write_private(out, (enrolment + "\n").encode())
    say(
        f"enrolled node {summary['node_fingerprint']} as {summary['role']}; give {out} to its owner"
    )
    if "author" in summary:
        say(
            f"registered author {summary['author_name']!r}:"
            f" compare {summary['author_fingerprint']} in person"
        )
    emit(as_json, {**summary, "enrolment": str(out)})


@hq.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@hq_dir_option
@click.option(
    "--hub", "hub_url", help="Pull from the HQ hub at this WebSocket URL and push receipts back."
)
@passphrase_option
@json_option
@handle_errors
def ingest(
    files: tuple[Path, ...],
    hq_dir: Path,
    hub_url: str | None,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Decrypt, verify and store the reports in bundle FILES, or pulled from the hub with
    --hub URL (then receipts go back to the hub at once).

    Each envelope is accepted, held in the quarantine (with an alert) or dropped as junk,
    on its own: one bad envelope never stops the others. A damaged bundle file is refused
    whole (exit 3, nothing from it ingested)."""
    if not files and hub_url is None:
        raise FieldsyncError("give bundle FILES to ingest, or --hub URL")
    headquarters = HQ(hq_dir)
    hub_data: dict[str, object] = {}
    try:
        passphrase = get_passphrase(passphrase_file, "the HQ keys")
        summary = IngestSummary()
        if files:
            summary = headquarters.ingest_files(files, passphrase, progress_printer("ingest"))
        if hub_url is not None:
            import asyncio

            from fieldsync.daemon import ingest_from_hub

            summary, hub = asyncio.run(ingest_from_hub(headquarters, hub_url, passphrase, summary))
            pushed = hub.pushed.summary() if hub.pushed else None
            hub_data = {
                "hub": {
                    "pulled": hub.pulled.summary(),
                    "pull_complete": hub.pull_complete,
                    "pushed": pushed,
                    "receipts_new": hub.receipts_new,
                }
            }
            say(
                f"hub {hub_url}: pulled {hub.pulled.items_new} new items;"
                f" signed {hub.receipts_new} new"
                f" receipts and pushed {pushed['items_sent'] if pushed else 0} items back"
            )
            if not hub.pull_complete:
                say(
                    f"pull incomplete ({hub.pulled.error}): what arrived before it stopped was"
                    " ingested; run `fieldsync hq ingest --hub` again for the rest"
                )
    finally:
        headquarters.close()
    data = summary.as_dict()
    _say_summary(data)
    emit(as_json, {**data, **hub_data})


def _say_summary(data: dict[str, Any]) -> None:
    say(
        f"ingested {data['envelopes']} envelopes: {data['new']} new, {data['duplicate']}"
        f" duplicate, {data['forks']} forks, {data['quarantined']} held in quarantine,"
        f" {data['junk']} junk dropped"
    )
    for reason, count in sorted(data["quarantined_reasons"].items()):
        say(f"  held {count}: {reason}")
    for reason, count in sorted(data["junk_reasons"].items()):
        say(f"  junk {count}: {reason}")
    if data["quarantine_full"]:
        say(f"  NOT KEPT {data['quarantine_full']}: the quarantine is full (not receipted)")
    if data["failed"]:
        say(f"  FAILED {data['failed']}: could not be recorded; they are tried again next time")
    for alert in data["alerts"]:
        who = alert.get("author_name") or alert.get("author_key") or "-"
        say(f"  ALERT {alert['kind']} {who}: {alert['detail']}")
    if data["alerts_total"] > len(data["alerts"]):
        say(f"  ... {data['alerts_total'] - len(data['alerts'])} more alerts in hq.db")
    for author, ranges in sorted(data["gaps"].items()):
        say(f"  gap: {author} is missing sequence numbers {_ranges(ranges)}")
    _say_media(data["chunks"], data["chunks_failed"], data["media"])


def _say_media(chunks: int, chunks_failed: int, media: dict[str, int]) -> None:
    if chunks or chunks_failed or any(media.values()):
        say(
            f"  media: {chunks} new chunks; {media.get('verified', 0)} attachments"
            f" verified, {media.get('pending', 0)} pending, {media.get('failed', 0)} FAILED"
            " (see `fieldsync hq media`)"
        )
    if chunks_failed:
        say(f"  FAILED {chunks_failed} chunks: could not be recorded; tried again next time")


def _ranges(ranges: list[dict[str, int]]) -> str:
    return ", ".join(
        str(r["first"]) if r["first"] == r["last"] else f"{r['first']}-{r['last']} ({r['count']:,})"
        for r in ranges
    )


@hq.command("export")
@hq_dir_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (default stdout).",
)
@json_option
@handle_errors
def export_(hq_dir: Path, fmt: str, out: Path | None, as_json: bool) -> None:
    """Export all ingested reports (no passphrase: reads the analyst database)."""
    headquarters = HQ(hq_dir)
    try:
        db = headquarters.database()
        if out is None:
            count = WRITERS[fmt](db, sys.stdout)
        else:
            check_output(out, "export file")
            tmp = out.with_name(f".{out.name}.partial")
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                count = WRITERS[fmt](db, handle)
            tmp.replace(out)
            from fieldsync import hq_media

            copied = hq_media.copy_verified(hq_dir, db, out.parent)
            if copied:
                say(f"copied {copied} verified media file(s) to {out.parent / 'media'}")
    finally:
        headquarters.close()
    say(f"exported {count} reports as {fmt}" + (f" to {out}" if out else ""))
    if as_json and out is not None:
        emit(True, {"format": fmt, "reports": count, "out": str(out)})


@hq.command()
@hq_dir_option
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Bundle file to write.",
)
@passphrase_option
@json_option
@handle_errors
def receipts(hq_dir: Path, out: Path, passphrase_file: Path | None, as_json: bool) -> None:
    """Sign receipts for everything ingested and write them (with the manifest) to OUT."""
    headquarters = HQ(hq_dir)
    try:
        passphrase = get_passphrase(passphrase_file, "the HQ keys")
        counts = headquarters.write_receipts_bundle(out, passphrase)
    finally:
        headquarters.close()
    say(
        f"wrote {counts['receipts_total']} receipts ({counts['receipts_new']} new) covering"
        f" {counts['envelopes_receipted']} envelopes to {out}"
    )
    emit(as_json, {"out": str(out), **counts})


@hq.group()
def quarantine() -> None:
    """Envelopes HQ opened but refused, kept for review (receipted as "held")."""


@quarantine.command("list")
@hq_dir_option
@json_option
@handle_errors
def quarantine_list(hq_dir: Path, as_json: bool) -> None:
    """Held envelopes: id, when, author (if known), sequence and why."""
    headquarters = HQ(hq_dir)
    try:
        rows = list(headquarters.quarantine_list())
    finally:
        headquarters.close()
    if as_json:
        emit(True, rows)
        return
    if not rows:
        say("the quarantine is empty")
    for row in rows:
        who = row["author_name"] or row["author_key"] or "unknown author"
        click.echo(
            f"{row['id']:>6}  {row['held_at']}  {who}  seq {row['sequence']}  {row['reason']}"
        )


@quarantine.command("show")
@click.argument("entry_id", type=int)
@hq_dir_option
@json_option
@handle_errors
def quarantine_show(entry_id: int, hq_dir: Path, as_json: bool) -> None:
    """One held envelope (exit 4 when ENTRY_ID is not in the quarantine)."""
    headquarters = HQ(hq_dir)
    try:
        row = headquarters.quarantine_entry(entry_id)
    finally:
        headquarters.close()
    emit(as_json, row, "\n".join(f"{k:15} {v}" for k, v in row.items()))


@quarantine.command("reingest")
@click.argument("entry_ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Every held envelope.")
@hq_dir_option
@passphrase_option
@json_option
@handle_errors
def quarantine_reingest(
    entry_ids: tuple[int, ...],
    everything: bool,
    hq_dir: Path,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Judge held envelopes again (after re-adding an author, restoring a key or a fix).

    Accepted ones leave the quarantine and get an "accepted" receipt (write it out with
    `hq receipts`, or `hq ingest --hub` pushes it): their authors then see them delivered.
    """
    if bool(entry_ids) == everything:
        raise click.UsageError("give quarantine IDs or --all (not both)")
    headquarters = HQ(hq_dir)
    try:
        passphrase = get_passphrase(passphrase_file, "the HQ keys")
        summary = headquarters.reingest(None if everything else entry_ids, passphrase)
    finally:
        headquarters.close()
    data = summary.as_dict()
    say(
        f"reingested: {data['accepted']} accepted, {data['duplicate']} duplicate,"
        f" {data['forks']} forks, {data['still_held']} still held;"
        f" {data['receipts_new']} new receipts"
    )
    for reason, count in sorted(data["still_held_reasons"].items()):
        say(f"  still held {count}: {reason}")
    _say_media(0, 0, data["media"])
    emit(as_json, data)


@hq.command()
@click.argument("report_id", required=False)
@hq_dir_option
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Copy the report's verified files into this directory.",
)
@json_option
@handle_errors
def media(hq_dir: Path, report_id: str | None, out: Path | None, as_json: bool) -> None:
    """Attachments HQ knows of (verified, pending k/n, failed); with REPORT_ID --out DIR,
    extract that report's files (refused while any of them is not verified)."""
    from fieldsync import hq_media

    headquarters = HQ(hq_dir)
    try:
        db = headquarters.database()
        if out is not None:
            if report_id is None:
                raise FieldsyncError("give the REPORT_ID whose files to extract with --out")
            written = hq_media.extract(hq_dir, db, report_id, out)
            say(f"extracted {len(written)} verified file(s) to {out}")
            emit(as_json, {"files": [str(p) for p in written]}, "\n".join(map(str, written)))
            return
        rows = [s.as_dict() for s in hq_media.statuses(db, report_id)]
    finally:
        headquarters.close()
    if report_id is not None and not rows:
        raise NotFound(f"no report with attachments matches {report_id!r}")
    text = "\n".join(
        f"{r['report_id']}  {r['status']:16} {r['size']:>12,} B  {r['name']}"
        + (f"\n    {r['detail']}" if r["detail"] else "")
        for r in rows
    )
    emit(as_json, rows, text or "no attachments")


# `hq form set|show` lives in its own module, which needs hq_dir_option above: imported
# by name here, last, so that the two modules do not import each other at the top.
hq.add_command(importlib.import_module("fieldsync_cli.cmd_form_hq").hq_form_group)
