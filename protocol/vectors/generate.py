#!/usr/bin/env python3
"""Regenerate the golden test vectors in this directory (SPEC.md §1.3).

    python protocol/vectors/generate.py           # rewrite the *.json files
    python protocol/vectors/generate.py --check   # regenerate in memory; exit 1 on any difference

Run it with the project's environment (``.venv/bin/python``): it imports
``fieldsync_protocol``. Everything is deterministic: every key, nonce and ephemeral secret is
a hex constant below; nothing reads the clock or an entropy source. Byte strings are
lowercase hex. A changed vector is a protocol change: say so in SPEC.md and in the commit.

``tests/protocol/test_vectors.py`` checks every file independently of this script: it
rebuilds each vector from its stated inputs with the protocol functions, opens each one,
and opens the sealed boxes with libsodium's own ``SealedBox``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from fieldsync_protocol import codec, crypto, envelope, keytext, membership, receipt
from fieldsync_protocol.bundle import BundleReader, BundleWriter
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.items import parse_item
from fieldsync_protocol.keytext import KeyKind

HERE = Path(__file__).resolve().parent

# --- fixed inputs (never change them: the vectors would all change) -------------------------

ROOT_SEED = "57c06ee14fc8be0f078ca3836fe29d9a6b309a099aea366f982d5f17e3b20126"
HQ_PRIVATE = {
    0: "093cd877ed0e826b3871df5177a3606138f9f89ccbb7ee58c92e621561dd7a70",
    1: "626d396578c2c50cb49d9e159551f53ab5d2d063165818cb00d395a62b053c67",
}
RECEIPT_SEED = "30fb50d47cc1c9e530cbd2c8f95e8f1c492447225234ffa61a153ad2b92a2c4b"
CERTIFICATE_SEED = "92b1bcb75e521b30247bd0e64622bc49d91f32d1de8125ce33777d947c5e8119"
NETWORK_ID = "687f88334687c4fa0cc9396f1f2e60e8"
NETWORK_KEY = "cc48214f6e13aecc012218a0a132a83027d5053ba270485931fa3a374dd50a22"
NODE_PRIVATE = "db5ce904e724e1ace766665396cbf8e8bb56942c2e0359d6f02ba70de3e4490e"
RELAY_NODE_PRIVATE = "1f3b8a5bb0d11e140d1f7cd5f0567c98822e74080f388843321533c445d78357"
AUTHOR_SEED = "5bca4fc9ed5e1a50dcd5e2e64699c9e49b02ec6bd8a39046c0fc7eb95380ace6"
EPHEMERAL_ENROLMENT = "528991de11963799dea1b6046d163aa5f2c11d67bba0ace32e294428ee76ad0d"
EPHEMERAL_ENVELOPE = "1ab2cc59dbd6309dc8e3d6ce2bc8dcc4a5e755db6ec56e7e95dd36aff4e0e173"
FILE_NONCE = "515099e99acb501b71662557c0357b3c"
NOW = 1_740_000_000  # 2025-02-19T21:20:00Z, the "claimed time" and issue times

REPORT_BODY: dict[str, Any] = {
    "schema": "fieldsync.report/1",
    "id": "0191f3a2-7c4e-7b1a-9d2e-5f6a7b8c9d0e",
    "supersedes": None,
    "created_at": "2025-03-02T14:05:11Z",
    "clock": {"source": "ntp", "synced": True},
    "origin": {"channel": "web-form", "monitor": "M-017"},
    "language": "fr",
    "taxonomy_version": "2025.1",
    "title": "Arrestations au marché",
    "occurred": {
        "start": "2025-03-01T09:30:00Z",
        "end": None,
        "precision": "hour",
        "approximate": True,
    },
    "location": {
        "lat": 12.3657,
        "lon": -1.5339,
        "accuracy_m": 50,
        "alt_m": None,
        "source": "gps",
        "place": "Marché central, secteur 4",
        "admin": ["BF", "BF-CEN", "Ouagadougou"],
    },
    "categories": ["arbitrary-detention", "excessive-force"],
    "narrative": "Vers 9h30, des agents en uniforme ont arrêté trois vendeurs.",
    "people": [
        {"role": "victim", "code": "V-1", "count": 3, "sex": "m", "age_group": "18-29"},
        {"role": "perpetrator", "code": "P-1", "type": "state-security", "count": 6},
        {"role": "source", "code": "S-1", "relation": "eyewitness", "reliability": "high"},
    ],
    "sensitivity": "restricted",
    "consent": {"informed": True, "share_with_hq": True, "publish": False, "contact_ok": False},
}


def h(data: bytes) -> str:
    return data.hex()


def b(text: str) -> bytes:
    return bytes.fromhex(text)


# --- codec -----------------------------------------------------------------------------------


def typed(value: Any) -> Any:
    """A language-neutral, unambiguous JSON form of a msgpack value."""
    if value is None:
        return ["nil"]
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", value]
    if isinstance(value, float):
        return ["float", value]
    if isinstance(value, str):
        return ["str", value]
    if isinstance(value, bytes):
        return ["bin", h(value)]
    if isinstance(value, list):
        return ["array", [typed(v) for v in value]]
    return ["map", [[k, typed(value[k])] for k in sorted(value, key=lambda k: k.encode())]]


def nested(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


CODEC_VALID: list[tuple[str, Any]] = [
    ("nil", None),
    ("true", True),
    ("false", False),
    ("positive fixint 0", 0),
    ("positive fixint 127", 127),
    ("uint8 128", 128),
    ("uint8 255", 255),
    ("uint16 256", 256),
    ("uint16 65535", 65535),
    ("uint32 65536", 65536),
    ("uint32 2^32-1", 2**32 - 1),
    ("uint64 2^32", 2**32),
    ("uint64 2^64-1", 2**64 - 1),
    ("negative fixint -1", -1),
    ("negative fixint -32", -32),
    ("int8 -33", -33),
    ("int8 -128", -128),
    ("int16 -129", -129),
    ("int16 -32768", -32768),
    ("int32 -32769", -32769),
    ("int32 -2^31", -(2**31)),
    ("int64 -2^31-1", -(2**31) - 1),
    ("int64 -2^63", -(2**63)),
    ("float64 1.5", 1.5),
    ("float64 -0.0", -0.0),
    ("float64 12.3657", 12.3657),
    ("float64 1e300", 1e300),
    ("empty str", ""),
    ("fixstr", "fieldsync"),
    ("fixstr of 31 bytes", "a" * 31),
    ("str8 of 32 bytes", "a" * 32),
    ("str16 of 256 bytes", "b" * 256),
    ("UTF-8 2-byte", "é"),
    ("UTF-8 4-byte", "\U0001f600"),
    ("empty bin", b""),
    ("bin8", b"\x00\x01\xff"),
    ("bin16 of 256 bytes", bytes(range(256))),
    ("empty array", []),
    ("fixarray", [1, "a", None]),
    ("array16 of 16", list(range(16))),
    ("nested arrays, 8 levels (the most allowed)", nested(8)),
    ("empty map", {}),
    ("map keys sorted by UTF-8 bytes", {"b": 1, "a": 2, "é": 3, "Z": 4, "aa": 5, "": 6}),
    ("map16 of 16", {f"k{i:02d}": i for i in range(16)}),
    ("nested map", {"outer": {"inner": [b"\x01", 2.5, False]}}),
]

CODEC_INVALID: list[tuple[str, str, str]] = [
    # name, hex, a fragment of the error message
    ("duplicate key", "82a16101a16102", "not canonical"),
    ("unsorted keys", "82a16201a16102", "not canonical"),
    ("uint8 for a positive fixint", "cc05", "not canonical"),
    ("uint16 for a uint8", "cd00ff", "not canonical"),
    ("uint32 for a uint16", "ce0000ffff", "not canonical"),
    ("uint64 for a uint32", "cf00000000ffffffff", "not canonical"),
    ("int8 for a positive fixint", "d005", "not canonical"),
    ("int8 for a negative fixint", "d0e0", "not canonical"),
    ("int16 for an int8", "d1ff80", "not canonical"),
    ("int32 for an int16", "d2ffff8000", "not canonical"),
    ("int64 for an int32", "d3ffffffff80000000", "not canonical"),
    ("float32", "ca3f800000", "not canonical"),
    ("float64 NaN", "cb7ff8000000000000", "not canonical"),
    ("float64 infinity", "cb7ff0000000000000", "not canonical"),
    ("str8 for a fixstr", "d90161", "not canonical"),
    ("str16 for a str8", "da000161", "not canonical"),
    ("bin16 for a bin8", "c5000161", "not canonical"),
    ("array16 for a fixarray", "dc000101", "not canonical"),
    ("map16 for a fixmap", "de0001a16101", "not canonical"),
    ("bin map key", "81c4016101", "not canonical"),
    ("nil map key", "81c001", "not valid msgpack"),
    ("int map key", "810102", "not valid msgpack"),
    ("bad UTF-8", "a2c328", "not valid msgpack"),
    ("ext8 of length 0", "c70005", "ext type 5 is refused"),
    ("fixext1", "d40100", "not valid msgpack"),
    ("timestamp32", "d6ff00000000", "not valid msgpack"),
    ("reserved byte 0xc1", "c1", "not valid msgpack"),
    ("trailing bytes", "0101", "not valid msgpack"),
    ("truncated", "9301", "not valid msgpack"),
    ("empty input", "", "not valid msgpack"),
    ("nested arrays, 9 levels", "91" * 8 + "90", "nests deeper than 8"),
    ("array32 claiming 2^32-1 elements", "ddffffffff", "not valid msgpack"),
    ("map32 claiming 2^32-1 entries", "dfffffffff", "not valid msgpack"),
    ("bin32 claiming 4 GiB", "c6ffffffff", "not valid msgpack"),
    ("str32 claiming 4 GiB", "dbffffffff", "not valid msgpack"),
]


def codec_vectors() -> dict[str, Any]:
    valid = [{"name": n, "value": typed(v), "hex": h(codec.encode(v))} for n, v in CODEC_VALID]
    invalid = [{"name": n, "hex": x, "error": e} for n, x, e in CODEC_INVALID]
    for case in invalid:
        try:
            codec.decode(b(case["hex"]), what="value")
        except RemoteProtocolError as exc:
            assert case["error"] in str(exc), (case, exc)
        else:
            raise AssertionError(f"codec accepted {case['name']}")
    return {
        "description": "Canonical msgpack (SPEC.md §2). 'valid': encode(value) == hex and "
        "decode(hex) == value. 'invalid': decode(hex) must be refused; 'error' is a fragment "
        "of this implementation's message. Values are typed: [type, value].",
        "valid": valid,
        "invalid": invalid,
    }


# --- keys ------------------------------------------------------------------------------------


def key_entry(name: str, kind: KeyKind, private: str | None, public: bytes) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "kind": kind.value}
    if private is not None:
        entry["private"] = private
    entry |= {
        "public": h(public),
        "text": keytext.key_to_text(kind, public),
        "fingerprint": keytext.fingerprint(kind, public),
    }
    return entry


def key_vectors() -> dict[str, Any]:
    signing = [
        ("root", KeyKind.ROOT, ROOT_SEED),
        ("receipt", KeyKind.RECEIPT, RECEIPT_SEED),
        ("certificate", KeyKind.CERTIFICATE, CERTIFICATE_SEED),
        ("author", KeyKind.AUTHOR, AUTHOR_SEED),
    ]
    boxes = [
        ("hq encryption 0", KeyKind.HQ_ENCRYPTION, HQ_PRIVATE[0]),
        ("hq encryption 1", KeyKind.HQ_ENCRYPTION, HQ_PRIVATE[1]),
        ("node", KeyKind.NODE, NODE_PRIVATE),
        ("relay node", KeyKind.NODE, RELAY_NODE_PRIVATE),
    ]
    entries = [
        *(key_entry(n, k, p, crypto.signing_public_key(b(p))) for n, k, p in signing),
        *(key_entry(n, k, p, crypto.box_public_key(b(p))) for n, k, p in boxes),
        key_entry("network id", KeyKind.NETWORK, None, b(NETWORK_ID)),
    ]
    for entry in entries:
        assert keytext.key_from_text(KeyKind(entry["kind"]), entry["text"]).hex() == entry["public"]
    return {
        "description": "Key text forms and fingerprints (SPEC.md §3). ed25519 'private' values "
        "are 32-byte seeds; x25519 'private' values are 32-byte scalars.",
        "network_key": NETWORK_KEY,
        "keys": entries,
    }


# --- membership ------------------------------------------------------------------------------


def manifest() -> membership.Manifest:
    return membership.Manifest(
        network_id=b(NETWORK_ID),
        name="Réseau Sahel",
        epoch=3,
        root_key=crypto.signing_public_key(b(ROOT_SEED)),
        hq_keys={i: crypto.box_public_key(b(k)) for i, k in HQ_PRIVATE.items()},
        receipt_key=crypto.signing_public_key(b(RECEIPT_SEED)),
        certificate_key=crypto.signing_public_key(b(CERTIFICATE_SEED)),
    )


def manifest_fields(m: membership.Manifest) -> dict[str, Any]:
    return {
        "network_id": h(m.network_id),
        "name": m.name,
        "epoch": m.epoch,
        "root_key": h(m.root_key),
        "hq_keys": {str(i): h(k) for i, k in sorted(m.hq_keys.items())},
        "receipt_key": h(m.receipt_key),
        "certificate_key": h(m.certificate_key),
    }


def signed_document(data: bytes, domain: crypto.Domain) -> dict[str, Any]:
    fields = codec.decode(data)
    prefix = b"fieldsync/1/" + domain.value + b"\0"
    return {
        "body_hex": h(fields["b"]),
        "signature_hex": h(fields["s"]),
        "signed_message_hex": h(prefix + fields["b"]),
    }


def certificate() -> membership.NodeCertificate:
    return membership.NodeCertificate(
        network_id=b(NETWORK_ID),
        node_key=crypto.box_public_key(b(NODE_PRIVATE)),
        role="author",
        serial=42,
        issued=NOW,
    )


def membership_vectors() -> dict[str, Any]:
    m = manifest()
    item = membership.sign_manifest(m, b(ROOT_SEED))
    assert membership.open_manifest(item) == m
    cert = certificate()
    cert_bytes = membership.sign_certificate(cert, b(CERTIFICATE_SEED))
    assert membership.open_certificate(cert_bytes, m) == cert
    return {
        "description": "Network manifest item (SPEC.md §4) and node certificate (SPEC.md §5).",
        "manifest": {
            "root_seed": ROOT_SEED,
            "fields": manifest_fields(m),
            "item_hex": h(item),
            "item_id": h(crypto.content_id(item)),
            **signed_document(item, crypto.Domain.MANIFEST),
        },
        "certificate": {
            "certificate_seed": CERTIFICATE_SEED,
            "fields": {
                "network_id": h(cert.network_id),
                "node_key": h(cert.node_key),
                "role": cert.role,
                "serial": cert.serial,
                "issued": cert.issued,
            },
            "hex": h(cert_bytes),
            **signed_document(cert_bytes, crypto.Domain.CERTIFICATE),
        },
    }


def enrolment_vectors() -> dict[str, Any]:
    author_key = crypto.signing_public_key(b(AUTHOR_SEED))
    with_author = membership.EnrolmentRequest(
        node_key=crypto.box_public_key(b(NODE_PRIVATE)),
        author_key=author_key,
        author_name="Aïcha (M-017)",
        created=NOW,
    )
    relay_only = membership.EnrolmentRequest(
        node_key=crypto.box_public_key(b(RELAY_NODE_PRIVATE)),
        author_key=None,
        author_name=None,
        created=NOW + 60,
    )
    requests = []
    for name, request, seed in (
        ("author node", with_author, AUTHOR_SEED),
        ("relay-only node", relay_only, None),
    ):
        text = membership.encode_request(request, None if seed is None else b(seed))
        assert membership.decode_request(text) == request
        requests.append(
            {
                "name": name,
                "author_seed": seed,
                "fields": {
                    "node_key": h(request.node_key),
                    "author_key": None if request.author_key is None else h(request.author_key),
                    "author_name": request.author_name,
                    "created": request.created,
                },
                "text": text,
            }
        )
    m = manifest()
    enrolment = membership.Enrolment(
        manifest_item=membership.sign_manifest(m, b(ROOT_SEED)),
        network_key=b(NETWORK_KEY),
        certificate=membership.sign_certificate(certificate(), b(CERTIFICATE_SEED)),
    )
    node_public = crypto.box_public_key(b(NODE_PRIVATE))
    text = membership.encode_enrolment(enrolment, node_public, b(EPHEMERAL_ENROLMENT))
    opened, _, _ = membership.decode_enrolment(text, b(NODE_PRIVATE))
    assert opened == enrolment
    inner = codec.encode(
        {
            "cert": enrolment.certificate,
            "knet": enrolment.network_key,
            "man": enrolment.manifest_item,
            "v": 1,
        }
    )
    sealed = crypto.seal(inner, node_public, b(EPHEMERAL_ENROLMENT))
    return {
        "description": "Enrolment requests (SPEC.md §6.1) and an enrolment sealed to the "
        "author node with a fixed ephemeral key (SPEC.md §6.2). The enrolment carries the "
        "manifest item and certificate of membership.json.",
        "requests": requests,
        "enrolment": {
            "node_private": NODE_PRIVATE,
            "ephemeral_private": EPHEMERAL_ENROLMENT,
            "network_key": NETWORK_KEY,
            "root_fingerprint": keytext.fingerprint(KeyKind.ROOT, m.root_key),
            "inner_hex": h(inner),
            "sealed_hex": h(sealed),
            "text": text,
        },
    }


# --- envelope, receipt, bundle ---------------------------------------------------------------


def sealed_envelope() -> tuple[envelope.SealInput, envelope.SealedReport]:
    spec = envelope.SealInput(
        network_id=b(NETWORK_ID),
        hq_key_id=1,
        hq_public_key=crypto.box_public_key(b(HQ_PRIVATE[1])),
        author_seed=b(AUTHOR_SEED),
        sequence=7,
        previous=hashlib.blake2b(b"report 6", digest_size=32).digest(),
        claimed_time=NOW,
        body=REPORT_BODY,
        ttl_class=2,
    )
    return spec, envelope.seal_report(spec, b(EPHEMERAL_ENVELOPE))


def envelope_vectors() -> dict[str, Any]:
    spec, sealed = sealed_envelope()
    fields = codec.decode(sealed.item)
    padded = crypto.unseal(fields["c"], b(HQ_PRIVATE[1]), "vector")
    signed_bytes = padded.rstrip(b"\0")[:-1]
    signed = codec.decode(signed_bytes)
    outer = envelope.parse_outer(parse_item(sealed.item).fields)
    authors = {crypto.signing_public_key(b(AUTHOR_SEED))}
    hq = {i: b(k) for i, k in HQ_PRIVATE.items()}
    opened = envelope.open_report(outer, b(NETWORK_ID), hq, authors)
    assert opened.body == REPORT_BODY
    return {
        "description": "A report envelope item (SPEC.md §8) sealed to HQ key id 1 with a "
        "fixed ephemeral key. 'header_hex' is the signed inner header; 'signed_hex' is "
        "{h, s}; 'padded_length' = ciphertext length - 48.",
        "input": {
            "network_id": NETWORK_ID,
            "hq_key_id": spec.hq_key_id,
            "hq_private": HQ_PRIVATE[1],
            "author_seed": AUTHOR_SEED,
            "sequence": spec.sequence,
            "previous": h(spec.previous),
            "claimed_time": spec.claimed_time,
            "ttl_class": spec.ttl_class,
            "ephemeral_private": EPHEMERAL_ENVELOPE,
            "body": REPORT_BODY,
        },
        "body_hex": h(codec.encode(REPORT_BODY)),
        "header_hex": h(signed["h"]),
        "signature_hex": h(signed["s"]),
        "signed_hex": h(signed_bytes),
        "padded_length": len(padded),
        "ciphertext_length": len(fields["c"]),
        "item_hex": h(sealed.item),
        "item_id": h(crypto.content_id(sealed.item)),
        "delivery_tag": h(crypto.delivery_tag(sealed.item)),
        "header_hash": h(sealed.header_hash),
    }


def receipt_vectors() -> dict[str, Any]:
    _, sealed = sealed_envelope()
    tags = (crypto.delivery_tag(sealed.item), hashlib.blake2b(b"another", digest_size=32).digest())
    value = receipt.Receipt(network_id=b(NETWORK_ID), serial=12, time=NOW + 3600, tags=tags)
    item = receipt.sign_receipt(value, b(RECEIPT_SEED))
    assert receipt.open_receipt(codec.decode(item), manifest()) == value
    return {
        "description": "A receipt item (SPEC.md §9) naming the envelope vector's delivery tag.",
        "receipt_seed": RECEIPT_SEED,
        "fields": {
            "network_id": NETWORK_ID,
            "serial": value.serial,
            "time": value.time,
            "tags": [h(t) for t in tags],
        },
        "item_hex": h(item),
        "item_id": h(crypto.content_id(item)),
        **signed_document(item, crypto.Domain.RECEIPT),
    }


def bundle_vectors() -> dict[str, Any]:
    _, sealed = sealed_envelope()
    items = [sealed.item, b(receipt_vectors()["item_hex"])]
    writer = BundleWriter(b(NETWORK_KEY), b(NETWORK_ID), b(FILE_NONCE))
    data = b"".join(writer.add(item) for item in items) + writer.finish()
    reader = BundleReader(b(NETWORK_KEY), b(NETWORK_ID))
    reader.receive_data(data)
    reader.end_of_file()
    assert list(reader.items()) == items
    return {
        "description": "A bundle file (SPEC.md §11) holding the envelope and receipt vectors.",
        "network_key": NETWORK_KEY,
        "network_id": NETWORK_ID,
        "file_nonce": FILE_NONCE,
        "bundle_key": h(crypto.derive_key(b(NETWORK_KEY), b"bundle-file")),
        "items": [h(i) for i in items],
        "file_length": len(data),
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "file_hex": h(data),
    }


# --- driver ----------------------------------------------------------------------------------


def build() -> dict[str, Any]:
    """File name -> content, for every vector file."""
    return {
        "codec.json": codec_vectors(),
        "keys.json": key_vectors(),
        "membership.json": membership_vectors(),
        "enrolment.json": enrolment_vectors(),
        "envelope.json": envelope_vectors(),
        "receipt.json": receipt_vectors(),
        "bundle.json": bundle_vectors(),
    }


def render(content: Any) -> str:
    return json.dumps(content, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the stored files; exit 1 on a difference"
    )
    args = parser.parse_args(argv)
    files = {name: render(content) for name, content in build().items()}
    if args.check:
        stale = [
            name
            for name, text in files.items()
            if not (HERE / name).exists() or (HERE / name).read_text(encoding="utf-8") != text
        ]
        for name in stale:
            print(f"{HERE / name}: differs from what generate.py produces", file=sys.stderr)
        if not stale:
            print(f"{len(files)} vector files are up to date")
        return 1 if stale else 0
    for name, text in files.items():
        (HERE / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} vector files to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
