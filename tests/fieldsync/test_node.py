"""A node home: set-up, enrolment, reports, bundles and status through the Python API."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest

from fieldsync.errors import FieldsyncError, InputRefused, NotFound, NotInitialised, WrongPassphrase
from fieldsync.node import AUTHOR_SECRET, MEMBERSHIP, NODE_SECRET, REQUEST, Node
from fieldsync_protocol import codec
from fieldsync_protocol.bundle import BundleReader
from fieldsync_protocol.items import ItemKind, parse_item
from tests.fieldsync.offline_support import (
    KDF,
    PASSPHRASE,
    Net,
    add_reports,
    enroll,
    export,
    fields,
    import_,
    ingest,
    receipts,
    snapshot,
    stored,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_private_keys_and_a_request(tmp_path: Path) -> None:
    author = Node(tmp_path / "author")
    relay = Node(tmp_path / "relay")
    try:
        request = author.init("monitor-1", PASSPHRASE, KDF)
        relay.init(None, None, KDF)
    finally:
        author.close()
        relay.close()
    assert request == tmp_path / "author" / REQUEST
    assert request.read_text().startswith("fieldsync-enrolment-request:")
    assert _mode(tmp_path / "author") == 0o700
    for name in (NODE_SECRET, AUTHOR_SECRET, REQUEST):
        assert _mode(tmp_path / "author" / name) == 0o600, name
    node_secret = codec.decode((tmp_path / "author" / NODE_SECRET).read_bytes())
    assert isinstance(node_secret, dict) and len(node_secret["node"]) == 32
    assert not (tmp_path / "relay" / AUTHOR_SECRET).exists()
    assert Node(tmp_path / "author").is_author() and not Node(tmp_path / "relay").is_author()
    assert not list((tmp_path / "author").glob(".*.tmp")), "no temporary files left behind"


def test_init_refuses_an_existing_node_and_needs_a_passphrase(net: Net, tmp_path: Path) -> None:
    with pytest.raises(FieldsyncError, match="already holds a node"):
        Node(net.a).init(None, None, KDF)
    with pytest.raises(InputRefused, match="needs a passphrase"):
        Node(tmp_path / "new").init("someone", None, KDF)
    with pytest.raises(InputRefused, match="too short"):
        Node(tmp_path / "newer").init("someone", "short", KDF)


def test_before_init_and_before_join(tmp_path: Path) -> None:
    nothing = Node(tmp_path / "nothing")
    with pytest.raises(NotInitialised, match="is not a fieldsync node"):
        nothing.membership()
    with pytest.raises(NotInitialised, match="is not a fieldsync node"):
        nothing.status()
    assert not (tmp_path / "nothing").exists(), "asking about a home does not create it"
    fresh = Node(tmp_path / "fresh")
    fresh.init(None, None, KDF)
    try:
        with pytest.raises(NotInitialised, match="has not joined a network"):
            fresh.membership()
        status = fresh.status()
        assert status["joined"] is False and status["role"] == "relay"
        assert status["items_total"] == 0
    finally:
        fresh.close()


def test_join_writes_membership_and_stores_the_manifest(net: Net) -> None:
    node = Node(net.a)
    try:
        member = node.membership()
        assert member.manifest.name == "test-net"
        assert member.certificate_info.expires > member.manifest.epoch  # an HQ time
        assert _mode(net.a / MEMBERSHIP) == 0o600
        assert node.store().manifest_items() == [member.manifest_item]
        status = node.status()
        assert status["joined"] and status["network"] == "test-net" and status["role"] == "author"
        assert status["node"].startswith("node:")
    finally:
        node.close()
    assert not Node(net.b).is_author()


def test_join_refuses_an_enrolment_made_for_another_node(net: Net, tmp_path: Path) -> None:
    other = Node(tmp_path / "other")
    request = other.init(None, None, KDF)
    other.close()
    enrolment = enroll(net, request)
    for bad, phrase in (
        (enrolment, "another node"),
        ("fieldsync-enrolment:garbage", "enrolment refused"),
    ):
        node = Node(tmp_path / "third")
        if not (tmp_path / "third" / NODE_SECRET).exists():
            node.init(None, None, KDF)
        try:
            with pytest.raises(InputRefused, match=phrase):
                node.join(bad)
        finally:
            node.close()
    assert not (tmp_path / "third" / MEMBERSHIP).exists()


def test_damaged_membership_file_is_refused(net: Net) -> None:
    (net.b / MEMBERSHIP).write_bytes(b"\x93garbage")
    with pytest.raises(InputRefused, match="membership file"):
        Node(net.b).membership()


def test_add_report_fills_defaults_and_validates(net: Net) -> None:
    node = Node(net.a)
    try:
        report_id = node.add_report(fields("Two people detained."), PASSPHRASE)
        # A random UUIDv4: nothing in it dates the report (SPEC.md §7).
        assert uuid.UUID(report_id).version == 4 and str(uuid.UUID(report_id)) == report_id
        with pytest.raises(InputRefused, match="location"):
            node.add_report(fields("x", location={"source": "gps", "lat": 1.0}), PASSPHRASE)
        with pytest.raises(InputRefused, match="narrative"):
            node.add_report(fields("   "), PASSPHRASE)
        with pytest.raises(InputRefused, match="categories"):
            node.add_report(fields("x", category="Not A Key"), PASSPHRASE)
        with pytest.raises(WrongPassphrase, match="wrong passphrase"):
            node.add_report(fields("x"), "not the passphrase")
        entries = node.reports(PASSPHRASE)
    finally:
        node.close()
    assert [e.report_id for e in entries] == [report_id], "refused reports leave nothing"


def test_a_report_id_cannot_be_reused(net: Net) -> None:
    """A --json-file may carry an id; reusing one is refused, not a database crash."""
    node = Node(net.a)
    try:
        first = node.add_report(fields("one"), PASSPHRASE)
        with pytest.raises(InputRefused, match=f"id {first} already exists.*supersedes"):
            node.add_report(fields("two", id=first), PASSPHRASE)
        second = node.add_report(fields("two", supersedes=first), PASSPHRASE)
        assert [e.report_id for e in node.reports(PASSPHRASE)] == [first, second]
        assert stored(node.store(), "envelope") == 2
    finally:
        node.close()


def test_reports_are_too_large_beyond_the_largest_size_class(net: Net) -> None:
    node = Node(net.a)
    try:
        with pytest.raises(InputRefused):
            node.add_report(fields("x" * 300_000), PASSPHRASE)
        assert node.reports(PASSPHRASE) == []
    finally:
        node.close()


def test_relay_nodes_cannot_write_reports(net: Net) -> None:
    node = Node(net.b)
    try:
        with pytest.raises(FieldsyncError, match="relay-only"):
            node.add_report(fields("x"), PASSPHRASE)
    finally:
        node.close()


def test_export_writes_every_item_atomically(net: Net) -> None:
    # Markers long enough that random ciphertext cannot contain them by chance.
    markers = ["MARKER-one-7f3c2a91", "MARKER-two-7f3c2a91"]
    add_reports(net.a, markers)
    path = net.usb / "a.bundle"
    assert export(net.a, path) == 3
    assert not list(net.usb.glob(".*partial"))
    node = Node(net.a)
    try:
        member = node.membership()
    finally:
        node.close()
    reader = BundleReader(member.network_key, member.manifest.network_id)
    reader.receive_data(path.read_bytes())
    reader.end_of_file()
    kinds = sorted(parse_item(item).kind.value for item in reader.items())
    assert kinds == [ItemKind.ENVELOPE.value] * 2 + [ItemKind.MANIFEST.value]
    assert all(m.encode() not in path.read_bytes() for m in markers)


def test_export_to_a_missing_directory_or_a_directory(net: Net) -> None:
    node = Node(net.a)
    try:
        with pytest.raises(NotFound, match=r"directory .*/nowhere does not exist"):
            node.export_bundle(net.root / "nowhere" / "a.bundle")
        with pytest.raises(FieldsyncError, match="is a directory"):
            node.export_bundle(net.usb)
    finally:
        node.close()
    assert list(net.usb.iterdir()) == []


def test_export_import_counts_and_progress(net: Net) -> None:
    add_reports(net.a, ["one", "two"])
    seen: list[tuple[int, int]] = []
    node = Node(net.a)
    try:
        node.export_bundle(net.usb / "a.bundle", lambda done, total: seen.append((done, total)))
    finally:
        node.close()
    assert seen == [(1, 3), (2, 3), (3, 3)]
    node = Node(net.b)
    try:
        progress: list[tuple[int, int]] = []
        result = node.import_bundle(net.usb / "a.bundle", lambda d, t: progress.append((d, t)))
    finally:
        node.close()
    assert result.items_in_file == 3
    counts = result.counts
    assert (counts.new, counts.duplicate, counts.already_delivered) == (2, 1, 0)
    assert counts.kinds == {"envelope": 2, "manifest": 1}
    size = (net.usb / "a.bundle").stat().st_size
    assert progress[-1] == (size, size)
    again = import_(net.a, net.usb / "a.bundle")
    assert (again.new, again.duplicate) == (0, 3)


def test_import_needs_a_joined_node(tmp_path: Path, net: Net) -> None:
    export(net.a, net.usb / "a.bundle")
    fresh = Node(tmp_path / "fresh")
    fresh.init(None, None, KDF)
    try:
        with pytest.raises(NotInitialised):
            fresh.import_bundle(net.usb / "a.bundle")
    finally:
        fresh.close()


def test_the_whole_loop_marks_reports_delivered(net: Net) -> None:
    ids = add_reports(net.a, ["one", "two", "three"])
    export(net.a, net.usb / "a.bundle")
    import_(net.b, net.usb / "a.bundle")
    export(net.b, net.usb / "b.bundle")
    summary = ingest(net, net.usb / "b.bundle")
    assert (summary.new, summary.duplicate, summary.forks, summary.quarantined) == (3, 0, 0, {})
    assert summary.junk == {}
    receipts(net, net.usb / "r.bundle")
    import_(net.b, net.usb / "r.bundle")
    import_(net.a, net.usb / "r.bundle")
    node = Node(net.a)
    try:
        assert [(e.report_id, e.status) for e in node.reports(PASSPHRASE)] == [
            (i, "delivered") for i in ids
        ]
        status = node.status()
    finally:
        node.close()
    assert status["outbox"] == {"sealed": 0}  # what HQ made of them: the author's to see
    b = snapshot(net.b)["status"]
    assert b["items"] == {
        "envelope": 0,
        "receipt": 1,
        "manifest": 1,
        "chunk": 0,
        "revocation": 0,
        "key_delivery": 0,
        "form": 0,
        "opaque": 0,
    }
    assert b["tombstones"] == 3
