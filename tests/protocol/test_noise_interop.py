"""Our Noise core against an independent implementation (the ``noiseprotocol`` package).

There is no published vector for exactly ``Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b``, the
fieldsync handshake, so both roles are run against ``noiseprotocol`` (built on
``cryptography``, not libsodium): handshake with payloads, transport both ways, rekey.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InvalidTag
from nacl.bindings import crypto_scalarmult_base
from noise.connection import Keypair, NoiseConnection

from fieldsync_protocol.noise import CipherState, HandshakeState

PROTOCOL = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b"
PROLOGUE = b"fieldsync/1"


def fixed_key(label: str) -> bytes:
    return hashlib.blake2b(label.encode(), digest_size=32).digest()


PSK = fixed_key("network key")
OUR_STATIC = fixed_key("our static")
OUR_EPHEMERAL = fixed_key("our ephemeral")
THEIR_STATIC = fixed_key("their static")


def their_connection(*, initiator: bool) -> NoiseConnection:
    # Their ephemeral key stays random: presetting it makes noiseprotocol warn.
    connection = NoiseConnection.from_name(PROTOCOL.encode())
    if initiator:
        connection.set_as_initiator()
    else:
        connection.set_as_responder()
    connection.set_psks(psk=PSK)
    connection.set_prologue(PROLOGUE)
    connection.set_keypair_from_private_bytes(Keypair.STATIC, THEIR_STATIC)
    connection.start_handshake()
    return connection


def our_handshake(*, initiator: bool) -> HandshakeState:
    return HandshakeState(
        PROTOCOL,
        initiator=initiator,
        prologue=PROLOGUE,
        s=OUR_STATIC,
        e=OUR_EPHEMERAL,
        psks=[PSK],
    )


def exchange_transport(
    our_send: CipherState, our_receive: CipherState, theirs: NoiseConnection
) -> None:
    for index in range(3):
        ours_out = f"report {index} from us".encode()
        assert theirs.decrypt(our_send.encrypt_with_ad(b"", ours_out)) == ours_out
        theirs_out = f"receipt {index} from them".encode()
        assert our_receive.decrypt_with_ad(b"", theirs.encrypt(theirs_out)) == theirs_out


def exchange_after_rekey(
    our_send: CipherState, our_receive: CipherState, theirs: NoiseConnection
) -> None:
    our_send.rekey()
    theirs.rekey_inbound_cipher()
    assert theirs.decrypt(our_send.encrypt_with_ad(b"", b"after rekey")) == b"after rekey"
    theirs.rekey_outbound_cipher()
    our_receive.rekey()
    assert our_receive.decrypt_with_ad(b"", theirs.encrypt(b"rekeyed too")) == b"rekeyed too"


def test_our_initiator_with_their_responder() -> None:
    ours = our_handshake(initiator=True)
    theirs = their_connection(initiator=False)

    assert theirs.read_message(ours.write_message(b"")) == b""
    assert ours.read_message(bytes(theirs.write_message(b"certificate R"))) == b"certificate R"
    their_state = theirs.noise_protocol.handshake_state  # dropped once their handshake ends
    assert theirs.read_message(ours.write_message(b"certificate I")) == b"certificate I"

    assert ours.is_complete
    assert theirs.handshake_finished
    assert ours.handshake_hash == theirs.get_handshake_hash()
    assert ours.remote_static == crypto_scalarmult_base(THEIR_STATIC)
    assert their_state.rs.public_bytes == crypto_scalarmult_base(OUR_STATIC)
    our_send, our_receive = ours.split()
    exchange_transport(our_send, our_receive, theirs)
    exchange_after_rekey(our_send, our_receive, theirs)


def test_their_initiator_with_our_responder() -> None:
    theirs = their_connection(initiator=True)
    ours = our_handshake(initiator=False)

    assert ours.read_message(bytes(theirs.write_message(b""))) == b""
    assert theirs.read_message(ours.write_message(b"certificate R")) == b"certificate R"
    their_state = theirs.noise_protocol.handshake_state
    assert ours.read_message(bytes(theirs.write_message(b"certificate I"))) == b"certificate I"

    assert ours.is_complete
    assert theirs.handshake_finished
    assert ours.handshake_hash == theirs.get_handshake_hash()
    assert ours.remote_static == crypto_scalarmult_base(THEIR_STATIC)
    assert their_state.rs.public_bytes == crypto_scalarmult_base(OUR_STATIC)
    our_receive, our_send = ours.split()
    exchange_transport(our_send, our_receive, theirs)
    exchange_after_rekey(our_send, our_receive, theirs)


def test_their_responder_rejects_our_wrong_psk() -> None:
    ours = HandshakeState(
        PROTOCOL,
        initiator=True,
        prologue=PROLOGUE,
        s=OUR_STATIC,
        e=OUR_EPHEMERAL,
        psks=[fixed_key("another network")],
    )
    theirs = their_connection(initiator=False)
    with pytest.raises(InvalidTag):
        theirs.read_message(ours.write_message(b""))
