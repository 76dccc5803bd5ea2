"""The benchmark harness runs end to end and reports every scenario (timings not asserted)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bench import peers

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = (
    "S1",
    "S7",
    "S10",
    "RSS.relay",
    "S11",
    "S2.real",
    "S3.real",
    "S4.real",
    "S2.repeat",
    "S2.mem",
    "S3.mem",
    "S4.mem",
    "S12",
    "startup",
    "RSS.web",
    "render.web",
)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_smoke_run_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # Node homes hold the daemon's control socket: keep their paths short (AF_UNIX limit).
    scratch = Path(tempfile.mkdtemp(prefix="fsb-"))
    try:
        command = [sys.executable, "-m", "bench", "--smoke", "--json", str(out)]
        proc = subprocess.run(
            [*command, "--workdir", str(scratch)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        leftovers = list(scratch.glob("fieldsync-bench-*"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "smoke"
    scenarios = result["scenarios"]
    assert tuple(scenarios) == SCENARIOS
    for name, scenario in scenarios.items():
        assert _number(scenario["value"]), name
        assert isinstance(scenario["pass"], bool), name
        assert isinstance(scenario["target"], str) and scenario["target"], name
    for name in ("S2.real", "S3.real", "S4.real", "S2.mem", "S3.mem", "S4.mem"):
        assert _number(scenarios[name]["round_trips"]), name
        assert _number(scenarios[name]["overhead_bytes"]), name
    # A repeat contact with nothing new: every byte on the connection, handshake included,
    # under 1 KB (issue 13 item 5; sizes are fixed by the protocol, not timings).
    repeat = scenarios["S2.repeat"]
    assert repeat["items_new"] == 0 and repeat["mode"] == "delta"
    assert repeat["wire_bytes"] == repeat["wire_bytes_sent"] + repeat["wire_bytes_received"]
    assert repeat["wire_bytes"] < 1024 and repeat["pass"] is True
    assert _number(scenarios["S1"]["items_per_s"]) and _number(scenarios["S1"]["bound_items_per_s"])
    calibration = result["calibration"]
    assert calibration["bound"]["primitive"] in calibration["rates"]
    # The bound is an independent primitive: never fieldsync's own store or item check,
    # which are reported beside it (issue 13).
    assert calibration["bound"]["primitive"] not in ("insert", "check_item")
    assert "sqlite_insert" in calibration["rates"] and "insert" in calibration["rates"]
    assert "sqlcipher_insert" in calibration["rates"]  # the encrypted store's primitive
    assert scenarios["S1"]["bound_primitive"] == calibration["bound"]["primitive"]
    # The CPU ceiling: both processes' CPU per item spread over the cores the bench may use.
    s1 = scenarios["S1"]
    assert s1["cores"] == len(result["environment"]["affinity"])
    both = s1["cpu_initiator_s"] + s1["cpu_server_s"]
    assert s1["cpu_ceiling_items_per_s"] == pytest.approx(s1["n"] * s1["cores"] / both, rel=1e-3)
    assert s1["cpu_ceiling_ratio"] == pytest.approx(
        s1["cpu_ceiling_items_per_s"] / s1["bound_items_per_s"], abs=1e-3
    )
    assert any("allows at most" in note for note in s1["notes"])
    # The receiver's CPU by thread: the store thread's and its helper's are parts of it.
    threads = s1["cpu_store_thread_s"] + s1["cpu_helper_thread_s"]
    assert s1["cpu_store_thread_s"] > 0 and s1["cpu_helper_thread_s"] >= 0
    assert threads <= s1["cpu_initiator_s"] + 0.02  # (rounding, and the process's tick)
    assert any("its store thread" in note for note in s1["notes"])
    assert scenarios["S10"]["n"] == result["sizes"]["s10_items"]
    assert scenarios["S10"]["c_sessions"] >= 1
    # Each node's CPU is measured (the one-core-per-node estimate is built from them).
    assert set(scenarios["S10"]["cpu_s"]) == {"A", "B", "C"}
    assert all(seconds > 0 for seconds in scenarios["S10"]["cpu_s"].values())
    assert scenarios["S10"]["of_hop_core_each_estimate"] > 0
    # "One hop" is the same N over one hop, measured in the same run (not S1's smaller N).
    assert scenarios["S10"]["hop_items_per_s"] > 0
    assert set(scenarios["S10"]["hop"]["cpu_s"]) == {"A", "D"}
    assert scenarios["S10"]["machine_busy"] > 0
    for probe in ("commit_idle", "commit_under_sync", "status_idle", "status_under_sync"):
        assert scenarios["S11"][probe]["n"] >= 1, probe
    assert set(scenarios["startup"]["commands_ms"]) == {
        "--help",
        "status",
        "status (daemon running)",
        "report list",
        "author list",
    }
    startup = scenarios["startup"]
    assert set(startup["commands_cpu_ms"]) == set(startup["commands_ms"])
    assert startup["kdf_ms"] > 0 and "compiled first" in startup["bytecode"]
    assert scenarios["RSS.relay"]["idle_mb"] > 0 and scenarios["RSS.relay"]["after_mb"] > 0
    web_memory = scenarios["RSS.web"]
    assert web_memory["off_mb"] > 0
    for key in ("added_idle_mb", "added_one_language_mb", "added_every_language_mb"):
        assert _number(web_memory[key]), key
    assert _number(web_memory["author_with_app_idle_mb"])
    assert [label.split()[0] for label in web_memory["breakdown_mb"]] == [
        "h11",
        "python-multipart",
        "jinja2",
        "babel",
        "fieldsync.web",
        "templates",
        "languages",
        "every",
    ]
    assert all(_number(mb) for mb in web_memory["breakdown_mb"].values())
    render = scenarios["render.web"]
    assert render["n"] == result["sizes"]["web_items"]
    assert render["idle"]["n"] >= 1 and render["under_sync"]["n"] >= 1
    assert _number(render["ratio_to_idle"])
    for name, rate in calibration["rates"].items():
        assert _number(rate) and rate > 0, name
    # the printed table names every scenario with its goal and verdict
    for name in SCENARIOS:
        row = next(line for line in proc.stdout.splitlines() if line.startswith(f"{name} "))
        assert row.endswith(("PASS", "FAIL", "PASS (stretch)")), row
        assert scenarios[name]["target"] in row, row
    # the harness removes its scratch directory
    assert not leftovers


def test_cores_pins_the_harness_and_its_children() -> None:
    """``--cores 1``: the harness and every process it starts run on one core."""
    script = (
        "import subprocess, sys\n"
        "from bench.__main__ import pin_cores\n"
        "print(pin_cores(1))\n"
        "child = 'import os; print(sorted(os.sched_getaffinity(0)))'\n"
        "print(subprocess.run([sys.executable, '-c', child], capture_output=True, text=True,"
        " check=True).stdout.strip())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    pinned, child = proc.stdout.split("\n")[:2]
    assert pinned == child and len(json.loads(child)) == 1


def test_cores_out_of_range_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--cores", "0"], cwd=ROOT, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--cores must be between 1 and" in proc.stderr


def test_peers_without_syncthing_is_one_skipped_line(tmp_path: Path) -> None:
    """No Syncthing on PATH: one clear line, nothing run (the run never fails for it)."""
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from bench import peers\n"
        "out = peers.run([], 10, 10, 1, {}, Path(sys.argv[1]), print)\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True,
        text=True, timeout=60, check=True, env={"PATH": str(tmp_path)},
    )  # fmt: skip
    out = json.loads(proc.stdout)
    assert out["skipped"] is True and len(out["lines"]) == 1
    assert out["lines"][0].startswith("peers: skipped: syncthing not installed")
    assert list(tmp_path.iterdir()) == []


def test_peers_compares_what_each_side_spends_beyond_the_same_new_items() -> None:
    """The comparison with Syncthing, without Syncthing: the same new items count once for
    each side, and what is left is each side's own overhead."""
    new = [b"x" * 1000, b"y" * 1043]
    got = peers.compare(
        "syncthing v1",
        {"n": 20_000, "seconds": 100.0},
        {"base": 100_000, "new": 2, "wire_bytes": 2_043 + 9_000},
        new,
        {"bulk_items_per_s": 10_000.0, "repeat_wire_bytes": 2_043 + 1_000},
    )
    assert got["bulk_speedup"] == 50.0
    assert got["repeat_payload_bytes"] == 2_043
    assert got["repeat_beyond_payload_bytes"] == {"syncthing": 9_000, "fieldsync": 1_000}
    assert got["repeat_beyond_ratio"] == 9.0
    assert "repeat contact, 2 new of 100000" in got["lines"][2]
    assert got["lines"][3].endswith("Syncthing 9,000 B, fieldsync 1,000 B: fieldsync 9.0x fewer")


def _run_only(group: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Any]:
    """``python -m bench --smoke --only group``: the process and its JSON result."""
    out = tmp_path / "bench.json"
    # Node homes hold the daemon's control socket: keep their paths short (AF_UNIX limit).
    scratch = Path(tempfile.mkdtemp(prefix="fsb-"))
    try:
        command = [sys.executable, "-m", "bench", "--smoke", "--only", group]
        proc = subprocess.run(
            [*command, "--json", str(out), "--workdir", str(scratch)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc, json.loads(out.read_text())


def test_only_runs_one_group_and_says_how_start_up_was_measured(tmp_path: Path) -> None:
    proc, result = _run_only("startup", tmp_path)
    assert result["only"] == "startup" and list(result["scenarios"]) == ["startup"]
    startup = result["scenarios"]["startup"]
    # report list is judged without its Argon2id derivation, which is timed on its own
    assert startup["judged_ms"]["report list"] == round(
        startup["commands_ms"]["report list"] - startup["kdf_ms"], 1
    )
    assert "bytecode compiled first (compileall)" in proc.stdout
    # the table goes into the README: it names the packages by repository path only
    assert "protocol/fieldsync_protocol" in proc.stdout
    assert str(Path(__file__).resolve().parents[2]) not in proc.stdout
    assert "Argon2id" in proc.stdout and "ms CPU" in proc.stdout


def test_only_s11_measures_commit_and_status_latencies_alone(tmp_path: Path) -> None:
    proc, result = _run_only("s11", tmp_path)
    assert result["only"] == "s11" and list(result["scenarios"]) == ["S11"]
    s11 = result["scenarios"]["S11"]
    for series in ("commit_idle", "commit_under_sync", "status_idle", "status_under_sync"):
        assert s11[series]["n"] > 0 and _number(s11[series]["p99_ms"])
    assert len(result["run"]["loadavg_start"]) == 3 and "load" in proc.stdout
    # The idle probes are printed beside the goal: what the machine gives with no sync.
    assert f"commit p50 {s11['commit_idle']['p50_ms']:.1f} / p99" in proc.stdout


def test_only_refuses_an_unknown_group() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "everything"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid choice: 'everything'" in proc.stderr
