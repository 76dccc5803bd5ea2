"""The benchmark harness runs end to end and reports every scenario (timings not asserted)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("S1", "S7", "S2.real", "S3.real", "S4.real", "S2.mem", "S3.mem", "S4.mem", "S12")


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
    assert _number(scenarios["S1"]["items_per_s"]) and _number(scenarios["S1"]["bound_items_per_s"])
    calibration = result["calibration"]
    assert calibration["bound"]["primitive"] in calibration["rates"]
    for name, rate in calibration["rates"].items():
        assert _number(rate) and rate > 0, name
    # the printed table names every scenario too
    for name in SCENARIOS:
        assert f"\n{name} " in proc.stdout, name
    # the harness removes its scratch directory
    assert not leftovers
