"""The report body schema (SPEC.md §7): valid bodies pass, each bad field is named."""

from __future__ import annotations

import copy
import math
import uuid
from typing import Any

import pytest
from hypothesis import given

from fieldsync_protocol import codec
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.report import MAX_LIST, MAX_NARRATIVE, report_id, validate_report
from tests.protocol.protocol_support import DETERMINISTIC, full_body, minimal_body, report_bodies


@DETERMINISTIC
@given(report_bodies)
def test_generated_bodies_are_valid_and_survive_the_codec(body: dict[str, Any]) -> None:
    assert validate_report(body) is body
    decoded = codec.decode(codec.encode(body))
    assert validate_report(decoded) == body


def test_examples() -> None:
    validate_report(minimal_body())
    validate_report(full_body())
    validate_report(minimal_body(location={"source": "text", "place": "near the river"}))
    validate_report(minimal_body(location=None, supersedes=None, title=None))
    validate_report(
        minimal_body(
            created_at="2025",
            occurred={"start": "2025-03", "precision": "month", "approximate": False},
        )
    )
    validate_report(minimal_body(narrative="x" * MAX_NARRATIVE, categories=["a"] * MAX_LIST))


def changed(path: str, value: Any) -> dict[str, Any]:
    """``full_body()`` with the field at dotted ``path`` set to ``value`` (or removed)."""
    body = full_body()
    *parents, last = path.split(".")
    target: Any = body
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is REMOVE:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return body


REMOVE = object()

BAD_FIELDS: list[tuple[str, Any, str]] = [
    ("schema", "fieldsync.report/2", "schema: must be one of fieldsync.report/1"),
    ("schema", REMOVE, "^report lacks schema"),
    ("id", "0191F3A2-7C4E-7B1A-9D2E-5F6A7B8C9D0E", "id: must be a lowercase random UUID"),
    ("id", "0191f3a2-7c4e-7b1a-9d2e-5f6a7b8c9d0e\n", "id: must be a lowercase random UUID"),
    ("id", 5, "id: must be a lowercase random UUID"),
    ("id", "0191f3a2-7c4e-7b1a-9d2e-5f6a7b8c9d0e" * 2, "id: must be a lowercase random UUID"),
    ("id", None, "id: must be a lowercase random UUID"),
    # Time-based ids (v7 dates the report to the millisecond, v1 and v6 too) are refused.
    ("id", "0191f3a2-7c4e-7b1a-9d2e-5f6a7b8c9d0e", r"id: must be a lowercase random UUID \(vers"),
    ("id", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "id: must be a lowercase random UUID"),
    ("id", "1ef21d2f-1207-6660-8c4f-419efbd44d48", "id: must be a lowercase random UUID"),
    ("id", "00000000-0000-0000-0000-000000000000", "id: must be a lowercase random UUID"),
    ("id", "0191f3a2-7c4e-4b1a-cd2e-5f6a7b8c9d0e", "id: must be a lowercase random"),  # variant
    ("created_at", "2025-03-02 14:05", "created_at: must be a date or time"),
    ("created_at", "2025-03-02T14:05", "created_at: must be a date or time"),
    ("created_at", "2025T14:05Z", "created_at: must be a date or time"),
    ("created_at", "٢٠٢٥-٠٣-٠٢", "created_at: must be a date or time"),
    ("created_at", "2025-03-02\n", "created_at: must be a date or time"),
    ("created_at", "2025-03-02" + "0" * 60, "created_at: must be a date or time"),
    ("created_at", "2025-02-30", "created_at: is not a real date"),
    ("created_at", "2025-00", "created_at: is not a real date"),
    ("created_at", "0000", "created_at: is not a real date"),
    ("created_at", "2025-03-02T24:00Z", "created_at: is not a real date"),
    ("created_at", "2025-03-02T12:00:60Z", "created_at: is not a real date"),
    ("created_at", "2025-03-02T12:00+24:00", "created_at: is not a real date"),
    ("clock", "ntp", "clock: must be a map"),
    ("clock.source", "sundial", "clock.source: must be one of"),
    ("clock.synced", 1, "clock.synced: must be true or false"),
    ("clock.synced", REMOVE, "clock: lacks synced"),
    ("clock.extra", 1, "clock: has unknown field 'extra'"),
    ("origin.channel", "sms", "origin.channel: must be one of"),
    ("origin.monitor", "M" * 33, "origin.monitor: is longer than 32"),
    ("origin.node", "FSN2QKA", "origin: has unknown field 'node'"),
    ("language", "french", "language: must be a BCP 47"),
    ("language", "pt_BR", "language: must be a BCP 47"),
    ("language", "pt-" + "B" * 70, "language: must be a BCP 47"),
    ("occurred.start", None, "occurred.start: must be a date"),
    ("occurred.end", "yesterday", "occurred.end: must be a date"),
    ("occurred.precision", "second", "occurred.precision: must be one of"),
    ("occurred.approximate", "yes", "occurred.approximate: must be true or false"),
    ("categories", [], "categories: must have 1..64 entries"),
    ("categories", ["a"] * 65, "categories: must have 1..64 entries"),
    ("categories", "torture", "categories: must be a list"),
    ("categories.1", "Excessive Force", r"categories\[1\]: must be a taxonomy key"),
    ("categories.0", "-leading-dash", r"categories\[0\]: must be a taxonomy key"),
    ("narrative", "   \n\t", "narrative: is empty"),
    ("narrative", "x" * (MAX_NARRATIVE + 1), "narrative: is longer than 100000"),
    ("narrative", b"bytes", "narrative: must be text"),
    ("sensitivity", "secret", "sensitivity: must be one of"),
    ("consent.share_with_hq", None, "consent.share_with_hq: must be true or false"),
    ("consent.share_with_hq", REMOVE, "consent: lacks share_with_hq"),
    ("consent.publish", "no", "consent.publish: must be true or false"),
    ("supersedes", "not-a-uuid", "supersedes: must be a lowercase random UUID"),
    ("supersedes", "0191f3a2-7c4e-7b1a-9d2e-5f6a7b8c9d0e", "supersedes: must be a lowercase"),
    ("taxonomy_version", "v" * 33, "taxonomy_version: is longer than 32"),
    ("title", "t" * 201, "title: is longer than 200"),
    ("location", [12.3, -1.5], "location: must be a map"),
    ("location.source", "satellite", "location.source: must be one of"),
    ("location.lat", 90.5, "location.lat: must be between -90 and 90"),
    ("location.lat", math.nan, "location.lat: must be between"),
    ("location.lat", math.inf, "location.lat: must be between"),
    ("location.lat", 10**400, "location.lat: must be between"),
    ("location.lat", True, "location.lat: must be a number"),
    ("location.lat", "12.3", "location.lat: must be a number"),
    ("location.lon", -180.01, "location.lon: must be between -180 and 180"),
    ("location.lon", REMOVE, "location: needs both lat and lon"),
    ("location.lat", None, "location: needs both lat and lon"),
    ("location.accuracy_m", -1, "location.accuracy_m: must be between"),
    ("location.alt_m", 200_000, "location.alt_m: must be between"),
    ("location.place", "p" * 501, "location.place: is longer than 500"),
    ("location.admin", ["BF", 3], r"location.admin\[1\]: must be text"),
    ("location.admin", ["a" * 101], r"location.admin\[0\]: is longer than 100"),
    ("people", {"role": "victim"}, "people: must be a list"),
    ("people.0.role", "bystander", r"people\[0\].role: must be one of"),
    ("people.0.role", REMOVE, r"people\[0\]: lacks role"),
    ("people.1.count", 0, r"people\[1\].count: must be between 1"),
    ("people.2.name", 7, r"people\[2\].name: must be text"),
    ("people.2.email", "a@b", r"people\[2\]: has unknown field 'email'"),
    ("attachments", [], "attachments: must list 1..16 attachments"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_FIELDS)
def test_bad_field_is_named(path: str, value: Any, message: str) -> None:
    body = changed(path, value)
    pattern = message if message.startswith("^") else f"^report field {message}"
    with pytest.raises(RemoteProtocolError, match=pattern):
        validate_report(body)


@pytest.mark.parametrize("body", [None, [], "report", 5])
def test_body_must_be_a_map(body: Any) -> None:
    with pytest.raises(RemoteProtocolError, match=r"^report must be a map"):
        validate_report(body)


def test_validation_does_not_change_the_body() -> None:
    body = full_body()
    before = copy.deepcopy(body)
    validate_report(body)
    assert body == before


def test_report_id_is_a_random_uuid4_that_validates() -> None:
    for random in (bytes(16), b"\xff" * 16, bytes(range(16))):
        made = report_id(random)
        assert uuid.UUID(made).version == 4 and uuid.UUID(made).variant == uuid.RFC_4122
        assert made == made.lower() and made.replace("-", "")[:12] == random.hex()[:12]
        validate_report(minimal_body("x", id=made, supersedes=report_id(random[::-1])))


@pytest.mark.parametrize("size", [0, 15, 17])
def test_report_id_needs_16_random_bytes(size: int) -> None:
    with pytest.raises(ValueError, match=f"needs 16 random bytes, got {size}"):
        report_id(bytes(size))
