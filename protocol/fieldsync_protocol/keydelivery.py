"""Key deliveries: HQ hands one member its renewed certificate and the network key, sealed
to that member's node key (SPEC.md §17.5).

A key delivery is an item of kind ``"k"``::

    item   = {"c": seal(inner, node key), "t": "k", "v": 1}
    inner  = {"b": body, "s": Ed25519(root key, "fieldsync/1/key-delivery\\0" || body)}
    body   = {"cert": certificate, "grace": seconds, "kid": key id, "knet": network key,
              "n": network id, "node": node key, "q": serial, "v": 1}

It travels to every node like a receipt, but only the node it is sealed to can open it: a
relay sees a sealed box of fixed size, and a revoked node, to which HQ seals nothing, never
learns the next network key. Opening needs the node secret, so ``check_item`` checks only
the outer layer; the recipient opens and verifies it with ``open_delivery``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fieldsync_protocol import codec
from fieldsync_protocol.crypto import (
    SEAL_OVERHEAD,
    Domain,
    box_public_key,
    seal,
    sign,
    unseal,
    verify,
)
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.membership import (
    KEY_SIZE,
    NETWORK_ID_SIZE,
    VERSION,
    Manifest,
    is_version,
    open_certificate,
)

KIND = "k"
#: The signed inner document, padded so every delivery item has the same size.
INNER_SIZE = 1024
#: Exact size of a delivery item's sealed box.
SEALED_SIZE = INNER_SIZE + SEAL_OVERHEAD
MAX_SERIAL = 2**32 - 1
#: Longest grace period (seconds of the recipient's running clock): a year.
MAX_GRACE = 366 * 86_400


@dataclass(frozen=True)
class KeyDelivery:
    network_id: bytes
    #: The recipient's node key.
    node_key: bytes
    #: HQ's delivery serial: a node adopts only a delivery newer than the last it adopted.
    serial: int
    #: The recipient's current (renewed) certificate (SPEC.md §5).
    certificate: bytes
    #: The network key the recipient must use, with its id (ids only ever increase).
    network_key_id: int
    network_key: bytes
    #: Seconds (of the recipient's running clock, from adoption) during which a newer
    #: network key is accepted next to the previous one before it replaces it.
    grace: int


def seal_delivery(delivery: KeyDelivery, root_seed: bytes, ephemeral_secret: bytes) -> bytes:
    """Sign with the root key, pad, seal to the recipient's node key; return the item."""
    if len(delivery.network_id) != NETWORK_ID_SIZE:
        raise LocalProtocolError("network id must be 16 bytes")
    if len(delivery.node_key) != KEY_SIZE or len(delivery.network_key) != KEY_SIZE:
        raise LocalProtocolError("node key and network key must be 32 bytes")
    if not (0 <= delivery.serial <= MAX_SERIAL and 0 <= delivery.network_key_id <= MAX_SERIAL):
        raise LocalProtocolError(f"serial and key id must be 0..{MAX_SERIAL}")
    if not 0 <= delivery.grace <= MAX_GRACE:
        raise LocalProtocolError(f"grace must be 0..{MAX_GRACE} seconds")
    body = codec.encode(
        {
            "cert": delivery.certificate,
            "grace": delivery.grace,
            "kid": delivery.network_key_id,
            "knet": delivery.network_key,
            "n": delivery.network_id,
            "node": delivery.node_key,
            "q": delivery.serial,
            "v": VERSION,
        }
    )
    inner = codec.encode({"b": body, "s": sign(Domain.KEY_DELIVERY, root_seed, body)})
    if len(inner) + 1 > INNER_SIZE:
        raise LocalProtocolError(f"a delivery's signed document must fit {INNER_SIZE - 1} bytes")
    padded = inner + b"\x80" + bytes(INNER_SIZE - len(inner) - 1)  # ISO/IEC 7816-4
    sealed = seal(padded, delivery.node_key, ephemeral_secret)
    return codec.encode({"c": sealed, "t": KIND, "v": VERSION})


def parse_delivery(fields: dict[str, Any]) -> bytes:
    """The outer layer any holder checks; returns the sealed box."""
    codec.as_map(fields, "key delivery", {"c", "t", "v"})
    return codec.get_bytes(fields, "c", "key delivery", SEALED_SIZE)


def open_delivery(
    fields: dict[str, Any], manifest: Manifest, node_secret: bytes
) -> KeyDelivery | None:
    """Open a delivery with this node's secret: None when it is sealed to another node;
    ``RemoteProtocolError`` when it is sealed to us but not a valid delivery from HQ."""
    sealed = parse_delivery(fields)
    try:
        padded = unseal(sealed, node_secret, "key delivery")
    except RemoteProtocolError:
        return None  # for another node: every node tries every delivery
    what = "key delivery"
    inner = padded.rstrip(b"\x00")
    if not inner.endswith(b"\x80"):
        raise RemoteProtocolError(f"{what} padding is damaged")
    outer = codec.as_map(codec.decode(inner[:-1], max_size=INNER_SIZE, what=what), what, {"b", "s"})
    body_bytes = codec.get_bytes(outer, "b", what)
    verify(
        Domain.KEY_DELIVERY,
        manifest.root_key,
        body_bytes,
        codec.get_bytes(outer, "s", what, 64),
        what,
    )
    body = codec.as_map(
        codec.decode(body_bytes, max_size=INNER_SIZE, what=what),
        what,
        {"cert", "grace", "kid", "knet", "n", "node", "q", "v"},
    )
    if not is_version(body["v"]):
        raise RemoteProtocolError(f"{what} has version {body['v']!r:.20}; expected {VERSION}")
    if codec.get_bytes(body, "n", what, NETWORK_ID_SIZE) != manifest.network_id:
        raise RemoteProtocolError(f"{what} belongs to another network")
    own = box_public_key(node_secret)
    if codec.get_bytes(body, "node", what, KEY_SIZE) != own:
        raise RemoteProtocolError(f"{what} names another node (forwarded to us?)")
    certificate = codec.get_bytes(body, "cert", what)
    if open_certificate(certificate, manifest).node_key != own:
        raise RemoteProtocolError(f"{what} carries a certificate for another node")
    return KeyDelivery(
        network_id=manifest.network_id,
        node_key=own,
        serial=codec.get_int(body, "q", what, 0, MAX_SERIAL),
        certificate=certificate,
        network_key_id=codec.get_int(body, "kid", what, 0, MAX_SERIAL),
        network_key=codec.get_bytes(body, "knet", what, KEY_SIZE),
        grace=codec.get_int(body, "grace", what, 0, MAX_GRACE),
    )
