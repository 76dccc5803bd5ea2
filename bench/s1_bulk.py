"""S1 bulk initial sync and S7 wire bytes per item (perf_anchors §5).

A (N items) serves from a second process (``fieldsync run``); B, empty, syncs as initiator
in this process. Only the session is timed (``Runtime.sync_with``), not process start-up.

Sender and receiver share this machine's cores, while in the field each is its own device.
The CPU time of both is measured, and S1 also shows the *CPU ceiling*: the rate at which
the cores the bench may use would be fully busy with that much CPU per item (both
processes together, each thread of either on any core). No scheduling gets a session above
it; the goal is judged on the measured ratio.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from bench.env import cores_phrase
from bench.nodes import sync_once
from bench.workload import ItemPool, ServerProcess, add_items
from fieldsync.synthetic import SyntheticNetwork

S1_TARGET = 0.5
S1_STRETCH = 0.75
S7_TARGET = 48.0


def run_s1(
    net: SyntheticNetwork, pool: ItemPool, n: int, reps: int, workdir: Path
) -> dict[str, Any]:
    """Fill A with ``n`` items and sync them to ``reps`` fresh empty nodes in turn (the
    median session is S1); then sync two empty nodes (the fixed part of S7)."""
    items = pool.items[:n]
    a = net.add_node("s1-A")
    empty_a = net.add_node("s1-emptyA")
    empty_b = net.add_node("s1-emptyB")
    add_items(a, pool.manifest, items)
    log = workdir / "servers.log"
    sessions = []
    with ServerProcess(a, log) as server:
        for rep in range(reps):
            b = net.add_node(f"s1-B{rep}")
            synced = sync_once(b, server.address, server.pid)
            if synced.outcome.items_new != n:
                raise RuntimeError(f"S1 moved {synced.outcome.items_new} new items, expected {n}")
            sessions.append(synced.record())
    with ServerProcess(empty_a, log) as server:
        empty = sync_once(empty_b, server.address, server.pid)
    median = statistics.median_low([s["seconds"] for s in sessions])
    bulk = next(s for s in sessions if s["seconds"] == median)
    return {
        "n": n,
        "items": pool.describe() if n == len(pool.items) else f"first {n} of: {pool.describe()}",
        "mean_item_bytes": round(sum(map(len, items)) / n, 2),
        "bulk": bulk,
        "reps_seconds": [s["seconds"] for s in sessions],
        "empty_sync": empty.record(),
    }


def s1_result(raw: dict[str, Any], bound: dict[str, Any], serial: dict[str, Any]) -> dict[str, Any]:
    bulk = raw["bulk"]
    n = raw["n"]
    rate = n / bulk["seconds"]
    ratio = rate / bound["items_per_s"]
    cores = len(os.sched_getaffinity(0))
    cpu_receiver, cpu_sender = bulk["cpu_initiator_s"], bulk["cpu_server_s"]
    ceiling = n * cores / max(cpu_receiver + cpu_sender, 1e-6)
    busy = (cpu_receiver + cpu_sender) / (bulk["seconds"] * cores)
    store_thread, helper = bulk["cpu_store_thread_s"], bulk["cpu_helper_thread_s"]
    return {
        "metric": "R_tput = achieved items/s / slowest calibrated primitive",
        "value": round(ratio, 3),
        "target": f">= {S1_TARGET} (stretch {S1_STRETCH})",
        "pass": ratio >= S1_TARGET,
        "stretch_pass": ratio >= S1_STRETCH,
        "n": n,
        "reps": len(raw["reps_seconds"]),
        "items_per_s": round(rate, 1),
        "reps_items_per_s": [round(n / s, 1) for s in raw["reps_seconds"]],
        "seconds": bulk["seconds"],
        "bound_primitive": bound["primitive"],
        "bound_items_per_s": bound["items_per_s"],
        "r_serial_receiver": round(rate / serial["items_per_s"], 3),
        "round_trips": bulk["round_trips"],
        "cpu_initiator_s": cpu_receiver,
        "items_per_cpu_s_initiator": round(n / max(cpu_receiver, 1e-6), 1),
        "cpu_server_s": cpu_sender,
        "cpu_store_thread_s": store_thread,
        "cpu_helper_thread_s": helper,
        "cores": cores,
        "cpu_ceiling_items_per_s": round(ceiling, 1),
        "cpu_ceiling_ratio": round(ceiling / bound["items_per_s"], 3),
        "notes": [
            f"CPU per item: receiver B {1e6 * cpu_receiver / n:.1f} us, sender A"
            f" {1e6 * cpu_sender / n:.1f} us; with {cores_phrase(cores)} fully busy that"
            f" allows at most {ceiling / 1000:,.1f}k/s, {ceiling / bound['items_per_s']:.2f} of"
            f" the bound (busy {100 * busy:.0f} % of the session)",
            f"of the receiver's: its store thread {1e6 * store_thread / n:.1f} us, the helper"
            f" parsing its next slices {1e6 * helper / n:.1f} us (while a slice commits), its"
            f" event loop and the rest {1e6 * (cpu_receiver - store_thread - helper) / n:.1f} us",
        ],
        "items": raw["items"],
        "topology": "server A in a subprocess (fieldsync run), initiator B in the bench"
        " process, loopback TCP",
    }


def s7_result(raw: dict[str, Any]) -> dict[str, Any]:
    """(total wire bytes - fixed handshake/reconciliation bytes) / N - mean item size.

    The fixed part is measured: the whole wire traffic of a first-contact sync between two
    empty nodes (handshake, HELLOs, one RECONCILE each way, ENDs): the same exchange S1
    makes around its DATA stream.
    """
    n = raw["n"]
    bulk = raw["bulk"]
    fixed = raw["empty_sync"]["wire_bytes"]
    per_item = (bulk["wire_bytes"] - fixed) / n
    overhead = per_item - raw["mean_item_bytes"]
    session_overhead = (bulk["overhead_bytes"] - raw["empty_sync"]["overhead_bytes"]) / n
    return {
        "metric": "wire bytes per item - mean stored item size (B)",
        "value": round(overhead, 2),
        "target": f"<= {S7_TARGET} B",
        "pass": overhead <= S7_TARGET,
        "n": n,
        "wire_bytes_total": bulk["wire_bytes"],
        "fixed_wire_bytes": fixed,
        "wire_bytes_per_item": round(per_item, 2),
        "mean_item_bytes": raw["mean_item_bytes"],
        "session_overhead_per_item": round(session_overhead, 2),
        "framing_overhead_per_item": round(overhead - session_overhead, 2),
    }
