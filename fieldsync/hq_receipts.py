"""HQ's signed receipts (SPEC.md §9): one per status per 4,096 pending envelopes, and the
receipts bundle a courier carries back (created 0600: it names what HQ holds).

The functions take the :class:`fieldsync.hq.HQ` they work for; ``fieldsync.hq`` re-exports
the public names.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import sqlite_utils

from fieldsync import hq_media, hq_revocation, keystore
from fieldsync.hq_schema import insert
from fieldsync.node import utc_text
from fieldsync.sqlite_tx import immediate_transaction
from fieldsync.store import now_seconds
from fieldsync_protocol.bundle import BundleWriter
from fieldsync_protocol.receipt import MAX_TAGS, Receipt, ReceiptStatus, sign_receipt

if TYPE_CHECKING:
    from fieldsync.hq import HQ, HqSecrets

#: Envelope statuses by the receipt status HQ gives them (SPEC.md §9).
RECEIPTED_AS = {
    ReceiptStatus.ACCEPTED: ("accepted", "duplicate", "fork"),
    ReceiptStatus.HELD: ("quarantined",),
    ReceiptStatus.DROPPED: ("junk",),
}


def sign_pending_receipts(hq: HQ, keys: HqSecrets) -> int:
    """One receipt per status per 4,096 pending envelopes (SPEC.md §9), page by page."""
    manifest = hq.manifest()
    db = hq.database()
    made = 0
    for status, envelope_statuses in RECEIPTED_AS.items():
        marks = ", ".join("?" for _ in envelope_statuses)
        while True:
            pending = (
                "SELECT envelope_id, tag FROM envelopes WHERE receipt_serial IS NULL"  # noqa: S608 - marks only
                f" AND status IN ({marks}) ORDER BY rowid LIMIT ?"
            )
            batch = db.execute(pending, [*envelope_statuses, MAX_TAGS]).fetchall()
            if not batch:
                break
            with immediate_transaction(db.conn):
                serial = _sign_receipt(db, manifest.network_id, keys, status, batch)
                db.conn.executemany(
                    "UPDATE envelopes SET receipt_serial = ? WHERE envelope_id = ?",
                    [(serial, envelope_id) for envelope_id, _ in batch],
                )
            made += 1
    # Chunks HQ holds are receipted too ("accepted": held durably), so every holder
    # deletes them (SPEC.md §16.5).
    while chunks := hq_media.unreceipted_chunks(db, MAX_TAGS):
        with immediate_transaction(db.conn):
            serial = _sign_receipt(db, manifest.network_id, keys, ReceiptStatus.ACCEPTED, chunks)
            hq_media.mark_receipted(db, serial, [chunk_id for chunk_id, _ in chunks])
        made += 1
    return made


def _sign_receipt(
    db: sqlite_utils.Database,
    network_id: bytes,
    keys: HqSecrets,
    status: ReceiptStatus,
    batch: Sequence[tuple[object, bytes]],
) -> int:
    """Sign and store one receipt naming the tags of ``batch``; return its serial."""
    serial = int(db.execute("SELECT coalesce(max(serial), 0) + 1 FROM receipts").fetchone()[0])
    receipt = Receipt(network_id, serial, now_seconds(), tuple(t for _, t in batch), status)
    insert(
        db,
        "receipts",
        {
            "serial": serial,
            "created_at": utc_text(now_seconds()),
            "count": len(batch),
            "status": status.value,
            "item": sign_receipt(receipt, keys.receipt_seed),
        },
    )
    return serial


def write_receipts_bundle(hq: HQ, out: Path, passphrase: str) -> dict[str, int]:
    """Issue pending receipts and write all receipts plus the manifest to a bundle (0600)."""
    keystore.check_output(out, "receipts bundle")
    keys = hq.unlock(passphrase)  # once: Argon2id takes seconds on a small device
    new = sign_pending_receipts(hq, keys)
    manifest = hq.manifest()
    network_key = hq_revocation.network_key_in_use(
        hq.directory, keys.root_seed, keys.network_key
    ).key  # the old key until a rotation's grace has passed (SPEC.md §17.5)
    writer = BundleWriter(network_key, manifest.network_id, secrets.token_bytes(16))
    tmp = out.with_name(f".{out.name}.partial")
    envelopes = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a stale .partial of another mode is reused by O_CREAT
    with os.fdopen(fd, "wb") as handle:
        handle.write(writer.add(hq.manifest_item()))
        updates = hq_revocation.published_items(hq.database())  # SPEC.md §17
        for item in updates:
            handle.write(writer.add(item))
        for row in hq.database().execute("SELECT item, count FROM receipts ORDER BY serial"):
            handle.write(writer.add(row[0]))
            envelopes += row[1]
        handle.write(writer.finish())
    tmp.replace(out)
    return {
        "receipts_new": new,
        "receipts_total": writer.items_written - 1 - len(updates),
        "envelopes_receipted": envelopes,
    }


def receipt_items(hq: HQ, after: int = 0, limit: int = 16) -> list[tuple[int, bytes]]:
    """Signed receipts with serial above ``after``, a page at a time (bounded memory)."""
    return [
        (int(serial), item)
        for serial, item in hq.database().execute(
            "SELECT serial, item FROM receipts WHERE serial > ? ORDER BY serial LIMIT ?",
            [after, limit],
        )
    ]
