"""Key text forms and fingerprints (SPEC.md §3): typos and misplaced keys are refused."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.keytext import (
    KEY_SIZE,
    NETWORK_ID_SIZE,
    KeyKind,
    fingerprint,
    key_from_text,
    key_to_text,
)
from tests.protocol.protocol_support import DETERMINISTIC

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
KEY = bytes(range(32))


def size(kind: KeyKind) -> int:
    return NETWORK_ID_SIZE if kind is KeyKind.NETWORK else KEY_SIZE


@DETERMINISTIC
@given(st.sampled_from(KeyKind), st.data())
def test_round_trip(kind: KeyKind, data: st.DataObject) -> None:
    key = data.draw(st.binary(min_size=size(kind), max_size=size(kind)))
    text = key_to_text(kind, key)
    assert re.fullmatch(rf"{kind.value}:([A-Z2-7]{{5}}-)*[A-Z2-7]{{1,5}}", text)
    assert key_from_text(kind, text) == key
    # Case, surrounding space, spaces and dash placement do not matter.
    body = text.partition(":")[2]
    loose = f"  {kind.value}:{body.lower().replace('-', ' ')} \n"
    assert key_from_text(kind, loose) == key
    assert key_from_text(kind, f"{kind.value}:{body.replace('-', '')}") == key


def test_lengths() -> None:
    assert len(key_to_text(KeyKind.AUTHOR, KEY).partition(":")[2].replace("-", "")) == 56
    assert len(key_to_text(KeyKind.NETWORK, KEY[:16]).partition(":")[2].replace("-", "")) == 31


@pytest.mark.parametrize("kind", list(KeyKind))
def test_every_single_character_substitution_is_refused(kind: KeyKind) -> None:
    text = key_to_text(kind, KEY[: size(kind)])
    label, _, body = text.partition(":")
    for position, char in enumerate(body):
        if char == "-":
            continue
        for other in ALPHABET.replace(char, ""):
            typo = f"{label}:{body[:position]}{other}{body[position + 1 :]}"
            with pytest.raises(RemoteProtocolError, match="check characters"):
                key_from_text(kind, typo)


def test_swapped_groups_and_missing_characters_are_refused() -> None:
    text = key_to_text(KeyKind.NODE, KEY)
    label, _, body = text.partition(":")
    groups = body.split("-")
    swapped = [groups[1], groups[0], *groups[2:]]
    with pytest.raises(RemoteProtocolError, match="check characters"):
        key_from_text(KeyKind.NODE, f"{label}:{'-'.join(swapped)}")
    with pytest.raises(RemoteProtocolError, match="55 characters, not 56"):
        key_from_text(KeyKind.NODE, text[:-1])
    with pytest.raises(RemoteProtocolError, match="57 characters, not 56"):
        key_from_text(KeyKind.NODE, text + "A")


def test_key_of_another_kind_is_refused() -> None:
    author = key_to_text(KeyKind.AUTHOR, KEY)
    with pytest.raises(RemoteProtocolError, match="expected a node key but this is a 'author' key"):
        key_from_text(KeyKind.NODE, author)
    # Editing the label does not help: the check value covers the kind.
    relabelled = "node:" + author.partition(":")[2]
    with pytest.raises(RemoteProtocolError, match="check characters"):
        key_from_text(KeyKind.NODE, relabelled)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("AAAQEAYEAUDAOCAJBIFQYDIOB4IBCEQTCQKRMFYYDENBWHA5DYP7WFGX", "no kind label"),
        ("author:" + "0" * 56, "outside A-Z, 2-7"),
        ("author:" + "1" * 56, "outside A-Z, 2-7"),
        ("author:" + "É" * 56, "outside A-Z, 2-7"),
        ("author:" + "A" * 56, "check characters"),
        ("author:", "0 characters"),
    ],
)
def test_malformed_text(text: str, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        key_from_text(KeyKind.AUTHOR, text)


def test_stray_bits_in_the_last_character_are_refused() -> None:
    """A network id leaves 3 unused bits in its last character: only zeros are canonical."""
    text = key_to_text(KeyKind.NETWORK, KEY[:16])
    last = text[-1]
    raw = base64.b32decode(text.partition(":")[2].replace("-", "") + "=")
    assert raw[:16] == KEY[:16]
    index = ALPHABET.index(last)
    for stray in range(1, 8):
        other = ALPHABET[index ^ stray]
        with pytest.raises(RemoteProtocolError, match="check characters"):
            key_from_text(KeyKind.NETWORK, text[:-1] + other)


def test_fingerprint() -> None:
    value = fingerprint(KeyKind.ROOT, KEY)
    assert re.fullmatch(r"root:[A-Z2-7]{5}-[A-Z2-7]{5}-[A-Z2-7]{5}-[A-Z2-7]{5}", value)
    assert fingerprint(KeyKind.ROOT, KEY) == value
    assert fingerprint(KeyKind.ROOT, bytes(32)) != value
    assert fingerprint(KeyKind.NETWORK, KEY[:16]).startswith("network:")


@pytest.mark.parametrize("kind", list(KeyKind))
def test_wrong_key_size_is_a_local_error(kind: KeyKind) -> None:
    wrong = bytes(size(kind) + 1)
    with pytest.raises(LocalProtocolError, match="bytes, not"):
        key_to_text(kind, wrong)
    with pytest.raises(LocalProtocolError, match="bytes, not"):
        fingerprint(kind, wrong)
