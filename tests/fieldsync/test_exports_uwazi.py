"""The Uwazi template and thesauri shipped in deploy/uwazi: generated from the exporter's
constants, matching its columns, and shaped as Uwazi 1.190's schemas ask."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from fieldsync.export_uwazi import (
    CATEGORY_LABELS,
    COLUMNS,
    PROPERTIES,
    THESAURI,
    category_label,
    deploy_files,
    property_name,
    safe_name,
    template_json,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "uwazi"
#: ``propertySchema`` in Uwazi's app/shared/types/commonSchemas.ts (additionalProperties:
#: false); ``required: ['label', 'type', 'name']``.
UWAZI_PROPERTY_KEYS = {
    "_id", "label", "name", "isCommonProperty", "type", "prioritySorting", "generatedId",
    "content", "relationType", "inherit", "filter", "noLabel", "fullWidth", "defaultfilter",
    "required", "sortable", "showInCard", "style", "nestedProperties", "query",
    "denormalizedProperty", "targetTemplates",
}  # fmt: skip
UWAZI_TYPES = {
    "date", "daterange", "geolocation", "image", "link", "markdown", "media", "multidate",
    "multidaterange", "multiselect", "nested", "numeric", "preview", "relationship", "select",
    "text", "generatedid", "newRelationship",
}  # fmt: skip


def test_deploy_files_are_the_generated_ones() -> None:
    shipped = {
        str(p.relative_to(DEPLOY)): p.read_bytes().decode("utf-8")
        for p in DEPLOY.rglob("*")
        if p.is_file() and p.name != "README.md"
    }
    assert shipped == deploy_files(), (
        "deploy/uwazi is out of date: regenerate it from fieldsync.export_uwazi.deploy_files()"
    )


def test_every_csv_column_is_a_template_property_with_a_valid_shape() -> None:
    template = template_json()
    names = {p["name"] for p in template["properties"]} | {"title"}
    assert {safe_name(column) for column in COLUMNS} == names
    for prop in template["properties"] + template["commonProperties"]:
        assert {"label", "type", "name"} <= set(prop) <= UWAZI_PROPERTY_KEYS
        assert prop["type"] in UWAZI_TYPES
        if prop["type"] in ("select", "multiselect"):
            assert prop["content"] in THESAURI
        if not prop.get("isCommonProperty"):
            assert prop["name"] == property_name(prop["label"], prop["type"])
    assert len({p["label"].lower() for p in template["properties"]}) == len(PROPERTIES)


def test_thesauri_hold_every_label_the_exporter_writes() -> None:
    for name, labels in THESAURI.items():
        rows = list(csv.reader(io.StringIO(deploy_files()[f"thesauri/{safe_name(name)}.csv"])))
        assert rows[0] == ["English"] and [r[0] for r in rows[1:]] == labels
        assert not any(label.startswith("-") or "|" in label or "::" in label for label in labels)
        assert len({label.strip().lower() for label in labels}) == len(labels)
        as_json = json.loads(deploy_files()[f"thesauri/{safe_name(name)}.json"])
        assert as_json == {"name": name, "values": [{"label": label} for label in labels]}
    assert [category_label(k) for k in CATEGORY_LABELS] == THESAURI["Violation categories"]
    assert category_label("custom-local-key") == "Custom local key"


def test_the_guide_names_the_uwazi_version_and_every_column() -> None:
    guide = (DEPLOY / "README.md").read_text("utf-8")
    assert "1.190.0-rc4" in guide and "849f7d9" in guide
    for column in COLUMNS[1:]:
        assert f"`{column}`" in guide, column
