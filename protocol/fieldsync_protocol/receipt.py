"""HQ delivery receipts (SPEC.md §9).

A receipt item is ``{"b": body, "s": signature, "t": "r", "v": 1}``; the body
``{"n": network id, "q": batch serial, "status": "accepted"|"held"|"dropped",
"tags": [delivery tags], "time": HQ time, "v": 1}`` is signed by the manifest's receipt
key. Receipts name *delivery tags*, not item ids, so a node's copy of a receipt does not
list which items it carried (see ``crypto.delivery_tag``). Only a valid receipt allows a
holder to delete an envelope; ``status`` says what HQ did with it, so an author's device
shows "delivered" only for ``accepted``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from fieldsync_protocol import codec
from fieldsync_protocol.crypto import Domain, sign, verify
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.membership import NETWORK_ID_SIZE, VERSION, Manifest, is_version

MAX_TAGS = 4096
TAG_SIZE = 32


class ReceiptStatus(Enum):
    """What HQ did with the envelopes a receipt names (SPEC.md §9). Holders delete on all."""

    #: HQ verified and recorded the reports: the author's device shows them delivered.
    ACCEPTED = "accepted"
    #: HQ opened them but refused them for now and keeps them for review (quarantine).
    HELD = "held"
    #: They open under none of HQ's keys: junk, not kept. No honest report is ever dropped.
    DROPPED = "dropped"


@dataclass(frozen=True)
class Receipt:
    """HQ's signed word on the reports named by their delivery ``tags`` (SPEC.md §9)."""

    network_id: bytes
    serial: int
    time: int
    tags: tuple[bytes, ...]
    status: ReceiptStatus = ReceiptStatus.ACCEPTED


def sign_receipt(receipt: Receipt, receipt_seed: bytes) -> bytes:
    """Encode ``receipt`` as an item signed with the manifest's receipt key."""
    if not 1 <= len(receipt.tags) <= MAX_TAGS:
        raise LocalProtocolError(f"a receipt names 1..{MAX_TAGS} tags")
    if not all(len(tag) == TAG_SIZE for tag in receipt.tags):
        raise LocalProtocolError(f"delivery tags are {TAG_SIZE} bytes")
    if len(receipt.network_id) != NETWORK_ID_SIZE:
        raise LocalProtocolError("network id must be 16 bytes")
    if not (0 <= receipt.serial < 2**63 and 0 <= receipt.time < 2**63):
        raise LocalProtocolError("serial and time must be 0..2**63-1")
    body = codec.encode(
        {
            "n": receipt.network_id,
            "q": receipt.serial,
            "status": receipt.status.value,
            "tags": list(receipt.tags),
            "time": receipt.time,
            "v": VERSION,
        }
    )
    signature = sign(Domain.RECEIPT, receipt_seed, body)
    return codec.encode({"b": body, "s": signature, "t": "r", "v": VERSION})


def open_receipt(item: dict[str, Any], manifest: Manifest) -> Receipt:
    """Verify a decoded receipt item against the network's receipt key."""
    what = "receipt"
    codec.as_map(item, what, {"b", "s", "t", "v"})
    if item["t"] != "r" or not is_version(item["v"]):
        raise RemoteProtocolError("receipt item has the wrong type or version")
    body_bytes = codec.get_bytes(item, "b", what)
    signature = codec.get_bytes(item, "s", what, 64)
    verify(Domain.RECEIPT, manifest.receipt_key, body_bytes, signature, what)
    body = codec.as_map(
        codec.decode(body_bytes, what=what), what, {"n", "q", "status", "tags", "time", "v"}
    )
    version = codec.get_int(body, "v", what)
    if version != VERSION:
        raise RemoteProtocolError(f"receipt version {version} is not {VERSION}")
    network_id = codec.get_bytes(body, "n", what, NETWORK_ID_SIZE)
    if network_id != manifest.network_id:
        raise RemoteProtocolError("receipt belongs to another network")
    tags = body["tags"]
    if not isinstance(tags, list) or not 1 <= len(tags) <= MAX_TAGS:
        raise RemoteProtocolError(f"receipt must name 1..{MAX_TAGS} tags")
    if not all(isinstance(t, bytes) and len(t) == TAG_SIZE for t in tags):
        raise RemoteProtocolError(f"receipt tags must be {TAG_SIZE}-byte strings")
    try:
        status = ReceiptStatus(body["status"])
    except ValueError:
        raise RemoteProtocolError(
            f"receipt status must be one of {', '.join(s.value for s in ReceiptStatus)}"
        ) from None
    return Receipt(
        network_id=network_id,
        serial=codec.get_int(body, "q", what),
        time=codec.get_int(body, "time", what),
        tags=tuple(tags),
        status=status,
    )
