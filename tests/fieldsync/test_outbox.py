"""Outbox entries (fieldsync.outbox): sealed to the author's own key, padded, and opened only
by that key; anything else (another author's, a flipped byte, foreign content) is skipped."""

from __future__ import annotations

import secrets
import uuid

import nacl.bindings as sodium

from fieldsync import media
from fieldsync.outbox import (
    PAD,
    Entry,
    OwnAttachment,
    open_all,
    open_entry,
    outbox_keys,
    outbox_public,
    seal_entry,
)
from fieldsync_protocol import crypto


def _entry(sequence: int, chunks: int = 0) -> Entry:
    attachment = OwnAttachment(
        1234, b"sealed name", tuple(secrets.token_bytes(32) for _ in range(chunks))
    )
    return Entry(
        str(uuid.uuid4()),
        sequence,
        1_700_000_000 + sequence,
        secrets.token_bytes(32),
        secrets.token_bytes(32),
        (attachment,) if chunks else (),
    )


def test_an_entry_opens_with_its_authors_key_only() -> None:
    seed, other = secrets.token_bytes(32), secrets.token_bytes(32)
    keys = outbox_keys(seed)
    assert keys.public == outbox_public(crypto.signing_public_key(seed))  # no seed needed
    entries = [_entry(2, chunks=3), _entry(1)]
    rows = [seal_entry(e, keys.public) for e in entries]
    rows.append(seal_entry(_entry(1), outbox_keys(other).public))
    assert open_all(rows, keys) == sorted(entries, key=lambda e: e.sequence)
    assert len(open_all(rows, outbox_keys(other))) == 1
    chain_only = Entry(None, 7, 0, None, secrets.token_bytes(32))
    assert open_entry(seal_entry(chain_only, keys.public), keys) == chain_only


def test_sizes_are_padded_and_damage_or_foreign_content_opens_nothing() -> None:
    keys = outbox_keys(secrets.token_bytes(32))
    sizes = {len(seal_entry(_entry(n), keys.public)) for n in (1, 10**6)}
    assert len(sizes) == 1 and (sizes.pop() - 48) % PAD == 0  # 48: crypto_box_seal overhead
    row = bytearray(seal_entry(_entry(1), keys.public))
    row[60] ^= 1
    assert open_entry(bytes(row), keys) is None
    assert open_entry(b"short", keys) is None
    foreign = sodium.crypto_box_seal(b"\x00\x00\x00\x03abc", keys.public)
    assert open_entry(foreign, keys) is None  # sealed to us, but not an entry
    too_long = sodium.crypto_box_seal(b"\xff\xff\xff\xff", keys.public)
    assert open_entry(too_long, keys) is None


def test_an_attachment_name_opens_with_the_outbox_keys() -> None:
    seed = secrets.token_bytes(32)
    sealed = media.seal_name("witness.ogg", crypto.signing_public_key(seed))
    assert media.open_name(sealed, outbox_keys(seed)) == "witness.ogg"
    assert media.open_name(sealed, outbox_keys(secrets.token_bytes(32))).startswith("(sealed")
