"""HQ delivery receipts (SPEC.md §9): only the receipt key of this network can sign one."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fieldsync_protocol import codec, crypto
from fieldsync_protocol.crypto import Domain
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.receipt import (
    MAX_TAGS,
    TAG_SIZE,
    Receipt,
    ReceiptStatus,
    open_receipt,
    sign_receipt,
)
from tests.protocol.protocol_support import CLAIMED_TIME, DETERMINISTIC, Net, make_net

NET = make_net("receipt")
tags = st.binary(min_size=TAG_SIZE, max_size=TAG_SIZE)


@DETERMINISTIC
@given(
    tag_list=st.lists(tags, min_size=1, max_size=40),
    serial=st.integers(0, 2**63 - 1),
    time=st.integers(0, 2**63 - 1),
    status=st.sampled_from(ReceiptStatus),
)
def test_round_trip(tag_list: list[bytes], serial: int, time: int, status: ReceiptStatus) -> None:
    receipt = Receipt(NET.network_id, serial, time, tuple(tag_list), status)
    item = sign_receipt(receipt, NET.receipt_seed)
    fields = codec.decode(item)
    assert set(fields) == {"b", "s", "t", "v"}
    assert fields["t"] == "r"
    assert open_receipt(fields, NET.manifest) == receipt


def test_largest_receipt_round_trips() -> None:
    receipt = Receipt(NET.network_id, 1, 2, tuple(i.to_bytes(32, "big") for i in range(MAX_TAGS)))
    assert (
        open_receipt(codec.decode(sign_receipt(receipt, NET.receipt_seed)), NET.manifest) == receipt
    )


def test_tags_are_not_item_ids() -> None:
    item = NET.seal().item
    assert crypto.delivery_tag(item) != crypto.content_id(item)
    receipt = open_receipt(codec.decode(NET.receipt([crypto.delivery_tag(item)])), NET.manifest)
    assert crypto.content_id(item) not in receipt.tags
    assert crypto.delivery_tag(item) in receipt.tags


def test_wrong_signers(net: Net, other_net: Net) -> None:
    tag = bytes(32)
    # Signed by the root key, the certificate key or an author key: not the receipt key.
    for seed_bytes in (NET.root_seed, NET.certificate_seed, NET.author_seeds[0]):
        forged = sign_receipt(Receipt(NET.network_id, 1, 1, (tag,)), seed_bytes)
        with pytest.raises(RemoteProtocolError, match="receipt: signature is not valid"):
            open_receipt(codec.decode(forged), NET.manifest)
    # Another network's receipt: its key is not ours.
    with pytest.raises(RemoteProtocolError, match="receipt: signature is not valid"):
        open_receipt(codec.decode(other_net.receipt([tag])), net.manifest)
    # Our receipt key signing for another network id (a confused HQ) is refused too.
    confused = sign_receipt(Receipt(other_net.network_id, 1, 1, (tag,)), NET.receipt_seed)
    with pytest.raises(RemoteProtocolError, match="belongs to another network"):
        open_receipt(codec.decode(confused), NET.manifest)
    # A receipt-key signature made for another purpose.
    body = codec.decode(NET.receipt([tag]))["b"]
    other_domain = {
        "b": body,
        "s": crypto.sign(Domain.MANIFEST, NET.receipt_seed, body),
        "t": "r",
        "v": 1,
    }
    with pytest.raises(RemoteProtocolError, match="signature is not valid"):
        open_receipt(other_domain, NET.manifest)


def signed_body(body: dict[str, Any]) -> dict[str, Any]:
    data = codec.encode(body)
    return {"b": data, "s": crypto.sign(Domain.RECEIPT, NET.receipt_seed, data), "t": "r", "v": 1}


GOOD_BODY = {
    "n": NET.network_id,
    "q": 1,
    "status": "accepted",
    "tags": [bytes(32)],
    "time": CLAIMED_TIME,
    "v": 1,
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"v": 2}, "receipt version 2 is not 1"),
        ({"n": bytes(15)}, "receipt.n must be 16 bytes"),
        ({"tags": []}, "must name 1..4096 tags"),
        ({"tags": bytes(32)}, "must name 1..4096 tags"),
        ({"tags": [bytes(32)] * (MAX_TAGS + 1)}, "must name 1..4096 tags"),
        ({"tags": [bytes(31)]}, "tags must be 32-byte strings"),
        ({"tags": [bytes(32), "x" * 32]}, "tags must be 32-byte strings"),
        ({"q": -1}, "receipt.q = -1 is outside"),
        ({"time": "now"}, "receipt.time must be an integer"),
        ({"extra": 1}, "unknown field"),
        ({"status": "delivered"}, "receipt status must be one of accepted, held, dropped"),
        ({"status": 1}, "receipt status must be one of"),
        ({"status": [1]}, "receipt status must be one of"),
    ],
)
def test_body_refusals(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        open_receipt(signed_body(GOOD_BODY | changes), NET.manifest)


def test_signed_body_helper_is_accepted() -> None:
    assert open_receipt(signed_body(GOOD_BODY), NET.manifest).tags == (bytes(32),)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"t": "m"}, "wrong type or version"),
        ({"v": True}, "wrong type or version"),
        ({"v": 2}, "wrong type or version"),
        ({"s": bytes(32)}, "receipt.s must be 64 bytes"),
        ({"b": "body"}, "receipt.b must be bytes"),
        ({"x": 0}, "unknown field"),
    ],
)
def test_outer_refusals(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        open_receipt(signed_body(GOOD_BODY) | changes, NET.manifest)


def test_body_must_be_canonical() -> None:
    data = codec.encode(GOOD_BODY)
    long_form = b"\xde\x00\x06" + data[1:]
    fields = {
        "b": long_form,
        "s": crypto.sign(Domain.RECEIPT, NET.receipt_seed, long_form),
        "t": "r",
        "v": 1,
    }
    with pytest.raises(RemoteProtocolError, match="receipt is not canonical"):
        open_receipt(fields, NET.manifest)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tags": ()}, "1..4096 tags"),
        ({"tags": (bytes(32),) * (MAX_TAGS + 1)}, "1..4096 tags"),
        ({"tags": (bytes(16),)}, "delivery tags are 32 bytes"),
        ({"network_id": bytes(32)}, "network id must be 16 bytes"),
        ({"serial": -1}, "serial and time"),
        ({"time": 2**63}, "serial and time"),
    ],
)
def test_sign_receipt_local_errors(changes: dict[str, Any], message: str) -> None:
    receipt = dataclasses.replace(Receipt(NET.network_id, 1, 1, (bytes(32),)), **changes)
    with pytest.raises(LocalProtocolError, match=message):
        sign_receipt(receipt, NET.receipt_seed)


def test_the_status_is_signed() -> None:
    """A holder cannot turn a held receipt into an accepted one: the status is in the body."""
    held = codec.decode(
        sign_receipt(
            Receipt(NET.network_id, 1, 1, (bytes(32),), ReceiptStatus.HELD), NET.receipt_seed
        )
    )
    body = codec.decode(held["b"])
    altered = held | {"b": codec.encode(body | {"status": "accepted"})}
    with pytest.raises(RemoteProtocolError, match="signature is not valid"):
        open_receipt(altered, NET.manifest)
    assert open_receipt(held, NET.manifest).status is ReceiptStatus.HELD
