"""HQ's side of revocation (SPEC.md §17): the ``revoked`` register, the root-signed lists
it publishes, the alert on reports a revoked author wrote after its cut-off, certificate
renewal and network-key rotation.

Tables (in hq.db, created by migration 4 of ``fieldsync.hq_schema``):

* ``revoked``: one row per revoked key (``node:…`` or ``author:…`` text), with the reason
  (kept at HQ only: it never travels), when, and for authors the cut-off sequence: the
  highest sequence HQ had received from that author when it was revoked;
* ``revocation_lists``: every list HQ signed, by serial. Each is complete, so only the
  newest travels (in receipts bundles and to the hub), and members adopt it by serial;
* ``key_deliveries``: each member's renewed certificate and network key, sealed to it; the
  newest per node travels (none for revoked nodes).

Nothing here imports ``fieldsync.hq``: the caller passes the database, the manifest and the
root seed, so the module stays independent of how the HQ class is organised.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import nacl.exceptions
import nacl.secret
import sqlite_utils

from fieldsync import hq_alerts, keystore
from fieldsync.errors import InputRefused, NotFound
from fieldsync.node import utc_text
from fieldsync.sqlite_tx import immediate_transaction
from fieldsync.store import now_seconds
from fieldsync_protocol import codec
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.keydelivery import MAX_GRACE, KeyDelivery, seal_delivery
from fieldsync_protocol.keytext import KeyKind, fingerprint, key_from_text, key_to_text
from fieldsync_protocol.membership import Manifest, NodeCertificate, sign_certificate
from fieldsync_protocol.revocation import (
    MAX_REVOKED,
    RevocationList,
    RevokedAuthor,
    sign_revocation,
)


class HqKeys(Protocol):
    """What this module needs of HQ's unlocked secrets (``fieldsync.hq.HqSecrets``)."""

    root_seed: bytes
    certificate_seed: bytes
    network_key: bytes


MAX_REASON = 200
#: How long a certificate HQ issues is valid (HQ time). `hq renew` renews every member's
#: well before: run it at least every half of this (SPEC.md §17.4).
CERTIFICATE_DAYS = 90


def certificate_expiry(days: int = CERTIFICATE_DAYS) -> int:
    """The expiry (HQ time) of a certificate issued now."""
    return now_seconds() + days * 86_400


@dataclass
class Revocation:
    """What one ``hq revoke`` did."""

    serial: int
    nodes: list[str] = field(default_factory=list)
    authors: dict[str, int] = field(default_factory=dict)  # author key text -> cut-off

    def as_dict(self) -> dict[str, Any]:
        return {"list_serial": self.serial, "nodes": self.nodes, "authors": self.authors}


def _resolve(db: sqlite_utils.Database, target: str) -> tuple[set[bytes], set[bytes]]:
    """The node keys and author keys ``target`` names: a node or author key (text form), a
    node or author fingerprint, or an enrolled author's name. A node brings the authors
    enrolled on it; an author brings its node."""
    text = target.strip()
    nodes: set[bytes] = set()
    authors: set[bytes] = set()
    enrolled = [
        (key_from_text(KeyKind.AUTHOR, a), a_name, key_from_text(KeyKind.NODE, n))
        for a, a_name, n in db.execute("SELECT author_key, name, node_key FROM authors")
    ]
    node_keys = [
        key_from_text(KeyKind.NODE, row[0]) for row in db.execute("SELECT node_key FROM nodes")
    ]
    for kind, pool in ((KeyKind.NODE, nodes), (KeyKind.AUTHOR, authors)):
        try:
            pool.add(key_from_text(kind, text))
        except RemoteProtocolError:
            continue
    if not nodes and not authors:
        canonical = text.upper().replace(" ", "")
        nodes.update(k for k in node_keys if fingerprint(KeyKind.NODE, k).upper() == canonical)
        authors.update(
            k for k, _, _ in enrolled if fingerprint(KeyKind.AUTHOR, k).upper() == canonical
        )
        authors.update(k for k, name, _ in enrolled if name and name == text)
    if not nodes and not authors:
        raise NotFound(
            f"{target!r} names no enrolled node or author: give a node:… or author:… key, its"
            " fingerprint, or the author's name as enrolled"
        )
    nodes.update(node for author, _, node in enrolled if author in authors)
    authors.update(author for author, _, node in enrolled if node in nodes)
    return nodes, authors


def revoke(
    db: sqlite_utils.Database,
    manifest: Manifest,
    root_seed: bytes,
    target: str,
    reason: str = "",
) -> Revocation:
    """Revoke ``target`` (and the node or author that goes with it) and sign a new list."""
    if len(reason) > MAX_REASON:
        raise InputRefused(f"--reason is longer than {MAX_REASON} characters")
    nodes, authors = _resolve(db, target)
    now = utc_text(now_seconds())
    done = Revocation(serial=0)
    with immediate_transaction(db.conn):
        for node in sorted(nodes):
            key = key_to_text(KeyKind.NODE, node)
            db.conn.execute(
                "INSERT OR IGNORE INTO revoked (key, kind, reason, revoked_at) VALUES (?, ?, ?, ?)",
                [key, "node", reason, now],
            )
            done.nodes.append(key)
        for author in sorted(authors):
            key = key_to_text(KeyKind.AUTHOR, author)
            cutoff = db.execute(
                "SELECT coalesce(max(sequence), 0) FROM chain WHERE author_key = ?", [key]
            ).fetchone()[0]
            db.conn.execute(
                "INSERT OR IGNORE INTO revoked (key, kind, cutoff, reason, revoked_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [key, "author", cutoff, reason, now],
            )
            done.authors[key] = int(
                db.execute("SELECT cutoff FROM revoked WHERE key = ?", [key]).fetchone()[0]
            )
        done.serial = _publish(db, manifest, root_seed)
        db.conn.execute(
            "UPDATE revoked SET list_serial = ? WHERE list_serial IS NULL", [done.serial]
        )
    return done


def _publish(db: sqlite_utils.Database, manifest: Manifest, root_seed: bytes) -> int:
    """Sign the complete list of everything revoked, inside the caller's transaction."""
    rows = db.execute("SELECT key, kind, cutoff FROM revoked").fetchall()
    nodes = sorted(key_from_text(KeyKind.NODE, key) for key, kind, _ in rows if kind == "node")
    authors = sorted(
        (key_from_text(KeyKind.AUTHOR, key), int(cutoff))
        for key, kind, cutoff in rows
        if kind == "author"
    )
    if len(nodes) > MAX_REVOKED or len(authors) > MAX_REVOKED:
        raise InputRefused(
            f"a revocation list holds at most {MAX_REVOKED} keys of each kind; create a new"
            " network (and rotate the root) instead"
        )
    serial, last_time = db.execute(
        "SELECT coalesce(max(serial), 0) + 1, coalesce(max(time), 0) FROM revocation_lists"
    ).fetchone()
    # HQ's clock is the beacon members judge certificate expiry by: it never goes back.
    hq_time = max(now_seconds(), int(last_time))
    revocations = RevocationList(
        network_id=manifest.network_id,
        serial=int(serial),
        time=hq_time,
        nodes=tuple(nodes),
        authors=tuple(RevokedAuthor(key, cutoff) for key, cutoff in authors),
    )
    db.conn.execute(
        "INSERT INTO revocation_lists (serial, created_at, time, item) VALUES (?, ?, ?, ?)",
        [
            revocations.serial,
            utc_text(now_seconds()),
            hq_time,
            sign_revocation(revocations, root_seed),
        ],
    )
    return revocations.serial


def published_items(db: sqlite_utils.Database) -> list[bytes]:
    """What members must receive from HQ besides the manifest and receipts: the newest
    revocation list (it names everything revoked so far), then each member's newest key
    delivery (none for revoked nodes)."""
    row = db.execute("SELECT item FROM revocation_lists ORDER BY serial DESC LIMIT 1").fetchone()
    items = [] if row is None else [bytes(row[0])]
    items += [
        bytes(delivery)
        for (delivery,) in db.execute(
            "SELECT item FROM key_deliveries WHERE serial IN"
            " (SELECT max(serial) FROM key_deliveries GROUP BY node_key)"
            " AND node_key NOT IN (SELECT key FROM revoked WHERE kind = 'node') ORDER BY serial"
        )
    ]
    return items


def revoked_rows(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return [
        dict(
            zip(("key", "kind", "cutoff", "reason", "revoked_at", "list_serial"), row, strict=True)
        )
        for row in db.execute(
            "SELECT key, kind, cutoff, reason, revoked_at, list_serial FROM revoked"
            " ORDER BY revoked_at, key"
        )
    ]


def flag_revoked_report(
    db: sqlite_utils.Database,
    author_text: str,
    sequence: int,
    author_name: str,
    envelope_id: str,
) -> dict[str, Any] | None:
    """The ``revoked author`` alert (``fieldsync.hq_alerts``) for an accepted report its
    author wrote after being revoked (sequence above the cut-off); None for any other
    report. The report itself is kept: an analyst decides what it is worth (it may have been
    written before the device was lost and delivered late)."""
    row = db.execute(
        "SELECT cutoff, revoked_at FROM revoked WHERE key = ? AND kind = 'author'", [author_text]
    ).fetchone()
    if row is None or sequence <= row[0]:
        return None
    event = hq_alerts.Event(
        hq_alerts.REVOKED_AUTHOR,
        envelope_id,
        f"report {sequence} is past the cut-off {row[0]} of this author's revocation"
        f" ({row[1]}): the device or key may be in other hands",
        author_key=author_text,
        author_name=author_name,
        sequence=sequence,
        envelope_id=envelope_id,
    )
    return hq_alerts.raise_alert(db, event, utc_text(now_seconds()))


# --- certificate renewal and network-key rotation (SPEC.md §17.4, §17.5) ---------------------

NETWORK_KEYS = "network-keys.secret"
#: Largest grace period (days) of a network-key rotation (the protocol's bound, a year).
MAX_GRACE_DAYS = MAX_GRACE // 86_400


@dataclass(frozen=True)
class NetworkKey:
    key_id: int
    key: bytes
    #: HQ time from which HQ itself seals bundles with it (and it alone).
    active_from: int


def _network_keys_box(root_seed: bytes) -> nacl.secret.SecretBox:
    """The network keys after the first are kept in their own file, sealed under a key
    derived from the root seed: whoever unlocks hq.secret opens it, no second passphrase."""
    key = hashlib.blake2b(root_seed, digest_size=32, person=b"fs-hq-netkeys").digest()
    return nacl.secret.SecretBox(key)


def network_keys(directory: Path, root_seed: bytes, first_key: bytes) -> list[NetworkKey]:
    """Every network key HQ has used, oldest first (the enrolment key has id 0)."""
    keys = [NetworkKey(0, first_key, 0)]
    path = directory / NETWORK_KEYS
    if not path.exists():
        return keys
    try:
        plain = _network_keys_box(root_seed).decrypt(path.read_bytes())
    except nacl.exceptions.CryptoError as exc:
        raise InputRefused(
            f"{path} is damaged or from another HQ; restore it from a backup"
        ) from exc
    entries = codec.decode(plain, what="network keys")
    for entry in entries:
        keys.append(NetworkKey(entry["id"], entry["key"], entry["from"]))
    return keys


def network_key_in_use(directory: Path, root_seed: bytes, first_key: bytes) -> NetworkKey:
    """The key HQ seals bundles and enrolments with now: the newest active one."""
    now = now_seconds()
    active = [k for k in network_keys(directory, root_seed, first_key) if k.active_from <= now]
    return active[-1]


def _save_network_keys(directory: Path, root_seed: bytes, keys: list[NetworkKey]) -> None:
    entries = [{"from": k.active_from, "id": k.key_id, "key": k.key} for k in keys[1:]]
    keystore.write_private(
        directory / NETWORK_KEYS, _network_keys_box(root_seed).encrypt(codec.encode(entries))
    )


@dataclass
class Renewal:
    """What one ``hq renew`` (or rotation) did."""

    certificates: int
    expires: int
    network_key_id: int
    grace_seconds: int
    list_serial: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "certificates": self.certificates,
            "expires": self.expires,
            "expires_utc": utc_text(self.expires),
            "network_key_id": self.network_key_id,
            "grace_seconds": self.grace_seconds,
            "revocation_list_serial": self.list_serial,
        }


def renew(
    directory: Path,
    db: sqlite_utils.Database,
    manifest: Manifest,
    secrets_: HqKeys,
    days: int = CERTIFICATE_DAYS,
) -> Renewal:
    """Issue every member that is not revoked a new certificate valid ``days`` from now,
    sealed to its node key with the newest network key, and sign a fresh revocation list:
    its time is the beacon members judge expiry by (SPEC.md §17.4)."""
    if not 1 <= days <= 3650:
        raise InputRefused("--days must be 1..3650")
    newest = network_keys(directory, secrets_.root_seed, secrets_.network_key)[-1]
    now = now_seconds()
    grace = max(0, newest.active_from - now)
    expires = now + days * 86_400
    nodes = [
        key_from_text(KeyKind.NODE, row[0])
        for row in db.execute(
            "SELECT DISTINCT node_key FROM nodes WHERE node_key NOT IN"
            " (SELECT key FROM revoked WHERE kind = 'node') ORDER BY node_key"
        )
    ]
    with immediate_transaction(db.conn):
        serial = int(
            db.execute("SELECT coalesce(max(serial), 0) FROM key_deliveries").fetchone()[0]
        )
        for node in nodes:
            serial += 1
            certificate = sign_certificate(
                NodeCertificate(manifest.network_id, node, expires), secrets_.certificate_seed
            )
            delivery = KeyDelivery(
                manifest.network_id, node, serial, certificate, newest.key_id, newest.key, grace
            )
            item = seal_delivery(delivery, secrets_.root_seed, secrets.token_bytes(32))
            db.conn.execute(
                "INSERT INTO key_deliveries (serial, node_key, created_at, expires, item)"
                " VALUES (?, ?, ?, ?, ?)",
                [serial, key_to_text(KeyKind.NODE, node), utc_text(now), expires, item],
            )
        list_serial = _publish(db, manifest, secrets_.root_seed)
    return Renewal(len(nodes), expires, newest.key_id, grace, list_serial)


def rotate_network_key(
    directory: Path,
    db: sqlite_utils.Database,
    manifest: Manifest,
    secrets_: HqKeys,
    grace_days: int,
    days: int = CERTIFICATE_DAYS,
) -> Renewal:
    """A fresh network key, delivered sealed to every member that is not revoked (with a
    renewed certificate); members accept both keys for ``grace_days``, then the new alone.
    A revoked device or an ex-member never gets it: after the grace it gets nothing."""
    if not 1 <= grace_days <= MAX_GRACE_DAYS:
        # Not 0: the bundles and the sync that carry the new key run under the old one, so
        # nodes must go on accepting it for a while (and HQ seals under it until then).
        raise InputRefused(f"--grace must be 1..{MAX_GRACE_DAYS} days")
    keys = network_keys(directory, secrets_.root_seed, secrets_.network_key)
    now = now_seconds()
    keys.append(NetworkKey(keys[-1].key_id + 1, secrets.token_bytes(32), now + grace_days * 86_400))
    _save_network_keys(directory, secrets_.root_seed, keys)
    return renew(directory, db, manifest, secrets_, days)
