"""``fieldsync hq alerts`` and the attention exit code of ``hq ingest`` (issue 12 item 3).

A fork, a gap, a held envelope (an author HQ never enrolled), junk, an attachment still
incomplete (a tampered chunk in place of a real one) and a revoked author's report each
become one alert row naming the author by name; ``hq ingest`` exits 8 when new alerts
appeared and 0 when nothing new did; acknowledged alerts leave the default listing and
open again when their event happens again. Real processes, real files.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

from fieldsync import hq_alerts
from fieldsync.node import Node
from fieldsync_protocol import crypto
from fieldsync_protocol.attachment import PIECE
from fieldsync_protocol.keytext import KeyKind, key_to_text
from tests.cli.cli_support import Run
from tests.fieldsync.offline_support import (
    PASSPHRASE,
    Net,
    author_seed,
    fields,
    hq_manifest,
    junk_envelope,
    open_hq,
    seal,
    write_bundle,
)

ATTENTION = 8
NOT_FOUND = 4


def _json(done: subprocess.CompletedProcess[str], code: int = 0) -> Any:
    assert done.returncode == code, done.stderr
    return json.loads(done.stdout)


def _items(home: Path, kind: str) -> list[bytes]:
    node = Node(home)
    try:
        rows = node.store().db.execute("SELECT data FROM items WHERE kind = ? ORDER BY seq", [kind])
        return [row[0] for row in rows.fetchall()]
    finally:
        node.close()


def _report_with_photo(net: Net, tmp_path: Path) -> tuple[bytes, list[bytes]]:
    """A's report (sequence 1) with a two-chunk photo: its envelope and its chunks."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(secrets.token_bytes(PIECE + 1000))
    node = Node(net.a)
    try:
        node.add_report(fields("burned house"), PASSPHRASE, [photo])
    finally:
        node.close()
    (envelope,) = _items(net.a, "e")
    chunks = _items(net.a, "a")
    assert len(chunks) == 2
    return envelope, chunks


def _flip(item: bytes, position: int) -> bytes:
    damaged = bytearray(item)
    damaged[position] ^= 0x01
    return bytes(damaged)


def test_every_kind_of_alert_is_a_row_naming_the_author_and_ingest_says_attention(
    net: Net, run: Run, tmp_path: Path
) -> None:
    manifest, seed = hq_manifest(net), author_seed(net)
    author_key = key_to_text(KeyKind.AUTHOR, crypto.signing_public_key(seed))
    envelope, (chunk_one, chunk_two) = _report_with_photo(net, tmp_path)
    fork = seal(manifest, seed, 1, "a different story, same sequence number")
    three = seal(manifest, seed, 3, "three: 2 is missing")
    stranger = seal(manifest, bytes(range(32)), 1, "from an author HQ never enrolled")
    first = net.usb / "first.bundle"
    write_bundle(net, first, [envelope, chunk_one, fork.item, three.item, stranger.item])
    # Then junk, and the second chunk tampered with (a relay's damage, or an attacker's).
    write_bundle(net, net.usb / "junk.bundle", [junk_envelope(), _flip(chunk_two, 100)])

    done = run("hq", "ingest", "--hq", net.hq, first, "--json")
    summary = _json(done, ATTENTION)
    assert summary["attention"] is True
    assert sorted(a["kind"] for a in summary["alerts"]) == ["fork", "gap", "quarantined"]
    assert "ATTENTION: 3 new alert(s)" in done.stderr
    assert "gap: monitor-17 is missing sequence numbers 2" in done.stderr
    assert author_key not in done.stderr  # named, never keyed, where the name is known
    assert summary["media"]["pending"] == 1  # not an alert yet: its chunks may be on the way

    # A later ingest and the photo is still incomplete: now that is an alert too.
    later = _json(run("hq", "ingest", "--hq", net.hq, net.usb / "junk.bundle", "--json"), 8)
    junk, incomplete = later["alerts"]
    assert (junk["kind"], junk["author"]) == ("junk", None)
    assert incomplete["kind"] == "attachment incomplete"
    assert "1/2 chunks" in incomplete["detail"] and incomplete["author"] == "monitor-17"

    # Revocation (built elsewhere) raises its alerts through the same function.
    with open_hq(net) as headquarters:
        headquarters.raise_alert(
            hq_alerts.Event(
                hq_alerts.REVOKED_AUTHOR,
                "envelope-of-a-revoked-author",
                "report from an author revoked on 2025-03-01",
                author_key=author_key,
            )
        )

    listed = _json(run("hq", "alerts", "--hq", net.hq, "--json"))
    by_kind = {a["kind"]: a for a in listed}
    assert set(by_kind) == {
        "fork",
        "gap",
        "quarantined",
        "junk",
        "attachment incomplete",
        "revoked author",
    }
    assert all(a["state"] == "open" and a["count"] == 1 for a in listed)
    assert all(a["first_seen"] and a["last_seen"] for a in listed)
    for kind in ("fork", "gap", "attachment incomplete", "revoked author"):
        assert by_kind[kind]["author"] == "monitor-17", kind
    assert by_kind["quarantined"]["author"] is None  # nobody HQ knows signed it
    human = run("hq", "alerts", "--hq", net.hq)
    assert human.returncode == 0 and "monitor-17" in human.stdout
    assert author_key not in human.stdout

    # Nothing new: exit 0. The same junk again is the same alert, counted.
    again = _json(run("hq", "ingest", "--hq", net.hq, first, net.usb / "junk.bundle", "--json"))
    assert (again["attention"], again["alerts_total"]) == (False, 0)
    write_bundle(net, net.usb / "junk2.bundle", [junk_envelope()])
    _json(run("hq", "ingest", "--hq", net.hq, net.usb / "junk2.bundle", "--json"))
    (junk_alert,) = [
        a for a in _json(run("hq", "alerts", "--hq", net.hq, "--json")) if a["kind"] == "junk"
    ]
    assert junk_alert["count"] == 2

    # Acknowledge the fork: gone from the default listing, kept under --all.
    fork_id = by_kind["fork"]["id"]
    (acked,) = _json(run("hq", "alerts", "--hq", net.hq, "--ack", str(fork_id), "--json"))
    assert acked["state"] == "acknowledged" and acked["acknowledged_at"]
    open_kinds = {a["kind"] for a in _json(run("hq", "alerts", "--hq", net.hq, "--json"))}
    assert "fork" not in open_kinds
    everything = _json(run("hq", "alerts", "--hq", net.hq, "--all", "--json"))
    assert {a["id"]: a["state"] for a in everything}[fork_id] == "acknowledged"
    unknown = run("hq", "alerts", "--hq", net.hq, "--ack", str(fork_id), "--ack", "9999")
    assert unknown.returncode == NOT_FOUND and "no alert 9999" in unknown.stderr

    # A third report with the same sequence number: a new alert, attention again.
    third = seal(manifest, seed, 1, "yet another story")
    write_bundle(net, net.usb / "third.bundle", [third.item])
    (new_fork,) = _json(
        run("hq", "ingest", "--hq", net.hq, net.usb / "third.bundle", "--json"), ATTENTION
    )["alerts"]
    assert new_fork["kind"] == "fork" and new_fork["id"] != fork_id

    # The real chunk arrives: the photo verifies and its alert resolves by itself.
    write_bundle(net, net.usb / "chunk.bundle", [chunk_two])
    fixed = _json(run("hq", "ingest", "--hq", net.hq, net.usb / "chunk.bundle", "--json"))
    assert fixed["media"]["verified"] == 1
    states = {
        a["kind"]: a["state"] for a in _json(run("hq", "alerts", "--hq", net.hq, "--all", "--json"))
    }
    assert states["attachment incomplete"] == "resolved"


def test_the_second_report_of_a_fork_and_every_version_of_a_correction_are_shown(
    net: Net, run: Run
) -> None:
    manifest, seed = hq_manifest(net), author_seed(net)
    v1 = seal(manifest, seed, 1, "two people detained", id="11111111-1111-4111-8111-111111111111")
    v2 = seal(
        manifest,
        seed,
        2,
        "three people detained (correction)",
        previous=v1.header_hash,
        id="22222222-2222-4222-8222-222222222222",
        supersedes="11111111-1111-4111-8111-111111111111",
    )
    v3 = seal(
        manifest,
        seed,
        3,
        "three people detained, one released",
        previous=v2.header_hash,
        id="33333333-3333-4333-8333-333333333333",
        supersedes="22222222-2222-4222-8222-222222222222",
    )
    forked = seal(
        manifest, seed, 2, "nobody was detained", id="44444444-4444-4444-8444-444444444444"
    )
    write_bundle(net, net.usb / "all.bundle", [v1.item, v2.item, v3.item, forked.item])
    _json(run("hq", "ingest", "--hq", net.hq, net.usb / "all.bundle", "--json"), ATTENTION)

    one = _json(run("hq", "report", "show", "22222222", "--hq", net.hq, "--json"))
    assert one["report"]["narrative"] == "three people detained (correction)"
    assert [f["narrative"] for f in one["forks"]] == ["nobody was detained"]
    assert one["forks"][0]["fork_of"] == one["report"]["envelope_id"]
    assert (one["older_versions"], one["newer_versions"]) == (
        ["11111111-1111-4111-8111-111111111111"],
        ["33333333-3333-4333-8333-333333333333"],
    )
    assert len(one["versions"]) == 1 and "body_json" not in one["report"]
    human = run("hq", "report", "show", "22222222", "--hq", net.hq)
    assert human.returncode == 0, human.stderr
    assert "== FORK" in human.stdout and "nobody was detained" in human.stdout
    assert "--all-versions" in human.stdout

    every = _json(
        run("hq", "report", "show", "33333333", "--all-versions", "--hq", net.hq, "--json")
    )
    assert [v["report"]["narrative"] for v in every["versions"]] == [
        "two people detained",
        "three people detained (correction)",
        "three people detained, one released",
    ]
    assert [len(v["forks"]) for v in every["versions"]] == [0, 1, 0]
    # The forked report's own id leads to the report it conflicts with.
    via_fork = _json(run("hq", "report", "show", "44444444", "--hq", net.hq, "--json"))
    assert via_fork["report"]["id"] == "22222222-2222-4222-8222-222222222222"

    for ref in ("55555555", "%", ""):
        missing = run("hq", "report", "show", ref, "--hq", net.hq, "--json")
        assert missing.returncode == NOT_FOUND, ref
