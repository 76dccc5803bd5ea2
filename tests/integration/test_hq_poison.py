"""A member poisons the relay chain to HQ (issue 7 "Must show", security review C1).

Member M (an enrolled author, so every report it sends is validly signed) writes 3 honest
reports, then injects three poison reports: claimed time 2^40 (year 36812), sequence
2^63-1, and sequence 10^12 after its 3. Author A writes 7 honest reports. Relay B takes
everything (bundles from A and M). HQ then ingests what B carries, by bundle file and, in
the second test, through the hub (B syncs to hub H over WebSocket; ``hq ingest --hub``).

Each time: the 10 honest reports are ingested, each poison report raises an alert and
sits in the quarantine, nothing fails, the next ingest is clean, and the peak RSS of the
``fieldsync hq ingest`` process (``ru_maxrss`` of a child measured by a small wrapper
process of its own, so nothing else this test runs counts) stays under 256 MB. On main
before the fix the first poison crashed every ingest and the second used 2.9 GB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from fieldsync.node import Node
from tests.fieldsync.offline_support import (
    KDF,
    PASSPHRASE,
    Net,
    add_reports,
    body,
    build_network,
    enroll,
    export,
    hq_manifest,
    import_,
    seal_raw,
    write_bundle,
)
from tests.integration.sync_support import (
    COMMAND_TIMEOUT,
    clean_env,
    fieldsync_command,
    run_sync,
    start_server,
)

HONEST_A = 7
HONEST_M = 3
RSS_LIMIT_KIB = 256 * 1024
#: ru_maxrss of a wrapper's children: the one ``fieldsync hq ingest`` it ran.
_MEASURE = (
    "import json, resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, capture_output=True,"
    " text=True)\n"
    "print(json.dumps({'rc': done.returncode, 'stdout': done.stdout, 'stderr': done.stderr,"
    " 'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
)


def _poisoned_relay(root: Path) -> tuple[Net, Path]:
    """The network with relay B holding A's and M's honest reports and M's poison."""
    net = build_network(root)
    mallory = Node(root / "node-m")
    try:
        request = mallory.init("mallory", PASSPHRASE, KDF)
        mallory.join(enroll(net, request))
        for n in range(HONEST_M):
            mallory.add_report(
                {
                    "narrative": f"mallory honest {n}",
                    "categories": ["threats"],
                    "occurred": {"start": "2025", "precision": "year", "approximate": True},
                },
                PASSPHRASE,
            )
        mallory.export_bundle(net.usb / "m.bundle")
        seed = mallory.unlock_author(PASSPHRASE)
    finally:
        mallory.close()
    manifest = hq_manifest(net)
    poison = [
        seal_raw(manifest, seed, HONEST_M + 1, 2**40, body("claims year 36812")),
        seal_raw(manifest, seed, 2**63 - 1, 1_740_000_000, body("the last sequence number")),
        seal_raw(manifest, seed, 10**12, 1_740_000_000, body("ten to the twelve after 3")),
    ]
    write_bundle(net, net.usb / "poison.bundle", poison)
    add_reports(net.a, [f"alice honest {n}" for n in range(HONEST_A)])
    export(net.a, net.usb / "a.bundle")
    for name in ("m.bundle", "poison.bundle", "a.bundle"):
        import_(net.b, net.usb / name)
    return net, root / "node-h"


def _measured_ingest(net: Net, *args: str | Path) -> tuple[dict[str, Any], int]:
    """``fieldsync hq ingest ... --json`` in a wrapper; its JSON summary and peak RSS (KiB)."""
    command = [*fieldsync_command(), "hq", "ingest", "--hq", str(net.hq), *map(str, args)]
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command, "--json"],
        env=clean_env() | {"FIELDSYNC_PASSPHRASE": PASSPHRASE},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=True,
    )
    measured = json.loads(done.stdout)
    summary = json.loads(measured["stdout"])
    # 8: ingested, and new alerts appeared (the poison): the operator must look.
    assert measured["rc"] == (8 if summary["attention"] else 0), measured["stderr"]
    assert "Traceback" not in measured["stderr"]
    return summary, int(measured["maxrss_kib"])


def _check_poison_held(first: dict[str, Any], rss_kib: int) -> None:
    assert (first["new"], first["failed"], first["quarantine_full"]) == (HONEST_A + HONEST_M, 0, 0)
    assert (first["quarantined"], first["junk"], first["forks"]) == (3, 0, 0)
    kinds = sorted(alert["kind"] for alert in first["alerts"])
    assert kinds == ["quarantined", "sequence jump", "sequence jump"]
    assert {a["sequence"] for a in first["alerts"]} == {None, 2**63 - 1, 10**12}
    assert {a["author_name"] for a in first["alerts"]} == {"mallory"}  # who sent the poison
    assert any("report header.t = 1099511627776" in a["detail"] for a in first["alerts"])
    assert first["gaps"] == {}  # the jumps did not enter the chain
    assert rss_kib < RSS_LIMIT_KIB, f"hq ingest peaked at {rss_kib} KiB"


def _analyst_rows(net: Net) -> list[str]:
    done = subprocess.run(
        [*fieldsync_command(), "hq", "export", "--hq", str(net.hq), "--format", "jsonl"],
        env=clean_env() | {"FIELDSYNC_PASSPHRASE": PASSPHRASE},  # hq.db is encrypted under it
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=True,
    )
    return sorted(json.loads(line)["narrative"] for line in done.stdout.splitlines())


def _honest() -> list[str]:
    return sorted(
        [f"alice honest {n}" for n in range(HONEST_A)]
        + [f"mallory honest {n}" for n in range(HONEST_M)]
    )


def test_poison_in_a_bundle_is_held_and_the_honest_reports_go_in(tmp_path: Path) -> None:
    net, _ = _poisoned_relay(tmp_path / "net")
    export(net.b, net.usb / "b.bundle")
    first, rss_kib = _measured_ingest(net, net.usb / "b.bundle")
    print(f"\nbundle: hq ingest peak RSS {rss_kib / 1024:.1f} MiB; summary {first}")
    _check_poison_held(first, rss_kib)
    assert _analyst_rows(net) == _honest()
    second, _ = _measured_ingest(net, net.usb / "b.bundle")
    assert (second["new"], second["quarantined"], second["alerts_total"]) == (0, 0, 0)
    assert second["duplicate"] == HONEST_A + HONEST_M + 3


def test_poison_through_the_hub_is_held_and_the_honest_reports_go_in(tmp_path: Path) -> None:
    net, hub_home = _poisoned_relay(tmp_path / "net")
    hub = Node(hub_home)
    try:
        hub.join(enroll(net, hub.init(None, None, KDF), "hub"))
    finally:
        hub.close()
    server = start_server(hub_home, ws=True)
    try:
        pushed = run_sync(net.b, server.ws_url)
        assert pushed.complete, (pushed, server.log_text())
        first, rss_kib = _measured_ingest(net, "--hub", server.ws_url)
        print(f"\nhub: hq ingest peak RSS {rss_kib / 1024:.1f} MiB; summary {first}")
        _check_poison_held(first, rss_kib)
        assert first["hub"]["pull_complete"] is True
        assert first["hub"]["receipts_new"] == 2  # one accepted, one held
        assert _analyst_rows(net) == _honest()
        second, _ = _measured_ingest(net, "--hub", server.ws_url)
        assert (second["new"], second["quarantined"], second["alerts_total"]) == (0, 0, 0)
        assert second["envelopes"] == 0  # the hub purged all 13 on HQ's receipts
    finally:
        assert server.stop() == 0, server.log_text()
