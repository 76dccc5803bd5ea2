"""The network's report form as this node (or HQ) currently uses it (SPEC.md §17).

A node uses the form item with the highest version among those it holds that verify under
its network's root (§17.4); with none, the built-in default. Form items arrive like any
item (sync, bundles) and are kept like manifests, so "adopting" one is simply holding it:
an older or equal version, replayed, never wins.
"""

from __future__ import annotations

from collections.abc import Iterable

from fieldsync.errors import InputRefused, NotInitialised
from fieldsync.node import Node
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.form import Form, default_form, open_form
from fieldsync_protocol.membership import Manifest


def newest_form(items: Iterable[bytes], manifest: Manifest) -> Form:
    """The highest-version form among ``items`` that verifies; else the default form."""
    best = default_form()
    for data in items:
        try:
            candidate = open_form(data, manifest)
        except RemoteProtocolError:
            continue  # stored before a check existed, or damaged: never used
        if candidate.version > best.version:
            best = candidate
    return best


def node_form(node: Node) -> Form:
    """The form this node's monitors fill in: the newest it holds, else the default."""
    try:
        manifest = node.membership().manifest
    except NotInitialised:
        return default_form()  # not joined yet: nothing can have arrived
    return newest_form(node.store().form_items(), manifest)


def problems_text(problems: dict[str, str], names: dict[str, str] | None = None) -> str:
    """Every problem on one line each, named as the person knows the field."""
    names = names or {}
    return "\n".join(f"  {names.get(key, key)}: {message}" for key, message in problems.items())


def refuse_problems(problems: dict[str, str], names: dict[str, str] | None = None) -> None:
    """Raise ``InputRefused`` listing every problem (nothing when there are none)."""
    if problems:
        raise InputRefused(
            "the report is not complete; nothing was written:\n" + problems_text(problems, names)
        )
