"""Every field the report page shows, and how submitted form values become report fields.

This is the one place that knows the report form: the template loops over ``fields_for``
(``FIELDS`` with the network's categories, SPEC.md §18), the app calls ``read_form`` and
``field_of_error``. The category pick list, its labels in the page's language and the keys
accepted come from the network's form (HQ's signed form item, else ``default_form()``), the
same list `fieldsync report add` offers.

It checks only what a browser form cannot carry (a latitude that is not a number, a date
that is not in one of the accepted shapes); every rule of the report itself is the
protocol's, applied by ``Node.draft_report``, whose errors ``field_of_error`` places next
to the field they name. Labels are message ids, translated when the page renders.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fieldsync_protocol.form import Form, default_form
from fieldsync_protocol.report import SENSITIVITIES


def N_(message: str) -> str:
    """Mark ``message`` for the catalogues; it is translated where it is shown."""
    return message


@dataclass(frozen=True)
class Choice:
    value: str
    label: str


@dataclass(frozen=True)
class FormField:
    """One control of the report page."""

    name: str
    label: str
    kind: str  # text, textarea, number, checkbox, checkboxes, select, date, time, files
    required: bool = False
    hint: str | None = None
    choices: tuple[Choice, ...] = ()
    group: str = "report"
    #: Extra HTML attributes (inputmode, autocomplete, accept, capture, min/max/step ...).
    attrs: Mapping[str, str] = field(default_factory=dict)
    default: str = ""


def categories_of(network_form: Form, language: str) -> tuple[Choice, ...]:
    """The network form's categories, labelled in ``language`` (HQ writes the labels)."""
    return tuple(Choice(c.key, network_form.label(c, language)) for c in network_form.categories)


#: The built-in form's categories (English labels), for a page rendered without a network.
CATEGORIES: tuple[Choice, ...] = categories_of(default_form(), "en")

SENSITIVITY_LABELS = {
    "public": N_("Public"),
    "internal": N_("Internal to the network"),
    "restricted": N_("Restricted (default)"),
    "confidential": N_("Confidential"),
}

#: Languages a narrative may be written in, offered on the page (BCP 47 tags).
NARRATIVE_LANGUAGES: tuple[Choice, ...] = (
    Choice("ar", "العربية"),
    Choice("en", "English"),
    Choice("es", "Español"),
    Choice("fr", "Français"),
)

ATTACH_ACCEPT = "image/*,audio/*,video/*,application/pdf"

FIELDS: tuple[FormField, ...] = (
    FormField("title", N_("Short title"), "text", attrs={"maxlength": "200"}),
    FormField(
        "narrative",
        N_("What happened"),
        "textarea",
        required=True,
        hint=N_("In your own words: who, what, how. Names are not needed."),
    ),
    FormField(
        "categories",
        N_("Category"),
        "checkboxes",
        required=True,
        hint=N_("Choose one or more; the first is the main one."),
        choices=CATEGORIES,
    ),
    FormField(
        "occurred_date",
        N_("Date it happened"),
        "date",
        required=True,
        group="when",
        hint=N_("Year, month and day (2025-03-01), or only year and month (2025-03)."),
        attrs={
            "inputmode": "numeric",
            "placeholder": "2025-03-01",
            "maxlength": "10",
            "dir": "ltr",
        },
    ),
    FormField("occurred_time", N_("Time (optional)"), "time", group="when"),
    FormField("approximate", N_("The date or time is approximate"), "checkbox", group="when"),
    FormField(
        "place",
        N_("Place"),
        "text",
        group="where",
        hint=N_("A place name or description."),
        attrs={"maxlength": "500"},
    ),
    FormField(
        "lat",
        N_("Latitude"),
        "number",
        group="where",
        attrs={"step": "any", "min": "-90", "max": "90", "inputmode": "decimal", "dir": "ltr"},
    ),
    FormField(
        "lon",
        N_("Longitude"),
        "number",
        group="where",
        attrs={"step": "any", "min": "-180", "max": "180", "inputmode": "decimal", "dir": "ltr"},
    ),
    FormField(
        "accuracy",
        N_("Accuracy in metres"),
        "number",
        group="where",
        attrs={"step": "any", "min": "0", "inputmode": "decimal", "dir": "ltr"},
    ),
    FormField(
        "sensitivity",
        N_("Sensitivity"),
        "select",
        choices=tuple(Choice(s, SENSITIVITY_LABELS[s]) for s in SENSITIVITIES),
        default="restricted",
    ),
    FormField("language", N_("Language of the narrative"), "select", choices=NARRATIVE_LANGUAGES),
    FormField(
        "attachment_camera",
        N_("Take a photo"),
        "files",
        group="media",
        attrs={"accept": "image/*", "capture": "environment"},
    ),
    FormField(
        "attachment_audio",
        N_("Record sound"),
        "files",
        group="media",
        attrs={"accept": "audio/*", "capture": "user"},
    ),
    FormField(
        "attachment_files",
        N_("Add files"),
        "files",
        group="media",
        hint=N_("Photos, recordings, videos or documents. They are encrypted as they arrive."),
        attrs={"accept": ATTACH_ACCEPT, "multiple": "multiple"},
    ),
)

FIELD_NAMES = frozenset(f.name for f in FIELDS)


def fields_for(network_form: Form, language: str) -> tuple[FormField, ...]:
    """``FIELDS`` with the network form's categories, labelled in ``language``."""
    categories = categories_of(network_form, language)
    return tuple(replace(f, choices=categories) if f.name == "categories" else f for f in FIELDS)


FILE_FIELDS = frozenset(f.name for f in FIELDS if f.kind == "files")
#: Where an attachment problem is shown.
ATTACHMENTS_FIELD = "attachment_files"

_DATE = re.compile(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?")
_TIME = re.compile(r"[0-9]{2}:[0-9]{2}")
_PRECISION = {4: "year", 7: "month", 10: "day"}

#: Messages of ``read_form`` and ``field_of_error`` (translated where shown).
MESSAGES = {
    "narrative": N_("Describe what happened."),
    "categories": N_("Choose at least one category from the list."),
    "occurred_date": N_("Enter the date like 2025-03-01, 2025-03 or 2025; it must exist."),
    "occurred_time": N_("Enter the time like 09:30."),
    "lat": N_("Latitude is a number from -90 to 90, given with the longitude."),
    "lon": N_("Longitude is a number from -180 to 180, given with the latitude."),
    "accuracy": N_("Accuracy is a number of metres, 0 or more."),
    "place": N_("The place description is too long."),
    "title": N_("The title is too long (200 characters at most)."),
    "sensitivity": N_("Choose a sensitivity from the list."),
    "language": N_("Choose a language from the list."),
    ATTACHMENTS_FIELD: N_("This attachment cannot be accepted."),
    "": N_("The report was not accepted."),
}


@dataclass
class FormValues:
    """What the monitor typed, kept to fill the page again (nothing typed is ever lost)."""

    values: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        self.values.setdefault(name, []).append(value)

    def get(self, name: str, default: str = "") -> str:
        found = self.values.get(name)
        return found[0] if found else default

    def all(self, name: str) -> list[str]:
        return list(self.values.get(name, []))


def read_form(
    form: FormValues, category_keys: Sequence[str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Report fields for ``Node.draft_report`` and the fields the form itself cannot read.

    Returns (fields, errors): ``errors`` maps a field name to a message id of ``MESSAGES``.
    """
    errors: dict[str, str] = {}
    fields: dict[str, Any] = {"origin": {"channel": "web-form"}}
    for name in ("title", "narrative"):
        text = form.get(name).replace("\r\n", "\n")
        if text.strip():
            fields[name] = text
    if "narrative" not in fields:
        errors["narrative"] = MESSAGES["narrative"]
    known = set(category_keys) if category_keys is not None else {c.value for c in CATEGORIES}
    categories = [key for key in form.all("categories") if key in known]
    if not categories or len(categories) != len(form.all("categories")):
        errors["categories"] = MESSAGES["categories"]
    else:
        fields["categories"] = list(dict.fromkeys(categories))
    occurred = _occurred(form, errors)
    if occurred is not None:
        fields["occurred"] = occurred
    location = _location(form, errors)
    if location is not None:
        fields["location"] = location
    for name in ("sensitivity", "language"):
        value = form.get(name)
        if value:
            fields[name] = value
    return fields, errors


def _occurred(form: FormValues, errors: dict[str, str]) -> dict[str, Any] | None:
    date = form.get("occurred_date").strip()
    time = form.get("occurred_time").strip()
    approximate = form.get("approximate") == "on"
    if not _DATE.fullmatch(date):
        errors["occurred_date"] = MESSAGES["occurred_date"]
        return None
    if time and not _TIME.fullmatch(time):
        errors["occurred_time"] = MESSAGES["occurred_time"]
        return None
    if time:
        if len(date) != 10:
            errors["occurred_date"] = MESSAGES["occurred_date"]
            return None
        # Read as UTC, as the CLI does for a time without a zone.
        return {"start": f"{date}T{time}Z", "precision": "minute", "approximate": approximate}
    return {"start": date, "precision": _PRECISION[len(date)], "approximate": approximate}


def _number(form: FormValues, name: str, errors: dict[str, str]) -> float | None:
    text = form.get(name).strip().replace(",", ".")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        errors[name] = MESSAGES[name]
        return None
    if value != value or value in (float("inf"), float("-inf")):
        errors[name] = MESSAGES[name]
        return None
    return value


def _location(form: FormValues, errors: dict[str, str]) -> dict[str, Any] | None:
    place = form.get("place").strip()
    lat = _number(form, "lat", errors)
    lon = _number(form, "lon", errors)
    accuracy = _number(form, "accuracy", errors)
    if lat is None and lon is None and not place:
        return None
    location: dict[str, Any] = {"source": "gps" if lat is not None else "text"}
    if place:
        location["place"] = place
    if lat is not None:
        location["lat"] = lat
    if lon is not None:
        location["lon"] = lon
    if accuracy is not None:
        location["accuracy_m"] = accuracy
    return location


#: A protocol error names a report field (``report field occurred.start: ...``): the page
#: shows it next to the control that fills that field.
_ERROR_FIELD = re.compile(r"report field ([a-z_]+)(?:\.([a-z_]+))?")
_CONTROL_OF: dict[str, Callable[[str | None], str]] = {
    "narrative": lambda _: "narrative",
    "title": lambda _: "title",
    "categories": lambda _: "categories",
    "occurred": lambda _: "occurred_date",
    "location": lambda sub: {"lon": "lon", "accuracy_m": "accuracy", "place": "place"}.get(
        sub or "", "lat"
    ),
    "sensitivity": lambda _: "sensitivity",
    "language": lambda _: "language",
    "attachments": lambda _: ATTACHMENTS_FIELD,
}


def field_of_error(message: str) -> str:
    """The form control a node or protocol error is about ("" when none is named)."""
    match = _ERROR_FIELD.search(message)
    if match is None:
        return ""
    to_control = _CONTROL_OF.get(match.group(1))
    return "" if to_control is None else to_control(match.group(2))
