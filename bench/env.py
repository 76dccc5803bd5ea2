"""The run's environment: machine fingerprint, CPU steal, memory figures (perf_anchors §6.1)."""

from __future__ import annotations

import os
import platform
import resource
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _fs_type(path: Path) -> str:
    try:
        out = subprocess.run(
            ["findmnt", "-n", "-o", "FSTYPE", "-T", str(path)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def cores_phrase(cores: int) -> str:
    """``1 core``, ``2 cores``: the cores a scenario ran on, for its notes."""
    return f"{cores} core" if cores == 1 else f"{cores} cores"


def fingerprint(workdir: Path) -> dict[str, Any]:
    """CPU, core count and affinity, versions, and the filesystem the stores live on."""
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "pynacl": _version("pynacl"),
        "msgpack": _version("msgpack"),
        "sqlite": sqlite3.sqlite_version,
        "fieldsync": _version("fieldsync"),
        "workdir": str(workdir),
        "filesystem": _fs_type(workdir),
    }


@dataclass(frozen=True)
class CpuTimes:
    """Aggregate jiffies from the first line of /proc/stat."""

    total: int
    steal: int
    iowait: int

    @classmethod
    def now(cls) -> CpuTimes:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except (OSError, IndexError):
            return cls(0, 0, 0)
        values = [int(x) for x in fields]
        # user nice system idle iowait irq softirq steal (guest time is already in user)
        total = sum(values[:8])
        return cls(total, values[7] if len(values) > 7 else 0, values[4] if len(values) > 4 else 0)

    def since(self, start: CpuTimes) -> dict[str, float]:
        total = max(1, self.total - start.total)
        return {
            "steal_pct": round(100 * (self.steal - start.steal) / total, 2),
            "iowait_pct": round(100 * (self.iowait - start.iowait) / total, 2),
        }


def status_kib(field: str, pid: int | str = "self") -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM...) in KiB; 0 if unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def max_rss_kib() -> int:
    """Peak resident set of this process (ru_maxrss is KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
