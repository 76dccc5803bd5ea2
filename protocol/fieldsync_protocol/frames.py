"""Sans-IO encrypted framing over the CipherStates of a completed handshake.

SPEC.md §12.2. Each frame on the wire is two Noise transport messages under the
sender's CipherState (associated data empty)::

    header  = ENCRYPT(k, n,     "", u16 big-endian L)                          18 bytes
    body    = ENCRYPT(k, n + 1, "", type || payload || zeros)   padded_size(L) + 16 bytes

``L = 1 + len(payload)`` counts the type byte and the payload; the zeros fill the body to
``padded_size(L)``, Padmé rounding with a 64-byte floor, so only 111 frame sizes exist.
END, the authenticated end of the stream, is a header alone with ``L = 0`` (18 bytes: it
is the last thing on a connection, so its size tells nothing the close does not).
After each frame both sides call ``REKEY()`` (Noise §11.3) on that CipherState: a key
taken from memory does not open frames already sent.

Frame types: MORE (a full-size, non-final fragment of a message), DATA (the last or only
fragment), END (header only; nothing may follow it). A message of
the session layer, up to ``MAX_MESSAGE`` bytes, is cut into ``MAX_PAYLOAD``-byte fragments
in exactly one way, and the receiver hands it over whole. A stream that stops without END
is *interrupted*, never complete.

Only ``RemoteProtocolError`` leaves ``FrameReceiver.receive_data``, ``next_event`` and
``eof_received``; after one the receiver is dead and raises again on every call.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.noise import TAG_LEN, CipherState

HEADER_PLAINTEXT = 2
HEADER_SIZE = HEADER_PLAINTEXT + TAG_LEN  # 18
#: Bodies are padded to a multiple of this, at least.
PAD_QUANTUM = 64
#: Largest padded body: the largest size class whose ciphertext fits one Noise message.
MAX_BODY = 63_488  # 31 * 2048
#: Payload of one frame at most, and exactly that of every MORE fragment.
MAX_PAYLOAD = MAX_BODY - 1  # 63,487
#: Largest frame on the wire.
MAX_FRAME = HEADER_SIZE + MAX_BODY + TAG_LEN  # 63,522
#: Largest message a receiver reassembles by default (the sync session's largest message).
MAX_MESSAGE = 1024 * 1024


def padded_size(length: int) -> int:
    """Padmé (Nikitin et al., PETS 2019) rounding of ``length``, to a multiple of 64.

    With ``E = floor(log2 length)`` and ``S = floor(log2 E) + 1``, round up to a multiple of
    ``max(64, 2 ** (E - S))``: under 6.25 % padding beyond 1 KiB, and 111 distinct sizes.
    """
    if not 1 <= length <= MAX_BODY:
        raise ValueError(f"frame body length {length} is not in 1..{MAX_BODY}")
    exponent = length.bit_length() - 1
    step = max(PAD_QUANTUM, 1 << (exponent - exponent.bit_length()))
    return -(-length // step) * step


def fragments(message: bytes) -> list[bytes]:
    """The one way to cut ``message`` into frame payloads: full fragments, then the rest."""
    if not message:
        return [b""]
    return [message[i : i + MAX_PAYLOAD] for i in range(0, len(message), MAX_PAYLOAD)]


def wire_size(message_length: int) -> int:
    """Bytes on the wire for one message of ``message_length`` bytes (all its frames)."""
    count = max(1, -(-message_length // MAX_PAYLOAD))
    last = message_length - (count - 1) * MAX_PAYLOAD
    return (count - 1) * MAX_FRAME + HEADER_SIZE + padded_size(1 + last) + TAG_LEN


class FrameType(Enum):
    DATA = 1  # the last (or only) fragment of a message
    END = 2  # end of this direction's stream: a header with L = 0, no body (never a body type)
    MORE = 3  # a non-final fragment of a message, exactly MAX_PAYLOAD bytes


#: Bytes on the wire of an END frame: its header alone.
END_SIZE = HEADER_SIZE


class StreamState(Enum):
    OPEN = "open"
    ENDED = "ended"  # END sent (sender) or received (receiver)
    ERROR = "error"  # receiver only: the peer sent something invalid


@dataclass(frozen=True)
class Data:
    """One whole session-layer message."""

    payload: bytes


@dataclass(frozen=True)
class End:
    """The peer ended the stream cleanly; nothing follows."""


Event = Data | End

# The state machine of one direction: (state, frame type) -> next state. Any other pair
# (a frame after END, an unknown type) is an error.
_TRANSITIONS: dict[tuple[StreamState, FrameType], StreamState] = {
    (StreamState.OPEN, FrameType.MORE): StreamState.OPEN,
    (StreamState.OPEN, FrameType.DATA): StreamState.OPEN,
    (StreamState.OPEN, FrameType.END): StreamState.ENDED,
}
#: Types a frame body may carry (END has no body).
_BODY_TYPES = {FrameType.DATA.value: FrameType.DATA, FrameType.MORE.value: FrameType.MORE}


class FrameSender:
    """Turns messages into frames; write what ``send`` and ``end`` return, in order."""

    def __init__(self, cipher: CipherState) -> None:
        self._cipher = cipher
        self._state = StreamState.OPEN
        self._frames = 0

    @property
    def state(self) -> StreamState:
        return self._state

    @property
    def frames_sent(self) -> int:
        """Frames sent so far, which is also the number of rekeys."""
        return self._frames

    def send(self, message: bytes) -> bytes:
        """The frames of one message of at most ``MAX_MESSAGE`` bytes."""
        if len(message) > MAX_MESSAGE:
            raise ValueError(f"message of {len(message)} bytes exceeds {MAX_MESSAGE}")
        *full, last = fragments(message)
        frames = [self._frame(FrameType.MORE, part) for part in full]
        return b"".join([*frames, self._frame(FrameType.DATA, last)])

    def end(self) -> bytes:
        """The END frame (a header with L = 0); the stream is closed for sending afterwards."""
        next_state = self._advance(FrameType.END)
        frame = self._cipher.encrypt_with_ad(b"", bytes(HEADER_PLAINTEXT))
        self._cipher.rekey()
        self._frames += 1
        self._state = next_state
        return frame

    def _advance(self, frame_type: FrameType) -> StreamState:
        next_state = _TRANSITIONS.get((self._state, frame_type))
        if next_state is None:
            raise LocalProtocolError(
                f"cannot send {frame_type.name} on a {self._state.value} stream"
            )
        return next_state

    def _frame(self, frame_type: FrameType, payload: bytes) -> bytes:
        next_state = self._advance(frame_type)
        length = 1 + len(payload)
        body = bytes([frame_type.value]) + payload
        body += bytes(padded_size(length) - length)
        frame = self._cipher.encrypt_with_ad(b"", length.to_bytes(HEADER_PLAINTEXT, "big"))
        frame += self._cipher.encrypt_with_ad(b"", body)
        self._cipher.rekey()
        self._frames += 1
        self._state = next_state
        return frame


class FrameReceiver:
    """Turns received bytes, in any chunking, into ``Data`` and ``End`` events.

    ``max_message`` bounds a reassembled message (and so the memory one peer can hold).
    """

    def __init__(self, cipher: CipherState, max_message: int = MAX_MESSAGE) -> None:
        self._cipher = cipher
        self._max_message = max_message
        self._state = StreamState.OPEN
        self._buffer = bytearray()
        self._length: int | None = None  # L from a header whose body has not arrived yet
        self._parts: list[bytes] = []  # MORE fragments of the message being reassembled
        self._error: RemoteProtocolError | None = None
        self._frames = 0

    @property
    def state(self) -> StreamState:
        return self._state

    @property
    def frames_received(self) -> int:
        """Frames received so far, which is also the number of rekeys."""
        return self._frames

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer; call ``next_event`` until it returns None."""
        self._check_alive()
        if data and self._state is StreamState.ENDED:
            raise self._fail("bytes received after END")
        self._buffer += data

    def next_event(self) -> Event | None:
        """The next complete message or END, or None until more bytes arrive."""
        self._check_alive()
        while self._state is StreamState.OPEN:
            if self._length is None:
                if len(self._buffer) < HEADER_SIZE:
                    return None
                length = int.from_bytes(self._decrypt(HEADER_SIZE, "header"), "big")
                if length == 0:
                    return self._end()
                if length > MAX_BODY:
                    raise self._fail(f"frame declares an impossible length {length}")
                self._length = length
            body_size = padded_size(self._length) + TAG_LEN
            if len(self._buffer) < body_size:
                return None
            body = self._decrypt(body_size, "body")
            length, self._length = self._length, None
            event = self._frame(length, body)
            if event is not None:
                return event
        return None

    def eof_received(self) -> bool:
        """The connection closed: True if the stream had ended with END, False if interrupted.

        Call it after ``next_event`` returned None; bytes of an incomplete frame left over
        raise ``RemoteProtocolError``. A message cut between two whole frames is simply lost
        with the interrupted stream.
        """
        self._check_alive()
        if self._buffer or self._length is not None:
            raise self._fail("connection closed in the middle of a frame")
        return self._state is StreamState.ENDED

    def _end(self) -> End:
        """An END header (L = 0) was just decrypted: nothing may be pending or follow."""
        self._cipher.rekey()
        self._frames += 1
        if self._parts:
            raise self._fail("END in the middle of a message")
        if self._buffer:
            raise self._fail("bytes received after END")
        self._state = StreamState.ENDED
        return End()

    def _frame(self, length: int, body: bytes) -> Event | None:
        """Act on one decrypted body; None after a MORE fragment."""
        self._cipher.rekey()
        self._frames += 1
        frame_type = _BODY_TYPES.get(body[0])
        if frame_type is None:
            raise self._fail(f"unknown frame type {body[0]}")
        if body[length:] != bytes(len(body) - length):
            raise self._fail("frame padding is not all zeros")
        payload = body[1:length]
        pending = len(self._parts) * MAX_PAYLOAD
        if frame_type is FrameType.MORE:
            if len(payload) != MAX_PAYLOAD:
                raise self._fail("MORE fragment is not full size")
            if pending + MAX_PAYLOAD >= self._max_message:
                raise self._fail(f"message exceeds {self._max_message} bytes")
            self._parts.append(payload)
            return None
        if self._parts and not payload:
            raise self._fail("empty last fragment")
        if pending + len(payload) > self._max_message:
            raise self._fail(f"message exceeds {self._max_message} bytes")
        message = b"".join([*self._parts, payload])
        self._parts.clear()
        return Data(message)

    def _check_alive(self) -> None:
        if self._error is not None:
            raise RemoteProtocolError(f"the stream failed earlier: {self._error}")

    def _decrypt(self, size: int, part: str) -> bytes:
        ciphertext = bytes(self._buffer[:size])
        del self._buffer[:size]
        try:
            return self._cipher.decrypt_with_ad(b"", ciphertext)
        except RemoteProtocolError:
            raise self._fail(f"frame {part} failed authentication") from None

    def _fail(self, message: str) -> RemoteProtocolError:
        self._error = RemoteProtocolError(message)
        self._state = StreamState.ERROR
        self._buffer.clear()
        self._parts.clear()
        return self._error
