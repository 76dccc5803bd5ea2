"""Fuzz HQ ingest (issue 7 "Must show"): 10,000 validly signed reports whose header and body
fields are drawn (seeded) from the full ranges SPEC.md §7 and §8.1 allow, and past them,
plus envelopes sealed to a key id HQ lacks and junk, in one bundle and one ingest.

0 ingest failures; every envelope ends accepted, duplicate, fork (with an alert), held in
quarantine (with an alert) or junk; the counts add up to 10,000 and HQ's receipts name
every one of them with the status that matches.
"""

from __future__ import annotations

import datetime
import random
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from fieldsync_protocol import crypto, report
from fieldsync_protocol.crypto import delivery_tag
from fieldsync_protocol.envelope import MAX_CLAIMED_TIME, MAX_SEQUENCE, TTL_CLASSES
from fieldsync_protocol.items import parse_item
from fieldsync_protocol.keytext import KeyKind, key_to_text
from fieldsync_protocol.receipt import ReceiptStatus, open_receipt
from tests.fieldsync.offline_support import (
    Net,
    author_seed,
    hq_manifest,
    ingest,
    junk_envelope,
    open_hq,
    receipts,
    seal_raw,
    write_bundle,
)

COUNT = 10_000
SEED = 20261205
#: Characters narratives and other texts are made of: ASCII, accents, CJK, RTL, emoji, NUL,
#: spreadsheet formula starters.
ALPHABET = "abcdefghij klmnop=+-@\t\n\r\"',;éçøß中文字العربية😀🏳️‍🌈\x00\x7f\u200b"
LANGUAGES = ("en", "fr", "pt-BR", "ara", "zh-Hant-TW", "es-419", "sw")


def _report_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _text(rng: random.Random, low: int, high: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(low, high)))


def _timestamp(rng: random.Random) -> str:
    day = datetime.date.fromordinal(rng.randint(1, datetime.date.max.toordinal()))
    shape = rng.randrange(5)
    if shape == 0:
        return f"{day.year:04d}"
    if shape == 1:
        return f"{day.year:04d}-{day.month:02d}"
    if shape == 2:
        return day.isoformat()
    seconds = f":{rng.randrange(60):02d}" if rng.random() < 0.5 else ""
    zone = rng.choice(["Z", "+00:00", "-05:30", "+14:00", "-12:00"])
    return f"{day.isoformat()}T{rng.randrange(24):02d}:{rng.randrange(60):02d}{seconds}{zone}"


def _number(rng: random.Random, low: int, high: int) -> float | int:
    edge = rng.random()
    if edge < 0.2:
        return rng.choice([low, high])
    return rng.randint(low, high) if edge < 0.5 else rng.uniform(low, high)


def _location(rng: random.Random) -> dict[str, Any] | None:
    if rng.random() < 0.2:
        return None
    location: dict[str, Any] = {"source": rng.choice(report.LOCATION_SOURCES)}
    if rng.random() < 0.7:
        location["lat"], location["lon"] = _number(rng, -90, 90), _number(rng, -180, 180)
    optional: dict[str, Callable[[], Any]] = {
        "accuracy_m": lambda: _number(rng, 0, 40_000_000),
        "alt_m": lambda: _number(rng, -12_000, 100_000),
        "place": lambda: _text(rng, 0, report.MAX_TEXT),
        "admin": lambda: [_text(rng, 0, 100) for _ in range(rng.randrange(4))],
    }
    for name, make in optional.items():
        if rng.random() < 0.5:
            location[name] = make()
    return location


def _person(rng: random.Random) -> dict[str, Any]:
    person: dict[str, Any] = {"role": rng.choice(report.ROLES)}
    if rng.random() < 0.5:
        person["count"] = _number(rng, 1, 1_000_000)
    if rng.random() < 0.5:
        person["name"] = rng.choice([None, _text(rng, 0, 128)])
    return person


def fuzz_body(rng: random.Random) -> dict[str, Any]:
    """A valid body with every field drawn across the range §7 allows."""
    narrative_length = rng.choice([1, 10, 200, 2000]) if rng.random() < 0.99 else 30_000
    body: dict[str, Any] = {
        "schema": report.SCHEMA,
        "id": _report_id(rng),
        "created_at": _timestamp(rng),
        "clock": {"source": rng.choice(report.CLOCK_SOURCES), "synced": rng.random() < 0.5},
        "origin": {"channel": rng.choice(report.CHANNELS)},
        "language": rng.choice(LANGUAGES),
        "occurred": {
            "start": _timestamp(rng),
            "precision": rng.choice(report.PRECISIONS),
            "approximate": rng.random() < 0.5,
        },
        "categories": [
            rng.choice(["threats", "arbitrary-detention", "x", "a" * 64])
            for _ in range(rng.randint(1, 5))
        ],
        "narrative": "n" + _text(rng, 0, narrative_length),
        "sensitivity": rng.choice(report.SENSITIVITIES),
        "consent": {"share_with_hq": rng.random() < 0.9, "publish": rng.random() < 0.5},
    }
    if rng.random() < 0.5:
        body["occurred"]["end"] = _timestamp(rng)
    optional: dict[str, Callable[[], Any]] = {
        "supersedes": lambda: rng.choice([None, _report_id(rng)]),
        "taxonomy_version": lambda: _text(rng, 0, 32),
        "title": lambda: rng.choice([None, _text(rng, 0, 200)]),
        "location": lambda: _location(rng),
        "people": lambda: [_person(rng) for _ in range(rng.randrange(5))],
    }
    for name, make in optional.items():
        if rng.random() < 0.5:
            body[name] = make()
    return report.validate_report(body)


class Author:
    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.honest = 0  # the author's own counter: what an honest device would write next


def _sequence(rng: random.Random, author: Author) -> int:
    """Anywhere in 1..2^63-1, weighted towards what makes HQ work: the next number, old
    numbers again (duplicates, forks) and numbers around the jump bound."""
    roll = rng.random()
    if roll < 0.45:
        author.honest += 1
        return author.honest
    if roll < 0.6:
        return rng.randint(1, max(author.honest, 1))
    if roll < 0.7:
        return author.honest + rng.choice([9_999, 10_000, 10_001])
    if roll < 0.85:
        return rng.randint(1, MAX_SEQUENCE)
    return rng.choice([1, MAX_SEQUENCE, 10**12, 2**32])


def _claimed_time(rng: random.Random) -> tuple[int, bool]:
    """A claimed time and whether it is in range."""
    roll = rng.random()
    if roll < 0.6:
        return rng.randint(0, MAX_CLAIMED_TIME), True
    if roll < 0.8:
        return rng.choice([0, MAX_CLAIMED_TIME, 1_740_000_000]), True
    return rng.choice(
        [MAX_CLAIMED_TIME + 1, 2**40, rng.randint(MAX_CLAIMED_TIME + 1, 2**63 - 1)]
    ), (False)


def _register(net: Net, authors: list[Author]) -> None:
    """Enrol extra authors the way HQ's enrolment stores them (one row each)."""
    with open_hq(net) as headquarters:
        db = headquarters.database()
        for index, author in enumerate(authors):
            public = crypto.signing_public_key(author.seed)
            db.table("authors").insert(
                {
                    "author_key": key_to_text(KeyKind.AUTHOR, public),
                    "name": f"fuzz-{index}",
                    "node_key": "",
                    "enrolled_at": "2026-12-05T00:00:00Z",
                }
            )


def test_ten_thousand_signed_reports_from_the_full_ranges_never_fail_an_ingest(
    net: Net,
) -> None:
    rng = random.Random(SEED)
    manifest = hq_manifest(net)
    key_id = manifest.current_hq_key_id
    enrolled = [Author(author_seed(net))] + [Author(rng.randbytes(32)) for _ in range(3)]
    _register(net, enrolled[1:])
    stranger = Author(rng.randbytes(32))
    items: list[bytes] = []
    expected: Counter[str] = Counter()
    for _ in range(COUNT):
        kind = rng.random()
        if kind < 0.02:
            items.append(junk_envelope(rng.choice([512, 4096]), key_id))
            expected["junk"] += 1
            continue
        author = stranger if kind < 0.07 else rng.choice(enrolled)
        claimed_time, time_ok = _claimed_time(rng)
        unknown_key = rng.random() < 0.02
        item = seal_raw(
            manifest,
            author.seed,
            _sequence(rng, author),
            claimed_time,
            fuzz_body(rng),
            previous=rng.randbytes(32),
            ttl_class=rng.choice(list(TTL_CLASSES)),
            key_id=9 if unknown_key else key_id,
        )
        items.append(item)
        if unknown_key:
            expected["does not hold"] += 1
        elif author is stranger:
            expected["never enrolled"] += 1
        elif not time_ok:
            expected["report header.t"] += 1
    write_bundle(net, net.usb / "fuzz.bundle", items)

    summary = ingest(net, net.usb / "fuzz.bundle")

    assert (summary.failed, summary.quarantine_full) == (0, 0)
    held = sum(summary.quarantined.values())
    junk = sum(summary.junk.values())
    assert summary.new + summary.duplicate + summary.forks + held + junk == COUNT
    assert summary.envelopes == COUNT
    assert junk == expected["junk"]
    with open_hq(net) as headquarters:
        db = headquarters.database()

        def count(sql: str) -> int:
            return int(db.execute(sql).fetchone()[0])

        by_status = dict(db.execute("SELECT status, count(*) FROM envelopes GROUP BY status"))
        for phrase in ("does not hold", "never enrolled", "report header.t"):
            found = count(f"SELECT count(*) FROM quarantine WHERE reason LIKE '%{phrase}%'")  # noqa: S608
            assert found == expected[phrase], phrase
        assert count("SELECT count(*) FROM reports") == summary.new
        assert count("SELECT count(*) FROM quarantine") == held
        # Every held envelope and every fork raised an alert naming it.
        unalerted = count(
            "SELECT count(*) FROM envelopes e WHERE e.status IN ('quarantined', 'fork')"
            " AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.envelope_id = e.envelope_id)"
        )
        assert unalerted == 0
        jumps = count("SELECT count(*) FROM alerts WHERE kind = 'sequence jump'")
    assert by_status == {
        status: number
        for status, number in {
            "accepted": summary.new,
            "duplicate": summary.duplicate,
            "fork": summary.forks,
            "quarantined": held,
            "junk": junk,
        }.items()
        if number
    }
    assert summary.new > 1000 and summary.forks > 100 and jumps > 1000  # the mix was real

    again = ingest(net, net.usb / "fuzz.bundle")
    assert (again.duplicate, again.new, again.alerts_total, again.failed) == (COUNT, 0, 0, 0)

    receipts(net, net.usb / "receipts.bundle")
    statuses = _receipted(net)
    assert len(statuses) == COUNT
    assert Counter(statuses.values()) == {
        ReceiptStatus.ACCEPTED: summary.new + summary.duplicate + summary.forks,
        ReceiptStatus.HELD: held,
        ReceiptStatus.DROPPED: junk,
    }
    assert set(statuses) == {delivery_tag(item) for item in items}


def _receipted(net: Net) -> dict[bytes, ReceiptStatus]:
    manifest = hq_manifest(net)
    statuses: dict[bytes, ReceiptStatus] = {}
    with open_hq(net) as headquarters:
        for (data,) in headquarters.database().execute("SELECT item FROM receipts"):
            receipt = open_receipt(parse_item(data).fields, manifest)
            for tag in receipt.tags:
                assert tag not in statuses, "one receipt per envelope"
                statuses[tag] = receipt.status
    return statuses
