"""Headquarters commands: ``network create`` and
``hq enroll|ingest|alerts|report|export|receipts|quarantine|media|serve``."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

from fieldsync.errors import FieldsyncError, InputRefused, NotFound
from fieldsync.export_filters import CONSENTS, SENSITIVITY_ORDER, STATUSES, ExportOptions
from fieldsync.exports import (
    DELIMITERS,
    FORMATS,
    TEXT_FORMATS,
    CsvStyle,
    export_file,
    export_stream,
)
from fieldsync.hq import IngestSummary, create_network
from fieldsync.keystore import DEFAULT_KDF_PROFILE, KDF_PROFILES, check_output, write_private
from fieldsync_cli.common import (
    emit,
    get_passphrase,
    handle_errors,
    hq_passphrase,
    json_option,
    passphrase_option,
    progress_printer,
    say,
)
from fieldsync_cli.main import open_hq
from fieldsync_protocol.keytext import KeyKind, fingerprint, key_to_text

hq_dir_option = click.option(
    "--hq",
    "hq_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="FIELDSYNC_HQ",
    required=True,
    help="HQ directory (or FIELDSYNC_HQ).",
)


#: ``hq ingest``: it worked, and new alerts appeared (forks, gaps, held or junk envelopes,
#: failed attachments...): look at ``fieldsync hq alerts``. README "Exit codes".
EXIT_ATTENTION = 8

#: Everything an HQ command writes (the database and its WAL, exports, receipts bundles,
#: media) is readable by HQ's user only: the analyst database holds every report in clear.
HQ_UMASK = 0o077


@click.group()
def network() -> None:
    """Create a network (run once, at HQ)."""
    os.umask(HQ_UMASK)


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
    """Headquarters: enrol nodes, ingest reports, alerts, export, issue receipts, serve."""
    os.umask(HQ_UMASK)


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
    headquarters = open_hq(hq_dir)
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
    whole (exit 3, nothing from it ingested). Exit 8 when new alerts appeared (forks, gaps,
    held or junk envelopes, failed attachments): see `fieldsync hq alerts`."""
    if not files and hub_url is None:
        raise FieldsyncError("give bundle FILES to ingest, or --hub URL")
    headquarters = open_hq(hq_dir)
    hub_data: dict[str, object] = {}
    try:
        passphrase = get_passphrase(passphrase_file, "the HQ keys")
        summary = IngestSummary()
        if files:
            summary = headquarters.ingest_files(files, passphrase, progress_printer("ingest"))
        if hub_url is not None:
            import asyncio

            from fieldsync.hq_hub import ingest_from_hub

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
    if summary.attention:
        say(
            f"ATTENTION: {summary.alerts_total} new alert(s): review them with"
            f" `fieldsync hq alerts --hq {hq_dir}` (exit {EXIT_ATTENTION})"
        )
        sys.exit(EXIT_ATTENTION)


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
        if alert["kind"] != "gap":  # gaps are listed below, as ranges per author
            say(
                f"  ALERT {alert['id']} {alert['kind']} {alert['author'] or '-'}: {alert['detail']}"
            )
    if data["alerts_total"] > len(data["alerts"]):
        say(f"  ... {data['alerts_total'] - len(data['alerts'])} more alerts in hq.db")
    for author, ranges in sorted(data["gaps"].items()):
        who = data["gap_authors"].get(author) or author
        say(f"  gap: {who} is missing sequence numbers {_ranges(ranges)}")
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
    help="File to write, 0600 (default stdout; uwazi-zip needs a file).",
)
@click.option("--since", metavar="DATE", help="Occurred on or after DATE (2025-03, 2025-03-01).")
@click.option("--until", metavar="DATE", help="Occurred on or before DATE (a month: all of it).")
@click.option("--received-since", metavar="DATE", help="Received at HQ on or after DATE (UTC).")
@click.option("--received-until", metavar="DATE", help="Received at HQ on or before DATE (UTC).")
@click.option(
    "--category",
    "categories",
    metavar="KEY",
    multiple=True,
    help="Has this category (repeat: any).",
)
@click.option(
    "--author",
    "authors",
    metavar="NAME",
    multiple=True,
    help="By this author name or key (repeat).",
)
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    help="current, or superseded by the same author's correction.",
)
@click.option(
    "--max-sensitivity", type=click.Choice(SENSITIVITY_ORDER), help="Leave out anything above."
)
@click.option(
    "--consent",
    multiple=True,
    type=click.Choice(sorted(CONSENTS)),
    help="Only reports whose consent says yes to this (repeat: all of them).",
)
@click.option(
    "--include-confidential",
    is_flag=True,
    help="Also export confidential reports (left out by default, and counted on stderr).",
)
@click.option(
    "--exact-coordinates",
    is_flag=True,
    help="Keep 6 decimals instead of rounding by sensitivity"
    " (public 5, internal 4, restricted 2, confidential 1).",
)
@click.option("--include-names", is_flag=True, help="Keep people's names (left out by default).")
@click.option(
    "--device-ids",
    is_flag=True,
    help="Also export the ids the author's device knows (report id, envelope, key, sequence);"
    " never for publication.",
)
@click.option("--excel", is_flag=True, help="CSV: start with a UTF-8 BOM so Excel reads it right.")
@click.option(
    "--delimiter", type=click.Choice(DELIMITERS), default=",", help="CSV and Uwazi separator."
)
@passphrase_option
@json_option
@handle_errors
def export_(
    hq_dir: Path,
    fmt: str,
    out: Path | None,
    excel: bool,
    delimiter: str,
    passphrase_file: Path | None,
    as_json: bool,
    **filters: Any,
) -> None:
    """Export ingested reports (the HQ passphrase opens the analyst database).

    Confidential reports are left out unless --include-confidential; coordinates are rounded
    by sensitivity unless --exact-coordinates; reports are named by an HQ-side publication id.
    Filters combine (all must hold)."""
    options = ExportOptions(**filters)
    try:
        options.check()
    except InputRefused as exc:
        raise click.UsageError(str(exc)) from None
    style = CsvStyle(excel=excel, delimiter=delimiter)
    if excel and fmt != "csv":
        raise click.UsageError("--excel is for --format csv (Uwazi reads its files without a BOM)")
    if out is None and fmt not in TEXT_FORMATS:
        raise click.UsageError(f"--format {fmt} is written to a file: give --out FILE")
    headquarters = open_hq(hq_dir, hq_passphrase(hq_dir, passphrase_file))
    try:
        db = headquarters.database()
        if out is None:
            result = export_stream(db, hq_dir, fmt, sys.stdout, options, style)
        else:
            check_output(out, "export file")
            result = export_file(db, hq_dir, fmt, out, options, style)
    finally:
        headquarters.close()
    counts = result.counts
    say(f"exported {counts.exported} reports as {fmt}" + (f" to {out}" if out else ""))
    if result.media_copied and out is not None:
        say(f"copied {result.media_copied} verified media file(s) to {out.parent / 'media'}")
    if counts.confidential:
        say(
            f"left out {counts.confidential} confidential report(s);"
            " give --include-confidential to export them"
        )
    if counts.filtered:
        say(f"left out {counts.filtered} report(s) that did not match the filters")
    if as_json and out is not None:
        emit(True, {**result.as_dict(), "out": str(out)})


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
    headquarters = open_hq(hq_dir)
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
@passphrase_option
@json_option
@handle_errors
def quarantine_list(hq_dir: Path, passphrase_file: Path | None, as_json: bool) -> None:
    """Held envelopes: id, when, author (if known), sequence and why."""
    headquarters = open_hq(hq_dir, hq_passphrase(hq_dir, passphrase_file))
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
@passphrase_option
@json_option
@handle_errors
def quarantine_show(
    entry_id: int, hq_dir: Path, passphrase_file: Path | None, as_json: bool
) -> None:
    """One held envelope (exit 4 when ENTRY_ID is not in the quarantine)."""
    headquarters = open_hq(hq_dir, hq_passphrase(hq_dir, passphrase_file))
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
    headquarters = open_hq(hq_dir)
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
@passphrase_option
@json_option
@handle_errors
def media(
    hq_dir: Path,
    report_id: str | None,
    out: Path | None,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Attachments HQ knows of (verified, pending k/n, failed); with REPORT_ID --out DIR,
    extract that report's files (refused while any of them is not verified)."""
    from fieldsync import hq_media

    headquarters = open_hq(hq_dir, hq_passphrase(hq_dir, passphrase_file))
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


@hq.command()
@hq_dir_option
@click.option("--all", "everything", is_flag=True, help="Acknowledged and resolved alerts too.")
@click.option(
    "--ack",
    "ack_ids",
    type=int,
    multiple=True,
    metavar="ID",
    help="Acknowledge alert ID (repeatable); it opens again if its event happens again.",
)
@passphrase_option
@json_option
@handle_errors
def alerts(
    hq_dir: Path,
    everything: bool,
    ack_ids: tuple[int, ...],
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Forks, gaps, held and junk envelopes, failed or incomplete attachments, reports of
    revoked authors: open ones, most recently seen first (exit 4: --ack of an unknown ID)."""
    headquarters = open_hq(hq_dir, hq_passphrase(hq_dir, passphrase_file))
    try:
        if ack_ids:
            done = headquarters.acknowledge(ack_ids)
            say(f"acknowledged {len(done)} alert(s)")
            emit(as_json, done, _alert_lines(done))
            return
        rows = headquarters.alerts(everything)
    finally:
        headquarters.close()
    if not rows and not as_json:
        say("no open alerts" if not everything else "no alerts")
    emit(as_json, rows, _alert_lines(rows) if rows else None)


def _alert_lines(rows: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{r['id']:>6}  {r['state']:12} {r['kind']:21} {r['author'] or '-'}"
        f"  last seen {r['last_seen']}"
        + (f" (x{r['count']})" if r["count"] > 1 else "")
        + f"\n        {r['detail']}"
        for r in rows
    )


@hq.group()
def report() -> None:
    """Reports as HQ holds them (the HQ passphrase opens the analyst database)."""


@report.command("show")
@click.argument("report_id")
@hq_dir_option
@click.option(
    "--all-versions",
    is_flag=True,
    help="Every version of a corrected report (supersedes), oldest first.",
)
@passphrase_option
@json_option
@handle_errors
def report_show(
    report_id: str, hq_dir: Path, all_versions: bool, passphrase_file: Path | None, as_json: bool
) -> None:
    """One report (REPORT_ID or a prefix, or its envelope id) with the other report of a
    fork and the ids of its corrections (exit 4: no such report)."""
    headquarters = open_hq(hq_dir, hq_passphrase(hq_dir, passphrase_file))
    try:
        shown = headquarters.report(report_id, all_versions)
    finally:
        headquarters.close()
    for warning in shown["warnings"]:
        say(f"warning: {warning}")
    emit(as_json, shown, _report_text(shown))


_REPORT_FIELDS = (
    "id",
    "title",
    "narrative",
    "categories",
    "occurred_start",
    "occurred_end",
    "occurred_precision",
    "occurred_approximate",
    "place",
    "lat",
    "lon",
    "sensitivity",
    "language",
    "author_name",
    "sequence",
    "supersedes",
    "claimed_time",
    "received_at",
    "envelope_id",
)


def _report_block(row: dict[str, Any]) -> str:
    if "note" in row:
        return f"{'envelope_id':21}{row['envelope_id']}\n{'note':21}{row['note']}"
    shown = {**row, "categories": ", ".join(row.get("categories") or [])}
    lines = [f"{name:21}{shown[name]}" for name in _REPORT_FIELDS if shown.get(name) is not None]
    lines += [
        f"{'attachment':21}{a['name']} ({a['media_type']}, {a['size']:,} B)"
        for a in row.get("attachments", [])
    ]
    return "\n".join(lines)


def _report_text(shown: dict[str, Any]) -> str:
    blocks = []
    many = len(shown["versions"]) > 1
    for number, version in enumerate(shown["versions"], 1):
        title = f"== version {number} of {len(shown['versions'])}" if many else "== report"
        blocks.append(f"{title}\n{_report_block(version['report'])}")
        for fork in version["forks"]:
            blocks.append(
                "== FORK: the same author signed a different report with sequence number"
                f" {version['report']['sequence']}\n{_report_block(fork)}"
            )
    if not many and (shown["older_versions"] or shown["newer_versions"]):
        blocks.append(
            f"== corrections: older {', '.join(shown['older_versions']) or '-'};"
            f" newer {', '.join(shown['newer_versions']) or '-'} (--all-versions shows them)"
        )
    return "\n\n".join(blocks)


@hq.command()
@hq_dir_option
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8001,
    show_default=True,
    help="Port on 127.0.0.1 (0: any free port).",
)
@click.option(
    "--tiles",
    metavar="URL",
    help="Map tile server, e.g. https://tile.example.org/{z}/{x}/{y}.png. Default: none,"
    " because fetching tiles tells that server which places the analyst looks at.",
)
@passphrase_option
@json_option
@handle_errors
def serve(
    hq_dir: Path, port: int, tiles: str | None, passphrase_file: Path | None, as_json: bool
) -> None:
    """Browse the analyst database in Datasette on 127.0.0.1: alerts first, reports with
    facets and a map; blobs and raw bodies hidden. Needs `pip install 'fieldsync[hq]'`.
    Prints the URL (with --json: {"url": ...}) once listening; Ctrl-C stops it."""
    from fieldsync import hq_serve

    hq_serve.check_installed()
    if tiles is not None and not tiles.startswith(("https://", "http://")):
        raise click.BadParameter("give an http(s) URL template", param_hint="--tiles")
    headquarters = open_hq(hq_dir, hq_passphrase(hq_dir, passphrase_file))
    try:
        db = headquarters.database()  # migrated (and its views made) before Datasette reads it
        network_name = headquarters.manifest().name
        sock = hq_serve.listen(port)
    except BaseException:
        headquarters.close()
        raise

    def ready(url: str) -> None:
        say(f"serving {hq_dir / 'hq.db'} at {url} (127.0.0.1 only); Ctrl-C stops")
        emit(as_json, {"url": url}, url)
        sys.stdout.flush()

    try:
        hq_serve.serve(db.conn, network_name, sock, tiles, ready)
    finally:
        sock.close()
        headquarters.close()


# --- membership: revoke (fieldsync_cli.cmd_hq_keys) -----------------------------------------

from fieldsync_cli.cmd_hq_keys import register_key_commands  # noqa: E402 - needs `hq` above

register_key_commands(hq, hq_dir_option)

# --- passphrase, rekey (fieldsync_cli.cmd_hq_passphrase) -------------------------------------

from fieldsync_cli.cmd_hq_passphrase import register_passphrase_commands  # noqa: E402

register_passphrase_commands(hq, hq_dir_option)

# `hq form set|show` lives in its own module, which needs hq_dir_option above: imported
# by name here, last, so that the two modules do not import each other at the top.
hq.add_command(importlib.import_module("fieldsync_cli.cmd_form_hq").hq_form_group)
