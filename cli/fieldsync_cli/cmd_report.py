"""``report add|list|show``: write reports and follow them until HQ has them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fieldsync.errors import InputRefused, KeysDestroyed, NotFound, WrongPassphrase
from fieldsync.node import Node, OwnReport, utc_text
from fieldsync_cli.common import (
    emit,
    get_passphrase,
    handle_errors,
    json_option,
    passphrase_option,
    say,
)
from fieldsync_cli.main import author_node
from fieldsync_protocol.report import SENSITIVITIES

# The form (and its parser and signature check) is imported by ``report add``, which asks
# it: ``report list`` and ``show`` never load it (issue 13 item 6).
if TYPE_CHECKING:
    from fieldsync_protocol.form import Form, FormField

#: Where the prompt puts the files to attach (not a report field: popped before sealing).
ATTACH_KEY = "\0attach"
#: Wrong passphrases at the prompt before giving up (the answers are kept meanwhile).
PASSPHRASE_TRIES = 3
#: A line holding only this ends a narrative typed at the prompt.
END_OF_TEXT = "."

#: How each answer is given on the command line, to name it in a problem.
OPTION_OF = {
    "narrative": "--narrative",
    "categories": "--category",
    "occurred": "--occurred",
    "title": "--title",
    "place": "--place",
    "location": "--lat/--lon/--accuracy",
    "sensitivity": "--sensitivity",
    "language": "--language",
}


def ui_language(chosen: str | None) -> str:
    """The language of labels: --language, else the locale (LC_ALL, LC_MESSAGES, LANG)."""
    if chosen:
        return chosen
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "")
        if value and value not in ("C", "POSIX") and not value.startswith("C."):
            return value.split(".")[0].replace("_", "-")
    return "en"


class Prompter:
    """Asks the form's fields one by one; each answer is checked as it is typed."""

    def __init__(self, form: Form, language: str, editor: bool) -> None:
        self.form = form
        self.language = language
        self.editor = editor
        self.answers: dict[str, Any] = {}

    def problem(self, key: str) -> str | None:
        """This field's problem with the answers so far (other fields are not judged)."""
        return self.form.validate(self.answers)[1].get(key)

    def ask_all(self) -> dict[str, Any]:
        say("New report. Press Enter to skip optional fields; type ? to list the choices.")
        for form_field in self.form.fields:
            self.ask(form_field)
        return self.answers

    def ask(self, form_field: FormField) -> None:
        label = self.form.label(form_field, self.language)
        hint = self.form.help(form_field, self.language)
        if hint:
            say(f"  {hint}")
        while True:
            if form_field.type == "narrative":
                self.answers[form_field.key] = self._narrative(label)
            elif form_field.type == "location":
                self._location(label)
            else:
                if not self._line(form_field, label):
                    continue
                if form_field.key == "occurred" and self.problem("occurred") is None:
                    self.answers["approximate"] = click.confirm(
                        "Is this date approximate?", default=False
                    )
            found = self.problem(form_field.key)
            if found is None:
                return
            say(f"  {found}")

    def _line(self, form_field: FormField, label: str) -> bool:
        """One typed line; False (ask again) after listing the choices for ``?``."""
        default = form_field.default or ""
        if form_field.key == "categories" and "unclassified" in self.form.category_keys():
            default = "unclassified"
        suffix = " (comma separated)" if form_field.type == "categories" else ""
        if not form_field.required and not default:
            suffix += " (optional)"
        text = str(
            click.prompt(f"{label}{suffix}", default=default, show_default=bool(default), err=True)
        )
        choices = self._choices(form_field)
        if text.strip() == "?" and choices:
            for key, choice_label in choices:
                say(f"  {key:24} {choice_label}")
            return False
        self.answers[form_field.key] = text
        return True

    def _choices(self, form_field: FormField) -> list[tuple[str, str]]:
        items = self.form.categories if form_field.type == "categories" else form_field.options
        return [(c.key, self.form.label(c, self.language)) for c in items]

    def _narrative(self, label: str) -> str:
        if self.editor:
            return click.edit(self.answers.get("narrative", "")) or ""
        say(f"{label} (end with a line containing only {END_OF_TEXT}):")
        lines: list[str] = []
        while True:
            line = sys.stdin.readline()
            if not line:  # end of input (Ctrl-D)
                if not lines:
                    raise click.Abort
                break
            if line.rstrip("\r\n") == END_OF_TEXT:
                break
            lines.append(line.rstrip("\r\n"))
        return "\n".join(lines)

    def _location(self, label: str) -> None:
        say(f"{label}:")
        for name, what in (("lat", "Latitude"), ("lon", "Longitude")):
            self.answers[name] = click.prompt(
                f"  {what} (optional)", default="", show_default=False, err=True
            )


@click.group()
def report() -> None:
    """Write reports (signed by you, readable only by HQ) and see their delivery."""


@report.command()
@click.option("--narrative", help="What happened, in your words.")
@click.option(
    "--category",
    "categories",
    multiple=True,
    help="Category key of the network's form; repeat for more (first = primary).",
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
    "--field",
    "extra",
    multiple=True,
    metavar="KEY=VALUE",
    help="An answer to one of the form's own fields (see `fieldsync form show`); repeat.",
)
@click.option(
    "--editor",
    is_flag=True,
    help="At the prompt, write the narrative in $EDITOR instead of line by line.",
)
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
@click.option(
    "--author",
    "author_name",
    help="Your author name on a node with several monitors (a check: your passphrase alone"
    " already says which author you are).",
)
@passphrase_option
@json_option
@click.pass_context
@handle_errors
def add(ctx: click.Context, /, **options: Any) -> None:
    """Sign and seal a new report; print its id. With no options on a terminal, asks.

    The questions and the category list are the network's form (`fieldsync form show`).
    Every answer is checked before the passphrase is asked; a wrong passphrase at the prompt
    is asked again, keeping the answers.
    """
    from fieldsync.forms import node_form
    from fieldsync_protocol.attachment import chunk_count

    as_json = options.pop("as_json")
    passphrase_file = options.pop("passphrase_file")
    json_file = options.pop("json_file")
    editor = options.pop("editor")
    attach = list(options.pop("attach"))
    author_name = options.pop("author_name")
    # 0 is a coordinate: only "not given" (None, no repeats, an unset flag) is dropped.
    given = {k: v for k, v in options.items() if v is not None and v != () and v is not False}
    node = author_node(ctx)
    try:
        node.membership()  # fail on an unjoined node before asking anything
        form = node_form(node)
        if json_file is not None:
            fields = _fields_from_json(json_file, given, form)
        elif given:
            fields = _checked(form, _answers_from_options(given), set(OPTION_OF))
        elif sys.stdin.isatty():
            prompter = Prompter(form, ui_language(None), editor)
            answers = prompter.ask_all()
            fields = _checked(form, answers, set(OPTION_OF))
            attach += _ask_attachments()
        else:
            raise InputRefused(
                "give at least --narrative, --category and --occurred (or --json-file),"
                " or run on a terminal"
            )
        node.check_report(fields)  # every field, before anyone types a passphrase
        report_id = _add_with_passphrase(
            node, fields, attach, passphrase_file, as_json, author_name
        )
    finally:
        node.close()
    say("report signed and sealed to HQ; it travels with the next sync or bundle")
    if attach:
        chunks = sum(chunk_count(path.stat().st_size) for path in attach)
        say(
            f"{len(attach)} attachment(s) encrypted into {chunks} chunks; report texts travel first"
        )
    data = {"id": report_id, "status": "sealed", "attachments": len(attach)}
    emit(as_json, data, report_id)


def _add_with_passphrase(
    node: Node,
    fields: dict[str, Any],
    attach: list[Path],
    passphrase_file: Path | None,
    as_json: bool,
    author_name: str | None,
) -> str:
    """Ask for the passphrase (again, up to 3 times, when a person typed it wrong)."""
    typed = passphrase_file is None and not os.environ.get("FIELDSYNC_PASSPHRASE")
    for attempt in range(1, PASSPHRASE_TRIES + 1):
        passphrase = get_passphrase(passphrase_file, "your author key")
        try:
            return node.add_report(
                fields, passphrase, attach, _progress(as_json), author_name=author_name
            )
        except WrongPassphrase as exc:
            if not typed or attempt == PASSPHRASE_TRIES or isinstance(exc, KeysDestroyed):
                raise  # wiped: nothing left to ask for
            say(f"wrong passphrase; your answers are kept ({PASSPHRASE_TRIES - attempt} more)")
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _ask_attachments() -> list[Path]:
    attach = []
    while path := click.prompt(
        "Attach a file (path; Enter when done)", default="", show_default=False, err=True
    ):
        attach.append(Path(path).expanduser())
    return attach


def _checked(form: Form, answers: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    """The report fields of ``answers``; refused with every problem named, if any."""
    from fieldsync.forms import refuse_problems

    fields, problems = form.validate(answers)
    refuse_problems(dict(problems), OPTION_OF)
    return fields


def _answers_from_options(given: dict[str, Any]) -> dict[str, Any]:
    answers: dict[str, Any] = {
        key: given[key]
        for key in (
            "narrative", "occurred", "approximate", "title", "place", "lat", "lon", "accuracy",
            "sensitivity", "language",
        )
        if key in given
    }  # fmt: skip
    if "categories" in given:
        answers["categories"] = list(given["categories"])
    for entry in given.get("extra", ()):
        key, sep, value = entry.partition("=")
        if not sep:
            raise InputRefused(f"--field {entry!r}: write KEY=VALUE, e.g. --field weapon=firearm")
        answers[key.strip()] = value
    return answers


def _fields_from_json(json_file: Path, given: dict[str, Any], form: Form) -> dict[str, Any]:
    """Report fields from --json-file (an advanced path), options overriding."""
    from fieldsync.forms import refuse_problems

    try:
        loaded = json.loads(json_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"--json-file {json_file} does not exist") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputRefused(f"--json-file {json_file} is not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise InputRefused(f"--json-file {json_file} must hold a JSON object of report fields")
    fields: dict[str, Any] = dict(loaded)
    answers = _answers_from_options(given)
    from_options, problems = form.validate(answers)
    asked = {"location" if k in ("lat", "lon", "accuracy", "place") else k for k in answers}
    asked |= {k for k in answers if form.field(k) is not None}
    refuse_problems({k: v for k, v in problems.items() if k in asked}, OPTION_OF)
    for key, value in from_options.items():
        if key in asked:
            fields[key] = value
    if "extra" in from_options:
        fields["extra"] = {**fields.get("extra", {}), **from_options["extra"]}
    categories = fields.get("categories")
    if isinstance(categories, list):
        unknown = [c for c in categories if c not in form.category_keys()]
        if unknown:
            raise InputRefused(
                f"unknown categor{'y' if len(unknown) == 1 else 'ies'}"
                f" {', '.join(map(repr, unknown))}; the network's form has:"
                f" {', '.join(form.category_keys())}"
            )
    if "occurred" not in fields:
        raise InputRefused(
            "say when it happened: --occurred 2025-03-01 (add --approximate if unsure)"
        )
    return fields


def _progress(as_json: bool) -> Any:
    """Progress of a long attachment on stderr (for people), every 64 MiB."""
    if as_json or not sys.stderr.isatty():
        return None
    step = 64 << 20

    def show(done: int, total: int) -> None:
        if done % step < (1 << 20) or done == total:
            say(f"  encrypted {done >> 20} of {total >> 20} MiB")

    return show


#: What each outbox state means to the monitor (SPEC.md §9: only "accepted" is delivered).
STATUS_TEXT = {
    "sealed": "sealed (not yet at HQ)",
    "held": "held at HQ (received, awaiting review; not yet accepted)",
    "dropped": "dropped by HQ (it could not be opened there)",
    "delivered": "delivered",
}


@report.command("list")
@passphrase_option
@json_option
@click.pass_context
@handle_errors
def list_(ctx: click.Context, passphrase_file: Path | None, as_json: bool) -> None:
    """Your reports: id, created, status (sealed / held at HQ / delivered).

    Asks for your passphrase: the outbox is sealed to each author's own key, so a seized
    node lists nothing, and on a node with several monitors each sees only their own.
    """
    node = author_node(ctx)
    try:
        entries = node.reports(get_passphrase(passphrase_file, "your author key"))
    finally:
        node.close()
    rows = [_summary(e) for e in entries]
    if as_json:
        emit(True, rows)
        return
    if not rows:
        say("you have written no reports on this node")
    for row in rows:
        status = str(row["status"])
        click.echo(f"{row['id']}  {row['created']}  {STATUS_TEXT.get(status, status)}")


def _summary(entry: OwnReport) -> dict[str, Any]:
    return {
        "id": entry.report_id,
        "sequence": entry.sequence,
        "created": utc_text(entry.created_at),
        "status": entry.status,
        "delivered": utc_text(entry.delivered_at) if entry.delivered_at else None,
    }


@report.command()
@click.argument("report_id")
@passphrase_option
@json_option
@click.pass_context
@handle_errors
def show(ctx: click.Context, report_id: str, passphrase_file: Path | None, as_json: bool) -> None:
    """Delivery state of one of your reports and of each attachment (chunks receipted /
    total), with the attachments' names.

    The report's content is sealed: only HQ can read it. What this node knows of it (id,
    dates, attachment names) is sealed to your own author key, so it asks for your passphrase.
    """
    node = author_node(ctx)
    try:
        passphrase = get_passphrase(passphrase_file, "your author key")
        entries = [e for e in node.reports(passphrase) if e.report_id.startswith(report_id)]
    finally:
        node.close()
    if len(entries) != 1:
        raise NotFound(f"no single report of yours matches {report_id!r} ({len(entries)} match)")
    entry = entries[0]
    data = _summary(entry)
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
        for a in entry.attachments
    ]
    for a in entry.attachments:
        lines.append(
            f"{'attached':10} {a.name}  {a.size:,} bytes  {a.receipted}/{a.chunks} chunks receipted"
        )
    emit(as_json, data, "\n".join(lines))
