"""``report add|list|show``: write reports and follow them until HQ has them."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from fieldsync.errors import InputRefused, NotFound
from fieldsync.node import Node, utc_text
from fieldsync_cli.common import (
    emit,
    get_passphrase,
    handle_errors,
    json_option,
    passphrase_option,
    say,
)
from fieldsync_cli.main import author_node, home_of
from fieldsync_protocol.report import SENSITIVITIES

_PRECISION_BY_FORM = (
    (re.compile(r"^\d{4}$"), "year"),
    (re.compile(r"^\d{4}-\d{2}$"), "month"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}$"), "day"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?(Z|[+-]\d{2}:\d{2})$"), "minute"),
)


def occurred_field(text: str, approximate: bool) -> dict[str, Any]:
    """``2025-03-01`` → day precision; ``2025-03`` → month; a time with zone → minute."""
    text = text.strip()
    if re.match(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?$", text):
        text = text.replace(" ", "T") + "Z"  # a time without a zone is taken as UTC
    for pattern, precision in _PRECISION_BY_FORM:
        if pattern.match(text):
            return {"start": text, "precision": precision, "approximate": approximate}
    raise InputRefused(
        f"--occurred {text!r} is not a date; use 2025-03-01, 2025-03, 2025 or 2025-03-01T09:30Z"
    )


_CATEGORY_KEY = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


def _ask_again_unless(convert: Any) -> Any:
    """A click ``value_proc``: a wrong answer is explained and asked again, nothing is lost."""

    def proc(text: str) -> Any:
        try:
            return convert(text)
        except InputRefused as exc:
            raise click.BadParameter(str(exc)) from exc

    return proc


def _categories(text: str) -> list[str]:
    keys = [c.strip() for c in text.split(",") if c.strip()]
    bad = [k for k in keys if not _CATEGORY_KEY.fullmatch(k)]
    if not keys or bad:
        raise InputRefused(
            f"{', '.join(bad) or 'nothing'}: category keys are lowercase words joined by hyphens,"
            " like arbitrary-detention"
        )
    return keys


#: Where the prompt puts the files to attach (not a report field: popped before sealing).
ATTACH_KEY = "\0attach"


def _prompt_fields() -> dict[str, Any]:
    say("New report. Press Enter to skip optional fields.")
    narrative = click.prompt("What happened (narrative)")
    categories = click.prompt(
        "Category keys, comma separated",
        default="unclassified",
        value_proc=_ask_again_unless(_categories),
    )
    occurred = click.prompt(
        "When did it happen (2025-03-01, 2025-03, or 2025-03-01T09:30Z)",
        value_proc=_ask_again_unless(lambda text: occurred_field(text, approximate=False)),
    )
    place = click.prompt("Place name (optional)", default="", show_default=False)
    sensitivity = click.prompt(
        "Sensitivity", type=click.Choice(SENSITIVITIES), default="restricted"
    )
    attach = []
    while path := click.prompt(
        "Attach a file (path; Enter when done)", default="", show_default=False
    ):
        attach.append(Path(path).expanduser())
    return {
        ATTACH_KEY: attach,
        "narrative": narrative,
        "categories": categories,
        "occurred": occurred,
        "sensitivity": sensitivity,
        **({"location": {"source": "text", "place": place}} if place else {}),
    }


@click.group()
def report() -> None:
    """Write reports (signed by you, readable only by HQ) and see their delivery."""


@report.command()
@click.option("--narrative", help="What happened, in your words.")
@click.option(
    "--category",
    "categories",
    multiple=True,
    help="Taxonomy key; repeat for more (first = primary).",
)
@click.option("--occurred", help="When: 2025-03-01, 2025-03, 2025 or 2025-03-01T09:30Z.")
@click.option("--approximate", is_flag=True, help="The date or time is an estimate.")
@click.option("--title", help="Short title.")
@click.option("--place", help="Place name or description.")
@click.option("--lat", type=float, help="Latitude (WGS 84).")
@click.option("--lon", type=float, help="Longitude (WGS 84).")
@click.option("--accuracy", type=float, help="Location accuracy in metres.")
@click.option("--sensitivity", type=click.Choice(SENSITIVITIES), help="Default: restricted.")
@click.option("--language", help="BCP 47 language of the narrative (default en).")
@click.option(
    "--json-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Report fields as JSON (options override).",
)
@click.option(
    "--attach",
    "attach",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A photo, recording, video or document to send with the report (sealed, chunked;"
    " repeat for more; up to 16 files, about 1.5 GiB in all).",
)
@passphrase_option
@json_option
@click.pass_context
@handle_errors
def add(ctx: click.Context, /, **options: Any) -> None:
    """Sign and seal a new report; print its id. With no options on a terminal, asks."""
    as_json = options.pop("as_json")
    passphrase_file = options.pop("passphrase_file")
    json_file = options.pop("json_file")
    attach = list(options.pop("attach"))
    given = {k: v for k, v in options.items() if v not in (None, (), False)}
    fields: dict[str, Any] = {}
    if json_file is not None:
        try:
            loaded = json.loads(json_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFound(f"--json-file {json_file} does not exist") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputRefused(f"--json-file {json_file} is not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise InputRefused(f"--json-file {json_file} must hold a JSON object of report fields")
        fields.update(loaded)
    if not given and json_file is None:
        if not sys.stdin.isatty():
            raise InputRefused(
                "give at least --narrative and --category (or --json-file), or run on a terminal"
            )
        fields.update(_prompt_fields())
        attach += fields.pop(ATTACH_KEY)
    fields.update(_fields_from_options(given))
    if "occurred" not in fields:
        raise InputRefused(
            "say when it happened: --occurred 2025-03-01 (add --approximate if unsure)"
        )
    node = author_node(ctx)
    try:
        node.membership()  # fail on an unjoined node before asking for the passphrase
        passphrase = get_passphrase(passphrase_file, "your author key")
        report_id = node.add_report(fields, passphrase, attach, _progress(as_json))
        attachments = node.attachment_status(report_id)
    finally:
        node.close()
    say("report signed and sealed to HQ; it travels with the next sync or bundle")
    if attachments:
        say(
            f"{len(attachments)} attachment(s) encrypted into"
            f" {sum(a.chunks for a in attachments)} chunks; report texts travel first"
        )
    data = {"id": report_id, "status": "sealed", "attachments": len(attachments)}
    emit(as_json, data, report_id)


def _progress(as_json: bool) -> Any:
    """Progress of a long attachment on stderr (for people), every 64 MiB."""
    if as_json or not sys.stderr.isatty():
        return None
    step = 64 << 20

    def show(done: int, total: int) -> None:
        if done % step < (1 << 20) or done == total:
            say(f"  encrypted {done >> 20} of {total >> 20} MiB")

    return show


def _fields_from_options(given: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in ("narrative", "title", "sensitivity", "language"):
        if name in given:
            fields[name] = given[name]
    if "categories" in given:
        fields["categories"] = list(given["categories"])
    if "occurred" in given:
        fields["occurred"] = occurred_field(given["occurred"], bool(given.get("approximate")))
    if any(k in given for k in ("place", "lat", "lon", "accuracy")):
        location: dict[str, Any] = {"source": "gps" if "lat" in given else "text"}
        for option, key in (
            ("place", "place"),
            ("lat", "lat"),
            ("lon", "lon"),
            ("accuracy", "accuracy_m"),
        ):
            if option in given:
                location[key] = given[option]
        fields["location"] = location
    return fields


#: What each outbox state means to the monitor (SPEC.md §9: only "accepted" is delivered).
STATUS_TEXT = {
    "sealed": "sealed (not yet at HQ)",
    "held": "held at HQ (received, awaiting review; not yet accepted)",
    "dropped": "dropped by HQ (it could not be opened there)",
    "delivered": "delivered",
}


@report.command("list")
@json_option
@click.pass_context
@handle_errors
def list_(ctx: click.Context, as_json: bool) -> None:
    """Your reports: id, created, status (sealed / held at HQ / delivered)."""
    node = Node(home_of(ctx))
    try:
        entries = node.reports()
    finally:
        node.close()
    rows = [
        {
            "id": e.report_id,
            "sequence": e.sequence,
            "created": utc_text(e.created_at),
            "status": e.status,
            "delivered": utc_text(e.delivered_at) if e.delivered_at else None,
        }
        for e in entries
    ]
    if as_json:
        emit(True, rows)
        return
    if not rows:
        say("no reports written on this node")
    for row in rows:
        status = str(row["status"])
        click.echo(f"{row['id']}  {row['created']}  {STATUS_TEXT.get(status, status)}")


@report.command()
@click.argument("report_id")
@click.option(
    "--names",
    is_flag=True,
    help="Also show attachment file names (sealed on this node: asks for your passphrase).",
)
@passphrase_option
@json_option
@click.pass_context
@handle_errors
def show(
    ctx: click.Context, report_id: str, names: bool, passphrase_file: Path | None, as_json: bool
) -> None:
    """Delivery state of one report and of each attachment (chunks receipted / total).

    The report's content is sealed: only HQ can read it. Attachment names are sealed to your
    own author key on this node, so a seized device does not show them; --names opens them.
    """
    node = author_node(ctx)
    try:
        entries = [e for e in node.reports() if e.report_id.startswith(report_id)]
        if len(entries) != 1:
            raise NotFound(f"no single report matches {report_id!r} ({len(entries)} match)")
        entry = entries[0]
        passphrase = get_passphrase(passphrase_file, "your author key") if names else None
        attachments = node.attachment_status(entry.report_id, passphrase)
    finally:
        node.close()
    data: dict[str, Any] = {
        "id": entry.report_id,
        "sequence": entry.sequence,
        "created": utc_text(entry.created_at),
        "status": entry.status,
        "delivered": utc_text(entry.delivered_at) if entry.delivered_at else None,
    }
    human = {**data, "status": STATUS_TEXT.get(entry.status, entry.status)}
    lines = [f"{k:10} {v}" for k, v in human.items()]
    data["attachments"] = [
        {
            "name": a.name,
            "size": a.size,
            "chunks": a.chunks,
            "receipted": a.receipted,
            "delivered": a.receipted == a.chunks,
        }
        for a in attachments
    ]
    for a in attachments:
        name = a.name if a.name is not None else f"attachment {a.ordinal + 1} (name sealed)"
        lines.append(
            f"{'attached':10} {name}  {a.size:,} bytes  {a.receipted}/{a.chunks} chunks receipted"
        )
    emit(as_json, data, "\n".join(lines))
