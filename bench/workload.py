"""Workloads: a synthetic network, item pools, node stores and a server in a second process."""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fieldsync import synthetic
from fieldsync.store import Store
from fieldsync_protocol import codec
from fieldsync_protocol.items import check_item
from fieldsync_protocol.membership import Manifest

#: Fixed seed for clones, gaps and in-memory ids: in-memory byte and round-trip counts repeat
#: exactly from run to run. Genuinely sealed items draw fresh keys (``synthetic`` uses
#: ``secrets``), so real-node reconciliation bytes vary by a few per cent between runs.
SEED = 20_250_301


@dataclass
class ItemPool:
    """Sealed report envelopes of realistic size (~1 KiB, one size class).

    The first ``real`` are genuine ``synthetic.sealed_reports``; the rest (when asked for)
    are the same outer envelope with fresh random ciphertext of the same size class: a
    relay never opens an envelope, so the two cost exactly the same on its hot path
    (structure check, hashes, framing, storage), and cloning is ~50x faster than sealing
    (which signs and seals each report: ~5k/s on the reference VM).
    """

    manifest: Manifest
    items: list[bytes] = field(default_factory=list)
    real: int = 0

    @property
    def mean_size(self) -> float:
        return sum(map(len, self.items)) / max(1, len(self.items))

    def describe(self) -> str:
        clones = len(self.items) - self.real
        if not clones:
            return f"{self.real} real sealed envelopes (synthetic.sealed_reports)"
        return (
            f"{self.real} real sealed envelopes (synthetic.sealed_reports) + {clones} clones of"
            " their outer envelope with fresh random ciphertext of the same size class"
        )


def make_pool(manifest: Manifest, count: int, real: int, seed: int = SEED) -> ItemPool:
    """``count`` distinct items, ``min(real, count)`` of them genuinely sealed (at least 1)."""
    real = max(1, min(real, count))
    items = synthetic.sealed_reports(manifest, real, author_seed=random.Random(seed).randbytes(32))
    rng = random.Random(seed + 1)
    templates = [codec.decode(x) for x in items[: min(64, real)]]
    while len(items) < count:
        fields = dict(templates[len(items) % len(templates)])
        fields["c"] = rng.randbytes(len(fields["c"]))
        items.append(codec.encode(fields))
    return ItemPool(manifest, items[:count], real)


def add_items(home: Path, manifest: Manifest, items: Sequence[bytes], batch: int = 5_000) -> None:
    """Store ``items`` in a node's store in big durable batches (the way a sync would)."""
    store = Store(home / "store.db")
    try:
        now = int(time.time())
        for start in range(0, len(items), batch):
            checked = [check_item(x, manifest) for x in items[start : start + batch]]
            store.add_batch(checked, now)
    finally:
        store.close()


# --- a server node in a second process -------------------------------------------------------


def fieldsync_command() -> list[str]:
    """Run the CLI with this interpreter (the venv's), without relying on PATH."""
    return [sys.executable, "-m", "fieldsync_cli"]


#: Seconds a server may take to print its address.
START_TIMEOUT = 60.0


class ServerProcess:
    """``fieldsync --home HOME run --listen 127.0.0.1:0 --json`` in a subprocess."""

    def __init__(self, home: Path, log: Path, env: Mapping[str, str] | None = None) -> None:
        """``env``: extra environment, e.g. ``FIELDSYNC_WEB_LISTEN`` (configuration)."""
        self.home = home
        self._log: IO[bytes] = log.open("ab")
        self.proc = subprocess.Popen(
            [
                *fieldsync_command(),
                "--home",
                str(home),
                "run",
                "--listen",
                "127.0.0.1:0",
                "--json",
                "--log-level",
                "warning",
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            # Offer at once: the benchmarks measure sync, not the timing-privacy delay.
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "FIELDSYNC_PRIVACY_OFFER_DELAY_MINUTES": "0",
                **(env or {}),
            },
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"the server for {home} did not start; see {log}")
        try:
            self.address: str = json.loads(line)["listening"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            self.stop()
            raise RuntimeError(
                f"the server for {home} printed {line.strip()[:300]!r}, not its address; see {log}"
            ) from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            start = time.perf_counter()
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            took = time.perf_counter() - start
            if took > 2:
                print(
                    f"[bench] warning: the server for {self.home.name} took {took:.1f} s to"
                    " stop on SIGTERM",
                    file=sys.stderr,
                    flush=True,
                )
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
