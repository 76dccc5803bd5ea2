"""HQ's pull from the hub: sync HQ's own node with the hub, ingest, push the receipts back.

Used by ``fieldsync hq ingest --hub``. HQ syncs through its own node home (HQDIR/node), a
``Runtime`` like any relay's; the HQ database and keys stay in ``fieldsync.hq``.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

from fieldsync.errors import FieldsyncError
from fieldsync.hq import HQ, HqSecrets, IngestSummary
from fieldsync.peer import PeerLimits, SyncOutcome
from fieldsync.runtime import Runtime
from fieldsync.store import Store, now_seconds
from fieldsync.transport import TransportError
from fieldsync_protocol.items import check_item

#: HQ's own node takes everything the hub offers: no per-day quota sized for field peers
#: (SPEC.md §14.4). What bounds it instead: the hub holds at most its disk budget, the
#: session's window and queue caps bound memory, and every receipt (accepted, held or
#: dropped) purges what HQ ingested, from the hub and from HQDIR/node.
HQ_PULL_LIMITS = PeerLimits(quota_items_per_day=2**62, quota_bytes_per_day=2**62)
#: Envelopes read from HQDIR/node per ingest step: at most 32 x 256 KiB in memory at once.
HUB_INGEST_PAGE = 32


@dataclass
class HubIngest:
    pulled: SyncOutcome
    pushed: SyncOutcome | None
    receipts_new: int

    @property
    def pull_complete(self) -> bool:
        return self.pulled.complete


async def ingest_from_hub(
    headquarters: HQ, hub_url: str, passphrase: str, summary: IngestSummary | None = None
) -> tuple[IngestSummary, HubIngest]:
    """Pull new items from the hub, ingest them, and push the new receipts back.

    HQ syncs through its own node home (HQDIR/node), enrolled like any relay; the
    hub never sees an HQ secret. Whatever the pull committed is ingested even when the pull
    was cut short (the caller reports "pull incomplete"). Ingest commits before receipts
    are issued, and receipts are stored in HQ's node store before they are pushed, so a
    crash at any point loses nothing and re-running repeats nothing. Argon2id and SQLite
    run on threads, never on the event loop; the HQ keys are unlocked once.
    """
    keys = await asyncio.to_thread(headquarters.unlock, passphrase)
    home = await asyncio.to_thread(headquarters.hub_node, keys)
    summary = summary or IngestSummary()
    runtime = await Runtime.open(home, limits=HQ_PULL_LIMITS)
    try:
        pulled = await _session(runtime, hub_url)
        await _ingest_node_store(runtime, headquarters, keys, summary)
        await asyncio.to_thread(headquarters.finish_ingest, summary)
        made = await asyncio.to_thread(headquarters.sign_pending_receipts, keys)
        await _store_receipts(runtime, headquarters)
        pushed = await _session(runtime, hub_url)  # receipts go back even after a cut pull
        return summary, HubIngest(pulled, pushed, made)
    finally:
        await runtime.close()


async def _session(runtime: Runtime, hub_url: str) -> SyncOutcome:
    """One session with the hub; a failure is an incomplete outcome, not an exception."""
    try:
        return await runtime.sync_with(hub_url)
    except (TransportError, FieldsyncError, OSError) as exc:
        return SyncOutcome(complete=False, error=str(exc) or type(exc).__name__)


async def _ingest_node_store(
    runtime: Runtime, headquarters: HQ, keys: HqSecrets, summary: IngestSummary
) -> None:
    """Ingest every item in HQDIR/node a page at a time (never the whole store in memory)."""
    after = 0
    while True:
        page = await runtime.worker.call(functools.partial(_store_page, after=after), bulk=True)
        if not page:
            return
        after = page[-1][0]
        items = [data for _, data in page]
        await asyncio.to_thread(headquarters.ingest_items, iter(items), keys, summary)


def _store_page(store: Store, after: int) -> list[tuple[int, bytes]]:
    return store.items_after(after, HUB_INGEST_PAGE)


async def _store_receipts(runtime: Runtime, headquarters: HQ) -> None:
    """Put HQ's receipts, its newest revocation list and key deliveries (SPEC.md §17) and
    the network's form (§18.4) in HQDIR/node (purging what the receipts name there) for the
    push."""
    manifest = runtime.context.manifest
    updates = await asyncio.to_thread(headquarters.published_updates)
    after = 0
    while True:
        page = await asyncio.to_thread(headquarters.receipt_items, after)
        if not page and not updates:
            await runtime.refresh_revocations()  # HQ's own node follows the list too
            await runtime.refresh_keys()
            return
        after = page[-1][0] if page else after
        items = [item for _, item in page] + updates
        updates = []

        def store_receipts(store: Store, items: list[bytes] = items) -> None:
            checked = [check_item(item, manifest) for item in items]
            counts = store.add_batch(checked, now_seconds())
            runtime.context.source.note_changes(counts.new_ids, counts.purged_ids)
            runtime.adopt_deliveries(store, checked)  # HQ's own node is a member too

        await runtime.worker.call(store_receipts, bulk=True)
