"""One report as an analyst must see it: with the other report of a fork, and every version
of a corrected report (``supersedes``). Read-only; no passphrase (``fieldsync hq report show``).

A fork is two different reports one author signed with the same sequence number: the first
is in ``reports``, the others in ``forked_reports`` (both are receipted, so the field has
deleted them: HQ is where both remain). A correction is a report whose ``supersedes`` names
an earlier report id **of the same author**; a report that claims to correct another
author's report is not taken as a version of it, and is shown with a warning.
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from fieldsync.errors import NotFound

#: Bounds what one ``report show`` reads, whatever the database holds.
MAX_VERSIONS = 1000
MAX_MATCHES = 20


def _rows(
    db: sqlite_utils.Database, table: str, where: str, args: list[Any]
) -> list[dict[str, Any]]:
    return [
        _public(row)
        for row in db.query(f"SELECT * FROM [{table}] WHERE {where} LIMIT ?", [*args, MAX_VERSIONS])  # noqa: S608 - ours
    ]


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A report row without its raw body; attachments as name, type, size, SHA-256."""
    out = {k: v for k, v in row.items() if k != "body_json"}
    body = json.loads(row.get("body_json") or "{}")
    out["categories"] = json.loads(row["categories"]) if row.get("categories") else []
    out["attachments"] = body.get("attachments", [])
    return out


def find(db: sqlite_utils.Database, ref: str) -> dict[str, Any]:
    """The report whose id (or envelope id) is ``ref`` or starts with it; a forked report
    leads to the report it conflicts with."""
    if not ref:
        raise NotFound("give a report id (`fieldsync hq export --format jsonl` lists them)")
    like = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    match = "(id LIKE ? ESCAPE '\\' OR envelope_id = ?)"
    found = _rows(db, "reports", match, [like, ref])[:MAX_MATCHES]
    if not found:
        forked = _rows(db, "forked_reports", match, [like, ref])
        if forked:
            found = _rows(
                db,
                "reports",
                "author_key = ? AND sequence = ?",
                [forked[0]["author_key"], forked[0]["sequence"]],
            )
    ids = {row["envelope_id"] for row in found}
    if not ids:
        raise NotFound(f"no report matches {ref!r}")
    if len(ids) > 1:
        exact = [row for row in found if row["id"] == ref or row["envelope_id"] == ref]
        if len(exact) != 1:
            raise NotFound(
                f"{ref!r} matches {len(ids)} reports; give more of the id or the envelope id"
            )
        return exact[0]
    return found[0]


def forks(db: sqlite_utils.Database, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The other reports signed with the same author and sequence number."""
    author, sequence = report["author_key"], report["sequence"]
    found = _rows(db, "forked_reports", "author_key = ? AND sequence = ?", [author, sequence])
    decoded = {row["envelope_id"] for row in found}
    for (envelope_id,) in db.execute(
        "SELECT envelope_id FROM envelopes WHERE status = 'fork' AND author_key = ?"
        " AND sequence = ? LIMIT ?",
        [author, sequence, MAX_VERSIONS],
    ):
        if envelope_id not in decoded:  # recorded before forked reports were kept readable
            found.append(
                {
                    "envelope_id": envelope_id,
                    "author_key": author,
                    "sequence": sequence,
                    "note": "fork recorded by an older fieldsync: its report was not decoded;"
                    " the envelope is kept in `envelopes`",
                }
            )
    return found


def versions(
    db: sqlite_utils.Database, report: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every version of ``report`` by its author, oldest first, and warnings (corrections
    that name another author's report)."""
    author = report["author_key"]
    seen = {report["envelope_id"]: report}
    warnings: list[str] = []
    frontier = [report]
    while frontier and len(seen) < MAX_VERSIONS:
        current = frontier.pop()
        related = _rows(db, "reports", "supersedes = ?", [current["id"]])
        if current.get("supersedes"):
            related += _rows(db, "reports", "id = ?", [current["supersedes"]])
        for row in related:
            if row["envelope_id"] in seen:
                continue
            if row["author_key"] != author:
                warnings.append(
                    f"report {row['id']} ({row['author_name'] or row['author_key']}) and report"
                    f" {current['id']} are linked by `supersedes` but have different authors:"
                    " not taken as versions of one report"
                )
                continue
            seen[row["envelope_id"]] = row
            frontier.append(row)
    ordered = sorted(seen.values(), key=lambda r: (r["sequence"] or 0, r["envelope_id"]))
    return ordered, warnings


def show(db: sqlite_utils.Database, ref: str, all_versions: bool = False) -> dict[str, Any]:
    """``{"report", "forks", "versions", "warnings"}``: ``versions`` lists every version
    (each with its forks) with ``all_versions``, else only the report itself; the ids of the
    others are in ``superseded_by`` / ``supersedes`` either way."""
    report = find(db, ref)
    chain, warnings = versions(db, report)
    newer = [row["id"] for row in chain if (row["sequence"] or 0) > (report["sequence"] or 0)]
    older = [row["id"] for row in chain if (row["sequence"] or 0) < (report["sequence"] or 0)]
    shown = chain if all_versions else [report]
    return {
        "report": report,
        "forks": forks(db, report),
        "newer_versions": newer,
        "older_versions": older,
        "versions": [{"report": row, "forks": forks(db, row)} for row in shown],
        "warnings": warnings,
    }
