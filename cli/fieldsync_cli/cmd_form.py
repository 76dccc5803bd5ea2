"""``form show``: the network's report form as this node uses it (SPEC.md §18)."""

from __future__ import annotations

import click

from fieldsync.forms import node_form
from fieldsync.node import Node
from fieldsync_cli.cmd_report import ui_language
from fieldsync_cli.common import emit, handle_errors, json_option
from fieldsync_cli.main import home_of
from fieldsync_protocol.form import Form


@click.group()
def form() -> None:
    """The network's report form: what `report add` and the web app ask."""


def form_text(current: Form, language: str) -> str:
    """The form for people: fields in order, then the categories, labels in ``language``."""
    lines = [f"form version {current.version} (languages: {', '.join(current.languages)})"]
    for field in current.fields:
        need = "required" if field.required else "optional"
        lines.append(f"  {field.key:16} {field.type:10} {need:8} {current.label(field, language)}")
        for option in field.options:
            lines.append(f"      {option.key:20} {current.label(option, language)}")
    lines.append("categories:")
    for category in current.categories:
        lines.append(f"  {category.key:24} {current.label(category, language)}")
    return "\n".join(lines)


@form.command()
@click.option("--language", help="Show labels in this language (default: the locale).")
@json_option
@click.pass_context
@handle_errors
def show(ctx: click.Context, language: str | None, as_json: bool) -> None:
    """Print the form this node uses (the newest from HQ it holds, else the built-in one)."""
    node = Node(home_of(ctx))
    try:
        current = node_form(node)
    finally:
        node.close()
    emit(as_json, current.to_map(), form_text(current, ui_language(language)))
