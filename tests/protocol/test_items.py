"""Items (SPEC.md §10): structure any holder can check, ids, tags and check_item."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldsync_protocol import codec, membership
from fieldsync_protocol import items as items_module
from fieldsync_protocol.envelope import MAX_CIPHERTEXT
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.items import MAX_ITEM, ItemKind, check_item, check_parsed, parse_item
from fieldsync_protocol.padding import SIZE_CLASSES
from tests.protocol.protocol_support import DETERMINISTIC, Net, ephemeral, make_net

NET = make_net("items", key_ids=(0, 1))


def item_of_kind(net: Net, kind: str, index: int) -> bytes:
    if kind == "e":
        return net.seal(ephemeral(index, "items"), sequence=index + 1).item
    if kind == "r":
        return net.receipt([index.to_bytes(32, "big")], serial=index)
    update = dataclasses.replace(net.manifest, epoch=index + 2)
    return membership.sign_manifest(update, net.root_seed)


@settings(DETERMINISTIC, max_examples=50)
@given(st.lists(st.tuples(st.sampled_from("erm"), st.integers(0, 10_000)), min_size=1, max_size=5))
def test_every_kind_parses_and_checks(choices: list[tuple[str, int]]) -> None:
    for kind, index in choices:
        data = item_of_kind(NET, kind, index)
        item = parse_item(data)
        assert item.kind is ItemKind(kind)
        assert item.data == data
        assert item.id == hashlib.blake2b(data, digest_size=32).digest()
        assert item.tag == hashlib.blake2b(data, digest_size=32, person=b"fs-delivered").digest()
        checked = check_item(data, NET.manifest)
        assert checked.item == item
        assert (checked.envelope is not None) == (kind == "e")
        assert (checked.receipt is not None) == (kind == "r")
        assert (checked.manifest is not None) == (kind == "m")
        # The same checks split in two (a relay parses ahead, then checks on its store thread).
        assert check_parsed(parse_item(data), NET.manifest) == checked


def test_id_and_tag_are_computed_once() -> None:
    data = NET.seal().item
    item = parse_item(data)
    assert "id" not in vars(item) and "tag" not in vars(item)
    first = item.id
    assert vars(item)["id"] is first and item.id is first  # then read from the instance
    assert item.tag == hashlib.blake2b(data, digest_size=32, person=b"fs-delivered").digest()
    assert isinstance(items_module.Item.id, items_module._ComputedOnce)  # on the class itself


def test_checked_values() -> None:
    envelope_item = NET.seal().item
    checked = check_item(envelope_item, NET.manifest)
    assert checked.envelope is not None
    assert checked.envelope.hq_key_id == 1
    receipt = check_item(NET.receipt([parse_item(envelope_item).tag]), NET.manifest).receipt
    assert receipt is not None
    assert receipt.tags == (parse_item(envelope_item).tag,)
    update = check_item(item_of_kind(NET, "m", 5), NET.manifest).manifest
    assert update is not None
    assert update.epoch == 7


def test_envelope_for_an_unknown_hq_key_is_carried(net: Net) -> None:
    """Relays never block delivery: a key id from a newer manifest is stored and forwarded."""
    newer = dataclasses.replace(
        NET, manifest=dataclasses.replace(NET.manifest, hq_keys={9: bytes(range(32))})
    )
    data = newer.seal(hq_key_id=9, hq_public_key=bytes(range(32))).item
    checked = check_item(data, NET.manifest)
    assert checked.envelope is not None
    assert checked.envelope.hq_key_id == 9


def test_check_item_refusals(net: Net, other_net: Net) -> None:
    with pytest.raises(RemoteProtocolError, match="receipt: signature is not valid"):
        check_item(other_net.receipt([bytes(32)]), NET.manifest)
    with pytest.raises(RemoteProtocolError, match="different root key"):
        check_item(other_net.manifest_item, NET.manifest)
    # Our root signing a manifest for another network id: refused as an update.
    foreign = dataclasses.replace(NET.manifest, network_id=other_net.network_id)
    with pytest.raises(RemoteProtocolError, match="manifest update belongs to another network"):
        check_item(membership.sign_manifest(foreign, NET.root_seed), NET.manifest)


def with_fields(data: bytes, **changes: Any) -> bytes:
    fields = codec.decode(data) | changes
    return codec.encode({k: v for k, v in fields.items() if v is not REMOVE})


REMOVE = object()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: codec.encode([1]), "item must be a map"),
        (lambda: codec.encode({"t": ["e"], "v": 1}), "item type must be text"),
        (lambda: codec.encode({"v": 1}), "item type must be text"),
        (lambda: codec.encode({"t": "", "v": 1}), "item type must be text of 1..16"),
        (lambda: codec.encode({"t": "x" * 17, "v": 1}), "item type must be text of 1..16"),
        (lambda: codec.encode({"t": "x"}), "item lacks field"),
        (lambda: codec.encode({"t": "x", "v": -1}), "item.v = -1 is outside"),
        (lambda: codec.encode({"t": "x", "v": "2"}), "item.v must be an integer"),
        (lambda: codec.encode({"c": bytes(1000), "t": "a", "v": 1}), "not a size class"),
        (lambda: codec.encode({"c": bytes(512), "t": "a", "v": 2}), "item has version 2"),
        (lambda: codec.encode({"c": bytes(512), "t": "a", "k": 1, "v": 1}), "chunk has unknown"),
        (lambda: codec.encode({"c": 5, "t": "a", "v": 1}), "chunk.c must be bytes"),
        (lambda: with_fields(NET.seal().item, v=True), "item has version True"),
        (lambda: with_fields(NET.seal().item, v=1.0), "item has version 1.0"),
        (lambda: with_fields(NET.seal().item, v=2), "item has version 2"),
        (lambda: with_fields(NET.seal().item, v=REMOVE), "item has version None"),
        (lambda: with_fields(NET.seal().item, l=REMOVE), "envelope lacks field"),
        (lambda: with_fields(NET.receipt([bytes(32)]), s=bytes(63)), "item.s must be 64 bytes"),
        (lambda: with_fields(NET.receipt([bytes(32)]), b=5), "item.b must be bytes"),
        (lambda: with_fields(NET.manifest_item, x=5), "item has unknown field"),
        (lambda: with_fields(NET.manifest_item, b=REMOVE), "item lacks field"),
        (lambda: b"\x80" * 2, "item is not valid msgpack"),
        (lambda: bytes(MAX_ITEM + 1), "more than the"),
    ],
)
def test_parse_item_refusals(make: Any, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        parse_item(make())


@pytest.mark.parametrize("kind", ["e", "r", "m"])
def test_checked_items_equal_what_their_constructors_make(kind: str) -> None:
    """``check_item`` and the envelope path build their frozen instances without the
    generated ``__init__`` (``items._frozen``): each must equal, print and refuse changes as
    one made by its constructor, and read every field left out as its default."""
    checked = check_item(item_of_kind(NET, kind, 3), NET.manifest)
    for instance in (checked, checked.item, checked.envelope):
        if instance is None:
            continue
        cls = type(instance)
        fields = dataclasses.fields(cls)
        assert "__post_init__" not in vars(cls)
        assert all(f.default_factory is dataclasses.MISSING for f in fields)
        made = cls(**{f.name: getattr(instance, f.name) for f in fields})
        assert instance == made and repr(instance) == repr(made)
        with pytest.raises(dataclasses.FrozenInstanceError):
            instance.item = None  # type: ignore[misc, union-attr]
    if kind == "e":
        assert checked.receipt is None and checked.manifest is None and checked.form is None
        assert checked.envelope == checked.item.envelope is not None
        assert "receipt" not in vars(checked)  # left out, read from the class


def test_largest_envelope_item_fits() -> None:
    ciphertext = bytes(MAX_CIPHERTEXT)
    data = codec.encode({"c": ciphertext, "k": 2**32 - 1, "l": 3, "t": "e", "v": 1})
    assert len(data) <= MAX_ITEM
    assert parse_item(data).kind is ItemKind.ENVELOPE


# --- the envelope fast path: the same answers as the general path --------------------------


def outcome(parse: Any, data: bytes) -> Any:
    """What ``parse`` makes of ``data``: the item, or the refusal's message."""
    try:
        return parse(data)
    except RemoteProtocolError as exc:
        return f"refused: {exc}"


def same_as_general(data: bytes) -> Any:
    """``parse_item`` and the general decoder agree on ``data``; their common answer."""
    answer = outcome(parse_item, data)
    assert answer == outcome(items_module._parse_decoded, data)
    return answer


def test_the_usual_envelopes_take_the_fast_path() -> None:
    """Sealed envelopes of every size class, bin16 and bin32 alike, parse without the
    general decoder (else the fast path would be dead code the tests never notice)."""
    for size in SIZE_CLASSES:
        data = codec.encode({"c": bytes(size), "k": 1, "l": 3, "t": "e", "v": 1})
        fast = items_module._canonical_envelope(data)
        assert fast is not None and fast == same_as_general(data)
    sealed = NET.seal().item
    assert items_module._canonical_envelope(sealed) == parse_item(sealed)


FIELD_VALUES = st.one_of(
    st.integers(-2, 300),
    st.sampled_from([2**16, 2**32 - 1, 2**32, True, 1.0, "e", b"", None]),
)


@settings(DETERMINISTIC, max_examples=300)
@given(
    size=st.sampled_from([0, 100, 255, 256, 511, 512, 1000, 1024, 65535, 65536]),
    fields=st.fixed_dictionaries(
        {"k": FIELD_VALUES, "l": FIELD_VALUES, "t": st.sampled_from(["e", "a", "r", "ee"])},
        optional={"v": FIELD_VALUES, "x": st.integers(0, 1)},
    ),
)
def test_envelope_like_items_get_the_general_paths_answer(
    size: int, fields: dict[str, Any]
) -> None:
    same_as_general(codec.encode({"c": bytes(size), **fields}))


@settings(DETERMINISTIC, max_examples=400)
@given(
    at=st.integers(0, 1100),
    change=st.one_of(
        st.tuples(st.just("set"), st.integers(0, 255)),
        st.tuples(st.just("insert"), st.integers(0, 255)),
        st.tuples(st.just("delete"), st.just(0)),
    ),
)
def test_damaged_envelopes_get_the_general_paths_answer(at: int, change: tuple[str, int]) -> None:
    data = bytearray(codec.encode({"c": bytes(1024), "k": 1, "l": 3, "t": "e", "v": 1}))
    at = min(at, len(data) - 1)
    how, byte = change
    if how == "set":
        data[at] = byte
    elif how == "insert":
        data.insert(at, byte)
    else:
        del data[at]
    same_as_general(bytes(data))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x85\xa1c\xc4\x05" + bytes(5) + b"\xa1k\x01\xa1l\x03\xa1t\xa1e\xa1v\x01", "bin8"),
        (
            b"\x85\xa1c\xc5\x00\x05" + bytes(5) + b"\xa1k\x01\xa1l\x03\xa1t\xa1e\xa1v\x01",
            "long bin16",
        ),
        (
            b"\x85\xa1c\xc6\x00\x00\x02\x00"
            + bytes(512)
            + b"\xa1k\x01\xa1l\x03\xa1t\xa1e\xa1v\x01",
            "long bin32",
        ),
        (
            b"\x85\xa1c\xc5\x02\x00" + bytes(512) + b"\xa1k\xcc\x01\xa1l\x03\xa1t\xa1e\xa1v\x01",
            "long int",
        ),
        (b"\x85\xa1c\xc5\x02\x00" + bytes(512) + b"\xa1k\x01\xa1l\x03\xa1t\xa1e\xa1v\x90", "array"),
        (
            b"\x85\xa1c\xc5\x02\x00" + bytes(512) + b"\xa1k\x01\xa1l\x03\xa1t\xa1e\xa1v\x02",
            "version 2",
        ),
        (b"\x85\xa1c\xc5\x02\x00" + bytes(512) + b"\xa1k\x01\xa1l\x09\xa1t\xa1e\xa1v\x01", "TTL 9"),
        (
            b"\x85\xa1c\xc5\x01\x00" + bytes(256) + b"\xa1k\x01\xa1l\x03\xa1t\xa1e\xa1v\x01",
            "no class",
        ),
        (b"\x85\xa1c\xc5\x02\x00" + bytes(512) + b"\xa1k\x01\xa1m\x03\xa1t\xa1e\xa1v\x01", "key m"),
    ],
)
def test_near_envelopes_are_refused_or_parsed_as_the_general_path_does(
    data: bytes, why: str
) -> None:
    answer = same_as_general(data)
    assert isinstance(answer, str) and answer.startswith("refused"), why
