"""The web app's messages, extracted from its code and templates with Babel, and its
catalogues checked against them. ``python -m tests.web.messages`` writes a catalogue
template (``messages.pot``) and adds new messages to every catalogue (README
"Translating the web app")."""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po, write_po

from fieldsync.web.i18n import LOCALES_DIR

WEB = Path(__file__).resolve().parents[2] / "fieldsync" / "web"
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None}
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2")]
OPTIONS = {"templates/**.html": {"extensions": "jinja2.ext.do,jinja2.ext.i18n"}}


def extracted() -> Catalog:
    catalog = Catalog(project="fieldsync", charset="utf-8")
    for filename, line, message, comments, context in extract_from_dir(
        WEB, METHODS, OPTIONS, KEYWORDS
    ):
        catalog.add(message, None, [(filename, line)], auto_comments=comments, context=context)
    return catalog


def catalogue(language: str) -> Catalog:
    with (LOCALES_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=language)


def untranslated(language: str) -> list[str]:
    """Every message of the app that ``language``'s catalogue lacks or leaves empty/fuzzy."""
    translations = catalogue(language)
    lacking = []
    for message in extracted():
        if not message.id:
            continue
        found = translations.get(message.id)
        strings = (
            found.string
            if found is not None and isinstance(found.string, tuple)
            else (found.string if found is not None else "",)
        )
        if found is None or found.fuzzy or not all(strings):
            lacking.append(message.id if isinstance(message.id, str) else message.id[0])
    return lacking


def main() -> None:
    template = extracted()
    with (LOCALES_DIR / "messages.pot").open("wb") as out:
        write_po(out, template, omit_header=False, sort_output=True)
    for po in sorted(LOCALES_DIR.glob("*/LC_MESSAGES/messages.po")):
        language = po.parent.parent.name
        current = catalogue(language)
        current.update(template, no_fuzzy_matching=True)
        with po.open("wb") as out:
            write_po(out, current, sort_output=True, ignore_obsolete=True)
        print(f"{language}: {len(untranslated(language))} untranslated", file=sys.stderr)


if __name__ == "__main__":
    main()
