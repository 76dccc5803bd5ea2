"""CLI start-up (issue 13 item 6): wall time of short commands, beside a bare interpreter.

Each command is a fresh ``python -m fieldsync_cli`` process, the median of ``reps`` runs
after one warm-up; ``python -c pass`` (same interpreter, same flags) is measured the same
way, so the ratio shows what fieldsync adds on top of Python itself.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.workload import ServerProcess, fieldsync_command
from fieldsync.synthetic import SyntheticNetwork

STARTUP_TARGET_MS = 150.0


def _median_ms(argv: list[str], reps: int) -> float:
    times = []
    for k in range(reps + 1):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, timeout=60)
        if k:  # the first run warms the page cache
            times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 1)


def run_startup(net: SyntheticNetwork, workdir: Path, reps: int) -> dict[str, Any]:
    home = net.add_node("startup", author=True)
    cli = [*fieldsync_command(), "--home", str(home)]
    commands = {
        "--help": [*fieldsync_command(), "--help"],
        "status": [*cli, "status"],
        # `report list` asks for the author's passphrase now (the outbox is sealed to the
        # author's key): its time is Argon2id's, by design; `author list` starts as it did.
        "author list": [*cli, "author", "list"],
    }
    bare = _median_ms([sys.executable, "-c", "pass"], reps)
    times = {name: _median_ms(argv, reps) for name, argv in commands.items()}
    with ServerProcess(home, workdir / "servers.log"):
        times["status (daemon running)"] = _median_ms(commands["status"], reps)
    return {"python_ms": bare, "commands_ms": times, "reps": reps}


def startup_result(raw: dict[str, Any]) -> dict[str, Any]:
    times = raw["commands_ms"]
    slowest = max(times, key=lambda name: times[name])
    worst = times[slowest]
    return {
        "metric": "median wall ms of fresh CLI processes (the slowest command)",
        "value": worst,
        "measured": f"{worst:.0f} ms ({slowest}), {worst / raw['python_ms']:.1f}x python",
        "target": f"<= {STARTUP_TARGET_MS:.0f} ms each",
        "pass": worst <= STARTUP_TARGET_MS,
        "x_python": {name: round(ms / raw["python_ms"], 2) for name, ms in times.items()},
        **raw,
    }
