"""The network's report form as this node (or HQ) currently uses it (SPEC.md §18).

A node uses the form item with the highest version among those it holds that verify under
its network's root (§18.4); with none, the built-in default. Form items arrive like any
item (sync, bundles) and are kept like manifests, so "adopting" one is simply holding it:
an older or equal version, replayed, never wins.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from fieldsync import keystore
from fieldsync.errors import InputRefused, NotFound, NotInitialised
from fieldsync.node import Node
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.form import Form, default_form, open_form, parse_form, sign_form
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


#: HQ's current form item, in the HQ directory (sent with every receipts bundle).
HQ_FORM = "form.item"


def hq_form_item(directory: Path) -> bytes | None:
    path = directory / HQ_FORM
    return path.read_bytes() if path.exists() else None


def hq_form(directory: Path, manifest: Manifest) -> Form:
    """The form HQ has set (the default when it set none)."""
    item = hq_form_item(directory)
    return default_form() if item is None else newest_form([item], manifest)


def read_form_file(path: Path) -> Form:
    """A form from HQ's JSON file, refused with the path of what is wrong."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"form file {path} does not exist") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputRefused(f"form file {path} is not valid JSON: {exc}") from exc
    try:
        return parse_form(value)
    except RemoteProtocolError as exc:
        raise InputRefused(f"{path}: {exc}") from exc


def set_hq_form(directory: Path, form: Form, manifest: Manifest, root_seed: bytes) -> bytes:
    """Sign ``form`` with the root key and make it HQ's form; its version must grow."""
    current = hq_form(directory, manifest)
    if form.version <= current.version:
        raise InputRefused(
            f"the form has version {form.version}; the network's form is version"
            f" {current.version}: give it a higher version so that nodes adopt it"
        )
    try:
        item = sign_form(form, manifest, root_seed)
    except LocalProtocolError as exc:
        raise InputRefused(str(exc)) from exc
    keystore.write_private(directory / HQ_FORM, item)
    return item


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
