"""The report body schema ``fieldsync.report/1`` (SPEC.md §7).

Fields follow the convergence of HURIDOCS ESF, Uwazi, ODK and Martus
(reference/ecosystem_anchors.md §1.4). The same validator runs where a report is written
(so a monitor learns at once what is wrong) and at HQ (where the body is untrusted).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

from fieldsync_protocol.attachment import parse_attachments
from fieldsync_protocol.errors import RemoteProtocolError

SCHEMA = "fieldsync.report/1"
MAX_NARRATIVE = 100_000
MAX_TEXT = 500
MAX_LIST = 64
#: Answers to a network form's own fields (SPEC.md §18): at most this many, each text of at
#: most MAX_EXTRA_TEXT characters or a number.
MAX_EXTRA = 32
MAX_EXTRA_TEXT = 2_000

CLOCK_SOURCES = ("ntp", "gps", "rtc", "fake-hwclock", "manual", "unknown")
PRECISIONS = ("minute", "hour", "day", "month", "year", "unknown")
LOCATION_SOURCES = ("gps", "exif", "map", "admin-pick", "text", "none")
SENSITIVITIES = ("public", "internal", "restricted", "confidential")
CHANNELS = ("cli", "web-form", "api", "import")
ROLES = ("victim", "perpetrator", "source", "witness", "other")

#: Longest string any pattern field accepts (checked before the regex runs).
MAX_PATTERN = 64

# ASCII only: ``\d`` would also match other scripts' digits. Matched with ``fullmatch``.
# Report ids are random (version 4, RFC 9562 §5.4: version nibble 4, variant bits 10): a
# time-based id (v1, v6, v7) would date the report on a seized device that still holds it.
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_UUID4_HINT = "a lowercase random UUID (version 4, like 0f9c2b7e-3d1a-4c5e-8b2f-6a7d9e0c1b34)"
#: Random bytes a report id is made of (``report_id``).
REPORT_ID_RANDOM = 16
_TIMESTAMP = re.compile(
    r"(?P<y>[0-9]{4})(-(?P<m>[0-9]{2})(-(?P<d>[0-9]{2})"
    r"(T(?P<H>[0-9]{2}):(?P<M>[0-9]{2})(:(?P<S>[0-9]{2}))?"
    r"(Z|[+-](?P<zh>[0-9]{2}):(?P<zm>[0-9]{2})))?)?)?"
)
#: A BCP 47 language tag (the shape only), and a taxonomy or form key.
LANGUAGE_TAG = re.compile(r"[a-zA-Z]{2,3}(-[a-zA-Z0-9]{1,8})*")
KEY = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")

Checker = Callable[[Any, str], None]


def _fail(path: str, message: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"report field {path}: {message}" if path else f"report {message}")


def _text(max_len: int = MAX_TEXT) -> Checker:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise _fail(path, "must be text")
        if len(value) > max_len:
            raise _fail(path, f"is longer than {max_len} characters")

    return check


def _pattern(regex: re.Pattern[str], hint: str) -> Checker:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, str) or len(value) > MAX_PATTERN or not regex.fullmatch(value):
            raise _fail(path, f"must be {hint}, got {value!r:.60}")

    return check


def _timestamp(value: Any, path: str) -> None:
    """``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``, or a date with ``Thh:mm[:ss]`` and a zone."""
    ok = isinstance(value, str) and len(value) <= MAX_PATTERN
    match = _TIMESTAMP.fullmatch(value) if ok else None
    if match is None:
        raise _fail(path, f"must be a date or time like 2025-03-01T09:30Z, got {value!r:.60}")
    found = match.groupdict()

    def part(name: str, absent: int) -> int:
        text = found[name]
        return absent if text is None else int(text)

    try:
        datetime.date(part("y", 1), part("m", 1), part("d", 1))
        datetime.time(part("H", 0), part("M", 0), part("S", 0))
        datetime.time(part("zh", 0), part("zm", 0))
    except ValueError:
        raise _fail(path, f"is not a real date or time: {value!r:.60}") from None


def _choice(options: tuple[str, ...]) -> Checker:
    def check(value: Any, path: str) -> None:
        if value not in options:
            raise _fail(path, f"must be one of {', '.join(options)}; got {value!r:.40}")

    return check


def _boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise _fail(path, "must be true or false")


def _number(low: float, high: float) -> Checker:
    def check(value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(path, "must be a number")
        # Comparisons are exact for ints of any size and false for NaN: no float() overflow.
        if not low <= value <= high:
            raise _fail(path, f"must be between {low} and {high}")

    return check


def _list_of(item: Checker, min_len: int = 0) -> Checker:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise _fail(path, "must be a list")
        if not min_len <= len(value) <= MAX_LIST:
            raise _fail(path, f"must have {min_len}..{MAX_LIST} entries")
        for index, element in enumerate(value):
            item(element, f"{path}[{index}]")

    return check


def _record(required: dict[str, Checker], optional: dict[str, Checker]) -> Checker:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise _fail(path, "must be a map")
        missing = [k for k in required if k not in value]
        if missing:
            raise _fail(path, f"lacks {', '.join(missing)}")
        for key, element in value.items():
            checker = required.get(key) or optional.get(key)
            if checker is None:
                raise _fail(path, f"has unknown field {key!r:.40}")
            if element is None and key in optional:
                continue
            checker(element, f"{path}.{key}" if path else key)

    return check


def _attachments(value: Any, path: str) -> None:
    """Media (SPEC.md §16); the error names the attachment field that is wrong."""
    try:
        parse_attachments(value)
    except RemoteProtocolError as exc:
        raise _fail(path, str(exc)) from None


_TIMESTAMP_CHECK = _timestamp


def check_timestamp(value: Any, path: str) -> None:
    """Raise ``RemoteProtocolError`` naming ``path`` unless ``value`` is a real timestamp."""
    _timestamp(value, path)


def _extra(value: Any, path: str) -> None:
    """Answers to a form's own fields: ``{key: text or number}`` (SPEC.md §18)."""
    if not isinstance(value, dict):
        raise _fail(path, "must be a map")
    if len(value) > MAX_EXTRA:
        raise _fail(path, f"has more than {MAX_EXTRA} entries")
    text = _text(MAX_EXTRA_TEXT)
    number = _number(-(2.0**53), 2.0**53)
    for key, element in value.items():
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise _fail(path, f"key {key!r:.40} must be a form key like weapon-type")
        checker = text if isinstance(element, str) else number
        checker(element, f"{path}.{key}")


_CATEGORY = _pattern(KEY, "a taxonomy key like arbitrary-detention")

_PERSON = _record(
    {"role": _choice(ROLES)},
    {
        "code": _text(32),
        "count": _number(1, 1_000_000),
        "sex": _text(16),
        "age_group": _text(16),
        "type": _text(64),
        "relation": _text(64),
        "reliability": _text(16),
        "name": _text(128),
    },
)

_SCHEMA_CHECK = _record(
    {
        "schema": _choice((SCHEMA,)),
        "id": _pattern(_UUID4, _UUID4_HINT),
        "created_at": _TIMESTAMP_CHECK,
        "clock": _record({"source": _choice(CLOCK_SOURCES), "synced": _boolean}, {}),
        "origin": _record({"channel": _choice(CHANNELS)}, {"monitor": _text(32)}),
        "language": _pattern(LANGUAGE_TAG, "a BCP 47 language tag like fr or pt-BR"),
        "occurred": _record(
            {"start": _TIMESTAMP_CHECK, "precision": _choice(PRECISIONS), "approximate": _boolean},
            {"end": _TIMESTAMP_CHECK},
        ),
        "categories": _list_of(_CATEGORY, 1),
        "narrative": _text(MAX_NARRATIVE),
        "sensitivity": _choice(SENSITIVITIES),
        "consent": _record(
            {"share_with_hq": _boolean},
            {"informed": _boolean, "publish": _boolean, "contact_ok": _boolean},
        ),
    },
    {
        "supersedes": _pattern(_UUID4, _UUID4_HINT),
        "taxonomy_version": _text(32),
        "title": _text(200),
        "location": _record(
            {"source": _choice(LOCATION_SOURCES)},
            {
                "lat": _number(-90, 90),
                "lon": _number(-180, 180),
                "accuracy_m": _number(0, 40_000_000),
                "alt_m": _number(-12_000, 100_000),
                "place": _text(),
                "admin": _list_of(_text(100)),
            },
        ),
        "people": _list_of(_PERSON),
        "attachments": _attachments,
        "extra": _extra,
    },
)


def report_id(random: bytes) -> str:
    """The report id made of 16 random bytes: a version-4 UUID, so it carries no time (§7)."""
    if len(random) != REPORT_ID_RANDOM:
        raise ValueError(f"a report id needs {REPORT_ID_RANDOM} random bytes, got {len(random)}")
    raw = bytearray(random)
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    hexed = raw.hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def validate_report(body: Any) -> dict[str, Any]:
    """Return ``body`` if it is a valid report; else raise naming the first bad field."""
    _SCHEMA_CHECK(body, "")
    location = body.get("location")
    if location and (location.get("lat") is None) != (location.get("lon") is None):
        raise _fail("location", "needs both lat and lon, or neither")
    if not body["narrative"].strip():
        raise _fail("narrative", "is empty; describe what happened")
    return body  # type: ignore[no-any-return]
