"""S2/S3/S4 between real nodes: SQLite stores, Noise handshake, frames, loopback TCP.

A holds N items and serves from a second process; B (identical) and C (N - d scattered)
sync as initiators from this process, with coded symbols of their ids ready (as running
daemons keep them; A's daemon builds its own before the first session). Order: S2 (B,
first contact, identical), S4 (C, first contact), then d new items are added to A (server
stopped meanwhile) and S3 (B again: repeat contact, cursors known, delta mode), then one
more B sync with nothing new.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from bench.env import status_kib
from bench.nodes import sync_once
from bench.reconcile_mem import score_goals
from bench.workload import ItemPool, ServerProcess, add_items
from fieldsync.control_client import request
from fieldsync.synthetic import SyntheticNetwork

#: Seconds the server's daemon may take to build coded symbols of its ids.
CODED_TIMEOUT = 600.0


def wait_for_coded_symbols(home: Path) -> None:
    """Until the server's daemon has coded symbols of its ids ready (SPEC.md §13.3.6): a
    node that has run for a while has them; one just started answers by ranges."""
    deadline = time.monotonic() + CODED_TIMEOUT
    while time.monotonic() < deadline:
        status = request(home / "control.sock", "status")
        if status is not None and status.get("coded_symbols") == "ready":
            return
        time.sleep(0.2)
    raise RuntimeError(f"the server for {home.name} did not build its coded symbols")


def run(
    net: SyntheticNetwork, pool: ItemPool, n: int, d: int, seed: int, workdir: Path
) -> dict[str, Any]:
    if len(pool.items) < n + d:
        raise ValueError(f"the item pool holds {len(pool.items)} items; {n + d} needed")
    base = pool.items[:n]
    fresh = pool.items[n : n + d]
    missing = set(random.Random(seed ^ 0x5CA7).sample(range(n), d))
    a = net.add_node("rec-A")
    b = net.add_node("rec-B")
    c = net.add_node("rec-C")
    add_items(a, pool.manifest, base)
    add_items(b, pool.manifest, base)
    add_items(c, pool.manifest, [x for k, x in enumerate(base) if k not in missing])
    log = workdir / "servers.log"
    out: dict[str, Any] = {}
    with ServerProcess(a, log) as server:
        wait_for_coded_symbols(a)
        rss_idle = status_kib("VmRSS", server.pid)
        out["S2"] = sync_once(b, server.address, server.pid, coded=True).record()
        out["S4"] = sync_once(c, server.address, server.pid, coded=True).record()
        server_memory = {
            "rss_idle_kib": rss_idle,
            "hwm_after_sessions_kib": status_kib("VmHWM", server.pid),
        }
    add_items(a, pool.manifest, fresh)
    with ServerProcess(a, log) as server:
        out["S3"] = sync_once(b, server.address, server.pid).record()
        out["S2-repeat"] = sync_once(b, server.address, server.pid).record()
    if out["S4"]["items_new"] != d or out["S3"]["items_new"] != d:
        raise RuntimeError(f"real-path scenarios moved the wrong items: {out}")
    for record in out.values():
        record["n"] = n
    score_goals(out)
    out["server_memory"] = server_memory
    return out
