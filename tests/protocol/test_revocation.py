"""HQ's revocation list (SPEC.md §17): only the root of this network can sign one, every
list has one encoding, and a node follows the one with the highest serial."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fieldsync_protocol import codec, crypto, membership
from fieldsync_protocol.bundle import HEAD_SIZE, BundleWriter, sealed_by
from fieldsync_protocol.crypto import Domain
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.items import ItemKind, check_item, parse_item
from fieldsync_protocol.keydelivery import (
    INNER_SIZE,
    MAX_GRACE,
    SEALED_SIZE,
    KeyDelivery,
    open_delivery,
    seal_delivery,
)
from fieldsync_protocol.revocation import (
    MAX_REVOCATION_ITEM,
    MAX_REVOKED,
    RevocationList,
    RevokedAuthor,
    open_revocation,
    sign_revocation,
    supersedes,
)
from tests.protocol import test_handshake as hs
from tests.protocol.protocol_support import CLAIMED_TIME, DETERMINISTIC, make_net, seed

NET = make_net("revocation")
OTHER = make_net("revocation-other")
keys = st.binary(min_size=32, max_size=32)


def node(label: str) -> bytes:
    return crypto.box_public_key(seed(f"revoked-node/{label}"))


def example(serial: int = 3, **overrides: Any) -> RevocationList:
    values: dict[str, Any] = {
        "network_id": NET.network_id,
        "serial": serial,
        "time": CLAIMED_TIME,
        "nodes": tuple(sorted([node("c"), node("d")])),
        "authors": (RevokedAuthor(NET.author_key(2), 7),),
    }
    values.update(overrides)
    return RevocationList(**values)


def open_item(item: bytes, net: Any = NET) -> RevocationList:
    checked = check_item(item, net.manifest)
    assert checked.revocation is not None
    return checked.revocation


def forged(body: dict[str, Any], signer: bytes = NET.root_seed, **outer: Any) -> bytes:
    """A list built by hand, signed by ``signer``, with none of ``sign_revocation``'s checks."""
    body_bytes = codec.encode(body)
    fields: dict[str, Any] = {
        "b": body_bytes,
        "s": crypto.sign(Domain.REVOCATION, signer, body_bytes),
        "t": "l",
    }
    fields.update({"v": 1, **outer})
    return codec.encode(fields)


def body_of(revocations: RevocationList, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "authors": [{"k": a.key, "q": a.cutoff} for a in revocations.authors],
        "n": revocations.network_id,
        "nodes": list(revocations.nodes),
        "q": revocations.serial,
        "time": revocations.time,
        "v": 1,
    }
    body.update(overrides)
    return body


# --- round trip and lookups ------------------------------------------------------------------


@DETERMINISTIC
@given(
    nodes=st.lists(keys, max_size=30, unique=True),
    authors=st.dictionaries(keys, st.integers(0, 2**63 - 1), max_size=30),
    serial=st.integers(0, 2**32 - 1),
    time=st.integers(0, 2**63 - 1),
)
def test_round_trip(nodes: list[bytes], authors: dict[bytes, int], serial: int, time: int) -> None:
    revocations = RevocationList(
        NET.network_id,
        serial,
        time,
        tuple(sorted(nodes)),
        tuple(RevokedAuthor(k, q) for k, q in sorted(authors.items())),
    )
    item = sign_revocation(revocations, NET.root_seed)
    assert parse_item(item).kind is ItemKind.REVOCATION
    assert open_item(item) == revocations
    for key in nodes:
        assert revocations.revokes_node(key)
    for key, cutoff in authors.items():
        assert revocations.author_cutoff(key) == cutoff


def test_lookups_of_keys_not_listed() -> None:
    revocations = example()
    assert not revocations.revokes_node(node("a"))
    assert not revocations.revokes_node(b"\xff" * 32)  # past the last key
    assert revocations.author_cutoff(NET.author_key(0)) is None
    assert not RevocationList(NET.network_id, 1, 0).revokes_node(node("c"))


def test_a_higher_serial_supersedes_and_a_replayed_older_list_does_not() -> None:
    newer, older = example(serial=5), example(serial=4, nodes=())
    assert supersedes(older, None)
    assert supersedes(newer, older)
    assert not supersedes(older, newer)  # a replay of the older list changes nothing
    assert not supersedes(newer, newer)


# --- refusals --------------------------------------------------------------------------------


def test_not_signed_by_this_networks_root_is_refused() -> None:
    for signer in (NET.receipt_seed, NET.certificate_seed, OTHER.root_seed):
        item = sign_revocation(example(), signer)
        with pytest.raises(RemoteProtocolError, match="signature is not valid"):
            open_item(item)
    # Another network's list, signed by its own root, is refused by our members.
    theirs = sign_revocation(example(network_id=OTHER.network_id), OTHER.root_seed)
    assert open_item(theirs, OTHER).network_id == OTHER.network_id
    with pytest.raises(RemoteProtocolError, match="signature"):
        open_item(theirs)
    mixed = sign_revocation(example(network_id=OTHER.network_id), NET.root_seed)
    with pytest.raises(RemoteProtocolError, match="another network"):
        open_item(mixed)


def test_a_signature_of_another_domain_is_refused() -> None:
    body = codec.encode(body_of(example()))
    for domain in (Domain.MANIFEST, Domain.RECEIPT, Domain.CERTIFICATE):
        item = codec.encode(
            {"b": body, "s": crypto.sign(domain, NET.root_seed, body), "t": "l", "v": 1}
        )
        with pytest.raises(RemoteProtocolError, match="signature is not valid"):
            open_item(item)


def test_every_tampered_byte_is_refused() -> None:
    item = bytearray(sign_revocation(example(), NET.root_seed))
    for index in range(len(item)):
        tampered = bytearray(item)
        tampered[index] ^= 0x01
        try:
            checked = check_item(bytes(tampered), NET.manifest)
        except RemoteProtocolError:
            continue
        # Only a changed kind letter still parses: as an item of an unknown kind, which a
        # member carries but never acts on (SPEC.md §10). It is never a revocation list.
        assert checked.item.kind is ItemKind.OPAQUE and checked.revocation is None


def test_oversized_list_is_refused_before_parsing() -> None:
    huge = codec.encode({"b": bytes(MAX_REVOCATION_ITEM), "s": bytes(64), "t": "l", "v": 1})
    with pytest.raises(RemoteProtocolError, match="over the 131072-byte cap"):
        parse_item(huge)
    too_many = [node(str(i)) for i in range(MAX_REVOKED + 1)]
    item = forged(body_of(example(), nodes=sorted(too_many)))
    with pytest.raises(RemoteProtocolError, match="at most 1024"):
        open_item(item)
    authors = [{"k": k, "q": 1} for k in sorted(too_many)]
    with pytest.raises(RemoteProtocolError, match="at most 1024"):
        open_item(forged(body_of(example(), authors=authors)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nodes": "not a list"}, "nodes must list"),
        ({"nodes": [b"short"]}, "32-byte keys"),
        ({"authors": {}}, "authors must list"),
        ({"authors": [{"k": node("a")}]}, "lacks field"),
        ({"authors": [{"k": node("a"), "q": -1}]}, "outside"),
        ({"v": 2}, "version"),
        ({"v": True}, "version"),
        ({"q": 2**32}, "outside"),
        ({"time": "now"}, "must be an integer"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_malformed_body_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        open_item(forged(body_of(example(), **change)))


def test_unsorted_or_repeated_keys_are_refused() -> None:
    a, b = sorted([node("a"), node("b")])
    for nodes in ([b, a], [a, a]):
        with pytest.raises(RemoteProtocolError, match="sorted ascending"):
            open_item(forged(body_of(example(), nodes=nodes)))
    authors = [{"k": b, "q": 1}, {"k": a, "q": 1}]
    with pytest.raises(RemoteProtocolError, match="sorted ascending"):
        open_item(forged(body_of(example(), authors=authors)))


def test_wrong_outer_fields_are_refused() -> None:
    body = body_of(example())
    with pytest.raises(RemoteProtocolError, match="wrong type or version"):
        open_revocation(codec.decode(forged(body, t="r")), NET.manifest)
    with pytest.raises(RemoteProtocolError, match="version"):
        parse_item(forged(body, v=2))
    with pytest.raises(RemoteProtocolError, match="unknown field"):
        parse_item(forged(body, extra=b""))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"network_id": b"short"}, "16 bytes"),
        ({"serial": 2**32}, "serial"),
        ({"time": -1}, "serial"),
        ({"nodes": (b"short",)}, "32 bytes"),
        ({"nodes": tuple(sorted([node("a"), node("b")], reverse=True))}, "sorted"),
        ({"authors": (RevokedAuthor(node("a"), -1),)}, "cut-off"),
        ({"nodes": tuple(sorted(node(str(i)) for i in range(MAX_REVOKED + 1)))}, "at most"),
    ],
)
def test_writer_refuses_what_readers_refuse(change: dict[str, Any], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        sign_revocation(dataclasses.replace(example(), **change), NET.root_seed)


# --- the handshake: expiry and network-key rotation (SPEC.md §17.4, §17.5) ------------------


def test_expired_certificates_are_refused_in_both_roles() -> None:
    initiator, responder, refuses, run, pub = (
        hs.initiator,
        hs.responder,
        hs.refuses,
        hs.run,
        hs.pub,
    )
    expires = membership.open_certificate(hs.CERTS[hs.B], hs.NET.manifest).expires
    # HQ's latest signed time is past the expiry: refused, as responder and as initiator.
    ours = initiator(hq_time=expires + 1)
    theirs = responder()
    theirs.receive_data(ours.data_to_send())
    refuses(ours, theirs.data_to_send(), "peer certificate expired")  # message 3 never sent
    ours = initiator()
    theirs = responder(hq_time=expires + 1)
    theirs.receive_data(ours.data_to_send())
    ours.receive_data(theirs.data_to_send())
    refuses(theirs, ours.data_to_send(), "HQ must renew it")
    # At the expiry itself both are still valid (and with no list followed, time 0, too).
    ours, theirs = initiator(hq_time=expires), responder(hq_time=expires)
    run(ours, theirs)
    assert ours.is_complete and theirs.peer is not None and theirs.peer.node_key == pub(hs.A)


def test_a_responder_in_grace_accepts_both_network_keys() -> None:
    initiator, responder, refuses, run = hs.initiator, hs.responder, hs.refuses, hs.run
    new_key, old_key = seed("next network key"), hs.NET.network_key
    for dialled_with in (old_key, new_key):
        ours = initiator(network_key=dialled_with)
        theirs = responder(network_key=new_key, also_accept=[old_key])
        run(ours, theirs)
        assert ours.is_complete and theirs.is_complete
        assert theirs.network_key == dialled_with == ours.network_key
        sender, _ = ours.transport()
        _, receiver = theirs.transport()
        receiver.receive_data(sender.send(b"under the key they agreed on"))
        event = receiver.next_event()
        assert (
            event is not None and getattr(event, "payload", None) == b"under the key they agreed on"
        )
    # After the switch only the new key opens message 1: an ex-member's old key gets silence.
    theirs = responder(network_key=new_key)
    refuses(theirs, initiator(network_key=old_key).data_to_send(), "handshake message 1")
    assert theirs.data_to_send() == b""
    # A key in neither place fails the same way, whatever the number of keys tried.
    theirs = responder(network_key=new_key, also_accept=[old_key])
    refuses(theirs, initiator(network_key=seed("stranger")).data_to_send(), "message 1")
    with pytest.raises(ValueError, match="only a responder"):
        initiator(also_accept=[old_key])


# --- key deliveries (SPEC.md §17.5) -----------------------------------------------------------

NODE_SECRET = seed("delivery node")
NODE_KEY = crypto.box_public_key(NODE_SECRET)


def delivery(**overrides: Any) -> KeyDelivery:
    values: dict[str, Any] = {
        "network_id": NET.network_id,
        "node_key": NODE_KEY,
        "serial": 5,
        "certificate": NET.certificate(NODE_SECRET),
        "network_key_id": 2,
        "network_key": seed("network key 2"),
        "grace": 7 * 86_400,
    }
    values.update(overrides)
    return KeyDelivery(**values)


def sealed(value: KeyDelivery, signer: bytes = NET.root_seed, to: bytes = NODE_KEY) -> bytes:
    return seal_delivery(dataclasses.replace(value, node_key=to), signer, seed("delivery eph"))


def reseal(inner: bytes, to: bytes = NODE_KEY) -> bytes:
    """Any inner document, padded and sealed as a delivery: what anyone knowing a node key
    can make."""
    padded = inner + b"\x80" + bytes(INNER_SIZE - len(inner) - 1)
    return codec.encode({"c": crypto.seal(padded, to, seed("forger eph")), "t": "k", "v": 1})


def opened(item: bytes, secret: bytes = NODE_SECRET) -> KeyDelivery | None:
    checked = check_item(item, NET.manifest)
    assert checked.item.kind is ItemKind.KEY_DELIVERY
    return open_delivery(checked.item.fields, NET.manifest, secret)


def test_delivery_round_trip_and_only_its_node_opens_it() -> None:
    value = delivery()
    item = sealed(value)
    assert opened(item) == value
    assert opened(item, seed("another node")) is None  # sealed to someone else
    # Every delivery has the same size, whatever it carries: relays learn nothing from it.
    other = sealed(delivery(certificate=NET.certificate(NODE_SECRET, expires=0), grace=0))
    assert len(other) == len(item)


def test_delivery_not_from_this_root_or_for_another_node_is_refused() -> None:
    for signer in (NET.certificate_seed, OTHER.root_seed):
        with pytest.raises(RemoteProtocolError, match="signature is not valid"):
            opened(sealed(delivery(), signer))
    # Sealed to us but naming another node: a delivery for B forwarded (re-sealed) to us.
    value = delivery(node_key=crypto.box_public_key(seed("b")))
    body = delivery_body(value)
    inner = codec.encode({"b": body, "s": crypto.sign(Domain.KEY_DELIVERY, NET.root_seed, body)})
    with pytest.raises(RemoteProtocolError, match="names another node"):
        opened(reseal(inner))


def delivery_body(value: KeyDelivery, **overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "cert": value.certificate,
        "grace": value.grace,
        "kid": value.network_key_id,
        "knet": value.network_key,
        "n": value.network_id,
        "node": value.node_key,
        "q": value.serial,
        "v": 1,
    }
    body.update(overrides)
    return codec.encode(body)


def signed_inner(**overrides: Any) -> bytes:
    body = delivery_body(delivery(), **overrides)
    return codec.encode({"b": body, "s": crypto.sign(Domain.KEY_DELIVERY, NET.root_seed, body)})


@pytest.mark.parametrize(
    ("inner", "message"),
    [
        (lambda: signed_inner(v=2), "version"),
        (lambda: signed_inner(n=OTHER.network_id), "another network"),
        (lambda: signed_inner(cert=NET.certificate(seed("someone else"))), "another node"),
        (lambda: signed_inner(cert=OTHER.certificate(NODE_SECRET)), "signature"),
        (lambda: signed_inner(grace=MAX_GRACE + 1), "outside"),
        (lambda: signed_inner(knet=b"short"), "32 bytes"),
        (lambda: signed_inner(extra=1), "unknown field"),
        (lambda: codec.encode({"b": b"", "s": bytes(64), "x": 1}), "unknown field"),
    ],
)
def test_malformed_delivery_sealed_to_us_is_refused(inner: Any, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        opened(reseal(inner()))


def test_damaged_padding_and_outer_layer_are_refused() -> None:
    good = signed_inner()
    no_marker = good + bytes(INNER_SIZE - len(good))
    item = codec.encode({"c": crypto.seal(no_marker, NODE_KEY, seed("e")), "t": "k", "v": 1})
    with pytest.raises(RemoteProtocolError, match="padding"):
        opened(item)
    with pytest.raises(RemoteProtocolError, match="must be 1072 bytes"):
        parse_item(codec.encode({"c": bytes(100), "t": "k", "v": 1}))
    with pytest.raises(RemoteProtocolError, match="unknown field"):
        parse_item(codec.encode({"c": bytes(SEALED_SIZE), "k": 1, "t": "k", "v": 1}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"network_id": b"short"}, "16 bytes"),
        ({"node_key": b"short"}, "32 bytes"),
        ({"network_key": b"short"}, "32 bytes"),
        ({"serial": -1}, "serial and key id"),
        ({"network_key_id": 2**32}, "serial and key id"),
        ({"grace": MAX_GRACE + 1}, "grace"),
        ({"certificate": bytes(1000)}, "must fit"),
    ],
)
def test_delivery_writer_refuses_what_readers_refuse(change: dict[str, Any], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        seal_delivery(delivery(**change), NET.root_seed, seed("e"))


# --- bundles under the current or the next network key ----------------------------------------


def test_sealed_by_names_the_key_of_a_bundle() -> None:
    old, new = NET.network_key, seed("next network key")
    for key in (old, new):
        writer = BundleWriter(key, NET.network_id, seed("file nonce")[:16])
        data = writer.add(sign_revocation(example(), NET.root_seed)) + writer.finish()
        assert sealed_by(data[:HEAD_SIZE], [old, new]) == key
        assert sealed_by(data[:HEAD_SIZE], [seed("stranger")]) is None
        assert sealed_by(data[: HEAD_SIZE - 1], [old, new]) is None  # too short to tell
    writer = BundleWriter(new, NET.network_id, seed("file nonce")[:16])
    # Several chunks: chunk 0 is then sealed as a "more" chunk, not the final one.
    data = writer.add(codec.encode({"c": bytes(200_000), "t": "zz", "v": 1})) + writer.finish()
    assert len(data) > 2 * HEAD_SIZE
    assert sealed_by(data[:HEAD_SIZE], [old, new]) == new
