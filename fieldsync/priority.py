"""What goes first when there is not room or time for everything (SPEC.md §16.5).

On a contact and in a bundle: receipts, manifests, revocation lists, key deliveries and
forms, then report envelopes, then
attachment chunks (each attachment's in order), then items of kinds this version does not
know. Under the disk budget the reverse holds for what is given up first: other people's
media and unknown kinds go before any report envelope (``Store.enforce_budget``).
"""

from __future__ import annotations

from collections.abc import Iterator

from fieldsync.store import Store
from fieldsync_protocol.kinds import ItemKind

#: Kinds in the order they travel; each class is sent in arrival order (chunks in order).
TRANSFER_CLASSES: tuple[tuple[ItemKind, ...], ...] = (
    (
        ItemKind.RECEIPT,
        ItemKind.MANIFEST,
        ItemKind.REVOCATION,
        ItemKind.KEY_DELIVERY,
        ItemKind.FORM,
    ),
    (ItemKind.ENVELOPE,),
    (ItemKind.CHUNK,),
    (ItemKind.OPAQUE,),
)


def iter_by_priority(store: Store, batch: int = 200) -> Iterator[bytes]:
    """Every stored item, class by class in transfer order, in bounded memory."""
    for kinds in TRANSFER_CLASSES:
        values = [kind.value for kind in kinds]
        marks = ", ".join("?" for _ in values)
        last = 0
        while True:
            rows = store.db.execute(
                f"SELECT seq, data FROM items WHERE kind IN ({marks}) AND seq > ?"  # noqa: S608
                " ORDER BY seq LIMIT ?",
                [*values, last, batch],
            ).fetchall()
            for row in rows:
                yield row[1]
            if len(rows) < batch:
                break
            last = rows[-1][0]


#: Kinds a reconciling session holds back until every text has gone (SPEC.md §16.5).
SENT_LAST: tuple[ItemKind, ...] = tuple(kind for kinds in TRANSFER_CLASSES[2:] for kind in kinds)


def send_later(store: Store, ids: list[bytes]) -> list[tuple[int, bytes]]:
    """``(rank, id)`` of the media and unknown kinds among ``ids``: by class, then arrival."""
    classes = {kind.value: n for n, kind in enumerate(SENT_LAST)}
    rows = store.kinds_of(ids, list(classes))
    return [(classes[kind] << 64 | seq, item_id) for kind, seq, item_id in rows]
