"""Two real processes sync 10,000 reports each way, over loopback TCP and WebSocket
(issue 3 "Must show").

Node A holds 10,000 real sealed reports, node B another 10,000 (plus the network manifest
each). A serves with ``fieldsync run``; B runs ``fieldsync sync``. Afterwards both SQLite
files hold the same 20,001 ids, pass ``integrity_check`` and hash every item to its id.

A second sync moves nothing. What "at most 1 KB" counts: the handshake is three
fixed-size messages (48 + 352 + 320 = 720 B) that every connection pays, whatever the
session does, so the bound is applied to the *session's* own traffic: everything on the
wire in both directions minus those 720 B (frames, padding, HELLO, END, ACK). The test
prints both numbers; the wire total including the handshake is bounded too, loosely.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.sync_support import (
    HANDSHAKE_BYTES,
    ITEMS_PER_NODE,
    Pair,
    check_store,
    copy_pair,
    run_sync,
    shared_pair,
    start_server,
)

#: The session's own bytes (both directions, handshake excluded) on a no-op repeat sync.
SESSION_BUDGET = 1024


@pytest.fixture
def pair(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Pair:
    return copy_pair(shared_pair(tmp_path_factory.getbasetemp()), tmp_path / "pair")


@pytest.mark.parametrize("kind", ["tcp", "ws"])
def test_two_processes_sync_10k_each_way_then_nothing(pair: Pair, kind: str) -> None:
    server = start_server(pair.a, ws=kind == "ws")
    try:
        first = run_sync(pair.b, server.target(kind))
        assert first.complete, (first, server.log_text())
        s = first.summary
        assert s["items_sent"] == ITEMS_PER_NODE
        assert s["items_received"] == ITEMS_PER_NODE
        assert s["items_new"] == ITEMS_PER_NODE

        second = run_sync(pair.b, server.target(kind))
        assert second.complete, (second, server.log_text())
        s2 = second.summary
        session_bytes = second.wire_bytes - HANDSHAKE_BYTES
        print(
            f"\n{kind}: first sync {first.wire_bytes} B on the wire,"
            f" {s['round_trips']} round trips; second sync: mode {s2.get('mode')},"
            f" {s2['round_trips']} round trip(s), wire {second.wire_bytes} B"
            f" ({s2['wire_bytes_sent']} out + {s2['wire_bytes_received']} in),"
            f" session {session_bytes} B without the {HANDSHAKE_BYTES} B handshake"
        )
        assert s2["items_sent"] == s2["items_received"] == s2["items_new"] == 0, s2
        assert session_bytes <= SESSION_BUDGET, s2
        assert second.wire_bytes <= HANDSHAKE_BYTES + SESSION_BUDGET, s2
    finally:
        assert server.stop() == 0, server.log_text()

    ids_a, ids_b = check_store(pair.a), check_store(pair.b)
    assert ids_a == ids_b == pair.union
    assert len(ids_a) == 2 * ITEMS_PER_NODE + 1
