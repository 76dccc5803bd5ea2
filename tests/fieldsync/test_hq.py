"""Headquarters: network creation, enrolment, ingest (exactly once, forks, gaps, rejections)
and receipts that cover every envelope HQ has recorded."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path
from typing import Any

import pytest

from fieldsync.errors import FieldsyncError, InputRefused, NotFound, WrongPassphrase
from fieldsync.hq import DATABASE, HQ, HQ_SECRET, MANIFEST, create_network
from fieldsync.node import Node
from fieldsync_protocol import codec, crypto, envelope
from fieldsync_protocol.crypto import delivery_tag
from fieldsync_protocol.envelope import GENESIS
from fieldsync_protocol.items import parse_item
from fieldsync_protocol.keytext import KeyKind, key_to_text
from fieldsync_protocol.receipt import ReceiptStatus, open_receipt
from tests.fieldsync.offline_support import (
    KDF,
    PASSPHRASE,
    Net,
    add_reports,
    author_seed,
    body,
    enroll,
    export,
    hq_manifest,
    ingest,
    network_key,
    open_hq,
    raw_bundle,
    receipts,
    seal,
    seal_raw,
    write_bundle,
)


def _tables(net: Net) -> dict[str, list[Any]]:
    with open_hq(net) as headquarters:
        db = headquarters.database()
        return {
            name: db.execute(f"SELECT * FROM [{name}] ORDER BY rowid").fetchall()  # noqa: S608
            for name in db.table_names()
        }


def _author_text(net: Net) -> str:
    return key_to_text(KeyKind.AUTHOR, crypto.signing_public_key(author_seed(net)))


# --- network and enrolment ----------------------------------------------------------------


def test_network_directory_is_private(net: Net) -> None:
    assert stat.S_IMODE(net.hq.stat().st_mode) == 0o700
    assert stat.S_IMODE((net.hq / HQ_SECRET).stat().st_mode) == 0o600
    assert (net.hq / MANIFEST).exists() and (net.hq / DATABASE).exists()
    manifest = hq_manifest(net)
    assert manifest.name == "test-net" and manifest.epoch == 1
    keys = HQ(net.hq, passphrase=PASSPHRASE).unlock(PASSPHRASE)
    assert manifest.hq_keys[manifest.current_hq_key_id] == crypto.box_public_key(
        keys.hq_secrets[manifest.current_hq_key_id]
    )
    assert manifest.receipt_key == crypto.signing_public_key(keys.receipt_seed)


def test_create_network_leaves_no_database_connection_open(tmp_path: Path) -> None:
    create_network(tmp_path / "hq", "fresh", PASSPHRASE, KDF)
    assert (tmp_path / "hq" / DATABASE).exists()
    assert not (tmp_path / "hq" / f"{DATABASE}-wal").exists(), "closed: WAL folded in and removed"


def test_create_network_refusals(net: Net, tmp_path: Path) -> None:
    with pytest.raises(FieldsyncError, match="already holds an HQ"):
        create_network(net.hq, "again", PASSPHRASE, KDF)
    with pytest.raises(InputRefused, match="network name"):
        create_network(tmp_path / "x", "", PASSPHRASE, KDF)
    with pytest.raises(InputRefused, match="network name"):
        create_network(tmp_path / "y", "n" * 65, PASSPHRASE, KDF)
    with pytest.raises(InputRefused, match="too short"):
        create_network(tmp_path / "z", "ok", "short", KDF)


def test_wrong_hq_passphrase_and_missing_hq(net: Net, tmp_path: Path) -> None:
    with pytest.raises(WrongPassphrase, match="HQ secrets"):
        HQ(net.hq, passphrase=PASSPHRASE).unlock("not the passphrase")
    with pytest.raises(NotFound, match="network create"):
        HQ(tmp_path / "nowhere").unlock(PASSPHRASE)
    with pytest.raises(NotFound, match="not an HQ directory"):
        HQ(tmp_path / "nowhere").database()
    with pytest.raises(NotFound):
        HQ(tmp_path / "nowhere").manifest()


def test_enrolment_registers_nodes_and_authors(net: Net) -> None:
    tables = _tables(net)
    with open_hq(net) as headquarters:
        nodes = list(headquarters.database()["nodes"].rows)
        authors = list(headquarters.database()["authors"].rows)
        enrolled = headquarters.enrolled_authors()
    assert [(n["role"], n["serial"]) for n in nodes] == [("author", 1), ("relay", 2)]
    assert [(a["name"], a["author_key"]) for a in authors] == [("monitor-17", _author_text(net))]
    assert list(enrolled.values()) == ["monitor-17"]
    assert tables["reports"] == [] and tables["envelopes"] == []


def test_enrolment_refusals(net: Net, tmp_path: Path) -> None:
    with open_hq(net) as headquarters:
        with pytest.raises(InputRefused, match="enrolment request refused"):
            headquarters.enroll("fieldsync-enrolment-request:AAAA", PASSPHRASE)
        with pytest.raises(WrongPassphrase):
            request = Node(tmp_path / "new").init(None, None, KDF)  # join removed A's
            headquarters.enroll(request.read_text(), "wrong passphrase")


# --- ingest -------------------------------------------------------------------------------


def test_reports_become_rows_with_lat_lon(net: Net) -> None:
    add_reports(
        net.a,
        ["at the market"],
        location={"source": "gps", "lat": 12.5, "lon": -1.25, "place": "market"},
        title="Market arrests",
    )
    export(net.a, net.usb / "a.bundle")
    summary = ingest(net, net.usb / "a.bundle")
    assert summary.as_dict() == {
        "envelopes": 1,
        "new": 1,
        "duplicate": 0,
        "forks": 0,
        "quarantined": 0,
        "quarantined_reasons": {},
        "junk": 0,
        "junk_reasons": {},
        "quarantine_full": 0,
        "failed": 0,
        "other_items": 1,  # the manifest
        "chunks": 0,
        "chunks_failed": 0,
        "media": {"verified": 0, "failed": 0, "pending": 0},
        "gaps": {},
        "gaps_total": 0,
        "gap_authors": {},
        "alerts": [],
        "alerts_total": 0,
        "attention": False,
    }
    with open_hq(net) as headquarters:
        (row,) = headquarters.database()["reports"].rows
        columns = {c.name: c.type for c in headquarters.database()["reports"].columns}
    assert (row["lat"], row["lon"], row["place"]) == (12.5, -1.25, "market")
    assert columns["lat"] == columns["lon"] == "REAL"
    assert row["title"] == "Market arrests" and row["narrative"] == "at the market"
    assert row["author_name"] == "monitor-17" and row["sequence"] == 1
    assert row["author_key"] == _author_text(net)


def test_a_replayed_envelope_is_stored_once(net: Net) -> None:
    add_reports(net.a, ["one", "two", "three"])
    export(net.a, net.usb / "a.bundle")
    first = ingest(net, net.usb / "a.bundle")
    assert (first.new, first.duplicate) == (3, 0)
    again = ingest(net, net.usb / "a.bundle", net.usb / "a.bundle")
    assert (again.new, again.duplicate, again.forks) == (0, 6, 0)
    tables = _tables(net)
    assert len(tables["reports"]) == 3 and len(tables["envelopes"]) == 3


def test_the_same_report_sealed_twice_is_a_duplicate_not_a_fork(net: Net) -> None:
    manifest, seed = hq_manifest(net), author_seed(net)
    report_id = str(uuid.uuid4())
    once = seal(manifest, seed, 1, "same words", id=report_id)
    twice = seal(manifest, seed, 1, "same words", id=report_id)
    assert once.item != twice.item and once.header_hash == twice.header_hash
    write_bundle(net, net.usb / "x.bundle", [once.item, twice.item])
    summary = ingest(net, net.usb / "x.bundle")
    assert (summary.new, summary.duplicate, summary.forks) == (1, 1, 0)
    statuses = [row[2] for row in _tables(net)["envelopes"]]
    assert sorted(statuses) == ["accepted", "duplicate"]


def test_same_author_and_sequence_with_different_content_raises_a_fork_alert(net: Net) -> None:
    manifest, seed = hq_manifest(net), author_seed(net)
    honest = seal(manifest, seed, 1, "what happened")
    forged = seal(manifest, seed, 1, "a different story")
    write_bundle(net, net.usb / "honest.bundle", [honest.item])
    write_bundle(net, net.usb / "fork.bundle", [forged.item])
    ingest(net, net.usb / "honest.bundle")
    summary = ingest(net, net.usb / "fork.bundle")
    assert (summary.new, summary.forks) == (0, 1)
    (alert,) = summary.alerts
    assert alert["kind"] == "fork" and alert["sequence"] == 1
    assert alert["author_name"] == "monitor-17" and alert["author_key"] == _author_text(net)
    honest_id = crypto.content_id(honest.item).hex()
    forged_id = crypto.content_id(forged.item).hex()
    assert honest_id in alert["detail"] and forged_id in alert["detail"]
    with open_hq(net) as headquarters:
        db = headquarters.database()
        alerts = list(db["alerts"].rows)
        fork_row = db.table("envelopes").get(forged_id)
        reports = list(db["reports"].rows)
    assert [(a["kind"], a["sequence"]) for a in alerts] == [("fork", 1)]
    assert fork_row["status"] == "fork" and fork_row["data"] == forged.item  # kept as evidence
    assert [r["narrative"] for r in reports] == ["what happened"]


def test_a_missing_sequence_number_is_reported_as_a_gap(net: Net) -> None:
    manifest, seed = hq_manifest(net), author_seed(net)
    one = seal(manifest, seed, 1, "one")
    two = seal(manifest, seed, 2, "two", previous=one.header_hash)
    three = seal(manifest, seed, 3, "three", previous=two.header_hash)
    five = seal(manifest, seed, 5, "five")
    write_bundle(net, net.usb / "1-3-5.bundle", [one.item, three.item, five.item])
    summary = ingest(net, net.usb / "1-3-5.bundle")
    assert summary.new == 3
    assert summary.gaps == {
        _author_text(net): [
            {"first": 2, "last": 2, "count": 1},
            {"first": 4, "last": 4, "count": 1},
        ]
    }
    write_bundle(net, net.usb / "2.bundle", [two.item])
    later = ingest(net, net.usb / "2.bundle")
    assert later.gaps == {_author_text(net): [{"first": 4, "last": 4, "count": 1}]}
    with open_hq(net) as headquarters:
        assert headquarters.gaps() == (later.gaps, 1)
        rows = list(
            headquarters.database().query("SELECT * FROM alerts WHERE kind = 'gap' ORDER BY id")
        )
    # The filled gap stays on record, resolved; the open one names the author.
    assert [(r["first_missing"], r["state"]) for r in rows] == [(2, "resolved"), (4, "open")]
    row = rows[1]
    assert (row["author_name"], row["author_key"]) == ("monitor-17", _author_text(net))
    assert (row["first_missing"], row["last_missing"], row["missing_count"]) == (4, 4, 1)
    assert rows[0]["resolved_at"] is not None and row["resolved_at"] is None


def test_gaps_are_per_author(net: Net, tmp_path: Path) -> None:
    """A second author on node C keeps a chain of its own."""
    c = Node(net.root / "node-c")
    request = c.init("monitor-99", PASSPHRASE, KDF)
    try:
        c.join(enroll(net, request))
        c_ids = [c.add_report({**_fields(t)}, PASSPHRASE) for t in ("c1", "c2")]
        c.export_bundle(net.usb / "c.bundle")
    finally:
        c.close()
    add_reports(net.a, ["a1"])
    export(net.a, net.usb / "a.bundle")
    manifest, seed = hq_manifest(net), author_seed(net)
    write_bundle(net, net.usb / "a3.bundle", [seal(manifest, seed, 3, "a3").item])
    summary = ingest(net, net.usb / "a.bundle", net.usb / "c.bundle", net.usb / "a3.bundle")
    assert summary.new == 4
    assert summary.gaps == {_author_text(net): [{"first": 2, "last": 2, "count": 1}]}
    with open_hq(net) as headquarters:
        rows = list(headquarters.database().query("SELECT id, author_name, sequence FROM reports"))
    c_rows = sorted((r["sequence"], r["id"]) for r in rows if r["author_name"] == "monitor-99")
    assert c_rows == [(1, c_ids[0]), (2, c_ids[1])]


def _fields(narrative: str) -> dict[str, Any]:
    return {
        "narrative": narrative,
        "categories": ["threats"],
        "occurred": {"start": "2025", "precision": "year", "approximate": True},
    }


def test_refused_envelopes_that_open_are_held_in_quarantine_with_their_reasons(net: Net) -> None:
    manifest, seed = hq_manifest(net), author_seed(net)
    stranger = seal(manifest, bytes(range(32)), 1, "from an unenrolled author")
    forwarded = _seal_for_network(net, seed, bytes(16))
    good = seal(manifest, seed, 1, "fine")
    write_bundle(net, net.usb / "mixed.bundle", [stranger.item, forwarded, good.item])
    summary = ingest(net, net.usb / "mixed.bundle")
    assert summary.new == 1
    reasons = summary.quarantined
    assert sum(reasons.values()) == 2 and summary.junk == {}
    assert any("never enrolled" in r for r in reasons)
    assert any("another network" in r for r in reasons)
    assert summary.as_dict()["quarantined"] == 2
    assert [a["kind"] for a in summary.alerts] == ["quarantined", "quarantined"]
    with open_hq(net) as headquarters:
        db = headquarters.database()
        held = list(db.query("SELECT reason, data FROM quarantine"))
        envelope_rows = list(db.query("SELECT status, data FROM envelopes"))
        listed = list(headquarters.quarantine_list())
    assert {r["reason"] for r in held} == set(reasons)
    assert {r["data"] for r in held} == {stranger.item, forwarded}
    assert sorted(r["status"] for r in envelope_rows) == ["accepted", "quarantined", "quarantined"]
    assert all(r["data"] is None for r in envelope_rows)  # the bytes live in the quarantine only
    assert [r["id"] for r in listed] == [1, 2] and "data" not in listed[0]


def test_a_report_with_a_time_based_id_is_held_with_a_clear_reason(net: Net) -> None:
    """SPEC §7: report ids are random UUIDv4; a v7 id (a writer that dates its reports) is
    refused at HQ, by name, while a v4 one from the same author is accepted."""
    manifest, seed = hq_manifest(net), author_seed(net)
    dated = body("dated id", id="0191f3a2-7c4e-7b1a-9d2e-5f6a7b8c9d0e")
    old = seal_raw(manifest, seed, 1, 1_740_000_000, dated)
    fine = seal(manifest, seed, 2, "random id")
    write_bundle(net, net.usb / "ids.bundle", [old, fine.item])
    summary = ingest(net, net.usb / "ids.bundle")
    assert summary.new == 1
    (reason,) = summary.quarantined
    assert "report field id: must be a lowercase random UUID (version 4" in reason, reason


def _seal_for_network(net: Net, seed: bytes, network_id: bytes) -> bytes:
    """An inner written for another network, sealed to this HQ's key (forwarding)."""
    manifest = hq_manifest(net)
    key_id = manifest.current_hq_key_id
    return envelope.seal_report(
        envelope.SealInput(
            network_id=network_id,
            hq_key_id=key_id,
            hq_public_key=manifest.hq_keys[key_id],
            author_seed=seed,
            sequence=9,
            previous=GENESIS,
            claimed_time=1,
            body=body("forwarded"),
        ),
        bytes(32),
    ).item


def test_bad_bundles_leave_the_analyst_database_unchanged(net: Net) -> None:
    add_reports(net.a, ["one"])
    export(net.a, net.usb / "a.bundle")
    ingest(net, net.usb / "a.bundle")
    before = _tables(net)
    manifest = hq_manifest(net)
    key = network_key(net)
    good_item = seal(manifest, author_seed(net), 2, "two").item
    bad = net.usb / "bad.bundle"
    bad.write_bytes(
        raw_bundle(key, [codec.encode({"n": manifest.network_id, "v": 1}), good_item, b"\xc1"])
    )
    truncated = net.usb / "cut.bundle"
    write_bundle(net, truncated, [good_item])
    truncated.write_bytes(truncated.read_bytes()[:-1])
    for path, phrase in ((bad, "not valid msgpack"), (truncated, "truncated")):
        with pytest.raises(InputRefused, match=phrase) as caught:
            ingest(net, path)
        assert "nothing from it ingested" in str(caught.value)
        assert _tables(net) == before
    with pytest.raises(NotFound):
        ingest(net, net.usb / "missing.bundle")
    with open_hq(net) as headquarters, pytest.raises(WrongPassphrase):
        headquarters.ingest_files([net.usb / "a.bundle"], "wrong passphrase")
    assert _tables(net) == before


# --- receipts -----------------------------------------------------------------------------


def test_receipts_cover_every_recorded_envelope(net: Net) -> None:
    manifest, seed = hq_manifest(net), author_seed(net)
    honest = seal(manifest, seed, 1, "one")
    fork = seal(manifest, seed, 1, "other one")
    stranger = seal(manifest, bytes(range(32)), 1, "stranger")
    write_bundle(net, net.usb / "all.bundle", [honest.item, fork.item, stranger.item])
    ingest(net, net.usb / "all.bundle")
    counts = receipts(net, net.usb / "r1.bundle")
    # One receipt per status: the honest report and the fork are accepted, the stranger held.
    assert counts == {"receipts_new": 2, "receipts_total": 2, "envelopes_receipted": 3}
    tags = _receipted_tags(net)
    assert tags == {
        ReceiptStatus.ACCEPTED: {delivery_tag(honest.item), delivery_tag(fork.item)},
        ReceiptStatus.HELD: {delivery_tag(stranger.item)},
    }
    assert all(row[7] is not None for row in _tables(net)["envelopes"])  # receipt_serial
    # Nothing new: the next receipts bundle repeats the old receipt, issues none.
    again = receipts(net, net.usb / "r2.bundle")
    assert again == {"receipts_new": 0, "receipts_total": 2, "envelopes_receipted": 3}
    add_reports(net.a, ["later"])
    export(net.a, net.usb / "a.bundle")
    ingest(net, net.usb / "a.bundle")
    third = receipts(net, net.usb / "r3.bundle")
    assert third == {"receipts_new": 1, "receipts_total": 3, "envelopes_receipted": 4}


def _receipted_tags(net: Net) -> dict[ReceiptStatus, set[bytes]]:
    manifest = hq_manifest(net)
    tags: dict[ReceiptStatus, set[bytes]] = {}
    with open_hq(net) as headquarters:
        for row in headquarters.database()["receipts"].rows:
            receipt = open_receipt(parse_item(row["item"]).fields, manifest)
            assert receipt.network_id == manifest.network_id
            assert row["status"] == receipt.status.value
            tags.setdefault(receipt.status, set()).update(receipt.tags)
    return tags
