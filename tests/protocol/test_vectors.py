"""The golden vectors in protocol/vectors/ (SPEC.md §1.3), checked without the generator.

Each vector is rebuilt byte for byte from its stated inputs by calling the protocol
functions, opened and verified back to its stated values, and every sealed box is opened
with libsodium's own ``SealedBox`` (proof that ``crypto.seal`` is ``crypto_box_seal``).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import nacl.bindings as sodium
import nacl.public
import pytest

from fieldsync_protocol import codec, crypto, envelope, keytext, membership, receipt
from fieldsync_protocol.bundle import BundleReader, BundleWriter
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.items import ItemKind, check_item, parse_item
from fieldsync_protocol.keytext import KeyKind

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
        fields["role"],
        fields["serial"],
        fields["issued"],
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
    )
    item = receipt.sign_receipt(value, b(RECEIPT["receipt_seed"]))
    assert item.hex() == RECEIPT["item_hex"]
    assert crypto.content_id(item).hex() == RECEIPT["item_id"]
    checked = check_item(item, MANIFEST)
    assert checked.receipt == value
    assert ENVELOPE["delivery_tag"] in fields["tags"]
    check_signed_document(item, RECEIPT, crypto.Domain.RECEIPT, MANIFEST.receipt_key)


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
