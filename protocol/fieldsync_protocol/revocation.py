"""HQ's revocation list: which node keys and author keys are cut off (SPEC.md §17).

A revocation list is an item of kind ``"l"`` signed by the network's root key::

    item = {"b": body, "s": signature, "t": "l", "v": 1}
    body = {"authors": [{"k": author key, "q": cut-off sequence}, ...], "n": network id,
            "nodes": [node key, ...], "q": serial, "time": HQ time, "v": 1}

Each list is complete (it names everything revoked so far), so a node only ever needs the
one with the highest serial: a replayed older list changes nothing. ``time`` is HQ's clock
when it signed the list; it is the beacon against which certificate expiry is judged
(§17.3), never the device's own clock. Keys are listed in ascending byte order, once each,
so a list has exactly one encoding and lookups need no sorting.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import Any

from fieldsync_protocol import codec
from fieldsync_protocol.crypto import Domain, sign, verify
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.membership import KEY_SIZE, NETWORK_ID_SIZE, VERSION, Manifest, is_version

KIND = "l"
#: Largest revocation list item (bytes): far below MAX_ITEM, checked before any parsing.
MAX_REVOCATION_ITEM = 131_072
#: Most node keys, and most author keys, one list names.
MAX_REVOKED = 1024
MAX_SERIAL = 2**32 - 1
MAX_SEQUENCE = 2**63 - 1


@dataclass(frozen=True)
class RevokedAuthor:
    """An author key HQ no longer trusts past ``cutoff``: the highest sequence number HQ
    had received from it when it revoked it. HQ flags that author's reports above it."""

    key: bytes
    cutoff: int


@dataclass(frozen=True)
class RevocationList:
    network_id: bytes
    serial: int
    time: int
    nodes: tuple[bytes, ...] = ()
    authors: tuple[RevokedAuthor, ...] = ()

    def revokes_node(self, node_key: bytes) -> bool:
        index = bisect.bisect_left(self.nodes, node_key)
        return index < len(self.nodes) and self.nodes[index] == node_key

    def author_cutoff(self, author_key: bytes) -> int | None:
        """The cut-off sequence of a revoked author, or None if the author is not revoked."""
        for entry in self.authors:
            if entry.key == author_key:
                return entry.cutoff
        return None


def _strictly_ascending(keys: list[bytes]) -> bool:
    return all(a < b for a, b in itertools.pairwise(keys))


def sign_revocation(revocations: RevocationList, root_seed: bytes) -> bytes:
    """Encode ``revocations`` as an item (``t`` = ``"l"``) signed by the root key."""
    if len(revocations.network_id) != NETWORK_ID_SIZE:
        raise LocalProtocolError("network id must be 16 bytes")
    if not (0 <= revocations.serial <= MAX_SERIAL and 0 <= revocations.time <= MAX_SEQUENCE):
        raise LocalProtocolError(f"serial must be 0..{MAX_SERIAL} and time 0..2**63-1")
    nodes = list(revocations.nodes)
    author_keys = [entry.key for entry in revocations.authors]
    if len(nodes) > MAX_REVOKED or len(author_keys) > MAX_REVOKED:
        raise LocalProtocolError(f"a revocation list names at most {MAX_REVOKED} keys of each kind")
    if not all(len(key) == KEY_SIZE for key in nodes + author_keys):
        raise LocalProtocolError(f"revoked keys are {KEY_SIZE} bytes")
    if not (_strictly_ascending(nodes) and _strictly_ascending(author_keys)):
        raise LocalProtocolError("revoked keys must be sorted ascending, each once")
    if not all(0 <= entry.cutoff <= MAX_SEQUENCE for entry in revocations.authors):
        raise LocalProtocolError("cut-off sequences are 0..2**63-1")
    body = codec.encode(
        {
            "authors": [{"k": entry.key, "q": entry.cutoff} for entry in revocations.authors],
            "n": revocations.network_id,
            "nodes": nodes,
            "q": revocations.serial,
            "time": revocations.time,
            "v": VERSION,
        }
    )
    item = codec.encode(
        {"b": body, "s": sign(Domain.REVOCATION, root_seed, body), "t": KIND, "v": VERSION}
    )
    return item  # at most about 84 KiB with 1,024 keys of each kind: under the cap


def open_revocation(item: dict[str, Any], manifest: Manifest) -> RevocationList:
    """Verify a decoded revocation list item under the manifest's root key."""
    what = "revocation list"
    codec.as_map(item, what, {"b", "s", "t", "v"})
    if item["t"] != KIND or not is_version(item["v"]):
        raise RemoteProtocolError("revocation list item has the wrong type or version")
    body_bytes = codec.get_bytes(item, "b", what)
    signature = codec.get_bytes(item, "s", what, 64)
    verify(Domain.REVOCATION, manifest.root_key, body_bytes, signature, what)
    body = codec.as_map(
        codec.decode(body_bytes, max_size=MAX_REVOCATION_ITEM, what=what),
        what,
        {"authors", "n", "nodes", "q", "time", "v"},
    )
    if not is_version(body["v"]):
        raise RemoteProtocolError(f"{what} has version {body['v']!r:.20}; expected {VERSION}")
    network_id = codec.get_bytes(body, "n", what, NETWORK_ID_SIZE)
    if network_id != manifest.network_id:
        raise RemoteProtocolError("revocation list belongs to another network")
    nodes = body["nodes"]
    if not isinstance(nodes, list) or len(nodes) > MAX_REVOKED:
        raise RemoteProtocolError(f"{what}.nodes must list at most {MAX_REVOKED} keys")
    if not all(isinstance(key, bytes) and len(key) == KEY_SIZE for key in nodes):
        raise RemoteProtocolError(f"{what}.nodes must hold {KEY_SIZE}-byte keys")
    entries = body["authors"]
    if not isinstance(entries, list) or len(entries) > MAX_REVOKED:
        raise RemoteProtocolError(f"{what}.authors must list at most {MAX_REVOKED} keys")
    authors = []
    for entry in entries:
        fields = codec.as_map(entry, f"{what}.authors[]", {"k", "q"})
        authors.append(
            RevokedAuthor(
                codec.get_bytes(fields, "k", f"{what}.authors[]", KEY_SIZE),
                codec.get_int(fields, "q", f"{what}.authors[]"),
            )
        )
    if not (_strictly_ascending(nodes) and _strictly_ascending([a.key for a in authors])):
        raise RemoteProtocolError(f"{what} keys must be sorted ascending, each once")
    return RevocationList(
        network_id=network_id,
        serial=codec.get_int(body, "q", what, 0, MAX_SERIAL),
        time=codec.get_int(body, "time", what),
        nodes=tuple(nodes),
        authors=tuple(authors),
    )


def supersedes(candidate: RevocationList, current: RevocationList | None) -> bool:
    """True when a node should adopt ``candidate`` over ``current`` (a higher serial)."""
    return current is None or candidate.serial > current.serial
