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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import nacl.bindings as sodium
import nacl.exceptions

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
