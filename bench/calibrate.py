"""Same-run calibration of the primitives on a relay's hot path (perf_anchors §6.2).

Every rate is in items per second for the scenario's own item shape (sealed envelopes of
~1 KiB), batch size and filesystem, the median of several repetitions after a warm-up.
The bound of S1 and S10 is the slowest primitive of ``BOUND``; the others are reported to
explain where time goes.

The bound is honest only if it does not depend on fieldsync's own implementation: the
storage primitive in it is ``sqlite_insert``, a plain ``sqlite3`` executemany of the same
rows into a minimal WAL table with the store's durability pragmas, in one transaction
(issue 13). fieldsync's own ``Store.add_batch`` (``insert``) and ``check_item`` are
reported beside it as figures: a slow store must lower the ratio, never the bound.

The store is encrypted at rest (SQLCipher, issue 11), so the storage primitive of the bound
is ``sqlcipher_insert``: the same executemany into a SQLCipher database under a raw key,
same pragmas, through ``sqlcipher3`` directly (no fieldsync code). ``sqlite_insert`` (plain
SQLite) stays beside it as a figure: the two together show what encryption costs.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import sqlcipher3

from fieldsync.store import Store
from fieldsync_protocol import codec
from fieldsync_protocol.crypto import content_id, delivery_tag
from fieldsync_protocol.frames import MAX_FRAME, Data, FrameReceiver, FrameSender, wire_size
from fieldsync_protocol.items import MAX_ITEM, Checked, check_item
from fieldsync_protocol.membership import Manifest
from fieldsync_protocol.noise import CipherState
from fieldsync_protocol.session_messages import BATCH_BYTES, BATCH_ITEMS, MAX_MESSAGE

#: The primitives whose slowest one bounds S1 (the relay's per-item work, perf_anchors §1).
BOUND = ("hash", "decode", "frame_encrypt", "frame_decrypt", "sqlcipher_insert", "tcp")
#: fieldsync's own code on the same path: reported, never part of the bound.
OWN_FIGURES = ("check_item", "insert")
#: The stages one receiving process must run in series for every item (for R_serial), all
#: independent primitives: decrypt the frames, decode the DATA message, decode and hash each
#: item, store it.
RECEIVER_SERIAL = ("frame_decrypt", "data_decode", "decode", "hash", "sqlcipher_insert")

DESCRIPTIONS = {
    "hash": "BLAKE2b-256 content id + delivery tag of an item",
    "decode": "canonical msgpack decode of an item (codec.decode, re-encode check)",
    "check_item": "check_item(): structural check of an envelope (decode included)",
    "frame_encrypt": "FrameSender.send of DATA messages (ChaCha20-Poly1305, rekey per frame)",
    "frame_decrypt": "FrameReceiver of the same frames (decrypt, reassemble)",
    "insert": "fieldsync's Store.add_batch, one transaction per session batch (a figure,"
    " not the bound)",
    "tcp": "loopback TCP, asyncio streams, sender and byte-counting sink in two processes",
    "data_encode": "encode one DATA message per batch (codec.encode)",
    "data_decode": "decode one DATA message per batch (codec.decode, 1 MiB cap)",
    "store_read": "Store.get_items by id, 64 at a time (the sender's read path)",
    "sqlite_insert": "plain sqlite3 executemany of the same rows (id, tag, data) into a WAL"
    " table, synchronous=FULL, secure_delete=ON, one transaction (no hashing; a figure: the"
    " store is encrypted)",
    "sqlcipher_insert": "the same executemany into a SQLCipher database (sqlcipher3, raw"
    " 256-bit key, same pragmas): the storage primitive of the encrypted store",
    "commit": "one-row durable commits (WAL, synchronous=FULL): fsyncs/s, not items/s",
}


@dataclass(frozen=True)
class Settings:
    reps: int = 3
    seconds: float = 0.25  # target length of one repetition
    insert_items: int = 10_000  # items per insert repetition (a fresh store each time)
    tcp_bytes: int = 256 * 1024 * 1024


def session_batches(items: Sequence[bytes]) -> list[list[bytes]]:
    """Cut ``items`` into DATA batches exactly as the session does (256 items / 256 KiB)."""
    out: list[list[bytes]] = []
    batch: list[bytes] = []
    size = 0
    for item in items:
        if batch and (len(batch) == BATCH_ITEMS or size + len(item) > BATCH_BYTES):
            out.append(batch)
            batch, size = [], 0
        batch.append(item)
        size += len(item)
    if batch:
        out.append(batch)
    return out


def data_message(n: int, batch: list[bytes]) -> bytes:
    return codec.encode({"t": "data", "n": n, "i": batch})


def wire_bytes_per_item(items: Sequence[bytes]) -> float:
    """Bytes on the wire per item when ``items`` travel as DATA messages in frames."""
    batches = session_batches(items)
    total = sum(wire_size(len(data_message(k, b))) for k, b in enumerate(batches))
    return total / len(items)


def _median_rate(run_once: Rep, reps: int) -> tuple[float, list[float]]:
    run_once()  # warm-up
    rates = []
    for _ in range(reps):
        count, seconds = run_once()
        rates.append(count / seconds)
    return statistics.median(rates), rates


Rep = Callable[[], tuple[int, float]]  # one repetition: (items done, seconds)


def _per_item(items: Sequence[bytes], work: Callable[[bytes], object], seconds: float) -> Rep:
    """A repetition runs ``work`` over the items (cycled) for about ``seconds``."""
    state = {"n": 256}

    def run_once() -> tuple[int, float]:
        n = state["n"]
        todo = [items[k % len(items)] for k in range(n)]
        start = time.perf_counter()
        for item in todo:
            work(item)
        elapsed = time.perf_counter() - start
        state["n"] = max(256, min(2_000_000, int(n * seconds / max(elapsed, 1e-6))))
        return n, elapsed

    return run_once


def _hash(item: bytes) -> None:
    content_id(item)
    delivery_tag(item)


def _frames(items: Sequence[bytes]) -> tuple[Rep, Rep]:
    key = secrets.token_bytes(32)
    batches = session_batches(items)
    messages = [data_message(k, b) for k, b in enumerate(batches)]
    count = sum(map(len, batches))
    wire: list[bytes] = []

    def encrypt() -> tuple[int, float]:
        sender = FrameSender(CipherState(key))
        start = time.perf_counter()
        out = [sender.send(m) for m in messages]
        elapsed = time.perf_counter() - start
        wire[:] = out
        return count, elapsed

    def decrypt() -> tuple[int, float]:
        if not wire:
            encrypt()
        receiver = FrameReceiver(CipherState(key), MAX_MESSAGE)
        start = time.perf_counter()
        got = 0
        for chunk in wire:
            receiver.receive_data(chunk)
            while (event := receiver.next_event()) is not None:
                if isinstance(event, Data):
                    got += 1
        elapsed = time.perf_counter() - start
        assert got == len(messages)
        return count, elapsed

    return encrypt, decrypt


def _data_codec(items: Sequence[bytes]) -> tuple[Rep, Rep]:
    batches = session_batches(items)
    messages = [data_message(k, b) for k, b in enumerate(batches)]
    count = sum(map(len, batches))

    def encode() -> tuple[int, float]:
        start = time.perf_counter()
        for k, b in enumerate(batches):
            data_message(k, b)
        return count, time.perf_counter() - start

    def decode() -> tuple[int, float]:
        start = time.perf_counter()
        for m in messages:
            codec.decode(m, max_size=MAX_MESSAGE, what="sync message")
        return count, time.perf_counter() - start

    return encode, decode


def _insert(items: Sequence[bytes], manifest: Manifest, workdir: Path, per_rep: int) -> Rep:
    checked_all: list[Checked] = [check_item(x, manifest) for x in items[:per_rep]]
    batches = session_batches([c.item.data for c in checked_all])
    state = {"rep": 0}

    def run_once() -> tuple[int, float]:
        state["rep"] += 1
        path = workdir / f"calib-insert-{state['rep']}" / "store.db"
        store = Store(path)
        try:
            now = int(time.time())
            pos = 0
            plan = []
            for b in batches:
                plan.append(checked_all[pos : pos + len(b)])
                pos += len(b)
            start = time.perf_counter()
            for chunk in plan:
                store.add_batch(chunk, now)
            elapsed = time.perf_counter() - start
        finally:
            store.close()
        return len(checked_all), elapsed

    return run_once


#: The independent storage primitive's table: content id as primary key, the delivery tag
#: and the item (what any store of a grow-only set of sealed items must keep and index).
SQLITE_INSERT_SCHEMA = (
    "CREATE TABLE items (id BLOB PRIMARY KEY, tag BLOB NOT NULL, data BLOB NOT NULL)"
)
#: The store's durability settings (fieldsync/store.py), repeated here on purpose: the
#: primitive must not change when the store does.
SQLITE_INSERT_PRAGMAS = ("journal_mode=WAL", "synchronous=FULL", "secure_delete=ON")


def _sqlite_insert(
    items: Sequence[bytes], workdir: Path, per_rep: int, *, encrypted: bool = False
) -> Rep:
    """Plain sqlite3 (``encrypted``: sqlcipher3 under a random raw key), no fieldsync code:
    one executemany of ``per_rep`` rows, one commit."""
    # Bound as bytearrays, as the store binds them (Store._blobs): sqlcipher3 looks up an
    # adapter for every ``bytes`` value, which would slow the bound, not just the store.
    rows = [
        (bytearray(content_id(x)), bytearray(delivery_tag(x)), bytearray(x))
        for x in items[:per_rep]
    ]
    state = {"rep": 0}
    name = "sqlcipher" if encrypted else "sqlite"

    def run_once() -> tuple[int, float]:
        state["rep"] += 1
        path = workdir / f"calib-{name}-{state['rep']}.db"
        conn: sqlite3.Connection | sqlcipher3.Connection
        if encrypted:
            conn = sqlcipher3.connect(str(path), isolation_level=None)
            conn.execute(f"PRAGMA key = \"x'{secrets.token_hex(32)}'\"")
        else:
            conn = sqlite3.connect(path, isolation_level=None)
        try:
            for pragma in SQLITE_INSERT_PRAGMAS:
                conn.execute(f"PRAGMA {pragma}")
            conn.execute(SQLITE_INSERT_SCHEMA)
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO items (id, tag, data) VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
            elapsed = time.perf_counter() - start
        finally:
            conn.close()
        return len(rows), elapsed

    return run_once


def _store_read(items: Sequence[bytes], manifest: Manifest, workdir: Path, per_rep: int) -> Rep:
    path = workdir / "calib-read" / "store.db"
    chosen = list(items[:per_rep])
    store = Store(path)
    try:
        store.add_batch([check_item(x, manifest) for x in chosen], int(time.time()))
    finally:
        store.close()
    ids = sorted(content_id(x) for x in chosen)

    def run_once() -> tuple[int, float]:
        store = Store(path)
        try:
            start = time.perf_counter()
            for k in range(0, len(ids), 64):
                store.get_items(ids[k : k + 64])
            return len(ids), time.perf_counter() - start
        finally:
            store.close()

    return run_once


def _commit(workdir: Path, seconds: float) -> Rep:
    path = workdir / "calib-commit.db"
    row = (b"x" * 64,)

    def run_once() -> tuple[int, float]:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB)")
            count = 0
            start = time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds or count < 5:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t (v) VALUES (?)", row)
                conn.execute("COMMIT")
                count += 1
        finally:
            conn.close()
        return count, elapsed

    return run_once


# --- loopback TCP between two processes ----------------------------------------------------


def _tcp_sink(conn: Connection) -> None:
    """Child process: accept connections, count bytes, answer b"k" after the announced total."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = int.from_bytes(await reader.readexactly(8), "big")
        got = 0
        while got < total:
            chunk = await reader.read(256 * 1024)
            if not chunk:
                break
            got += len(chunk)
        writer.write(b"k")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        conn.send(server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not stop.done():
                stop.set_result(None)

        loop.add_reader(conn.fileno(), wake)
        await stop
        server.close()

    asyncio.run(main())


async def _tcp_send(port: int, total: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunk = secrets.token_bytes(MAX_FRAME) * 4
    start = time.perf_counter()
    writer.write(total.to_bytes(8, "big"))
    sent = 0
    while sent < total:
        piece = chunk[: min(len(chunk), total - sent)]
        writer.write(piece)
        await writer.drain()
        sent += len(piece)
    await reader.readexactly(1)
    elapsed = time.perf_counter() - start
    writer.close()
    await writer.wait_closed()
    return elapsed


def _tcp(bytes_per_item: float, total: int, reps: int) -> tuple[float, list[float], float]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_tcp_sink, args=(child,), daemon=True)
    proc.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("the TCP sink process did not start")
        port = int(parent.recv())
        asyncio.run(_tcp_send(port, total // 8))  # warm-up
        rates = []
        for _ in range(reps):
            seconds = asyncio.run(_tcp_send(port, total))
            rates.append(total / seconds)
    finally:
        parent.send(None)
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
    median = statistics.median(rates)
    return median / bytes_per_item, [r / bytes_per_item for r in rates], median


# --- the calibration ------------------------------------------------------------------------


def calibrate(
    items: Sequence[bytes], manifest: Manifest, workdir: Path, settings: Settings
) -> dict[str, Any]:
    """Rates of every primitive (items/s), each the median of ``settings.reps``."""
    workdir.mkdir(parents=True, exist_ok=True)
    per_rep = min(settings.insert_items, len(items))
    sample = list(items[: max(per_rep, 256)])
    per_item = wire_bytes_per_item(sample)
    results: dict[str, Any] = {}

    def record(name: str, rate: float, reps: list[float], **extra: Any) -> None:
        results[name] = {
            "items_per_s": round(rate, 1),
            "reps": [round(r, 1) for r in reps],
            "in_bound": name in BOUND,
            "own_code": name in OWN_FIGURES,
            "what": DESCRIPTIONS[name],
            **extra,
        }

    reps, seconds = settings.reps, settings.seconds
    record("hash", *_median_rate(_per_item(sample, _hash, seconds), reps))
    record(
        "decode",
        *_median_rate(
            _per_item(sample, lambda x: codec.decode(x, max_size=MAX_ITEM, what="item"), seconds),
            reps,
        ),
    )
    record(
        "check_item",
        *_median_rate(_per_item(sample, lambda x: check_item(x, manifest), seconds), reps),
    )
    frame_items = sample[: max(256, min(len(sample), int(20_000 * seconds)))]
    encrypt, decrypt = _frames(frame_items)
    record("frame_encrypt", *_median_rate(encrypt, reps))
    record("frame_decrypt", *_median_rate(decrypt, reps))
    encode, decode = _data_codec(frame_items)
    record("data_encode", *_median_rate(encode, reps))
    record("data_decode", *_median_rate(decode, reps))
    record(
        "insert",
        *_median_rate(_insert(items, manifest, workdir, per_rep), reps),
        items_per_rep=per_rep,
    )
    record(
        "sqlite_insert",
        *_median_rate(_sqlite_insert(items, workdir, per_rep), reps),
        items_per_rep=per_rep,
    )
    record(
        "sqlcipher_insert",
        *_median_rate(_sqlite_insert(items, workdir, per_rep, encrypted=True), reps),
        items_per_rep=per_rep,
    )
    record("store_read", *_median_rate(_store_read(items, manifest, workdir, per_rep), reps))
    record("commit", *_median_rate(_commit(workdir, seconds), reps))
    tcp_rate, tcp_reps, bytes_per_s = _tcp(per_item, settings.tcp_bytes, reps)
    record(
        "tcp",
        tcp_rate,
        tcp_reps,
        mib_per_s=round(bytes_per_s / 2**20, 1),
        wire_bytes_per_item=round(per_item, 2),
    )
    return results


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean rate of each primitive over the calibration runs, drift between them, the bound."""
    names = list(runs[0])
    rates = {n: statistics.fmean(r[n]["items_per_s"] for r in runs) for n in names}
    drift = {}
    if len(runs) > 1:
        for n in names:
            first, last = runs[0][n]["items_per_s"], runs[-1][n]["items_per_s"]
            drift[n] = round(100 * (last - first) / first, 1)
    bound_name = min(BOUND, key=lambda n: rates[n])
    serial = 1 / sum(1 / rates[n] for n in RECEIVER_SERIAL)
    return {
        "rates": {n: round(v, 1) for n, v in rates.items()},
        "drift_pct": drift,
        "max_bound_drift_pct": max((abs(drift[n]) for n in BOUND if n in drift), default=0.0),
        "bound_drift_pct": abs(drift.get(bound_name, 0.0)),
        "bound": {"primitive": bound_name, "items_per_s": round(rates[bound_name], 1)},
        "serial_bound_receiver": {
            "stages": list(RECEIVER_SERIAL),
            "items_per_s": round(serial, 1),
        },
    }
