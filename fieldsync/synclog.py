"""One INFO line per sync session on both sides, naming the peer by a local pseudonym.

A log on a seized device must not list which members met (DESIGN §4 "logs use
pseudonyms"): the peer is named by a keyed hash of its node key under a key derived from
this node's own secret. The same peer gets the same name in this node's log (so an
operator can follow it), and an unrelated name in every other node's log.
"""

from __future__ import annotations

import base64
import hashlib
import logging

from fieldsync.peer import SyncOutcome
from fieldsync_protocol.crypto import derive_key

log = logging.getLogger("fieldsync.sync")

_PERSON = b"fs-log-peer"


def peer_pseudonym(own_secret: bytes, peer_node_key: bytes) -> str:
    """``peer-xxxxxxxx``: stable in this node's logs, meaningless anywhere else."""
    key = derive_key(own_secret, b"log pseudonyms")
    digest = hashlib.blake2b(peer_node_key, digest_size=5, key=key, person=_PERSON).digest()
    return "peer-" + base64.b32encode(digest).decode("ascii").lower()


def log_session(
    own_secret: bytes, where: str, outcome: SyncOutcome, seconds: float, *, initiator: bool
) -> None:
    """``synced`` or ``sync failed`` with items each way and the duration."""
    peer = outcome.peer
    who = "unknown peer" if peer is None else peer_pseudonym(own_secret, peer.node_key)
    side = "dialled" if initiator else "accepted"
    if outcome.complete:
        log.info(
            "synced with %s (%s %s): %d items in (%d new), %d out, %.1f s",
            who,
            side,
            where,
            outcome.stats.items_received,
            outcome.items_new,
            outcome.stats.items_sent,
            seconds,
        )
    else:
        log.info(
            "sync with %s (%s %s) did not complete: %s; %d items in, %d out, %.1f s",
            who,
            side,
            where,
            outcome.error,
            outcome.stats.items_received,
            outcome.stats.items_sent,
            seconds,
        )
