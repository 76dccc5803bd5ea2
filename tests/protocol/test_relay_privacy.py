"""Relays learn nothing of author, time or content (DESIGN.md §6; SPEC.md §8.5).

1,000 reports from 20 authors. Sequence numbers and times are chosen large enough that
their encodings are 4 bytes or more, so finding one in an item by chance is negligible and
a hit means a leak.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

import pytest

from fieldsync_protocol import codec, crypto
from fieldsync_protocol.envelope import GENESIS, SIZE_CLASSES
from fieldsync_protocol.items import ItemKind, parse_item
from tests.protocol.protocol_support import CLAIMED_TIME, ephemeral, make_net, random_body

NET = make_net("privacy", key_ids=(0, 1), authors=20)
WINDOW = 8


@dataclass(frozen=True)
class Written:
    item: bytes
    author: bytes
    sequence: int
    claimed_time: int
    previous: bytes
    body_bytes: bytes


def write_reports(count: int) -> list[Written]:
    rng = random.Random(20)
    bases = [rng.randrange(2**20, 2**31) for _ in range(20)]
    previous = [GENESIS] * 20
    written = []
    for index in range(count):
        author = rng.randrange(20)
        sequence = bases[author] + index
        claimed_time = CLAIMED_TIME + rng.randrange(10_000_000)
        body = random_body(rng, rng.choice([40, 200, 700, 1500, 3000]))
        sealed = NET.seal(
            ephemeral(index, "privacy"),
            body=body,
            author_seed=NET.author_seeds[author],
            sequence=sequence,
            previous=previous[author],
            claimed_time=claimed_time,
        )
        written.append(
            Written(
                sealed.item,
                NET.author_key(author),
                sequence,
                claimed_time,
                previous[author],
                codec.encode(body),
            )
        )
        previous[author] = sealed.header_hash
    return written


REPORTS = write_reports(1000)


def int_encodings(value: int) -> list[bytes]:
    return [codec.encode(value), struct.pack(">I", value), struct.pack(">Q", value)]


def windows(data: bytes) -> set[bytes]:
    return {data[i : i + WINDOW] for i in range(len(data) - WINDOW + 1)}


def test_outer_items_show_only_version_key_id_ttl_and_ciphertext() -> None:
    for report in REPORTS:
        item = parse_item(report.item)
        assert item.kind is ItemKind.ENVELOPE
        assert set(item.fields) == {"c", "k", "l", "t", "v"}


def test_no_author_key_sequence_time_or_chain_hash_in_the_outer_item() -> None:
    leaks = []
    for report in REPORTS:
        secrets = [
            report.author,
            *int_encodings(report.sequence),
            *int_encodings(report.claimed_time),
        ]
        if report.previous != GENESIS:
            secrets.append(report.previous)
        leaks += [(report.sequence, s.hex()) for s in secrets if s in report.item]
    assert leaks == []


def test_no_eight_byte_substring_of_the_body_or_author_key() -> None:
    leaks = 0
    for report in REPORTS:
        outer = windows(report.item)
        leaks += len(outer & (windows(report.body_bytes) | windows(report.author)))
    assert leaks == 0


def test_ciphertext_sizes_are_classes_and_few() -> None:
    lengths = set()
    overheads = set()
    for report in REPORTS:
        ciphertext = codec.decode(report.item)["c"]
        assert len(ciphertext) in SIZE_CLASSES
        lengths.add(len(report.item))
        overheads.add(len(report.item) - len(ciphertext))
    assert len(lengths) <= 4  # bodies of 40..3000 bytes fall in 1, 2, 4 or 8 KiB
    assert len(overheads) == 1  # and the outer map adds the same bytes to each


def test_same_report_twice_shares_nothing_but_structure() -> None:
    spec = {"body": random_body(random.Random(5), 500), "sequence": 3_000_000_000}
    first = NET.seal(ephemeral(1, "twice"), **spec).item
    second = NET.seal(ephemeral(2, "twice"), **spec).item
    c1, c2 = codec.decode(first)["c"], codec.decode(second)["c"]
    assert len(c1) == len(c2)
    assert not windows(c1) & windows(c2)
    assert first.replace(c1, b"") == second.replace(c2, b"")


@pytest.mark.parametrize("author", [0, 19])
def test_outer_structure_does_not_depend_on_the_author(author: int) -> None:
    body = random_body(random.Random(6), 300)
    item = NET.seal(ephemeral(author, "who"), body=body, author_seed=NET.author_seeds[author]).item
    reference = NET.seal(ephemeral(99, "who"), body=body).item
    assert item.replace(codec.decode(item)["c"], b"") == reference.replace(
        codec.decode(reference)["c"], b""
    )
    assert crypto.content_id(item) != crypto.content_id(reference)
