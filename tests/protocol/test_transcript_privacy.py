"""What a wire recording reveals (security anchors T5, T6): nothing, and not later either.

100 sessions between 4 members (handshake, frames both ways, END) are recorded byte for
byte. A passive observer finds no key, certificate, identifier or version string in them,
and no 8-byte string shared by two sessions. Forward secrecy: an attacker who later seizes
both static secrets *and* the network key, but not the ephemeral secrets (never stored),
opens nothing; given the ephemeral secrets as well (positive control) it opens everything.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base

from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.frames import (
    END_SIZE,
    HEADER_SIZE,
    MAX_BODY,
    Data,
    End,
    Event,
    FrameReceiver,
    padded_size,
    wire_size,
)
from fieldsync_protocol.handshake import PROLOGUE, PROTOCOL_NAME, PeerHandshake
from fieldsync_protocol.keytext import KeyKind, fingerprint, key_to_text
from fieldsync_protocol.noise import TAG_LEN, CipherState, HandshakeState, SymmetricState
from tests.protocol.protocol_support import make_net, seed

NET = make_net("privacy")
NODES = [seed(f"privacy node {i}") for i in range(4)]
ROLES = ["author", "relay", "hub", "author"]
CERTS = [NET.certificate(node, expires=2_000_000_000 + i) for i, node in enumerate(NODES)]
PAIRS = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (1, 3)]  # each pair meets 16 or 17 times
SESSIONS = 100


def pub(secret: bytes) -> bytes:
    return crypto_scalarmult_base(secret)


def machine(node: int, eph: bytes, *, initiator: bool) -> PeerHandshake:
    return PeerHandshake(
        initiator=initiator,
        network_key=NET.network_key,
        static_secret=NODES[node],
        certificate=CERTS[node],
        manifest=NET.manifest,
        ephemeral_secret=eph,
    )


@dataclass
class Session:
    """One recorded connection, and the secrets a forensic attacker may or may not get."""

    initiator: int
    responder: int
    initiator_eph: bytes  # in memory only, in real life; revealed for the positive control
    responder_eph: bytes
    handshake: list[bytes] = field(default_factory=list)  # m1, m2, m3
    to_responder: list[bytes] = field(default_factory=list)  # frames, as written
    to_initiator: list[bytes] = field(default_factory=list)
    sent_by_initiator: list[bytes] = field(default_factory=list)  # their plaintexts
    sent_by_responder: list[bytes] = field(default_factory=list)

    def wire(self) -> bytes:
        return b"".join(self.handshake + self.to_responder + self.to_initiator)


def record(index: int) -> Session:
    rng = random.Random(index)
    session = Session(
        *PAIRS[index % len(PAIRS)],
        initiator_eph=seed(f"session {index} initiator ephemeral"),
        responder_eph=seed(f"session {index} responder ephemeral"),
    )
    ours = machine(session.initiator, session.initiator_eph, initiator=True)
    theirs = machine(session.responder, session.responder_eph, initiator=False)
    m1 = ours.data_to_send()
    theirs.receive_data(m1)
    m2 = theirs.data_to_send()
    ours.receive_data(m2)
    m3 = ours.data_to_send()
    session.handshake = [m1, m2, m3]
    our_sender, _ = ours.transport()
    theirs.receive_data(m3)
    their_sender, _ = theirs.transport()
    for _ in range(rng.randint(1, 4)):
        payload = rng.randbytes(rng.choice([10, 100, 700, 3000]))
        session.sent_by_initiator.append(payload)
        session.to_responder.append(our_sender.send(payload))
    for _ in range(rng.randint(1, 3)):
        payload = rng.randbytes(rng.choice([10, 100, 700, 3000]))
        session.sent_by_responder.append(payload)
        session.to_initiator.append(their_sender.send(payload))
    session.to_responder.append(our_sender.end())
    session.to_initiator.append(their_sender.end())
    return session


RECORDED = [record(i) for i in range(SESSIONS)]


def grams(data: bytes, n: int = 8) -> Iterator[bytes]:
    return (data[i : i + n] for i in range(len(data) - n + 1))


# --- passive observer ----------------------------------------------------------------------


def test_pairs_repeat_so_linkability_is_actually_tested() -> None:
    pairs = [(s.initiator, s.responder) for s in RECORDED]
    assert set(pairs) == set(PAIRS) and min(pairs.count(p) for p in PAIRS) == 16


def test_no_identity_certificate_or_version_on_the_wire() -> None:
    wire = b"".join(s.wire() for s in RECORDED)
    assert len(wire) > 100_000
    manifest = NET.manifest
    keys = [pub(n) for n in NODES] + [
        manifest.root_key,
        manifest.certificate_key,
        manifest.receipt_key,
        *manifest.hq_keys.values(),
        NET.network_key,
        NET.network_id,
    ]
    forbidden = [*keys, *CERTS]
    for node in NODES:
        forbidden += [
            key_to_text(KeyKind.NODE, pub(node)).encode(),
            key_to_text(KeyKind.NODE, pub(node)).encode().split(b":")[1][:20],
            fingerprint(KeyKind.NODE, pub(node)).encode(),
        ]
    forbidden += [key_to_text(KeyKind.NETWORK, NET.network_id).encode(), NET.manifest.name.encode()]
    forbidden += [
        b"fieldsync",
        PROLOGUE,
        PROTOCOL_NAME.encode(),
        b"Noise",
        b"XXpsk0",
        b"25519",
        b"ChaChaPoly",
        b"BLAKE2b",
        *(role.encode() for role in ROLES),
    ]
    for needle in forbidden:
        assert needle not in wire, needle
    # Not even an 8-byte piece of a key or a certificate.
    seen = set(grams(wire))
    for secret_or_cert in [*keys, *CERTS]:
        assert seen.isdisjoint(grams(secret_or_cert))


def test_no_8_byte_string_is_shared_by_two_sessions() -> None:
    # No magic, no version, no fixed framing: sessions of the same pair look unrelated.
    owner: dict[bytes, int] = {}
    for index, session in enumerate(RECORDED):
        for gram in set(grams(session.wire())):
            assert owner.setdefault(gram, index) == index, (index, owner[gram])


def test_sizes_are_fixed_or_from_the_padding_classes() -> None:
    classes = {HEADER_SIZE + padded_size(n) + TAG_LEN for n in range(1, MAX_BODY + 1)}
    for session in RECORDED:
        assert [len(m) for m in session.handshake] == [48, 168, 136]
        for stream in (session.to_responder, session.to_initiator):
            *frames, end = stream
            assert all(len(frame) in classes for frame in frames)
            assert len(end) == END_SIZE == HEADER_SIZE  # END: a header alone, last
        sent = session.sent_by_initiator
        sizes = [wire_size(len(p)) for p in sent] + [END_SIZE]
        assert [len(f) for f in session.to_responder] == sizes


# --- forward secrecy -------------------------------------------------------------------------


def drain(receiver: FrameReceiver, frames: list[bytes]) -> list[Event]:
    receiver.receive_data(b"".join(frames))
    events: list[Event] = []
    while (event := receiver.next_event()) is not None:
        events.append(event)
    return events


def after_message_1(session: Session) -> SymmetricState:
    """The state anyone with the psk reaches from the recorded message 1 alone."""
    m1 = session.handshake[0]
    state = SymmetricState(PROTOCOL_NAME.encode())
    state.mix_hash(PROLOGUE)
    state.mix_key_and_hash(NET.network_key)
    state.mix_hash(m1[:32])
    state.mix_key(m1[:32])
    state.decrypt_and_hash(m1[32:])
    return state


def candidate_ciphers(session: Session) -> list[CipherState]:
    """Every key the attacker can derive from the statics, the psk and the wire."""
    initiator_s, responder_s = NODES[session.initiator], NODES[session.responder]
    initiator_e, responder_e = session.handshake[0][:32], session.handshake[1][:32]
    dhs = [
        crypto_scalarmult(secret, public)
        for secret in (initiator_s, responder_s)
        for public in (initiator_e, responder_e, pub(initiator_s), pub(responder_s))
    ]
    ciphers = [CipherState(NET.network_key), *(CipherState(dh) for dh in dhs)]
    ciphers += after_message_1(session).split()
    for ikm in dhs:  # the transcript with a wrong "ee", then "es" / "se" guesses
        state = after_message_1(session)
        state.mix_hash(responder_e)
        state.mix_key(responder_e)
        state.mix_key(ikm)
        ciphers += state.split()
        for other in dhs:
            state.mix_key(other)
            ciphers += state.split()
    return ciphers


@pytest.mark.parametrize("index", range(0, SESSIONS, 5))
def test_statics_and_network_key_do_not_open_a_recorded_session(index: int) -> None:
    session = RECORDED[index]
    m1, m2, m3 = session.handshake
    initiator_s, responder_s = NODES[session.initiator], NODES[session.responder]

    # 1. Replay message 1 to a responder built from the seized keys: the psk gate opens
    #    (message 1 has no secret in it), but its own ephemeral makes another message 2,
    #    and the recorded message 3 does not fit.
    impostor = machine(session.responder, seed(f"attacker {index}"), initiator=False)
    impostor.receive_data(m1)
    assert impostor.data_to_send() != m2
    with pytest.raises(RemoteProtocolError, match="message 3"):
        impostor.receive_data(m3)

    # 2. Play the initiator with the seized static: message 2 was made for another e.
    initiator_state = HandshakeState(
        PROTOCOL_NAME,
        initiator=True,
        prologue=PROLOGUE,
        s=initiator_s,
        e=seed(f"attacker e {index}"),
        psks=[NET.network_key],
    )
    initiator_state.write_message(b"")
    with pytest.raises(RemoteProtocolError):
        initiator_state.read_message(m2)

    # 3. Rebuild the transcript by hand: "ee" needs an ephemeral secret; every DH the
    #    attacker can compute leaves the responder's sealed static key shut.
    for secret in (initiator_s, responder_s):
        for public in (m1[:32], m2[:32]):
            state = after_message_1(session)
            state.mix_hash(m2[:32])
            state.mix_key(m2[:32])
            state.mix_key(crypto_scalarmult(secret, public))
            with pytest.raises(RemoteProtocolError, match="authentication"):
                state.decrypt_and_hash(m2[32:80])

    # 4. No derivable key opens any recorded frame header at any plausible nonce.
    for candidate in candidate_ciphers(session):
        for frame in session.to_responder + session.to_initiator:
            for nonce in (0, 2, 4, 6):
                cipher = copy.deepcopy(candidate)
                cipher.set_nonce(nonce)
                with pytest.raises(RemoteProtocolError):
                    cipher.decrypt_with_ad(b"", frame[:HEADER_SIZE])


@pytest.mark.parametrize("index", range(SESSIONS))
def test_positive_control_the_ephemeral_secrets_open_everything(index: int) -> None:
    session = RECORDED[index]
    m1, m2, m3 = session.handshake

    # The same attack as step 3 above, given the initiator's ephemeral secret, opens the
    # responder's static key: the method is right, only the ephemeral was missing.
    state = after_message_1(session)
    state.mix_hash(m2[:32])
    state.mix_key(m2[:32])
    state.mix_key(crypto_scalarmult(session.initiator_eph, m2[:32]))
    assert state.decrypt_and_hash(m2[32:80]) == pub(NODES[session.responder])

    # Rebuilding both machines reproduces the recording byte for byte and decrypts it.
    responder = machine(session.responder, session.responder_eph, initiator=False)
    responder.receive_data(m1)
    assert responder.data_to_send() == m2
    responder.receive_data(m3)
    _, from_initiator = responder.transport()
    assert drain(from_initiator, session.to_responder) == [
        *(Data(p) for p in session.sent_by_initiator),
        End(),
    ]
    initiator = machine(session.initiator, session.initiator_eph, initiator=True)
    assert initiator.data_to_send() == m1
    initiator.receive_data(m2)
    assert initiator.data_to_send() == m3
    _, from_responder = initiator.transport()
    assert drain(from_responder, session.to_initiator) == [
        *(Data(p) for p in session.sent_by_responder),
        End(),
    ]
