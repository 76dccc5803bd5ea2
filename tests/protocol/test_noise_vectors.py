"""Published Noise test vectors (cacophony, snow) reproduced byte for byte by our Noise core.

The vectors are checked in, unmodified, under ``protocol/vectors/noise/`` with their source and
licences (README.md there); their SHA-256 is checked first so an edited copy cannot test less.
Every ``*_25519_ChaChaPoly_BLAKE2b`` vector runs, except deferred patterns (``X1X``, ``NK1``
...) and ``fallback``, which the core refuses by design; the selection itself is checked so
a vector can never be skipped silently.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from fieldsync_protocol.noise import CipherState, HandshakeState

VECTOR_DIR = Path(__file__).resolve().parents[2] / "protocol" / "vectors" / "noise"
#: SHA-256 of the upstream files, as recorded in protocol/vectors/noise/README.md.
VECTOR_SHA256 = {
    "cacophony.json": "3bde7c09a6f349ee11c825c50fcc02649f8f02a47c857a459206b357f9386cae",
    "snow.json": "69da433305fd045f6c9f01b656662a389d022688986fd39fbe7af009cd402fd3",
}
VECTOR_FILES = tuple(VECTOR_SHA256)
SUFFIX = "_25519_ChaChaPoly_BLAKE2b"
NAME = re.compile(r"Noise_(?P<pattern>[NKXI]1?[NKXI]?1?)(?P<modifiers>[a-z0-9+]*)" + SUFFIX)
ONE_WAY_PATTERNS = {"N", "K", "X"}


def _parse(name: str) -> re.Match[str]:
    match = NAME.fullmatch(name)
    assert match is not None, f"unexpected vector name {name}"
    return match


def _is_deferred_or_fallback(name: str) -> bool:
    match = _parse(name)
    return "1" in match["pattern"] or "fallback" in match["modifiers"]


def _load() -> tuple[list[Any], list[str]]:
    selected: list[Any] = []
    skipped: list[str] = []
    for file_name in VECTOR_FILES:
        vectors = json.loads((VECTOR_DIR / file_name).read_text())["vectors"]
        for vector in vectors:
            name = vector["protocol_name"]
            if not name.endswith(SUFFIX):
                continue
            if _is_deferred_or_fallback(name):
                skipped.append(name)
            else:
                source = file_name.removesuffix(".json")
                selected.append(pytest.param(vector, id=f"{source}:{name}"))
    return selected, skipped


SELECTED, SKIPPED = _load()


@pytest.mark.parametrize("file_name", VECTOR_FILES)
def test_vector_file_is_the_published_one(file_name: str) -> None:
    digest = hashlib.sha256((VECTOR_DIR / file_name).read_bytes()).hexdigest()
    assert digest == VECTOR_SHA256[file_name]
    readme = (VECTOR_DIR / "README.md").read_text(encoding="utf-8")
    assert digest in readme, "README.md records the source and checksum of every vector file"
    assert any(VECTOR_DIR.glob("LICENSE*" + file_name.removesuffix(".json"))), "licence kept"


def test_vector_selection_runs_every_supported_vector() -> None:
    # 39 cacophony + 25 snow fundamental and psk vectors; the rest are deferred patterns.
    assert len(SELECTED) == 64
    assert len(SKIPPED) == 46
    assert all(_is_deferred_or_fallback(name) for name in SKIPPED)


def _key(vector: dict[str, Any], field: str) -> bytes | None:
    return bytes.fromhex(vector[field]) if field in vector else None


def _party(vector: dict[str, Any], role: str, *, initiator: bool) -> HandshakeState:
    return HandshakeState(
        vector["protocol_name"],
        initiator=initiator,
        prologue=bytes.fromhex(vector[f"{role}_prologue"]),
        s=_key(vector, f"{role}_static"),
        e=_key(vector, f"{role}_ephemeral"),
        rs=_key(vector, f"{role}_remote_static"),
        psks=[bytes.fromhex(psk) for psk in vector.get(f"{role}_psks", [])],
    )


@pytest.mark.parametrize("vector", SELECTED)
def test_vector(vector: dict[str, Any]) -> None:
    initiator = _party(vector, "init", initiator=True)
    responder = _party(vector, "resp", initiator=False)
    messages = vector["messages"]

    sender, receiver = initiator, responder
    handshake_length = 0
    while not initiator.is_complete:
        message = messages[handshake_length]
        payload = bytes.fromhex(message["payload"])
        ciphertext = sender.write_message(payload)
        assert ciphertext.hex() == message["ciphertext"]
        assert receiver.read_message(ciphertext) == payload
        sender, receiver = receiver, sender
        handshake_length += 1
    assert responder.is_complete

    assert initiator.handshake_hash == responder.handshake_hash
    if "handshake_hash" in vector:
        assert initiator.handshake_hash.hex() == vector["handshake_hash"]

    initiator_send, initiator_receive = initiator.split()
    responder_receive, responder_send = responder.split()
    one_way = _parse(vector["protocol_name"])["pattern"] in ONE_WAY_PATTERNS
    transport = messages[handshake_length:]
    assert transport, "every vector checks transport messages too"
    for index, message in enumerate(transport, start=handshake_length):
        # Transport messages keep alternating after the handshake, except in one-way patterns.
        initiator_sends = one_way or index % 2 == 0
        encrypt: CipherState = initiator_send if initiator_sends else responder_send
        decrypt: CipherState = responder_receive if initiator_sends else initiator_receive
        payload = bytes.fromhex(message["payload"])
        ciphertext = encrypt.encrypt_with_ad(b"", payload)
        assert ciphertext.hex() == message["ciphertext"]
        assert decrypt.decrypt_with_ad(b"", ciphertext) == payload
