"""The app's languages: gettext catalogues (``locales/LANG/LC_MESSAGES/messages.po``) read
with Babel, the language chosen from a cookie or ``Accept-Language``, and dates and numbers
formatted for it.

Adding a language is adding a catalogue (README "Translating the web app"): the app offers
every language that has one. Catalogues are read once, when the app starts.
"""

from __future__ import annotations

import gettext
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from babel import Locale, UnknownLocaleError, localedata
from babel.dates import format_datetime
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

LOCALES_DIR = Path(__file__).parent / "locales"
SOURCE_LANGUAGE = "en"
#: Right-to-left scripts among the languages we may ship.
RTL_LANGUAGES = frozenset({"ar", "fa", "he", "ur", "ps", "ckb"})


@dataclass(frozen=True)
class Language:
    code: str
    catalog: Catalog | None  # None: the source language
    #: The language's own name for itself ("Français", "العربية"), for the switch on every
    #: page; read at start without keeping the locale's CLDR data (see ``native_name``).
    name: str

    @cached_property
    def _plural(self) -> Callable[[int], int]:
        expression = self.catalog.plural_expr if self.catalog is not None else "(n != 1)"
        return gettext.c2py(expression)

    @property
    def locale(self) -> Locale:
        return Locale.parse(self.code)

    @property
    def direction(self) -> str:
        return "rtl" if self.code in RTL_LANGUAGES else "ltr"

    def warm(self) -> None:
        """Read this locale's CLDR data now (blocking; a few MiB): Babel reads it on first
        use, which must not happen on the event loop. The app warms a language on a thread
        the first time a page asks for it, so a node keeps only the languages it serves."""
        self.datetime(0)
        self.size(1234567)
        _ = self._plural

    def gettext(self, message: str, **variables: object) -> str:
        """``message`` in this language (the source text if untranslated), with
        ``%(name)s`` placeholders filled from ``variables`` (Jinja2's "newstyle")."""
        text = message
        if self.catalog is not None:
            entry = self.catalog.get(message)
            if entry is not None and isinstance(entry.string, str) and entry.string:
                text = entry.string if not entry.fuzzy else message
        return text % variables if variables else text

    def ngettext(self, singular: str, plural: str, count: int, **variables: object) -> str:
        text = singular if count == 1 else plural
        if self.catalog is not None:
            entry = self.catalog.get(singular)
            if entry is not None and isinstance(entry.string, tuple) and not entry.fuzzy:
                index = self._plural(count)
                if index < len(entry.string) and entry.string[index]:
                    text = entry.string[index]
        return text % {"num": self.number(count), **variables}

    def datetime(self, seconds: float | None) -> str:
        if seconds is None:
            return ""
        moment = datetime.fromtimestamp(seconds, UTC)
        return str(format_datetime(moment, "medium", tzinfo=UTC, locale=self.locale))

    def number(self, value: float) -> str:
        return str(format_decimal(value, locale=self.locale))

    def size(self, size: int) -> str:
        """Bytes in the unit a person reads (kB, MB), with the locale's digits and separators."""
        for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
            if size >= scale:
                return f"{format_decimal(round(size / scale, 1), locale=self.locale)} {unit}"
        return f"{format_decimal(size, locale=self.locale)} B"


def native_name(code: str) -> str:
    """``code``'s name in its own language, from its CLDR file (blocking).

    ``Locale.get_display_name`` would load and keep the whole locale (1-5 MiB each) for
    every language in the switch on every page; this reads the one file, takes the name and
    drops the rest, so a node keeps only the data of the languages its monitors read.
    """
    locale = Locale.parse(code)
    with Path(localedata.resolve_locale_filename(str(locale))).open("rb") as handle:
        # Babel's own package data, read the way Babel reads it.
        data = pickle.load(handle)  # noqa: S301
    names = data.get("languages", {})
    name = names.get(str(locale)) or names.get(locale.language) or code
    return str(name).capitalize()


def load_languages(directory: Path = LOCALES_DIR) -> dict[str, Language]:
    """The source language and every catalogue under ``directory`` (blocking: at start)."""
    languages = {SOURCE_LANGUAGE: Language(SOURCE_LANGUAGE, None, native_name(SOURCE_LANGUAGE))}
    for po in sorted(directory.glob("*/LC_MESSAGES/messages.po")):
        code = po.parent.parent.name
        try:
            Locale.parse(code)
        except (UnknownLocaleError, ValueError):
            continue
        with po.open("rb") as handle:
            catalog = read_po(handle, locale=code)
        languages[code] = Language(code, catalog, native_name(code))
    languages[SOURCE_LANGUAGE].warm()
    return languages


def negotiate(accept_language: str, available: set[str]) -> str:
    """The best of ``available`` for an ``Accept-Language`` header (else the source)."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        ranked.append((-quality, position, tag.strip().lower()))
    for quality, _, tag in sorted(ranked):
        if quality >= 0:
            continue
        primary = tag.split("-")[0]
        if tag in available:
            return tag
        if primary in available:
            return primary
    return SOURCE_LANGUAGE
