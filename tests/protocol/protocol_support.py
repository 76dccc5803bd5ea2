"""Shared test support for ``tests/protocol``: deterministic networks and Hypothesis strategies.

Every key is derived from a label with BLAKE2b, so a failing example is reproducible and no
test depends on the machine's entropy. Imported by ``conftest.py`` and by test modules as
``tests.protocol.protocol_support``.
"""

from __future__ import annotations

import datetime
import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from fieldsync_protocol import codec, crypto, envelope, membership, receipt, report
from fieldsync_protocol.envelope import GENESIS, OpenedReport, SealedReport, SealInput
from fieldsync_protocol.items import parse_item

CLAIMED_TIME = 1_740_000_000  # 2025-02-19, a fixed "now"

#: Every property test here: the same examples on every run (no example database, no
#: random seed) and no per-example deadline (a loaded 2-core CI machine is not a failure).
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)


def seed(label: str) -> bytes:
    """32 deterministic bytes named by ``label``."""
    return hashlib.blake2b(label.encode(), digest_size=32, person=b"fs-test-seed").digest()


def ephemeral(index: int, label: str = "eph") -> bytes:
    return seed(f"{label}-{index}")


def minimal_body(
    narrative: str = "Two people were detained at the market.", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema": report.SCHEMA,
        "id": "0191f3a2-7c4e-4b1a-9d2e-5f6a7b8c9d0e",
        "created_at": "2025-03-02T14:05:11Z",
        "clock": {"source": "ntp", "synced": True},
        "origin": {"channel": "cli"},
        "language": "fr",
        "occurred": {"start": "2025-03-01T09:30Z", "precision": "hour", "approximate": True},
        "categories": ["arbitrary-detention"],
        "narrative": narrative,
        "sensitivity": "restricted",
        "consent": {"share_with_hq": True},
    }
    body.update(extra)
    return body


def full_body() -> dict[str, Any]:
    """A body using every optional field (the SPEC.md §7 example)."""
    return minimal_body(
        "Vers 9h30, des agents en uniforme ont arrêté trois vendeurs.",
        supersedes=None,
        taxonomy_version="2025.1",
        title="Arrestations au marché",
        origin={"channel": "web-form", "monitor": "M-017"},
        occurred={
            "start": "2025-03-01T09:30:00Z",
            "end": None,
            "precision": "hour",
            "approximate": True,
        },
        location={
            "source": "gps",
            "lat": 12.3657,
            "lon": -1.5339,
            "accuracy_m": 50,
            "alt_m": None,
            "place": "Marché central, secteur 4",
            "admin": ["BF", "BF-CEN", "Ouagadougou"],
        },
        categories=["arbitrary-detention", "excessive-force"],
        people=[
            {"role": "victim", "code": "V-1", "count": 3, "sex": "m", "age_group": "18-29"},
            {"role": "perpetrator", "code": "P-1", "type": "state-security", "count": 6},
            {"role": "source", "code": "S-1", "relation": "eyewitness", "reliability": "high"},
        ],
        consent={"informed": True, "share_with_hq": True, "publish": False, "contact_ok": False},
    )


@dataclass(frozen=True)
class Net:
    """A complete test network: every secret HQ and its members hold."""

    label: str
    network_id: bytes
    network_key: bytes
    root_seed: bytes
    hq_secrets: dict[int, bytes]
    receipt_seed: bytes
    certificate_seed: bytes
    author_seeds: tuple[bytes, ...]
    manifest: membership.Manifest = field(repr=False)
    manifest_item: bytes = field(repr=False)

    @property
    def authors(self) -> frozenset[bytes]:
        return frozenset(crypto.signing_public_key(s) for s in self.author_seeds)

    def author_key(self, index: int) -> bytes:
        return crypto.signing_public_key(self.author_seeds[index])

    def seal_input(self, **overrides: Any) -> SealInput:
        key_id = overrides.pop("hq_key_id", self.manifest.current_hq_key_id)
        values: dict[str, Any] = {
            "network_id": self.network_id,
            "hq_key_id": key_id,
            "hq_public_key": self.manifest.hq_keys[key_id],
            "author_seed": self.author_seeds[0],
            "sequence": 1,
            "previous": GENESIS,
            "claimed_time": CLAIMED_TIME,
            "body": minimal_body(),
        }
        values.update(overrides)
        return SealInput(**values)

    def seal(self, eph: bytes | None = None, **overrides: Any) -> SealedReport:
        return envelope.seal_report(self.seal_input(**overrides), eph or ephemeral(0))

    def open(self, item: bytes, authors: frozenset[bytes] | None = None) -> OpenedReport:
        """HQ's whole path for one envelope item: parse, then open and verify."""
        outer = envelope.parse_outer(parse_item(item).fields)
        return envelope.open_report(
            outer, self.network_id, self.hq_secrets, self.authors if authors is None else authors
        )

    def receipt(self, tags: list[bytes], serial: int = 1, time: int = CLAIMED_TIME) -> bytes:
        return receipt.sign_receipt(
            receipt.Receipt(self.network_id, serial, time, tuple(tags)), self.receipt_seed
        )

    def certificate(self, node_secret: bytes, expires: int = CLAIMED_TIME + 90 * 86400) -> bytes:
        cert = membership.NodeCertificate(
            self.network_id, crypto.box_public_key(node_secret), expires
        )
        return membership.sign_certificate(cert, self.certificate_seed)


def make_net(label: str, key_ids: tuple[int, ...] = (0,), authors: int = 3) -> Net:
    root_seed = seed(f"{label}/root")
    hq_secrets = {i: seed(f"{label}/hq/{i}") for i in key_ids}
    receipt_seed = seed(f"{label}/receipt")
    certificate_seed = seed(f"{label}/cert")
    network_id = seed(f"{label}/id")[:16]
    manifest = membership.Manifest(
        network_id=network_id,
        name=f"{label} network",
        epoch=1,
        root_key=crypto.signing_public_key(root_seed),
        hq_keys={i: crypto.box_public_key(s) for i, s in hq_secrets.items()},
        receipt_key=crypto.signing_public_key(receipt_seed),
        certificate_key=crypto.signing_public_key(certificate_seed),
    )
    return Net(
        label=label,
        network_id=network_id,
        network_key=seed(f"{label}/knet"),
        root_seed=root_seed,
        hq_secrets=hq_secrets,
        receipt_seed=receipt_seed,
        certificate_seed=certificate_seed,
        author_seeds=tuple(seed(f"{label}/author/{i}") for i in range(authors)),
        manifest=manifest,
        manifest_item=membership.sign_manifest(manifest, root_seed),
    )


def random_body(rng: random.Random, size: int | None = None) -> dict[str, Any]:
    """A valid body with a random narrative (for bulk tests that do not need Hypothesis)."""
    length = rng.randrange(1, 3000) if size is None else size
    words = ["arrest", "market", "road", "night", "soldiers", "village", "fire", "water"]
    narrative = " ".join(rng.choice(words) for _ in range(length // 6 + 1))[:length].strip() or "x"
    return minimal_body(narrative, id=_uuid(rng.getrandbits(128)))


def _uuid(value: int) -> str:
    return report.report_id(value.to_bytes(16, "big"))


# --- Hypothesis strategies -------------------------------------------------------------


def _timestamps() -> st.SearchStrategy[str]:
    dates = st.dates(min_value=datetime.date(1, 1, 1))
    year = dates.map(lambda d: f"{d.year:04d}")
    month = dates.map(lambda d: f"{d.year:04d}-{d.month:02d}")
    day = dates.map(lambda d: d.isoformat())
    zone = st.sampled_from(["Z", "+00:00", "-05:30", "+14:00"])
    clock = st.builds(
        lambda d, h, m, s, z: (
            f"{d.isoformat()}T{h:02d}:{m:02d}{'' if s is None else f':{s:02d}'}{z}"
        ),
        dates,
        st.integers(0, 23),
        st.integers(0, 59),
        st.none() | st.integers(0, 59),
        zone,
    )
    return st.one_of(year, month, day, clock)


def _number(low: int, high: int) -> st.SearchStrategy[float | int]:
    return st.integers(low, high) | st.floats(low, high, allow_nan=False)


_person = st.fixed_dictionaries(
    {"role": st.sampled_from(report.ROLES)},
    optional={
        "code": st.text(max_size=32),
        "count": _number(1, 1_000_000),
        "sex": st.text(max_size=16),
        "age_group": st.text(max_size=16),
        "type": st.text(max_size=64),
        "relation": st.text(max_size=64),
        "reliability": st.text(max_size=16),
        "name": st.text(max_size=128) | st.none(),
    },
)

_location = st.fixed_dictionaries(
    {"source": st.sampled_from(report.LOCATION_SOURCES)},
    optional={
        "accuracy_m": _number(0, 40_000_000),
        "alt_m": _number(-12_000, 100_000) | st.none(),
        "place": st.text(max_size=60),
        "admin": st.lists(st.text(max_size=20), max_size=4),
    },
).flatmap(
    lambda loc: st.one_of(
        st.just(loc),
        st.tuples(_number(-90, 90), _number(-180, 180)).map(
            lambda ll: {**loc, "lat": ll[0], "lon": ll[1]}
        ),
    )
)

_category = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)
_language = st.from_regex(r"[a-zA-Z]{2,3}(-[a-zA-Z0-9]{1,8}){0,2}", fullmatch=True)
_uuid_text = st.integers(0, 2**128 - 1).map(_uuid)

report_bodies: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "schema": st.just(report.SCHEMA),
        "id": _uuid_text,
        "created_at": _timestamps(),
        "clock": st.fixed_dictionaries(
            {"source": st.sampled_from(report.CLOCK_SOURCES), "synced": st.booleans()}
        ),
        "origin": st.fixed_dictionaries(
            {"channel": st.sampled_from(report.CHANNELS)},
            optional={"monitor": st.text(max_size=32)},
        ),
        "language": _language,
        "occurred": st.fixed_dictionaries(
            {
                "start": _timestamps(),
                "precision": st.sampled_from(report.PRECISIONS),
                "approximate": st.booleans(),
            },
            optional={"end": _timestamps() | st.none()},
        ),
        "categories": st.lists(_category, min_size=1, max_size=5),
        "narrative": st.text(min_size=1, max_size=300).filter(lambda t: t.strip() != ""),
        "sensitivity": st.sampled_from(report.SENSITIVITIES),
        "consent": st.fixed_dictionaries(
            {"share_with_hq": st.booleans()},
            optional={
                "informed": st.booleans(),
                "publish": st.booleans(),
                "contact_ok": st.booleans(),
            },
        ),
    },
    optional={
        "supersedes": _uuid_text | st.none(),
        "taxonomy_version": st.text(max_size=32),
        "title": st.text(max_size=200) | st.none(),
        "location": _location | st.none(),
        "people": st.lists(_person, max_size=4),
    },
)


# --- hand-made envelopes (what a forger or a buggy client could produce) -----------------


def header_fields(net: Net, author: int = 0, **changes: Any) -> dict[str, Any]:
    """The inner header ``seal_report`` would make for key id 1, as a dict to tamper with."""
    fields: dict[str, Any] = {
        "a": net.author_key(author),
        "b": codec.encode(minimal_body()),
        "hk": net.manifest.current_hq_key_id,
        "l": envelope.DEFAULT_TTL_CLASS,
        "n": net.network_id,
        "p": GENESIS,
        "q": 1,
        "t": CLAIMED_TIME,
        "v": 1,
    }
    fields.update(changes)
    return fields


def signed_inner(
    header: dict[str, Any] | bytes, author_seed: bytes, domain: crypto.Domain = crypto.Domain.REPORT
) -> bytes:
    header_bytes = header if isinstance(header, bytes) else codec.encode(header)
    return codec.encode({"h": header_bytes, "s": crypto.sign(domain, author_seed, header_bytes)})


def pad(signed: bytes, size: int | None = None) -> bytes:
    """ISO/IEC 7816-4 padding to a sealed size of ``size`` (default: the smallest class)."""
    size = envelope.size_class(len(signed)) if size is None else size
    return signed + b"\x80" + bytes(size - crypto.SEAL_OVERHEAD - len(signed) - 1)


def envelope_item(
    plain: bytes,
    hq_public: bytes,
    key_id: int,
    ttl_class: int = envelope.DEFAULT_TTL_CLASS,
    eph: bytes | None = None,
) -> bytes:
    """Seal arbitrary ``plain`` to ``hq_public`` and wrap it as an envelope item."""
    ciphertext = crypto.seal(plain, hq_public, eph or ephemeral(0, "forge"))
    return codec.encode({"c": ciphertext, "k": key_id, "l": ttl_class, "t": "e", "v": 1})


def inner_of(net: Net, item: bytes) -> bytes:
    """HQ's view: the padded plaintext of an envelope item of ``net``."""
    fields = codec.decode(item)
    return crypto.unseal(fields["c"], net.hq_secrets[fields["k"]], "test")
