"""The network form (SPEC.md §18): parsing, answers, the default form and the signed item."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fieldsync_protocol import codec, crypto, form, report
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.form import Form, Problem, default_form, open_form, parse_form, sign_form
from fieldsync_protocol.items import ItemKind, check_item, parse_item
from tests.protocol.protocol_support import Net, minimal_body

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
EXAMPLE: dict[str, Any] = json.loads((VECTORS / "form.json").read_text(encoding="utf-8"))["example"]


def example(**changes: Any) -> dict[str, Any]:
    value = copy.deepcopy(EXAMPLE)
    value.update(changes)
    return value


def with_field(index: int, **changes: Any) -> dict[str, Any]:
    value = example()
    value["fields"][index].update(changes)
    return value


def without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


EN_FR = {"en": "Label", "fr": "Étiquette"}

ANSWERS = {
    "narrative": "Three vendors detained.",
    "categories": "arbitrary-detention",
    "occurred": "2025-03-01",
}


# --- the default form ------------------------------------------------------------------------


def test_default_form_matches_the_report_schema() -> None:
    default = default_form()
    assert default.version == 0
    assert default.languages == ("en", "fr", "es", "ar")
    assert "unclassified" in default.category_keys()
    assert parse_form(default.to_map()) == default
    assert parse_form(codec.decode(default.encode())) == default
    fields, problems = default.validate({**ANSWERS, "place": "Market", "title": "Arrests"})
    assert problems == {}
    body = report.validate_report(minimal_body(**fields))
    assert body["sensitivity"] == "restricted"
    assert body["location"] == {"source": "text", "place": "Market"}
    assert body["taxonomy_version"] == "0"


def test_every_label_exists_in_every_language() -> None:
    default = default_form()
    items: list[form.Choice | form.FormField] = [*default.categories, *default.fields]
    for item in items:
        assert set(item.labels) == {"en", "fr", "es", "ar"}
    sensitivity = default.field("sensitivity")
    assert sensitivity is not None
    assert sensitivity.option_keys() == report.SENSITIVITIES
    assert sensitivity.options[3].label("ar", default.languages) == "سري"


def test_labels_fall_back_to_the_primary_language_then_the_first() -> None:
    default = default_form()
    narrative = default.field("narrative")
    assert narrative is not None
    assert default.label(narrative, "fr-CA") == "Ce qui s'est passé"
    assert default.label(narrative, "ar") == "ماذا حدث"
    assert default.label(narrative, "de") == "What happened"
    assert default.help(narrative, "es").startswith("Con sus palabras")
    title = default.field("title")
    assert title is not None and default.help(title, "en") == ""
    assert default.field("nope") is None
    bare = form.Choice("k", {})
    assert default.label(bare, "en") == "k"
    assert bare.label("en", default.languages) == "k"


# --- answers ---------------------------------------------------------------------------------


def test_validate_reports_every_problem_at_once() -> None:
    vector = json.loads((VECTORS / "form.json").read_text(encoding="utf-8"))
    parsed = parse_form(EXAMPLE)
    for case in vector["answers"]:
        fields, problems = parsed.validate(case["answers"])
        assert problems == case["problems"]
        if not problems:
            assert fields == case["report"]
            report.validate_report(minimal_body(**fields))


def test_unknown_categories_are_refused_with_the_list() -> None:
    _, problems = default_form().validate({**ANSWERS, "categories": "arbitary-detention"})
    message = problems["categories"]
    assert "'arbitary-detention'" in message
    assert "arbitrary-detention, torture" in message
    assert isinstance(message, Problem)
    assert message.template == form.UNKNOWN_CATEGORY
    assert message.values["given"] == "'arbitary-detention'"


def test_categories_as_a_list_are_deduplicated() -> None:
    fields, problems = default_form().validate(
        {**ANSWERS, "categories": ["torture", " torture", "other"]}
    )
    assert problems == {}
    assert fields["categories"] == ["torture", "other"]


@pytest.mark.parametrize(
    ("categories", "template"),
    [
        (" , ", form.REQUIRED),
        ([], form.REQUIRED),
        ([1], form.NOT_TEXT),
        (7, form.NOT_TEXT),
    ],
)
def test_bad_categories(categories: Any, template: str) -> None:
    _, problems = default_form().validate({**ANSWERS, "categories": categories})
    assert problems["categories"].template == template


def test_too_many_categories() -> None:
    many = example(categories=[{"key": f"c{i}", "labels": EN_FR} for i in range(70)])
    parsed = parse_form(many)
    _, problems = parsed.validate({**ANSWERS, "categories": [f"c{i}" for i in range(65)]})
    assert problems["categories"].template == form.TOO_MANY


@pytest.mark.parametrize(
    ("occurred", "start", "precision"),
    [
        ("2025", "2025", "year"),
        ("2025-03", "2025-03", "month"),
        (" 2025-03-01 ", "2025-03-01", "day"),
        ("2025-03-01T09:30+01:00", "2025-03-01T09:30+01:00", "minute"),
        ("2025-03-01 09:30:15", "2025-03-01T09:30:15Z", "minute"),
    ],
)
def test_dates(occurred: str, start: str, precision: str) -> None:
    fields, problems = default_form().validate({**ANSWERS, "occurred": occurred})
    assert problems == {}
    assert fields["occurred"] == {"start": start, "precision": precision, "approximate": False}


@pytest.mark.parametrize(
    ("occurred", "template"),
    [
        ("2025-02-30", form.IMPOSSIBLE_DATE),
        ("2025-13", form.IMPOSSIBLE_DATE),
        ("2025-03-01T25:00Z", form.IMPOSSIBLE_DATE),
        ("yesterday", form.NOT_A_DATE),
        ("2025-03-01T09", form.NOT_A_DATE),
        ("", form.REQUIRED),
        (20250301, form.NOT_TEXT),
    ],
)
def test_impossible_or_malformed_dates(occurred: Any, template: str) -> None:
    _, problems = default_form().validate({**ANSWERS, "occurred": occurred})
    assert problems["occurred"].template == template


@pytest.mark.parametrize(
    ("approximate", "expected"),
    [(True, True), (False, False), ("YES", True), ("y", True), ("off", False), ("", False)],
)
def test_approximate(approximate: Any, expected: bool) -> None:
    fields, problems = default_form().validate({**ANSWERS, "approximate": approximate})
    assert problems == {}
    assert fields["occurred"]["approximate"] is expected


@pytest.mark.parametrize("approximate", ["perhaps", 1])
def test_approximate_must_be_yes_or_no(approximate: Any) -> None:
    _, problems = default_form().validate({**ANSWERS, "approximate": approximate})
    assert problems["occurred"].template == form.NOT_YES_NO


def test_zero_is_a_coordinate() -> None:
    fields, problems = default_form().validate({**ANSWERS, "lat": 0, "lon": "0", "accuracy": "0"})
    assert problems == {}
    assert fields["location"] == {"source": "gps", "lat": 0, "lon": 0, "accuracy_m": 0}
    fields, problems = default_form().validate(
        {**ANSWERS, "lat": "-0.5", "lon": 0.25, "location_source": "map", "place": "Road"}
    )
    assert problems == {}
    assert fields["location"] == {"source": "map", "place": "Road", "lat": -0.5, "lon": 0.25}


@pytest.mark.parametrize(
    ("answers", "template"),
    [
        ({"lat": "91", "lon": "0"}, form.OUT_OF_RANGE),
        ({"lat": "north", "lon": "0"}, form.NOT_A_NUMBER),
        ({"lat": "nan", "lon": "0"}, form.NOT_A_NUMBER),
        ({"lat": "1e400", "lon": "0"}, form.NOT_A_NUMBER),
        ({"lat": "1" * 41, "lon": "0"}, form.NOT_A_NUMBER),
        ({"lat": True, "lon": "0"}, form.NOT_A_NUMBER),
        ({"lat": [1], "lon": "0"}, form.NOT_A_NUMBER),
        ({"lat": 2**60, "lon": "0"}, form.NOT_A_NUMBER),
        ({"lat": " ", "lon": "3"}, form.BOTH_COORDINATES),
    ],
)
def test_bad_coordinates(answers: dict[str, Any], template: str) -> None:
    _, problems = default_form().validate({**ANSWERS, **answers})
    assert problems["location"].template == template


def test_required_location_and_text_fields() -> None:
    value = example()
    value["fields"][3]["required"] = True
    value["fields"].append(
        {"key": "title", "type": "text", "required": True, "labels": EN_FR, "max_length": 5}
    )
    parsed = parse_form(value)
    _, problems = parsed.validate({**ANSWERS, "title": "   "})
    assert problems["location"].template == form.REQUIRED
    assert problems["title"].template == form.REQUIRED
    _, problems = parsed.validate({**ANSWERS, "title": "too long", "lat": 1, "lon": 1})
    assert problems == {"title": Problem(form.TOO_LONG, limit="5")}
    _, problems = parsed.validate({**ANSWERS, "title": 5, "lat": 1, "lon": 1})
    assert problems["title"].template == form.NOT_TEXT


def test_extra_fields() -> None:
    parsed = parse_form(EXAMPLE)
    fields, problems = parsed.validate(
        {**ANSWERS, "detained": 2.5, "unit": "Brigade 4", "witnessed": "yes", "released-on": ""}
    )
    assert problems == {}
    assert fields["extra"] == {"detained": 2.5, "unit": "Brigade 4", "witnessed": "yes"}
    report.validate_report(minimal_body(**fields))
    _, problems = parsed.validate({**ANSWERS, "released-on": "2025-02-29", "witnessed": 1})
    assert problems["released-on"].template == form.IMPOSSIBLE_DATE
    assert problems["witnessed"].template == form.NOT_AN_OPTION


def test_narrative_rules() -> None:
    default = default_form()
    _, problems = default.validate({**ANSWERS, "narrative": "x" * (report.MAX_NARRATIVE + 1)})
    assert problems["narrative"].template == form.TOO_LONG
    _, problems = default.validate(without(ANSWERS, "narrative"))
    assert problems["narrative"].template == form.EMPTY_NARRATIVE
    fields, _ = default.validate({**ANSWERS, "narrative": "  line one\nline two\n"})
    assert fields["narrative"] == "  line one\nline two\n"


def test_a_form_without_extra_fields_adds_no_extra_map() -> None:
    fields, problems = default_form().validate(ANSWERS)
    assert problems == {}
    assert "extra" not in fields
    assert "location" not in fields


@pytest.mark.parametrize(
    ("language", "ok"), [("pt-BR", True), ("", True), ("x", False), (3, False)]
)
def test_language_answer(language: Any, ok: bool) -> None:
    fields, problems = default_form().validate({**ANSWERS, "language": language})
    assert ("language" not in problems) is ok
    assert fields.get("language") == (language or None if ok else None)


def test_messages_are_listed_for_translation() -> None:
    assert form.UNKNOWN_CATEGORY in form.MESSAGES
    assert len(set(form.MESSAGES)) == len(form.MESSAGES)


# --- parsing untrusted forms -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "form must be a map"),
        (without(EXAMPLE, "schema"), "lacks field"),
        (example(extra=1), "unknown field"),
        (example(schema="fieldsync.form/2"), "schema: must be"),
        (example(version=-1), "version: must be"),
        (example(version=True), "version: must be"),
        (example(version=2**32), "version: must be"),
        (example(languages=[]), "languages: must list"),
        (example(languages="en"), "languages: must list"),
        (example(languages=["en", "f"]), r"languages\[1\]: must be a tag"),
        (example(languages=["en", 3]), r"languages\[1\]: must be a tag"),
        (example(languages=["en", "en"]), "lists a language twice"),
        (example(categories=[]), "categories: must be a list of 1..256"),
        (example(categories={"a": 1}), "categories: must be a list"),
        (example(categories=[{"key": "a"}]), r"categories\[0\] lacks field"),
        (example(categories=[{"key": "A b", "labels": EN_FR}]), r"categories\[0\].key: must be"),
        (
            example(categories=[{"key": "a", "labels": EN_FR}, {"key": "a", "labels": EN_FR}]),
            "repeats the key 'a'",
        ),
        (example(categories=[{"key": "a", "labels": []}]), "must be a map of language to text"),
        (
            example(categories=[{"key": "a", "labels": {"en": "A"}}]),
            "missing fr, not in the form none",
        ),
        (
            example(categories=[{"key": "a", "labels": {**EN_FR, "de": "A"}}]),
            "missing none, not in the form de",
        ),
        (
            example(categories=[{"key": "a", "labels": {"en": "A", "fr": " "}}]),
            r"labels.fr: must be text of 1..200",
        ),
        (
            example(categories=[{"key": "a", "labels": {"en": "A", "fr": "x" * 201}}]),
            r"labels.fr: must be text",
        ),
        (
            example(categories=[{"key": "a", "labels": {"en": "A", "fr": 1}}]),
            r"labels.fr: must be text",
        ),
        (example(fields=[]), "fields: must be a list of 1..40"),
        (example(fields="narrative"), "fields: must be a list"),
        (example(fields=EXAMPLE["fields"][:2]), "lacks occurred"),
        (example(fields=[*EXAMPLE["fields"], EXAMPLE["fields"][0]]), "repeats the key 'narrative'"),
        (with_field(0, type="text"), "the field narrative has type narrative, not 'text'"),
        (with_field(4, type="list"), "must be one of text, number, date, choice"),
        (with_field(4, options=[]), "a number field has no options"),
        (with_field(3, help=EN_FR, max_length=3), "a location field has no max_length"),
        (with_field(0, required=False), "the field narrative is always required"),
        (with_field(4, required="yes"), "required: must be true or false"),
        (with_field(7, options=None), r"options: must be a list"),
        (with_field(7, default="maybe"), "default: must be one of the options"),
        (with_field(4, min=5, max=1), "min is more than max"),
        (with_field(4, min=float("inf")), "min: must be a finite number"),
        (with_field(4, max=True), "max: must be a finite number"),
        (with_field(4, max="9"), "max: must be a finite number"),
        (with_field(4, max=2**60), "max: must be a finite number"),
        (with_field(6, max_length=0), r"max_length: must be an integer 1..2000"),
        (with_field(6, max_length=True), r"max_length: must be an integer"),
        (with_field(6, key="title", max_length=201), r"max_length: must be an integer 1..200"),
        (with_field(6, help={"en": "x"}), r"help: must give exactly"),
    ],
)
def test_malformed_forms_are_refused(value: Any, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        parse_form(value)


def test_a_choice_field_needs_options() -> None:
    value = example()
    del value["fields"][7]["options"]
    del value["fields"][7]["default"]
    with pytest.raises(RemoteProtocolError, match="a choice field needs options"):
        parse_form(value)


def test_sensitivity_options_are_fixed() -> None:
    value = example()
    value["fields"].append(
        {
            "key": "sensitivity",
            "type": "choice",
            "required": True,
            "labels": EN_FR,
            "options": [{"key": "public", "labels": EN_FR}],
        }
    )
    with pytest.raises(RemoteProtocolError, match="sensitivity options are public"):
        parse_form(value)


def test_limits() -> None:
    extras = [
        {"key": f"x{i}", "type": "text", "required": False, "labels": EN_FR} for i in range(33)
    ]
    with pytest.raises(RemoteProtocolError, match="has 33 extra fields; at most 32"):
        parse_form(example(fields=[*EXAMPLE["fields"][:3], *extras]))
    options = [{"key": f"o{i}", "labels": EN_FR} for i in range(65)]
    with pytest.raises(RemoteProtocolError, match=r"options: must be a list of 1..64"):
        parse_form(with_field(7, options=options, default=None))
    with pytest.raises(RemoteProtocolError, match=r"languages: must list 1..16"):
        parse_form(example(languages=[f"l{chr(97 + i)}" for i in range(17)]))


def test_to_map_round_trips_every_attribute() -> None:
    parsed = parse_form(EXAMPLE)
    again = parse_form(parsed.to_map())
    assert again == parsed
    unit = again.field("unit")
    assert unit is not None and unit.max_length == 100 and not unit.standard
    detained = again.field("detained")
    assert detained is not None and (detained.min, detained.max) == (0, 10000)


# --- the signed item -------------------------------------------------------------------------


def test_signed_form_round_trip_and_check_item(net: Net) -> None:
    parsed = parse_form(EXAMPLE)
    item = sign_form(parsed, net.manifest, net.root_seed)
    assert open_form(item, net.manifest) == parsed
    assert parse_item(item).kind is ItemKind.FORM
    assert check_item(item, net.manifest).form == parsed


def test_a_form_not_signed_by_the_root_is_refused(net: Net) -> None:
    parsed = default_form()
    with pytest.raises(LocalProtocolError, match="root seed does not match"):
        sign_form(parsed, net.manifest, net.receipt_seed)
    body = codec.decode(sign_form(parsed, net.manifest, net.root_seed))["b"]
    for seed in (net.receipt_seed, net.certificate_seed, *net.author_seeds[:1]):
        forged = codec.encode(
            {"b": body, "s": crypto.sign(crypto.Domain.FORM, seed, body), "t": "f", "v": 1}
        )
        with pytest.raises(RemoteProtocolError, match="signature is not valid"):
            check_item(forged, net.manifest)


def test_a_form_of_another_network_is_refused(net: Net, other_net: Net) -> None:
    item = sign_form(default_form(), other_net.manifest, other_net.root_seed)
    with pytest.raises(RemoteProtocolError, match="signature is not valid"):
        open_form(item, net.manifest)
    same_root = type(net.manifest)(**{**net.manifest.__dict__, "network_id": bytes(16)})
    item = sign_form(default_form(), same_root, net.root_seed)
    with pytest.raises(RemoteProtocolError, match="belongs to another network"):
        open_form(item, net.manifest)


def test_every_tampered_byte_is_refused(net: Net) -> None:
    item = sign_form(parse_form(EXAMPLE), net.manifest, net.root_seed)
    for index in range(0, len(item), 7):
        tampered = bytearray(item)
        tampered[index] ^= 0x01
        with pytest.raises(RemoteProtocolError):
            open_form(bytes(tampered), net.manifest)


def signed(net: Net, body: Any, **outer: Any) -> bytes:
    body_bytes = codec.encode(body)
    fields = {"b": body_bytes, "s": crypto.sign(crypto.Domain.FORM, net.root_seed, body_bytes)}
    return codec.encode({**fields, "t": "f", "v": 1, **outer})


def test_malformed_items(net: Net) -> None:
    form_map = parse_form(EXAMPLE).to_map()
    good = {"form": form_map, "net": net.network_id, "v": 1}
    cases = {
        "wrong type or version": signed(net, good, t="m"),
        "wrong type or version ": signed(net, good, v=True),
        "has version True": signed(net, {**good, "v": True}),
        "lacks field": signed(net, without(good, "net")),
        "form lacks field": signed(net, {**good, "form": without(form_map, "fields")}),
        "net must be 16 bytes": signed(net, {**good, "net": b"short"}),
        "not valid msgpack": b"\xc1",
        "must be a map": codec.encode([1]),
    }
    for message, data in cases.items():
        with pytest.raises(RemoteProtocolError, match=message.strip()):
            open_form(data, net.manifest)


def test_oversized_forms(net: Net) -> None:
    huge = example(
        categories=[
            {"key": f"c{i}", "labels": {"en": "x" * 200, "fr": "y" * 200}} for i in range(90)
        ]
    )
    parsed = parse_form(huge)
    with pytest.raises(LocalProtocolError, match="at most 32768"):
        sign_form(parsed, net.manifest, net.root_seed)
    body = {"form": huge, "net": net.network_id, "v": 1}
    with pytest.raises(RemoteProtocolError, match="more than the 32768 allowed"):
        open_form(signed(net, body), net.manifest)


def test_an_unknown_extra_key_in_a_report_is_refused() -> None:
    for bad, message in (
        ({"Bad Key": "x"}, "must be a form key"),
        ({1: "x"}, "must be a form key"),
        ({"a": True}, "must be a number"),
        ({"a": "x" * 2001}, "longer than 2000"),
        ({f"k{i}": 1 for i in range(33)}, "more than 32 entries"),
        ([], "must be a map"),
    ):
        with pytest.raises(RemoteProtocolError, match=message):
            report.validate_report(minimal_body(extra=bad))


def test_form_type_is_frozen() -> None:
    parsed: Form = default_form()
    with pytest.raises(AttributeError):
        parsed.version = 3  # type: ignore[misc]
