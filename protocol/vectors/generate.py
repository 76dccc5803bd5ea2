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
import dataclasses
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    report,
    revocation,
)
from fieldsync_protocol.bundle import BundleReader, BundleWriter
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.handshake import (
    PROLOGUE,
    PROTOCOL_NAME,
    PeerHandshake,
    certificate_slot,
)
from fieldsync_protocol.items import parse_item
from fieldsync_protocol.keytext import KeyKind
from fieldsync_protocol.reconcile import ReconcileParams, Reconciler
from fieldsync_protocol.reconcile_index import (
    EMPTY_FINGERPRINT,
    INFINITY,
    ZERO,
    SortedListIndex,
    id_sum,
)
from fieldsync_protocol.reconcile_wire import parse_message, parse_set_size
from fieldsync_protocol.riblt import MAX_SYMBOLS, CodedSymbols, id_hash, indices
from fieldsync_protocol.session import (
    Completed,
    CursorAdvanced,
    ItemsReceived,
    Started,
    SyncSession,
)
from fieldsync_protocol.session_messages import Cursor

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
EPHEMERAL_DELIVERY = "6c0f2a9d4e8b1735c2a6e9f0d3b7a4c1e5f8092b6d3a7c0e4f1b8d2a5c9e6f30"
NEXT_NETWORK_KEY = "a1d4c7f02b5e8a3d6c9f1e4b7a0d3c6f9e2b5a8d1c4f7e0a3b6d9c2f5e8a1b4d"
FILE_NONCE = "515099e99acb501b71662557c0357b3c"
# Attachment (SPEC.md §16): key material and a file of one full piece plus 1000 bytes.
ATTACHMENT_KEY = "7d0a3f2c5b8e91d4c6a7f0e3b2d5c8a1f4e7d0c3b6a9f2e5d8c1b4a7f0e3d6c9"
ATTACHMENT_ID = "a4c1e7f03b9d2658c0e4a7b1d3f5968e"
ATTACHMENT_FILE_LENGTH = attachment.PIECE + 1000
EPHEMERAL_ATTACHMENT_REPORT = "e2b7c4a9f1d6083b5e7a2c9d4f1b6e803a5c7e9b2d4f6a8c0e1b3d5f7a9c2e4b"
# Handshake (SPEC.md §12.1): the author node (initiator) meets the relay node (responder).
HANDSHAKE_EPHEMERAL_INITIATOR = "3e151846cc02380a229604d9bfe19bc6119d79e0f7137dbce6336c8804555c1e"
HANDSHAKE_EPHEMERAL_RESPONDER = "aec98e598e7ec9f6699870e9a3d36730e55baf3b7da16017b1acbbe770398e19"
# Store epochs of the two nodes' stores (SPEC.md §13.1).
STORE_EPOCH_INITIATOR = "50db6ddc83a3349e3dfbb92914d2b740"
STORE_EPOCH_RESPONDER = "c874b6402750775e820ad69c3afeacc4"
NOW = 1_740_000_000  # 2025-02-19T21:20:00Z, the "claimed time" and issue times

# The 16 random bytes the report id is made of (SPEC.md §7: a version-4 UUID).
REPORT_ID_BYTES = "0191f3a27c4e7b1a9d2e5f6a7b8c9d0e"
REPORT_BODY: dict[str, Any] = {
    "schema": "fieldsync.report/1",
    "id": report.report_id(bytes.fromhex(REPORT_ID_BYTES)),
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
        expires=NOW + 90 * 86400,
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
            "fields": certificate_fields(cert),
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
            "report_id_random": REPORT_ID_BYTES,
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
    others = {}
    for status in (receipt.ReceiptStatus.HELD, receipt.ReceiptStatus.DROPPED):
        other = dataclasses.replace(value, status=status)
        other_item = receipt.sign_receipt(other, b(RECEIPT_SEED))
        assert receipt.open_receipt(codec.decode(other_item), manifest()) == other
        others[status.value] = h(other_item)
    return {
        "description": "A receipt item (SPEC.md §9) naming the envelope vector's delivery tag,"
        " with status accepted; 'other_statuses' holds the same receipt with each other status.",
        "receipt_seed": RECEIPT_SEED,
        "fields": {
            "network_id": NETWORK_ID,
            "serial": value.serial,
            "status": value.status.value,
            "time": value.time,
            "tags": [h(t) for t in tags],
        },
        "item_hex": h(item),
        "item_id": h(crypto.content_id(item)),
        "other_statuses": others,
        **signed_document(item, crypto.Domain.RECEIPT),
    }


def revocation_vectors() -> dict[str, Any]:
    relay = crypto.box_public_key(b(RELAY_NODE_PRIVATE))
    author = crypto.box_public_key(b(NODE_PRIVATE))
    value = revocation.RevocationList(
        network_id=b(NETWORK_ID),
        serial=4,
        time=NOW + 7200,
        nodes=tuple(sorted([relay, author])),
        authors=(revocation.RevokedAuthor(crypto.signing_public_key(b(AUTHOR_SEED)), 17),),
    )
    item = revocation.sign_revocation(value, b(ROOT_SEED))
    assert revocation.open_revocation(codec.decode(item), manifest()) == value
    cert = membership.NodeCertificate(
        b(NETWORK_ID), crypto.box_public_key(b(NODE_PRIVATE)), NOW + 180 * 86400
    )
    delivery = keydelivery.KeyDelivery(
        network_id=b(NETWORK_ID),
        node_key=crypto.box_public_key(b(NODE_PRIVATE)),
        serial=9,
        certificate=membership.sign_certificate(cert, b(CERTIFICATE_SEED)),
        network_key_id=1,
        network_key=b(NEXT_NETWORK_KEY),
        grace=7 * 86400,
    )
    delivery_item = keydelivery.seal_delivery(delivery, b(ROOT_SEED), b(EPHEMERAL_DELIVERY))
    fields = codec.decode(delivery_item)
    assert keydelivery.open_delivery(fields, manifest(), b(NODE_PRIVATE)) == delivery
    inner = crypto.unseal(fields["c"], b(NODE_PRIVATE), "vector")
    signed = codec.decode(inner[: inner.rstrip(b"\0").rindex(b"\x80")])
    return {
        "key_delivery": {
            "description": "A key delivery item (SPEC.md §17.5) to the author node of "
            "keys.json: its renewed certificate (certificate fields as in membership.json) "
            "and network key 1, sealed with the fixed ephemeral key; 'inner_hex' is the "
            "padded plaintext of the sealed box.",
            "ephemeral_private": EPHEMERAL_DELIVERY,
            "node_private": NODE_PRIVATE,
            "fields": {
                "serial": delivery.serial,
                "certificate_fields": certificate_fields(cert),
                "certificate_hex": h(delivery.certificate),
                "network_key_id": delivery.network_key_id,
                "network_key": NEXT_NETWORK_KEY,
                "grace": delivery.grace,
            },
            "item_hex": h(delivery_item),
            "inner_hex": h(inner),
            "body_hex": h(signed["b"]),
            "signature_hex": h(signed["s"]),
            "signed_message_hex": h(b"fieldsync/1/key-delivery\0" + signed["b"]),
        },
        "description": "A revocation list item (SPEC.md §17) signed by the root key of "
        "membership.json, revoking the author node and the relay node of keys.json and the "
        "author key of keys.json with cut-off sequence 17. 'time' is HQ's clock, the beacon "
        "certificate expiry is judged by.",
        "root_seed": ROOT_SEED,
        "fields": {
            "network_id": NETWORK_ID,
            "serial": value.serial,
            "time": value.time,
            "nodes": [h(k) for k in value.nodes],
            "authors": [{"key": h(a.key), "cutoff": a.cutoff} for a in value.authors],
        },
        "item_hex": h(item),
        "item_id": h(crypto.content_id(item)),
        **signed_document(item, crypto.Domain.REVOCATION),
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


def attachment_file() -> bytes:
    """The attachment vector's file: byte ``i`` is ``i * 7 mod 251`` (no 64-byte period)."""
    return bytes(i * 7 % 251 for i in range(ATTACHMENT_FILE_LENGTH))


def attachment_vectors() -> dict[str, Any]:
    key = attachment.AttachmentKey(b(ATTACHMENT_KEY), b(ATTACHMENT_ID))
    data = attachment_file()
    writer = attachment.AttachmentWriter(key)
    items = writer.write(data)
    last, entry = writer.finish("témoin 1.ogg", "audio/ogg")
    items.append(last)
    reader = attachment.AttachmentReader(entry)
    assert b"".join(reader.add(item) for item in items) == data
    reader.finish()
    body = dict(REPORT_BODY, attachments=[entry.as_body()])
    spec, _ = sealed_envelope()
    sealed = envelope.seal_report(
        envelope.SealInput(**{**spec.__dict__, "body": body}), b(EPHEMERAL_ATTACHMENT_REPORT)
    )
    hq = {i: b(k) for i, k in HQ_PRIVATE.items()}
    outer = envelope.parse_outer(parse_item(sealed.item).fields)
    opened = envelope.open_report(
        outer, b(NETWORK_ID), hq, {crypto.signing_public_key(b(AUTHOR_SEED))}
    )
    assert attachment.parse_attachments(opened.body["attachments"]) == (entry,)
    first = codec.decode(items[0])["c"]
    return {
        "description": "An attachment (SPEC.md §16) of one full piece plus 1000 bytes, byte i "
        "of the file being i*7 mod 251, as two chunk items; and the envelope vector's report "
        "re-sealed with it in 'attachments'. Chunk 0 (a 256 KiB ciphertext) is given by its "
        "id, SHA-256 and first and last 32 bytes; the final chunk in full.",
        "key": ATTACHMENT_KEY,
        "attachment_id": ATTACHMENT_ID,
        "file_length": len(data),
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "name": entry.name,
        "media_type": entry.media_type,
        "chunk_ids": [h(i) for i in entry.chunk_ids],
        "chunk_0": {
            "item_length": len(items[0]),
            "item_sha256": hashlib.sha256(items[0]).hexdigest(),
            "ciphertext_first_32": h(first[:32]),
            "ciphertext_last_32": h(first[-32:]),
        },
        "chunk_1_item_hex": h(items[1]),
        "delivery_tags": [h(crypto.delivery_tag(i)) for i in items],
        "report_ephemeral_private": EPHEMERAL_ATTACHMENT_REPORT,
        "report_body_hex": h(codec.encode(body)),
        "report_item_id": h(crypto.content_id(sealed.item)),
        "report_item_hex": h(sealed.item),
    }


# --- handshake and frames --------------------------------------------------------------------

#: Messages the initiator sends after the handshake (then END), and the responder's.
FRAME_MESSAGES_INITIATOR = (b"fieldsync/1 frame vector: first message", bytes(range(100)), b"")
FRAME_MESSAGES_RESPONDER = (b"fieldsync/1 frame vector: reply",)


def relay_certificate() -> membership.NodeCertificate:
    return membership.NodeCertificate(
        network_id=b(NETWORK_ID),
        node_key=crypto.box_public_key(b(RELAY_NODE_PRIVATE)),
        expires=NOW + 7 * 86400,
    )


def certificate_fields(cert: membership.NodeCertificate) -> dict[str, Any]:
    return {
        "network_id": h(cert.network_id),
        "node_key": h(cert.node_key),
        "expires": cert.expires,
    }


def handshake_run() -> tuple[PeerHandshake, PeerHandshake, list[bytes]]:
    """The author node (initiator) meets the relay node (responder); run to completion."""
    m = manifest()

    def side(
        initiator: bool, static: str, cert: membership.NodeCertificate, ephemeral: str
    ) -> PeerHandshake:
        return PeerHandshake(
            initiator=initiator,
            network_key=b(NETWORK_KEY),
            static_secret=b(static),
            certificate=membership.sign_certificate(cert, b(CERTIFICATE_SEED)),
            manifest=m,
            ephemeral_secret=b(ephemeral),
        )

    initiator = side(True, NODE_PRIVATE, certificate(), HANDSHAKE_EPHEMERAL_INITIATOR)
    responder = side(False, RELAY_NODE_PRIVATE, relay_certificate(), HANDSHAKE_EPHEMERAL_RESPONDER)
    msg1 = initiator.data_to_send()
    responder.receive_data(msg1)
    msg2 = responder.data_to_send()
    initiator.receive_data(msg2)
    msg3 = initiator.data_to_send()
    responder.receive_data(msg3)
    assert initiator.is_complete and responder.is_complete
    assert initiator.handshake_hash == responder.handshake_hash
    assert initiator.peer == relay_certificate()
    assert responder.peer == certificate()
    return initiator, responder, [msg1, msg2, msg3]


def handshake_party(
    node: str, static: str, ephemeral: str, cert: membership.NodeCertificate
) -> dict[str, Any]:
    data = membership.sign_certificate(cert, b(CERTIFICATE_SEED))
    return {
        "node": node,
        "static_private": static,
        "static_public": h(crypto.box_public_key(b(static))),
        "ephemeral_private": ephemeral,
        "ephemeral_public": h(crypto.box_public_key(b(ephemeral))),
        "certificate_fields": certificate_fields(cert),
        "certificate_hex": h(data),
        "certificate_slot_hex": h(certificate_slot(data, manifest())),
    }


def handshake_vectors() -> dict[str, Any]:
    initiator, _, messages = handshake_run()
    shapes = (
        ("-> psk, e", "empty"),
        ("<- e, ee, s, es", "the responder's certificate slot"),
        ("-> s, se", "the initiator's certificate slot"),
    )
    return {
        "description": "A complete Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b handshake (SPEC.md "
        "§12.1) between the author node of membership.json (initiator, certificate of "
        "membership.json) and the relay node of keys.json (responder, a certificate "
        "signed by the same certificate key), under the manifest of membership.json, with "
        "fixed ephemeral keys. Slots are the 72-byte payloads of messages 2 and 3: the "
        "certificate's expiry (u64 big-endian) and HQ's signature; the receiver rebuilds the "
        "certificate from them, the manifest's network id and the sender's static key.",
        "protocol_name": PROTOCOL_NAME,
        "prologue_hex": h(PROLOGUE),
        "psk": NETWORK_KEY,
        "initiator": handshake_party(
            "author node", NODE_PRIVATE, HANDSHAKE_EPHEMERAL_INITIATOR, certificate()
        ),
        "responder": handshake_party(
            "relay node", RELAY_NODE_PRIVATE, HANDSHAKE_EPHEMERAL_RESPONDER, relay_certificate()
        ),
        "messages": [
            {
                "name": f"message {n}",
                "tokens": tokens,
                "payload": payload,
                "size": len(m),
                "hex": h(m),
            }
            for n, ((tokens, payload), m) in enumerate(zip(shapes, messages, strict=True), 1)
        ],
        "handshake_hash": h(initiator.handshake_hash),
    }


def frame_stream(
    sender: frames.FrameSender, receiver: frames.FrameReceiver, messages: Sequence[bytes]
) -> list[dict[str, Any]]:
    """Send ``messages`` and END; check the receiver gets them back; describe each frame."""
    out: list[dict[str, Any]] = []
    for message in messages:
        data = sender.send(message)
        out.append(frame_entry(len(out), "DATA", message, data))
    end = sender.end()
    assert len(end) == frames.END_SIZE
    out.append({"frame": len(out), "type": "END", "length": 0, "size": len(end), "hex": h(end)})
    receiver.receive_data(b"".join(b(f["hex"]) for f in out))
    events = []
    while (event := receiver.next_event()) is not None:
        events.append(event)
    assert events == [*(frames.Data(m) for m in messages), frames.End()]
    assert receiver.eof_received()
    return out


def frame_entry(index: int, kind: str, payload: bytes, data: bytes) -> dict[str, Any]:
    length = 1 + len(payload)
    assert len(data) == frames.HEADER_SIZE + frames.padded_size(length) + 16
    return {
        "frame": index,
        "type": kind,
        "payload_hex": h(payload),
        "length": length,
        "padded_size": frames.padded_size(length),
        "size": len(data),
        "hex": h(data),
    }


def frame_vectors() -> dict[str, Any]:
    initiator, responder, _ = handshake_run()
    i_send, i_receive = initiator.transport()
    r_send, r_receive = responder.transport()
    return {
        "description": "The first frames (SPEC.md §12.2) after the handshake of "
        "handshake.json, in each direction: the initiator sends three messages (one of them "
        "empty) then END, the responder one message then END. Frame k of a direction is "
        "ENCRYPT(nonce 2k, u16 L) || ENCRYPT(nonce 2k+1, type || payload || zeros) under "
        "that direction's key after k REKEYs (Split(): the initiator sends with the first "
        "key). 'length' is L = 1 + len(payload); END is a header alone, ENCRYPT(nonce 2k, "
        "u16 0), 18 bytes.",
        "initiator_to_responder": frame_stream(i_send, r_receive, FRAME_MESSAGES_INITIATOR),
        "responder_to_initiator": frame_stream(r_send, i_receive, FRAME_MESSAGES_RESPONDER),
    }


# --- sync session --------------------------------------------------------------------------


#: (serial, time, label) of the two receipts that exist only in the session vectors; each
#: names the delivery tag BLAKE2b-256(label) of an envelope no store holds.
SESSION_RECEIPTS = ((13, NOW + 7200, "session receipt A"), (14, NOW + 10800, "session receipt B"))


def session_receipt(serial: int, time: int, label: str) -> bytes:
    tag = hashlib.blake2b(label.encode(), digest_size=32).digest()
    value = receipt.Receipt(network_id=b(NETWORK_ID), serial=serial, time=time, tags=(tag,))
    return receipt.sign_receipt(value, b(RECEIPT_SEED))


class VectorStore:
    """A store in memory: items numbered on arrival, who gave each, a ``SortedListIndex``."""

    def __init__(self, epoch: bytes, rows: Sequence[tuple[int, bytes]]) -> None:
        self.epoch = epoch
        self.rows: list[tuple[int, bytes, str]] = [(seq, data, "") for seq, data in rows]
        self.by_id = {crypto.content_id(data): data for _, data in rows}
        self.index = SortedListIndex(self.by_id)
        self.high = max(seq for seq, _ in rows)
        self.cursors: dict[str, Cursor] = {}

    def add(self, data: bytes, origin: str) -> None:
        item_id = crypto.content_id(data)
        if item_id not in self.by_id:
            self.high += 1
            self.rows.append((self.high, data, origin))
            self.by_id[item_id] = data
            self.index.add(item_id)

    def source(self, peer: str) -> VectorSource:
        return VectorSource(self, peer)


class VectorSource:
    """``ItemSource`` of one store as the session with ``peer`` sees it (no echo in deltas)."""

    def __init__(self, store: VectorStore, peer: str) -> None:
        self._store = store
        self._peer = peer

    @property
    def index(self) -> SortedListIndex:
        return self._store.index

    def items_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        rows = [(s, data) for s, data, origin in self._store.rows if origin != self._peer]
        return [row for row in rows if row[0] > seq][:limit]

    def get(self, ids: Sequence[bytes]) -> list[bytes]:
        return [self._store.by_id[i] for i in ids if i in self._store.by_id]

    def wants(self, ids: Sequence[bytes]) -> list[bytes]:
        return [i for i in ids if i not in self._store.by_id]

    def send_later(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        return []  # no media here: every item goes as found


def run_session(stores: dict[str, VectorStore]) -> tuple[str, list[dict[str, Any]]]:
    """Drive two default ``SyncSession``s flight by flight; return the mode and transcript.

    A flight is everything one side's ``messages_to_send`` returns; the other side receives
    it whole, stores each batch as its ``ItemsReceived`` event comes out (then
    ``commit_done``), persists ``CursorAdvanced``, and answers with its own flight.
    """
    peer = {"initiator": "responder", "responder": "initiator"}
    sessions = {
        name: SyncSession(
            store.source(peer[name]),
            initiator=name == "initiator",
            local=Cursor(store.epoch, store.high),
            peer_cursor=store.cursors.get(peer[name]),
        )
        for name, store in stores.items()
    }
    modes = set()

    def drain(name: str) -> None:
        session, store = sessions[name], stores[name]
        while (event := session.next_event()) is not None:
            if isinstance(event, ItemsReceived):
                for item in event.items:
                    store.add(item, peer[name])
                session.commit_done(event.batch_no)
            elif isinstance(event, CursorAdvanced):
                store.cursors[peer[name]] = event.cursor
            elif isinstance(event, Started):
                modes.add(event.mode.value)
            else:
                assert isinstance(event, Completed)

    transcript: list[dict[str, Any]] = []
    turn, flight = "initiator", 0
    while True:
        out = sessions[turn].messages_to_send()
        drain(turn)
        if not out:
            break
        flight += 1
        for message in out:
            value = codec.decode(message)
            transcript.append(
                {
                    "flight": flight,
                    "from": turn,
                    "type": value["t"],
                    "hex": h(message),
                    "value": typed(value),
                }
            )
            sessions[peer[turn]].receive_message(message)
        drain(peer[turn])
        turn = peer[turn]
    assert all(s.complete for s in sessions.values())
    assert len(modes) == 1
    return modes.pop(), transcript


def store_state(store: VectorStore, names: dict[bytes, str], peer: str) -> dict[str, Any]:
    cursor = store.cursors.get(peer)
    return {
        "epoch": h(store.epoch),
        "high_water": store.high,
        "items": [
            {"seq": seq, "item": names[crypto.content_id(data)], "from": origin or None}
            for seq, data, origin in store.rows
        ],
        "cursor_on_peer": None if cursor is None else {"epoch": h(cursor.epoch), "seq": cursor.seq},
    }


def session_vectors() -> dict[str, Any]:
    _, sealed = sealed_envelope()
    items = {
        "manifest": membership.sign_manifest(manifest(), b(ROOT_SEED)),
        "envelope": sealed.item,
        **{f"receipt {s}": session_receipt(s, t, label) for s, t, label in SESSION_RECEIPTS},
    }
    names = {crypto.content_id(data): name for name, data in items.items()}
    stores = {
        "initiator": VectorStore(
            b(STORE_EPOCH_INITIATOR), [(1, items["manifest"]), (5, items["envelope"])]
        ),
        "responder": VectorStore(
            b(STORE_EPOCH_RESPONDER), [(1, items["manifest"]), (2, items["receipt 13"])]
        ),
    }
    sessions = []
    for name, new_item in (
        ("first contact: no cursors, so the initiator leads a reconciliation", None),
        (
            "repeat contact: both cursors valid, so delta mode; the responder stored receipt 14 "
            "since, and neither side sends back what it got from the other",
            "receipt 14",
        ),
    ):
        if new_item is not None:
            stores["responder"].add(items[new_item], "")
        before = {n: store_state(s, names, p) for n, s, p in _sides(stores)}
        mode, transcript = run_session(stores)
        after = {n: store_state(s, names, p) for n, s, p in _sides(stores)}
        sessions.append(
            {"name": name, "before": before, "mode": mode, "transcript": transcript, "after": after}
        )
    return {
        "description": "Sync sessions (SPEC.md §13) between two in-memory stores, driven "
        "flight by flight (the first flight is the initiator's); every side uses the default "
        "SessionConfig (q = 1000000, w = 16, ReconcileParams defaults). Stores list (seq, "
        "item, the peer it came from); 'cursor_on_peer' is the last CursorAdvanced. Each "
        "transcript entry is one message: its canonical msgpack 'hex' and its typed 'value' "
        "(as in codec.json). Items are the manifest of membership.json, the envelope of "
        "envelope.json and two receipts built from 'receipts'.",
        "items": {name: h(data) for name, data in items.items()},
        "item_ids": {name: h(crypto.content_id(data)) for name, data in items.items()},
        "receipts": [
            {
                "name": f"receipt {s}",
                "serial": s,
                "time": t,
                "tags": [h(hashlib.blake2b(label.encode(), digest_size=32).digest())],
            }
            for s, t, label in SESSION_RECEIPTS
        ],
        "sessions": sessions,
    }


def _sides(stores: dict[str, VectorStore]) -> list[tuple[str, VectorStore, str]]:
    return [
        ("initiator", stores["initiator"], "responder"),
        ("responder", stores["responder"], "initiator"),
    ]


# --- reconciliation ------------------------------------------------------------------------


def reconcile_ids() -> list[bytes]:
    return sorted(
        hashlib.blake2b(f"reconcile vector id {i}".encode(), digest_size=32).digest()
        for i in range(40)
    )


RECONCILE_EXTRA = hashlib.blake2b(b"reconcile vector extra id", digest_size=32).digest()


def fingerprint_entry(ids: list[bytes], lower: bytes, upper: bytes) -> dict[str, Any]:
    index = SortedListIndex(ids)
    inside = [
        i
        for i in ids
        if lower.ljust(32, b"\0") <= i and (upper == INFINITY or i < upper.ljust(32, b"\0"))
    ]
    total = id_sum(inside)
    return {
        "lower": h(lower),
        "upper": None if upper == INFINITY else h(upper),
        "count": len(inside),
        "sum_le": h(total.to_bytes(32, "little")),
        "fingerprint": h(index.fingerprint(lower, upper)),
    }


def ranges_entry(data: bytes) -> list[dict[str, Any]]:
    return [
        {
            "upper": None if r.upper == INFINITY else h(r.upper),
            "mode": r.mode.name,
            "payload": h(r.payload),
        }
        for r in parse_message(codec.decode(data))
    ]


def pushed(index: SortedListIndex, need: Sequence[Any]) -> list[bytes]:
    return [i for p in need for i in index.ids(p.lower, p.upper, len(index)) if p.keeps(i)]


#: The parameters of the full-id exchange: the defaults before PREFIXLIST existed.
FULL_ID_PARAMS = ReconcileParams(
    initial_fanout=4, fanout=16, first_answer_fanout=64, idlist_threshold=32, prefix_bytes=0
)


def window_exchange() -> dict[str, Any]:
    """The same two sets reconciled with the default parameters: the initiator's 40 ids
    are few enough to be listed by window at once."""
    ids = reconcile_ids()
    missing = ids[7]
    theirs = sorted([*(i for i in ids if i != missing), RECONCILE_EXTRA])
    ours_index, theirs_index = SortedListIndex(ids), SortedListIndex(theirs)
    initiator = Reconciler(ours_index, initiator=True)
    responder = Reconciler(theirs_index, initiator=False)
    first = initiator.initial()
    answer = responder.receive(first)
    assert answer.reply is not None and answer.asked == 1 and not answer.have
    assert pushed(theirs_index, answer.need) == [RECONCILE_EXTRA]
    last = initiator.receive(answer.reply)
    assert last.reply is not None and last.done and last.push == [missing]
    assert not last.have and not last.need
    assert responder.receive(last.reply).done
    messages = [("initiator", first), ("responder", answer.reply), ("initiator", last.reply)]
    return {
        "messages": [
            {"from": side, "hex": h(data), "ranges": ranges_entry(data)} for side, data in messages
        ],
        "responder_pushes": [h(RECONCILE_EXTRA)],
        "initiator_pushes": [h(missing)],
    }


def reconcile_vectors() -> dict[str, Any]:
    ids = reconcile_ids()
    fingerprints = [
        {"name": "the empty set", "held": "none", **fingerprint_entry([], ZERO, INFINITY)},
        {"name": "all 40 ids", "held": "ids", **fingerprint_entry(ids, ZERO, INFINITY)},
        {"name": "ids below bound 80", "held": "ids", **fingerprint_entry(ids, ZERO, b"\x80")},
        {"name": "ids in [40, c0)", "held": "ids", **fingerprint_entry(ids, b"\x40", b"\xc0")},
    ]
    assert fingerprints[0]["fingerprint"] == h(EMPTY_FINGERPRINT)
    missing = ids[7]
    theirs = sorted([*(i for i in ids if i != missing), RECONCILE_EXTRA])
    ours_index, theirs_index = SortedListIndex(ids), SortedListIndex(theirs)
    initiator = Reconciler(ours_index, initiator=True, params=FULL_ID_PARAMS)
    responder = Reconciler(theirs_index, initiator=False, params=FULL_ID_PARAMS)
    first = initiator.initial()
    answer = responder.receive(first)
    assert answer.reply is not None and not answer.have and not answer.need
    last = initiator.receive(answer.reply)
    assert last.reply is not None and last.done
    assert responder.receive(last.reply).done
    assert last.have == [RECONCILE_EXTRA]
    assert pushed(ours_index, last.need) == [missing]
    messages = [("initiator", first), ("responder", answer.reply), ("initiator", last.reply)]
    empty_first = Reconciler(SortedListIndex(), initiator=True).initial()
    to_empty = Reconciler(SortedListIndex(ids), initiator=False).receive(empty_first)
    assert to_empty.reply is not None and to_empty.done and not to_empty.have
    assert pushed(SortedListIndex(ids), to_empty.need) == ids
    return {
        "description": "Range fingerprints (SPEC.md §13.3.2) of a fixed set of 40 ids, and "
        "two reconciliations (§13.3.4). The initiator holds 'ids'; the responder holds them "
        "without ids[7] ('missing') and with 'extra'. 'messages' lists full ids "
        "(initial_fanout 4, fanout 16, first_answer_fanout 64, idlist_threshold 32, "
        "prefix_bytes 0; split positions floor(k * n / fanout)): after three messages (the "
        "last is DONE) the initiator wants 'extra' and pushes 'missing'. 'windows' uses the "
        "reference defaults (initial_fanout 4, fanout 8, first_answer_fanout 128, "
        "idlist_threshold 64, prefix_bytes 3): the initiator lists its 40 ids by window "
        "(PREFIXLIST, §13.3.5), the responder pushes 'extra' and answers PREFIXWANT naming the "
        "window of 'missing', and the initiator, its check passing, pushes 'missing' and "
        "sends DONE. Each fingerprint is over the ids of 'held': 'ids' (the 40 ids) or 'none' "
        "(the empty set). 'empty_store_first_message' is the first message of an initiator "
        "that holds no id (§13.3.4): one IDLIST range up to infinity with no ids; a peer "
        "holding the 40 ids answers DONE and pushes all of them. Bounds are hex, null is "
        "infinity; 'sum_le' is the id sum mod 2^256, little-endian.",
        "person": "fieldsync/fp/v1",
        "ids": [h(i) for i in ids],
        "fingerprints": fingerprints,
        "missing": h(missing),
        "extra": h(RECONCILE_EXTRA),
        "messages": [
            {"from": side, "hex": h(data), "ranges": ranges_entry(data)} for side, data in messages
        ],
        "initiator_wants": [h(i) for i in last.have],
        "initiator_pushes": [h(missing)],
        "empty_store_first_message": {"hex": h(empty_first), "ranges": ranges_entry(empty_first)},
        "windows": window_exchange(),
        "coded": coded_exchange(),
    }


def coded_exchange() -> dict[str, Any]:
    """The coded stage (SPEC.md §13.3.6) between the same two sets."""
    ids = reconcile_ids()
    missing = ids[7]
    ours = ids
    theirs = sorted([*(i for i in ids if i != missing), RECONCILE_EXTRA])
    params = ReconcileParams(initial_fanout=4, fanout=8, idlist_threshold=8)
    ours_coded, theirs_coded = CodedSymbols(ours), CodedSymbols(theirs)
    initiator = Reconciler(SortedListIndex(ours), initiator=True, params=params, coded=ours_coded)
    responder = Reconciler(
        SortedListIndex(theirs), initiator=False, params=params, coded=theirs_coded
    )
    first = initiator.initial()
    answer = responder.receive(first)
    assert answer.reply is not None
    last = initiator.receive(answer.reply)
    assert last.done and last.have == [RECONCILE_EXTRA] and last.push == [missing]
    assert last.reply is not None and responder.receive(last.reply).done
    mapping = []
    for item_id in ids[:4]:
        checksum, seed = id_hash(item_id)
        mapping.append(
            {
                "id": h(item_id),
                "checksum": checksum,
                "seed": seed,
                "indices_below_1024": list(indices(seed, MAX_SYMBOLS)),
            }
        )
    return {
        "description": "Coded symbols (§13.3.6). 'mapping': for the first ids, the checksum "
        "and seed (BLAKE2b-128(id; person 'fieldsync/riblt'): first 8 bytes LE, last 8 bytes "
        "LE with the lowest bit set) and every coded-symbol index below 1024. "
        "'symbols_of_ids': the first 8 coded symbols of the 40 ids (id XOR, LE64 checksum "
        "XOR, LE16 count). 'messages': initial_fanout 4, fanout 8, idlist_threshold 8: the "
        "initiator (the 40 ids) offers n = 40 with 4 fingerprints; the responder (the 40 "
        "ids without 'missing', with 'extra') answers CODED with first_symbols(0) = 24 "
        "symbols (after its whole-set fingerprint and first index 0); the initiator peels "
        "'extra' (it wants it) and 'missing' (it pushes it) and sends DONE.",
        "person": "fieldsync/riblt",
        "mapping": mapping,
        "symbols_of_ids": CodedSymbols(ids).encode(0, 8).hex(),
        "messages": [
            {
                "from": side,
                "hex": h(data),
                "n": parse_set_size(codec.decode(data)),
                "ranges": ranges_entry(data),
            }
            for side, data in (
                ("initiator", first),
                ("responder", answer.reply),
                ("initiator", last.reply),
            )
        ],
        "initiator_wants": [h(RECONCILE_EXTRA)],
        "initiator_pushes": [h(missing)],
    }


# --- driver ----------------------------------------------------------------------------------


# --- form (SPEC.md §18) ------------------------------------------------------------------------

#: A small network form: two languages, two categories and one field of each extra type.
EXAMPLE_FORM: dict[str, Any] = {
    "schema": "fieldsync.form/1",
    "version": 3,
    "languages": ["en", "fr"],
    "categories": [
        {
            "key": "arbitrary-detention",
            "labels": {"en": "Arbitrary detention", "fr": "Détention arbitraire"},
        },
        {"key": "excessive-force", "labels": {"en": "Excessive force", "fr": "Force excessive"}},
    ],
    "fields": [
        {
            "key": "narrative",
            "type": "narrative",
            "required": True,
            "labels": {"en": "What happened", "fr": "Ce qui s'est passé"},
        },
        {
            "key": "categories",
            "type": "categories",
            "required": True,
            "labels": {"en": "Categories", "fr": "Catégories"},
        },
        {
            "key": "occurred",
            "type": "date",
            "required": True,
            "labels": {"en": "When", "fr": "Quand"},
        },
        {
            "key": "location",
            "type": "location",
            "required": False,
            "labels": {"en": "Coordinates", "fr": "Coordonnées"},
        },
        {
            "key": "detained",
            "type": "number",
            "required": False,
            "min": 0,
            "max": 10000,
            "labels": {"en": "People detained", "fr": "Personnes détenues"},
        },
        {
            "key": "released-on",
            "type": "date",
            "required": False,
            "labels": {"en": "Released on", "fr": "Libérés le"},
        },
        {
            "key": "unit",
            "type": "text",
            "required": False,
            "max_length": 100,
            "labels": {"en": "Unit involved", "fr": "Unité impliquée"},
        },
        {
            "key": "witnessed",
            "type": "choice",
            "required": True,
            "default": "no",
            "labels": {"en": "Did you see it yourself?", "fr": "L'avez-vous vu vous-même ?"},
            "options": [
                {"key": "yes", "labels": {"en": "Yes", "fr": "Oui"}},
                {"key": "no", "labels": {"en": "No", "fr": "Non"}},
            ],
        },
    ],
}

#: Answers as a person types them, and what Form.validate makes of them (SPEC.md §18.3).
FORM_ANSWERS: list[dict[str, Any]] = [
    {
        "name": "valid, coordinates 0 0, approximate",
        "answers": {
            "narrative": "Trois vendeurs arrêtés.\nEmmenés au poste.",
            "categories": "arbitrary-detention, excessive-force",
            "occurred": "2025-03-01 09:30",
            "approximate": "yes",
            "lat": "0",
            "lon": "0",
            "detained": "3",
            "released-on": "2025-03-02",
            "language": "fr",
        },
    },
    {
        "name": "every field wrong",
        "answers": {
            "narrative": "   ",
            "categories": "arbitrary-detention, torture",
            "occurred": "2025-02-30",
            "lat": "12.5",
            "detained": "-1",
            "witnessed": "maybe",
        },
    },
]


def form_vectors() -> dict[str, Any]:
    m = manifest()
    example = form.parse_form(EXAMPLE_FORM)
    item = form.sign_form(example, m, b(ROOT_SEED))
    assert form.open_form(item, m) == example
    other_net = dataclasses.replace(m, network_id=bytes(16))
    body = codec.decode(item)["b"]
    refused = {
        "signed by the receipt key, not the root": codec.encode(
            {
                "b": body,
                "s": crypto.sign(crypto.Domain.FORM, b(RECEIPT_SEED), body),
                "t": "f",
                "v": 1,
            }
        ),
        "signed under the manifest domain": codec.encode(
            {
                "b": body,
                "s": crypto.sign(crypto.Domain.MANIFEST, b(ROOT_SEED), body),
                "t": "f",
                "v": 1,
            }
        ),
        "one byte of the form changed": item.replace(b"Unit involved", b"Unit involves"),
        "another network": form.sign_form(example, other_net, b(ROOT_SEED)),
    }
    cases = []
    for name, data in refused.items():
        try:
            form.open_form(data, m)
        except RemoteProtocolError as exc:
            cases.append({"name": name, "item_hex": h(data), "error": str(exc)})
        else:
            raise AssertionError(f"form vector {name!r} was accepted")
    answers = []
    for case in FORM_ANSWERS:
        report, problems = example.validate(case["answers"])
        answers.append(
            {**case, "report": report if not problems else None, "problems": dict(problems)}
        )
    default = form.default_form()
    return {
        "description": "The network form (SPEC.md §18): the built-in default form, an example "
        "form signed by the root of membership.json as a form item, items that verification "
        "refuses, and the report fields Form.validate makes of typed answers to the example.",
        "default": default.to_map(),
        "default_hex": h(default.encode()),
        "example": EXAMPLE_FORM,
        "example_hex": h(example.encode()),
        "item_hex": h(item),
        "item_id": h(crypto.content_id(item)),
        **signed_document(item, crypto.Domain.FORM),
        "refused": cases,
        "answers": answers,
    }


def build() -> dict[str, Any]:
    """File name -> content, for every vector file."""
    return {
        "codec.json": codec_vectors(),
        "keys.json": key_vectors(),
        "membership.json": membership_vectors(),
        "enrolment.json": enrolment_vectors(),
        "envelope.json": envelope_vectors(),
        "receipt.json": receipt_vectors(),
        "revocation.json": revocation_vectors(),
        "bundle.json": bundle_vectors(),
        "attachment.json": attachment_vectors(),
        "form.json": form_vectors(),
        "handshake.json": handshake_vectors(),
        "frames.json": frame_vectors(),
        "session.json": session_vectors(),
        "reconcile.json": reconcile_vectors(),
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
