"""The network's report form ``fieldsync.form/1`` (SPEC.md §18).

HQ describes once what a monitor is asked: the category list with labels in several
languages, which report fields are asked and whether they are required, and a few extra
fields of simple types (text, number, date, choice). Every place that writes a report (the
CLI prompt, the web app) renders the same form and checks answers with ``Form.validate``,
which reports *every* problem at once (one message per field) so nothing typed is lost.

A form is a plain map (the same shape in JSON for HQ's file and in canonical msgpack on the
wire); ``parse_form`` checks one from untrusted input. ``default_form()`` is what a network
without its own form uses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fieldsync_protocol import codec
from fieldsync_protocol.crypto import Domain, sign, signing_public_key, verify
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.membership import NETWORK_ID_SIZE, VERSION, Manifest, is_version
from fieldsync_protocol.report import (
    KEY,
    LANGUAGE_TAG,
    LOCATION_SOURCES,
    MAX_EXTRA,
    MAX_EXTRA_TEXT,
    MAX_LIST,
    MAX_NARRATIVE,
    SENSITIVITIES,
    check_timestamp,
)

SCHEMA = "fieldsync.form/1"
MAX_VERSION = 2**32 - 1
MAX_LANGUAGES = 16
MAX_CATEGORIES = 256
MAX_FIELDS = 40
MAX_OPTIONS = 64
MAX_LABEL = 200
MAX_HELP = 500
#: Largest form item (SPEC.md §18.4): the default form in four languages is about 4 KiB.
MAX_FORM_ITEM = 32 * 1024

#: Types of the form's own (extra) fields; their answers go in the report's ``extra`` map.
EXTRA_TYPES = ("text", "number", "date", "choice")

#: The report fields a form may ask, with the type each must have. Their answers become the
#: report fields of the same name (``place`` and ``location`` together make ``location``).
STANDARD_TYPES: dict[str, str] = {
    "narrative": "narrative",
    "categories": "categories",
    "occurred": "date",
    "title": "text",
    "place": "text",
    "location": "location",
    "sensitivity": "choice",
}
#: Standard fields every form asks, always as required (the report schema needs them).
ALWAYS_REQUIRED = ("narrative", "categories", "occurred")
#: Longest text the report schema takes for the standard text fields.
_STANDARD_TEXT = {"title": 200, "place": 500}

#: Answer names that belong to a standard field without being one (SPEC.md §18.3).
ANSWER_PARTS = ("approximate", "lat", "lon", "accuracy", "location_source", "language")

_DATE_PRECISION = (
    (re.compile(r"[0-9]{4}"), "year"),
    (re.compile(r"[0-9]{4}-[0-9]{2}"), "month"),
    (re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"), "day"),
    (
        re.compile(
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?(Z|[+-][0-9]{2}:[0-9]{2})"
        ),
        "minute",
    ),
)
_LOCAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?")
_TRUE = ("true", "yes", "y", "on", "1")
_FALSE = ("false", "no", "n", "off", "0", "")


class Problem(str):
    """One answer's problem: an English message that also keeps its template and values.

    It *is* the message (a ``str``); a translated page renders
    ``gettext(problem.template).format(**problem.values)`` instead.
    """

    template: str
    values: dict[str, str]

    def __new__(cls, template: str, **values: str) -> Problem:
        problem = super().__new__(cls, template.format(**values))
        problem.template = template
        problem.values = values
        return problem


# Every message Form.validate can give (so translation catalogues can list them).
REQUIRED = "This field is required."
NOT_TEXT = "Must be text."
TOO_LONG = "Must be at most {limit} characters."
EMPTY_NARRATIVE = "Describe what happened."
UNKNOWN_CATEGORY = "Unknown category {given}; choose from: {choices}."
TOO_MANY = "Choose at most {limit}."
NOT_A_DATE = "{given} is not a date; use 2025-03-01, 2025-03, 2025 or 2025-03-01T09:30Z."
IMPOSSIBLE_DATE = "{given} is not a real date or time."
NOT_A_NUMBER = "{given} is not a number."
OUT_OF_RANGE = "Must be between {low} and {high}."
BOTH_COORDINATES = "Give both latitude and longitude, or neither."
NOT_AN_OPTION = "{given} is not one of: {choices}."
NOT_YES_NO = "{given} is not yes or no."
NOT_A_LANGUAGE = "{given} is not a language tag like fr or pt-BR."
MESSAGES = (
    REQUIRED,
    NOT_TEXT,
    TOO_LONG,
    EMPTY_NARRATIVE,
    UNKNOWN_CATEGORY,
    TOO_MANY,
    NOT_A_DATE,
    IMPOSSIBLE_DATE,
    NOT_A_NUMBER,
    OUT_OF_RANGE,
    BOTH_COORDINATES,
    NOT_AN_OPTION,
    NOT_YES_NO,
    NOT_A_LANGUAGE,
)


class _Refused(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def _refuse(template: str, **values: str) -> _Refused:
    return _Refused(Problem(template, **values))


@dataclass(frozen=True)
class Choice:
    """A category or an option of a choice field: a key and its label in each language."""

    key: str
    labels: dict[str, str]

    def label(self, language: str, languages: tuple[str, ...]) -> str:
        return _pick(self.labels, language, languages) or self.key


@dataclass(frozen=True)
class FormField:
    key: str
    type: str
    required: bool
    labels: dict[str, str]
    help: dict[str, str] = field(default_factory=dict)
    options: tuple[Choice, ...] = ()
    default: str | None = None
    min: float | None = None
    max: float | None = None
    max_length: int | None = None

    @property
    def standard(self) -> bool:
        """True for a report field; False for the form's own (its answer goes in ``extra``)."""
        return self.key in STANDARD_TYPES

    def option_keys(self) -> tuple[str, ...]:
        return tuple(o.key for o in self.options)


def _pick(labels: Mapping[str, str], language: str, languages: tuple[str, ...]) -> str | None:
    """The label for ``language``: exact tag, then its primary language, then the first."""
    primary = language.split("-")[0].lower()
    for candidate in (language, primary, languages[0]):
        if candidate in labels:
            return labels[candidate]
    return None


@dataclass(frozen=True)
class Form:
    """A parsed, valid form. Build one with ``parse_form`` or ``default_form``."""

    version: int
    languages: tuple[str, ...]
    categories: tuple[Choice, ...]
    fields: tuple[FormField, ...]

    def category_keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.categories)

    def field(self, key: str) -> FormField | None:
        return next((f for f in self.fields if f.key == key), None)

    def label(self, item: FormField | Choice, language: str) -> str:
        """``item``'s label in ``language`` (or its primary language, or the form's first)."""
        return _pick(item.labels, language, self.languages) or item.key

    def help(self, item: FormField, language: str) -> str:
        return _pick(item.help, language, self.languages) or ""

    def to_map(self) -> dict[str, Any]:
        """The form as its canonical map (the JSON file and the signed item hold this)."""
        return {
            "schema": SCHEMA,
            "version": self.version,
            "languages": list(self.languages),
            "categories": [{"key": c.key, "labels": dict(c.labels)} for c in self.categories],
            "fields": [_field_map(f) for f in self.fields],
        }

    def encode(self) -> bytes:
        return codec.encode(self.to_map())

    def validate(self, answers: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Problem]]:
        """Check ``answers``; return (report fields, {field key: problem}).

        Answers are what a person typed: text (or numbers and lists from a program), keyed
        by the form's field keys plus ``approximate``, ``lat``, ``lon``, ``accuracy``,
        ``location_source`` and ``language``. Other keys are ignored. Every field is
        checked, so the problems name every wrong answer at once. The report fields are
        usable only when there are no problems.
        """
        report: dict[str, Any] = {"taxonomy_version": str(self.version)}
        extra: dict[str, Any] = {}
        problems: dict[str, Problem] = {}
        for form_field in self.fields:
            raw = answers.get(form_field.key)
            try:
                value = _answer(form_field, raw, answers, self)
            except _Refused as refused:
                problems[form_field.key] = refused.problem
                continue
            if value is None:
                continue
            if not form_field.standard:
                extra[form_field.key] = value
            elif form_field.key in ("place", "location"):
                location = report.setdefault("location", {"source": "text"})
                location.update(value)
            else:
                report[form_field.key] = value
        if extra:
            report["extra"] = extra
        language = answers.get("language")
        if language not in (None, ""):
            if isinstance(language, str) and LANGUAGE_TAG.fullmatch(language[:64]):
                report["language"] = language
            else:
                problems["language"] = Problem(NOT_A_LANGUAGE, given=_shown(language))
        return report, problems


def _field_map(f: FormField) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": f.key,
        "type": f.type,
        "required": f.required,
        "labels": dict(f.labels),
    }
    if f.help:
        out["help"] = dict(f.help)
    if f.options:
        out["options"] = [{"key": o.key, "labels": dict(o.labels)} for o in f.options]
    for name in ("default", "min", "max", "max_length"):
        if getattr(f, name) is not None:
            out[name] = getattr(f, name)
    return out


# --- answers -------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:40])


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | tuple) and not value)


def _answer(f: FormField, raw: Any, answers: Mapping[str, Any], form: Form) -> Any:
    """The report value of one field's answer (None when skipped); ``_Refused`` if wrong."""
    if f.type == "location":
        return _location(answers, f.required)
    if isinstance(raw, str) and f.type not in ("narrative", "text"):
        raw = raw.strip()
    if _blank(raw) or (
        f.type in ("narrative", "text") and isinstance(raw, str) and not raw.strip()
    ):
        if f.default is not None:
            return f.default
        if f.required:
            raise _refuse(EMPTY_NARRATIVE if f.type == "narrative" else REQUIRED)
        return None
    if f.type == "narrative":
        return _text(raw, MAX_NARRATIVE)
    if f.type == "text":
        text = _text(raw, f.max_length or MAX_EXTRA_TEXT)
        return {"place": text} if f.key == "place" else text
    if f.type == "categories":
        return _categories(raw, form)
    if f.type == "date":
        occurred = occurred_field(raw, _yes_no(answers.get("approximate")))
        return occurred if f.key == "occurred" else occurred["start"]
    if f.type == "number":
        return _number(raw, f.min, f.max)
    return _choice(raw, f.option_keys())


def _text(raw: Any, limit: int) -> str:
    if not isinstance(raw, str):
        raise _refuse(NOT_TEXT)
    if len(raw) > limit:
        raise _refuse(TOO_LONG, limit=str(limit))
    return raw


def _categories(raw: Any, form: Form) -> list[str]:
    given = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(given, list | tuple) or not all(isinstance(k, str) for k in given):
        raise _refuse(NOT_TEXT)
    keys = list(dict.fromkeys(k.strip() for k in given if k.strip()))
    known = form.category_keys()
    unknown = [k for k in keys if k not in known]
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown)
        raise _refuse(UNKNOWN_CATEGORY, given=shown, choices=", ".join(known))
    if not keys:
        raise _refuse(REQUIRED)
    if len(keys) > MAX_LIST:
        raise _refuse(TOO_MANY, limit=str(MAX_LIST))
    return keys


def _yes_no(raw: Any) -> bool:
    """A checkbox or a typed yes/no; absent is no."""
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    text = raw.strip().lower() if isinstance(raw, str) else None
    if text not in _TRUE + _FALSE:
        raise _refuse(NOT_YES_NO, given=_shown(raw))
    return text in _TRUE


def occurred_field(text: Any, approximate: bool) -> dict[str, Any]:
    """``2025-03-01`` → day precision; ``2025-03`` → month; a time with zone → minute.

    A time without a zone (``2025-03-01 09:30``) is taken as UTC. Impossible dates
    (``2025-02-30``) are refused here, where they are typed.
    """
    if not isinstance(text, str):
        raise _refuse(NOT_TEXT)
    text = text.strip()
    if _LOCAL_TIME.fullmatch(text):
        text = text.replace(" ", "T") + "Z"
    for pattern, precision in _DATE_PRECISION:
        if pattern.fullmatch(text):
            try:
                check_timestamp(text, "occurred")
            except RemoteProtocolError:
                raise _refuse(IMPOSSIBLE_DATE, given=repr(text)) from None
            return {"start": text, "precision": precision, "approximate": approximate}
    raise _refuse(NOT_A_DATE, given=_shown(text))


def _number(raw: Any, low: float | None, high: float | None) -> int | float:
    if isinstance(raw, bool):
        raise _refuse(NOT_A_NUMBER, given=_shown(raw))
    value: int | float
    if isinstance(raw, int | float):
        value = raw
    elif isinstance(raw, str) and len(raw) <= 40:
        try:
            value = int(raw) if re.fullmatch(r"[+-]?[0-9]{1,15}", raw) else float(raw)
        except ValueError:
            raise _refuse(NOT_A_NUMBER, given=_shown(raw)) from None
    else:
        raise _refuse(NOT_A_NUMBER, given=_shown(raw))
    if not math.isfinite(value) or abs(value) > 2.0**53:
        raise _refuse(NOT_A_NUMBER, given=_shown(raw))
    lowest = -(2.0**53) if low is None else low
    highest = 2.0**53 if high is None else high
    if not lowest <= value <= highest:
        raise _refuse(OUT_OF_RANGE, low=_num_text(lowest), high=_num_text(highest))
    return value


def _num_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _choice(raw: Any, options: tuple[str, ...]) -> str:
    if not isinstance(raw, str) or raw not in options:
        raise _refuse(NOT_AN_OPTION, given=_shown(raw), choices=", ".join(options))
    return raw


def _location(answers: Mapping[str, Any], required: bool) -> dict[str, Any] | None:
    """``lat``/``lon``/``accuracy`` answers as the report's location (0 is a coordinate)."""
    values: dict[str, int | float] = {}
    for name, key, low, high in (
        ("lat", "lat", -90, 90),
        ("lon", "lon", -180, 180),
        ("accuracy", "accuracy_m", 0, 40_000_000),
    ):
        raw = answers.get(name)
        if isinstance(raw, str):
            raw = raw.strip()
        if not _blank(raw):
            values[key] = _number(raw, low, high)
    if ("lat" in values) != ("lon" in values):
        raise _refuse(BOTH_COORDINATES)
    if "lat" not in values:
        if required:
            raise _refuse(REQUIRED)
        return None
    source = answers.get("location_source")
    location: dict[str, Any] = {"source": source if source in LOCATION_SOURCES else "gps"}
    return {**location, **values}


# --- parsing a form from untrusted input ----------------------------------------------------


def _fail(path: str, message: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"form {path}: {message}")


def _labels(value: Any, path: str, languages: tuple[str, ...], limit: int) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _fail(path, "must be a map of language to text")
    if set(value) != set(languages):
        missing = [lang for lang in languages if lang not in value]
        extra = sorted(str(k) for k in value if k not in languages)
        raise _fail(
            path,
            f"must give exactly the form's languages ({', '.join(languages)}); missing"
            f" {', '.join(missing) or 'none'}, not in the form {', '.join(extra) or 'none'}",
        )
    for language, text in value.items():
        if not isinstance(text, str) or not text.strip() or len(text) > limit:
            raise _fail(f"{path}.{language}", f"must be text of 1..{limit} characters")
    return {language: value[language] for language in languages}


def _key(value: Any, path: str) -> str:
    if not isinstance(value, str) or not KEY.fullmatch(value):
        raise _fail(path, f"must be a key like arbitrary-detention, got {_shown(value)}")
    return value


def _choices(value: Any, path: str, languages: tuple[str, ...], limit: int) -> tuple[Choice, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= limit:
        raise _fail(path, f"must be a list of 1..{limit} entries")
    out: list[Choice] = []
    for index, entry in enumerate(value):
        where = f"{path}[{index}]"
        entry = _as_map(entry, where, {"key", "labels"})
        key = _key(entry["key"], f"{where}.key")
        if any(c.key == key for c in out):
            raise _fail(where, f"repeats the key {key!r}")
        out.append(Choice(key, _labels(entry["labels"], f"{where}.labels", languages, MAX_LABEL)))
    return tuple(out)


def _as_map(
    value: Any, path: str, keys: set[str], optional: set[str] | None = None
) -> dict[str, Any]:
    return codec.as_map(value, f"form {path}".strip(), keys, optional)


def _bound(value: Any, path: str) -> float | int | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or abs(value) > 2.0**53
    ):
        raise _fail(path, "must be a finite number")
    return value


_FIELD_KEYS = {"key", "type", "required", "labels"}
_FIELD_OPTIONAL = {"help", "options", "default", "min", "max", "max_length"}
_ALLOWED_BY_TYPE = {
    "text": {"help", "max_length"},
    "number": {"help", "min", "max"},
    "choice": {"help", "options", "default"},
}


def _parse_field(value: Any, path: str, languages: tuple[str, ...]) -> FormField:
    entry = _as_map(value, path, _FIELD_KEYS, _FIELD_OPTIONAL)
    key = _key(entry["key"], f"{path}.key")
    kind = entry["type"]
    standard = STANDARD_TYPES.get(key)
    if standard is not None and kind != standard:
        raise _fail(f"{path}.type", f"the field {key} has type {standard}, not {_shown(kind)}")
    if standard is None and kind not in EXTRA_TYPES:
        raise _fail(f"{path}.type", f"must be one of {', '.join(EXTRA_TYPES)}, got {_shown(kind)}")
    unexpected = set(entry) - _FIELD_KEYS - _ALLOWED_BY_TYPE.get(kind, {"help"})
    if unexpected:
        raise _fail(path, f"a {kind} field has no {', '.join(sorted(unexpected))}")
    required = entry["required"]
    if not isinstance(required, bool):
        raise _fail(f"{path}.required", "must be true or false")
    if key in ALWAYS_REQUIRED and not required:
        raise _fail(f"{path}.required", f"the field {key} is always required")
    options: tuple[Choice, ...] = ()
    if kind == "choice":
        if "options" not in entry:
            raise _fail(path, "a choice field needs options")
        options = _choices(entry["options"], f"{path}.options", languages, MAX_OPTIONS)
        if key == "sensitivity" and {o.key for o in options} != set(SENSITIVITIES):
            raise _fail(f"{path}.options", f"sensitivity options are {', '.join(SENSITIVITIES)}")
    default = entry.get("default")
    if default is not None and default not in [o.key for o in options]:
        raise _fail(f"{path}.default", "must be one of the options")
    low, high = _bound(entry.get("min"), f"{path}.min"), _bound(entry.get("max"), f"{path}.max")
    if low is not None and high is not None and low > high:
        raise _fail(path, "min is more than max")
    max_length = entry.get("max_length")
    if max_length is not None:
        limit = _STANDARD_TEXT.get(key, MAX_EXTRA_TEXT)
        if (
            isinstance(max_length, bool)
            or not isinstance(max_length, int)
            or not 1 <= max_length <= limit
        ):
            raise _fail(f"{path}.max_length", f"must be an integer 1..{limit}")
    elif kind == "text":
        max_length = _STANDARD_TEXT.get(key, MAX_EXTRA_TEXT)
    helps = entry.get("help")
    return FormField(
        key=key,
        type=kind,
        required=required,
        labels=_labels(entry["labels"], f"{path}.labels", languages, MAX_LABEL),
        help={} if helps is None else _labels(helps, f"{path}.help", languages, MAX_HELP),
        options=options,
        default=default,
        min=low,
        max=high,
        max_length=max_length,
    )


def parse_form(value: Any) -> Form:
    """Check a form map from untrusted input (JSON or msgpack); raise naming what is wrong."""
    top = _as_map(value, "", {"schema", "version", "languages", "categories", "fields"})
    if top["schema"] != SCHEMA:
        raise _fail("schema", f"must be {SCHEMA!r}")
    version = top["version"]
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        raise _fail("version", f"must be an integer 0..{MAX_VERSION}")
    raw_languages = top["languages"]
    if not isinstance(raw_languages, list) or not 1 <= len(raw_languages) <= MAX_LANGUAGES:
        raise _fail("languages", f"must list 1..{MAX_LANGUAGES} language tags")
    for index, language in enumerate(raw_languages):
        if not isinstance(language, str) or not LANGUAGE_TAG.fullmatch(language[:64]):
            raise _fail(
                f"languages[{index}]", f"must be a tag like fr or pt-BR, got {_shown(language)}"
            )
    languages = tuple(raw_languages)
    if len(set(languages)) != len(languages):
        raise _fail("languages", "lists a language twice")
    categories = _choices(top["categories"], "categories", languages, MAX_CATEGORIES)
    raw_fields = top["fields"]
    if not isinstance(raw_fields, list) or not 1 <= len(raw_fields) <= MAX_FIELDS:
        raise _fail("fields", f"must be a list of 1..{MAX_FIELDS} fields")
    fields: list[FormField] = []
    for index, entry in enumerate(raw_fields):
        parsed = _parse_field(entry, f"fields[{index}]", languages)
        if any(f.key == parsed.key for f in fields):
            raise _fail(f"fields[{index}]", f"repeats the key {parsed.key!r}")
        fields.append(parsed)
    missing = [k for k in ALWAYS_REQUIRED if not any(f.key == k for f in fields)]
    if missing:
        raise _fail("fields", f"lacks {', '.join(missing)} (every form asks them)")
    extras = sum(1 for f in fields if not f.standard)
    if extras > MAX_EXTRA:
        raise _fail("fields", f"has {extras} extra fields; at most {MAX_EXTRA}")
    return Form(version, languages, categories, tuple(fields))


# --- the built-in default -------------------------------------------------------------------

_DEFAULT_LANGUAGES = ("en", "fr", "es", "ar")


def _l(en: str, fr: str, es: str, ar: str) -> dict[str, str]:
    return {"en": en, "fr": fr, "es": es, "ar": ar}


_DEFAULT_CATEGORIES = (
    (
        "unclassified",
        _l("Not yet classified", "Pas encore classé", "Aún sin clasificar", "غير مصنف بعد"),
    ),
    (
        "arbitrary-detention",
        _l(
            "Arbitrary arrest or detention",
            "Arrestation ou détention arbitraire",
            "Arresto o detención arbitraria",
            "اعتقال أو احتجاز تعسفي",
        ),
    ),
    (
        "torture",
        _l(
            "Torture or ill-treatment",
            "Torture ou mauvais traitements",
            "Tortura o malos tratos",
            "تعذيب أو سوء معاملة",
        ),
    ),
    (
        "excessive-force",
        _l(
            "Excessive use of force",
            "Usage excessif de la force",
            "Uso excesivo de la fuerza",
            "استخدام مفرط للقوة",
        ),
    ),
    (
        "unlawful-killing",
        _l("Unlawful killing", "Homicide illégal", "Homicidio ilegítimo", "قتل غير مشروع"),
    ),
    (
        "enforced-disappearance",
        _l("Enforced disappearance", "Disparition forcée", "Desaparición forzada", "اختفاء قسري"),
    ),
    (
        "sexual-violence",
        _l(
            "Sexual or gender-based violence",
            "Violence sexuelle ou fondée sur le genre",
            "Violencia sexual o de género",
            "عنف جنسي أو قائم على النوع الاجتماعي",
        ),
    ),
    (
        "threats-harassment",
        _l(
            "Threats or harassment",
            "Menaces ou harcèlement",
            "Amenazas u hostigamiento",
            "تهديدات أو مضايقات",
        ),
    ),
    (
        "freedom-of-expression",
        _l(
            "Attack on freedom of expression",
            "Atteinte à la liberté d'expression",
            "Ataque a la libertad de expresión",
            "اعتداء على حرية التعبير",
        ),
    ),
    (
        "freedom-of-assembly",
        _l(
            "Restriction of peaceful assembly",
            "Entrave au droit de réunion pacifique",
            "Restricción de la reunión pacífica",
            "تقييد حق التجمع السلمي",
        ),
    ),
    (
        "property-destruction",
        _l(
            "Destruction of property",
            "Destruction de biens",
            "Destrucción de bienes",
            "تدمير الممتلكات",
        ),
    ),
    (
        "forced-displacement",
        _l("Forced displacement", "Déplacement forcé", "Desplazamiento forzado", "تهجير قسري"),
    ),
    ("other", _l("Other", "Autre", "Otro", "أخرى")),
)


def _default_map() -> dict[str, Any]:
    def std(key: str, required: bool, labels: dict[str, str], **more: Any) -> dict[str, Any]:
        return {
            "key": key,
            "type": STANDARD_TYPES[key],
            "required": required,
            "labels": labels,
            **more,
        }

    return {
        "schema": SCHEMA,
        "version": 0,
        "languages": list(_DEFAULT_LANGUAGES),
        "categories": [{"key": k, "labels": labels} for k, labels in _DEFAULT_CATEGORIES],
        "fields": [
            std(
                "narrative",
                True,
                _l("What happened", "Ce qui s'est passé", "Qué sucedió", "ماذا حدث"),
                help=_l(
                    "In your own words: who, what, where, when.",
                    "Avec vos mots : qui, quoi, où, quand.",
                    "Con sus palabras: quién, qué, dónde, cuándo.",
                    "بكلماتك: من، ماذا، أين، متى.",
                ),
            ),
            std("categories", True, _l("Categories", "Catégories", "Categorías", "الفئات")),
            std(
                "occurred",
                True,
                _l(
                    "When did it happen",
                    "Quand cela s'est-il passé",
                    "Cuándo ocurrió",
                    "متى حدث ذلك",
                ),
                help=_l(
                    "A day (2025-03-01), a month (2025-03), a year, or a time (2025-03-01T09:30Z).",
                    "Un jour (2025-03-01), un mois (2025-03), une année ou une heure"
                    " (2025-03-01T09:30Z).",
                    "Un día (2025-03-01), un mes (2025-03), un año o una hora (2025-03-01T09:30Z).",
                    "يوم (2025-03-01) أو شهر (2025-03) أو سنة أو وقت (2025-03-01T09:30Z).",
                ),
            ),
            std("title", False, _l("Short title", "Titre court", "Título breve", "عنوان قصير")),
            std("place", False, _l("Place", "Lieu", "Lugar", "المكان")),
            std(
                "location",
                False,
                _l(
                    "Coordinates (latitude, longitude)",
                    "Coordonnées (latitude, longitude)",
                    "Coordenadas (latitud, longitud)",
                    "الإحداثيات (خط العرض، خط الطول)",
                ),
            ),
            std(
                "sensitivity",
                True,
                _l("Sensitivity", "Sensibilité", "Sensibilidad", "درجة الحساسية"),
                default="restricted",
                options=[
                    {"key": "public", "labels": _l("Public", "Public", "Público", "عام")},
                    {
                        "key": "internal",
                        "labels": _l(
                            "Within the network",
                            "Au sein du réseau",
                            "Dentro de la red",
                            "داخل الشبكة",
                        ),
                    },
                    {
                        "key": "restricted",
                        "labels": _l("Restricted", "Restreint", "Restringido", "مقيّد"),
                    },
                    {
                        "key": "confidential",
                        "labels": _l("Confidential", "Confidentiel", "Confidencial", "سري"),
                    },
                ],
            ),
        ],
    }


def default_form() -> Form:
    """The form of a network whose HQ has not set one (version 0: any set form replaces it)."""
    return parse_form(_default_map())


# --- the form as a root-signed item ---------------------------------------------------------


def sign_form(form: Form, manifest: Manifest, root_seed: bytes) -> bytes:
    """Encode ``form`` as an item (``t`` = ``"f"``) of ``manifest``'s network, root-signed."""
    if signing_public_key(root_seed) != manifest.root_key:
        raise LocalProtocolError("the root seed does not match manifest.root_key")
    body = codec.encode({"form": form.to_map(), "net": manifest.network_id, "v": VERSION})
    item = codec.encode(
        {"b": body, "s": sign(Domain.FORM, root_seed, body), "t": "f", "v": VERSION}
    )
    if len(item) > MAX_FORM_ITEM:
        raise LocalProtocolError(f"the form item is {len(item)} bytes; at most {MAX_FORM_ITEM}")
    return item


def open_form(data: bytes, manifest: Manifest) -> Form:
    """Verify a form item against ``manifest`` (its root and network) and parse the form."""
    what = "form item"
    outer = codec.as_map(
        codec.decode(data, max_size=MAX_FORM_ITEM, what=what), what, {"b", "s", "t", "v"}
    )
    if outer["t"] != "f" or not is_version(outer["v"]):
        raise RemoteProtocolError("form item has the wrong type or version")
    body_bytes = codec.get_bytes(outer, "b", what)
    verify(Domain.FORM, manifest.root_key, body_bytes, codec.get_bytes(outer, "s", what, 64), what)
    body = codec.as_map(
        codec.decode(body_bytes, max_size=MAX_FORM_ITEM, what=what), what, {"form", "net", "v"}
    )
    if not is_version(body["v"]):
        raise RemoteProtocolError(f"form item has version {body['v']!r:.20}; this reads {VERSION}")
    if codec.get_bytes(body, "net", what, NETWORK_ID_SIZE) != manifest.network_id:
        raise RemoteProtocolError("form item belongs to another network")
    return parse_form(body["form"])
