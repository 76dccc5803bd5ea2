"""The Noise core's error contract and state machine, mostly on the fieldsync handshake.

Remote bytes can only ever cause ``RemoteProtocolError``; local misuse causes
``LocalProtocolError``; bad arguments ``ValueError``. A failed handshake stays dead.
"""

from __future__ import annotations

import copy
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
)

from fieldsync_protocol import noise
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.noise import (
    MAX_MESSAGE_LEN,
    MAX_NONCE,
    CipherState,
    HandshakeState,
    SymmetricState,
)

PROTOCOL = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b"
PROLOGUE = b"fieldsync/1"


def fixed_key(label: str) -> bytes:
    return hashlib.blake2b(label.encode(), digest_size=32).digest()


PSK = fixed_key("network key")
INITIATOR_STATIC = fixed_key("initiator static")
INITIATOR_EPHEMERAL = fixed_key("initiator ephemeral")
RESPONDER_STATIC = fixed_key("responder static")
RESPONDER_EPHEMERAL = fixed_key("responder ephemeral")
PAYLOADS = (b"", b"certificate of the responder", b"certificate of the initiator")

# libsodium's list of curve25519 points of order 1, 2, 4 and 8 (with non-canonical encodings
# p-1, p, p+1), each also with the top bit set, which X25519 ignores.
_LOW_ORDER = (
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
)
LOW_ORDER_POINTS = [bytes.fromhex(h) for h in _LOW_ORDER] + [
    bytes.fromhex(h)[:31] + bytes([bytes.fromhex(h)[31] | 0x80]) for h in _LOW_ORDER
]


def initiator(psk: bytes = PSK) -> HandshakeState:
    return HandshakeState(
        PROTOCOL,
        initiator=True,
        prologue=PROLOGUE,
        s=INITIATOR_STATIC,
        e=INITIATOR_EPHEMERAL,
        psks=[psk],
    )


def responder(psk: bytes = PSK) -> HandshakeState:
    return HandshakeState(
        PROTOCOL,
        initiator=False,
        prologue=PROLOGUE,
        s=RESPONDER_STATIC,
        e=RESPONDER_EPHEMERAL,
        psks=[psk],
    )


def receivers_and_messages() -> list[tuple[HandshakeState, bytes]]:
    """For each of the three messages: a copy of its receiver just before reading it, and it."""
    parties = (initiator(), responder())
    steps = []
    for index, payload in enumerate(PAYLOADS):
        sender, receiver = parties[index % 2], parties[1 - index % 2]
        message = sender.write_message(payload)
        steps.append((copy.deepcopy(receiver), message))
        assert receiver.read_message(message) == payload
    return steps


STEPS = receivers_and_messages()


def assert_dead(state: HandshakeState) -> None:
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        state.read_message(b"")
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        state.write_message(b"")
    with pytest.raises(LocalProtocolError):
        state.split()


def test_fieldsync_handshake_sizes_and_transport() -> None:
    ours, theirs = initiator(), responder()
    messages = []
    for index, payload in enumerate(PAYLOADS):
        sender, receiver = (ours, theirs) if index % 2 == 0 else (theirs, ours)
        assert sender.is_write_turn
        assert not receiver.is_write_turn
        messages.append(sender.write_message(payload))
        assert receiver.read_message(messages[-1]) == payload
    # The fixed parts are 48, 96 and 64 bytes (security_anchors §6.4).
    assert [len(m) - len(p) for m, p in zip(messages, PAYLOADS, strict=True)] == [48, 96, 64]
    assert ours.is_complete
    assert theirs.is_complete
    assert not ours.is_write_turn
    assert ours.is_initiator
    assert not theirs.is_initiator
    assert ours.handshake_hash == theirs.handshake_hash
    assert ours.remote_static == crypto_scalarmult_base(RESPONDER_STATIC)
    assert theirs.remote_static == crypto_scalarmult_base(INITIATOR_STATIC)
    to_responder, to_initiator = ours.split()
    responder_receive, responder_send = theirs.split()
    assert responder_receive.decrypt_with_ad(b"", to_responder.encrypt_with_ad(b"", b"hi")) == b"hi"
    assert to_initiator.decrypt_with_ad(b"", responder_send.encrypt_with_ad(b"", b"yo")) == b"yo"


def test_wrong_psk_is_refused_on_the_first_message() -> None:
    gatekeeper = responder()
    with pytest.raises(RemoteProtocolError):
        gatekeeper.read_message(initiator(psk=fixed_key("another network")).write_message(b""))
    assert_dead(gatekeeper)


@pytest.mark.parametrize("step", range(3), ids=["msg1", "msg2", "msg3"])
def test_every_single_bit_flip_is_refused(step: int) -> None:
    receiver, message = STEPS[step]
    for bit in range(len(message) * 8):
        damaged = bytearray(message)
        damaged[bit // 8] ^= 1 << (bit % 8)
        state = copy.deepcopy(receiver)
        with pytest.raises(RemoteProtocolError):
            state.read_message(bytes(damaged))
        assert_dead(state)


@pytest.mark.parametrize("step", range(3), ids=["msg1", "msg2", "msg3"])
def test_truncations_and_extensions_are_refused(step: int) -> None:
    receiver, message = STEPS[step]
    variants = [message[:length] for length in range(len(message))]
    variants += [message + b"\0", message + bytes(16), message + message]
    variants.append(message.ljust(MAX_MESSAGE_LEN + 1, b"\0"))
    for variant in variants:
        state = copy.deepcopy(receiver)
        with pytest.raises(RemoteProtocolError):
            state.read_message(variant)
        assert_dead(state)


def forge_first_message(ephemeral_public: bytes) -> bytes:
    """Msg1 as a psk holder builds it: -> psk, e, then the empty payload sealed."""
    symmetric = SymmetricState(PROTOCOL.encode())
    symmetric.mix_hash(PROLOGUE)
    symmetric.mix_key_and_hash(PSK)
    symmetric.mix_hash(ephemeral_public)
    symmetric.mix_key(ephemeral_public)  # psk handshakes mix e into the key too (§9.2)
    return ephemeral_public + symmetric.encrypt_and_hash(b"")


def test_forged_first_message_matches_the_real_one() -> None:
    # Proves the forgery below is built right: with an honest key it is the real message.
    honest = forge_first_message(crypto_scalarmult_base(INITIATOR_EPHEMERAL))
    assert honest == STEPS[0][1]
    assert responder().read_message(honest) == b""


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8] + p.hex()[-2:])
def test_low_order_ephemeral_from_a_psk_holder_is_refused(point: bytes) -> None:
    gatekeeper = responder()
    with pytest.raises(RemoteProtocolError, match="low-order"):
        gatekeeper.read_message(forge_first_message(point))
    assert_dead(gatekeeper)


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8] + p.hex()[-2:])
def test_low_order_static_from_a_psk_holder_is_refused(point: bytes) -> None:
    # The responder's msg2 as a forger builds it, with a low-order point as its static key.
    # Refused as soon as the key is decrypted, before the "es" that would use it.
    symmetric = SymmetricState(PROTOCOL.encode())
    symmetric.mix_hash(PROLOGUE)
    symmetric.mix_key_and_hash(PSK)
    victim = initiator()
    first = victim.write_message(b"")
    symmetric.mix_hash(first[:32])
    symmetric.mix_key(first[:32])
    symmetric.decrypt_and_hash(first[32:])
    forger_ephemeral = crypto_scalarmult_base(RESPONDER_EPHEMERAL)
    symmetric.mix_hash(forger_ephemeral)
    symmetric.mix_key(forger_ephemeral)
    symmetric.mix_key(crypto_scalarmult(RESPONDER_EPHEMERAL, first[:32]))
    forged = forger_ephemeral + symmetric.encrypt_and_hash(point) + bytes(16)
    with pytest.raises(RemoteProtocolError, match="low-order"):
        victim.read_message(forged)
    assert_dead(victim)


def test_all_zero_output_is_refused_even_if_libsodium_allowed_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A libsodium built without its own check would hand back the zeros: still refused.
    monkeypatch.setattr(noise, "crypto_scalarmult", lambda scalar, point: bytes(32))
    gatekeeper = responder()
    with pytest.raises(RemoteProtocolError, match="all-zero"):
        gatekeeper.read_message(STEPS[0][1])


def test_out_of_turn_calls_raise_without_harming_the_handshake() -> None:
    ours, theirs = initiator(), responder()
    with pytest.raises(LocalProtocolError, match="expected write_message"):
        ours.read_message(b"")
    with pytest.raises(LocalProtocolError, match="expected read_message"):
        theirs.write_message(b"")
    with pytest.raises(LocalProtocolError, match="completed handshake"):
        ours.split()
    for index, payload in enumerate(PAYLOADS):
        sender, receiver = (ours, theirs) if index % 2 == 0 else (theirs, ours)
        assert receiver.read_message(sender.write_message(payload)) == payload
    for state in (ours, theirs):
        with pytest.raises(LocalProtocolError, match="complete"):
            state.write_message(b"")
        with pytest.raises(LocalProtocolError, match="complete"):
            state.read_message(b"")
        state.split()
        with pytest.raises(LocalProtocolError, match="only once"):
            state.split()


def test_a_payload_too_long_for_a_noise_message_kills_the_handshake() -> None:
    ours = initiator()
    with pytest.raises(ValueError, match="too long"):
        ours.write_message(bytes(MAX_MESSAGE_LEN - 32 - 16 + 1))
    assert_dead(ours)
    plain = HandshakeState("Noise_NN_25519_ChaChaPoly_BLAKE2b", initiator=True, e=PSK)
    with pytest.raises(ValueError, match="too long"):
        plain.write_message(bytes(MAX_MESSAGE_LEN))


# --- CipherState: nonces, limits, rekey -------------------------------------------------------


def test_nonce_exhaustion() -> None:
    sender, receiver = CipherState(PSK), CipherState(PSK)
    sender.set_nonce(MAX_NONCE - 1)
    receiver.set_nonce(MAX_NONCE - 1)
    assert receiver.decrypt_with_ad(b"ad", sender.encrypt_with_ad(b"ad", b"last")) == b"last"
    assert sender.nonce == receiver.nonce == MAX_NONCE
    with pytest.raises(LocalProtocolError, match="nonce exhausted"):
        sender.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(RemoteProtocolError, match="nonce exhausted"):
        receiver.decrypt_with_ad(b"", bytes(32))
    for bad in (-1, MAX_NONCE + 1):
        with pytest.raises(ValueError, match="nonce"):
            sender.set_nonce(bad)


def test_nonce_is_the_little_endian_counter_after_four_zero_bytes() -> None:
    cipher = CipherState(PSK)
    cipher.set_nonce(0x0102030405060708)
    nonce = bytes(4) + bytes.fromhex("0807060504030201")
    expected = crypto_aead_chacha20poly1305_ietf_encrypt(b"data", b"ad", nonce, PSK)
    assert cipher.encrypt_with_ad(b"ad", b"data") == expected


def test_rekey_is_encrypt_at_max_nonce_and_keeps_both_sides_in_step() -> None:
    sender, receiver = CipherState(PSK), CipherState(PSK)
    before = sender.encrypt_with_ad(b"", b"same text")
    receiver.decrypt_with_ad(b"", before)
    sender.rekey()
    receiver.rekey()
    assert sender.nonce == receiver.nonce == 1  # §11.3: rekey leaves n alone
    expected_key = crypto_aead_chacha20poly1305_ietf_encrypt(
        bytes(32), b"", bytes(4) + MAX_NONCE.to_bytes(8, "little"), PSK
    )[:32]
    reference = CipherState(expected_key)
    reference.set_nonce(1)
    after = sender.encrypt_with_ad(b"", b"same text")
    assert after == reference.encrypt_with_ad(b"", b"same text")
    assert receiver.decrypt_with_ad(b"", after) == b"same text"


def test_a_one_sided_rekey_fails_authentication_without_consuming_a_nonce() -> None:
    sender, receiver = CipherState(PSK), CipherState(PSK)
    sender.rekey()
    message = sender.encrypt_with_ad(b"", b"text")
    with pytest.raises(RemoteProtocolError, match="authentication"):
        receiver.decrypt_with_ad(b"", message)
    assert receiver.nonce == 0
    receiver.rekey()
    assert receiver.decrypt_with_ad(b"", message) == b"text"


def test_cipher_state_limits() -> None:
    keyless = CipherState()
    assert not keyless.has_key
    assert keyless.encrypt_with_ad(b"ad", b"clear") == b"clear"
    assert keyless.decrypt_with_ad(b"ad", b"clear") == b"clear"
    with pytest.raises(LocalProtocolError, match="without a key"):
        keyless.rekey()
    with pytest.raises(ValueError, match="key must be 32 bytes"):
        CipherState(bytes(31))
    keyed = CipherState(PSK)
    with pytest.raises(ValueError, match="exceeds"):
        keyed.encrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN - 16 + 1))
    assert len(keyed.encrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN - 16))) == MAX_MESSAGE_LEN
    for impossible in (b"", bytes(15), bytes(MAX_MESSAGE_LEN + 1)):
        with pytest.raises(RemoteProtocolError, match="impossible"):
            keyed.decrypt_with_ad(b"", impossible)


def test_long_protocol_names_are_hashed() -> None:
    # §5.2: names longer than HASHLEN start h as their hash (none of ours is that long).
    name = b"Noise_" + b"X" * 64
    assert SymmetricState(name).handshake_hash == hashlib.blake2b(name).digest()
    assert SymmetricState(b"Noise_NN").handshake_hash == b"Noise_NN".ljust(64, b"\0")


# --- Protocol names and constructor arguments ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Noise_XX_25519_AESGCM_SHA256", "unsupported Noise protocol name"),
        ("Noise_XX_448_ChaChaPoly_BLAKE2b", "unsupported Noise protocol name"),
        ("Noise_XX_25519_ChaChaPoly_BLAKE2s", "unsupported Noise protocol name"),
        ("noise_XX_25519_ChaChaPoly_BLAKE2b", "unsupported Noise protocol name"),
        ("Noise_XX_25519_ChaChaPoly_BLAKE2b ", "unsupported Noise protocol name"),
        ("Noise_xx_25519_ChaChaPoly_BLAKE2b", "unsupported Noise protocol name"),
        ("Noise_XXpsk0+psk1_25519_ChaChaPoly_BLAKE2b\n", "unsupported Noise protocol name"),
        ("Noise_X1X_25519_ChaChaPoly_BLAKE2b", "unsupported handshake pattern"),
        ("Noise_XXX_25519_ChaChaPoly_BLAKE2b", "unsupported handshake pattern"),
        ("Noise_XXfallback_25519_ChaChaPoly_BLAKE2b", "unsupported modifier"),
        ("Noise_XXfallback+psk0_25519_ChaChaPoly_BLAKE2b", "unsupported modifier"),
        ("Noise_XXhfs_25519_ChaChaPoly_BLAKE2b", "unsupported modifier"),
        ("Noise_XXpsk01_25519_ChaChaPoly_BLAKE2b", "unsupported modifier"),
        ("Noise_XXpsk0+_25519_ChaChaPoly_BLAKE2b", "unsupported modifier"),
        ("Noise_XXpsk0+psk0_25519_ChaChaPoly_BLAKE2b", "repeated modifier"),
        ("Noise_NNpsk3_25519_ChaChaPoly_BLAKE2b", "names a message"),
        ("Noise_Npsk2_25519_ChaChaPoly_BLAKE2b", "names a message"),
    ],
)
def test_protocol_name_errors(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        HandshakeState(name, initiator=True, s=PSK, e=PSK, psks=[PSK])


def test_psk_modifiers_in_any_order_place_their_tokens() -> None:
    # psk3 then psk0: the name differs from psk0+psk3, so both ends must agree on it, and do.
    name = "Noise_XXpsk3+psk0_25519_ChaChaPoly_BLAKE2b"
    first, second = fixed_key("psk 0"), fixed_key("psk 3")
    ours = HandshakeState(name, initiator=True, s=PSK, e=PSK, psks=[first, second])
    theirs = HandshakeState(name, initiator=False, s=PSK, e=PSK, psks=[first, second])
    for index in range(3):
        sender, receiver = (ours, theirs) if index % 2 == 0 else (theirs, ours)
        assert receiver.read_message(sender.write_message(b"x")) == b"x"
    assert ours.handshake_hash == theirs.handshake_hash


def test_generate_keypair_supplies_the_ephemeral_key() -> None:
    generated = HandshakeState(
        PROTOCOL,
        initiator=True,
        prologue=PROLOGUE,
        s=INITIATOR_STATIC,
        psks=[PSK],
        generate_keypair=lambda: INITIATOR_EPHEMERAL,
    )
    assert generated.write_message(b"") == STEPS[0][1]


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"initiator": True, "e": PSK, "psks": [PSK]}, r"needs private key\(s\) \['s'\]"),
        ({"initiator": False, "s": PSK, "psks": [PSK]}, r"needs private key\(s\) \['e'\]"),
        ({"initiator": True, "psks": [PSK]}, r"needs private key\(s\) \['e', 's'\]"),
        ({"initiator": True, "s": PSK, "e": PSK}, r"needs 1 psk\(s\), got 0"),
        ({"initiator": True, "s": PSK, "e": PSK, "psks": [PSK, PSK]}, "got 2"),
        ({"initiator": True, "s": PSK, "e": PSK, "psks": [bytes(16)]}, "psk must be 32"),
        ({"initiator": True, "s": bytes(33), "e": PSK, "psks": [PSK]}, "s must be 32"),
        ({"initiator": True, "s": PSK, "e": PSK, "rs": PSK, "psks": [PSK]}, "got \\['s'\\]"),
        ({"initiator": True, "s": PSK, "e": PSK, "re": PSK, "psks": [PSK]}, "got \\['e'\\]"),
        ({"initiator": True, "s": PSK, "e": PSK, "rs": bytes(31), "psks": [PSK]}, "rs must be"),
        (
            {"initiator": True, "s": PSK, "e": PSK, "rs": LOW_ORDER_POINTS[3], "psks": [PSK]},
            "rs is a low-order point",
        ),
    ],
)
def test_constructor_argument_errors(arguments: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        HandshakeState(PROTOCOL, prologue=PROLOGUE, **arguments)  # type: ignore[arg-type]


def test_pre_message_keys_are_required_exactly_when_the_pattern_has_them() -> None:
    name = "Noise_KK_25519_ChaChaPoly_BLAKE2b"
    with pytest.raises(ValueError, match="takes remote pre-message key"):
        HandshakeState(name, initiator=True, s=PSK, e=PSK)
    responder_static = crypto_scalarmult_base(RESPONDER_STATIC)
    ours = HandshakeState(name, initiator=True, s=PSK, e=PSK, rs=responder_static)
    assert ours.remote_static == responder_static


# --- Fuzz: whatever arrives, only RemoteProtocolError escapes -------------------------------


def _fuzz_targets() -> list[tuple[str, HandshakeState]]:
    """Receivers just before each message of several patterns, with and without psk."""
    targets = [(f"{PROTOCOL} msg{i + 1}", receiver) for i, (receiver, _) in enumerate(STEPS)]
    responder_static = crypto_scalarmult_base(RESPONDER_STATIC)
    for name, rs in [
        ("Noise_NN_25519_ChaChaPoly_BLAKE2b", None),
        ("Noise_IK_25519_ChaChaPoly_BLAKE2b", responder_static),
        ("Noise_IXpsk2_25519_ChaChaPoly_BLAKE2b", None),
        ("Noise_X_25519_ChaChaPoly_BLAKE2b", responder_static),
    ]:
        psks = [PSK] if "psk" in name else []
        ours = HandshakeState(
            name, initiator=True, s=INITIATOR_STATIC, e=INITIATOR_EPHEMERAL, rs=rs, psks=psks
        )
        theirs = HandshakeState(
            name, initiator=False, s=RESPONDER_STATIC, e=RESPONDER_EPHEMERAL, psks=psks
        )
        sender, receiver = ours, theirs
        index = 0
        while not receiver.is_complete:
            targets.append((f"{name} msg{index + 1}", copy.deepcopy(receiver)))
            receiver.read_message(sender.write_message(b"payload"))
            sender, receiver = receiver, sender
            index += 1
    return targets


FUZZ_TARGETS = _fuzz_targets()


@given(
    target=st.sampled_from(FUZZ_TARGETS),
    data=st.one_of(
        st.binary(max_size=256),
        st.sampled_from([message for _, message in STEPS]).flatmap(
            lambda message: st.binary(max_size=8).map(lambda tail: message[:-8] + tail)
        ),
    ),
)
def test_arbitrary_bytes_raise_only_remote_protocol_error(
    target: tuple[str, HandshakeState], data: bytes
) -> None:
    state = copy.deepcopy(target[1])
    try:
        state.read_message(data)
    except RemoteProtocolError:
        assert_dead(state)
