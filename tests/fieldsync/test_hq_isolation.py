"""HQ ingest isolates every envelope (issue 7, Deliver 1 and 2): poison reports, HQ's own
errors, junk and a full quarantine never fail a source, and receipts say what HQ holds.

Everything is real: SQLite files, sealed envelopes, bundle files. HQ's "own errors" are
provoked with real SQLite triggers that make one insert fail, as a full disk or a bug would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fieldsync.hq import DATABASE, HQ, MAX_SEQUENCE_JUMP, IngestSummary
from fieldsync.node import Node
from fieldsync_protocol import crypto
from fieldsync_protocol.crypto import delivery_tag
from fieldsync_protocol.envelope import MAX_CLAIMED_TIME
from fieldsync_protocol.items import parse_item
from fieldsync_protocol.receipt import ReceiptStatus, open_receipt
from tests.fieldsync.offline_support import (
    PASSPHRASE,
    Net,
    add_reports,
    author_seed,
    body,
    export,
    hq_db_connect,
    hq_manifest,
    import_,
    ingest,
    junk_envelope,
    open_hq,
    receipts,
    seal,
    seal_raw,
    write_bundle,
)


def _rows(net: Net, sql: str) -> list[dict[str, Any]]:
    with open_hq(net) as headquarters:
        return list(headquarters.database().query(sql))


def _hq_sql(net: Net, *statements: str) -> None:
    """What an operator (or a failing disk) does to hq.db outside fieldsync."""
    conn = hq_db_connect(net.hq)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def test_a_time_after_9999_is_held_and_the_rest_of_the_bundle_goes_in(net: Net) -> None:
    manifest, seed = hq_manifest(net), author_seed(net)
    one = seal(manifest, seed, 1, "one")
    late = seal_raw(manifest, seed, 2, 2**40, body("from year 36812"), previous=one.header_hash)
    edge = seal_raw(manifest, seed, 3, MAX_CLAIMED_TIME, body("last second of 9999"))
    write_bundle(net, net.usb / "x.bundle", [one.item, late, edge])
    summary = ingest(net, net.usb / "x.bundle")
    assert (summary.new, summary.failed, summary.envelopes) == (2, 0, 3)
    (reason,) = summary.quarantined
    assert reason == f"report header.t = {2**40} is outside 0..{MAX_CLAIMED_TIME}"
    alert, gap = summary.alerts  # 2 is held, so 2 is also missing from the chain
    assert (gap["kind"], gap["first_missing"], gap["author"]) == ("gap", 2, "monitor-17")
    # Signed by an enrolled author: the alert names who sent it.
    assert (alert["kind"], alert["author_name"]) == ("quarantined", "monitor-17")
    (held,) = _rows(net, "SELECT author_name, author_key, sequence FROM quarantine")
    assert held["author_name"] == "monitor-17" and held["author_key"].startswith("author:")
    times = [r["claimed_time"] for r in _rows(net, "SELECT claimed_time FROM reports")]
    assert sorted(times) == ["2025-02-19T21:20:01Z", "9999-12-31T23:59:59Z"]
    again = ingest(net, net.usb / "x.bundle")
    assert (again.new, again.duplicate, again.alerts_total, again.envelopes) == (0, 3, 0, 3)


def test_implausible_sequence_jumps_are_held_and_gaps_stay_ranges(net: Net) -> None:
    manifest, seed = hq_manifest(net), author_seed(net)
    chain = [seal(manifest, seed, q, f"report {q}") for q in (1, 2, 3)]
    top = seal(manifest, seed, 2**63 - 1, "the largest sequence number")
    far = seal(manifest, seed, 10**12, "far ahead")
    near = seal(manifest, seed, 3 + MAX_SEQUENCE_JUMP, "as far as is plausible")
    items = [*(s.item for s in chain), top.item, far.item, near.item]
    write_bundle(net, net.usb / "jumps.bundle", items)
    summary = ingest(net, net.usb / "jumps.bundle")
    assert (summary.new, summary.failed) == (4, 0)
    assert sum(summary.quarantined.values()) == 2
    assert [a["kind"] for a in summary.alerts] == ["sequence jump", "sequence jump", "gap"]
    assert {a["sequence"] for a in summary.alerts[:2]} == {2**63 - 1, 10**12}
    assert all("implausible sequence jump" in reason for reason in summary.quarantined)
    # The plausible one opened a gap of 9,999 numbers: one range, never a list.
    ((_author, ranges),) = summary.gaps.items()
    assert ranges == [{"first": 4, "last": 2 + MAX_SEQUENCE_JUMP, "count": MAX_SEQUENCE_JUMP - 1}]
    assert summary.gaps_total == 1
    held = _rows(net, "SELECT sequence, reason FROM quarantine ORDER BY id")
    assert [h["sequence"] for h in held] == [2**63 - 1, 10**12]
    assert _rows(net, "SELECT max(sequence) AS top FROM chain")[0]["top"] == 3 + MAX_SEQUENCE_JUMP


def test_a_gap_of_two_to_the_63_is_one_row(net: Net) -> None:
    """A chain written by an older HQ (which accepted any jump) holds 1 and 2^63-1: the gap
    between them is one row, computed in SQL, with nothing listed number by number."""
    manifest, seed = hq_manifest(net), author_seed(net)
    write_bundle(net, net.usb / "1.bundle", [seal(manifest, seed, 1, "one").item])
    ingest(net, net.usb / "1.bundle")
    _hq_sql(
        net,
        "INSERT INTO chain (author_key, sequence, header_hash, previous, envelope_id)"
        " SELECT author_key, 9223372036854775807, x'00', x'00', 'legacy' FROM chain",
    )
    summary = IngestSummary()
    with open_hq(net) as headquarters:
        headquarters.finish_ingest(summary)
    assert summary.gaps_total == 1
    ((_, ranges),) = summary.gaps.items()
    assert ranges == [{"first": 2, "last": 2**63 - 2, "count": 2**63 - 3}]


def test_an_error_inside_hq_holds_that_envelope_and_rolls_back_its_half_written_rows(
    net: Net,
) -> None:
    manifest, seed = hq_manifest(net), author_seed(net)
    items = [seal(manifest, seed, q, "boom" if q == 2 else f"fine {q}").item for q in (1, 2, 3)]
    write_bundle(net, net.usb / "x.bundle", items)
    # The report row is written after the envelope and chain rows: failing it mid-way.
    _hq_sql(
        net,
        "CREATE TRIGGER fail_report BEFORE INSERT ON reports WHEN NEW.narrative = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'disk trouble'); END",
    )
    summary = ingest(net, net.usb / "x.bundle")
    assert (summary.new, summary.failed) == (2, 0)
    (reason,) = summary.quarantined
    assert reason == "internal error at HQ (IntegrityError): disk trouble"
    boom_id = crypto.content_id(items[1]).hex()
    assert _rows(net, "SELECT sequence FROM chain ORDER BY sequence") == [
        {"sequence": 1},
        {"sequence": 3},
    ]
    (row,) = _rows(net, f"SELECT status, author_key FROM envelopes WHERE envelope_id = '{boom_id}'")  # noqa: S608
    assert row == {"status": "quarantined", "author_key": None}  # nothing half-written kept
    # Fixed (the trigger is gone): reingest accepts it.
    _hq_sql(net, "DROP TRIGGER fail_report")
    with open_hq(net) as headquarters:
        result = headquarters.reingest(None, PASSPHRASE)
    assert (result.accepted, sum(result.still_held.values())) == (1, 0)
    assert len(_rows(net, "SELECT 1 FROM reports")) == 3
    assert _rows(net, "SELECT count(*) AS n FROM quarantine")[0]["n"] == 0


def test_an_envelope_hq_cannot_record_at_all_is_left_for_the_next_ingest(net: Net) -> None:
    manifest, seed = hq_manifest(net), author_seed(net)
    items = [seal(manifest, seed, q, "boom" if q == 2 else f"fine {q}").item for q in (1, 2, 3)]
    write_bundle(net, net.usb / "x.bundle", items)
    _hq_sql(
        net,
        "CREATE TRIGGER fail_report BEFORE INSERT ON reports WHEN NEW.narrative = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'disk trouble'); END",
        "CREATE TRIGGER fail_quarantine BEFORE INSERT ON quarantine"
        " BEGIN SELECT RAISE(ABORT, 'still failing'); END",
    )
    summary = ingest(net, net.usb / "x.bundle")
    assert (summary.new, summary.failed, summary.envelopes) == (2, 1, 3)
    assert len(_rows(net, "SELECT 1 FROM envelopes")) == 2  # not recorded: not receipted
    _hq_sql(net, "DROP TRIGGER fail_report", "DROP TRIGGER fail_quarantine")
    again = ingest(net, net.usb / "x.bundle")
    assert (again.new, again.duplicate, again.failed) == (1, 2, 0)


def test_junk_is_receipted_as_dropped_and_hq_keeps_none_of_its_bytes(net: Net) -> None:
    manifest = hq_manifest(net)
    key_id = manifest.current_hq_key_id
    junk = [junk_envelope(256 * 1024, key_id) for _ in range(8)]
    write_bundle(net, net.usb / "junk.bundle", junk)
    before = (net.hq / DATABASE).stat().st_size
    summary = ingest(net, net.usb / "junk.bundle")
    assert sum(summary.junk.values()) == 8 and summary.quarantined == {}
    assert all("cannot be opened" in reason for reason in summary.junk)
    counts = receipts(net, net.usb / "r.bundle")
    assert counts["envelopes_receipted"] == 8
    statuses = _receipt_statuses(net)
    assert statuses == {delivery_tag(j): ReceiptStatus.DROPPED for j in junk}
    files = [p for p in net.hq.iterdir() if p.name.startswith(DATABASE)]
    stored = b"".join(p.read_bytes() for p in files)
    for item in junk:
        ciphertext = parse_item(item).fields["c"]
        assert stored.find(ciphertext[:64]) == -1 and stored.find(ciphertext[-64:]) == -1
    # 8 x 256 KiB of junk made 2 MiB before; now only ids, tags and reasons remain.
    assert (net.hq / DATABASE).stat().st_size - before < 64 * 1024


def _receipt_statuses(net: Net) -> dict[bytes, ReceiptStatus]:
    manifest = hq_manifest(net)
    statuses: dict[bytes, ReceiptStatus] = {}
    for row in _rows(net, "SELECT item FROM receipts ORDER BY serial"):
        receipt = open_receipt(parse_item(row["item"]).fields, manifest)
        statuses.update(dict.fromkeys(receipt.tags, receipt.status))
    return statuses


def test_past_its_bound_the_quarantine_keeps_and_receipts_nothing_and_alerts(net: Net) -> None:
    manifest = hq_manifest(net)
    strangers = [seal(manifest, bytes([i]) * 32, 1, f"stranger {i}").item for i in range(3)]
    write_bundle(net, net.usb / "s.bundle", strangers)
    headquarters = HQ(net.hq, passphrase=PASSPHRASE, quarantine_max_items=2)
    try:
        summary = headquarters.ingest_files([net.usb / "s.bundle"], PASSPHRASE)
        assert (sum(summary.quarantined.values()), summary.quarantine_full) == (2, 1)
        assert summary.alerts[-1]["kind"] == "quarantine full"
        headquarters.finish_ingest(summary)  # bundles then the hub: still one alert
        full = "SELECT count(*) FROM alerts WHERE kind = 'quarantine full'"
        assert headquarters.database().execute(full).fetchone()[0] == 1
        assert headquarters.issue_receipts(PASSPHRASE) == 1
        pending = headquarters.database().execute("SELECT count(*) FROM envelopes").fetchone()
        assert pending[0] == 2  # the third is not recorded: relays keep carrying it
        again = headquarters.ingest_files([net.usb / "s.bundle"], PASSPHRASE)
        # Still full: the open alert counts it again; nothing new needs attention.
        assert (again.duplicate, again.quarantine_full, again.alerts_total) == (2, 1, 0)
        (count,) = headquarters.database().execute(full.replace("count(*)", "count")).fetchone()
        assert count == 2
    finally:
        headquarters.close()
    roomy = HQ(net.hq, passphrase=PASSPHRASE, quarantine_max_bytes=10**9)
    try:
        last = roomy.ingest_files([net.usb / "s.bundle"], PASSPHRASE)
        assert (last.duplicate, sum(last.quarantined.values()), last.quarantine_full) == (2, 1, 0)
    finally:
        roomy.close()


def test_a_removed_author_is_held_then_accepted_and_the_device_follows(net: Net) -> None:
    """The library half of the CLI test in tests/cli/test_quarantine_cli.py."""
    add_reports(net.a, ["in flight while HQ removed the author"])
    export(net.a, net.usb / "a.bundle")
    author_rows = _rows(net, "SELECT * FROM authors")
    _hq_sql(net, "DELETE FROM authors")
    summary = ingest(net, net.usb / "a.bundle")
    assert (summary.new, sum(summary.quarantined.values())) == (0, 1)
    receipts(net, net.usb / "held.bundle")
    import_(net.a, net.usb / "held.bundle")
    assert _outbox(net.a) == ["held"]
    with open_hq(net) as headquarters:
        db = headquarters.database()
        for row in author_rows:
            db.table("authors").insert(row)
        result = headquarters.reingest([1], PASSPHRASE)
        (alert,) = headquarters.alerts(everything=True)
        assert headquarters.alerts() == []  # accepted now: its alert resolved itself
    assert (result.accepted, result.receipts_new) == (1, 1)
    assert (alert["kind"], alert["state"]) == ("quarantined", "resolved")
    receipts(net, net.usb / "accepted.bundle")
    counts = import_(net.a, net.usb / "accepted.bundle")
    # Already purged when held: the store cannot count it as the author's without the
    # author's key (nothing on the node marks a receipted tag as its own); the outbox can.
    assert (counts.delivered_own, counts.held_own) == (0, 0)
    assert _outbox(net.a) == ["delivered"]
    # A replayed held receipt never downgrades it.
    import_(net.a, net.usb / "held.bundle")
    assert _outbox(net.a) == ["delivered"]


def _outbox(home: Path) -> list[str]:
    node = Node(home)
    try:
        return [entry.status for entry in node.reports(PASSPHRASE)]
    finally:
        node.close()
