"""HQ rejects 100 % of forged, tampered and re-sealed reports (DESIGN.md §6; SPEC.md §8.6).

"Rejected" means HQ's whole path for an incoming item raises ``RemoteProtocolError``:
``check_item`` (what every holder runs) and then ``open_report`` (HQ's secrets). Nothing
that was changed by even one bit may open.
"""

from __future__ import annotations

import random

import pytest

from fieldsync_protocol import codec, crypto, envelope, membership
from fieldsync_protocol.envelope import OpenedReport, open_report
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.items import ItemKind, check_item
from fieldsync_protocol.receipt import Receipt, sign_receipt
from tests.protocol.protocol_support import (
    Net,
    envelope_item,
    ephemeral,
    header_fields,
    inner_of,
    make_net,
    pad,
    random_body,
    seed,
    signed_inner,
)

ALPHA = make_net("hq-alpha", key_ids=(0, 1), authors=20)
BETA = make_net("hq-beta", key_ids=(0,), authors=2)


def hq_accepts(net: Net, data: bytes, authors: frozenset[bytes] | None = None) -> OpenedReport:
    """HQ's ingest path for one item; raises RemoteProtocolError when HQ rejects it."""
    checked = check_item(data, net.manifest)
    if checked.item.kind is ItemKind.OPAQUE:
        # A flip of the kind letter makes a kind HQ does not know: relays carry it, HQ refuses.
        raise RemoteProtocolError(f"HQ cannot verify an item of kind {checked.item.fields['t']!r}")
    if checked.envelope is None:
        raise AssertionError(f"a tampered envelope became a valid {checked.item.kind} item")
    known = net.authors if authors is None else authors
    return open_report(checked.envelope, net.network_id, net.hq_secrets, known)


def rejected(net: Net, data: bytes) -> bool:
    try:
        hq_accepts(net, data)
    except RemoteProtocolError:
        return True
    return False


def make_envelopes(count: int) -> list[bytes]:
    rng = random.Random(1000)
    items = []
    for index in range(count):
        author = index % 20
        size = rng.choice([50, 300, 1500, 6000])
        sealed = ALPHA.seal(
            ephemeral(index, "hq"),
            body=random_body(rng, size),
            author_seed=ALPHA.author_seeds[author],
            sequence=index // 20 + 1,
            hq_key_id=rng.choice([0, 1]),
            ttl_class=rng.randrange(4),
        )
        items.append(sealed.item)
    return items


ENVELOPES = make_envelopes(1000)


def test_every_envelope_opens_untouched() -> None:
    for data in ENVELOPES:
        assert hq_accepts(ALPHA, data).author_key in ALPHA.authors


def test_one_random_byte_flip_in_each_of_1000_envelopes() -> None:
    rng = random.Random(7)
    accepted = []
    for index, data in enumerate(ENVELOPES):
        position = rng.randrange(len(data))
        damaged = bytearray(data)
        damaged[position] ^= rng.randrange(1, 256)
        if not rejected(ALPHA, bytes(damaged)):
            accepted.append((index, position))
    assert accepted == []


@pytest.mark.parametrize("index", [0, 1])
def test_every_single_bit_flip_of_whole_envelopes(index: int) -> None:
    data = [d for d in ENVELOPES if len(d) < 1100][index * 7]
    accepted = []
    for position in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[position] ^= 1 << bit
            if not rejected(ALPHA, bytes(damaged)):
                accepted.append((position, bit))
    assert accepted == []


def test_every_byte_value_in_the_outer_fields() -> None:
    """Outside the ciphertext, try all 255 other values of every byte."""
    data = ENVELOPES[3]
    ciphertext = codec.decode(data)["c"]
    start = data.index(ciphertext)
    outside = [*range(start), *range(start + len(ciphertext), len(data))]
    accepted = []
    for position in outside:
        for value in range(256):
            if value != data[position]:
                damaged = bytearray(data)
                damaged[position] = value
                if not rejected(ALPHA, bytes(damaged)):
                    accepted.append((position, value))
    assert accepted == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("v", True, "item has version True"),
        ("l", 0, "TTL class differs from the signed one"),
        ("k", 0, "cannot be opened"),
        ("k", 5, "which HQ does not hold"),
        ("t", "r", r"item lacks field\(s\) b, s"),
    ],
)
def test_outer_fields_are_bound(field: str, value: object, message: str) -> None:
    data = ALPHA.seal(hq_key_id=1, ttl_class=3).item
    changed = codec.encode(codec.decode(data) | {field: value})
    with pytest.raises(RemoteProtocolError, match=message):
        hq_accepts(ALPHA, changed)


def test_only_a_box_that_does_not_open_is_junk() -> None:
    """Junk (``NotSealedToHQ``) is what fails under a key HQ holds; a key id HQ lacks is held
    (it may be a key HQ lost), and whatever opened is held too (SPEC.md §8.6)."""
    data = ALPHA.seal(hq_key_id=1).item
    wrong_key = codec.encode(codec.decode(data) | {"k": 0})
    with pytest.raises(envelope.NotSealedToHQ, match="cannot be opened"):
        hq_accepts(ALPHA, wrong_key)
    unknown_key = codec.encode(codec.decode(data) | {"k": 5})
    with pytest.raises(RemoteProtocolError, match="does not hold") as caught:
        hq_accepts(ALPHA, unknown_key)
    assert not isinstance(caught.value, envelope.NotSealedToHQ)
    with pytest.raises(RemoteProtocolError, match="never enrolled") as caught:
        hq_accepts(ALPHA, data, authors=frozenset())
    assert not isinstance(caught.value, envelope.NotSealedToHQ)


def test_inner_resealed_to_another_hq_key_id() -> None:
    """HQ holds both keys, so decryption works: the signed key id is what refuses it."""
    sealed = ALPHA.seal(hq_key_id=1)
    inner = inner_of(ALPHA, sealed.item)
    for ttl in (3, 0):
        moved = envelope_item(inner, ALPHA.manifest.hq_keys[0], 0, ttl)
        with pytest.raises(
            RemoteProtocolError, match=r"another HQ key than it is sealed to \(re-sealed\?\)"
        ):
            hq_accepts(ALPHA, moved)


def test_inner_resealed_to_another_networks_hq() -> None:
    sealed = ALPHA.seal(hq_key_id=1)
    inner = inner_of(ALPHA, sealed.item)
    moved = envelope_item(inner, BETA.manifest.hq_keys[0], 0)
    # Even if the author were enrolled with both HQs, the signed network id refuses it.
    both = BETA.authors | {ALPHA.author_key(0)}
    with pytest.raises(
        envelope.RefusedSignedReport, match=r"written for another network \(forwarded\?\)"
    ) as caught:
        hq_accepts(BETA, moved, both)
    assert caught.value.author_key == ALPHA.author_key(0)  # HQ can name who signed it
    with pytest.raises(RemoteProtocolError, match="author key HQ never enrolled") as unsigned:
        hq_accepts(BETA, moved)
    assert not isinstance(unsigned.value, envelope.RefusedSignedReport)
    # Re-sealed to the same key id number in the other network: still the network check.
    moved_same_id = envelope_item(
        pad(signed_inner(header_fields(ALPHA, hk=0), ALPHA.author_seeds[0])),
        BETA.manifest.hq_keys[0],
        0,
    )
    with pytest.raises(RemoteProtocolError, match="written for another network"):
        hq_accepts(BETA, moved_same_id, both)


def test_report_by_a_non_enrolled_author() -> None:
    stranger = seed("stranger")
    data = ALPHA.seal(author_seed=stranger).item
    with pytest.raises(RemoteProtocolError, match="author key HQ never enrolled"):
        hq_accepts(ALPHA, data)
    # Naming an enrolled author without that author's key: the signature fails.
    header = header_fields(ALPHA, author=4, hk=1)
    forged = envelope_item(pad(signed_inner(header, stranger)), ALPHA.manifest.hq_keys[1], 1)
    with pytest.raises(RemoteProtocolError, match="report: signature is not valid"):
        hq_accepts(ALPHA, forged)


def test_receipts_not_signed_by_the_receipt_key() -> None:
    tags = (bytes(32),)
    for signer in (ALPHA.root_seed, ALPHA.certificate_seed, ALPHA.author_seeds[0], seed("x")):
        forged = sign_receipt(Receipt(ALPHA.network_id, 1, 1, tags), signer)
        with pytest.raises(RemoteProtocolError, match="receipt: signature is not valid"):
            check_item(forged, ALPHA.manifest)
    with pytest.raises(RemoteProtocolError, match="receipt: signature is not valid"):
        check_item(BETA.receipt(list(tags)), ALPHA.manifest)
    assert check_item(ALPHA.receipt(list(tags)), ALPHA.manifest).receipt is not None


def test_every_bit_flip_of_a_receipt_and_a_manifest() -> None:
    """No flip yields a receipt or manifest: it is refused, or (a flipped kind letter) an
    opaque item of an unknown kind, which a relay carries but nobody acts on."""
    receipt = ALPHA.receipt([crypto.delivery_tag(ENVELOPES[0]), bytes(32)])
    opaque = 0
    for data in (receipt, ALPHA.manifest_item):
        for position in range(len(data)):
            for bit in range(8):
                damaged = bytearray(data)
                damaged[position] ^= 1 << bit
                try:
                    checked = check_item(bytes(damaged), ALPHA.manifest)
                except RemoteProtocolError:
                    continue
                assert checked.item.kind is ItemKind.OPAQUE
                assert checked.receipt is None
                assert checked.manifest is None
                opaque += 1
    assert 0 < opaque <= 2 * 8  # only flips of the one kind byte of each item


def test_manifest_signed_by_a_different_root() -> None:
    with pytest.raises(RemoteProtocolError, match="different root key"):
        check_item(BETA.manifest_item, ALPHA.manifest)
    imposter = membership.sign_manifest(
        membership.Manifest(
            ALPHA.network_id,
            "alpha network",
            99,
            BETA.manifest.root_key,
            {7: BETA.manifest.hq_keys[0]},
            BETA.manifest.receipt_key,
            BETA.manifest.certificate_key,
        ),
        BETA.root_seed,
    )
    with pytest.raises(RemoteProtocolError, match="different root key"):
        check_item(imposter, ALPHA.manifest)
    body = codec.decode(imposter)["b"]
    relabelled = codec.encode(
        codec.decode(imposter)
        | {"b": body.replace(BETA.manifest.root_key, ALPHA.manifest.root_key)}
    )
    with pytest.raises(RemoteProtocolError, match="manifest: signature is not valid"):
        check_item(relabelled, ALPHA.manifest)
    assert check_item(ALPHA.manifest_item, ALPHA.manifest).item.kind is ItemKind.MANIFEST
