"""Headquarters: network creation, enrolment, and the ``HQ`` an HQ directory is opened as.

Layout of an HQ directory (0700; every file in it 0600)::

    hq.secret      root, certificate, receipt and HQ encryption keys and the network key,
                   sealed with the HQ passphrase (move the root key offline: SPEC.md §4)
    manifest.item  the current root-signed network manifest
    hq.db          the analyst database (open it with ``fieldsync hq serve``: Datasette),
                   encrypted (SQLCipher) under the key in ``hq.dbkey``
    hq.dbkey       that random key, sealed with the HQ passphrase (``HQ.database_key``)
    hq.secret.new, hq.dbkey.new   only while ``hq passphrase`` runs (or a crash cut it short)
    hq.dbkey.next  only while ``hq rekey`` runs (or a crash cut it short)
    unlock.failures  HQ passphrases tried since the last right one (only with
                   [security] hq_wipe_after_wrong_passphrases; ``fieldsync.wrong_passphrases``)
    keys.lock      held by whichever command changes the passphrase or the database key
    media/         verified attachments, media/ENVELOPE/NN.sealed, each encrypted under its
                   own key kept in hq.db (``fieldsync.hq_media``, ``hq_media_seal``)
    node/          HQ's own relay node, to sync with the hub (``fieldsync.hq_hub``)

The analyst database has one row per report in ``reports`` (with ``lat``/``lon``
columns), the second report of each fork in ``forked_reports``, every envelope HQ has seen in
``envelopes`` (accepted, duplicate, fork, quarantined or junk, with the reason; never a junk
envelope's bytes), the ``quarantine`` (bytes of envelopes HQ opened but refused, for review
and ``reingest``), ``alerts`` (``fieldsync.hq_alerts``), attachment chunks and attachments
(``media_chunks``, ``media_attachments``, SPEC.md §16.4), enrolled ``authors`` and
``nodes``, and the signed ``receipts`` HQ has issued, each with the status it gives its
envelopes (SPEC.md §9).

Changing the HQ passphrase (``change_passphrase``) and re-encrypting ``hq.db`` under a new
key (``rekey_database``) survive ``kill -9`` at any point: every new file is written whole
beside the old one before anything is renamed, and the next command that opens the HQ
finishes or drops what a crash left (``_finish_passphrase_change``, ``database``), so the
old passphrase or key works, or the new one, never neither.

The work is split by concern; this module keeps the public names of all of them:

* ``fieldsync.hq_schema``: opening hq.db privately, numbered migrations;
* ``fieldsync.hq_ingest``: judging and recording envelopes, the quarantine, re-ingest;
* ``fieldsync.hq_alerts``: alerts (forks, gaps, held, junk, attachments, revoked authors);
* ``fieldsync.hq_receipts``: signing receipts, the receipts bundle;
* ``fieldsync.hq_reports``: one report with its fork and its versions;
* ``fieldsync.hq_media``: attachments; ``fieldsync.hq_hub``: the pull from the hub;
* ``fieldsync.hq_serve``: the analyst's browser view (Datasette).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from fieldsync import (
    cipher_db,
    hq_alerts,
    hq_ingest,
    hq_media,
    hq_receipts,
    hq_reports,
    hq_revocation,
    keystore,
    wipe,
)
from fieldsync.errors import FieldsyncError, InputRefused, NotFound
from fieldsync.faults import crash_point
from fieldsync.forms import hq_form_item
from fieldsync.hq_ingest import (
    MAX_LISTED,
    MAX_LISTED_GAPS,
    MAX_REASON,
    MAX_SEQUENCE_JUMP,
    QUARANTINE_MAX_BYTES,
    QUARANTINE_MAX_ITEMS,
    IngestSummary,
    ReingestSummary,
)
from fieldsync.hq_receipts import RECEIPTED_AS
from fieldsync.hq_schema import (
    DATABASE,
    NewerDatabase,
    insert,
    make_private_directory,
    open_database,
)
from fieldsync.node import Node, Progress, utc_text
from fieldsync.sqlite_tx import immediate_transaction
from fieldsync.store import now_seconds
from fieldsync.wrong_passphrases import WrongPassphraseLimit
from fieldsync_protocol import codec, crypto, membership
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.keytext import KeyKind, fingerprint, key_to_text

__all__ = [
    "DATABASE",
    "FIRST_HQ_KEY_ID",
    "HQ",
    "HQ_SECRET",
    "HUB_NODE",
    "MANIFEST",
    "MAX_LISTED",
    "MAX_LISTED_GAPS",
    "MAX_REASON",
    "MAX_SEQUENCE_JUMP",
    "QUARANTINE_MAX_BYTES",
    "QUARANTINE_MAX_ITEMS",
    "RECEIPTED_AS",
    "HqSecrets",
    "IngestSummary",
    "NewerDatabase",
    "ReingestSummary",
    "create_network",
]

log = logging.getLogger(__name__)

HQ_SECRET = "hq.secret"  # noqa: S105 - a file name, not a secret
#: The key of ``hq.db``, sealed under the HQ passphrase (``HQ.database_key``).
DATABASE_KEY = "hq.dbkey"
MANIFEST = "manifest.item"
#: Suffix of ``hq.secret`` and ``hq.dbkey`` sealed under a new passphrase, before the switch.
CHANGE_SUFFIX = ".new"
#: The next database key, sealed, written before ``PRAGMA rekey`` (as ``cipher_db.rotate``).
NEXT_DATABASE_KEY = DATABASE_KEY + cipher_db.NEXT_KEY_SUFFIX
#: flock(2)ed while the passphrase or the database key changes: one change at a time, and
#: no other command tidies up files a running change is still writing.
KEYS_LOCK = "keys.lock"
HUB_NODE = "node"
FIRST_HQ_KEY_ID = 1


@dataclass
class HqSecrets:
    root_seed: bytes
    certificate_seed: bytes
    receipt_seed: bytes
    hq_secrets: dict[int, bytes]
    network_key: bytes

    def encode(self) -> bytes:
        return codec.encode(
            {
                "cert": self.certificate_seed,
                "hq": [{"id": i, "sk": sk} for i, sk in sorted(self.hq_secrets.items())],
                "knet": self.network_key,
                "rcpt": self.receipt_seed,
                "root": self.root_seed,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> HqSecrets:
        fields = keystore.load_map(data, "HQ secrets", {"cert", "hq", "knet", "rcpt", "root"})
        return cls(
            root_seed=fields["root"],
            certificate_seed=fields["cert"],
            receipt_seed=fields["rcpt"],
            hq_secrets={entry["id"]: entry["sk"] for entry in fields["hq"]},
            network_key=fields["knet"],
        )


def create_network(out: Path, name: str, passphrase: str, kdf_profile: str) -> membership.Manifest:
    if (out / HQ_SECRET).exists():
        raise FieldsyncError(f"{out} already holds an HQ; choose another --out")
    if not 1 <= len(name) <= membership.MAX_NAME:
        raise InputRefused(f"network name must be 1..{membership.MAX_NAME} characters")
    hq_secret = secrets.token_bytes(32)
    keys = HqSecrets(
        root_seed=secrets.token_bytes(32),
        certificate_seed=secrets.token_bytes(32),
        receipt_seed=secrets.token_bytes(32),
        hq_secrets={FIRST_HQ_KEY_ID: hq_secret},
        network_key=secrets.token_bytes(32),
    )
    manifest = membership.Manifest(
        network_id=secrets.token_bytes(membership.NETWORK_ID_SIZE),
        name=name,
        epoch=1,
        root_key=crypto.signing_public_key(keys.root_seed),
        hq_keys={FIRST_HQ_KEY_ID: crypto.box_public_key(hq_secret)},
        receipt_key=crypto.signing_public_key(keys.receipt_seed),
        certificate_key=crypto.signing_public_key(keys.certificate_seed),
    )
    make_private_directory(out)
    keystore.write_private(
        out / HQ_SECRET, keystore.seal_with_passphrase(keys.encode(), passphrase, kdf_profile)
    )
    keystore.write_private(out / MANIFEST, membership.sign_manifest(manifest, keys.root_seed))
    headquarters = HQ(out, passphrase=passphrase)
    try:
        headquarters.database()  # create the analyst database (and its key) now
    finally:
        headquarters.close()  # a leaked connection would keep later writes in the WAL
    return manifest


class HQ:
    def __init__(
        self,
        directory: Path,
        *,
        passphrase: str | None = None,
        quarantine_max_items: int = QUARANTINE_MAX_ITEMS,
        quarantine_max_bytes: int = QUARANTINE_MAX_BYTES,
        wipe_after_wrong_passphrases: int = 0,
    ) -> None:
        """``passphrase``: the HQ passphrase, which ``hq.db`` needs (``unlock`` sets it too).
        ``wipe_after_wrong_passphrases``: destroy the HQ keys (``fieldsync.wipe.wipe_hq``)
        after that many wrong HQ passphrases in a row, counted across processes; 0 never
        does (``[security] hq_wipe_after_wrong_passphrases``)."""
        self.directory = directory
        self.wipe_after_wrong_passphrases = wipe_after_wrong_passphrases
        self.quarantine_max_items = quarantine_max_items
        self.quarantine_max_bytes = quarantine_max_bytes
        self._passphrase = passphrase
        self._db_key: bytes | None = None
        self._db: sqlite_utils.Database | None = None
        self._key_lock_fd: int | None = None

    def manifest_item(self) -> bytes:
        return keystore.read_file(
            self.directory / MANIFEST,
            "HQ manifest",
            "create the network with `fieldsync network create`",
        )

    def published_updates(self) -> list[bytes]:
        """Root-signed items every member must receive besides the manifest and receipts:
        the newest revocation list and key deliveries (SPEC.md §17), then the network's form
        (§18.4). They go in every receipts bundle and to the hub."""
        updates = hq_revocation.published_items(self.database())
        form_item = hq_form_item(self.directory)
        return updates if form_item is None else [*updates, form_item]

    def manifest(self) -> membership.Manifest:
        try:
            return membership.open_manifest(self.manifest_item())
        except RemoteProtocolError as exc:
            raise InputRefused(f"{self.directory / MANIFEST} is damaged: {exc}") from exc

    def unlock(self, passphrase: str) -> HqSecrets:
        self._finish_passphrase_change()
        sealed = keystore.read_file(
            self.directory / HQ_SECRET,
            "HQ secrets",
            "create the network with `fieldsync network create`",
        )
        keys = HqSecrets.decode(self._open_sealed(sealed, passphrase, "HQ secrets"))
        self._passphrase = passphrase
        return keys

    def _open_sealed(self, sealed: bytes, passphrase: str, what: str) -> bytes:
        """Open a file sealed under the HQ passphrase; every try is counted towards
        ``wipe_after_wrong_passphrases`` (``fieldsync.wrong_passphrases``)."""
        with self._wrong_passphrases().attempt():
            return keystore.open_with_passphrase(sealed, passphrase, what)

    def _wrong_passphrases(self) -> WrongPassphraseLimit:
        return WrongPassphraseLimit(
            self.directory,
            self.wipe_after_wrong_passphrases,
            "[security] hq_wipe_after_wrong_passphrases",
            self._wipe,
            f"every HQ key in {self.directory}",
            "this HQ can no longer sign, enrol or read reports: restore the HQ directory from"
            " an offline backup (it opens with the HQ passphrase) or create a new network and"
            " enrol every member again",
        )

    def _wipe(self) -> list[str]:
        self.close()  # the database's files are unlinked: no connection of ours stays open
        self._db_key = None
        self._passphrase = None
        return wipe.wipe_hq(self.directory).destroyed

    def database_key(self) -> bytes:
        """The random key ``hq.db`` is encrypted under, from ``hq.dbkey`` (sealed under the
        HQ passphrase like ``hq.secret``, with its KDF costs). An HQ made before encryption
        gets one here, once the passphrase has opened ``hq.secret``.

        A separate file rather than a field of ``hq.secret``: the HQ secrets keep their
        format, and the analyst database can be opened without decoding the signing keys.
        """
        if self._db_key is not None:
            return self._db_key
        if not (self.directory / HQ_SECRET).exists():
            raise NotFound(f"{self.directory} is not an HQ directory (no {HQ_SECRET})")
        self._finish_passphrase_change()
        passphrase = self._passphrase
        if passphrase is None:
            raise FieldsyncError(
                f"{self.directory / DATABASE} is encrypted under the HQ passphrase: give it"
                " (--passphrase-file FILE, FIELDSYNC_PASSPHRASE or the prompt)"
            )
        path = self.directory / DATABASE_KEY
        if path.exists():
            self._db_key = self._open_sealed(path.read_bytes(), passphrase, "HQ database key")
        else:
            self.unlock(passphrase)  # a wrong passphrase is refused before anything is made
            profile = keystore.profile_of((self.directory / HQ_SECRET).read_bytes(), HQ_SECRET)
            key = secrets.token_bytes(cipher_db.KEY_SIZE)
            keystore.write_private(
                path, keystore.seal_with_passphrase(key, passphrase, profile, check_strength=False)
            )
            self._db_key = key
        return self._db_key

    def database(self) -> sqlite_utils.Database:
        """The analyst database, opened once (0600, encrypted, migrated to this release's
        schema); needs the HQ passphrase (``database_key``)."""
        if self._db is None:
            try:
                db = open_database(self.directory, self.database_key())
            except cipher_db.WrongDatabaseKey:
                if not (self.directory / NEXT_DATABASE_KEY).exists():
                    raise
                db = self._finish_rekey()
            else:
                if (self.directory / NEXT_DATABASE_KEY).exists():
                    self._drop_unused_next_key(db)
            try:
                # An older HQ's plaintext attachment files: sealed now that the key is here.
                hq_media.seal_plaintext_files(self.directory, db)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- changing the HQ passphrase, re-encrypting hq.db ----------------------------------

    @contextlib.contextmanager
    def _key_lock(self) -> Iterator[None]:
        """Hold ``keys.lock`` (re-entrant within this object); refuse at once if another
        process holds it rather than wait for a change that may need a person's answers."""
        if self._key_lock_fd is not None:
            yield
            return
        fd = os.open(self.directory / KEYS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FieldsyncError(
                    f"another fieldsync command is changing the HQ passphrase or database key"
                    f" in {self.directory}; run this one again when it has finished"
                ) from None
            self._key_lock_fd = fd
            yield
        finally:
            self._key_lock_fd = None
            os.close(fd)

    def _finish_passphrase_change(self) -> None:
        """Finish or drop a passphrase change a crash interrupted (no passphrase needed).

        ``change_passphrase`` writes ``hq.secret.new`` then ``hq.dbkey.new``, and its commit
        is the rename of ``hq.secret.new``: while that file exists the old passphrase is
        the one, and both new files are destroyed; once it is gone, a remaining
        ``hq.dbkey.new`` is the new passphrase's and takes the place of ``hq.dbkey``."""
        secret_new = self.directory / (HQ_SECRET + CHANGE_SUFFIX)
        dbkey_new = self.directory / (DATABASE_KEY + CHANGE_SUFFIX)
        partial = [p.with_name(f".{p.name}.tmp") for p in (secret_new, dbkey_new)]
        if not any(p.exists() for p in (secret_new, dbkey_new, *partial)):
            return
        with self._key_lock():
            if secret_new.exists() or not dbkey_new.exists():
                for path in (secret_new, dbkey_new, *partial):
                    if path.exists():
                        cipher_db.destroy_file(path)
                log.info("dropped an HQ passphrase change that a crash interrupted")
            else:
                for path in partial:
                    if path.exists():
                        cipher_db.destroy_file(path)
                cipher_db.replace_destroying(dbkey_new, self.directory / DATABASE_KEY)
                log.info("finished an HQ passphrase change that a crash interrupted")

    def _finish_rekey(self) -> sqlite_utils.Database:
        """``hq.db`` no longer opens under ``hq.dbkey`` but a rekey left ``hq.dbkey.next``:
        a crash came after ``PRAGMA rekey``; the next key becomes the key."""
        with self._key_lock():
            next_path = self.directory / NEXT_DATABASE_KEY
            passphrase = self._passphrase
            if passphrase is None:  # database_key() has just needed it
                raise FieldsyncError("the HQ passphrase is needed to finish a rekey")
            key = self._open_sealed(next_path.read_bytes(), passphrase, "HQ database key (next)")
            db = open_database(self.directory, key)
            cipher_db.replace_destroying(next_path, self.directory / DATABASE_KEY)
            self._db_key = key
            log.info("finished an HQ database rekey that a crash interrupted")
            return db

    def _drop_unused_next_key(self, db: sqlite_utils.Database) -> None:
        """``hq.db`` opened under ``hq.dbkey``, so ``hq.dbkey.next`` is from a rekey that
        never reached ``PRAGMA rekey``: destroy it (unless that rekey is still running)."""
        try:
            with self._key_lock():
                cipher_db.destroy_file(self.directory / NEXT_DATABASE_KEY)
        except BaseException:
            db.close()
            raise

    def change_passphrase(self, passphrase: str, ask_new: Callable[[], str]) -> None:
        """Seal ``hq.secret`` and ``hq.dbkey`` under the new passphrase ``ask_new`` gives
        (asked once ``passphrase`` has opened both); the old passphrase stops working.

        Crash points: ``hq-passphrase:secret-written``, ``:both-written`` (the old
        passphrase still works), ``:secret-replaced`` (the commit: the new one works, and
        the next command moves ``hq.dbkey.new`` into place), ``:replaced``."""
        with self._key_lock():
            self.unlock(passphrase)  # refuses a wrong passphrase before anything is asked
            # An interrupted rekey is finished now, while its key is sealed under the
            # passphrase in use; an HQ older than database encryption gets hq.dbkey here.
            self.database()
            self.close()
            new_passphrase = ask_new()
            if new_passphrase == passphrase:
                raise InputRefused(
                    "the new HQ passphrase is the one you have now: choose another (the"
                    " passphrase was not changed)"
                )
            keystore.check_passphrase_strength(new_passphrase)
            secret_path = self.directory / HQ_SECRET
            dbkey_path = self.directory / DATABASE_KEY
            sealed_secret = secret_path.read_bytes()
            hq_keys = keystore.open_with_passphrase(sealed_secret, passphrase, "HQ secrets")
            profile = keystore.profile_of(sealed_secret, HQ_SECRET)
            resealed = [
                (secret_path, hq_keys),
                (dbkey_path, self.database_key()),
            ]
            for path, plaintext in resealed:
                keystore.write_private(
                    path.with_name(path.name + CHANGE_SUFFIX),
                    keystore.seal_with_passphrase(
                        plaintext, new_passphrase, profile, check_strength=False
                    ),
                )
                crash_point(
                    "hq-passphrase:secret-written"
                    if path == secret_path
                    else "hq-passphrase:both-written"
                )
            for path, _ in resealed:
                cipher_db.replace_destroying(path.with_name(path.name + CHANGE_SUFFIX), path)
                crash_point(
                    "hq-passphrase:secret-replaced"
                    if path == secret_path
                    else "hq-passphrase:replaced"
                )
            self._passphrase = new_passphrase

    def rekey_database(self) -> None:
        """Re-encrypt ``hq.db`` under a new random key and destroy the old one (after a
        suspected leak of it): the old key no longer opens the database, the WAL or any page
        left in the file.

        As ``cipher_db.rotate``: the next key is sealed to ``hq.dbkey.next`` before
        ``PRAGMA rekey`` rewrites every page in one transaction, then a truncating
        checkpoint writes them over the old ones and the next key replaces ``hq.dbkey``.
        Crash points: ``hq-rekey:next-written`` (the old key still opens the database;
        the next command drops the next one), ``:rekeyed`` and ``:checkpointed`` (the next
        command makes the next key the key), ``:replaced``."""
        with self._key_lock():
            passphrase = self._passphrase
            if passphrase is None:
                raise FieldsyncError("rekeying hq.db needs the HQ passphrase")
            conn = self.database().conn
            if conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
                raise FieldsyncError(
                    f"{self.directory / DATABASE} is in use by another fieldsync command"
                    " (hq serve, hq ingest --hub?): stop it, then run hq rekey again"
                )
            dbkey_path = self.directory / DATABASE_KEY
            next_path = self.directory / NEXT_DATABASE_KEY
            profile = keystore.profile_of(dbkey_path.read_bytes(), DATABASE_KEY)
            key = secrets.token_bytes(cipher_db.KEY_SIZE)
            keystore.write_private(
                next_path,
                keystore.seal_with_passphrase(key, passphrase, profile, check_strength=False),
            )
            crash_point("hq-rekey:next-written")
            conn.execute(cipher_db.key_pragma("rekey", key))
            crash_point("hq-rekey:rekeyed")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            crash_point("hq-rekey:checkpointed")
            cipher_db.replace_destroying(next_path, dbkey_path)
            self._db_key = key
            crash_point("hq-rekey:replaced")

    # --- enrolment ---------------------------------------------------------------------

    def enroll(
        self, request_text: str, passphrase: str, role: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Register the request's node (and author); return the enrolment text and a summary."""
        return self.enroll_with_keys(request_text, self.unlock(passphrase), role)

    def enroll_with_keys(
        self, request_text: str, keys: HqSecrets, role: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        try:
            request = membership.decode_request(request_text)
        except RemoteProtocolError as exc:
            raise InputRefused(f"enrolment request refused: {exc}") from exc
        manifest = self.manifest()
        db = self.database()
        role = role or ("author" if request.author_key else "relay")
        node_text = key_to_text(KeyKind.NODE, request.node_key)
        # A node already enrolled asks again for each further monitor (`author add`): it
        # keeps its serial, and the request's author is registered next to the others.
        known = db.execute(
            "SELECT serial, role FROM nodes WHERE node_key = ? ORDER BY serial LIMIT 1",
            [node_text],
        ).fetchone()
        serial = (
            int(known[0])
            if known is not None
            else int(db.execute("SELECT coalesce(max(serial), 0) + 1 FROM nodes").fetchone()[0])
        )
        # Only the network, the key and an expiry: a peer learns no role or serial (§5).
        cert = membership.sign_certificate(
            membership.NodeCertificate(
                manifest.network_id, request.node_key, hq_revocation.certificate_expiry()
            ),
            keys.certificate_seed,
        )
        summary: dict[str, Any] = {
            "node": node_text,
            "node_fingerprint": fingerprint(KeyKind.NODE, request.node_key),
            "role": role,
            "serial": serial,
        }
        with immediate_transaction(db.conn):
            if known is None:
                insert(
                    db,
                    "nodes",
                    {
                        "node_key": node_text,
                        "role": role,
                        "serial": serial,
                        "enrolled_at": utc_text(now_seconds()),
                    },
                )
            elif role == "author" and known[1] != "author":
                db.conn.execute("UPDATE nodes SET role = 'author' WHERE node_key = ?", [node_text])
            if request.author_key is not None:
                author_text = key_to_text(KeyKind.AUTHOR, request.author_key)
                insert(
                    db,
                    "authors",
                    {
                        "author_key": author_text,
                        "name": request.author_name or "",
                        "node_key": node_text,
                        "enrolled_at": utc_text(now_seconds()),
                    },
                    replace=True,
                )
                summary["author"] = author_text
                summary["author_fingerprint"] = fingerprint(KeyKind.AUTHOR, request.author_key)
                summary["author_name"] = request.author_name
        network_key = hq_revocation.network_key_in_use(
            self.directory, keys.root_seed, keys.network_key
        ).key  # the network key in use now (SPEC.md §17.5)
        enrolment = membership.Enrolment(self.manifest_item(), network_key, cert)
        text = membership.encode_enrolment(enrolment, request.node_key, secrets.token_bytes(32))
        return text, summary

    def enrolled_authors(self) -> dict[bytes, str]:
        from fieldsync_protocol.keytext import key_from_text

        return {
            key_from_text(KeyKind.AUTHOR, row["author_key"]): row["name"]
            for row in self.database()["authors"].rows
        }

    # --- ingest, quarantine (fieldsync.hq_ingest) ---------------------------------------

    def ingest_files(
        self, paths: Iterable[Path], passphrase: str, progress: Progress | None = None
    ) -> IngestSummary:
        return hq_ingest.ingest_files(self, paths, passphrase, progress)

    def ingest_items(self, items: Iterator[bytes], keys: HqSecrets, summary: IngestSummary) -> None:
        hq_ingest.ingest_items(self, items, keys, summary)

    def finish_ingest(self, summary: IngestSummary) -> None:
        hq_ingest.finish_ingest(self, summary)

    def gaps(self) -> tuple[dict[str, list[dict[str, int]]], int]:
        """Open gaps per author as ranges (at most ``MAX_LISTED_GAPS``), and how many."""
        found, total, _ = hq_ingest.gaps(self)
        return found, total

    def quarantine_list(self) -> Iterator[dict[str, Any]]:
        return hq_ingest.quarantine_list(self)

    def quarantine_entry(self, entry_id: int) -> dict[str, Any]:
        return hq_ingest.quarantine_entry(self, entry_id)

    def reingest(self, entry_ids: Iterable[int] | None, passphrase: str) -> ReingestSummary:
        return hq_ingest.reingest(self, entry_ids, passphrase)

    # --- alerts and reports (fieldsync.hq_alerts, fieldsync.hq_reports) -----------------

    def alerts(self, everything: bool = False) -> list[dict[str, Any]]:
        """Open alerts, newest first (``everything``: acknowledged and resolved too)."""
        return hq_alerts.listing(self.database(), everything)

    def acknowledge(self, alert_ids: Iterable[int]) -> list[dict[str, Any]]:
        db = self.database()
        with immediate_transaction(db.conn):
            return hq_alerts.acknowledge(db, list(alert_ids), utc_text(now_seconds()))

    def raise_alert(self, event: hq_alerts.Event) -> dict[str, Any] | None:
        """Record an alert from outside an ingest (e.g. a revoked author's report)."""
        db = self.database()
        with immediate_transaction(db.conn):
            return hq_alerts.raise_alert(db, event, utc_text(now_seconds()))

    def report(self, ref: str, all_versions: bool = False) -> dict[str, Any]:
        return hq_reports.show(self.database(), ref, all_versions)

    # --- receipts (fieldsync.hq_receipts) -----------------------------------------------

    def issue_receipts(self, passphrase: str) -> int:
        """Sign receipts for every envelope HQ has recorded but not yet receipted."""
        return self.sign_pending_receipts(self.unlock(passphrase))

    def sign_pending_receipts(self, keys: HqSecrets) -> int:
        return hq_receipts.sign_pending_receipts(self, keys)

    def write_receipts_bundle(self, out: Path, passphrase: str) -> dict[str, int]:
        return hq_receipts.write_receipts_bundle(self, out, passphrase)

    def receipt_items(self, after: int = 0, limit: int = 16) -> list[tuple[int, bytes]]:
        return hq_receipts.receipt_items(self, after, limit)

    # --- the hub path ------------------------------------------------------------------

    def hub_node(self, keys: HqSecrets) -> Path:
        """HQ's own node home (HQDIR/node), enrolled on first use, to sync with the hub.

        It holds only sealed items and the network key, like any relay; HQ's secret keys
        stay in hq.secret.
        """
        home = self.directory / HUB_NODE
        if not (home / "membership.bin").exists():
            node = Node(home)
            try:
                if not (home / "node.secret").exists():
                    node.init(None, None, "interactive")
                request = (home / "request.txt").read_text()
                enrolment, _ = self.enroll_with_keys(request, keys, "hub")
                node.join(enrolment)
            finally:
                node.close()
        return home
