"""The app's languages: gettext catalogues (``locales/LANG/LC_MESSAGES/messages.po``) read
with Babel, the language chosen from a cookie or ``Accept-Language``, and dates and numbers
formatted for it.

Adding a language is adding a catalogue (README "Translating the web app"): the app offers
every language that has one. At start the app reads every language's own name (for the
switch on every page) and the source language's data; another language's catalogue and
locale data are read the first time a page asks for that language (``Language.warm``, on a
thread), so a node keeps only the languages its monitors read.
"""

from __future__ import annotations

import dataclasses
import gettext
import logging
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError, localedata
from babel.dates import format_datetime
from babel.numbers import format_decimal

log = logging.getLogger(__name__)

LOCALES_DIR = Path(__file__).parent / "locales"
SOURCE_LANGUAGE = "en"
#: Right-to-left scripts among the languages we may ship.
RTL_LANGUAGES = frozenset({"ar", "fa", "he", "ur", "ps", "ckb"})


#: A catalogue's translations: message id -> its text, or a plural message's forms. Plain
#: strings and tuples, not Babel's ``Catalog``: one ``Message`` object per entry, with its
#: locations, flags and comments, costs the daemon far more memory than the text does.
Messages = dict[str, str | tuple[str, ...]]
SOURCE_PLURAL = "(n != 1)"


@dataclass(frozen=True)
class Translations:
    """One catalogue as plain data: usable translations only (no fuzzy or empty ones)."""

    messages: Messages
    plural_expr: str = SOURCE_PLURAL


def read_translations(po: Path, code: str) -> Translations:
    """The usable translations of the ``.po`` file ``po`` (blocking)."""
    from babel.messages.pofile import read_po  # the daemon's child reads catalogues

    with po.open("rb") as handle:
        catalog = read_po(handle, locale=code)
    messages: Messages = {}
    for message in catalog:
        if not message.id or message.fuzzy:
            continue
        key = message.id if isinstance(message.id, str) else message.id[0]
        text = message.string
        if isinstance(text, str) and text:
            messages[key] = text
        elif isinstance(text, tuple) and any(text):
            messages[key] = tuple(text)
    return Translations(messages, catalog.plural_expr)


@dataclass(frozen=True)
class _Content:
    """What is read of a language on first use."""

    catalog: Translations | None  # None: the source language (or no catalogue)
    #: ``LOCALE_KEYS`` of the locale's CLDR data, read apart (``locale_data_apart``); None:
    #: read in this process on first use (``slim_locale``).
    data: dict[str | int | None, Any] | None = None


@dataclass(eq=False)
class Language:
    code: str
    #: The language's own name for itself ("Français", "العربية"), for the switch on every
    #: page; read at start without keeping the locale's CLDR data (see ``native_name``).
    name: str
    #: Where its catalogue is (``LOCALES_DIR/CODE/LC_MESSAGES/messages.po``).
    directory: Path = LOCALES_DIR
    _content: _Content | None = field(default=None, repr=False)
    _reading: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _loaded(self) -> _Content:
        """The catalogue and locale data, read on first use (blocking: a child process)."""
        content = self._content
        if content is None:
            with self._reading:
                if self._content is None:
                    self._content = _read_content(self.directory, self.code)
                content = self._content
        return content

    @property
    def loaded(self) -> bool:
        """Whether the catalogue and locale data were read yet."""
        return self._content is not None

    @property
    def catalog(self) -> Translations | None:
        return self._loaded().catalog

    @property
    def data(self) -> dict[str | int | None, Any] | None:
        return self._loaded().data

    @cached_property
    def _plural(self) -> Callable[[int], int]:
        catalog = self.catalog
        return gettext.c2py(catalog.plural_expr if catalog is not None else SOURCE_PLURAL)

    @cached_property
    def locale(self) -> Locale:
        """The locale with only the CLDR data the pages use (blocking the first time)."""
        data = self.data
        if data is None:
            return slim_locale(self.code)
        return _with_data(Locale.parse(self.code), data)

    @property
    def direction(self) -> str:
        return "rtl" if self.code in RTL_LANGUAGES else "ltr"

    def warm(self) -> None:
        """Make this language ready now (blocking): its catalogue and locale data are read
        on first use, which must not happen on the event loop. The app warms a language on
        a thread the first time a page asks for it."""
        self.datetime(0)
        self.size(1234567)
        _ = self._plural

    def gettext(self, message: str, **variables: object) -> str:
        """``message`` in this language (the source text if untranslated), with
        ``%(name)s`` placeholders filled from ``variables`` (Jinja2's "newstyle")."""
        text = message
        catalog = self.catalog
        if catalog is not None:
            translated = catalog.messages.get(message)
            if isinstance(translated, str):
                text = translated
        return text % variables if variables else text

    def ngettext(self, singular: str, plural: str, count: int, **variables: object) -> str:
        text = singular if count == 1 else plural
        catalog = self.catalog
        if catalog is not None:
            forms = catalog.messages.get(singular)
            if isinstance(forms, tuple):
                index = self._plural(count)
                if index < len(forms) and forms[index]:
                    text = forms[index]
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


#: The parts of a locale's CLDR data the pages use: dates, times and numbers. A whole locale
#: (with the root it inherits from) is 1.5-5 MiB resident, almost all of it names of
#: languages, territories, currencies, units and time zones no page shows.
LOCALE_KEYS = (
    "date_formats",
    "time_formats",
    "datetime_formats",
    "datetime_skeletons",
    "months",
    "days",
    "eras",
    "day_periods",
    "quarters",
    "number_symbols",
    "decimal_formats",
    "default_numbering_system",
    "numbering_systems",
    "time_zones",
    "meta_zones",
    "zone_formats",
)


def slim_locale(code: str) -> Locale:
    """``code``'s Locale holding only ``LOCALE_KEYS`` of its data (blocking).

    Babel keeps every locale it loaded, whole, in its module caches; this takes the parts
    the pages use and empties those caches. A key Babel needs but that is not kept fails
    loudly (KeyError) in the page tests, rather than silently loading the whole locale.
    """
    locale = Locale.parse(code)
    full = localedata.load(str(locale))
    slim: dict[str | int | None, Any] = {key: full[key] for key in LOCALE_KEYS if key in full}
    localedata.clear_caches()
    return _with_data(locale, slim)


def _with_data(locale: Locale, data: dict[str | int | None, Any]) -> Locale:
    # Babel has no public way to give a Locale its data; the attribute is the one its
    # ``_data`` property fills on first use.
    locale._Locale__data = localedata.LocaleDataDict(data)  # type: ignore[attr-defined]
    return locale


#: code -> (own name, LOCALE_KEYS data, (messages, plural expression) or None); data and
#: translations are None for a code asked for its name only. Builtin types only, since the
#: child pickles them as its ``__main__``.
LocaleData = dict[str, tuple[str, dict[str | int | None, Any] | None, tuple[Messages, str] | None]]
#: In the child's arguments: the codes after it are asked for their names only.
NAMES_ONLY = "--names"


def locale_data_apart(
    codes: list[str],
    directory: Path = LOCALES_DIR,
    timeout: float = 60.0,
    names_only: list[str] | None = None,
) -> LocaleData:
    """Each code's own name, ``LOCALE_KEYS`` data and translations (from ``directory``),
    and the names of ``names_only``, read in a short-lived child process (``python -m
    fieldsync.web.i18n DIR CODE... [--names CODE...]``; blocking).

    Read in the daemon and dropped, whole locale files leave freed but not returned memory
    behind (about 1.5 MiB, measured with bench/web.py), and parsing the catalogues would
    load Babel's message parser; the child's answer is plain data, a few kB a language. If
    the child fails, the daemon reads the files itself.
    """
    try:
        result = subprocess.run(  # noqa: S603 - our own module, by the running interpreter
            [
                sys.executable,
                "-m",
                "fieldsync.web.i18n",
                str(directory),
                *codes,
                NAMES_ONLY,
                *(names_only or []),
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        # Written just now by our own child process, from Babel's package data.
        answer: LocaleData = pickle.loads(result.stdout)  # noqa: S301
    except (OSError, subprocess.SubprocessError, pickle.UnpicklingError, EOFError) as exc:
        log.warning("web app: locale data read in the app itself (%s)", exc)
        return {}
    return answer


def _catalogue(directory: Path, code: str) -> Path:
    return directory / code / "LC_MESSAGES" / "messages.po"


def _read_locale_data(directory: Path, arguments: list[str]) -> LocaleData:
    """``locale_data_apart``'s child: ``CODE... [--names CODE...]``."""
    answer: LocaleData = {}
    split = arguments.index(NAMES_ONLY) if NAMES_ONLY in arguments else len(arguments)
    for code in arguments[split + 1 :]:
        answer[code] = (native_name(code), None, None)
    for code in arguments[:split]:
        full = localedata.load(str(Locale.parse(code)))
        po = _catalogue(directory, code)
        answer[code] = (
            native_name(code),
            {key: full[key] for key in LOCALE_KEYS if key in full},
            dataclasses.astuple(read_translations(po, code)) if po.is_file() else None,
        )
    return answer


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


def _read_content(directory: Path, code: str) -> _Content:
    """``code``'s catalogue and locale data (blocking): read apart, else here."""
    apart = locale_data_apart([code], directory)
    if code in apart:
        _name, data, plain = apart[code]
        return _Content(Translations(*plain) if plain is not None else None, data)
    po = _catalogue(directory, code)
    return _Content(read_translations(po, code) if po.is_file() else None)


def load_languages(directory: Path = LOCALES_DIR) -> dict[str, Language]:
    """The source language (ready) and every catalogue under ``directory``, by name only
    until first used (blocking: at start)."""
    codes = [SOURCE_LANGUAGE]
    for po in sorted(directory.glob("*/LC_MESSAGES/messages.po")):
        code = po.parent.parent.name
        try:
            Locale.parse(code)
        except (UnknownLocaleError, ValueError):
            continue
        if code not in codes:
            codes.append(code)
    others = codes[1:]
    apart = locale_data_apart([SOURCE_LANGUAGE], directory, names_only=others)
    languages = {}
    for code in codes:
        if code in apart:
            name, data, plain = apart[code]
            content = None
            if code == SOURCE_LANGUAGE:
                translations = Translations(*plain) if plain is not None else None
                content = _Content(translations, data)
            languages[code] = Language(code, name, directory, content)
        else:
            languages[code] = Language(code, native_name(code), directory)
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


if __name__ == "__main__":  # locale_data_apart's child: DIRECTORY CODE...
    sys.stdout.buffer.write(pickle.dumps(_read_locale_data(Path(sys.argv[1]), sys.argv[2:])))
