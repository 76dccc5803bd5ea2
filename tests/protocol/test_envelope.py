"""Report envelopes (SPEC.md §8): sign, pad, seal; HQ opens and verifies in a fixed order."""

from __future__ import annotations

import dataclasses
from typing import Any

import nacl.public
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldsync_protocol import codec, crypto, envelope
from fieldsync_protocol.crypto import Domain
from fieldsync_protocol.envelope import (
    GENESIS,
    MAX_CIPHERTEXT,
    SIZE_CLASSES,
    TTL_CLASSES,
    open_report,
    parse_outer,
    size_class,
)
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from tests.protocol.protocol_support import (
    CLAIMED_TIME,
    DETERMINISTIC,
    Net,
    envelope_item,
    ephemeral,
    header_fields,
    inner_of,
    make_net,
    minimal_body,
    pad,
    report_bodies,
    seed,
    signed_inner,
)

NET = make_net("envelope", key_ids=(0, 1, 7), authors=4)


@settings(DETERMINISTIC, max_examples=60)
@given(
    body=report_bodies,
    author=st.integers(0, 3),
    sequence=st.integers(1, envelope.MAX_SEQUENCE),
    previous=st.binary(min_size=32, max_size=32),
    claimed_time=st.integers(0, envelope.MAX_CLAIMED_TIME),
    key_id=st.sampled_from([0, 1, 7]),
    ttl_class=st.sampled_from(sorted(TTL_CLASSES)),
    eph=st.binary(min_size=32, max_size=32),
)
def test_seal_open_round_trip(
    body: dict[str, Any],
    author: int,
    sequence: int,
    previous: bytes,
    claimed_time: int,
    key_id: int,
    ttl_class: int,
    eph: bytes,
) -> None:
    sealed = NET.seal(
        eph,
        body=body,
        author_seed=NET.author_seeds[author],
        sequence=sequence,
        previous=previous,
        claimed_time=claimed_time,
        hq_key_id=key_id,
        ttl_class=ttl_class,
    )
    fields = codec.decode(sealed.item)
    assert set(fields) == {"c", "k", "l", "t", "v"}
    outer = parse_outer(fields)
    assert (outer.hq_key_id, outer.ttl_class) == (key_id, ttl_class)
    assert len(outer.ciphertext) in SIZE_CLASSES
    opened = open_report(outer, NET.network_id, NET.hq_secrets, NET.authors)
    assert opened.author_key == NET.author_key(author)
    assert (opened.sequence, opened.previous, opened.claimed_time) == (
        sequence,
        previous,
        claimed_time,
    )
    assert opened.body == body
    assert opened.body_bytes == codec.encode(body)
    assert opened.header_hash == sealed.header_hash
    # Interop: libsodium's own sealed-box opener reads the same ciphertext.
    box = nacl.public.SealedBox(nacl.public.PrivateKey(NET.hq_secrets[key_id]))
    padded = box.decrypt(outer.ciphertext)
    assert padded == inner_of(NET, sealed.item)
    # The size class is the smallest that fits.
    signed_length = len(padded.rstrip(b"\0")) - 1
    assert len(outer.ciphertext) == size_class(signed_length)


def test_size_classes() -> None:
    assert SIZE_CLASSES[0] == 512
    assert SIZE_CLASSES[-1] == MAX_CIPHERTEXT == 256 * 1024
    assert size_class(0) == 512
    assert size_class(512 - 49) == 512
    assert size_class(512 - 48) == 1024
    assert size_class(MAX_CIPHERTEXT - 49) == MAX_CIPHERTEXT
    with pytest.raises(LocalProtocolError, match="too large"):
        size_class(MAX_CIPHERTEXT - 48)


def test_padding_that_exactly_fills_a_class() -> None:
    """Find the body that leaves room for the 0x80 mark only; it still opens."""
    for length in range(1, 1000):
        body = minimal_body("x" * length)
        signed = signed_inner(header_fields(NET, b=codec.encode(body)), NET.author_seeds[0])
        if len(signed) == 1024 - 48 - 1:
            break
    else:  # pragma: no cover - the loop always finds one
        raise AssertionError("no exact fit")
    exact = NET.seal(body=body)
    assert not inner_of(NET, exact.item).endswith(b"\0")
    assert NET.open(exact.item).body == body
    bigger = NET.seal(body=minimal_body("x" * (length + 1)))
    assert len(codec.decode(bigger.item)["c"]) == 2048
    assert NET.open(bigger.item).body["narrative"] == "x" * (length + 1)


def test_chain_of_reports() -> None:
    first = NET.seal(sequence=1)
    second = NET.seal(ephemeral(1), sequence=2, previous=first.header_hash)
    assert NET.open(second.item).previous == NET.open(first.item).header_hash
    assert first.header_hash != second.header_hash


def test_fresh_ephemeral_means_unlinkable_items() -> None:
    a = NET.seal(ephemeral(1))
    b = NET.seal(ephemeral(2))
    assert a.item != b.item
    assert a.header_hash == b.header_hash  # same report: HQ deduplicates on the header


# --- HQ refusals -------------------------------------------------------------------------


def forge(
    header: dict[str, Any] | bytes,
    *,
    author: int = 0,
    key_id: int = 1,
    ttl: int = 3,
    domain: Domain = Domain.REPORT,
) -> bytes:
    return envelope_item(
        pad(signed_inner(header, NET.author_seeds[author], domain)),
        NET.manifest.hq_keys[key_id],
        key_id,
        ttl,
    )


def refuse(item: bytes, message: str, net: Net = NET) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        net.open(item)


def test_forged_envelope_helper_matches_the_real_thing() -> None:
    assert NET.open(forge(header_fields(NET, hk=1))).body == minimal_body()


REFUSED_HEADERS: list[tuple[dict[str, Any], str]] = [
    ({"v": 2}, "report header version 2 is not 1"),
    ({"a": bytes(31)}, "report header.a must be 32 bytes"),
    ({"a": seed("stranger")}, "author key HQ never enrolled"),
    ({"n": bytes(16)}, r"another network \(forwarded\?\)"),
    ({"n": bytes(15)}, "report header.n must be 16 bytes"),
    ({"hk": 0}, r"another HQ key than it is sealed to \(re-sealed\?\)"),
    ({"hk": -1}, "report header.hk = -1 is outside"),
    ({"l": 0}, r"TTL class differs from the signed one \(altered\?\)"),
    ({"l": 9}, "report header.l = 9 is outside"),
    ({"q": 0}, "report header.q = 0 is outside 1"),
    ({"p": bytes(31)}, "report header.p must be 32 bytes"),
    ({"t": -1}, "report header.t = -1 is outside"),
    ({"t": envelope.MAX_CLAIMED_TIME + 1}, "report header.t = .* is outside"),
    ({"b": b"\xc1"}, "report body is not valid msgpack"),
    ({"b": codec.encode(minimal_body(narrative=""))}, "report field narrative: is empty"),
    ({"b": "text"}, "report header.b must be bytes"),
    ({"x": 1}, "report header has unknown field"),
]


@pytest.mark.parametrize(("changes", "message"), REFUSED_HEADERS)
def test_refused_headers(changes: dict[str, Any], message: str) -> None:
    refuse(forge(header_fields(NET, hk=1) | changes), message)


def test_header_must_have_every_field() -> None:
    fields = header_fields(NET, hk=1)
    del fields["t"]
    refuse(forge(fields), "report header lacks field")


def test_signature_checks() -> None:
    good = header_fields(NET, hk=1)
    refuse(forge(good, author=1), "report: signature is not valid")  # names author 0
    refuse(forge(good, domain=Domain.RECEIPT), "report: signature is not valid")
    header_bytes = codec.encode(good)
    long_form = b"\xde\x00\x09" + header_bytes[1:]  # same map with a map16 header
    refuse(forge(long_form), "report header is not canonical")


@pytest.mark.parametrize(
    ("signed", "message"),
    [
        (codec.encode([1, 2]), "signed report must be a map"),
        (codec.encode({"h": b"x"}), "signed report lacks field"),
        (codec.encode({"h": b"x", "s": bytes(63)}), "signed report.s must be 64 bytes"),
        (codec.encode({"h": "x", "s": bytes(64)}), "signed report.h must be bytes"),
        (codec.encode({"h": codec.encode(5), "s": bytes(64)}), "report header must be a map"),
        (b"\xc1", "signed report is not valid msgpack"),
    ],
)
def test_refused_signed_inners(signed: bytes, message: str) -> None:
    refuse(envelope_item(pad(signed), NET.manifest.hq_keys[1], 1), message)


def test_refused_padding() -> None:
    signed = signed_inner(header_fields(NET, hk=1), NET.author_seeds[0])
    no_mark = signed + bytes(1024 - 48 - len(signed))
    refuse(envelope_item(no_mark, NET.manifest.hq_keys[1], 1), "padding is malformed")
    refuse(envelope_item(bytes(464), NET.manifest.hq_keys[1], 1), "padding is malformed")
    wrong_mark = signed + b"\x01" + bytes(1024 - 49 - len(signed))
    refuse(envelope_item(wrong_mark, NET.manifest.hq_keys[1], 1), "padding is malformed")


def test_key_ids() -> None:
    plain = pad(signed_inner(header_fields(NET, hk=5), NET.author_seeds[0]))
    refuse(
        envelope_item(plain, crypto.box_public_key(seed("k5")), 5),
        "HQ key id 5, which HQ does not hold",
    )
    # Labelled key id 0 but sealed to key 1: cannot be opened with key 0.
    refuse(envelope_item(plain, NET.manifest.hq_keys[1], 0), "envelope: cannot be opened")


# --- outer layer -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"t": "r"}, "wrong type or version"),
        ({"v": True}, "wrong type or version"),
        ({"v": 1.0}, "wrong type or version"),
        ({"c": bytes(500)}, "500 bytes is not a size class"),
        ({"c": "text"}, "envelope.c must be bytes"),
        ({"l": 4}, "envelope.l = 4 is outside 0..3"),
        ({"l": -1}, "envelope.l = -1 is outside"),
        ({"k": 2**32}, "envelope.k = 4294967296 is outside"),
        ({"k": False}, "envelope.k must be an integer"),
        ({"x": 1}, "unknown field"),
    ],
)
def test_parse_outer_refusals(changes: dict[str, Any], message: str) -> None:
    fields = codec.decode(NET.seal().item) | changes
    with pytest.raises(RemoteProtocolError, match=message):
        parse_outer(fields)


def test_parse_outer_needs_every_field() -> None:
    fields = codec.decode(NET.seal().item)
    del fields["l"]
    with pytest.raises(RemoteProtocolError, match="envelope lacks field"):
        parse_outer(fields)


# --- the author's side -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"network_id": bytes(15)}, "network id must be 16 bytes"),
        ({"hq_key_id": -1, "hq_public_key": bytes(32)}, "HQ key id must be"),
        ({"hq_key_id": 2**32, "hq_public_key": bytes(32)}, "HQ key id must be"),
        ({"hq_public_key": bytes(31)}, "HQ public key must be 32 bytes"),
        ({"sequence": 0}, "sequence numbers start at 1"),
        ({"previous": b""}, "previous header hash must be 32 bytes"),
        ({"claimed_time": -1}, "claimed time is out of range"),
        ({"claimed_time": envelope.MAX_CLAIMED_TIME + 1}, "claimed time is out of range"),
        ({"ttl_class": 4}, "unknown TTL class 4"),
        ({"body": minimal_body("\U0001f600" * 100_000)}, "too large"),
    ],
)
def test_seal_report_local_errors(net: Net, changes: dict[str, Any], message: str) -> None:
    spec = dataclasses.replace(NET.seal_input(), **changes)
    with pytest.raises(LocalProtocolError, match=message):
        envelope.seal_report(spec, ephemeral(0))


def test_seal_report_validates_the_body() -> None:
    with pytest.raises(RemoteProtocolError, match="report field narrative: is empty"):
        NET.seal(body=minimal_body(" "))


def test_default_ttl_and_claimed_time() -> None:
    opened = NET.open(NET.seal().item)
    assert opened.claimed_time == CLAIMED_TIME
    assert opened.previous == GENESIS
    assert codec.decode(NET.seal().item)["l"] == envelope.DEFAULT_TTL_CLASS
