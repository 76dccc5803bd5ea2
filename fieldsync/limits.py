"""Default per-peer daily quotas: the one copy of the rule, read by the config and the peer
driver alike (SPEC.md §14.4). Standard library only, so ``config`` stays cheap to import.

The quota counts bytes. It is sized so that an honest relay handing over a backlog of one
million reports in one day is never cut off: 1M envelopes of the 4 KiB size class (about
4.1 GiB with their outer fields) fit in 8 GiB, which leaves room for the larger classes a
real backlog mixes in. What bounds a flooding member is the disk budget's fair eviction
(SPEC.md §14.2), which caps what any one peer keeps on a relay; the quota only bounds the
bandwidth and CPU one certificate may use per day.
"""

from __future__ import annotations

from typing import Final

#: Bytes of items one peer (by certificate node key) may hand this node per day.
QUOTA_BYTES_PER_DAY: Final = 8 * 1024**3

#: The smallest item a peer can send: an envelope of the smallest size class (512 bytes of
#: ciphertext, SPEC.md §8.3) and its outer fields. A test checks it against the protocol.
SMALLEST_ITEM_BYTES: Final = 512

#: Items per day: derived from the byte quota so that, with the defaults, bytes always run
#: out first (the item count is an extra knob for operators, not a second rule).
QUOTA_ITEMS_PER_DAY: Final = QUOTA_BYTES_PER_DAY // SMALLEST_ITEM_BYTES

#: The quota's day: counters restart at each multiple of this many wall-clock seconds.
QUOTA_WINDOW_SECONDS: Final = 86_400
