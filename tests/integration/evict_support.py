"""Shared pieces of the eviction and re-offer tests: a network with authors and relays,
junk envelopes, relays served on 127.0.0.1, and HQ ingest by the real ``hq ingest`` CLI."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from fieldsync import synthetic
from fieldsync.node import Node
from fieldsync.peer import SyncOutcome
from fieldsync.runtime import Runtime, Server
from fieldsync.store import connect_store
from fieldsync_protocol import codec
from fieldsync_protocol.envelope import SIZE_CLASSES
from fieldsync_protocol.membership import Manifest
from tests.fieldsync.offline_support import hq_db_connect
from tests.integration.sync_support import COMMAND_TIMEOUT, clean_env, fieldsync_command

PASSPHRASE = synthetic.PASSPHRASE


def junk(manifest: Manifest, count: int, size_class: int) -> list[bytes]:
    """Envelopes with a valid outer layer and random "ciphertext": only HQ can tell."""
    key_id = manifest.current_hq_key_id
    size = SIZE_CLASSES[size_class]
    return [
        codec.encode({"c": os.urandom(size), "k": key_id, "l": 3, "t": "e", "v": 1})
        for _ in range(count)
    ]


def write_reports(home: Path, narratives: list[str]) -> list[str]:
    """Reports as a monitor writes them (signed, sealed, in the outbox as "sealed")."""
    node = Node(home)
    try:
        return [
            node.add_report(
                {
                    "narrative": text,
                    "categories": ["arbitrary-detention"],
                    "occurred": {"start": "2025-03-01", "precision": "day", "approximate": False},
                },
                PASSPHRASE,
            )
            for text in narratives
        ]
    finally:
        node.close()


@contextlib.asynccontextmanager
async def serving(home: Path) -> AsyncIterator[tuple[Runtime, str]]:
    """A node's runtime accepting sync on 127.0.0.1 (an ephemeral port)."""
    runtime = await Runtime.open(home)
    server = Server(runtime)
    try:
        host, port = await server.listen_tcp("127.0.0.1", 0)
        yield runtime, f"{host}:{port}"
    finally:
        await server.close()
        await runtime.close()


@contextlib.asynccontextmanager
async def opened(home: Path) -> AsyncIterator[Runtime]:
    runtime = await Runtime.open(home)
    try:
        yield runtime
    finally:
        await runtime.close()


async def sync(runtime: Runtime, target: str) -> SyncOutcome:
    outcome = await runtime.sync_with(target)
    assert outcome.complete, outcome.error
    return outcome


def export_bundle(home: Path, path: Path) -> int:
    node = Node(home)
    try:
        return node.export_bundle(path)
    finally:
        node.close()


def hq_ingest(hq: Path, bundle: Path) -> dict[str, object]:
    """``fieldsync hq ingest --hq HQ BUNDLE --json``, as HQ's operator runs it."""
    env = {**clean_env(), "FIELDSYNC_PASSPHRASE": PASSPHRASE}
    done = subprocess.run(
        [*fieldsync_command(), "hq", "ingest", "--hq", str(hq), str(bundle), "--json"],
        env=env,
        capture_output=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    result: dict[str, object] = json.loads(done.stdout)
    # 8: ingested, and new alerts appeared (junk, gaps): the operator must look.
    assert done.returncode == (8 if result.get("attention") else 0), done.stderr.decode()
    return result


def reports_at_hq(hq: Path) -> dict[str, int]:
    """Accepted reports in ``hq.db`` by author name."""
    with contextlib.closing(hq_db_connect(hq, PASSPHRASE)) as db:
        rows = db.execute("SELECT author_name, count(*) FROM reports GROUP BY author_name")
        return {str(name): int(count) for name, count in rows}


def report_ids_at_hq(hq: Path) -> set[str]:
    with contextlib.closing(hq_db_connect(hq, PASSPHRASE)) as db:
        return {str(row[0]) for row in db.execute("SELECT id FROM reports")}


def envelope_ids_in(home: Path, *, own: bool = False) -> set[bytes]:
    """Envelopes a node's store holds (only its author's, with ``own``), read beside a
    daemon that may be running."""
    where = "kind = 'e'" + (" AND own = 1" if own else "")
    with contextlib.closing(connect_store(home / "store.db")) as db:
        rows = db.execute(f"SELECT id FROM items WHERE {where}").fetchall()  # noqa: S608
    return {bytes(row[0]) for row in rows}
