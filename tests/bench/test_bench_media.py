"""The media benchmark runs end to end and reports its figures (timings never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_media_bench_reports_rate_ratio_and_memory(tmp_path: Path) -> None:
    out = tmp_path / "media.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.media", "--mb", "3", "--json", str(out),
         "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["complete"] is True
    assert result["chunks"] == 13  # 3 MiB in 262,080-byte pieces
    assert set(result["primitives_mb_s"]) == {
        "xchacha20poly1305",
        "blake2b",
        "sqlite_durable_insert",
    }
    assert result["slowest_primitive"] in result["primitives_mb_s"]
    assert result["ratio_to_slowest"] > 0
    for name in ("add_without_media", "add", "receiver"):
        rss = result["rss_kib"][name]
        assert 0 < rss["before"] <= rss["peak"], name
    assert result["rss_kib"]["sender"] > 0
