"""``python -m bench.media [--mb 100] [--json FILE]``: one attachment synced between two
processes over loopback (issue 9, stage 5).

An author node adds one report with an N MB attachment (``fieldsync report add --attach``,
its own process: peak RSS reported). It then serves (``fieldsync run``) and a relay syncs
from it (``fieldsync sync``) over 127.0.0.1: the transfer's MB/s of file bytes, and the
peak RSS of both processes. In the same run, over the same bytes, the primitives on the
path are calibrated single-threaded: XChaCha20-Poly1305 sealing of the file in chunk-sized
pieces, BLAKE2b-256 of every chunk item (ids), and durable SQLite blob inserts of the chunk
items (WAL, synchronous=FULL, one commit per MiB, as a receiver commits flights). The result
is the ratio of the transfer rate to the slowest of them (goal >= 0.5). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nacl.bindings as sodium

from bench.env import fingerprint, status_kib
from fieldsync import synthetic
from fieldsync.store import connect_store
from fieldsync_protocol.attachment import PIECE

MB = 1024 * 1024
# Runs one CLI command in-process and reports its resident set once imported (VmRSS) and
# its peak at the end (VmHWM; unlike ru_maxrss not inherited from the forking parent):
# peak - before bounds what the command added. Also the command's own time (no start-up).
_RSS_WRAPPER = (
    "import sys, time\n"
    "from fieldsync_cli.main import main\n"
    "def kib(field):\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith(field + ':'):\n"
    "            return int(line.split()[1])\n"
    "before = kib('VmRSS')\n"
    "start = time.perf_counter()\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "elapsed = time.perf_counter() - start\n"
    "after = kib('VmHWM')\n"
    "print('RSS_KIB', before, after, code, elapsed, file=sys.stderr)\n"
)


def log(message: str) -> None:
    print(f"[media] {message}", file=sys.stderr, flush=True)


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        left = size
        while left:
            block = secrets.token_bytes(min(MB, left))
            out.write(block)
            left -= len(block)


def run_cli(args: list[str], env: dict[str, str]) -> tuple[str, dict[str, int], float]:
    """A CLI command in its own process: (stdout, peak RSS KiB before/after, seconds)."""
    done = subprocess.run(
        [sys.executable, "-c", _RSS_WRAPPER, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    line = [x for x in done.stderr.splitlines() if x.startswith("RSS_KIB ")][-1].split()
    if line[3] not in ("0", "None"):
        raise RuntimeError(f"{args} failed: {done.stderr[-2000:]}")
    return done.stdout, {"before": int(line[1]), "peak": int(line[2])}, float(line[4])


def chunk_items(home: Path) -> list[bytes]:
    conn = connect_store(home / "store.db")  # encrypted: under its store.key
    try:
        return [r[0] for r in conn.execute("SELECT data FROM items WHERE kind = 'a' ORDER BY seq")]
    finally:
        conn.close()


def rate(size: int, seconds: float) -> float:
    return size / MB / seconds


def calibrate(data_path: Path, items: list[bytes], workdir: Path) -> dict[str, float]:
    """MB/s (of file bytes) of each primitive on the transfer path, over the same bytes."""
    size = data_path.stat().st_size
    key, nonce = secrets.token_bytes(32), secrets.token_bytes(24)
    with open(data_path, "rb") as handle:
        start = time.perf_counter()
        while piece := handle.read(PIECE):
            sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(piece, b"", nonce, key)
        aead = rate(size, time.perf_counter() - start)
    start = time.perf_counter()
    for item in items:
        hashlib.blake2b(item, digest_size=32).digest()
    blake = rate(size, time.perf_counter() - start)
    db = workdir / "calibrate.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id BLOB PRIMARY KEY, data BLOB NOT NULL)")
    start = time.perf_counter()
    per_commit = max(1, MB // len(items[0]))
    for first in range(0, len(items), per_commit):
        conn.execute("BEGIN IMMEDIATE")
        for item in items[first : first + per_commit]:
            conn.execute("INSERT INTO t VALUES (?, ?)", (secrets.token_bytes(32), item))
        conn.execute("COMMIT")
    insert = rate(size, time.perf_counter() - start)
    conn.close()
    return {"xchacha20poly1305": aead, "blake2b": blake, "sqlite_durable_insert": insert}


def run(size_mb: int, workdir: Path) -> dict[str, Any]:
    network = synthetic.create_network(workdir / "net")
    author = network.add_node("a", author=True)
    relay = network.add_node("b")
    # Offer at once: this measures the transfer, not the timing-privacy delay.
    env = {
        **os.environ,
        "FIELDSYNC_PASSPHRASE": synthetic.PASSPHRASE,
        "FIELDSYNC_PRIVACY_OFFER_DELAY_MINUTES": "0",
    }
    original = workdir / "video.mp4"
    make_file(original, size_mb * MB)
    size = original.stat().st_size
    # The same command without media: its peak is mostly Argon2id unlocking the author key.
    _, add_without_media, _ = run_cli(
        ["--home", str(author), "report", "add", "--narrative", "baseline", "--category",
         "other", "--occurred", "2025", "--json"],
        env,
    )  # fmt: skip
    log(f"adding a report with a {size_mb} MB attachment")
    _, add_rss, add_seconds = run_cli(
        ["--home", str(author), "report", "add", "--narrative", "bench", "--category",
         "other", "--occurred", "2025", "--attach", str(original), "--json"],
        env,
    )  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "fieldsync_cli", "--home", str(author), "run",
         "--listen", "127.0.0.1:0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        address = json.loads(server.stdout.readline())["listening"][0]
        log(f"syncing {size_mb} MB from {address}")
        out, receiver_rss, seconds = run_cli(["--home", str(relay), "sync", address, "--json"], env)
        sender_rss = status_kib("VmHWM", server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    summary = json.loads(out.strip().splitlines()[-1])
    items = chunk_items(relay)
    log("calibrating the primitives over the same bytes")
    primitives = calibrate(original, items, workdir)
    slowest = min(primitives, key=lambda k: primitives[k])
    transfer = rate(size, seconds)
    return {
        "scenario": "media",
        "file_mb": size_mb,
        "chunks": len(items),
        "complete": summary.get("complete"),
        "transfer_mb_s": round(transfer, 2),
        "transfer_seconds": round(seconds, 2),
        "primitives_mb_s": {k: round(v, 2) for k, v in primitives.items()},
        "slowest_primitive": slowest,
        "ratio_to_slowest": round(transfer / primitives[slowest], 3),
        "add_mb_s": round(rate(size, add_seconds), 2),
        "rss_kib": {
            "add_without_media": add_without_media,
            "add": add_rss,
            "sender": sender_rss,
            "receiver": receiver_rss,
        },
        "environment": fingerprint(workdir),
    }


def _mb(rss: dict[str, int]) -> str:
    return f"{rss['before'] // 1024} -> {rss['peak'] // 1024}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="attachment size in MiB")
    parser.add_argument("--json", type=Path, help="write the result here (else stdout)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fsm-", dir=args.workdir) as tmp:
        result = run(args.mb, Path(tmp))
    text = json.dumps(result, indent=2)
    print(
        f"media {args.mb} MB: {result['transfer_mb_s']} MB/s = {result['ratio_to_slowest']} x"
        f" slowest primitive ({result['slowest_primitive']},"
        f" {result['primitives_mb_s'][result['slowest_primitive']]} MB/s);"
        f" peak RSS MB (after imports -> peak): add {_mb(result['rss_kib']['add'])}"
        f" (without media {_mb(result['rss_kib']['add_without_media'])}),"
        f" receiver {_mb(result['rss_kib']['receiver'])}, sender (VmHWM)"
        f" {result['rss_kib']['sender'] // 1024}",
        file=sys.stderr,
    )
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
