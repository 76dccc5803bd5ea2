"""Sans-IO Noise Protocol Framework core for ``Noise_*_25519_ChaChaPoly_BLAKE2b``.

Follows the Noise specification, revision 34 (2018-07-11), https://noiseprotocol.org/noise.html:
§4 crypto functions (§4.2 REKEY), §5.1 CipherState, §5.2 SymmetricState (§4.3 HKDF),
§5.3 HandshakeState, §7.4 and §7.5 the one-way and fundamental interactive patterns,
§8 protocol names, §9 psk modifiers, §11.3 rekey, §12.1 / §12.3 / §12.8 X25519, ChaChaPoly
and BLAKE2b. Deferred patterns (``X1X`` ...) and other modifiers (``fallback``) are refused.

Nothing here touches the network, the clock or an entropy source: keys, including the
ephemeral ones, are arguments, so every output is reproducible byte for byte.

Errors: anything wrong with bytes received from the peer raises
:class:`~fieldsync_protocol.errors.RemoteProtocolError` and nothing else; misuse by the local
caller (out of turn, after a failure, nonce exhausted) raises ``LocalProtocolError``; bad
arguments raise ``ValueError``. A handshake that fails while processing a message is dead.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
)
from nacl.exceptions import CryptoError

from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError

# Handshake patterns (§7.4, §7.5): initiator pre-message, responder pre-message, then the
# messages, which alternate initiator -> responder, responder -> initiator, ...
# A DH token names the initiator's key first: "se" is the initiator's s with the responder's e.
_PATTERNS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "N": ("", "s", ("e es",)),
    "K": ("s", "s", ("e es ss",)),
    "X": ("", "s", ("e es s ss",)),
    "NN": ("", "", ("e", "e ee")),
    "NK": ("", "s", ("e es", "e ee")),
    "NX": ("", "", ("e", "e ee s es")),
    "XN": ("", "", ("e", "e ee", "s se")),
    "XK": ("", "s", ("e es", "e ee", "s se")),
    "XX": ("", "", ("e", "e ee s es", "s se")),
    "KN": ("s", "", ("e", "e ee se")),
    "KK": ("s", "s", ("e es ss", "e ee se")),
    "KX": ("s", "", ("e", "e ee se s es")),
    "IN": ("", "", ("e s", "e ee se")),
    "IK": ("", "s", ("e es s ss", "e ee se")),
    "IX": ("", "", ("e s", "e ee se s es")),
}

DH_LEN = 32
HASH_LEN = 64
KEY_LEN = 32
PSK_LEN = 32
TAG_LEN = 16
MAX_MESSAGE_LEN = 65535  # §3: every Noise message, handshake or transport
MAX_NONCE = 2**64 - 1  # §5.1: reserved for REKEY, never used for a message

_NAME = re.compile(
    r"Noise_(?P<pattern>[A-Z][A-Z0-9]*)(?P<modifiers>[a-z][a-z0-9+]*)?_25519_ChaChaPoly_BLAKE2b",
    re.ASCII,
)
_PSK_MODIFIER = re.compile(r"psk(0|[1-9][0-9]*)", re.ASCII)
_ZEROS = bytes(32)


@dataclass(frozen=True)
class _Pattern:
    initiator_premessage: tuple[str, ...]
    responder_premessage: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]
    uses_psk: bool


def _parse_protocol_name(name: str) -> _Pattern:
    """§8 and §9.4: the pattern, with a ``psk`` token placed for each pskN modifier."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(
            f"unsupported Noise protocol name {name!r}: expected "
            "Noise_<pattern>[psk modifiers]_25519_ChaChaPoly_BLAKE2b"
        )
    if match["pattern"] not in _PATTERNS:
        raise ValueError(f"unsupported handshake pattern {match['pattern']!r} in {name!r}")
    initiator_pre, responder_pre, message_texts = _PATTERNS[match["pattern"]]
    messages = [text.split() for text in message_texts]
    modifiers = match["modifiers"].split("+") if match["modifiers"] else []
    if len(set(modifiers)) != len(modifiers):
        raise ValueError(f"repeated modifier in {name!r}")
    for modifier in modifiers:
        psk = _PSK_MODIFIER.fullmatch(modifier)
        if psk is None:
            raise ValueError(f"unsupported modifier {modifier!r} in {name!r}")
        position = int(psk[1])
        if position > len(messages):
            raise ValueError(f"{modifier!r} names a message {name!r} does not have")
        # psk0 opens the first message; pskN (N >= 1) closes message N.
        if position == 0:
            messages[0].insert(0, "psk")
        else:
            messages[position - 1].append("psk")
    return _Pattern(
        tuple(initiator_pre.split()),
        tuple(responder_pre.split()),
        tuple(tuple(message) for message in messages),
        uses_psk=bool(modifiers),
    )


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    # hmac with BLAKE2b uses its 128-byte block, as §4.3 HMAC-HASH requires.
    return hmac.new(key, data, hashlib.blake2b).digest()


def _hkdf(chaining_key: bytes, input_key_material: bytes, outputs: int) -> list[bytes]:
    """§4.3 HKDF: ``outputs`` (2 or 3) values of HASH_LEN bytes."""
    temp_key = _hmac(chaining_key, input_key_material)
    results: list[bytes] = []
    previous = b""
    for index in range(1, outputs + 1):
        previous = _hmac(temp_key, previous + bytes([index]))
        results.append(previous)
    return results


def _dh(private_key: bytes, public_key: bytes) -> bytes:
    """§12.1 DH, refusing any output of all zeros (low-order keys, §14; WireGuard does too)."""
    try:
        shared = crypto_scalarmult(private_key, public_key)
    except RuntimeError:  # how PyNaCl reports libsodium refusing an all-zero output
        shared = _ZEROS
    # Checked here as well so a libsodium that returns the zeros is refused just the same.
    if hmac.compare_digest(shared, _ZEROS):
        raise RemoteProtocolError("low-order public key (all-zero Diffie-Hellman output)")
    return shared


def _reject_low_order(public_key: bytes) -> bytes:
    """Refuse a low-order key as soon as it arrives, not at its first use in a later message.

    X25519 clamps every scalar to a multiple of the cofactor 8, so a DH with any fixed scalar
    is all zeros exactly for the keys that would zero every later DH as well.
    """
    _dh(_ZEROS, public_key)
    return public_key


def _checked_length(name: str, value: bytes, length: int) -> bytes:
    # PyNaCl's scalarmult does not check lengths: a short key would be read past its end.
    if len(value) != length:
        raise ValueError(f"{name} must be {length} bytes, got {len(value)}")
    return value


def _split_off(data: bytes, size: int) -> tuple[bytes, bytes]:
    if len(data) < size:
        raise RemoteProtocolError("handshake message truncated")
    return data[:size], data[size:]


class CipherState:
    """§5.1: a ChaChaPoly key (or none yet) and the 64-bit counter that is its nonce."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = None if key is None else _checked_length("key", key, KEY_LEN)
        self._nonce = 0

    @property
    def has_key(self) -> bool:
        return self._key is not None

    @property
    def nonce(self) -> int:
        return self._nonce

    def set_nonce(self, nonce: int) -> None:
        if not 0 <= nonce <= MAX_NONCE:
            raise ValueError(f"nonce must be in [0, 2**64 - 1], got {nonce}")
        self._nonce = nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._key is None:
            return plaintext
        if self._nonce == MAX_NONCE:
            raise LocalProtocolError("nonce exhausted: no more messages under this key")
        if len(plaintext) > MAX_MESSAGE_LEN - TAG_LEN:
            raise ValueError(f"plaintext of {len(plaintext)} bytes exceeds a Noise message")
        ciphertext = crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, ad, _nonce_bytes(self._nonce), self._key
        )
        self._nonce += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Raises RemoteProtocolError for a forged, damaged or mis-sized ciphertext."""
        if self._key is None:
            return ciphertext
        # The peer sent more messages than a nonce can count: its fault, not ours.
        if self._nonce == MAX_NONCE:
            raise RemoteProtocolError("nonce exhausted: no more messages under this key")
        # Checked before PyNaCl, which fails with ValueError (not CryptoError) on short input.
        if not TAG_LEN <= len(ciphertext) <= MAX_MESSAGE_LEN:
            raise RemoteProtocolError(f"ciphertext of {len(ciphertext)} bytes is impossible")
        try:
            plaintext = crypto_aead_chacha20poly1305_ietf_decrypt(
                ciphertext, ad, _nonce_bytes(self._nonce), self._key
            )
        except CryptoError:
            raise RemoteProtocolError("message failed authentication") from None
        self._nonce += 1  # only on success (§5.1): a forgery must not desynchronise us
        return plaintext

    def rekey(self) -> None:
        """§4.2 REKEY / §11.3: k = ENCRYPT(k, maxnonce, zerolen, zeros)[:32]; n is kept."""
        if self._key is None:
            raise LocalProtocolError("cannot rekey a CipherState without a key")
        encrypted = crypto_aead_chacha20poly1305_ietf_encrypt(
            _ZEROS, b"", _nonce_bytes(MAX_NONCE), self._key
        )
        self._key = encrypted[:KEY_LEN]


def _nonce_bytes(nonce: int) -> bytes:
    # §12.3 ChaChaPoly: 32 bits of zeros, then the 64-bit counter little-endian.
    return bytes(4) + nonce.to_bytes(8, "little")


class SymmetricState:
    """§5.2: chaining key ``ck``, handshake hash ``h`` and the handshake CipherState."""

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASH_LEN:
            self._handshake_hash = protocol_name.ljust(HASH_LEN, b"\0")
        else:
            self._handshake_hash = _hash(protocol_name)
        self._chaining_key = self._handshake_hash
        self._cipher = CipherState()

    @property
    def handshake_hash(self) -> bytes:
        return self._handshake_hash

    @property
    def has_key(self) -> bool:
        return self._cipher.has_key

    def mix_key(self, input_key_material: bytes) -> None:
        self._chaining_key, temp_key = _hkdf(self._chaining_key, input_key_material, 2)
        self._cipher = CipherState(temp_key[:KEY_LEN])

    def mix_hash(self, data: bytes) -> None:
        self._handshake_hash = _hash(self._handshake_hash + data)

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        self._chaining_key, temp_hash, temp_key = _hkdf(self._chaining_key, input_key_material, 3)
        self.mix_hash(temp_hash)
        self._cipher = CipherState(temp_key[:KEY_LEN])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self._cipher.encrypt_with_ad(self._handshake_hash, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self._cipher.decrypt_with_ad(self._handshake_hash, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """(initiator -> responder, responder -> initiator)."""
        first, second = _hkdf(self._chaining_key, b"", 2)
        return CipherState(first[:KEY_LEN]), CipherState(second[:KEY_LEN])


class HandshakeState:
    """§5.3: one side of a handshake, driven by ``write_message`` and ``read_message`` in turn.

    ``s`` and ``e`` are our X25519 private keys; ``e`` may instead come from
    ``generate_keypair``, a callable returning a fresh 32-byte private key (the public half is
    derived). ``rs`` and ``re`` are the peer's public keys known in advance, accepted exactly
    when the pattern has them as pre-messages, so a key the pattern would ignore never gives
    a false sense of pinning. ``psks`` are used in the order their tokens occur.
    """

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: bytes | None = None,
        e: bytes | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        psks: Sequence[bytes] = (),
        generate_keypair: Callable[[], bytes] | None = None,
    ) -> None:
        pattern = _parse_protocol_name(protocol_name)
        if e is None and generate_keypair is not None:
            e = generate_keypair()
        self._initiator = initiator
        self._messages = pattern.messages
        self._uses_psk = pattern.uses_psk
        self._local_private = {
            token: _checked_length(token, key, DH_LEN)
            for token, key in (("s", s), ("e", e))
            if key is not None
        }
        self._local_public = {
            token: crypto_scalarmult_base(key) for token, key in self._local_private.items()
        }
        self._remote_public: dict[str, bytes] = {}
        for token, key in (("s", rs), ("e", re)):
            if key is not None:
                self._remote_public[token] = _caller_remote_key("r" + token, key)
        self._psks = [_checked_length("psk", psk, PSK_LEN) for psk in psks]

        role = "initiator" if initiator else "responder"
        own_pre, peer_pre = pattern.initiator_premessage, pattern.responder_premessage
        if not initiator:
            own_pre, peer_pre = peer_pre, own_pre
        own_messages = self._messages[0 if initiator else 1 :: 2]
        needed = set(own_pre) | {t for m in own_messages for t in m if t in ("e", "s")}
        if missing := needed - self._local_private.keys():
            raise ValueError(f"{protocol_name} {role} needs private key(s) {sorted(missing)}")
        if self._remote_public.keys() != set(peer_pre):
            raise ValueError(
                f"{protocol_name} {role} takes remote pre-message key(s) {sorted(peer_pre)}, "
                f"got {sorted(self._remote_public)}"
            )
        psk_count = sum(m.count("psk") for m in self._messages)
        if len(self._psks) != psk_count:
            raise ValueError(f"{protocol_name} needs {psk_count} psk(s), got {len(self._psks)}")

        self._symmetric = SymmetricState(protocol_name.encode("ascii"))
        self._symmetric.mix_hash(prologue)
        initiator_keys, responder_keys = self._local_public, self._remote_public
        if not initiator:
            initiator_keys, responder_keys = responder_keys, initiator_keys
        for token in pattern.initiator_premessage:
            self._symmetric.mix_hash(initiator_keys[token])
        for token in pattern.responder_premessage:
            self._symmetric.mix_hash(responder_keys[token])

        self._next_message = 0
        self._failed = False
        self._was_split = False

    @property
    def is_initiator(self) -> bool:
        return self._initiator

    @property
    def is_complete(self) -> bool:
        return self._next_message == len(self._messages)

    @property
    def is_write_turn(self) -> bool:
        """True when the next call must be ``write_message``."""
        return not self.is_complete and (self._next_message % 2 == 0) == self._initiator

    @property
    def handshake_hash(self) -> bytes:
        """``h``: after completion, the channel binding value (§11.2)."""
        return self._symmetric.handshake_hash

    @property
    def remote_static(self) -> bytes | None:
        return self._remote_public.get("s")

    def write_message(self, payload: bytes = b"") -> bytes:
        steps = self._start_turn(writing=True)
        self._failed = True  # stays set if anything below raises: a half-done turn is fatal
        parts: list[bytes] = []
        for step in steps:
            if step == "e":
                parts.append(self._local_public["e"])
                self._mix_ephemeral(self._local_public["e"])
            elif step == "s":
                parts.append(self._symmetric.encrypt_and_hash(self._local_public["s"]))
            else:
                self._mix_secret(step)
        parts.append(self._symmetric.encrypt_and_hash(payload))
        message = b"".join(parts)
        if len(message) > MAX_MESSAGE_LEN:
            raise ValueError(f"handshake message of {len(message)} bytes is too long")
        self._end_turn()
        return message

    def read_message(self, message: bytes) -> bytes:
        """The decrypted payload. Bad bytes raise RemoteProtocolError, and only that."""
        steps = self._start_turn(writing=False)
        self._failed = True  # stays set if anything below raises: a half-done turn is fatal
        if len(message) > MAX_MESSAGE_LEN:
            raise RemoteProtocolError(f"handshake message of {len(message)} bytes is too long")
        rest = bytes(message)
        for step in steps:
            if step == "e":
                remote_ephemeral, rest = _split_off(rest, DH_LEN)
                self._remote_public["e"] = _reject_low_order(remote_ephemeral)
                self._mix_ephemeral(remote_ephemeral)
            elif step == "s":
                size = DH_LEN + TAG_LEN if self._symmetric.has_key else DH_LEN
                sealed_static, rest = _split_off(rest, size)
                remote_static = self._symmetric.decrypt_and_hash(sealed_static)
                self._remote_public["s"] = _reject_low_order(remote_static)
            else:
                self._mix_secret(step)
        payload = self._symmetric.decrypt_and_hash(rest)
        self._end_turn()
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """(initiator -> responder, responder -> initiator); once, after completion."""
        if self._failed or not self.is_complete:
            raise LocalProtocolError("split() needs a completed handshake")
        if self._was_split:
            # Two pairs of identical CipherStates would reuse nonces under one key.
            raise LocalProtocolError("split() may be called only once")
        self._was_split = True
        return self._symmetric.split()

    def _start_turn(self, *, writing: bool) -> tuple[str, ...]:
        if self._failed:
            raise LocalProtocolError("this handshake failed earlier: start a new one")
        if self.is_complete:
            raise LocalProtocolError("the handshake is complete: use split()")
        if writing != self.is_write_turn:
            expected = "write_message" if self.is_write_turn else "read_message"
            raise LocalProtocolError(f"out of turn: expected {expected}")
        return self._messages[self._next_message]

    def _end_turn(self) -> None:
        self._next_message += 1
        self._failed = False

    def _mix_ephemeral(self, public_key: bytes) -> None:
        self._symmetric.mix_hash(public_key)
        if self._uses_psk:  # §9.2: e doubles as a nonce for the psk-derived keys
            self._symmetric.mix_key(public_key)

    def _mix_secret(self, step: str) -> None:
        """A psk token, or a DH token such as "es" (§5.3), identical when writing and reading."""
        if step == "psk":
            self._symmetric.mix_key_and_hash(self._psks.pop(0))
            return
        local, remote = step[0], step[1]  # the initiator's key, then the responder's
        if not self._initiator:
            local, remote = remote, local
        self._symmetric.mix_key(_dh(self._local_private[local], self._remote_public[remote]))


def _caller_remote_key(name: str, public_key: bytes) -> bytes:
    _checked_length(name, public_key, DH_LEN)
    try:
        return _reject_low_order(public_key)
    except RemoteProtocolError:
        raise ValueError(f"{name} is a low-order point") from None
