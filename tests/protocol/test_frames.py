"""Encrypted framing (SPEC.md §12.2): layout, padding, rekey, END, limits, fuzzing.

Senders and receivers here share a CipherState key directly; ``test_handshake.py`` runs the
same framing over the keys of a real handshake.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.frames import (
    END_SIZE,
    HEADER_SIZE,
    MAX_BODY,
    MAX_FRAME,
    MAX_MESSAGE,
    MAX_PAYLOAD,
    PAD_QUANTUM,
    Data,
    End,
    Event,
    FrameReceiver,
    FrameSender,
    FrameType,
    StreamState,
    fragments,
    padded_size,
    wire_size,
)
from fieldsync_protocol.handshake import MSG1_SIZE, PeerHandshake
from fieldsync_protocol.noise import TAG_LEN, CipherState
from tests.protocol.protocol_support import make_net, seed


def key(label: str) -> bytes:
    return hashlib.blake2b(label.encode(), digest_size=32).digest()


KEY = key("frame key")


def pair(k: bytes = KEY) -> tuple[FrameSender, FrameReceiver]:
    return FrameSender(CipherState(k)), FrameReceiver(CipherState(k))


def drain(receiver: FrameReceiver) -> list[Event]:
    events: list[Event] = []
    while (event := receiver.next_event()) is not None:
        events.append(event)
    return events


def feed(receiver: FrameReceiver, data: bytes, chunks: Iterable[int] = ()) -> list[Event]:
    """Feed ``data`` cut at the given chunk sizes (the rest in one piece), draining as we go."""
    events: list[Event] = []
    position = 0
    for size in chunks:
        receiver.receive_data(data[position : position + size])
        position += size
        events += drain(receiver)
    receiver.receive_data(data[position:])
    return events + drain(receiver)


def assert_dead(receiver: FrameReceiver) -> None:
    assert receiver.state is StreamState.ERROR
    for call in (
        lambda: receiver.receive_data(b""),
        receiver.next_event,
        receiver.eof_received,
    ):
        with pytest.raises(RemoteProtocolError, match="failed earlier"):
            call()


class Crafter:
    """A sender that can write anything under the key: what a malicious member could send."""

    def __init__(self, k: bytes = KEY) -> None:
        self.cipher = CipherState(k)

    def frame(self, declared: int, body: bytes) -> bytes:
        out = self.cipher.encrypt_with_ad(b"", declared.to_bytes(2, "big"))
        out += self.cipher.encrypt_with_ad(b"", body)
        self.cipher.rekey()
        return out

    def raw_header(self, declared: int) -> bytes:
        return self.cipher.encrypt_with_ad(b"", declared.to_bytes(2, "big"))

    def end(self) -> bytes:
        """An END: the header with L = 0 alone (SPEC.md §12.2.1), then REKEY."""
        out = self.raw_header(0)
        self.cipher.rekey()
        return out


# --- layout, padding and sizes ---------------------------------------------------------------


PAYLOADS = [b"", b"x", bytes(62), bytes(63), bytes(range(256)) * 4, b"y" * 20_000]


def test_round_trip_of_every_payload_size_class_boundary() -> None:
    sender, receiver = pair()
    payloads = [*PAYLOADS, b"z" * MAX_PAYLOAD, b"m" * (MAX_PAYLOAD + 1), bytes(MAX_MESSAGE)]
    stream = b"".join(sender.send(p) for p in payloads) + sender.end()
    assert feed(receiver, stream) == [*(Data(p) for p in payloads), End()]
    assert receiver.state is StreamState.ENDED and sender.state is StreamState.ENDED
    assert receiver.eof_received() is True
    frames = sum(len(fragments(p)) for p in payloads) + 1
    assert sender.frames_sent == receiver.frames_received == frames == 27


@pytest.mark.parametrize("chunk", [1, 7, HEADER_SIZE, HEADER_SIZE + 1, 100, 4096])
def test_any_chunking_gives_the_same_events(chunk: int) -> None:
    sender, receiver = pair()
    stream = b"".join(sender.send(p) for p in PAYLOADS) + sender.end()
    chunks = [chunk] * (len(stream) // chunk)
    assert feed(receiver, stream, chunks) == [*(Data(p) for p in PAYLOADS), End()]


def test_byte_by_byte_yields_nothing_until_a_frame_is_whole() -> None:
    sender, receiver = pair()
    frame = sender.send(b"hello")
    for byte in frame[:-1]:
        receiver.receive_data(bytes([byte]))
        assert receiver.next_event() is None
    receiver.receive_data(frame[-1:])
    assert receiver.next_event() == Data(b"hello")
    assert receiver.next_event() is None


def test_wire_size_and_the_small_set_of_ciphertext_sizes() -> None:
    sender = FrameSender(CipherState(KEY))
    for length in [0, 1, 62, 63, 64, 1000, 1023, 1024, 5000, MAX_PAYLOAD, MAX_PAYLOAD + 1]:
        assert len(sender.send(bytes(length))) == wire_size(length)
    assert wire_size(0) == 98 and wire_size(63) == 98 and wire_size(64) == 162
    assert wire_size(MAX_PAYLOAD) == MAX_FRAME == 63_522
    assert wire_size(MAX_PAYLOAD + 1) == MAX_FRAME + 98
    assert wire_size(2 * MAX_PAYLOAD) == 2 * MAX_FRAME
    assert len(sender.send(bytes(MAX_MESSAGE))) == wire_size(MAX_MESSAGE)
    assert len(sender.end()) == END_SIZE == HEADER_SIZE == 18  # END is a header alone
    classes = sorted({padded_size(n) for n in range(1, MAX_BODY + 1)})
    assert len(classes) == 111
    assert classes[:3] == [64, 128, 192] and classes[-1] == MAX_BODY


def test_padding_rule() -> None:
    previous = 0
    for length in range(1, MAX_BODY + 1):
        padded = padded_size(length)
        assert length <= padded <= MAX_BODY and padded % PAD_QUANTUM == 0
        assert padded >= previous  # monotone: a longer body never gets a smaller class
        previous = padded
        if length >= 1024:
            assert padded - length < length / 16  # Padmé: < 6.25 % beyond 1 KiB
    assert padded_size(MAX_BODY) == MAX_BODY
    assert MAX_BODY + TAG_LEN <= 65_535  # one Noise message
    for bad in (0, MAX_BODY + 1):
        with pytest.raises(ValueError, match="not in"):
            padded_size(bad)


def test_nothing_in_clear_and_identical_payloads_look_different() -> None:
    sender = FrameSender(CipherState(KEY))
    first, second = sender.send(b"same message"), sender.send(b"same message")
    assert len(first) == len(second) and first != second
    assert b"same message" not in first + second
    assert first[:HEADER_SIZE] != second[:HEADER_SIZE]


def test_payload_too_large_and_sending_after_end_are_local_errors() -> None:
    sender = FrameSender(CipherState(KEY))
    with pytest.raises(ValueError, match="exceeds"):
        sender.send(bytes(MAX_MESSAGE + 1))
    sender.end()
    with pytest.raises(LocalProtocolError, match="cannot send DATA"):
        sender.send(b"late")
    with pytest.raises(LocalProtocolError, match="cannot send END"):
        sender.end()


# --- rekey ---------------------------------------------------------------------------------


def test_every_frame_is_under_a_fresh_key_and_both_sides_stay_in_step() -> None:
    sender, receiver = pair()
    frames = [sender.send(f"message {i}".encode()) for i in range(3)]
    # A receiver that never rekeys opens the first frame only.
    stale = CipherState(KEY)
    header = stale.decrypt_with_ad(b"", frames[0][:HEADER_SIZE])
    body = stale.decrypt_with_ad(b"", frames[0][HEADER_SIZE:])
    assert header == (1 + len(b"message 0")).to_bytes(2, "big")
    assert body.startswith(b"\x01message 0")
    with pytest.raises(RemoteProtocolError, match="authentication"):
        stale.decrypt_with_ad(b"", frames[1][:HEADER_SIZE])
    # REKEY() after each frame, nonces kept (Noise §11.3), opens the next one.
    stale.rekey()
    assert stale.nonce == 2
    assert stale.decrypt_with_ad(b"", frames[1][:HEADER_SIZE]) == header
    # The real receiver follows for a long run.
    many = [sender.send(i.to_bytes(4, "big")) for i in range(2000)]
    events = feed(receiver, b"".join(frames + many))
    assert events[3:] == [Data(i.to_bytes(4, "big")) for i in range(2000)]
    assert sender.frames_sent == receiver.frames_received == 2003


def test_the_two_directions_are_independent() -> None:
    a_to_b, b_from_a = pair(key("a to b"))
    b_to_a, a_from_b = pair(key("b to a"))
    for i in range(50):
        assert feed(b_from_a, a_to_b.send(b"ping %d" % i)) == [Data(b"ping %d" % i)]
        if i % 3 == 0:
            assert feed(a_from_b, b_to_a.send(b"pong %d" % i)) == [Data(b"pong %d" % i)]
    assert feed(b_from_a, a_to_b.end()) == [End()]
    assert feed(a_from_b, b_to_a.send(b"after their end")) == [Data(b"after their end")]


# --- END and EOF -------------------------------------------------------------------------


def test_a_stream_without_end_is_interrupted_not_complete() -> None:
    sender, receiver = pair()
    assert feed(receiver, sender.send(b"one") + sender.send(b"two")) == [Data(b"one"), Data(b"two")]
    assert receiver.state is StreamState.OPEN
    assert receiver.eof_received() is False


def test_an_empty_stream_is_interrupted() -> None:
    assert FrameReceiver(CipherState(KEY)).eof_received() is False


@pytest.mark.parametrize("cut", [1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 1, 97])
def test_eof_in_the_middle_of_a_frame_is_a_remote_error(cut: int) -> None:
    sender, receiver = pair()
    frame = sender.send(b"complete") + sender.send(b"cut")
    assert feed(receiver, frame[: len(frame) // 2 + cut]) == [Data(b"complete")]
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        receiver.eof_received()
    assert_dead(receiver)


def test_after_end_nothing_more_is_accepted() -> None:
    sender, receiver = pair()
    assert feed(receiver, sender.end()) == [End()]
    receiver.receive_data(b"")  # an empty read is not data
    assert receiver.next_event() is None
    with pytest.raises(RemoteProtocolError, match="after END"):
        receiver.receive_data(b"\x00")
    assert_dead(receiver)


def test_bytes_behind_end_in_the_same_delivery_are_refused() -> None:
    sender, receiver = pair()
    stream = sender.send(b"data") + sender.end() + b"\x00"
    receiver.receive_data(stream)
    assert receiver.next_event() == Data(b"data")
    with pytest.raises(RemoteProtocolError, match="after END"):
        receiver.next_event()
    assert_dead(receiver)


def test_a_valid_frame_after_end_is_refused_too() -> None:
    crafter, receiver = Crafter(), FrameReceiver(CipherState(KEY))
    stream = crafter.end() + crafter.frame(2, b"\x01x" + bytes(62))
    receiver.receive_data(stream)
    with pytest.raises(RemoteProtocolError, match="after END"):
        receiver.next_event()


# --- what a malicious member can send -------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "body", "reason"),
    [
        (MAX_BODY + 1, None, f"impossible length {MAX_BODY + 1}"),
        (0xFFFF, None, "impossible length 65535"),
        (1, b"\x00" + bytes(63), "unknown frame type 0"),
        (1, b"\x04" + bytes(63), "unknown frame type 4"),
        (1, b"\x03" + bytes(63), "MORE fragment is not full size"),
        (MAX_BODY - 1, b"\x03" + bytes(MAX_BODY - 1), "MORE fragment is not full size"),
        (1, b"\xff" + bytes(63), "unknown frame type 255"),
        (2, b"\x01x" + bytes(61) + b"\x01", "padding is not all zeros"),
        (1, b"\x01" + b"\x80" + bytes(62), "padding is not all zeros"),
        # END is a header alone: a body of type END (the former form) is refused.
        (1, b"\x02" + bytes(63), "unknown frame type 2"),
        (2, b"\x02x" + bytes(62), "unknown frame type 2"),
        (1, b"\x01" + bytes(127), "body failed authentication"),  # body of the wrong class
    ],
)
def test_crafted_frames_are_refused(declared: int, body: bytes | None, reason: str) -> None:
    crafter, receiver = Crafter(), FrameReceiver(CipherState(KEY))
    stream = crafter.raw_header(declared) if body is None else crafter.frame(declared, body)
    with pytest.raises(RemoteProtocolError, match=reason):
        feed(receiver, stream)
    assert_dead(receiver)


def test_a_huge_declared_length_is_refused_before_any_body_is_buffered() -> None:
    crafter, receiver = Crafter(), FrameReceiver(CipherState(KEY))
    receiver.receive_data(crafter.raw_header(0xFFFF))
    with pytest.raises(RemoteProtocolError, match="impossible length"):
        receiver.next_event()


def test_crafter_matches_the_real_sender() -> None:
    # Positive control for the crafted frames above.
    assert Crafter().frame(2, b"\x01x" + bytes(62)) == FrameSender(CipherState(KEY)).send(b"x")


def test_every_bit_flip_of_a_frame_is_refused() -> None:
    frame = FrameSender(CipherState(KEY)).send(b"flip me")
    for bit in range(len(frame) * 8):
        damaged = bytearray(frame)
        damaged[bit // 8] ^= 1 << (bit % 8)
        receiver = FrameReceiver(CipherState(KEY))
        with pytest.raises(RemoteProtocolError, match="failed authentication"):
            feed(receiver, bytes(damaged))
        assert_dead(receiver)


def test_replayed_reordered_dropped_and_foreign_frames_are_refused() -> None:
    sender = FrameSender(CipherState(KEY))
    first, second, third = (sender.send(b"%d" % i) for i in range(3))
    foreign = FrameSender(CipherState(key("another session"))).send(b"0")
    for stream in (first + first, second + first, first + third, foreign):
        receiver = FrameReceiver(CipherState(KEY))
        with pytest.raises(RemoteProtocolError, match="header failed authentication"):
            feed(receiver, stream)


# --- messages larger than a frame ---------------------------------------------------------


def more(payload: bytes = bytes(MAX_PAYLOAD)) -> tuple[int, bytes]:
    return 1 + len(payload), bytes([FrameType.MORE.value]) + payload


def test_fragments_are_cut_one_way() -> None:
    assert fragments(b"") == [b""]
    assert fragments(b"x") == [b"x"]
    assert fragments(bytes(MAX_PAYLOAD)) == [bytes(MAX_PAYLOAD)]
    assert [len(f) for f in fragments(bytes(2 * MAX_PAYLOAD))] == [MAX_PAYLOAD] * 2
    assert [len(f) for f in fragments(bytes(MAX_MESSAGE))] == [MAX_PAYLOAD] * 16 + [32_784]


def test_a_large_message_is_handed_over_whole_and_only_when_complete() -> None:
    sender, receiver = pair()
    message = bytes(range(256)) * 1000  # 256,000 bytes: 5 frames
    stream = sender.send(message)
    assert sender.frames_sent == 5 and len(stream) == wire_size(len(message))
    assert feed(receiver, stream[:-1]) == []
    assert feed(receiver, stream[-1:]) == [Data(message)]
    assert receiver.frames_received == 5


def test_a_stream_cut_between_fragments_is_interrupted() -> None:
    sender, receiver = pair()
    stream = sender.send(bytes(MAX_PAYLOAD + 10))
    assert feed(receiver, stream[:MAX_FRAME]) == []
    assert receiver.eof_received() is False


@pytest.mark.parametrize(
    ("max_message", "frames", "reason"),
    [
        (MAX_PAYLOAD, [more()], "message exceeds"),
        (MAX_PAYLOAD + 10, [more(), (12, b"\x01" + bytes(11) + bytes(52))], "message exceeds"),
        (100, [(102, b"\x01" + bytes(101) + bytes(26))], "message exceeds"),
        (MAX_MESSAGE, [more(), (1, b"\x01" + bytes(63))], "empty last fragment"),
        (MAX_MESSAGE, [more(), (0, b"")], "END in the middle of a message"),
    ],
)
def test_reassembly_limits_and_canonical_cuts(
    max_message: int, frames: list[tuple[int, bytes]], reason: str
) -> None:
    crafter = Crafter()
    receiver = FrameReceiver(CipherState(KEY), max_message=max_message)
    with pytest.raises(RemoteProtocolError, match=reason):
        stream = b"".join(
            crafter.frame(length, body) if length else crafter.end() for length, body in frames
        )
        feed(receiver, stream)
    assert_dead(receiver)


def test_a_message_at_the_receiver_limit_is_accepted() -> None:
    sender = FrameSender(CipherState(KEY))
    receiver = FrameReceiver(CipherState(KEY), max_message=MAX_PAYLOAD + 10)
    assert feed(receiver, sender.send(bytes(MAX_PAYLOAD + 10))) == [Data(bytes(MAX_PAYLOAD + 10))]
    receiver = FrameReceiver(CipherState(KEY), max_message=2 * MAX_PAYLOAD)
    assert feed(receiver, FrameSender(CipherState(KEY)).send(bytes(2 * MAX_PAYLOAD))) == [
        Data(bytes(2 * MAX_PAYLOAD))
    ]


# --- fuzzing -------------------------------------------------------------------------------


def _stream(seed: int) -> bytes:
    rng = random.Random(seed)
    sender = FrameSender(CipherState(KEY))
    frames = [sender.send(rng.randbytes(rng.choice([0, 5, 70, 300, 2000]))) for _ in range(3)]
    return b"".join(frames) + (sender.end() if seed % 2 else b"")


STREAMS = [_stream(seed) for seed in range(6)]
# One message in two fragments (MORE, DATA), then END.
_TWO_FRAGMENTS = FrameSender(CipherState(KEY))
STREAMS.append(_TWO_FRAGMENTS.send(bytes(range(256)) * 260) + _TWO_FRAGMENTS.end())


def run_receiver(data: bytes, chunks: list[int]) -> tuple[list[Event], bool]:
    """Feed, drain, then EOF. Only RemoteProtocolError may escape."""
    receiver = FrameReceiver(CipherState(KEY))
    events = feed(receiver, data, chunks)
    return events, receiver.eof_received()


@settings(max_examples=1000, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.sampled_from(STREAMS).flatmap(
            lambda s: st.tuples(st.integers(0, len(s)), st.binary(max_size=40)).map(
                lambda cut: s[: cut[0]] + cut[1]
            )
        ),
    ),
    chunks=st.lists(st.integers(0, 200), max_size=8),
)
def test_arbitrary_bytes_in_arbitrary_chunks_raise_only_remote_protocol_error(
    data: bytes, chunks: list[int]
) -> None:
    with contextlib.suppress(RemoteProtocolError):
        run_receiver(data, chunks)


@settings(max_examples=200, deadline=None)
@given(stream=st.sampled_from(STREAMS), chunks=st.lists(st.integers(1, 500), max_size=30))
def test_valid_streams_in_any_chunking_decode_the_same(stream: bytes, chunks: list[int]) -> None:
    assert run_receiver(stream, chunks) == run_receiver(stream, [])


def _mutators(rng: random.Random) -> list[Callable[[bytes], bytes]]:
    def flip(data: bytes) -> bytes:
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            if damaged:
                damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        return bytes(damaged)

    def truncate(data: bytes) -> bytes:
        return data[: rng.randrange(len(data) + 1)]

    def extend(data: bytes) -> bytes:
        return data + rng.randbytes(rng.randint(1, 100))

    def splice(data: bytes) -> bytes:
        other = rng.choice(STREAMS)
        return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]

    def random_bytes(data: bytes) -> bytes:
        return rng.randbytes(rng.randint(0, 300))

    def random_length(data: bytes) -> bytes:
        # A member crafting a frame: random declared length, type and padding under the key.
        crafter = Crafter()
        out = crafter.frame(2, b"\x01x" + bytes(62)) if rng.random() < 0.3 else b""
        declared = rng.choice([0, 1, 2, 64, 65, MAX_BODY, MAX_BODY + 1, rng.randrange(65536)])
        body_size = padded_size(declared) if 1 <= declared <= MAX_BODY else 64
        body_size = rng.choice([body_size, body_size, max(0, body_size - 1), body_size + 64])
        body = bytes([rng.choice([0, 1, 1, 2, 2, 3, 3, 4])]) + bytes(max(0, body_size - 1))
        if rng.random() < 0.3 and len(body) > 2:
            body = body[:-1] + b"\x01"
        return out + crafter.frame(declared, body[: min(len(body), 2000)])

    def identity(data: bytes) -> bytes:
        return data

    return [flip, truncate, extend, splice, random_bytes, random_length, identity]


_DIGITS = re.compile(r"\d+")
_NET = make_net("frames fuzz")


_NODE = seed("frames fuzz/responder")
_CERT = _NET.certificate(_NODE)


def responder() -> PeerHandshake:
    return PeerHandshake(
        initiator=False,
        network_key=_NET.network_key,
        static_secret=_NODE,
        certificate=_CERT,
        manifest=_NET.manifest,
        ephemeral_secret=seed("frames fuzz/responder ephemeral"),
    )


def first_message() -> bytes:
    node = seed("frames fuzz/initiator")
    return PeerHandshake(
        initiator=True,
        network_key=_NET.network_key,
        static_secret=node,
        certificate=_NET.certificate(node),
        manifest=_NET.manifest,
        ephemeral_secret=seed("frames fuzz/initiator ephemeral"),
    ).data_to_send()


def fuzz(iterations: int, seed: int) -> tuple[Counter[str], int]:
    """Mutated inputs through FrameReceiver (9 in 10) and the handshake responder (1 in 10).

    Returns the distinct error messages (digits blanked) with their counts, and how many
    inputs were accepted without error.
    """
    rng = random.Random(seed)
    mutators = _mutators(rng)
    valid_first = first_message()
    gatekeeper_snapshot = responder()
    errors: Counter[str] = Counter()
    accepted = 0
    for index in range(iterations):
        try:
            if index % 10:
                data = rng.choice(mutators)(rng.choice(STREAMS))
                chunks = [rng.randint(0, 150) for _ in range(rng.randint(0, 4))]
                run_receiver(data, chunks)
            else:
                data = rng.choice(mutators[:5])(valid_first) if rng.random() < 0.9 else valid_first
                gatekeeper = copy.deepcopy(gatekeeper_snapshot)
                gatekeeper.receive_data(data)
                if len(data) < MSG1_SIZE:
                    gatekeeper.eof_received()
                assert gatekeeper.data_to_send()  # accepted: message 2 is on its way
        except RemoteProtocolError as exc:
            errors[_DIGITS.sub("N", str(exc))] += 1
        else:
            accepted += 1
    return errors, accepted


def test_fuzz_frames_100k() -> None:
    errors, accepted = fuzz(100_000, seed=20250301)
    # Sanity gates: valid inputs pass, and inputs are refused at several different stages.
    assert accepted >= 5_000, (accepted, errors)
    assert len(errors) >= 3, errors
    for stage in (
        "frame header failed authentication",
        "frame body failed authentication",
        "connection closed in the middle of a frame",
        "frame declares an impossible length N",
        "unknown frame type N",
        "frame padding is not all zeros",
        "handshake message N: message failed authentication",
    ):
        assert any(stage in message for message in errors), (stage, errors)


def test_events_are_plain_values() -> None:
    # Frozen dataclasses, comparable and hashable (h11 style).
    assert Data(b"x") == Data(b"x") and End() == End()
    assert len({Data(b"x"), Data(b"x"), End()}) == 2
