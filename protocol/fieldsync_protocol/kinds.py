"""Item kinds (SPEC.md §10), apart from their parsers in ``items``.

The store names kinds in its SQL and counts them for ``fieldsync status``; importing
``items`` for that would load every item's parser (envelopes, forms, receipts, revocations,
key deliveries) into commands that parse no item (issue 13 item 6). ``items`` re-exports
``ItemKind``: callers that parse items import it from there.
"""

from __future__ import annotations

from enum import Enum


class ItemKind(Enum):
    ENVELOPE = "e"
    RECEIPT = "r"
    MANIFEST = "m"
    CHUNK = "a"
    REVOCATION = "l"
    KEY_DELIVERY = "k"
    FORM = "f"
    #: Any kind this version does not know. Never on the wire: ``"t"`` there is the item's own.
    OPAQUE = "?"
