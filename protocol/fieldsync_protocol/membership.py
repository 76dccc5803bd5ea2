"""Who belongs to a network: manifest, node certificates, enrolment request and bundle.

SPEC.md §4–§6. Each signed document is the canonical map ``{"b": body, "s": signature}``
where ``body`` is itself canonical msgpack; verifiers check the signature over the exact
``body`` bytes they received and only then decode them ("sign bytes, never re-serialize").
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from fieldsync_protocol import codec
from fieldsync_protocol.crypto import (
    SEAL_OVERHEAD,
    Domain,
    box_public_key,
    seal,
    sign,
    signing_public_key,
    unseal,
    verify,
)
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError

VERSION = 1
NETWORK_ID_SIZE = 16
KEY_SIZE = 32
MAX_DOCUMENT = 16 * 1024
MAX_HQ_KEYS = 16
MAX_NAME = 64
MAX_KEY_ID = 2**32 - 1

REQUEST_PREFIX = "fieldsync-enrolment-request:"
ENROLMENT_PREFIX = "fieldsync-enrolment:"


def _pack_signed(domain: Domain, signing_seed: bytes, body: dict[str, codec.Value]) -> bytes:
    body_bytes = codec.encode(body)
    return codec.encode({"b": body_bytes, "s": sign(domain, signing_seed, body_bytes)})


def _unpack_signed(data: bytes, what: str, extra: set[str] | None = None) -> dict[str, codec.Value]:
    outer = codec.as_map(
        codec.decode(data, max_size=MAX_DOCUMENT, what=what), what, {"b", "s"} | (extra or set())
    )
    codec.get_bytes(outer, "b", what)
    codec.get_bytes(outer, "s", what, 64)
    return outer


def _body(
    outer: dict[str, codec.Value], what: str, keys: set[str], optional: set[str] | None = None
) -> dict[str, codec.Value]:
    body = codec.as_map(
        codec.decode(outer["b"], max_size=MAX_DOCUMENT, what=what), what, keys, optional
    )
    version = codec.get_int(body, "v", what)
    if version != VERSION:
        raise RemoteProtocolError(
            f"{what} has version {version}; this software reads version {VERSION}"
        )
    return body


def is_version(value: codec.Value) -> bool:
    """True for exactly the integer ``VERSION`` (not ``True``, not ``1.0``)."""
    return type(value) is int and value == VERSION


def _need(condition: bool, message: str) -> None:
    """Refuse a document this side would sign but the other side would reject."""
    if not condition:
        raise LocalProtocolError(message)


# --- network manifest ------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """The root-signed description of a network (SPEC.md §4)."""

    network_id: bytes
    name: str
    epoch: int
    root_key: bytes
    hq_keys: dict[int, bytes]  # key id -> X25519 public key
    receipt_key: bytes
    certificate_key: bytes

    @property
    def current_hq_key_id(self) -> int:
        return max(self.hq_keys)

    def to_body(self) -> dict[str, codec.Value]:
        return {
            "cert": self.certificate_key,
            "ep": self.epoch,
            "hq": [{"id": i, "pk": pk} for i, pk in sorted(self.hq_keys.items())],
            "name": self.name,
            "net": self.network_id,
            "rcpt": self.receipt_key,
            "root": self.root_key,
            "v": VERSION,
        }


def sign_manifest(manifest: Manifest, root_seed: bytes) -> bytes:
    """Encode ``manifest`` as an item (``t`` = ``"m"``) signed by the root key."""
    _need(
        signing_public_key(root_seed) == manifest.root_key,
        "the root seed does not match manifest.root_key",
    )
    _need(
        1 <= len(manifest.hq_keys) <= MAX_HQ_KEYS,
        f"a manifest names 1..{MAX_HQ_KEYS} HQ encryption keys",
    )
    _need(
        all(0 <= i <= MAX_KEY_ID and len(pk) == KEY_SIZE for i, pk in manifest.hq_keys.items()),
        f"HQ key ids are 0..{MAX_KEY_ID} and keys {KEY_SIZE} bytes",
    )
    _need(len(manifest.network_id) == NETWORK_ID_SIZE, "network id must be 16 bytes")
    _need(len(manifest.name) <= MAX_NAME, f"network name is longer than {MAX_NAME} characters")
    _need(0 <= manifest.epoch <= MAX_KEY_ID, f"epoch must be 0..{MAX_KEY_ID}")
    _need(
        len(manifest.receipt_key) == KEY_SIZE and len(manifest.certificate_key) == KEY_SIZE,
        "receipt and certificate keys must be 32 bytes",
    )
    body_bytes = codec.encode(manifest.to_body())
    signature = sign(Domain.MANIFEST, root_seed, body_bytes)
    return codec.encode({"b": body_bytes, "s": signature, "t": "m", "v": VERSION})


def open_manifest(data: bytes, trusted_root: bytes | None = None) -> Manifest:
    """Verify and decode a manifest item.

    With ``trusted_root`` (a node that is already a member) the manifest must be signed by
    that root; without it (first enrolment, in person) it must be signed by the root it
    names, and the caller shows that root's fingerprint to be compared.
    """
    what = "manifest"
    outer = _unpack_signed(data, what, {"t", "v"})
    if outer["t"] != "m" or not is_version(outer["v"]):
        raise RemoteProtocolError("manifest item has the wrong type or version")
    body = _body(outer, what, {"cert", "ep", "hq", "name", "net", "rcpt", "root", "v"})
    root = codec.get_bytes(body, "root", what, KEY_SIZE)
    if trusted_root is not None and root != trusted_root:
        raise RemoteProtocolError("manifest is signed by a different root key than this network's")
    verify(Domain.MANIFEST, root, outer["b"], outer["s"], what)
    hq_list = body["hq"]
    if not isinstance(hq_list, list) or not 1 <= len(hq_list) <= MAX_HQ_KEYS:
        raise RemoteProtocolError(f"manifest.hq must list 1..{MAX_HQ_KEYS} keys")
    hq_keys: dict[int, bytes] = {}
    for entry in hq_list:
        entry_map = codec.as_map(entry, "manifest.hq[]", {"id", "pk"})
        key_id = codec.get_int(entry_map, "id", "manifest.hq[]", 0, MAX_KEY_ID)
        if hq_keys and key_id <= max(hq_keys):
            raise RemoteProtocolError("manifest.hq must list key ids in ascending order, once each")
        hq_keys[key_id] = codec.get_bytes(entry_map, "pk", "manifest.hq[]", KEY_SIZE)
    return Manifest(
        network_id=codec.get_bytes(body, "net", what, NETWORK_ID_SIZE),
        name=codec.get_str(body, "name", what, MAX_NAME),
        epoch=codec.get_int(body, "ep", what, 0, MAX_KEY_ID),
        root_key=root,
        hq_keys=hq_keys,
        receipt_key=codec.get_bytes(body, "rcpt", what, KEY_SIZE),
        certificate_key=codec.get_bytes(body, "cert", what, KEY_SIZE),
    )


# --- node certificate ------------------------------------------------------------------


@dataclass(frozen=True)
class NodeCertificate:
    """HQ's statement that a Noise static key belongs to a member node until ``expires``
    (SPEC.md §5). Nothing else: a peer learns no role, serial or enrolment time from it."""

    network_id: bytes
    node_key: bytes
    #: The last HQ time (seconds since 1970) at which it is valid: judged against the time
    #: of HQ's revocation list a member follows (SPEC.md §17.4), never a device clock.
    expires: int

    def expired(self, hq_time: int) -> bool:
        """True once HQ's signed time is past the expiry."""
        return self.expires < hq_time


def sign_certificate(cert: NodeCertificate, certificate_seed: bytes) -> bytes:
    """Encode and sign ``cert`` with the manifest's certificate-signing key."""
    _need(
        len(cert.network_id) == NETWORK_ID_SIZE and len(cert.node_key) == KEY_SIZE,
        "network id must be 16 bytes and node key 32 bytes",
    )
    _need(0 <= cert.expires < 2**63, "expires must be 0..2**63-1")
    body = {"exp": cert.expires, "net": cert.network_id, "node": cert.node_key, "v": VERSION}
    return _pack_signed(Domain.CERTIFICATE, certificate_seed, body)


def open_certificate(data: bytes, manifest: Manifest) -> NodeCertificate:
    """Verify a certificate against the manifest's certificate key and network."""
    what = "node certificate"
    outer = _unpack_signed(data, what)
    verify(Domain.CERTIFICATE, manifest.certificate_key, outer["b"], outer["s"], what)
    body = _body(outer, what, {"exp", "net", "node", "v"})
    network_id = codec.get_bytes(body, "net", what, NETWORK_ID_SIZE)
    if network_id != manifest.network_id:
        raise RemoteProtocolError("node certificate belongs to another network")
    return NodeCertificate(
        network_id=network_id,
        node_key=codec.get_bytes(body, "node", what, KEY_SIZE),
        expires=codec.get_int(body, "exp", what),
    )


# --- enrolment -------------------------------------------------------------------------


@dataclass(frozen=True)
class EnrolmentRequest:
    """What a new node hands HQ in person (SPEC.md §6.1)."""

    node_key: bytes
    author_key: bytes | None
    author_name: str | None
    created: int


#: Largest enrolment plaintext: a manifest and a certificate of MAX_DOCUMENT each, and a key.
MAX_ENROLMENT = 2 * MAX_DOCUMENT + 64
#: Longest text payload accepted (base64url of the largest sealed enrolment).
MAX_TEXT = (MAX_ENROLMENT + SEAL_OVERHEAD + 2) // 3 * 4
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def _to_text(prefix: str, data: bytes) -> str:
    return prefix + base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _from_text(prefix: str, text: str, what: str) -> bytes:
    """Strict inverse of ``_to_text``; whitespace (line breaks from a QR or an e-mail) is free."""
    text = "".join(text.split())
    if not text.startswith(prefix):
        raise RemoteProtocolError(f"this is not a {what} (it should start with {prefix!r})")
    payload = text[len(prefix) :]
    if len(payload) > MAX_TEXT:
        raise RemoteProtocolError(f"{what} text is too long ({len(payload)} characters)")
    damaged = RemoteProtocolError(f"{what} text is damaged (not base64url): copy it again")
    if len(payload) % 4 == 1 or not _BASE64URL.fullmatch(payload):
        raise damaged
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    if _to_text(prefix, data) != text:  # stray bits in the last character
        raise damaged
    return data


def encode_request(request: EnrolmentRequest, author_seed: bytes | None) -> str:
    """Text form of a request; signed by the author key to prove possession of it."""
    if (request.author_key is None) != (author_seed is None):
        raise LocalProtocolError("an author key needs its seed to sign the request")
    _need(len(request.node_key) == KEY_SIZE, "node key must be 32 bytes")
    _need(0 <= request.created < 2**63, "created must be 0..2**63-1")
    body: dict[str, codec.Value] = {
        "created": request.created,
        "node": request.node_key,
        "v": VERSION,
    }
    if author_seed is None:
        _need(request.author_name is None, "an author name needs an author key")
        return _to_text(REQUEST_PREFIX, codec.encode({"b": codec.encode(body)}))
    _need(
        signing_public_key(author_seed) == request.author_key,
        "author seed does not match the author key",
    )
    name = request.author_name or ""
    _need(len(name) <= MAX_NAME, f"author name is longer than {MAX_NAME} characters")
    body["author"] = request.author_key
    body["name"] = name
    return _to_text(REQUEST_PREFIX, _pack_signed(Domain.ENROLMENT_REQUEST, author_seed, body))


def decode_request(text: str) -> EnrolmentRequest:
    """Parse a request; when it names an author key, it must be signed by that key."""
    what = "enrolment request"
    data = _from_text(REQUEST_PREFIX, text, what)
    raw = codec.as_map(codec.decode(data, max_size=MAX_DOCUMENT, what=what), what, {"b"}, {"s"})
    codec.get_bytes(raw, "b", what)
    body = _body(raw, what, {"created", "node", "v"}, {"author", "name"})
    author_key: bytes | None = None
    author_name: str | None = None
    if "author" in body:
        author_key = codec.get_bytes(body, "author", what, KEY_SIZE)
        if "name" not in body:
            raise RemoteProtocolError("enrolment request names an author key but no name")
        author_name = codec.get_str(body, "name", what, MAX_NAME)
        if "s" not in raw:
            raise RemoteProtocolError(
                "enrolment request names an author key but is not signed by it"
            )
        signature = codec.get_bytes(raw, "s", what, 64)
        verify(Domain.ENROLMENT_REQUEST, author_key, raw["b"], signature, what)
    elif "s" in raw or "name" in body:
        raise RemoteProtocolError("enrolment request is signed or names an author but has no key")
    return EnrolmentRequest(
        node_key=codec.get_bytes(body, "node", what, KEY_SIZE),
        author_key=author_key,
        author_name=author_name,
        created=codec.get_int(body, "created", what),
    )


@dataclass(frozen=True)
class Enrolment:
    """What HQ hands back, sealed to the node key (SPEC.md §6.2)."""

    manifest_item: bytes
    network_key: bytes
    certificate: bytes


def encode_enrolment(enrolment: Enrolment, node_key: bytes, ephemeral_secret: bytes) -> str:
    """Seal the enrolment to the requesting node's key and render it as text."""
    _need(len(enrolment.network_key) == KEY_SIZE, "network key must be 32 bytes")
    _need(
        len(enrolment.manifest_item) <= MAX_DOCUMENT and len(enrolment.certificate) <= MAX_DOCUMENT,
        f"manifest and certificate must each fit in {MAX_DOCUMENT} bytes",
    )
    inner = codec.encode(
        {
            "cert": enrolment.certificate,
            "knet": enrolment.network_key,
            "man": enrolment.manifest_item,
            "v": VERSION,
        }
    )
    return _to_text(ENROLMENT_PREFIX, seal(inner, node_key, ephemeral_secret))


def decode_enrolment(text: str, node_secret: bytes) -> tuple[Enrolment, Manifest, NodeCertificate]:
    """Open an enrolment addressed to this node and check it is internally consistent.

    The manifest is verified against the root it names: the caller MUST show
    ``fingerprint(KeyKind.ROOT, manifest.root_key)`` to be compared with HQ's in person.
    """
    what = "enrolment"
    sealed = _from_text(ENROLMENT_PREFIX, text, what)
    inner = unseal(sealed, node_secret, "enrolment (made for another node?)")
    body = codec.as_map(
        codec.decode(inner, max_size=MAX_ENROLMENT, what=what),
        what,
        {"cert", "knet", "man", "v"},
    )
    version = codec.get_int(body, "v", what)
    if version != VERSION:
        raise RemoteProtocolError(f"enrolment has version {version}; expected {VERSION}")
    enrolment = Enrolment(
        manifest_item=codec.get_bytes(body, "man", what),
        network_key=codec.get_bytes(body, "knet", what, KEY_SIZE),
        certificate=codec.get_bytes(body, "cert", what),
    )
    manifest = open_manifest(enrolment.manifest_item)
    certificate = open_certificate(enrolment.certificate, manifest)
    if certificate.node_key != box_public_key(node_secret):
        raise RemoteProtocolError("enrolment certificate is for another node key")
    return enrolment, manifest, certificate
