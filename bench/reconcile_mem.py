"""S2/S3/S4 on pure in-memory sessions, and S12 (memory of a 1M-item reconciliation).

Building a million real sealed reports and two SQLite stores of them would take minutes,
and these scenarios only measure reconciliation: so two ``SyncSession`` objects are wired
back to back (flight by flight, as tests/protocol/test_session.py does) over
``SortedListIndex``-backed item sources. Ids are random 256-bit values, generated already
sorted (random gaps, fixed seed) and streamed into the index, so no list of a million ids
is ever held. An item's bytes are its id (32 B): payload is excluded from every metric.
"""

from __future__ import annotations

import math
import multiprocessing
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import msgpack

from bench.env import status_kib
from fieldsync_protocol.reconcile_index import INFINITY, ZERO, SortedListIndex, successor
from fieldsync_protocol.riblt import CodedSymbols
from fieldsync_protocol.session import (
    Completed,
    CursorAdvanced,
    ItemsReceived,
    SyncSession,
    SyncStats,
)
from fieldsync_protocol.session_messages import Cursor

_SPACE = 1 << 256

#: Issue #13 goals per scenario: (most round trips, most session bytes excluding payload).
GOALS: dict[str, tuple[int, int]] = {"S2": (1, 400), "S4": (3, 16 * 1024)}


def score_goals(records: dict[str, dict[str, Any]]) -> list[str]:
    """Add ``goal``/``measured``/``verdict`` to each S2/S4 record; returns one line each."""
    lines = []
    for name, (max_rt, max_bytes) in GOALS.items():
        if name not in records:
            continue
        record = records[name]
        rt, overhead = record["round_trips"], record["overhead_bytes"]
        record["goal"] = f"<= {max_rt} RT, <= {max_bytes} B"
        record["measured"] = f"{rt} RT, {overhead} B"
        record["verdict"] = "PASS" if rt <= max_rt and overhead <= max_bytes else "FAIL"
        lines.append(
            f"{name} at {record.get('n', '?')} items: goal {record['goal']}, "
            f"measured {record['measured']}: {record['verdict']}"
        )
    return lines


def sorted_ids(n: int, seed: int, skip: frozenset[int] = frozenset()) -> Iterator[bytes]:
    """``n`` ascending pseudo-random 32-byte ids (positions in ``skip`` left out)."""
    rng = random.Random(seed)
    step = _SPACE // (n + 8 * math.isqrt(n) + 8)
    x = 0
    for k in range(n):
        x += rng.randrange(1, 2 * step)
        if k not in skip:
            yield x.to_bytes(32, "big")
    if x >= _SPACE:
        raise AssertionError("unreachable: id generator overflowed 256 bits")


def scattered(n: int, d: int, seed: int) -> frozenset[int]:
    return frozenset(random.Random(seed ^ 0x5CA7).sample(range(n), d))


def new_ids(d: int, seed: int) -> list[bytes]:
    rng = random.Random(seed ^ 0x7A11)
    return [rng.randbytes(32) for _ in range(d)]


class MemSource:
    """An ``ItemSource``: ``base`` items numbered 1..base (bulk-loaded), then a ``tail``."""

    def __init__(self, ids: Iterator[bytes], base: int, epoch: bytes) -> None:
        self.index = SortedListIndex.from_sorted(ids)
        # The coded-symbol prefix a node keeps ready for first contacts (SPEC.md §13.3.6),
        # read from the index a page at a time (a list of 1M ids would weigh on S12).
        self.coded = CodedSymbols()
        after = ZERO
        while page := self.index.ids(after, INFINITY, 4096):
            self.coded.extend(page)
            after = successor(page[-1])
        self.base = base
        self.epoch = epoch
        self.tail: list[bytes] = []
        self.origin: dict[bytes, str] = {}

    def add(self, item_id: bytes, origin: str = "") -> None:
        if self.index.add(item_id):
            self.coded.add(item_id)
            self.tail.append(item_id)
            if origin:
                self.origin[item_id] = origin

    def cursor(self) -> Cursor:
        return Cursor(self.epoch, self.base + len(self.tail))

    def view(self, peer: str) -> PeerView:
        return PeerView(self, peer)


@dataclass
class PeerView:
    """The source as one peer sees it: deltas leave out what came from that peer."""

    source: MemSource
    peer: str

    @property
    def index(self) -> SortedListIndex:
        return self.source.index

    def items_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        src = self.source
        if seq < src.base:
            raise NotImplementedError("in-memory deltas start after the bulk-loaded base")
        out: list[tuple[int, bytes]] = []
        for k in range(seq - src.base, len(src.tail)):
            if len(out) == limit:
                break
            item_id = src.tail[k]
            if src.origin.get(item_id) != self.peer and item_id in src.index:
                out.append((src.base + k + 1, item_id))
        return out

    def get(self, ids: Sequence[bytes]) -> list[bytes]:
        return [i for i in ids if i in self.source.index]

    def wants(self, ids: Sequence[bytes]) -> list[bytes]:
        return [i for i in ids if i not in self.source.index]

    def send_later(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        return []  # no media here: every item goes as found


@dataclass
class Side:
    session: SyncSession
    source: MemSource
    peer: str
    cursors: list[Cursor] = field(default_factory=list)
    stats: SyncStats | None = None

    def drain(self) -> None:
        while (event := self.session.next_event()) is not None:
            if isinstance(event, ItemsReceived):
                for item in event.items:
                    self.source.add(item, self.peer)
                self.session.commit_done(event.batch_no)
            elif isinstance(event, CursorAdvanced):
                self.cursors.append(event.cursor)
            elif isinstance(event, Completed):
                self.stats = event.stats


def lockstep(initiator: Side, responder: Side) -> list[tuple[str, int, int]]:
    """Run both sessions flight by flight; returns (who, messages, bytes) per flight."""
    flights: list[tuple[str, int, int]] = []
    sender, receiver = initiator, responder
    out = sender.session.messages_to_send()
    sender.drain()
    while out:
        if len(flights) > 100_000:
            raise RuntimeError("in-memory session did not finish")
        flights.append(("I" if sender is initiator else "R", len(out), sum(map(len, out))))
        for message in out:
            receiver.session.receive_message(message)
            receiver.drain()
        sender, receiver = receiver, sender
        out = sender.session.messages_to_send()
        sender.drain()
    if not (initiator.session.complete and responder.session.complete):
        raise RuntimeError("in-memory session ended incomplete")
    return flights


def session(
    init: MemSource,
    resp: MemSource,
    *,
    init_cursor: Cursor | None = None,
    resp_cursor: Cursor | None = None,
) -> tuple[Side, Side, dict[str, Any]]:
    """One session ``init`` -> ``resp``; returns both sides and the scenario's figures."""
    start = time.perf_counter()
    i_session = SyncSession(
        init.view("R"),
        initiator=True,
        local=init.cursor(),
        peer_cursor=init_cursor,
        coded=init.coded,
    )
    r_session = SyncSession(
        resp.view("I"),
        initiator=False,
        local=resp.cursor(),
        peer_cursor=resp_cursor,
        coded=resp.coded,
    )
    i, r = Side(i_session, init, "R"), Side(r_session, resp, "I")
    flights = lockstep(i, r)
    seconds = time.perf_counter() - start
    assert i.stats is not None and r.stats is not None
    s = i.stats
    record = {
        "mode": s.mode,
        "round_trips": s.round_trips,
        "flights": len(flights),
        "session_bytes": s.bytes_sent + s.bytes_received,
        "overhead_bytes": s.overhead_bytes,
        "reconcile_bytes": s.reconcile_bytes_sent + s.reconcile_bytes_received,
        "reconcile_messages": s.reconcile_messages,
        "items_received": s.items_received,
        "items_sent": s.items_sent,
        "seconds": round(seconds, 4),
    }
    return i, r, record


def run(n: int, d: int, seed: int) -> dict[str, dict[str, Any]]:
    """S2 (identical), S4 (first contact, ``d`` scattered missing), S3 (repeat, ``d`` new)."""
    t0 = time.perf_counter()
    a = MemSource(sorted_ids(n, seed), n, b"epoch-A")
    b = MemSource(sorted_ids(n, seed), n, b"epoch-B")
    c = MemSource(sorted_ids(n, seed, scattered(n, d, seed)), n - d, b"epoch-C")
    build = time.perf_counter() - t0
    out: dict[str, dict[str, Any]] = {}
    # S2: first contact, identical sets (B initiates).
    bi, ar, out["S2"] = session(b, a)
    # S4: first contact, C lacks d scattered items of A's.
    _, _, out["S4"] = session(c, a)
    if len(c.index) != len(a.index):
        raise RuntimeError("S4 (in memory) did not converge")
    # S3: repeat contact (cursors from S2), d new items on A.
    for item_id in new_ids(d, seed):
        a.add(item_id)
    _, _, out["S3"] = session(b, a, init_cursor=bi.cursors[-1], resp_cursor=ar.cursors[-1])
    if len(b.index) != len(a.index):
        raise RuntimeError("S3 (in memory) did not converge")
    for record in out.values():
        record["n"] = n
        record["build_seconds"] = round(build, 2)
    score_goals(out)
    return out


# --- S12: each side in its own process ------------------------------------------------------


def _side_main(conn: Connection, report: Connection, role: str, n: int, d: int, seed: int) -> None:
    """One side of a first contact (1M vs 1M - d scattered), in its own process."""
    rss0 = status_kib("VmRSS")
    hwm0 = status_kib("VmHWM")
    t0 = time.perf_counter()
    if role == "initiator":
        source = MemSource(sorted_ids(n, seed, scattered(n, d, seed)), n - d, b"epoch-C")
    else:
        source = MemSource(sorted_ids(n, seed), n, b"epoch-A")
    build = time.perf_counter() - t0
    rss_index = status_kib("VmRSS")
    hwm_index = status_kib("VmHWM")
    side = Side(
        SyncSession(
            source.view("peer"),
            initiator=role == "initiator",
            local=source.cursor(),
            coded=source.coded,
        ),
        source,
        "peer",
    )
    t1 = time.perf_counter()
    my_turn = role == "initiator"
    while True:
        if my_turn:
            out = side.session.messages_to_send()
            side.drain()
            conn.send_bytes(msgpack.packb(out))
            if not out:
                break
        else:
            flight = msgpack.unpackb(conn.recv_bytes())
            if not flight:
                break
            for message in flight:
                side.session.receive_message(message)
                side.drain()
        my_turn = not my_turn
    session_seconds = time.perf_counter() - t1
    report.send(
        {
            "role": role,
            "complete": side.session.complete,
            "items": len(source.index),
            "round_trips": side.stats.round_trips if side.stats else None,
            "rss_start_kib": rss0,
            "hwm_start_kib": hwm0,
            "rss_after_index_kib": rss_index,
            "hwm_after_index_kib": hwm_index,
            "hwm_end_kib": status_kib("VmHWM"),
            "extra_kib": status_kib("VmHWM") - rss0,
            "index_kib": rss_index - rss0,
            "build_seconds": round(build, 2),
            "session_seconds": round(session_seconds, 3),
        }
    )


def memory(n: int, d: int, seed: int) -> dict[str, Any]:
    """Peak extra RSS of each side of a first-contact reconciliation, each in its process."""
    ctx = multiprocessing.get_context("spawn")
    a_end, b_end = ctx.Pipe()
    reports = [ctx.Pipe(duplex=False) for _ in range(2)]
    procs = [
        ctx.Process(target=_side_main, args=(a_end, reports[0][1], "initiator", n, d, seed)),
        ctx.Process(target=_side_main, args=(b_end, reports[1][1], "responder", n, d, seed)),
    ]
    for p in procs:
        p.start()
    try:
        results = []
        for reader, _ in reports:
            if not reader.poll(600):
                raise RuntimeError("an S12 side process did not report")
            results.append(reader.recv())
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.terminate()
    sides = {r["role"]: r for r in results}
    if not all(r["complete"] for r in results) or sides["initiator"]["items"] != n:
        raise RuntimeError(f"S12 reconciliation did not converge: {results}")
    return {"n": n, "d": d, "sides": sides}


if __name__ == "__main__":
    # python -m bench.reconcile_mem [N ...]: S2/S4 bytes against the issue #13 goals.
    import sys

    for size in [int(a) for a in sys.argv[1:]] or [100_000, 1_000_000]:
        for line in score_goals(run(size, 100, 1)):
            print(line, flush=True)
