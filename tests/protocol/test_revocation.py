"""HQ's revocation list (SPEC.md §17): only the root of this network can sign one, every
list has one encoding, and a node follows the one with the highest serial."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fieldsync_protocol import codec, crypto
from fieldsync_protocol.crypto import Domain
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.items import ItemKind, check_item, parse_item
from fieldsync_protocol.revocation import (
    MAX_REVOCATION_ITEM,
    MAX_REVOKED,
    RevocationList,
    RevokedAuthor,
    open_revocation,
    sign_revocation,
    supersedes,
)
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
