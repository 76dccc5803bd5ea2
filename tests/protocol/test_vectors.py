"""The golden vectors in protocol/vectors/ (SPEC.md §1.3), checked without the generator.

Each vector is rebuilt byte for byte from its stated inputs by calling the protocol
functions, opened and verified back to its stated values, and every sealed box is opened
with libsodium's own ``SealedBox`` (proof that ``crypto.seal`` is ``crypto_box_seal``). The
handshake and frame vectors are also reproduced with an independent Noise implementation
(``noiseprotocol``), and the reconciliation fingerprints with plain ``hashlib``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.util
import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import nacl.bindings as sodium
import nacl.public
import pytest
from noise.connection import Keypair, NoiseConnection

from fieldsync_protocol import (
    attachment,
    codec,
    crypto,
    envelope,
    form,
    frames,
    keydelivery,
    keytext,
    membership,
    receipt,
    revocation,
)
from fieldsync_protocol.bundle import BundleReader, BundleWriter
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.handshake import PeerHandshake
from fieldsync_protocol.items import ItemKind, check_item, parse_item
from fieldsync_protocol.keytext import KeyKind
from fieldsync_protocol.reconcile import ReconcileParams, Reconciler
from fieldsync_protocol.reconcile_index import EMPTY_FINGERPRINT, INFINITY, SortedListIndex
from fieldsync_protocol.reconcile_wire import RangeMode, parse_message
from fieldsync_protocol.report import report_id
from fieldsync_protocol.riblt import CodedSymbols
from fieldsync_protocol.session import (
    Completed,
    CursorAdvanced,
    ItemsReceived,
    Started,
    SyncSession,
)
from fieldsync_protocol.session_messages import Cursor

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def b(text: str) -> bytes:
    return bytes.fromhex(text)


def untyped(node: list[Any]) -> Any:
    kind = node[0]
    if kind == "nil":
        return None
    if kind in ("bool", "int", "str"):
        return node[1]
    if kind == "float":
        return float(node[1])
    if kind == "bin":
        return bytes.fromhex(node[1])
    if kind == "array":
        return [untyped(v) for v in node[1]]
    assert kind == "map"
    return {k: untyped(v) for k, v in node[1]}


def same_types(a: Any, b_: Any) -> bool:
    if type(a) is not type(b_):
        return False
    if isinstance(a, list):
        return len(a) == len(b_) and all(same_types(x, y) for x, y in zip(a, b_, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b_) and all(same_types(a[k], b_[k]) for k in a)
    return bool(a == b_ or (isinstance(a, float) and str(a) == str(b_)))


def manifest_from(fields: dict[str, Any]) -> membership.Manifest:
    return membership.Manifest(
        network_id=b(fields["network_id"]),
        name=fields["name"],
        epoch=fields["epoch"],
        root_key=b(fields["root_key"]),
        hq_keys={int(i): b(k) for i, k in fields["hq_keys"].items()},
        receipt_key=b(fields["receipt_key"]),
        certificate_key=b(fields["certificate_key"]),
    )


MEMBERSHIP = load("membership.json")
MANIFEST = manifest_from(MEMBERSHIP["manifest"]["fields"])


# --- codec -----------------------------------------------------------------------------------

CODEC = load("codec.json")


@pytest.mark.parametrize("case", CODEC["valid"], ids=[c["name"] for c in CODEC["valid"]])
def test_codec_valid(case: dict[str, Any]) -> None:
    value = untyped(case["value"])
    assert codec.encode(value).hex() == case["hex"]
    decoded = codec.decode(b(case["hex"]))
    assert same_types(decoded, value)


@pytest.mark.parametrize("case", CODEC["invalid"], ids=[c["name"] for c in CODEC["invalid"]])
def test_codec_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError, match=case["error"]):
        codec.decode(b(case["hex"]))


def test_codec_vectors_cover_every_first_byte_family() -> None:
    first = {c["hex"][:2] for c in CODEC["valid"]}
    assert {"c0", "c2", "c3", "cc", "cd", "ce", "cf", "d0", "d1", "d2", "d3", "cb"} <= first
    assert {"d9", "da", "c4", "c5", "dc", "de"} <= first


# --- keys ------------------------------------------------------------------------------------

KEYS = load("keys.json")


@pytest.mark.parametrize("entry", KEYS["keys"], ids=[k["name"] for k in KEYS["keys"]])
def test_key_text_forms(entry: dict[str, Any]) -> None:
    kind = KeyKind(entry["kind"])
    public = b(entry["public"])
    if "private" in entry:
        derive = (
            crypto.box_public_key
            if kind in (KeyKind.HQ_ENCRYPTION, KeyKind.NODE)
            else crypto.signing_public_key
        )
        assert derive(b(entry["private"])) == public
    assert keytext.key_to_text(kind, public) == entry["text"]
    assert keytext.key_from_text(kind, entry["text"]) == public
    assert keytext.fingerprint(kind, public) == entry["fingerprint"]


# --- manifest and certificate ----------------------------------------------------------------


def check_signed_document(
    data: bytes, vector: dict[str, Any], domain: crypto.Domain, key: bytes
) -> None:
    fields = codec.decode(data)
    assert fields["b"].hex() == vector["body_hex"]
    assert fields["s"].hex() == vector["signature_hex"]
    message = b(vector["signed_message_hex"])
    assert message == b"fieldsync/1/" + domain.value + b"\0" + fields["b"]
    # Plain ed25519 over the signed message, checked with libsodium directly.
    assert sodium.crypto_sign_open(fields["s"] + message, key) == message


def test_manifest_vector() -> None:
    vector = MEMBERSHIP["manifest"]
    item = membership.sign_manifest(MANIFEST, b(vector["root_seed"]))
    assert item.hex() == vector["item_hex"]
    assert crypto.content_id(item).hex() == vector["item_id"]
    assert membership.open_manifest(item) == MANIFEST
    assert membership.open_manifest(item, trusted_root=MANIFEST.root_key) == MANIFEST
    assert check_item(item, MANIFEST).manifest == MANIFEST
    check_signed_document(item, vector, crypto.Domain.MANIFEST, MANIFEST.root_key)


def test_certificate_vector() -> None:
    vector = MEMBERSHIP["certificate"]
    fields = vector["fields"]
    cert = membership.NodeCertificate(
        b(fields["network_id"]),
        b(fields["node_key"]),
        fields["expires"],
    )
    data = membership.sign_certificate(cert, b(vector["certificate_seed"]))
    assert data.hex() == vector["hex"]
    assert membership.open_certificate(data, MANIFEST) == cert
    check_signed_document(data, vector, crypto.Domain.CERTIFICATE, MANIFEST.certificate_key)


# --- enrolment -------------------------------------------------------------------------------

ENROLMENT = load("enrolment.json")


@pytest.mark.parametrize(
    "vector", ENROLMENT["requests"], ids=[r["name"] for r in ENROLMENT["requests"]]
)
def test_enrolment_request_vectors(vector: dict[str, Any]) -> None:
    fields = vector["fields"]
    request = membership.EnrolmentRequest(
        node_key=b(fields["node_key"]),
        author_key=None if fields["author_key"] is None else b(fields["author_key"]),
        author_name=fields["author_name"],
        created=fields["created"],
    )
    seed = None if vector["author_seed"] is None else b(vector["author_seed"])
    assert membership.encode_request(request, seed) == vector["text"]
    assert membership.decode_request(vector["text"]) == request


def test_enrolment_vector() -> None:
    vector = ENROLMENT["enrolment"]
    node_private = b(vector["node_private"])
    enrolment = membership.Enrolment(
        manifest_item=b(MEMBERSHIP["manifest"]["item_hex"]),
        network_key=b(vector["network_key"]),
        certificate=b(MEMBERSHIP["certificate"]["hex"]),
    )
    node_public = crypto.box_public_key(node_private)
    text = membership.encode_enrolment(enrolment, node_public, b(vector["ephemeral_private"]))
    assert text == vector["text"]
    opened, manifest, cert = membership.decode_enrolment(text, node_private)
    assert opened == enrolment
    assert manifest == MANIFEST
    assert cert.node_key == node_public
    assert keytext.fingerprint(KeyKind.ROOT, manifest.root_key) == vector["root_fingerprint"]
    # Interop: libsodium's SealedBox opens what crypto.seal made.
    sealed = b(vector["sealed_hex"])
    assert text == membership.ENROLMENT_PREFIX + _b64url(sealed)
    box = nacl.public.SealedBox(nacl.public.PrivateKey(node_private))
    assert box.decrypt(sealed).hex() == vector["inner_hex"]
    assert sealed[:32] == crypto.box_public_key(b(vector["ephemeral_private"]))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# --- envelope --------------------------------------------------------------------------------

ENVELOPE = load("envelope.json")


def envelope_input() -> envelope.SealInput:
    given = ENVELOPE["input"]
    return envelope.SealInput(
        network_id=b(given["network_id"]),
        hq_key_id=given["hq_key_id"],
        hq_public_key=crypto.box_public_key(b(given["hq_private"])),
        author_seed=b(given["author_seed"]),
        sequence=given["sequence"],
        previous=b(given["previous"]),
        claimed_time=given["claimed_time"],
        body=given["body"],
        ttl_class=given["ttl_class"],
    )


def test_envelope_vector_reproduces() -> None:
    sealed = envelope.seal_report(envelope_input(), b(ENVELOPE["input"]["ephemeral_private"]))
    assert sealed.item.hex() == ENVELOPE["item_hex"]
    assert sealed.header_hash.hex() == ENVELOPE["header_hash"]
    assert crypto.content_id(sealed.item).hex() == ENVELOPE["item_id"]
    assert crypto.delivery_tag(sealed.item).hex() == ENVELOPE["delivery_tag"]
    assert codec.encode(ENVELOPE["input"]["body"]).hex() == ENVELOPE["body_hex"]


def test_envelope_vector_report_id_comes_from_its_random_bytes() -> None:
    given = ENVELOPE["input"]
    assert report_id(b(given["report_id_random"])) == given["body"]["id"]


def test_envelope_vector_opens() -> None:
    given = ENVELOPE["input"]
    item = b(ENVELOPE["item_hex"])
    parsed = parse_item(item)
    assert parsed.kind is ItemKind.ENVELOPE
    assert parsed.id.hex() == ENVELOPE["item_id"]
    assert parsed.tag.hex() == ENVELOPE["delivery_tag"]
    outer = envelope.parse_outer(parsed.fields)
    assert (outer.hq_key_id, outer.ttl_class) == (given["hq_key_id"], given["ttl_class"])
    assert len(outer.ciphertext) == ENVELOPE["ciphertext_length"]
    author = crypto.signing_public_key(b(given["author_seed"]))
    opened = envelope.open_report(
        outer, b(given["network_id"]), {given["hq_key_id"]: b(given["hq_private"])}, {author}
    )
    assert opened.author_key == author
    assert opened.sequence == given["sequence"]
    assert opened.previous.hex() == given["previous"]
    assert opened.claimed_time == given["claimed_time"]
    assert opened.body == given["body"]
    assert opened.body_bytes.hex() == ENVELOPE["body_hex"]
    assert opened.header_hash.hex() == ENVELOPE["header_hash"]
    # Interop and layout: SealedBox opens it; the plaintext is signed || 0x80 || zeros.
    box = nacl.public.SealedBox(nacl.public.PrivateKey(b(given["hq_private"])))
    padded = box.decrypt(outer.ciphertext)
    signed = b(ENVELOPE["signed_hex"])
    assert len(padded) == ENVELOPE["padded_length"] == len(outer.ciphertext) - 48
    assert padded == signed + b"\x80" + bytes(len(padded) - len(signed) - 1)
    assert codec.decode(signed) == {
        "h": b(ENVELOPE["header_hex"]),
        "s": b(ENVELOPE["signature_hex"]),
    }
    header = codec.decode(b(ENVELOPE["header_hex"]))
    assert list(header) == ["a", "b", "hk", "l", "n", "p", "q", "t", "v"]
    assert header["b"].hex() == ENVELOPE["body_hex"]
    message = b"fieldsync/1/report\0" + b(ENVELOPE["header_hex"])
    assert sodium.crypto_sign_open(b(ENVELOPE["signature_hex"]) + message, author) == message
    assert (
        opened.header_hash
        == hashlib.blake2b(
            b(ENVELOPE["header_hex"]), digest_size=32, person=b"fs-report-chain"
        ).digest()
    )


# --- receipt ---------------------------------------------------------------------------------

RECEIPT = load("receipt.json")


def test_receipt_vector() -> None:
    fields = RECEIPT["fields"]
    value = receipt.Receipt(
        b(fields["network_id"]),
        fields["serial"],
        fields["time"],
        tuple(b(t) for t in fields["tags"]),
        receipt.ReceiptStatus(fields["status"]),
    )
    item = receipt.sign_receipt(value, b(RECEIPT["receipt_seed"]))
    assert item.hex() == RECEIPT["item_hex"]
    assert crypto.content_id(item).hex() == RECEIPT["item_id"]
    checked = check_item(item, MANIFEST)
    assert checked.receipt == value
    assert set(RECEIPT["other_statuses"]) == {"held", "dropped"}
    for status, item_hex in RECEIPT["other_statuses"].items():
        other = dataclasses.replace(value, status=receipt.ReceiptStatus(status))
        assert receipt.sign_receipt(other, b(RECEIPT["receipt_seed"])).hex() == item_hex
        assert check_item(bytes.fromhex(item_hex), MANIFEST).receipt == other
    assert ENVELOPE["delivery_tag"] in fields["tags"]
    check_signed_document(item, RECEIPT, crypto.Domain.RECEIPT, MANIFEST.receipt_key)


# --- revocation list -------------------------------------------------------------------------

REVOCATION = load("revocation.json")


def test_revocation_vector() -> None:
    fields = REVOCATION["fields"]
    value = revocation.RevocationList(
        b(fields["network_id"]),
        fields["serial"],
        fields["time"],
        tuple(b(k) for k in fields["nodes"]),
        tuple(revocation.RevokedAuthor(b(a["key"]), a["cutoff"]) for a in fields["authors"]),
    )
    item = revocation.sign_revocation(value, b(REVOCATION["root_seed"]))
    assert item.hex() == REVOCATION["item_hex"]
    assert crypto.content_id(item).hex() == REVOCATION["item_id"]
    assert check_item(item, MANIFEST).revocation == value
    check_signed_document(item, REVOCATION, crypto.Domain.REVOCATION, MANIFEST.root_key)


def test_key_delivery_vector() -> None:
    vector = REVOCATION["key_delivery"]
    fields = vector["fields"]
    secret = b(vector["node_private"])
    cert = certificate_from(fields["certificate_fields"])
    certificate = membership.sign_certificate(
        cert, b(MEMBERSHIP["certificate"]["certificate_seed"])
    )
    assert certificate.hex() == fields["certificate_hex"]
    value = keydelivery.KeyDelivery(
        MANIFEST.network_id,
        crypto.box_public_key(secret),
        fields["serial"],
        certificate,
        fields["network_key_id"],
        b(fields["network_key"]),
        fields["grace"],
    )
    item = keydelivery.seal_delivery(
        value, b(REVOCATION["root_seed"]), b(vector["ephemeral_private"])
    )
    assert item.hex() == vector["item_hex"]
    checked = check_item(item, MANIFEST)
    assert checked.item.kind is ItemKind.KEY_DELIVERY
    assert keydelivery.open_delivery(checked.item.fields, MANIFEST, secret) == value
    # libsodium's own sealed box opens it to the stated padded plaintext.
    inner = nacl.public.SealedBox(nacl.public.PrivateKey(secret)).decrypt(codec.decode(item)["c"])
    assert inner.hex() == vector["inner_hex"] and len(inner) == keydelivery.INNER_SIZE
    body, signature = b(vector["body_hex"]), b(vector["signature_hex"])
    assert inner.startswith(codec.encode({"b": body, "s": signature}) + b"\x80")
    assert b(vector["signed_message_hex"]) == b"fieldsync/1/key-delivery\0" + body
    crypto.verify(crypto.Domain.KEY_DELIVERY, MANIFEST.root_key, body, signature, "vector")


# --- bundle ----------------------------------------------------------------------------------

BUNDLE = load("bundle.json")


def test_bundle_vector() -> None:
    items = [b(i) for i in BUNDLE["items"]]
    assert items == [b(ENVELOPE["item_hex"]), b(RECEIPT["item_hex"])]
    writer = BundleWriter(
        b(BUNDLE["network_key"]), b(BUNDLE["network_id"]), b(BUNDLE["file_nonce"])
    )
    data = b"".join(writer.add(i) for i in items) + writer.finish()
    assert data.hex() == BUNDLE["file_hex"]
    assert len(data) == BUNDLE["file_length"]
    assert hashlib.sha256(data).hexdigest() == BUNDLE["file_sha256"]
    reader = BundleReader(b(BUNDLE["network_key"]), b(BUNDLE["network_id"]))
    reader.receive_data(data)
    reader.end_of_file()
    assert list(reader.items()) == items
    # The construction by hand: key, nonce and associated data exactly as SPEC.md §11 says.
    key = hashlib.blake2b(
        b"bundle-file", digest_size=32, key=b(BUNDLE["network_key"]), person=b"fs-subkey"
    ).digest()
    assert key.hex() == BUNDLE["bundle_key"]
    nonce = data[:16]
    chunk = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        data[16:], b"fieldsync/bundle/1/final", nonce + bytes(8), key
    )
    header = codec.encode({"n": b(BUNDLE["network_id"]), "v": 1})
    expected = b"".join(len(r).to_bytes(4, "big") + r for r in [header, *items]) + bytes(4)
    assert chunk == expected + bytes(len(chunk) - len(expected))


# --- crypto details the vectors rely on --------------------------------------------------------


def test_seal_is_crypto_box_seal_both_ways() -> None:
    hq0 = next(k for k in KEYS["keys"] if k["name"] == "hq encryption 0")
    recipient = nacl.public.PrivateKey(b(hq0["private"]))
    ours = crypto.seal(
        b"both ways", bytes(recipient.public_key), b(ENVELOPE["input"]["ephemeral_private"])
    )
    assert nacl.public.SealedBox(recipient).decrypt(ours) == b"both ways"
    theirs = nacl.public.SealedBox(recipient.public_key).encrypt(b"and back")
    assert crypto.unseal(theirs, bytes(recipient), "test") == b"and back"


def test_verify_refuses_wrong_lengths() -> None:
    key = MANIFEST.root_key
    body = b(MEMBERSHIP["manifest"]["body_hex"])
    signature = b(MEMBERSHIP["manifest"]["signature_hex"])
    crypto.verify(crypto.Domain.MANIFEST, key, body, signature, "manifest")
    for bad_key, bad_signature in (
        (key[:31], signature),
        (key, signature[:63]),
        (key, signature + b"\0"),
    ):
        with pytest.raises(RemoteProtocolError, match="wrong length"):
            crypto.verify(crypto.Domain.MANIFEST, bad_key, body, bad_signature, "manifest")


def test_domains_are_distinct_and_prefix_free() -> None:
    values = [d.value for d in crypto.Domain]
    assert len(set(values)) == len(values)
    assert all(b"\0" not in v for v in values)


# --- handshake (SPEC.md §12.1) ----------------------------------------------------------------

HANDSHAKE = load("handshake.json")
FRAMES = load("frames.json")


def certificate_from(fields: dict[str, Any]) -> membership.NodeCertificate:
    return membership.NodeCertificate(
        b(fields["network_id"]),
        b(fields["node_key"]),
        fields["expires"],
    )


def handshake_party(party: dict[str, Any]) -> bytes:
    """Check one side's stated keys and certificate; return the certificate bytes."""
    assert crypto.box_public_key(b(party["static_private"])).hex() == party["static_public"]
    assert crypto.box_public_key(b(party["ephemeral_private"])).hex() == party["ephemeral_public"]
    cert = certificate_from(party["certificate_fields"])
    assert cert.node_key.hex() == party["static_public"]
    data = membership.sign_certificate(cert, b(MEMBERSHIP["certificate"]["certificate_seed"]))
    assert data.hex() == party["certificate_hex"]
    assert membership.open_certificate(data, MANIFEST) == cert
    # SPEC.md §12.1.2: the slot is the expiry (u64 big-endian) and HQ's signature; the
    # certificate is rebuilt from it, the manifest's network id and the static key.
    slot = b(party["certificate_slot_hex"])
    signature = codec.get_bytes(codec.as_map(codec.decode(data), "cert", {"b", "s"}), "s", "cert")
    assert slot == cert.expires.to_bytes(8, "big") + signature
    body = codec.encode(
        {"exp": cert.expires, "net": MANIFEST.network_id, "node": cert.node_key, "v": 1}
    )
    assert codec.encode({"b": body, "s": slot[8:]}) == data
    return data


def run_handshake() -> tuple[PeerHandshake, PeerHandshake, list[bytes]]:
    """Both sides with the vector's keys, driven by the protocol module; the three messages."""
    sides = []
    for role in ("initiator", "responder"):
        party = HANDSHAKE[role]
        sides.append(
            PeerHandshake(
                initiator=role == "initiator",
                network_key=b(HANDSHAKE["psk"]),
                static_secret=b(party["static_private"]),
                certificate=b(party["certificate_hex"]),
                manifest=MANIFEST,
                ephemeral_secret=b(party["ephemeral_private"]),
            )
        )
    initiator, responder = sides
    messages = [initiator.data_to_send()]
    responder.receive_data(messages[0])
    messages.append(responder.data_to_send())
    initiator.receive_data(messages[1])
    messages.append(initiator.data_to_send())
    responder.receive_data(messages[2])
    return initiator, responder, messages


def test_handshake_vector() -> None:
    assert HANDSHAKE["prologue_hex"] == b"fieldsync/1".hex()
    assert HANDSHAKE["psk"] == KEYS["network_key"]
    author = handshake_party(HANDSHAKE["initiator"])
    relay = handshake_party(HANDSHAKE["responder"])
    assert author.hex() == MEMBERSHIP["certificate"]["hex"]
    keys = {k["name"]: k for k in KEYS["keys"]}
    assert HANDSHAKE["initiator"]["static_private"] == keys["node"]["private"]
    assert HANDSHAKE["responder"]["static_private"] == keys["relay node"]["private"]

    initiator, responder, messages = run_handshake()
    assert [m.hex() for m in messages] == [m["hex"] for m in HANDSHAKE["messages"]]
    sizes = [m["size"] for m in HANDSHAKE["messages"]]
    assert [len(m) for m in messages] == sizes == [48, 168, 136]
    # e in clear at the start of messages 1 and 2; nothing else readable.
    assert messages[0][:32].hex() == HANDSHAKE["initiator"]["ephemeral_public"]
    assert messages[1][:32].hex() == HANDSHAKE["responder"]["ephemeral_public"]
    assert author not in messages[2] and relay not in messages[1]
    assert initiator.is_complete and responder.is_complete
    assert initiator.handshake_hash.hex() == HANDSHAKE["handshake_hash"]
    assert responder.handshake_hash.hex() == HANDSHAKE["handshake_hash"]
    assert initiator.peer == certificate_from(HANDSHAKE["responder"]["certificate_fields"])
    assert responder.peer == certificate_from(HANDSHAKE["initiator"]["certificate_fields"])


def noise_connection(role: str) -> NoiseConnection:
    """An independent Noise implementation holding the vector's keys for ``role``."""
    party = HANDSHAKE[role]
    connection = NoiseConnection.from_name(HANDSHAKE["protocol_name"].encode())
    if role == "initiator":
        connection.set_as_initiator()
    else:
        connection.set_as_responder()
    connection.set_psks(psk=b(HANDSHAKE["psk"]))
    connection.set_prologue(b(HANDSHAKE["prologue_hex"]))
    connection.set_keypair_from_private_bytes(Keypair.STATIC, b(party["static_private"]))
    connection.set_keypair_from_private_bytes(Keypair.EPHEMERAL, b(party["ephemeral_private"]))
    with pytest.warns(UserWarning, match="ephemeral"):  # fixed ephemerals: vectors only
        connection.start_handshake()
    return connection


def noise_handshake() -> tuple[NoiseConnection, NoiseConnection]:
    """The vector's handshake run by ``noiseprotocol`` on both sides, checked message by message."""
    initiator, responder = noise_connection("initiator"), noise_connection("responder")
    slot_i = b(HANDSHAKE["initiator"]["certificate_slot_hex"])
    slot_r = b(HANDSHAKE["responder"]["certificate_slot_hex"])
    msg1, msg2, msg3 = (b(m["hex"]) for m in HANDSHAKE["messages"])
    assert bytes(initiator.write_message(b"")) == msg1
    assert responder.read_message(msg1) == b""
    assert bytes(responder.write_message(slot_r)) == msg2
    assert initiator.read_message(msg2) == slot_r
    assert bytes(initiator.write_message(slot_i)) == msg3
    assert responder.read_message(msg3) == slot_i
    assert initiator.handshake_finished and responder.handshake_finished
    assert initiator.get_handshake_hash().hex() == HANDSHAKE["handshake_hash"]
    return initiator, responder


def test_handshake_vector_with_an_independent_noise() -> None:
    noise_handshake()


# --- frames (SPEC.md §12.2) -------------------------------------------------------------------


def padme(length: int) -> int:
    """SPEC.md §12.2.3, written out again: Padmé with a 64-byte floor."""
    exponent = length.bit_length() - 1
    step = max(64, 1 << (exponent - exponent.bit_length()))
    return -(-length // step) * step


def test_frame_vectors() -> None:
    initiator, responder, _ = run_handshake()
    i_send, i_receive = initiator.transport()
    r_send, r_receive = responder.transport()
    for key, sender, receiver in (
        ("initiator_to_responder", i_send, r_receive),
        ("responder_to_initiator", r_send, i_receive),
    ):
        stream = FRAMES[key]
        assert [f["frame"] for f in stream] == list(range(len(stream)))
        assert [f["type"] for f in stream] == ["DATA"] * (len(stream) - 1) + ["END"]
        messages = [b(f["payload_hex"]) for f in stream[:-1]]
        wire = [sender.send(m) for m in messages] + [sender.end()]
        assert [w.hex() for w in wire] == [f["hex"] for f in stream]
        for frame, data in zip(stream[:-1], wire, strict=False):
            assert frame["length"] == 1 + len(b(frame["payload_hex"]))
            assert frame["padded_size"] == padme(frame["length"])
            assert frame["size"] == len(data) == 18 + frame["padded_size"] + 16
        assert stream[-1]["length"] == 0 and stream[-1]["size"] == len(wire[-1]) == 18
        assert sender.frames_sent == len(stream)
        receiver.receive_data(b"".join(wire))
        events = []
        while (event := receiver.next_event()) is not None:
            events.append(event)
        assert events == [*(frames.Data(m) for m in messages), frames.End()]
        assert receiver.eof_received()


def test_frame_vectors_with_an_independent_noise() -> None:
    """header = ENCRYPT(u16 L), body = ENCRYPT(type || payload || zeros), then REKEY."""
    initiator, responder = noise_handshake()
    for key, sender, receiver in (
        ("initiator_to_responder", initiator, responder),
        ("responder_to_initiator", responder, initiator),
    ):
        *data_frames, end = FRAMES[key]
        for frame in data_frames:
            payload = b(frame["payload_hex"])
            kind = {"DATA": 1}[frame["type"]]
            length = 1 + len(payload)
            body = bytes([kind]) + payload + bytes(padme(length) - length)
            wire = bytes(sender.encrypt(length.to_bytes(2, "big"))) + bytes(sender.encrypt(body))
            assert wire.hex() == frame["hex"]
            data = b(frame["hex"])
            assert receiver.decrypt(data[:18]) == length.to_bytes(2, "big")
            assert receiver.decrypt(data[18:]) == body
            sender.rekey_outbound_cipher()
            receiver.rekey_inbound_cipher()
        # END: a header alone, L = 0 (SPEC.md §12.2.1).
        assert bytes(sender.encrypt(bytes(2))).hex() == end["hex"]
        assert receiver.decrypt(b(end["hex"])) == bytes(2)


# --- sync sessions (SPEC.md §13) ----------------------------------------------------------------

SESSION = load("session.json")


class MemStore:
    """Items by arrival number, with the peer each came from and an id index."""

    def __init__(self, state: dict[str, Any], items: dict[str, bytes]) -> None:
        self.epoch = b(state["epoch"])
        self.high = state["high_water"]
        self.rows = [(r["seq"], items[r["item"]], r["from"]) for r in state["items"]]
        self.by_id = {crypto.content_id(data): data for _, data, _ in self.rows}
        self.index = SortedListIndex(self.by_id)
        cursor = state["cursor_on_peer"]
        self.cursor = None if cursor is None else Cursor(b(cursor["epoch"]), cursor["seq"])

    def state(self, names: dict[bytes, str]) -> dict[str, Any]:
        return {
            "epoch": self.epoch.hex(),
            "high_water": self.high,
            "items": [
                {"seq": seq, "item": names[crypto.content_id(data)], "from": origin}
                for seq, data, origin in self.rows
            ],
            "cursor_on_peer": None
            if self.cursor is None
            else {"epoch": self.cursor.epoch.hex(), "seq": self.cursor.seq},
        }


class MemSource:
    """The ``ItemSource`` a session with ``peer`` sees: deltas skip what ``peer`` gave us."""

    def __init__(self, store: MemStore, peer: str) -> None:
        self.store = store
        self.peer = peer

    @property
    def index(self) -> SortedListIndex:
        return self.store.index

    def items_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        rows = [(s, d) for s, d, origin in self.store.rows if s > seq and origin != self.peer]
        return rows[:limit]

    def get(self, ids: Sequence[bytes]) -> list[bytes]:
        return [self.store.by_id[i] for i in ids if i in self.store.by_id]

    def wants(self, ids: Sequence[bytes]) -> list[bytes]:
        return [i for i in ids if i not in self.store.by_id]

    def send_later(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        return []  # no media here: every item goes as found


def session_items() -> dict[str, bytes]:
    items = {name: b(data) for name, data in SESSION["items"].items()}
    assert items["manifest"].hex() == MEMBERSHIP["manifest"]["item_hex"]
    assert items["envelope"].hex() == ENVELOPE["item_hex"]
    for given in SESSION["receipts"]:
        value = receipt.Receipt(
            MANIFEST.network_id, given["serial"], given["time"], tuple(b(t) for t in given["tags"])
        )
        assert receipt.sign_receipt(value, b(RECEIPT["receipt_seed"])) == items[given["name"]]
    for name, data in items.items():
        check_item(data, MANIFEST)
        assert crypto.content_id(data).hex() == SESSION["item_ids"][name]
    return items


def drive(stores: dict[str, MemStore]) -> tuple[set[str], list[dict[str, Any]]]:
    """Flights in turn, the initiator's first; batches committed as their events come out."""
    peer = {"initiator": "responder", "responder": "initiator"}
    sessions = {
        name: SyncSession(
            MemSource(store, peer[name]),
            initiator=name == "initiator",
            local=Cursor(store.epoch, store.high),
            peer_cursor=store.cursor,
        )
        for name, store in stores.items()
    }
    modes: set[str] = set()
    completed: set[str] = set()

    def drain(name: str) -> None:
        store = stores[name]
        while (event := sessions[name].next_event()) is not None:
            if isinstance(event, ItemsReceived):
                for data in event.items:
                    if crypto.content_id(data) not in store.by_id:
                        store.high += 1
                        store.rows.append((store.high, data, peer[name]))
                        store.by_id[crypto.content_id(data)] = data
                        store.index.add(crypto.content_id(data))
                sessions[name].commit_done(event.batch_no)
            elif isinstance(event, CursorAdvanced):
                store.cursor = event.cursor
            elif isinstance(event, Started):
                modes.add(event.mode.value)
            elif isinstance(event, Completed):
                completed.add(name)

    transcript: list[dict[str, Any]] = []
    turn, flight = "initiator", 0
    while out := sessions[turn].messages_to_send():
        drain(turn)
        flight += 1
        for message in out:
            transcript.append({"flight": flight, "from": turn, "hex": message.hex()})
            sessions[peer[turn]].receive_message(message)
        drain(peer[turn])
        turn = peer[turn]
    drain(turn)
    assert completed == {"initiator", "responder"}
    assert all(s.complete for s in sessions.values())
    return modes, transcript


@pytest.mark.parametrize(
    "vector", SESSION["sessions"], ids=[s["mode"] for s in SESSION["sessions"]]
)
def test_session_vector(vector: dict[str, Any]) -> None:
    items = session_items()
    names = {crypto.content_id(data): name for name, data in items.items()}
    stores = {name: MemStore(vector["before"][name], items) for name in ("initiator", "responder")}
    modes, transcript = drive(stores)
    assert modes == {vector["mode"]}
    expected = vector["transcript"]
    assert transcript == [{k: m[k] for k in ("flight", "from", "hex")} for m in expected]
    for message in expected:
        value = codec.decode(b(message["hex"]), max_size=1024 * 1024)  # canonical, decodes
        assert value["t"] == message["type"]
        assert same_types(value, untyped(message["value"]))
    for name, store in stores.items():
        assert store.state(names) == vector["after"][name]


def test_session_vectors_cover_every_message_type() -> None:
    first, repeat = SESSION["sessions"]
    kinds = [m["type"] for m in first["transcript"]]
    assert kinds == [
        "hello",
        "rec",
        "hello",
        "rec",
        "data",
        "rec",
        "ack",
        "data",
        "end",
        "ack",
        "end",
    ]
    values = [untyped(m["value"]) for m in first["transcript"]]
    assert values[0]["r"] is True and "a" not in values[0]  # HELLO, reconcile mode
    assert values[2]["r"] is False and "a" not in values[2]
    # The initiator lists its two ids by window; the responder lacks the envelope's window.
    assert values[1]["r"][:2] == [None, RangeMode.PREFIXLIST]
    assert values[3]["r"][:2] == [None, RangeMode.PREFIXWANT]
    wanted = values[3]["r"][2][16:]
    assert wanted == b(SESSION["item_ids"]["envelope"])[: len(wanted)]
    assert values[5] == {"r": [], "t": "rec"}  # DONE
    assert values[4]["i"] == [b(SESSION["items"]["receipt 13"])]
    assert values[7]["i"] == [b(SESSION["items"]["envelope"])]
    assert values[8] == {"s": first["before"]["initiator"]["high_water"], "t": "end"}
    # The second session runs from the state the first left (plus one new item).
    assert repeat["before"]["initiator"] == first["after"]["initiator"]
    assert repeat["before"]["responder"]["items"][:-1] == first["after"]["responder"]["items"]
    delta = [untyped(m["value"]) for m in repeat["transcript"]]
    assert [m["t"] for m in delta] == ["hello", "hello", "data", "end", "ack", "end"]
    assert delta[0]["a"] == [
        b(first["after"]["initiator"]["cursor_on_peer"]["epoch"]),
        first["after"]["initiator"]["cursor_on_peer"]["seq"],
    ]
    assert delta[2]["s"] == 4  # DATA in delta mode carries the sender's seq
    assert delta[2]["i"] == [b(SESSION["items"]["receipt 14"])]  # the envelope is not echoed


# --- reconciliation (SPEC.md §13.3) -------------------------------------------------------------

RECONCILE = load("reconcile.json")


def pad(bound: str | None) -> bytes | None:
    return None if bound is None else b(bound).ljust(32, b"\0")


def within(ids: list[bytes], lower: str, upper: str | None) -> list[bytes]:
    low, high = pad(lower), pad(upper)
    assert low is not None
    return [i for i in ids if low <= i and (high is None or i < high)]


def fingerprint_by_hand(ids: list[bytes]) -> bytes:
    """SPEC.md §13.3.2 with hashlib only."""
    total = sum(int.from_bytes(i, "little") for i in ids) % 2**256
    data = total.to_bytes(32, "little") + len(ids).to_bytes(8, "little")
    return hashlib.blake2b(data, digest_size=16, person=b"fieldsync/fp/v1").digest()


def test_reconcile_fingerprint_vectors() -> None:
    ids = [b(i) for i in RECONCILE["ids"]]
    assert ids == sorted(set(ids)) and len(ids) == 40
    assert RECONCILE["person"] == "fieldsync/fp/v1"
    assert {case["held"] for case in RECONCILE["fingerprints"]} == {"none", "ids"}
    for case in RECONCILE["fingerprints"]:
        held = {"none": [], "ids": ids}[case["held"]]
        inside = within(held, case["lower"], case["upper"])
        assert len(inside) == case["count"]
        total = sum(int.from_bytes(i, "little") for i in inside) % 2**256
        assert total.to_bytes(32, "little").hex() == case["sum_le"]
        assert fingerprint_by_hand(inside).hex() == case["fingerprint"]
        upper = INFINITY if case["upper"] is None else b(case["upper"])
        index = SortedListIndex(held)
        assert index.fingerprint(b(case["lower"]), upper).hex() == case["fingerprint"]
    assert RECONCILE["fingerprints"][0]["fingerprint"] == EMPTY_FINGERPRINT.hex()


def test_reconcile_empty_store_first_message_vector() -> None:
    vector = RECONCILE["empty_store_first_message"]
    first = b(vector["hex"])
    assert first == bytes.fromhex("82a17293c002c400a174a3726563")  # as printed in SPEC §13.3.4
    assert codec.decode(first) == {"r": [None, 2, b""], "t": "rec"}
    assert vector["ranges"] == [{"upper": None, "mode": "IDLIST", "payload": ""}]
    assert Reconciler(SortedListIndex(), initiator=True).initial() == first
    ids = [b(i) for i in RECONCILE["ids"]]
    index = SortedListIndex(ids)
    step = Reconciler(index, initiator=False).receive(first)
    assert step.done and not step.have and step.reply is not None
    assert codec.decode(step.reply) == {"r": [], "t": "rec"}  # DONE
    pushes = [i for p in step.need for i in index.ids(p.lower, p.upper, len(ids))]
    assert pushes == ids


def test_reconcile_exchange_vector() -> None:
    ours = [b(i) for i in RECONCILE["ids"]]
    missing, extra = b(RECONCILE["missing"]), b(RECONCILE["extra"])
    theirs = sorted([*(i for i in ours if i != missing), extra])
    ours_index = SortedListIndex(ours)
    # The full-id exchange: the defaults before PREFIXLIST (SPEC.md §13.3.5) existed.
    params = ReconcileParams(
        initial_fanout=4, fanout=16, first_answer_fanout=64, idlist_threshold=32, prefix_bytes=0
    )
    initiator = Reconciler(ours_index, initiator=True, params=params)
    responder = Reconciler(SortedListIndex(theirs), initiator=False, params=params)
    first, answer, done = (b(m["hex"]) for m in RECONCILE["messages"])
    assert [m["from"] for m in RECONCILE["messages"]] == ["initiator", "responder", "initiator"]
    assert initiator.initial() == first
    step = responder.receive(first)
    assert step.reply == answer and not step.have and not step.need
    step = initiator.receive(answer)
    assert step.reply == done and step.done
    assert codec.decode(done) == {"r": [], "t": "rec"}  # DONE
    assert responder.receive(done).done
    assert [i.hex() for i in step.have] == RECONCILE["initiator_wants"] == [extra.hex()]
    pushes = [
        i for p in step.need for i in ours_index.ids(p.lower, p.upper, len(ours)) if p.keeps(i)
    ]
    assert [i.hex() for i in pushes] == RECONCILE["initiator_pushes"] == [missing.hex()]
    # The stated ranges are what the messages carry, and every payload is right.
    for message, held in zip(RECONCILE["messages"], (ours, theirs, ours), strict=True):
        ranges = parse_message(codec.decode(b(message["hex"])))
        lower = ""
        assert len(ranges) == len(message["ranges"])
        for got, stated in zip(ranges, message["ranges"], strict=True):
            assert got.upper == (INFINITY if stated["upper"] is None else b(stated["upper"]))
            assert got.mode is RangeMode[stated["mode"]]
            assert got.payload.hex() == stated["payload"]
            inside = within(held, lower, stated["upper"])
            if got.mode is RangeMode.FINGERPRINT:
                assert got.payload == fingerprint_by_hand(inside)
            elif got.mode is RangeMode.IDLIST:
                assert got.payload == b"".join(inside)
            else:
                assert got.payload == b""
            lower = stated["upper"] or ""
    # The first message splits 40 ids into 4 runs (the default initial_fanout) at
    # floor(k * 40 / 4), shortest bounds.
    bounds = [r["upper"] for r in RECONCILE["messages"][0]["ranges"]]
    assert len(bounds) == 4
    for k, bound in enumerate(bounds[:-1], start=1):
        at = k * len(ours) // 4
        below, above = ours[at - 1], ours[at]
        common = next(n for n in range(32) if below[n] != above[n])
        assert bound == above[: common + 1].hex()
    assert bounds[-1] is None


# --- the generator agrees with the stored files ----------------------------------------------


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fieldsync_vector_generator", VECTORS / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_check_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gen = generator()
    assert gen.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out
    # Against a directory with one stale and one missing file, --check fails and says which.
    monkeypatch.setattr(gen, "HERE", tmp_path)
    assert gen.main([]) == 0
    (tmp_path / "receipt.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "keys.json").unlink()
    assert gen.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "receipt.json" in err
    assert "keys.json" in err


ATTACHMENT = load("attachment.json")


def test_attachment_vector() -> None:
    vector = ATTACHMENT
    data = bytes(i * 7 % 251 for i in range(vector["file_length"]))
    assert hashlib.sha256(data).hexdigest() == vector["file_sha256"]
    key = attachment.AttachmentKey(b(vector["key"]), b(vector["attachment_id"]))
    writer = attachment.AttachmentWriter(key)
    items = writer.write(data)
    last, entry = writer.finish(vector["name"], vector["media_type"])
    items.append(last)
    assert [crypto.content_id(i).hex() for i in items] == vector["chunk_ids"]
    assert [crypto.delivery_tag(i).hex() for i in items] == vector["delivery_tags"]
    assert hashlib.sha256(items[0]).hexdigest() == vector["chunk_0"]["item_sha256"]
    assert len(items[0]) == vector["chunk_0"]["item_length"]
    assert items[1].hex() == vector["chunk_1_item_hex"]
    # The construction by hand: nonce, associated data and padding exactly as SPEC.md §16 says.
    aid = b(vector["attachment_id"])
    for index, item in enumerate(items):
        final = index == len(items) - 1
        fields = codec.decode(item)
        assert set(fields) == {"c", "t", "v"} and fields["t"] == "a" and fields["v"] == 1
        plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            fields["c"],
            b"fieldsync/attachment/1\0" + aid + index.to_bytes(8, "little") + bytes([final]),
            aid + index.to_bytes(8, "little"),
            b(vector["key"]),
        )
        piece = data[index * 262_080 : (index + 1) * 262_080]
        assert plain == piece + b"\x80" + bytes(len(plain) - len(piece) - 1)
    first = codec.decode(items[0])["c"]
    assert first[:32].hex() == vector["chunk_0"]["ciphertext_first_32"]
    assert first[-32:].hex() == vector["chunk_0"]["ciphertext_last_32"]
    # The report naming it opens at HQ, and its entry is exactly what the writer produced.
    report_item = b(vector["report_item_hex"])
    assert crypto.content_id(report_item).hex() == vector["report_item_id"]
    given = ENVELOPE["input"]
    outer = envelope.parse_outer(parse_item(report_item).fields)
    author = crypto.signing_public_key(b(given["author_seed"]))
    opened = envelope.open_report(
        outer, b(given["network_id"]), {given["hq_key_id"]: b(given["hq_private"])}, {author}
    )
    assert codec.encode(opened.body).hex() == vector["report_body_hex"]
    assert opened.body["attachments"] == [entry.as_body()]
    assert attachment.parse_attachments(opened.body["attachments"]) == (entry,)


# --- form (SPEC.md §17) ----------------------------------------------------------------------

FORM = load("form.json")


def test_form_vector() -> None:

    example = form.parse_form(FORM["example"])
    assert example.encode().hex() == FORM["example_hex"]
    assert form.default_form().to_map() == FORM["default"]
    assert form.default_form().encode().hex() == FORM["default_hex"]
    root_seed = b(MEMBERSHIP["manifest"]["root_seed"])
    item = form.sign_form(example, MANIFEST, root_seed)
    assert item.hex() == FORM["item_hex"]
    assert crypto.content_id(item).hex() == FORM["item_id"]
    assert check_item(item, MANIFEST).form == example
    check_signed_document(item, FORM, crypto.Domain.FORM, MANIFEST.root_key)
    for case in FORM["refused"]:
        with pytest.raises(RemoteProtocolError) as caught:
            form.open_form(b(case["item_hex"]), MANIFEST)
        assert str(caught.value) == case["error"]
    for case in FORM["answers"]:
        fields, problems = example.validate(case["answers"])
        assert problems == case["problems"]
        assert (None if problems else fields) == case["report"]


def test_reconcile_window_exchange_vector() -> None:
    ours = [b(i) for i in RECONCILE["ids"]]
    missing, extra = b(RECONCILE["missing"]), b(RECONCILE["extra"])
    theirs = sorted([*(i for i in ours if i != missing), extra])
    vector = RECONCILE["windows"]
    first, answer, done = (b(m["hex"]) for m in vector["messages"])
    # By hand (SPEC.md §13.3.5): one PREFIXLIST over the whole space, window offset 0.
    size = 3
    ranges = parse_message(codec.decode(first))
    assert [(r.upper, r.mode) for r in ranges] == [(INFINITY, RangeMode.PREFIXLIST)]
    payload = ranges[0].payload
    assert payload == bytes([size]) + fingerprint_by_hand(ours) + b"".join(i[:size] for i in ours)
    ranges = parse_message(codec.decode(answer))
    assert [(r.upper, r.mode) for r in ranges] == [(INFINITY, RangeMode.PREFIXWANT)]
    held = [i for i in theirs if i[:size] in {x[:size] for x in ours}]
    assert ranges[0].payload == fingerprint_by_hand(held) + missing[:size]
    assert codec.decode(done) == {"r": [], "t": "rec"}
    # The reference reconciler sends exactly these messages.
    ours_index, theirs_index = SortedListIndex(ours), SortedListIndex(theirs)
    initiator = Reconciler(ours_index, initiator=True)
    responder = Reconciler(theirs_index, initiator=False)
    assert initiator.initial() == first
    step = responder.receive(first)
    assert step.reply == answer and step.asked == 1
    assert [i for p in step.need for i in theirs_index.ids(p.lower, p.upper, 99) if p.keeps(i)] == [
        extra
    ]
    assert vector["responder_pushes"] == [extra.hex()]
    step = initiator.receive(answer)
    assert step.reply == done and step.done and step.push == [missing]
    assert vector["initiator_pushes"] == [missing.hex()]


def riblt_by_hand(item_id: bytes, limit: int) -> tuple[int, list[int]]:
    """SPEC.md §13.3.6 written out again: (checksum, coded-symbol indices below limit)."""
    digest = hashlib.blake2b(item_id, digest_size=16, person=b"fieldsync/riblt").digest()
    checksum = int.from_bytes(digest[:8], "little")
    state = int.from_bytes(digest[8:], "little") | 1
    index, out = 0, []
    while index < limit:
        out.append(index)
        state = state * 0xDA942042E4DD58B5 % 2**64
        s = math.isqrt(state) + 1
        index += max(1, -(-(2 * index + 3) * (2**32 - s) // (2 * s)))
    return checksum, out


def symbols_by_hand(ids: list[bytes], count: int) -> bytes:
    xors, sums, counts = [0] * count, [0] * count, [0] * count
    for item_id in ids:
        checksum, where = riblt_by_hand(item_id, count)
        for i in where:
            xors[i] ^= int.from_bytes(item_id, "big")
            sums[i] ^= checksum
            counts[i] += 1
    return b"".join(
        xors[i].to_bytes(32, "big")
        + sums[i].to_bytes(8, "little")
        + counts[i].to_bytes(2, "little")
        for i in range(count)
    )


def test_reconcile_coded_exchange_vector() -> None:
    ours = [b(i) for i in RECONCILE["ids"]]
    missing, extra = b(RECONCILE["missing"]), b(RECONCILE["extra"])
    theirs = sorted([*(i for i in ours if i != missing), extra])
    vector = RECONCILE["coded"]
    for entry in vector["mapping"]:
        checksum, where = riblt_by_hand(b(entry["id"]), 1024)
        assert (entry["checksum"], entry["indices_below_1024"]) == (checksum, where)
    assert b(vector["symbols_of_ids"]) == symbols_by_hand(ours, 8)
    first, answer, done = (b(m["hex"]) for m in vector["messages"])
    offer = codec.decode(first)
    assert offer["n"] == len(ours) == vector["messages"][0]["n"]
    assert [r.mode for r in parse_message(offer)] == [RangeMode.FINGERPRINT] * 4
    ranges = parse_message(codec.decode(answer))
    assert [(r.upper, r.mode) for r in ranges] == [(INFINITY, RangeMode.CODED)]
    # first_symbols(|40 - 40|) = 24 symbols after the whole-set fingerprint and index 0
    assert ranges[0].payload == fingerprint_by_hand(theirs) + b"\x00\x00" + symbols_by_hand(
        theirs, 24
    )
    assert codec.decode(done) == {"r": [], "t": "rec"}
    # The reference reconciler sends exactly these messages and learns both differences.
    params = ReconcileParams(initial_fanout=4, fanout=8, idlist_threshold=8)
    initiator = Reconciler(
        SortedListIndex(ours), initiator=True, params=params, coded=CodedSymbols(ours)
    )
    responder = Reconciler(
        SortedListIndex(theirs), initiator=False, params=params, coded=CodedSymbols(theirs)
    )
    assert initiator.initial() == first
    step = responder.receive(first)
    assert step.reply == answer
    step = initiator.receive(answer)
    assert step.reply == done and step.done
    assert step.have == [extra] and step.push == [missing]
    assert vector["initiator_wants"] == [extra.hex()]
    assert vector["initiator_pushes"] == [missing.hex()]
