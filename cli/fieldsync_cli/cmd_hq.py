"""Headquarters commands: ``network create`` and ``hq enroll|ingest|export|receipts|media``."""

from __future__ import annotations

import sys
from pathlib import Path

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
    """Decrypt, verify and store the reports in bundle FILES (each all or nothing), or
    pulled from the hub with --hub URL (then receipts go back to the hub at once)."""
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
                    "pushed": pushed,
                    "receipts_new": hub.receipts_new,
                }
            }
            say(
                f"hub {hub_url}: pulled {hub.pulled.items_new} new items;"
                f" signed {hub.receipts_new} new"
                f" receipts and pushed {pushed['items_sent'] if pushed else 0} items back"
            )
    finally:
        headquarters.close()
    data = summary.as_dict()
    say(
        f"ingested: {data['new']} new, {data['duplicate']} duplicate, {data['rejected']} rejected,"
        f" {data['forks']} forks"
    )
    for reason, count in sorted(data["rejected_reasons"].items()):
        say(f"  rejected {count}: {reason}")
    for alert in data["fork_alerts"]:
        say(
            f"  FORK ALERT {alert['author_name'] or alert['author_key']}"
            f" seq {alert['sequence']}: {alert['detail']}"
        )
    for author, missing in sorted(data["gaps"].items()):
        say(f"  gap: {author} is missing sequence numbers {_ranges(missing)}")
    media = data["media"]
    if data["chunks"] or any(media.values()):
        say(
            f"  media: {data['chunks']} new chunks; {media.get('verified', 0)} attachments"
            f" verified, {media.get('pending', 0)} pending, {media.get('failed', 0)} FAILED"
            " (see `fieldsync hq media`)"
        )
    emit(as_json, {**data, **hub_data})


def _ranges(numbers: list[int]) -> str:
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)


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
