"""CLI start-up (issue 13 item 6): wall time of short commands, beside a bare interpreter.

Each command is a fresh ``python -m fieldsync_cli`` process, the median of ``reps`` runs
after one warm-up; ``python -c pass`` (same interpreter, same flags) is measured the same
way, so the ratio shows what fieldsync adds on top of Python itself. The CPU time of each
command (user + system, from the kernel) is reported beside its wall time: on a shared
machine it moves far less than the wall time does.

Bytecode: fieldsync's own packages are compiled first (``compileall``), as ``pip install``
does for an installed copy. Without it, an interpreter run with ``PYTHONDONTWRITEBYTECODE``
(or from a read-only checkout) compiles every module from source on every start, which is
not what a user's node does.

``report list`` asks for the author's passphrase (the outbox is sealed to the author's
key): it gets it from ``FIELDSYNC_PASSPHRASE``, and its time includes one Argon2id
derivation at the node's KDF profile, by design. That derivation is timed on its own too,
and the start-up figure judged for ``report list`` is the command minus it.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nacl.pwhash

from bench.workload import ServerProcess, fieldsync_command
from fieldsync import keystore, synthetic
from fieldsync.synthetic import SyntheticNetwork

STARTUP_TARGET_MS = 150.0
#: fieldsync's own import roots, compiled before anything is timed.
PACKAGES = ("fieldsync", "fieldsync_cli", "fieldsync_protocol")
REPORT_LIST = "report list"
REPOSITORY = Path(__file__).resolve().parent.parent


def _shown(folder: str) -> str:
    """``folder`` relative to the repository when inside it: a table pasted into the README
    must not carry the paths of the machine it ran on."""
    path = Path(folder).resolve()
    return str(path.relative_to(REPOSITORY)) if path.is_relative_to(REPOSITORY) else folder


def compile_bytecode() -> list[str]:
    """Compile fieldsync's packages to bytecode where they are installed; their folders
    (repository-relative where they are in it)."""
    folders = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"cannot find the package {name}")
        for folder in spec.submodule_search_locations:
            if not compileall.compile_dir(folder, quiet=1):
                raise RuntimeError(f"compileall failed in {folder}")
            folders.append(_shown(folder))
    return folders


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _median_ms(
    argv: list[str], reps: int, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``argv`` over ``reps`` runs after a warm-up."""
    walls, cpus = [], []
    for k in range(reps + 1):
        cpu0 = _children_cpu()
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, timeout=60, env=env)
        if k:  # the first run warms the page cache
            walls.append(time.perf_counter() - start)
            cpus.append(_children_cpu() - cpu0)
    return round(1000 * statistics.median(walls), 1), round(1000 * statistics.median(cpus), 1)


def kdf_ms(profile: str, reps: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of one Argon2id derivation at ``profile`` (in this
    process: the same work ``report list`` does once)."""
    ops, mem = keystore.KDF_PROFILES[profile]
    walls, cpus = [], []
    for _ in range(reps):
        cpu0, start = time.process_time(), time.perf_counter()
        nacl.pwhash.argon2id.kdf(32, b"passphrase", b"s" * 16, opslimit=ops, memlimit=mem)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu0)
    return round(1000 * statistics.median(walls), 1), round(1000 * statistics.median(cpus), 1)


def run_startup(net: SyntheticNetwork, workdir: Path, reps: int) -> dict[str, Any]:
    compiled = compile_bytecode()
    home = net.add_node("startup", author=True)
    cli = [*fieldsync_command(), "--home", str(home)]
    commands = {
        "--help": [*fieldsync_command(), "--help"],
        "status": [*cli, "status"],
        REPORT_LIST: [*cli, "report", "list"],
        "author list": [*cli, "author", "list"],
    }
    env = {**os.environ, "FIELDSYNC_PASSPHRASE": synthetic.PASSPHRASE}
    bare, bare_cpu = _median_ms([sys.executable, "-c", "pass"], reps)
    measured = {name: _median_ms(argv, reps, env) for name, argv in commands.items()}
    with ServerProcess(home, workdir / "servers.log"):
        time.sleep(0.5)  # let the daemon finish starting: it shares the cores
        measured["status (daemon running)"] = _median_ms(commands["status"], reps, env)
    kdf, kdf_cpu = kdf_ms(synthetic.KDF_PROFILE, max(reps, 3))
    return {
        "python_ms": bare,
        "python_cpu_ms": bare_cpu,
        "commands_ms": {name: wall for name, (wall, _cpu) in measured.items()},
        "commands_cpu_ms": {name: cpu for name, (_wall, cpu) in measured.items()},
        "kdf_ms": kdf,
        "kdf_cpu_ms": kdf_cpu,
        "kdf_profile": synthetic.KDF_PROFILE,
        "bytecode": f"compiled first (compileall) in {', '.join(compiled)}",
        "reps": reps,
    }


def startup_result(raw: dict[str, Any]) -> dict[str, Any]:
    times = dict(raw["commands_ms"])
    # report list's own start-up: without the passphrase's Argon2id derivation (by design).
    judged = {**times, REPORT_LIST: round(times[REPORT_LIST] - raw["kdf_ms"], 1)}
    slowest = max(judged, key=lambda name: judged[name])
    worst = judged[slowest]
    cpu = raw["commands_cpu_ms"]
    notes = [
        f"{name}: {times[name]:.0f} ms wall, {cpu[name]:.0f} ms CPU"
        + (
            f" (of which Argon2id, {raw['kdf_profile']} profile, {raw['kdf_ms']:.0f} ms wall"
            f" {raw['kdf_cpu_ms']:.0f} ms CPU: {judged[name]:.0f} ms wall,"
            f" {cpu[name] - raw['kdf_cpu_ms']:.0f} ms CPU without it)"
            if name == REPORT_LIST
            else ""
        )
        for name in times
    ]
    notes.append(
        f"python -c pass: {raw['python_ms']:.0f} ms wall, {raw['python_cpu_ms']:.0f} ms CPU;"
        f" bytecode {raw['bytecode']}"
    )
    return {
        "metric": "median wall ms of fresh CLI processes, bytecode compiled (the slowest"
        " command; report list without its Argon2id derivation)",
        "value": worst,
        "measured": f"{worst:.0f} ms ({slowest}), {worst / raw['python_ms']:.1f}x python",
        "target": f"<= {STARTUP_TARGET_MS:.0f} ms each",
        "pass": worst <= STARTUP_TARGET_MS,
        "x_python": {name: round(ms / raw["python_ms"], 2) for name, ms in judged.items()},
        "judged_ms": judged,
        "notes": notes,
        **raw,
    }
