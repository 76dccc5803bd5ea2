"""S10 relay chain A -> B -> C, and the relay's memory (perf_anchors §5, issue 13 item 7).

B is a relay-only node (no author key, no web app) running as a daemon in its own process
(``fieldsync run``); it starts empty. A (N items) pushes to B as initiator from this
process while C, empty, pulls from B as initiator from a third process, session after
session, until it holds all N: B verifies, stores and forwards while it receives, as a
relay in the field does. The time runs from A's connect until C holds the N-th item.

"One hop" is the same N items over one hop, measured first in the same run: A pushes them
into D, a relay daemon like B, with nobody pulling. A store's per-item cost grows with its
size (its random-key indexes span more pages), so a hop of S1's smaller N would be the
wrong yardstick; the ratio to S1's rate is still shown, as a figure.

B's resident memory is read from /proc before the first session (idle) and after C holds
everything (after N items received and forwarded).

The three nodes share this machine's cores, while in the field each is its own device: a
chain does about twice a hop's work per item (B receives and sends), so on a 2-core machine
whose one hop already keeps both cores busy the measured ratio cannot reach much above 0.5
whatever the relay does. The CPU time of each node is therefore measured too (A's session,
B's daemon, C's process), and the ratio is also shown as it would be with one core per
node: the one hop's busiest node's CPU per item over the chain's busiest node's. That
figure is an estimate from measured CPU times (it assumes each node's work is spread over
the session); the goal is judged on the measured ratio.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.env import cores_phrase, status_kib
from bench.nodes import own_cpu_seconds, process_cpu_seconds, sync_once
from bench.workload import ItemPool, ServerProcess, add_items
from fieldsync.runtime import Runtime
from fieldsync.synthetic import SyntheticNetwork

S10_TARGET = 0.8  # of the one-hop rate (issue 13; perf_anchors stretch)
RELAY_IDLE_MB = 48.0
RELAY_AFTER_MB = 60.0
#: Pause after a pull that brought nothing new, so C does not spin while B is receiving.
IDLE_PAUSE_S = 0.02


async def _drain(home: Path, address: str, n: int, conn: Connection) -> None:
    runtime = await Runtime.open(home)
    try:
        conn.send("ready")
        conn.recv()  # go
        cpu_at_go = own_cpu_seconds()
        # A pull that finds nothing new is a short session; the loop ends when C holds n.
        sessions = 0
        got = 0
        while got < n:
            outcome = await runtime.sync_with(address)
            sessions += 1
            if not outcome.complete:
                raise RuntimeError(f"C's pull from B failed: {outcome.error}")
            got += outcome.items_new
            if not outcome.items_new:
                await asyncio.sleep(IDLE_PAUSE_S)
        conn.send((time.monotonic(), sessions, got, own_cpu_seconds() - cpu_at_go))
    finally:
        await runtime.close()


def _drain_process(home: Path, address: str, n: int, conn: Connection) -> None:
    try:
        asyncio.run(_drain(home, address, n, conn))
    except Exception as exc:
        conn.send(f"error: {exc!r}")


def run_s10(net: SyntheticNetwork, pool: ItemPool, n: int, workdir: Path) -> dict[str, Any]:
    a = net.add_node("s10-A")
    b = net.add_node("s10-B")
    c = net.add_node("s10-C")
    d = net.add_node("s10-D")
    add_items(a, pool.manifest, pool.items[:n])
    with ServerProcess(d, workdir / "servers.log") as lone_relay:
        hop = sync_once(a, lone_relay.address, lone_relay.pid)
    if hop.outcome.stats.items_sent != n:
        raise RuntimeError(f"S10's one hop moved {hop.outcome.stats.items_sent}, not {n}")
    ctx = multiprocessing.get_context("spawn")
    with ServerProcess(b, workdir / "servers.log") as relay:
        time.sleep(0.5)  # let the daemon settle before reading its idle memory
        rss_idle = status_kib("VmRSS", relay.pid)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_drain_process, args=(c, relay.address, n, child), daemon=True)
        proc.start()
        try:
            if not parent.poll(60) or parent.recv() != "ready":
                raise RuntimeError("S10: C's process did not start")
            relay_cpu_at_start = process_cpu_seconds(relay.pid)
            parent.send("go")
            start = time.monotonic()
            first = sync_once(a, relay.address, relay.pid)
            one_hop_done = time.monotonic()
            if not parent.poll(600):
                raise RuntimeError("S10: C did not receive every item within 600 s")
            answer = parent.recv()
            if isinstance(answer, str):  # the drain process failed and says why
                raise RuntimeError(f"S10: {answer}")  # noqa: TRY004 - not a type error
            finished, sessions, got, cpu_c = answer
            cpu_b = process_cpu_seconds(relay.pid) - relay_cpu_at_start
        finally:
            proc.join(30)
            if proc.is_alive():
                proc.terminate()
        rss_after = status_kib("VmRSS", relay.pid)
        hwm = status_kib("VmHWM", relay.pid)
    pushed = first.outcome.stats.items_sent
    if pushed != n or got != n:
        raise RuntimeError(f"S10 moved {pushed} to B and {got} to C, not {n}")
    return {
        "n": n,
        "hop": {
            "seconds": round(hop.seconds, 4),
            "cpu_s": {"A": round(hop.cpu_self, 3), "D": round(hop.cpu_server, 3)},
        },
        "seconds": round(finished - start, 4),
        "a_to_b_seconds": round(one_hop_done - start, 4),
        "c_sessions": sessions,
        "cpu_s": {"A": round(first.cpu_self, 3), "B": round(cpu_b, 3), "C": round(cpu_c, 3)},
        "cores": len(os.sched_getaffinity(0)),
        "relay_rss_idle_kib": rss_idle,
        "relay_rss_after_kib": rss_after,
        "relay_hwm_kib": hwm,
    }


def s10_result(raw: dict[str, Any], s1: dict[str, Any], bound: dict[str, Any]) -> dict[str, Any]:
    """``s1``: the S1 scenario of the same run (its rate, a figure beside the ratio)."""
    n = raw["n"]
    rate = n / raw["seconds"]
    hop_rate = n / raw["hop"]["seconds"]
    of_hop = rate / hop_rate
    cpu = raw["cpu_s"]
    busy = sum(cpu.values()) / (raw["seconds"] * raw["cores"])
    # CPU seconds per item of the busiest node: with a core of its own, each node could go
    # at most that fast; the hop's and the chain's figures compare like for like.
    hop_busiest = max(raw["hop"]["cpu_s"].values()) / n
    chain_busiest = max(cpu.values()) / n
    of_hop_core_each = hop_busiest / chain_busiest
    relay_us = 1e6 * cpu["B"] / n
    return {
        "metric": "end-to-end items/s A -> B -> C / items/s of the same N over one hop"
        " (A -> D, same run)",
        "value": round(of_hop, 3),
        "target": f">= {S10_TARGET} of one hop",
        "pass": of_hop >= S10_TARGET,
        "items_per_s": round(rate, 1),
        "hop_items_per_s": round(hop_rate, 1),
        "of_s1": round(rate / s1["items_per_s"], 3),
        "of_bound": round(rate / bound["items_per_s"], 3),
        "bound_primitive": bound["primitive"],
        **raw,
        "machine_busy": round(busy, 3),
        "of_hop_core_each_estimate": round(of_hop_core_each, 3),
        "relay_cpu_us_per_item": round(relay_us, 1),
        "notes": [
            f"one hop of the same {n:,} items: {hop_rate / 1000:,.1f}k/s;"
            f" {rate / s1['items_per_s']:.3f} of S1's hop ({s1['n']:,} items)",
            f"CPU s: A {cpu['A']:.2f}, relay B {cpu['B']:.2f} ({relay_us:.0f} us/item),"
            f" C {cpu['C']:.2f}; {cores_phrase(raw['cores'])} {100 * busy:.0f} % busy",
            f"with one core per node (estimate from CPU per item): {of_hop_core_each:.2f} of hop",
        ],
        "topology": "relay B (fieldsync run, relay-only) in a subprocess; A pushes from the"
        " bench process; C pulls from a third process, session after session",
    }


def memory_result(raw: dict[str, Any]) -> dict[str, Any]:
    idle = raw["relay_rss_idle_kib"] * 1024 / 1e6
    after = raw["relay_rss_after_kib"] * 1024 / 1e6
    ok = idle <= RELAY_IDLE_MB and after <= RELAY_AFTER_MB
    return {
        "metric": "relay daemon VmRSS, MB: idle, and after receiving and forwarding N items",
        "value": round(after, 1),
        "measured": f"{idle:.1f} idle, {after:.1f} after {raw['n']}",
        "target": f"<= {RELAY_IDLE_MB:.0f} idle, <= {RELAY_AFTER_MB:.0f} after",
        "pass": ok,
        "n": raw["n"],
        "idle_mb": round(idle, 1),
        "after_mb": round(after, 1),
        "hwm_mb": round(raw["relay_hwm_kib"] * 1024 / 1e6, 1),
    }
