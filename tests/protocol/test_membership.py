"""Manifest, node certificates, enrolment request and enrolment (SPEC.md §4–§6)."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldsync_protocol import codec, crypto, membership
from fieldsync_protocol.crypto import Domain
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.keytext import KeyKind, fingerprint
from fieldsync_protocol.membership import (
    ENROLMENT_PREFIX,
    REQUEST_PREFIX,
    Enrolment,
    EnrolmentRequest,
    Manifest,
    NodeCertificate,
)
from tests.protocol.protocol_support import (
    CLAIMED_TIME,
    DETERMINISTIC,
    Net,
    ephemeral,
    make_net,
    seed,
)

keys = st.binary(min_size=32, max_size=32)
seeds = st.binary(min_size=32, max_size=32)
network_ids = st.binary(min_size=16, max_size=16)
uint32 = st.integers(0, 2**32 - 1)
uint63 = st.integers(0, 2**63 - 1)
names = st.text(max_size=membership.MAX_NAME)
# Hypothesis tests cannot take function-scoped fixtures; these are cheap and deterministic.
CERT_NET = make_net("cert")
ENROLMENT_NET = make_net("enrolment")


def resign(domain: Domain, seed_bytes: bytes, body: dict[str, Any], **outer: Any) -> bytes:
    """A document with an arbitrary body, validly signed by ``seed_bytes``."""
    body_bytes = codec.encode(body)
    return codec.encode(
        {"b": body_bytes, "s": crypto.sign(domain, seed_bytes, body_bytes), **outer}
    )


def manifest_with(net: Net, body_changes: dict[str, Any]) -> bytes:
    body = net.manifest.to_body() | body_changes
    return resign(Domain.MANIFEST, net.root_seed, body, t="m", v=1)


# --- manifest ----------------------------------------------------------------------------


@DETERMINISTIC
@given(
    root=seeds,
    network_id=network_ids,
    name=names,
    epoch=uint32,
    hq=st.dictionaries(uint32, keys, min_size=1, max_size=membership.MAX_HQ_KEYS),
    receipt_key=keys,
    certificate_key=keys,
)
def test_manifest_round_trip(
    root: bytes,
    network_id: bytes,
    name: str,
    epoch: int,
    hq: dict[int, bytes],
    receipt_key: bytes,
    certificate_key: bytes,
) -> None:
    manifest = Manifest(
        network_id, name, epoch, crypto.signing_public_key(root), hq, receipt_key, certificate_key
    )
    item = membership.sign_manifest(manifest, root)
    assert membership.open_manifest(item) == manifest
    assert membership.open_manifest(item, trusted_root=manifest.root_key) == manifest
    assert manifest.current_hq_key_id == max(hq)


def test_manifest_signed_by_a_different_root(net: Net, other_net: Net) -> None:
    with pytest.raises(RemoteProtocolError, match="different root key"):
        membership.open_manifest(other_net.manifest_item, trusted_root=net.manifest.root_key)
    # Naming our root but signed by another: the signature check catches it.
    forged = resign(Domain.MANIFEST, other_net.root_seed, net.manifest.to_body(), t="m", v=1)
    for trusted in (None, net.manifest.root_key):
        with pytest.raises(RemoteProtocolError, match="manifest: signature is not valid"):
            membership.open_manifest(forged, trusted_root=trusted)


def test_manifest_signature_covers_the_body_bytes(net: Net) -> None:
    outer = codec.decode(net.manifest_item)
    body = bytearray(outer["b"])
    body[-40] ^= 1  # inside the root key or receipt key
    tampered = codec.encode(outer | {"b": bytes(body)})
    with pytest.raises(RemoteProtocolError):
        membership.open_manifest(tampered)
    # A signature made for another purpose does not verify as a manifest.
    other_domain = codec.encode(
        outer | {"s": crypto.sign(Domain.CERTIFICATE, net.root_seed, outer["b"])}
    )
    with pytest.raises(RemoteProtocolError, match="signature is not valid"):
        membership.open_manifest(other_domain)


@pytest.mark.parametrize(
    ("outer", "message"),
    [
        ({"t": "r"}, "wrong type or version"),
        ({"v": True}, "wrong type or version"),
        ({"v": 2}, "wrong type or version"),
        ({"s": bytes(63)}, "must be 64 bytes"),
        ({"b": "text"}, "must be bytes"),
        ({"x": 1}, "unknown field"),
    ],
)
def test_manifest_outer_refusals(net: Net, outer: dict[str, Any], message: str) -> None:
    fields = codec.decode(net.manifest_item) | outer
    with pytest.raises(RemoteProtocolError, match=message):
        membership.open_manifest(codec.encode(fields))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"v": 2}, "has version 2; this software reads version 1"),
        ({"hq": []}, "must list 1..16 keys"),
        ({"hq": {"id": 0}}, "must list 1..16 keys"),
        ({"hq": [{"id": i, "pk": bytes(32)} for i in range(17)]}, "must list 1..16 keys"),
        ({"hq": [{"id": 1, "pk": bytes(32)}, {"id": 0, "pk": bytes(32)}]}, "ascending"),
        ({"hq": [{"id": 1, "pk": bytes(32)}, {"id": 1, "pk": bytes(32)}]}, "ascending"),
        ({"hq": [{"id": 2**32, "pk": bytes(32)}]}, "outside"),
        ({"hq": [{"id": 0, "pk": bytes(31)}]}, "must be 32 bytes"),
        ({"hq": [{"id": 0}]}, "lacks field"),
        ({"net": bytes(15)}, "must be 16 bytes"),
        ({"name": "n" * 65}, "longer than 64"),
        ({"ep": -1}, "outside"),
        ({"rcpt": bytes(33)}, "must be 32 bytes"),
        ({"cert": None}, "must be bytes"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_manifest_body_refusals(net: Net, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        membership.open_manifest(manifest_with(net, changes))


def test_manifest_root_field_must_be_a_key(net: Net) -> None:
    with pytest.raises(RemoteProtocolError, match="root must be 32 bytes"):
        membership.open_manifest(manifest_with(net, {"root": bytes(31)}))


def test_manifest_body_must_be_canonical(net: Net) -> None:
    body = codec.encode(net.manifest.to_body())
    long_form = b"\xde\x00\x08" + body[1:]  # map16 header instead of fixmap
    signed = codec.encode(
        {
            "b": long_form,
            "s": crypto.sign(Domain.MANIFEST, net.root_seed, long_form),
            "t": "m",
            "v": 1,
        }
    )
    with pytest.raises(RemoteProtocolError, match="not canonical"):
        membership.open_manifest(signed)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"root_key": bytes(32)}, "root seed does not match"),
        ({"hq_keys": {}}, "1..16 HQ encryption keys"),
        ({"hq_keys": {i: bytes(32) for i in range(17)}}, "1..16 HQ encryption keys"),
        ({"hq_keys": {-1: bytes(32)}}, "HQ key ids"),
        ({"hq_keys": {0: bytes(31)}}, "HQ key ids"),
        ({"network_id": bytes(32)}, "network id must be 16 bytes"),
        ({"name": "n" * 65}, "longer than 64"),
        ({"epoch": 2**32}, "epoch"),
        ({"receipt_key": b""}, "receipt and certificate keys"),
        ({"certificate_key": b""}, "receipt and certificate keys"),
    ],
)
def test_sign_manifest_refuses_what_open_would_refuse(
    net: Net, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        membership.sign_manifest(dataclasses.replace(net.manifest, **change), net.root_seed)


# --- node certificate --------------------------------------------------------------------


@given(node_key=keys, expires=uint63)
@settings(DETERMINISTIC, max_examples=50)
def test_certificate_round_trip(node_key: bytes, expires: int) -> None:
    cert = NodeCertificate(CERT_NET.network_id, node_key, expires)
    data = membership.sign_certificate(cert, CERT_NET.certificate_seed)
    assert membership.open_certificate(data, CERT_NET.manifest) == cert


def test_certificate_refusals(net: Net, other_net: Net) -> None:
    node_secret = seed("node")
    good = net.certificate(node_secret)
    assert membership.open_certificate(good, net.manifest).node_key == crypto.box_public_key(
        node_secret
    )
    with pytest.raises(RemoteProtocolError, match="node certificate: signature is not valid"):
        membership.open_certificate(other_net.certificate(node_secret), net.manifest)
    # Signed by our certificate key but naming another network.
    cert = NodeCertificate(other_net.network_id, bytes(32), CLAIMED_TIME)
    foreign = membership.sign_certificate(cert, net.certificate_seed)
    with pytest.raises(RemoteProtocolError, match="belongs to another network"):
        membership.open_certificate(foreign, net.manifest)
    body = {"exp": 1, "net": net.network_id, "node": bytes(32), "v": 1}
    # Nothing a peer does not need (SPEC.md §5): the role, serial and issue time are gone.
    with pytest.raises(RemoteProtocolError, match="unknown field"):
        membership.open_certificate(
            resign(Domain.CERTIFICATE, net.certificate_seed, body | {"role": "author"}),
            net.manifest,
        )
    with pytest.raises(RemoteProtocolError, match="version 2"):
        membership.open_certificate(
            resign(Domain.CERTIFICATE, net.certificate_seed, body | {"v": 2}), net.manifest
        )
    with pytest.raises(RemoteProtocolError, match="exp must be an integer"):
        membership.open_certificate(
            resign(Domain.CERTIFICATE, net.certificate_seed, body | {"exp": "later"}),
            net.manifest,
        )
    with pytest.raises(RemoteProtocolError, match="unknown field"):
        membership.open_certificate(codec.encode(codec.decode(good) | {"t": "c"}), net.manifest)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"network_id": bytes(3)}, "network id must be 16 bytes"),
        ({"node_key": bytes(3)}, "node key 32 bytes"),
        ({"expires": -1}, "expires must be"),
        ({"expires": 2**63}, "expires must be"),
    ],
)
def test_sign_certificate_local_errors(net: Net, change: dict[str, Any], message: str) -> None:
    cert = NodeCertificate(net.network_id, bytes(32), CLAIMED_TIME)
    with pytest.raises(LocalProtocolError, match=message):
        membership.sign_certificate(dataclasses.replace(cert, **change), net.certificate_seed)


# --- enrolment request -------------------------------------------------------------------


@DETERMINISTIC
@given(
    node_key=keys,
    author_seed=st.none() | seeds,
    name=st.none() | names,
    created=uint63,
    wrap=st.integers(1, 80),
)
def test_request_round_trip(
    node_key: bytes, author_seed: bytes | None, name: str | None, created: int, wrap: int
) -> None:
    author_key = None if author_seed is None else crypto.signing_public_key(author_seed)
    name = None if author_seed is None else name
    request = EnrolmentRequest(node_key, author_key, name, created)
    text = membership.encode_request(request, author_seed)
    assert text.startswith(REQUEST_PREFIX)
    expected = (
        request if author_seed is None else dataclasses.replace(request, author_name=name or "")
    )
    assert membership.decode_request(text) == expected
    # Line breaks and spaces (a wrapped e-mail, a QR reader) do not matter.
    wrapped = "\n".join(text[i : i + wrap] for i in range(0, len(text), wrap))
    assert membership.decode_request(f"  {wrapped}\r\n") == expected


def request_text(raw: dict[str, Any]) -> str:
    return REQUEST_PREFIX + base64.urlsafe_b64encode(codec.encode(raw)).decode().rstrip("=")


def test_request_refusals() -> None:
    author_seed = seed("author")
    author = crypto.signing_public_key(author_seed)
    body = {"author": author, "created": 5, "name": "Ana", "node": bytes(32), "v": 1}
    body_bytes = codec.encode(body)
    signature = crypto.sign(Domain.ENROLMENT_REQUEST, author_seed, body_bytes)
    assert (
        membership.decode_request(request_text({"b": body_bytes, "s": signature})).author_name
        == "Ana"
    )
    unsigned = {k: v for k, v in body.items() if k not in ("author", "name")}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"b": body_bytes}, "not signed by it"),
        (
            {"b": body_bytes, "s": crypto.sign(Domain.ENROLMENT_REQUEST, seed("x"), body_bytes)},
            "signature is not valid",
        ),
        (
            {"b": body_bytes, "s": crypto.sign(Domain.RECEIPT, author_seed, body_bytes)},
            "signature is not valid",
        ),
        ({"b": body_bytes, "s": signature[:10]}, "must be 64 bytes"),
        (
            {"b": codec.encode({k: v for k, v in body.items() if k != "name"}), "s": signature},
            "but no name",
        ),
        ({"b": codec.encode(unsigned), "s": signature}, "has no key"),
        ({"b": codec.encode(unsigned | {"name": "Ana"})}, "has no key"),
        ({"b": codec.encode(unsigned | {"v": 2})}, "version 2"),
        ({"b": codec.encode(unsigned | {"node": bytes(31)})}, "node must be 32 bytes"),
        ({"b": codec.encode(unsigned | {"created": -5})}, "outside"),
        (
            {"b": codec.encode(body | {"author": bytes(31)}), "s": signature},
            "author must be 32 bytes",
        ),
        ({"b": codec.encode(body | {"name": "x" * 65}), "s": signature}, "longer than 64"),
        ({"b": "text"}, "must be bytes"),
        ({"s": signature}, "lacks field"),
    ]
    for raw, message in cases:
        with pytest.raises(RemoteProtocolError, match=message):
            membership.decode_request(request_text(raw))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fieldsync-enrolment:AAAA", "not a enrolment request"),
        (REQUEST_PREFIX + "!!!!", "damaged"),
        (REQUEST_PREFIX + "AAAA+/", "damaged"),
        (REQUEST_PREFIX + "AAAAA", "damaged"),
        (REQUEST_PREFIX + "AB", "damaged"),  # stray low bits in the last character
        (REQUEST_PREFIX + "é", "damaged"),
        (REQUEST_PREFIX + "A" * (membership.MAX_TEXT + 1), "too long"),
        (REQUEST_PREFIX + "AQ", "must be a map"),
        (REQUEST_PREFIX + "wQ", "not valid msgpack"),
    ],
)
def test_request_text_damage(text: str, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        membership.decode_request(text)


def test_encode_request_local_errors() -> None:
    author_seed = seed("author")
    author = crypto.signing_public_key(author_seed)
    cases: list[tuple[EnrolmentRequest, bytes | None, str]] = [
        (EnrolmentRequest(bytes(32), author, "A", 1), None, "needs its seed"),
        (EnrolmentRequest(bytes(32), None, None, 1), author_seed, "needs its seed"),
        (EnrolmentRequest(bytes(32), None, "A", 1), None, "author name needs an author key"),
        (EnrolmentRequest(bytes(32), bytes(32), "A", 1), author_seed, "does not match"),
        (EnrolmentRequest(bytes(32), author, "A" * 65, 1), author_seed, "longer than 64"),
        (EnrolmentRequest(bytes(31), None, None, 1), None, "node key must be 32 bytes"),
        (EnrolmentRequest(bytes(32), None, None, -1), None, "created"),
    ]
    for request, author_seed_arg, message in cases:
        with pytest.raises(LocalProtocolError, match=message):
            membership.encode_request(request, author_seed_arg)


# --- enrolment ---------------------------------------------------------------------------


def enrol(net: Net, node_secret: bytes, index: int = 0, **changes: Any) -> str:
    enrolment = Enrolment(net.manifest_item, net.network_key, net.certificate(node_secret))
    return membership.encode_enrolment(
        dataclasses.replace(enrolment, **changes),
        crypto.box_public_key(node_secret),
        ephemeral(index, "enrolment"),
    )


@settings(DETERMINISTIC, max_examples=25)
@given(node_secret=seeds, index=st.integers(0, 1000))
def test_enrolment_round_trip(node_secret: bytes, index: int) -> None:
    net = ENROLMENT_NET
    text = enrol(net, node_secret, index)
    assert text.startswith(ENROLMENT_PREFIX)
    enrolment, manifest, cert = membership.decode_enrolment(text, node_secret)
    assert enrolment.network_key == net.network_key
    assert enrolment.manifest_item == net.manifest_item
    assert manifest == net.manifest
    assert cert.node_key == crypto.box_public_key(node_secret)
    # What the node shows for the in-person comparison is what HQ shows.
    assert fingerprint(KeyKind.ROOT, manifest.root_key) == fingerprint(
        KeyKind.ROOT, crypto.signing_public_key(net.root_seed)
    )


def test_impostor_hq_shows_another_root_fingerprint(net: Net, other_net: Net) -> None:
    node_secret = seed("node")
    _, manifest, _ = membership.decode_enrolment(enrol(other_net, node_secret), node_secret)
    assert fingerprint(KeyKind.ROOT, manifest.root_key) != fingerprint(
        KeyKind.ROOT, net.manifest.root_key
    )


def sealed_enrolment(node_secret: bytes, inner: dict[str, Any]) -> str:
    sealed = crypto.seal(codec.encode(inner), crypto.box_public_key(node_secret), ephemeral(1))
    return ENROLMENT_PREFIX + base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def test_enrolment_refusals(net: Net, other_net: Net) -> None:
    node_secret = seed("node")
    text = enrol(net, node_secret)
    with pytest.raises(RemoteProtocolError, match="made for another node"):
        membership.decode_enrolment(text, seed("another node"))
    cert_for_other = net.certificate(seed("another node"))
    with pytest.raises(RemoteProtocolError, match="for another node key"):
        membership.decode_enrolment(
            enrol(net, node_secret, certificate=cert_for_other), node_secret
        )
    with pytest.raises(RemoteProtocolError, match="node certificate: signature is not valid"):
        membership.decode_enrolment(
            enrol(net, node_secret, certificate=other_net.certificate(node_secret)), node_secret
        )
    with pytest.raises(RemoteProtocolError, match="manifest"):
        membership.decode_enrolment(enrol(net, node_secret, manifest_item=b"\x80"), node_secret)
    good = {
        "cert": net.certificate(node_secret),
        "knet": net.network_key,
        "man": net.manifest_item,
        "v": 1,
    }
    changes_and_messages: list[tuple[dict[str, Any], str]] = [
        ({"v": 2}, "version 2"),
        ({"knet": bytes(16)}, "knet must be 32 bytes"),
        ({"man": "x"}, "man must be bytes"),
        ({"extra": 0}, "unknown field"),
    ]
    for changes, message in changes_and_messages:
        with pytest.raises(RemoteProtocolError, match=message):
            membership.decode_enrolment(sealed_enrolment(node_secret, good | changes), node_secret)
    assert membership.decode_enrolment(sealed_enrolment(node_secret, good), node_secret)
    with pytest.raises(RemoteProtocolError, match="cannot be opened"):
        membership.decode_enrolment(ENROLMENT_PREFIX + "AAAA", node_secret)
    with pytest.raises(RemoteProtocolError, match="not a enrolment"):
        membership.decode_enrolment(REQUEST_PREFIX + "AAAA", node_secret)


def test_encode_enrolment_local_errors(net: Net) -> None:
    node_secret = seed("node")
    with pytest.raises(LocalProtocolError, match="network key"):
        enrol(net, node_secret, network_key=bytes(3))
    with pytest.raises(LocalProtocolError, match="must each fit"):
        enrol(net, node_secret, certificate=bytes(membership.MAX_DOCUMENT + 1))
    with pytest.raises(LocalProtocolError, match="must each fit"):
        enrol(net, node_secret, manifest_item=bytes(membership.MAX_DOCUMENT + 1))


def test_largest_enrolment_fits_the_text_limit(net: Net) -> None:
    node_secret = seed("node")
    biggest = Enrolment(
        bytes(membership.MAX_DOCUMENT), net.network_key, bytes(membership.MAX_DOCUMENT)
    )
    text = membership.encode_enrolment(biggest, crypto.box_public_key(node_secret), ephemeral(2))
    assert len(text) - len(ENROLMENT_PREFIX) <= membership.MAX_TEXT
    with pytest.raises(RemoteProtocolError, match="manifest is not valid msgpack"):
        membership.decode_enrolment(text, node_secret)  # gets past the text and size limits
