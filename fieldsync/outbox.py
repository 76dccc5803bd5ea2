"""The author's outbox, readable only with the author's passphrase (issue 11 item 3).

Each report an author writes on this node leaves one row in the store's ``sealed_outbox``
table: a libsodium sealed box (``crypto_box_seal``) to the author's own X25519 key (the
Ed25519 author key converted, as for attachment names in ``fieldsync.media``). It holds the
report id, the author's chain position (sequence and header hash, the next report's
``previous``), the creation time, the envelope's delivery tag and, per attachment, its
sealed name, size and chunk delivery tags. A row carries no plaintext: no id, time, tag or
author, and no author column either, so a seized node does not show whose rows are whose
or how many each author wrote; an author finds theirs by trying to open every row (an X25519
operation each: about 50 µs, so hundreds of reports cost milliseconds).

Nothing is appended without the author: entries are written when a report is sealed, which
needs the author's key anyway. Delivery state is never written into an entry: receipts
purge items and leave tombstones by delivery tag, with the receipt's verdict
(``Store._apply_receipt``), for every receipted item alike; opening the outbox joins the
entries' tags with those tombstones. Padding hides an entry's exact size (how many
attachments and chunks) to the nearest ``PAD`` bytes.

Writing a report must not open every row (perf S11: ~35 ms after 500 reports), so each author
also has one **tip** row (``outbox_tips``): their chain position (last sequence and header
hash) in a secret box under a key derived from their outbox key, found by a locator derived
the same way; and one keyed hash of each report id (``outbox_ids``) for the duplicate check.
Without the author's key neither says whose it is; a seized node shows how many authors wrote
on it (one tip each) and, as before, how many reports (README, "Security").
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import nacl.bindings as sodium
import nacl.exceptions

from fieldsync.errors import FieldsyncError
from fieldsync_protocol import codec
from fieldsync_protocol.errors import RemoteProtocolError

#: Entries are padded to a multiple of this many bytes before sealing.
PAD = 512
#: Largest entry opened (16 attachments of at most 6,144 chunk tags in all, and room).
MAX_ENTRY = 512 * 1024
_LENGTH = 4


@dataclass(frozen=True)
class OutboxKeys:
    """The X25519 key pair the author's outbox entries are sealed to; never stored."""

    public: bytes
    secret: bytes = field(repr=False)


def outbox_keys(author_seed: bytes) -> OutboxKeys:
    """The outbox key pair of an author key (its Ed25519 key as X25519)."""
    public, secret = sodium.crypto_sign_seed_keypair(author_seed)
    return OutboxKeys(
        sodium.crypto_sign_ed25519_pk_to_curve25519(public),
        sodium.crypto_sign_ed25519_sk_to_curve25519(secret),
    )


def outbox_public(author_key: bytes) -> bytes:
    """The outbox public key of an Ed25519 author key (what the migration seals to)."""
    return sodium.crypto_sign_ed25519_pk_to_curve25519(author_key)


@dataclass(frozen=True)
class OwnAttachment:
    """One attachment of an own report, as the outbox remembers it."""

    size: int
    #: The original name sealed to the author's key (``media.seal_name``).
    name_sealed: bytes
    chunk_tags: tuple[bytes, ...]


@dataclass(frozen=True)
class Entry:
    """One own report (or, with no ``report_id``, the chain position alone: what a node
    migrated from plaintext rows knew about a report it no longer listed)."""

    report_id: str | None
    sequence: int
    created_at: int
    tag: bytes | None
    #: The report's header hash: the ``previous`` of the author's next report. None for
    #: older reports of a migrated outbox (only the newest one's was kept).
    header_hash: bytes | None
    attachments: tuple[OwnAttachment, ...] = ()


def seal_entry(entry: Entry, public: bytes) -> bytes:
    """``entry`` sealed to an outbox public key, padded."""
    fields: dict[str, codec.Value] = {
        "at": entry.created_at,
        "att": [
            {"n": a.name_sealed, "s": a.size, "t": list(a.chunk_tags)} for a in entry.attachments
        ],
        "seq": entry.sequence,
        "v": 1,
    }
    if entry.report_id is not None:
        fields["id"] = entry.report_id
    if entry.tag is not None:
        fields["tag"] = entry.tag
    if entry.header_hash is not None:
        fields["hh"] = entry.header_hash
    encoded = codec.encode(fields)
    framed = len(encoded).to_bytes(_LENGTH, "big") + encoded
    padded = framed + bytes(-len(framed) % PAD)
    return bytes(sodium.crypto_box_seal(padded, public))


def open_entry(sealed: bytes, keys: OutboxKeys) -> Entry | None:
    """The entry if it was sealed to ``keys``; None for another author's (or damage)."""
    try:
        padded = sodium.crypto_box_seal_open(sealed, keys.public, keys.secret)
    except (nacl.exceptions.CryptoError, RuntimeError):
        return None
    length = int.from_bytes(padded[:_LENGTH], "big")
    try:
        return _decode(padded[_LENGTH : _LENGTH + length])
    except RemoteProtocolError:
        return None  # sealed to this key, yet not an entry we wrote: nothing to show


def _decode(data: bytes) -> Entry:
    what = "outbox entry"
    fields = codec.as_map(
        codec.decode(data, max_size=MAX_ENTRY, what=what),
        what,
        {"at", "att", "seq", "v"},
        {"id", "tag", "hh"},
    )
    attachments = []
    for raw in fields["att"] if isinstance(fields["att"], list) else ():
        one = codec.as_map(raw, what, {"n", "s", "t"})
        tags = one["t"] if isinstance(one["t"], list) else []
        attachments.append(
            OwnAttachment(
                size=codec.get_int(one, "s", what),
                name_sealed=codec.get_bytes(one, "n", what),
                chunk_tags=tuple(t for t in tags if isinstance(t, bytes)),
            )
        )
    return Entry(
        report_id=codec.get_str(fields, "id", what) if "id" in fields else None,
        sequence=codec.get_int(fields, "seq", what),
        created_at=codec.get_int(fields, "at", what),
        tag=codec.get_bytes(fields, "tag", what) if "tag" in fields else None,
        header_hash=codec.get_bytes(fields, "hh", what) if "hh" in fields else None,
        attachments=tuple(attachments),
    )


def open_all(rows: Sequence[bytes], keys: OutboxKeys) -> list[Entry]:
    """The entries among ``rows`` sealed to ``keys``, by sequence."""
    opened = (open_entry(row, keys) for row in rows)
    return sorted((e for e in opened if e is not None), key=lambda e: e.sequence)


@dataclass(frozen=True)
class Tip:
    """An author's chain position: the last sequence number and its header hash (the next
    report's ``previous``)."""

    sequence: int
    header_hash: bytes


_TIP_LOCATOR_PERSON = b"fs-tip-locator"
_TIP_KEY_PERSON = b"fs-tip-key"
_ID_KEY_PERSON = b"fs-outbox-id-key"
_ID_PERSON = b"fs-outbox-id"


def _derive(keys: OutboxKeys, person: bytes) -> bytes:
    return hashlib.blake2b(keys.secret, digest_size=32, person=person).digest()


def tip_locator(keys: OutboxKeys) -> bytes:
    """Where the author's tip row is: derived from the secret key, so a seizer who knows an
    author's public key still cannot tell whether that author wrote here."""
    return _derive(keys, _TIP_LOCATOR_PERSON)[:16]


def report_id_mac(keys: OutboxKeys, report_id: str) -> bytes:
    """The keyed hash of an own report id kept for the duplicate check."""
    key = _derive(keys, _ID_KEY_PERSON)
    return hashlib.blake2b(report_id.encode(), digest_size=16, key=key, person=_ID_PERSON).digest()


def seal_tip(tip: Tip, keys: OutboxKeys) -> bytes:
    """``tip`` in a secret box (a symmetric key: no X25519 operation per report)."""
    encoded = codec.encode({"hh": tip.header_hash, "seq": tip.sequence, "v": 1})
    nonce = secrets.token_bytes(sodium.crypto_secretbox_NONCEBYTES)
    return nonce + bytes(sodium.crypto_secretbox(encoded, nonce, _derive(keys, _TIP_KEY_PERSON)))


def open_tip(sealed: bytes, keys: OutboxKeys) -> Tip:
    """The tip ``seal_tip`` sealed; a damaged one is an error (the chain cannot go on)."""
    size = sodium.crypto_secretbox_NONCEBYTES
    what = "outbox tip"
    try:
        encoded = sodium.crypto_secretbox_open(
            sealed[size:], sealed[:size], _derive(keys, _TIP_KEY_PERSON)
        )
        decoded = codec.decode(encoded, max_size=256, what=what)
        fields = codec.as_map(decoded, what, {"hh", "seq", "v"})
        return Tip(codec.get_int(fields, "seq", what), codec.get_bytes(fields, "hh", what))
    except (nacl.exceptions.CryptoError, RemoteProtocolError) as exc:
        raise FieldsyncError(
            "this author's outbox tip is damaged; restore the node from a backup"
        ) from exc


def chain_tip(entries: Sequence[Entry]) -> Tip:
    """The tip of an author whose entries (all of them) these are."""
    if not entries:
        # An author who has written nothing yet. Imported here: listing the outbox
        # (``report list``) needs no envelope code (issue 13 item 6); writing loads it anyway.
        from fieldsync_protocol.envelope import GENESIS

        return Tip(0, GENESIS)
    last = max(entries, key=lambda e: e.sequence)
    if last.header_hash is None:
        raise FieldsyncError(  # pragma: no cover - every writer and the migration keep it
            "this author's outbox lost its last report's hash; restore the node from a backup"
        )
    return Tip(last.sequence, last.header_hash)
