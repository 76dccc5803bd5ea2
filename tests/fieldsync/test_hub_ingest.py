"""``ingest_from_hub`` (issue 7 Deliver 4): HQ is never starved by its hub.

A real hub (``Runtime`` + ``Server`` on a loopback WebSocket, in this process) holds real
sealed reports and a junk flood; HQ's node, with no per-day quota toward the hub, pulls it
all, ingests a page at a time, receipts everything (junk as dropped) and pushes back. An
autouse blockbuster fixture fails the test if anything (Argon2id, SQLite, file reads)
blocks the event loop. A pull that cannot complete
still ingests what HQ's node already committed, and says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from fieldsync.hq import HQ
from fieldsync.hq_hub import HQ_PULL_LIMITS, ingest_from_hub
from fieldsync.node import Node
from fieldsync.peer import PeerLimits
from fieldsync.runtime import Runtime, Server
from tests.fieldsync.offline_support import (
    KDF,
    PASSPHRASE,
    Net,
    add_reports,
    enroll,
    export,
    hq_manifest,
    junk_envelope,
    write_bundle,
)

REPORTS = 5
JUNK = 12  # x 256 KiB


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    with blockbuster_ctx() as bb:
        yield bb


@dataclass
class Hub:
    home: Path
    url: str


def _prepare_hub(net: Net) -> Path:
    """The hub's home, enrolled, holding A's reports and the junk flood."""
    home = net.root / "hub"
    node = Node(home)
    try:
        node.join(enroll(net, node.init(None, None, KDF), "hub"))
        add_reports(net.a, [f"report {n}" for n in range(REPORTS)])
        export(net.a, net.usb / "a.bundle")
        key_id = hq_manifest(net).current_hq_key_id
        flood = [junk_envelope(256 * 1024, key_id) for _ in range(JUNK)]
        write_bundle(net, net.usb / "junk.bundle", flood)
        node.import_bundle(net.usb / "a.bundle")
        node.import_bundle(net.usb / "junk.bundle")
    finally:
        node.close()
    return home


@pytest.fixture
async def hub(net: Net) -> AsyncIterator[Hub]:
    home = await asyncio.to_thread(_prepare_hub, net)
    runtime = await Runtime.open(home, limits=PeerLimits(silent_close=(0.0, 0.01)))
    server = Server(runtime)
    host, port = await server.listen_websocket("127.0.0.1", 0)
    try:
        yield Hub(home, f"ws://{host}:{port}/sync")
    finally:
        await server.close()
        await runtime.close()


def _envelopes(home: Path) -> int:
    node = Node(home)
    try:
        items = node.store().status()["items"]
        assert isinstance(items, dict)
        return int(items["envelope"])
    finally:
        node.close()


async def test_hq_pulls_a_flood_past_any_daily_quota_and_ingests_everything(
    net: Net, hub: Hub
) -> None:
    assert HQ_PULL_LIMITS.quota_bytes_per_day >= 2**62  # not a field peer's 1 GiB
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        summary, pulled = await ingest_from_hub(headquarters, hub.url, PASSPHRASE)
    finally:
        headquarters.close()
    assert pulled.pull_complete and pulled.pulled.items_new == REPORTS + JUNK
    assert (summary.new, sum(summary.junk.values()), summary.failed) == (REPORTS, JUNK, 0)
    assert pulled.receipts_new == 2  # one accepted, one dropped
    assert pulled.pushed is not None and pulled.pushed.complete
    # The hub and HQ's own node deleted everything HQ receipted, junk included.
    assert await asyncio.to_thread(_envelopes, hub.home) == 0
    assert await asyncio.to_thread(_envelopes, net.hq / "node") == 0


def _committed_earlier(net: Net) -> None:
    """What an earlier, interrupted pull left in HQDIR/node: A's reports, not yet ingested."""
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        home = headquarters.hub_node(headquarters.unlock(PASSPHRASE))
    finally:
        headquarters.close()
    add_reports(net.a, [f"report {n}" for n in range(REPORTS)])
    export(net.a, net.usb / "a.bundle")
    node = Node(home)
    try:
        node.import_bundle(net.usb / "a.bundle")
    finally:
        node.close()


async def test_an_incomplete_pull_still_ingests_what_was_committed(net: Net) -> None:
    await asyncio.to_thread(_committed_earlier, net)
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        # Nothing listens on port 9 of loopback: the session cannot even start.
        summary, pulled = await ingest_from_hub(headquarters, "ws://127.0.0.1:9/sync", PASSPHRASE)
    finally:
        headquarters.close()
    assert not pulled.pull_complete and pulled.pulled.error
    assert (summary.new, summary.failed) == (REPORTS, 0)
    assert pulled.receipts_new == 1
    # The receipts wait in HQ's node for the next push; its copies of the reports are gone.
    assert await asyncio.to_thread(_envelopes, net.hq / "node") == 0
