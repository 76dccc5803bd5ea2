"""Sans-IO peer handshake: ``Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b`` with node certificates.

SPEC.md §12.1. Three messages, each of a fixed size, nothing in clear::

    -> psk, e                 48 B    empty payload, sealed under the network key
    <- e, ee, s, es          168 B    the responder's certificate slot (72 B)
    -> s, se                 136 B    the initiator's certificate slot (72 B)

A certificate slot is the certificate without the fields the receiver already knows: the
network id is the manifest's, the node key is the Noise static key just received, the
version is 1. Only the expiry and HQ's signature travel; the receiver rebuilds the canonical
certificate and verifies HQ's signature over it, so nothing is trusted that HQ did not sign.

Prologue ``b"fieldsync/1"``; psk = the network key. Without the network key nobody can
produce a first message the responder accepts, so an outsider gets zero bytes back. Each
side checks the peer's certificate: HQ's signature (the manifest's certificate key), the
network, that it names the Noise static key the peer just proved it holds, that it is not
ours and not revoked.

Only ``RemoteProtocolError`` leaves ``receive_data`` and ``eof_received``. After any failure
the machine is dead: it never writes another byte (``data_to_send`` returns ``b""`` for
ever) and every later ``receive_data`` raises again. The driver closes the connection, after
a random delay when the responder failed (a bad first message gets silence, not a reset).

Keys, including the ephemeral one, are arguments: the caller brings fresh randomness.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from collections.abc import Sequence
from enum import Enum

from fieldsync_protocol import codec
from fieldsync_protocol.crypto import box_public_key
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.frames import FrameReceiver, FrameSender
from fieldsync_protocol.membership import VERSION, Manifest, NodeCertificate, open_certificate
from fieldsync_protocol.noise import DH_LEN, TAG_LEN, HandshakeState

PROTOCOL_NAME = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b"
PROLOGUE = b"fieldsync/1"

#: The certificate slot, the payload of messages 2 and 3: the certificate's expiry (u64
#: big-endian) then HQ's Ed25519 signature. Everything else in a certificate (network id,
#: node key, version) the receiver already knows, and rebuilds (SPEC.md §12.1.2).
EXPIRY_SIZE = 8
SIGNATURE_SIZE = 64
CERT_SLOT = EXPIRY_SIZE + SIGNATURE_SIZE  # 72
#: Largest expiry a certificate may carry (SPEC.md §5: 0..2**63-1).
MAX_EXPIRY = 2**63 - 1

MSG1_SIZE = DH_LEN + TAG_LEN  # e, sealed empty payload: 48
MSG2_SIZE = DH_LEN + (DH_LEN + TAG_LEN) + (CERT_SLOT + TAG_LEN)  # e, sealed s, sealed slot: 168
MSG3_SIZE = (DH_LEN + TAG_LEN) + (CERT_SLOT + TAG_LEN)  # sealed s, sealed slot: 136

#: Default number of first-message ephemeral keys a responder remembers.
DEFAULT_REPLAY_CAPACITY = 4096


class HandshakeStatus(Enum):
    AWAIT_MSG1 = "await message 1"  # responder, at the start
    AWAIT_MSG2 = "await message 2"  # initiator, message 1 written
    AWAIT_MSG3 = "await message 3"  # responder, message 2 written
    COMPLETE = "complete"  # both: call transport()
    TRANSPORT = "transport taken"  # both: the FrameSender/FrameReceiver own the keys now
    FAILED = "failed"  # both: dead, silent


# The state machine. In the state on the left the machine reads message ``number``, of
# exactly ``size`` bytes, and moves to the state on the right (writing its reply, if any).
# COMPLETE, TRANSPORT and FAILED read nothing: any other (state, input) pair is refused.
_READS: dict[HandshakeStatus, tuple[int, int, HandshakeStatus]] = {
    HandshakeStatus.AWAIT_MSG1: (1, MSG1_SIZE, HandshakeStatus.AWAIT_MSG3),
    HandshakeStatus.AWAIT_MSG2: (2, MSG2_SIZE, HandshakeStatus.COMPLETE),
    HandshakeStatus.AWAIT_MSG3: (3, MSG3_SIZE, HandshakeStatus.COMPLETE),
}


class ReplayCache:
    """The ephemeral keys of the last ``capacity`` accepted first messages.

    XXpsk0's first message carries nothing fresh from the responder, so a recorded one is
    accepted again; the replayer gets message 2, sealed to an ephemeral key whose secret it
    lacks, and learns nothing. Sharing one cache between the responders of a listener turns
    even that into silence for any replay of the last ``capacity`` handshakes. Only
    authenticated first messages are remembered, so outsiders cannot flush the cache.
    """

    def __init__(self, capacity: int = DEFAULT_REPLAY_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"replay cache capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def check_and_add(self, key: bytes) -> bool:
        """True (and remember ``key``) the first time; False for a key seen recently."""
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True


def certificate_slot(certificate: bytes, manifest: Manifest) -> bytes:
    """Our own certificate as the slot of messages 2 and 3; ``ValueError`` if it does not
    verify. A peer rebuilds exactly our bytes from the slot: ``open_certificate`` accepts
    only canonical encodings of exactly these fields, and our network id and node key are
    the ones the peer uses (the latter is checked by ``PeerHandshake``).
    """
    return _open_own(certificate, manifest)[1]


def _open_own(certificate: bytes, manifest: Manifest) -> tuple[NodeCertificate, bytes]:
    """Our own certificate, verified once, and its slot."""
    try:
        own = open_certificate(certificate, manifest)
    except RemoteProtocolError as exc:
        raise ValueError(f"our own certificate does not verify: {exc}") from None
    outer = codec.as_map(codec.decode(certificate), "node certificate", {"b", "s"})
    signature = codec.get_bytes(outer, "s", "node certificate", SIGNATURE_SIZE)
    return own, own.expires.to_bytes(EXPIRY_SIZE, "big") + signature


def certificate_from_slot(slot: bytes, manifest: Manifest, node_key: bytes) -> bytes:
    """The certificate a slot stands for, for ``node_key`` (the peer's Noise static key).

    The bytes are rebuilt, not trusted: ``open_certificate`` then verifies HQ's signature
    over exactly this network, this node key and the received expiry. A slot of another
    size, or an expiry beyond 2**63 - 1, is refused.
    """
    if len(slot) != CERT_SLOT:
        raise RemoteProtocolError(f"certificate slot is {len(slot)} bytes, not {CERT_SLOT}")
    expires = int.from_bytes(slot[:EXPIRY_SIZE], "big")
    if expires > MAX_EXPIRY:
        raise RemoteProtocolError("certificate slot carries an impossible expiry")
    body = codec.encode(
        {"exp": expires, "net": manifest.network_id, "node": node_key, "v": VERSION}
    )
    return codec.encode({"b": body, "s": slot[EXPIRY_SIZE:]})


class PeerHandshake:
    """One side of the fieldsync handshake; bytes in, bytes out, no I/O.

    The initiator's first message is ready in ``data_to_send()`` as soon as it is built.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        network_key: bytes,
        static_secret: bytes,
        certificate: bytes,
        manifest: Manifest,
        ephemeral_secret: bytes,
        revoked_nodes: frozenset[bytes] = frozenset(),
        replay_cache: ReplayCache | None = None,
        hq_time: int = 0,
        also_accept: Sequence[bytes] = (),
    ) -> None:
        """``hq_time`` is the time of HQ's revocation list the caller follows: a peer
        certificate that expires at or before it is refused (SPEC.md §17.4). ``also_accept``
        (responders only) are further network keys a first message may be sealed under: the
        previous or the next network key while a rotation is in its grace period (§17.5)."""
        if initiator and also_accept:
            raise ValueError("only a responder accepts several network keys")
        own, self._payload = _open_own(certificate, manifest)
        self._static_public = box_public_key(static_secret)
        if own.node_key != self._static_public:
            raise ValueError("our own certificate names another node key than static_secret")
        self._candidates = [
            HandshakeState(
                PROTOCOL_NAME,
                initiator=initiator,
                prologue=PROLOGUE,
                s=static_secret,
                e=ephemeral_secret,
                psks=[key],
            )
            for key in (network_key, *also_accept)
        ]
        self._noise = self._candidates[0]
        self._network_keys = (network_key, *also_accept)
        #: The network key the handshake runs under (a responder knows it after message 1).
        self.network_key = network_key
        self._hq_time = hq_time
        self._initiator = initiator
        self._manifest = manifest
        self._revoked = revoked_nodes
        self._replay_cache = replay_cache
        self._incoming = bytearray()
        self._outgoing = bytearray()
        self._error: RemoteProtocolError | None = None
        self._peer: NodeCertificate | None = None
        if initiator:
            self._outgoing += self._noise.write_message(b"")
            self._status = HandshakeStatus.AWAIT_MSG2
        else:
            self._status = HandshakeStatus.AWAIT_MSG1

    # --- state -------------------------------------------------------------------------

    @property
    def status(self) -> HandshakeStatus:
        return self._status

    @property
    def is_initiator(self) -> bool:
        return self._initiator

    @property
    def is_complete(self) -> bool:
        return self._status in (HandshakeStatus.COMPLETE, HandshakeStatus.TRANSPORT)

    @property
    def failed(self) -> bool:
        return self._status is HandshakeStatus.FAILED

    @property
    def peer(self) -> NodeCertificate | None:
        """The peer's verified certificate, once the handshake is complete."""
        return self._peer

    @property
    def handshake_hash(self) -> bytes:
        """Noise ``h`` of the completed handshake: the channel binding value (64 bytes)."""
        if not self.is_complete:
            raise LocalProtocolError("the handshake hash is only final once complete")
        return self._noise.handshake_hash

    # --- bytes in, bytes out -----------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer now (``b""`` if none, and always after a failure)."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer, in any chunking.

        Bad bytes raise ``RemoteProtocolError`` and nothing else. Calling this after
        ``transport()`` is a caller bug (``LocalProtocolError``).
        """
        if self._error is not None:
            raise RemoteProtocolError(f"the handshake failed earlier: {self._error}")
        if self._status is HandshakeStatus.TRANSPORT:
            raise LocalProtocolError("the handshake is over: feed the FrameReceiver instead")
        self._incoming += data
        try:
            self._advance()
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise

    def eof_received(self) -> None:
        """The peer closed the connection. Before completion that is a failure."""
        if self._error is not None:
            raise RemoteProtocolError(f"the handshake failed earlier: {self._error}")
        if not self.is_complete:
            error = RemoteProtocolError(
                f"connection closed during the handshake ({self._status.value})"
            )
            self._fail(error)
            raise error

    def transport(self) -> tuple[FrameSender, FrameReceiver]:
        """The encrypted framing for the rest of the connection; once, after completion.

        Bytes that arrived after the last handshake message (the initiator may send frames
        right behind message 3) are already fed to the returned receiver.
        """
        if self._status is not HandshakeStatus.COMPLETE:
            raise LocalProtocolError(
                f"transport() needs a complete handshake ({self._status.value})"
            )
        self._status = HandshakeStatus.TRANSPORT
        initiator_to_responder, responder_to_initiator = self._noise.split()
        if self._initiator:
            sender, receiver = initiator_to_responder, responder_to_initiator
        else:
            sender, receiver = responder_to_initiator, initiator_to_responder
        frame_receiver = FrameReceiver(receiver)
        frame_receiver.receive_data(bytes(self._incoming))
        self._incoming.clear()
        return FrameSender(sender), frame_receiver

    # --- internals ---------------------------------------------------------------------

    def _fail(self, error: RemoteProtocolError) -> None:
        self._error = error
        self._status = HandshakeStatus.FAILED
        self._outgoing.clear()
        self._incoming.clear()

    def _advance(self) -> None:
        transition = _READS.get(self._status)
        if transition is None:  # complete: keep what follows for the FrameReceiver
            return
        number, size, next_status = transition
        if len(self._incoming) < size:
            return
        message = bytes(self._incoming[:size])
        del self._incoming[:size]
        # The peer must wait for our reply before it may send more, so extra bytes in the
        # same delivery are out of turn. Only message 3 may be followed at once (by frames).
        if self._incoming and number != 3:
            raise RemoteProtocolError(
                f"bytes received out of turn after handshake message {number}"
            )
        if number == 1:
            payload = self._read_first(message)
        else:
            try:
                payload = self._noise.read_message(message)
            except RemoteProtocolError as exc:
                raise RemoteProtocolError(f"handshake message {number}: {exc}") from None
        if number == 1:  # the payload is empty: MSG1_SIZE leaves no room for one
            if self._replay_cache is not None and not self._replay_cache.check_and_add(
                message[:DH_LEN]
            ):
                raise RemoteProtocolError("handshake message 1 is a replay")
            self._outgoing += self._noise.write_message(self._payload)
        else:
            self._peer = self._check_peer(payload)
            if number == 2:
                self._outgoing += self._noise.write_message(self._payload)
        self._status = next_status

    def _read_first(self, message: bytes) -> bytes:
        """Message 1 under the first network key it authenticates with (one AEAD check per
        accepted key, no Diffie-Hellman: §12.1.4 stays cheap for outsiders)."""
        error: RemoteProtocolError | None = None
        for key, candidate in zip(self._network_keys, self._candidates, strict=True):
            try:
                payload = candidate.read_message(message)
            except RemoteProtocolError as exc:
                error = error or exc
                continue
            self._noise, self.network_key = candidate, key
            self._candidates = [candidate]
            return payload
        raise RemoteProtocolError(f"handshake message 1: {error}")

    def _check_peer(self, payload: bytes) -> NodeCertificate:
        # The static key was read (and authenticated) before the payload of messages 2 and
        # 3: the certificate is rebuilt for it, so HQ's signature also proves it names it.
        remote_static = self._noise.remote_static or b""
        certificate = open_certificate(
            certificate_from_slot(payload, self._manifest, remote_static), self._manifest
        )
        if hmac.compare_digest(remote_static, self._static_public):
            raise RemoteProtocolError("peer uses our own node key")
        if remote_static in self._revoked:
            raise RemoteProtocolError("peer node is revoked")
        if certificate.expired(self._hq_time):
            raise RemoteProtocolError(
                f"peer certificate expired (valid until HQ time {certificate.expires}, HQ's"
                f" latest signed time is {self._hq_time}): HQ must renew it"
            )
        return certificate
