"""Alert bookkeeping and report versions at the library level: gaps that shrink or split
keep the analyst's acknowledgement and are not new; acknowledging is refused whole for an
unknown id; a correction that names another author's report is not a version of it; an
ambiguous or unknown report reference is refused."""

from __future__ import annotations

import pytest

from fieldsync.errors import NotFound
from fieldsync.node import Node
from tests.fieldsync.offline_support import (
    KDF,
    PASSPHRASE,
    Net,
    author_seed,
    enroll,
    fields,
    hq_manifest,
    ingest,
    open_hq,
    seal,
    write_bundle,
)


def test_a_gap_that_shrinks_or_splits_keeps_its_acknowledgement_and_is_not_new(
    net: Net,
) -> None:
    manifest, seed = hq_manifest(net), author_seed(net)
    chain = {q: seal(manifest, seed, q, f"report {q}") for q in range(1, 8)}
    write_bundle(net, net.usb / "ends.bundle", [chain[1].item, chain[7].item])
    first = ingest(net, net.usb / "ends.bundle")
    ((gap,),) = [[a for a in first.alerts if a["kind"] == "gap"]]
    assert (gap["first_missing"], gap["last_missing"], first.attention) == (2, 6, True)
    with open_hq(net) as headquarters:
        (acked,) = headquarters.acknowledge([gap["id"]])
        assert acked["state"] == "acknowledged"
        with pytest.raises(NotFound, match="no alert 999"):
            headquarters.acknowledge([gap["id"], 999])
    # 4 arrives: 2..6 becomes 2..3 and 5..6, both already acknowledged, nothing new.
    write_bundle(net, net.usb / "four.bundle", [chain[4].item])
    split = ingest(net, net.usb / "four.bundle")
    assert (split.attention, split.alerts_total) == (False, 0)
    with open_hq(net) as headquarters:
        gaps = [a for a in headquarters.alerts(everything=True) if a["kind"] == "gap"]
        assert headquarters.alerts() == []  # nothing open
    states = {(a["first_missing"], a["last_missing"]): a["state"] for a in gaps}
    assert states == {(2, 6): "resolved", (2, 3): "acknowledged", (5, 6): "acknowledged"}
    assert all(a["first_seen"] == gap["first_seen"] for a in gaps if a["state"] != "resolved")
    # Everything arrives: every gap alert is resolved, and stays on record.
    write_bundle(net, net.usb / "rest.bundle", [chain[q].item for q in (2, 3, 5, 6)])
    ingest(net, net.usb / "rest.bundle")
    with open_hq(net) as headquarters:
        final = [a["state"] for a in headquarters.alerts(everything=True) if a["kind"] == "gap"]
        # Acknowledging a resolved alert leaves it resolved.
        (still,) = headquarters.acknowledge([gaps[0]["id"]])
    assert final == ["resolved"] * 3 and still["state"] == "resolved"


def test_a_correction_by_another_author_is_not_a_version(net: Net) -> None:
    c = Node(net.root / "node-c")
    try:
        c.join(enroll(net, c.init("monitor-99", PASSPHRASE, KDF)))
        manifest, seed = hq_manifest(net), author_seed(net)
        original = seal(
            manifest, seed, 1, "what happened", id="11111111-1111-4111-8111-111111111111"
        )
        c.add_report(
            fields("it did not happen", supersedes="11111111-1111-4111-8111-111111111111"),
            PASSPHRASE,
        )
        c.export_bundle(net.usb / "c.bundle")
    finally:
        c.close()
    write_bundle(net, net.usb / "a.bundle", [original.item])
    ingest(net, net.usb / "a.bundle", net.usb / "c.bundle")
    with open_hq(net) as headquarters:
        shown = headquarters.report("11111111", all_versions=True)
        with pytest.raises(NotFound, match="no report matches"):
            headquarters.report("99999999")
        with pytest.raises(NotFound, match="give a report id"):
            headquarters.report("")
        other = [r["id"] for r in headquarters.database().query("SELECT id FROM reports")]
    assert [v["report"]["narrative"] for v in shown["versions"]] == ["what happened"]
    assert shown["newer_versions"] == [] and len(shown["warnings"]) == 1
    assert "monitor-99" in shown["warnings"][0] and "different authors" in shown["warnings"][0]
    # Seen from the other side too: the claimed correction has no older version.
    (claimed,) = [i for i in other if not i.startswith("11111111")]
    with open_hq(net) as headquarters:
        from_c = headquarters.report(claimed, all_versions=True)
    assert from_c["older_versions"] == [] and len(from_c["warnings"]) == 1


def test_an_ambiguous_prefix_is_refused(net: Net) -> None:
    manifest, seed = hq_manifest(net), author_seed(net)
    items = [
        seal(manifest, seed, q, f"report {q}", id=f"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa{q}").item
        for q in (1, 2)
    ]
    write_bundle(net, net.usb / "two.bundle", items)
    ingest(net, net.usb / "two.bundle")
    with open_hq(net) as headquarters:
        with pytest.raises(NotFound, match="matches 2 reports"):
            headquarters.report("aaaaaaaa")
        exact = headquarters.report("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa2")
    assert exact["report"]["narrative"] == "report 2"
