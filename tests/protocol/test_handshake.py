"""The peer handshake (SPEC.md §12.1): sizes, certificate checks, outsiders, aborts.

A ``Forger`` builds XXpsk0 messages by hand from ``SymmetricState``: a network member (it
holds the psk) who may put any key or certificate slot in a message. It is checked against
the real machine first (positive control), then used for what an honest machine never sends.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base

from fieldsync_protocol import codec, crypto, membership
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.frames import Data, End, StreamState
from fieldsync_protocol.handshake import (
    CERT_SLOT,
    MAX_EXPIRY,
    MSG1_SIZE,
    MSG2_SIZE,
    MSG3_SIZE,
    PROLOGUE,
    PROTOCOL_NAME,
    HandshakeStatus,
    PeerHandshake,
    ReplayCache,
    certificate_from_slot,
    certificate_slot,
)
from fieldsync_protocol.noise import HandshakeState, SymmetricState
from tests.protocol.protocol_support import CLAIMED_TIME, make_net, seed

NET = make_net("alpha")
OTHER = make_net("beta")
A = seed("node a")  # the initiator in most tests
B = seed("node b")  # the responder in most tests
C = seed("node c")  # a third member
A_EPH = seed("node a ephemeral")
B_EPH = seed("node b ephemeral")
CERTS = {A: NET.certificate(A), B: NET.certificate(B), C: NET.certificate(C)}


def pub(secret: bytes) -> bytes:
    return crypto_scalarmult_base(secret)


def slot_of(certificate: bytes) -> bytes:
    """The slot of any signed certificate, written out again (SPEC.md §12.1.2): expiry as a
    u64 big-endian, then the signature; whatever network or key it names."""
    outer = codec.as_map(codec.decode(certificate), "cert", {"b", "s"})
    body = codec.as_map(
        codec.decode(codec.get_bytes(outer, "b", "cert")),
        "cert",
        set(),
        {"exp", "net", "node", "v"},
    )
    return codec.get_int(body, "exp", "cert").to_bytes(8, "big") + codec.get_bytes(
        outer, "s", "cert"
    )


def initiator(node: bytes = A, eph: bytes = A_EPH, **overrides: object) -> PeerHandshake:
    kwargs: dict[str, object] = {
        "initiator": True,
        "network_key": NET.network_key,
        "static_secret": node,
        "certificate": CERTS[node],
        "manifest": NET.manifest,
        "ephemeral_secret": eph,
    }
    kwargs.update(overrides)
    return PeerHandshake(**kwargs)  # type: ignore[arg-type]


def responder(node: bytes = B, eph: bytes = B_EPH, **overrides: object) -> PeerHandshake:
    return initiator(node, eph, initiator=False, **overrides)


def first_message() -> bytes:
    return initiator().data_to_send()


def run(ours: PeerHandshake, theirs: PeerHandshake) -> tuple[bytes, bytes, bytes]:
    m1 = ours.data_to_send()
    theirs.receive_data(m1)
    m2 = theirs.data_to_send()
    ours.receive_data(m2)
    m3 = ours.data_to_send()
    theirs.receive_data(m3)
    return m1, m2, m3


M1, M2, M3 = run(initiator(), responder())


def assert_dead(machine: PeerHandshake) -> None:
    """Failed, silent for ever, and every further input raises the one remote error."""
    assert machine.failed and machine.status is HandshakeStatus.FAILED
    assert not machine.is_complete and machine.peer is None
    assert machine.data_to_send() == b""
    calls: list[Callable[[], None]] = [lambda: machine.receive_data(b"more"), machine.eof_received]
    for call in calls:
        with pytest.raises(RemoteProtocolError, match="failed earlier"):
            call()
    assert machine.data_to_send() == b""


def refuses(machine: PeerHandshake, data: bytes, match: str | None = None) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        machine.receive_data(data)
    assert_dead(machine)


# Snapshots just before each message is read, for the byte-level negative tests.
def at_msg1() -> PeerHandshake:
    return responder()


def at_msg2() -> PeerHandshake:
    machine = initiator()
    machine.data_to_send()
    return machine


def at_msg3() -> PeerHandshake:
    machine = responder()
    machine.receive_data(M1)
    machine.data_to_send()
    return machine


STEPS: list[tuple[str, Callable[[], PeerHandshake], bytes]] = [
    ("msg1 to responder", at_msg1, M1),
    ("msg2 to initiator", at_msg2, M2),
    ("msg3 to responder", at_msg3, M3),
]


# --- the forger ----------------------------------------------------------------------------


class Forger:
    """XXpsk0 by hand: the symmetric state of a psk holder who sends whatever it likes."""

    def __init__(self, psk: bytes = NET.network_key) -> None:
        self.sym = SymmetricState(PROTOCOL_NAME.encode())
        self.sym.mix_hash(PROLOGUE)
        self.sym.mix_key_and_hash(psk)

    def e(self, public: bytes) -> bytes:
        self.sym.mix_hash(public)
        self.sym.mix_key(public)  # psk handshakes mix e into the key (Noise §9.2)
        return public

    def dh(self, secret: bytes, public: bytes) -> None:
        self.sym.mix_key(crypto_scalarmult(secret, public))

    def seal(self, plaintext: bytes) -> bytes:
        return self.sym.encrypt_and_hash(plaintext)

    def open(self, ciphertext: bytes) -> bytes:
        return self.sym.decrypt_and_hash(ciphertext)


def forge_msg1(e_public: bytes, psk: bytes = NET.network_key) -> bytes:
    forger = Forger(psk)
    return forger.e(e_public) + forger.seal(b"")


def forge_msg2(
    victim_msg1: bytes,
    *,
    static_secret: bytes = B,
    static_public: bytes | None = None,
    payload: bytes | None = None,
    e_secret: bytes = B_EPH,
    e_public: bytes | None = None,
) -> bytes:
    """The responder's message 2 to an initiator whose message 1 is ``victim_msg1``."""
    forger = Forger()
    initiator_e = forger.e(victim_msg1[:32])
    forger.open(victim_msg1[32:])
    out = forger.e(pub(e_secret) if e_public is None else e_public)
    if e_public is not None:  # a bad e: the victim stops at it, the rest is filler
        return out + bytes(MSG2_SIZE - 32)
    forger.dh(e_secret, initiator_e)  # ee
    out += forger.seal(pub(static_secret) if static_public is None else static_public)
    if static_public is not None:
        return out + bytes(MSG2_SIZE - len(out))
    forger.dh(static_secret, initiator_e)  # es: the responder's s with the initiator's e
    return out + forger.seal(slot_of(CERTS[B]) if payload is None else payload)


def forge_msg3(
    *,
    static_secret: bytes = A,
    static_public: bytes | None = None,
    payload: bytes | None = None,
    e_secret: bytes = A_EPH,
    victim: PeerHandshake | None = None,
) -> tuple[PeerHandshake, bytes]:
    """A responder that has answered a forger's message 1, and the forger's message 3."""
    victim = responder() if victim is None else victim
    forger = Forger()
    victim.receive_data(forger.e(pub(e_secret)) + forger.seal(b""))
    msg2 = victim.data_to_send()
    responder_e = forger.e(msg2[:32])
    forger.dh(e_secret, responder_e)  # ee
    responder_s = forger.open(msg2[32:80])
    forger.dh(e_secret, responder_s)  # es
    forger.open(msg2[80:])
    out = forger.seal(pub(static_secret) if static_public is None else static_public)
    if static_public is not None:
        return victim, out + bytes(MSG3_SIZE - len(out))
    forger.dh(static_secret, responder_e)  # se: the initiator's s with the responder's e
    return victim, out + forger.seal(slot_of(CERTS[A]) if payload is None else payload)


def test_the_forger_builds_exactly_the_real_messages() -> None:
    assert forge_msg1(pub(A_EPH)) == M1
    assert forge_msg2(M1) == M2
    victim, msg3 = forge_msg3()
    assert msg3 == M3
    victim.receive_data(msg3)
    assert victim.is_complete and victim.peer == membership.open_certificate(CERTS[A], NET.manifest)


# --- the happy path ------------------------------------------------------------------------


def test_handshake_then_frames_both_ways_then_end() -> None:
    ours, theirs = initiator(), responder()
    m1 = ours.data_to_send()
    assert ours.status is HandshakeStatus.AWAIT_MSG2 and ours.data_to_send() == b""
    theirs.receive_data(m1)
    m2 = theirs.data_to_send()
    assert theirs.status is HandshakeStatus.AWAIT_MSG3 and [theirs.peer] == [None]
    ours.receive_data(m2)
    assert ours.is_complete and ours.peer is not None and ours.peer.node_key == pub(B)
    assert ours.peer.node_key == pub(B)
    m3 = ours.data_to_send()
    our_sender, our_receiver = ours.transport()
    # The initiator may send frames right behind message 3, in the same delivery.
    theirs.receive_data(m3 + our_sender.send(b"first report batch"))
    assert theirs.is_complete and theirs.peer is not None and theirs.peer.node_key == pub(A)
    assert theirs.handshake_hash == ours.handshake_hash and len(ours.handshake_hash) == 64
    assert [len(m) for m in (m1, m2, m3)] == [MSG1_SIZE, MSG2_SIZE, MSG3_SIZE] == [48, 168, 136]
    their_sender, their_receiver = theirs.transport()
    assert their_receiver.next_event() == Data(b"first report batch")
    their_receiver.receive_data(our_sender.send(b"x" * 5000) + our_sender.end())
    assert [their_receiver.next_event() for _ in range(3)] == [Data(b"x" * 5000), End(), None]
    our_receiver.receive_data(their_sender.send(b"receipts") + their_sender.end())
    assert our_receiver.next_event() == Data(b"receipts")
    assert our_receiver.next_event() == End()
    assert our_receiver.eof_received() is True and their_receiver.eof_received() is True
    assert our_sender.state is StreamState.ENDED and their_sender.state is StreamState.ENDED
    assert [ours.status, theirs.status] == [HandshakeStatus.TRANSPORT] * 2


def test_message_sizes_do_not_depend_on_the_certificate() -> None:
    big = NET.certificate(C, expires=2**63 - 1)
    small = NET.certificate(C, expires=0)
    assert len(big) != len(small)
    for cert in (big, small):
        sizes = [len(m) for m in run(initiator(C, certificate=cert), responder(B))]
        assert sizes == [48, 168, 136]
        sizes = [len(m) for m in run(initiator(A), responder(C, certificate=cert))]
        assert sizes == [48, 168, 136]


def test_bytes_after_completion_wait_for_the_frame_receiver() -> None:
    ours, theirs = initiator(), responder()
    run(ours, theirs)
    our_sender, _ = ours.transport()
    frame = our_sender.send(b"late")
    theirs.receive_data(frame[:10])
    theirs.receive_data(frame[10:])
    theirs.eof_received()  # after completion a close is not a handshake failure
    _, their_receiver = theirs.transport()
    assert their_receiver.next_event() == Data(b"late")


def test_misuse_is_a_local_error() -> None:
    ours = initiator()
    with pytest.raises(LocalProtocolError, match="complete handshake"):
        ours.transport()
    with pytest.raises(LocalProtocolError, match="only final once complete"):
        _ = ours.handshake_hash
    run(ours, responder())
    ours.transport()
    with pytest.raises(LocalProtocolError, match="complete handshake"):
        ours.transport()
    with pytest.raises(LocalProtocolError, match="feed the FrameReceiver"):
        ours.receive_data(b"frame bytes")
    assert ours.is_initiator and not responder().is_initiator


def test_own_certificate_is_checked_at_construction() -> None:
    with pytest.raises(ValueError, match="does not verify"):
        initiator(certificate=bytes(300))
    with pytest.raises(ValueError, match="does not verify"):
        initiator(certificate=OTHER.certificate(A))
    with pytest.raises(ValueError, match="another node key"):
        initiator(certificate=CERTS[B])
    with pytest.raises(ValueError, match="psk must be 32 bytes"):
        initiator(network_key=b"short")


def test_a_certificate_a_peer_would_not_rebuild_is_refused_at_construction() -> None:
    """A peer rebuilds the canonical bytes from the slot; a validly signed certificate that
    is not canonical (a non-minimal integer here) would fail at every peer: it is refused
    at construction, so a node never starts a handshake every peer refuses."""
    canonical = codec.encode({"exp": 5, "net": NET.network_id, "node": pub(A), "v": 1})
    odd = canonical.replace(b"\xa3exp\x05", b"\xa3exp\xcc\x05")
    assert odd != canonical
    signed = codec.encode(
        {"b": odd, "s": crypto.sign(crypto.Domain.CERTIFICATE, NET.certificate_seed, odd)}
    )
    with pytest.raises(ValueError, match="not canonical"):
        initiator(certificate=signed)


def test_certificate_slot_round_trip() -> None:
    for node in (A, B, C):
        slot = certificate_slot(CERTS[node], NET.manifest)
        assert len(slot) == CERT_SLOT == 72 and slot == slot_of(CERTS[node])
        assert certificate_from_slot(slot, NET.manifest, pub(node)) == CERTS[node]
    # Limits of the slot itself (the fixed message sizes make other lengths impossible
    # on the wire; the function refuses them anyway).
    with pytest.raises(RemoteProtocolError, match="not 72"):
        certificate_from_slot(bytes(CERT_SLOT + 1), NET.manifest, pub(A))
    with pytest.raises(RemoteProtocolError, match="impossible expiry"):
        certificate_from_slot(b"\xff" * CERT_SLOT, NET.manifest, pub(A))
    top = (MAX_EXPIRY).to_bytes(8, "big") + bytes(64)
    assert codec.decode(certificate_from_slot(top, NET.manifest, pub(A)))


# --- certificate checks, both roles --------------------------------------------------------


def cert_for(net_id: bytes, node_key: bytes, signer: bytes) -> bytes:
    body = membership.NodeCertificate(net_id, node_key, CLAIMED_TIME + 86400)
    return membership.sign_certificate(body, signer)


def tampered(slot: bytes, index: int) -> bytes:
    return slot[:index] + bytes([slot[index] ^ 1]) + slot[index + 1 :]


# Each makes the slot for the sender's node key ``key``. The receiver rebuilds the
# certificate for the key the sender proved in Noise, so every one of these fails HQ's
# signature: a slot cannot name another node, network or expiry than HQ signed.
BAD_CERTIFICATES: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("valid certificate of another node", lambda key: slot_of(CERTS[C]), "signature"),
    (
        "signed by a wrong key",
        lambda key: slot_of(cert_for(NET.network_id, key, OTHER.certificate_seed)),
        "signature",
    ),
    (
        "of another network",
        lambda key: slot_of(cert_for(OTHER.network_id, key, NET.certificate_seed)),
        "signature",
    ),
    (
        "expiry changed",
        lambda key: tampered(slot_of(cert_for(NET.network_id, key, NET.certificate_seed)), 7),
        "signature",
    ),
    (
        "signature changed",
        lambda key: tampered(slot_of(cert_for(NET.network_id, key, NET.certificate_seed)), 40),
        "signature",
    ),
    ("all zeros", lambda key: bytes(CERT_SLOT), "signature"),
    ("impossible expiry", lambda key: b"\x80" + bytes(CERT_SLOT - 1), "impossible expiry"),
]
_BAD_IDS = [name for name, _, _ in BAD_CERTIFICATES]


@pytest.mark.parametrize(("name", "make_cert", "reason"), BAD_CERTIFICATES, ids=_BAD_IDS)
def test_initiator_refuses_a_bad_responder_certificate(
    name: str, make_cert: Callable[[bytes], bytes], reason: str
) -> None:
    payload = make_cert(pub(B))
    refuses(at_msg2(), forge_msg2(M1, payload=payload), reason)  # and sends no message 3


@pytest.mark.parametrize(("name", "make_cert", "reason"), BAD_CERTIFICATES, ids=_BAD_IDS)
def test_responder_refuses_a_bad_initiator_certificate(
    name: str, make_cert: Callable[[bytes], bytes], reason: str
) -> None:
    victim, msg3 = forge_msg3(payload=make_cert(pub(A)))
    refuses(victim, msg3, reason)


def test_revoked_nodes_are_refused_in_both_roles() -> None:
    ours = initiator(revoked_nodes=frozenset({pub(B)}))
    theirs = responder()
    theirs.receive_data(ours.data_to_send())
    refuses(ours, theirs.data_to_send(), "revoked")  # and message 3 is never sent
    ours = initiator()
    theirs = responder(revoked_nodes=frozenset({pub(C), pub(A)}))
    theirs.receive_data(ours.data_to_send())
    ours.receive_data(theirs.data_to_send())
    refuses(theirs, ours.data_to_send(), "revoked")
    # Revoking someone else changes nothing.
    run(initiator(revoked_nodes=frozenset({pub(C)})), responder(revoked_nodes=frozenset({pub(C)})))


def test_a_peer_with_our_own_key_is_refused() -> None:
    ours, theirs = initiator(B), responder(B)
    theirs.receive_data(ours.data_to_send())
    refuses(ours, theirs.data_to_send(), "our own node key")
    victim, msg3 = forge_msg3(static_secret=B, payload=slot_of(CERTS[B]))
    refuses(victim, msg3, "our own node key")


# --- outsiders -----------------------------------------------------------------------------


def test_outsiders_get_zero_bytes_1000_attempts() -> None:
    rng = random.Random(4)
    cache = ReplayCache()
    first = responder(replay_cache=cache)
    first.receive_data(M1)
    assert len(first.data_to_send()) == MSG2_SIZE  # the genuine first message is answered
    kinds = ["random", "random 48", "wrong psk", "replay", "trickle"]
    for attempt in range(1000):
        kind = kinds[attempt % len(kinds)]
        gatekeeper = responder(eph=seed(f"responder eph {attempt}"), replay_cache=cache)
        wrong_psk = forge_msg1(pub(seed(f"outsider {attempt}")), psk=seed(f"guess {attempt}"))
        data = {
            "random": rng.randbytes(rng.randrange(1, 400)),
            "random 48": rng.randbytes(MSG1_SIZE),
            "wrong psk": wrong_psk,
            "replay": M1,
            "trickle": wrong_psk,
        }[kind]
        chunks = [data[i : i + 1] for i in range(len(data))] if kind == "trickle" else [data]
        try:
            for chunk in chunks:
                gatekeeper.receive_data(chunk)
                assert gatekeeper.data_to_send() == b""
            gatekeeper.eof_received()  # still short of a message: the peer gave up
        except RemoteProtocolError:
            pass
        else:
            raise AssertionError(f"{kind} attempt {attempt} was not refused")
        assert_dead(gatekeeper)
    assert len(cache) == 1  # outsiders never reach the cache


def test_a_trickled_first_message_works() -> None:
    gatekeeper = responder()
    for byte in M1[:-1]:
        gatekeeper.receive_data(bytes([byte]))
        assert gatekeeper.data_to_send() == b"" and not gatekeeper.failed
    gatekeeper.receive_data(M1[-1:])
    assert gatekeeper.data_to_send() == M2


def test_a_replayed_first_message_without_a_cache_gets_an_unreadable_answer() -> None:
    # XXpsk0 message 1 holds nothing fresh from the responder: a replay is answered. The
    # answer is sealed to the recorded ephemeral key, whose secret the replayer lacks.
    gatekeeper = responder(eph=seed("fresh responder ephemeral"))
    gatekeeper.receive_data(M1)
    answer = gatekeeper.data_to_send()
    assert len(answer) == MSG2_SIZE and answer != M2
    # Even a member who holds the psk and every static secret cannot open it.
    for guess in (A, B, C, NET.network_key, seed("guess")):
        forger = Forger()
        forger.e(M1[:32])
        forger.open(M1[32:])
        forger.e(answer[:32])
        forger.dh(guess, answer[:32])  # ee needs the initiator's ephemeral secret
        with pytest.raises(RemoteProtocolError, match="authentication"):
            forger.open(answer[32:80])
    replayer = HandshakeState(
        PROTOCOL_NAME,
        initiator=True,
        prologue=PROLOGUE,
        s=A,
        e=seed("replayer"),
        psks=[NET.network_key],
    )
    replayer.write_message(b"")
    with pytest.raises(RemoteProtocolError):
        replayer.read_message(answer)
    # Nor can it finish: any message 3 fails.
    refuses(gatekeeper, random.Random(1).randbytes(MSG3_SIZE), "message 3")


def test_a_replay_cache_turns_replays_into_silence() -> None:
    cache = ReplayCache(capacity=2)
    first = responder(replay_cache=cache)
    first.receive_data(M1)
    assert first.data_to_send()
    replayed = responder(eph=seed("second"), replay_cache=cache)
    refuses(replayed, M1, "replay")
    # After `capacity` newer handshakes the oldest is forgotten (a replay then gets an
    # unreadable answer, as above).
    for index in range(2):
        other = initiator(eph=seed(f"newer {index}")).data_to_send()
        responder(replay_cache=cache).receive_data(other)
    late = responder(eph=seed("third"), replay_cache=cache)
    late.receive_data(M1)
    assert len(late.data_to_send()) == MSG2_SIZE


def test_replay_cache() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ReplayCache(0)
    cache = ReplayCache(3)
    assert [cache.check_and_add(k) for k in (b"a", b"b", b"a", b"c")] == [True, True, False, True]
    assert len(cache) == 3 and b"a" in cache
    assert cache.check_and_add(b"d")  # evicts b"b": b"a" was refreshed by its repeat
    assert b"b" not in cache and b"a" in cache and len(cache) == 3
    assert cache.check_and_add(b"b") and not cache.check_and_add(b"d")


# --- every flip, truncation and extension, both roles ----------------------------------------


@pytest.mark.parametrize(("name", "make", "message"), STEPS, ids=[s[0] for s in STEPS])
def test_every_bit_flip_aborts_without_another_byte(
    name: str, make: Callable[[], PeerHandshake], message: bytes
) -> None:
    snapshot = make()
    for bit in range(len(message) * 8):
        damaged = bytearray(message)
        damaged[bit // 8] ^= 1 << (bit % 8)
        machine = copy.deepcopy(snapshot)
        refuses(machine, bytes(damaged))


@pytest.mark.parametrize(("name", "make", "message"), STEPS, ids=[s[0] for s in STEPS])
def test_every_truncation_aborts_at_eof_without_another_byte(
    name: str, make: Callable[[], PeerHandshake], message: bytes
) -> None:
    snapshot = make()
    for length in range(len(message)):
        machine = copy.deepcopy(snapshot)
        machine.receive_data(message[:length])
        assert machine.data_to_send() == b"" and not machine.failed
        with pytest.raises(RemoteProtocolError, match="closed during the handshake"):
            machine.eof_received()
        assert_dead(machine)


@pytest.mark.parametrize(("name", "make", "message"), STEPS[:2], ids=[s[0] for s in STEPS[:2]])
def test_extensions_of_messages_1_and_2_abort_without_another_byte(
    name: str, make: Callable[[], PeerHandshake], message: bytes
) -> None:
    snapshot = make()
    for extra in (b"\x00", b"\xff" * 17, M3, bytes(1000)):
        refuses(copy.deepcopy(snapshot), message + extra, "out of turn")


def test_an_extension_of_message_3_is_caught_by_the_frame_receiver() -> None:
    # Message 3 may be followed by frames, so extra bytes go to the FrameReceiver: a short
    # tail fails at EOF, a long one fails authentication.
    for extra, check in (
        (b"\x00", "eof"),
        (bytes(17), "eof"),
        (bytes(18), "next"),
        (bytes(500), "next"),
    ):
        machine = at_msg3()
        machine.receive_data(M3 + extra)
        assert machine.is_complete and machine.data_to_send() == b""
        _, receiver = machine.transport()
        with pytest.raises(RemoteProtocolError, match=r"middle of a frame|failed authentication"):
            if check == "eof":
                assert receiver.next_event() is None
                receiver.eof_received()
            else:
                receiver.next_event()


def test_a_message_meant_for_the_other_role_is_refused() -> None:
    refuses(at_msg1(), M2[:MSG1_SIZE], "message 1")
    refuses(at_msg2(), M1 + bytes(MSG2_SIZE - MSG1_SIZE), "message 2")
    refuses(at_msg3(), M2[:MSG3_SIZE], "message 3")
    # A message 2 from another session (another responder ephemeral) does not fit ours.
    _, other_m2, other_m3 = run(initiator(eph=seed("x")), responder(eph=seed("y")))
    refuses(at_msg2(), other_m2, "message 2")
    refuses(at_msg3(), other_m3, "message 3")


# --- low-order and invalid keys --------------------------------------------------------------

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
_IDS = [p.hex()[:6] + ".." + p.hex()[-2:] for p in LOW_ORDER_POINTS]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=_IDS)
def test_low_order_keys_abort_like_any_other_failure(point: bytes) -> None:
    refuses(at_msg1(), forge_msg1(point), "low-order")  # e in message 1
    refuses(at_msg2(), forge_msg2(M1, e_public=point), "low-order")  # e in message 2
    refuses(at_msg2(), forge_msg2(M1, static_public=point), "low-order")  # s in message 2
    victim, msg3 = forge_msg3(static_public=point)  # s in message 3
    refuses(victim, msg3, "low-order")


# --- only RemoteProtocolError, whatever arrives ------------------------------------------


def _mutated(message: bytes) -> st.SearchStrategy[bytes]:
    return st.tuples(st.integers(0, len(message)), st.binary(max_size=24)).map(
        lambda cut: message[: cut[0]] + cut[1] + message[cut[0] + len(cut[1]) :]
    )


_SNAPSHOTS = [(name, make(), message) for name, make, message in STEPS]


@settings(max_examples=600, deadline=None)
@given(
    step=st.sampled_from(_SNAPSHOTS),
    data=st.data(),
    chunks=st.lists(st.integers(0, 400), max_size=6),
    eof=st.booleans(),
)
def test_arbitrary_bytes_in_arbitrary_chunks_raise_only_remote_protocol_error(
    step: tuple[str, PeerHandshake, bytes], data: st.DataObject, chunks: list[int], eof: bool
) -> None:
    _, snapshot, message = step
    raw = data.draw(st.one_of(st.binary(max_size=800), _mutated(message)))
    machine = copy.deepcopy(snapshot)
    position = 0
    try:
        for size in [*chunks, len(raw)]:
            machine.receive_data(raw[position : position + size])
            position += size
        if eof:
            machine.eof_received()
    except RemoteProtocolError:
        assert_dead(machine)
    else:
        # Without an error the machine is still waiting for a whole message (and stays
        # silent) or it got the genuine one.
        if len(raw) < len(message):
            assert not eof and machine.data_to_send() == b"" and not machine.is_complete
        else:
            assert raw.startswith(message)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(min_size=CERT_SLOT, max_size=CERT_SLOT))
def test_any_certificate_slot_from_a_member_raises_only_remote_protocol_error(
    payload: bytes,
) -> None:
    # Behind the psk gate: the certificate parser sees arbitrary bytes.
    with pytest.raises(RemoteProtocolError):
        at_msg2().receive_data(forge_msg2(M1, payload=payload))
    victim, msg3 = forge_msg3(payload=payload)
    with pytest.raises(RemoteProtocolError):
        victim.receive_data(msg3)
