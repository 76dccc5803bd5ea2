"""Driving real nodes: an initiator in this process, the server in another (perf §6.3)."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldsync.peer import SyncOutcome
from fieldsync.runtime import Runtime


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def thread_cpu_seconds(idents: dict[str, int]) -> dict[str, float]:
    """CPU time of each of this process's threads named in ``idents`` (``threading``
    idents, e.g. ``StoreWorker.thread_idents``)."""
    return {
        name: time.clock_gettime(time.pthread_getcpuclockid(ident))
        for name, ident in idents.items()
    }


def own_cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Synced:
    outcome: SyncOutcome
    seconds: float  # wall time of the session only (connect, handshake, sync, END)
    cpu_self: float  # this process (initiator, incl. its store thread)
    cpu_server: float
    #: Of ``cpu_self``: the store thread's, and its helper's (next slices parsed ahead).
    cpu_threads: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        s = self.outcome.stats
        return {
            "complete": self.outcome.complete,
            "error": self.outcome.error,
            "mode": s.mode,
            "seconds": round(self.seconds, 4),
            "round_trips": s.round_trips,
            "items_received": s.items_received,
            "items_sent": s.items_sent,
            "items_new": self.outcome.items_new,
            "session_bytes": s.bytes_sent + s.bytes_received,
            "overhead_bytes": s.overhead_bytes,
            "payload_bytes": s.payload_bytes_sent + s.payload_bytes_received,
            "reconcile_bytes": s.reconcile_bytes_sent + s.reconcile_bytes_received,
            "reconcile_messages": s.reconcile_messages,
            "messages": s.messages_sent + s.messages_received,
            "wire_bytes_sent": self.outcome.wire_bytes_sent,
            "wire_bytes_received": self.outcome.wire_bytes_received,
            "wire_bytes": self.outcome.wire_bytes_sent + self.outcome.wire_bytes_received,
            "cpu_initiator_s": round(self.cpu_self, 3),
            "cpu_server_s": round(self.cpu_server, 3),
            "cpu_store_thread_s": round(self.cpu_threads.get("store", 0.0), 3),
            "cpu_helper_thread_s": round(self.cpu_threads.get("helper", 0.0), 3),
        }


async def _sync(home: Path, address: str, server_pid: int, coded: bool) -> Synced:
    runtime = await Runtime.open(home)
    try:
        if coded:
            # As a running daemon keeps them (SPEC.md §13.3.6): built before the clock starts.
            source = runtime.context.source
            while await runtime.worker.call(lambda _store: source.build_coded_step()):
                pass
        threads0 = thread_cpu_seconds(runtime.worker.thread_idents())
        cpu0, srv0 = own_cpu_seconds(), process_cpu_seconds(server_pid)
        start = time.perf_counter()
        outcome = await runtime.sync_with(address)
        seconds = time.perf_counter() - start
        cpu1, srv1 = own_cpu_seconds(), process_cpu_seconds(server_pid)
        threads1 = thread_cpu_seconds(runtime.worker.thread_idents())
    finally:
        await runtime.close()
    # (A helper started during the session ran only for it.)
    threads = {name: spent - threads0.get(name, 0.0) for name, spent in threads1.items()}
    if not outcome.complete:
        raise RuntimeError(f"sync {home.name} -> {address} did not complete: {outcome.error}")
    return Synced(outcome, seconds, cpu1 - cpu0, srv1 - srv0, threads)


def sync_once(home: Path, address: str, server_pid: int, *, coded: bool = False) -> Synced:
    """One session as initiator from ``home`` (opened fresh) with the server at ``address``;
    ``coded``: with coded symbols of its ids ready, as a node whose daemon ran keeps them."""
    return asyncio.run(_sync(home, address, server_pid, coded))
