"""Memory by role (issue 13 item 7), checked by behaviour, never by MB: a relay's store has
a capped page cache and an author's keeps SQLCipher's default; after a bulk session the
freed heap is given back to the system (``heap``), and that really lowers the RSS."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fieldsync import heap, synthetic
from fieldsync.runtime import Runtime, Server
from fieldsync.store import RELAY_CACHE_KIB, Store
from tests.environment import missing


@pytest.fixture
def network(tmp_path: Path) -> synthetic.SyntheticNetwork:
    return synthetic.create_network(tmp_path)


def uncapped_cache_kib(path: Path) -> int:
    """The page cache of a store opened without a cap: the library's own default."""
    store = Store(path)
    try:
        return store.page_cache_kib()
    finally:
        store.close()


async def test_a_relay_caps_its_page_cache_and_an_author_does_not(
    network: synthetic.SyntheticNetwork,
) -> None:
    relay = await asyncio.to_thread(network.add_node, "relay")
    author = await asyncio.to_thread(network.add_node, "author", author=True)
    default_kib = await asyncio.to_thread(uncapped_cache_kib, relay / "probe.db")
    relay_runtime = await Runtime.open(relay)
    author_runtime = await Runtime.open(author)
    try:
        assert await relay_runtime.worker.call(Store.page_cache_kib) == RELAY_CACHE_KIB
        assert await author_runtime.worker.call(Store.page_cache_kib) == default_kib
    finally:
        await relay_runtime.close()
        await author_runtime.close()
    assert default_kib > RELAY_CACHE_KIB  # else the cap would save nothing


def test_a_page_cache_cap_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive number of KiB"):
        Store(tmp_path / "store.db", cache_kib=0)


async def released(runtime: Runtime, count: int) -> None:
    """Wait until ``runtime`` released its heap ``count`` times: the server's session ends
    a moment after the initiator's."""
    deadline = time.monotonic() + 30
    while runtime.heap_releases < count:
        assert time.monotonic() < deadline, f"{runtime.heap_releases} releases, not {count}"
        await asyncio.sleep(0.01)


async def recorded(runtime: Runtime, sessions: int) -> None:
    """Wait until ``runtime`` recorded the outcome of ``sessions`` sessions."""
    deadline = time.monotonic() + 30
    while len(runtime.outcomes) < sessions:
        assert time.monotonic() < deadline, f"{len(runtime.outcomes)} sessions, not {sessions}"
        await asyncio.sleep(0.01)


async def test_the_heap_is_released_after_a_bulk_session_only(
    network: synthetic.SyntheticNetwork,
) -> None:
    if not heap.available():
        missing("no malloc_trim in this C library (not glibc)")
    sender = await asyncio.to_thread(network.add_node, "sender")
    relay = await asyncio.to_thread(network.add_node, "relay")
    items = synthetic.sealed_reports(network.manifest, 6)
    await asyncio.to_thread(synthetic.fill_store, sender, network.manifest, items)
    receiving = await Runtime.open(relay)
    receiving.bulk_session_items = 5
    server = Server(receiving)
    sending = await Runtime.open(sender)
    try:
        _host, port = await server.listen_tcp("127.0.0.1", 0)
        sending.bulk_session_items = 1_000_000  # this side's session never counts as bulk
        first = await sending.sync_with(f"127.0.0.1:{port}")
        assert first.complete and first.stats.items_sent >= 6
        await released(receiving, 1)
        # Nothing new moves on the next contact: no release for a session that small (the
        # server counts a release in the same step as it records the outcome).
        again = await sending.sync_with(f"127.0.0.1:{port}")
        assert again.complete and again.stats.items_sent == 0
        await recorded(receiving, 2)
        assert receiving.heap_releases == 1
        assert sending.heap_releases == 0
    finally:
        await server.close()
        await sending.close()
        await receiving.close()


_FRAGMENTED_HEAP = """\
import json, sys
from fieldsync import heap

def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

# Blocks above pymalloc's limit come from malloc; the last one stays, so the freed ones
# sit below the top of the heap, where free() alone never returns them.
blocks = [bytes(4000) for _ in range(20_000)]
pinned = bytes(4000)
del blocks
before = rss_kib()
released = heap.release_free_memory()
print(json.dumps({"released": released, "before": before, "after": rss_kib()}))
"""


def test_release_free_memory_lowers_the_rss_of_a_fragmented_heap() -> None:
    if not heap.available():
        missing("no malloc_trim in this C library (not glibc)")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_FRAGMENTED_HEAP)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["released"] is True
    assert result["after"] < result["before"]


def test_release_free_memory_answers_false_where_there_is_nothing_to_call() -> None:
    """Where malloc_trim is missing the call is a no-op that says so, never an error."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.platform = 'darwin'\n"
            "from fieldsync import heap\n"
            "print(heap.available(), heap.release_free_memory())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["False", "False"]
