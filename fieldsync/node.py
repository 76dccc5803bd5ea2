"""A field node's home directory and what a monitor or courier does with it.

Layout of a node home (SPEC.md §15)::

    node.secret        X25519 static key of the node (0600; needed unattended; homefiles.py)
    author.secret      the first monitor's ed25519 seed and name, sealed with their passphrase
    authors/*.secret   every further monitor's (``author add``), same salt and costs
    request.txt        the enrolment request to hand to HQ in person (removed by ``join``)
    unlock.failures    author passphrases tried since the last right one (only with
                       [security] wipe_after_wrong_passphrases; fieldsync.wrong_passphrases)
    membership.bin     manifest item, network key and this node's certificate (after join;
                       homefiles.py)
    store.db           the item store (sealed items only; see store.py), encrypted at rest
    store.key          its SQLCipher key, rotated by the janitor (0600; cipher_db.py);
                       store.key.next only while a rotation runs
    daemon.lock        held by the running daemon; its pid and control socket (homelock.py)
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldsync import cipher_db, homefiles, keystore, limits
from fieldsync.errors import (
    FieldsyncError,
    InputRefused,
    NotFound,
    NotInitialised,
    WrongPassphrase,
)
from fieldsync.priority import iter_by_priority
from fieldsync.store import ImportCounts, OwnRecord, Store, now_seconds
from fieldsync.wrong_passphrases import UNLOCK_FAILURES as UNLOCK_FAILURES  # re-exported
from fieldsync.wrong_passphrases import WrongPassphraseLimit
from fieldsync_protocol import crypto, membership
from fieldsync_protocol.bundle import HEAD_SIZE, SEALED_CHUNK, BundleReader, BundleWriter, sealed_by
from fieldsync_protocol.errors import LocalProtocolError, RemoteProtocolError
from fieldsync_protocol.keytext import KeyKind, fingerprint, key_to_text
from fieldsync_protocol.kinds import ItemKind
from fieldsync_protocol.padding import MAX_ITEM

# What parses items, writes or lists reports (the sealed outbox, media, envelopes) and wipes
# is imported in the methods that use it: ``fieldsync status`` needs none of it, and every
# command imports this module (issue 13 item 6; tests/cli/test_startup.py).
if TYPE_CHECKING:
    from fieldsync import media, outbox
    from fieldsync.outbox import OutboxKeys
    from fieldsync_protocol.items import Checked
    from fieldsync_protocol.keydelivery import KeyDelivery
    from fieldsync_protocol.revocation import RevocationList

NODE_SECRET = "node.secret"  # noqa: S105 - a file name
AUTHOR_SECRET = "author.secret"  # noqa: S105 - a file name
#: Further author keys of a node that serves several monitors, under random file names.
AUTHORS_DIR = "authors"
#: Bytes the author's name takes inside a sealed author key, padded: the file's size must
#: not tell names apart (a name is at most 64 characters, 4 bytes each in UTF-8).
AUTHOR_NAME_ROOM = 4 * membership.MAX_NAME
REQUEST = "request.txt"
MEMBERSHIP = "membership.bin"
STORE = "store.db"

#: Receives (bytes done, bytes total) during long operations.
Progress = Callable[[int, int], None]
#: Smallest --max-size: the file nonce, the largest item and two sealed bundle chunks.
MIN_BUNDLE_SIZE = 16 + MAX_ITEM + 8 + 3 * SEALED_CHUNK


#: adjtimex(2) returns TIME_ERROR while the kernel's clock is not synchronised (STA_UNSYNC:
#: what timedatectl's NTPSynchronized reads too, from whichever NTP client disciplines it).
_TIME_ERROR = 5


def clock_status() -> dict[str, Any]:
    """How far the device clock can be trusted (Pis before the Pi 5 have no RTC).

    One adjtimex(2) system call in read-only mode (modes = 0), not a ``timedatectl``
    process per report (~50 ms on a Pi; issue 13 item 6). Anything but Linux: unknown.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        timex = ctypes.create_string_buffer(512)  # larger than any struct timex; zero modes
        state = int(libc.adjtimex(timex))
    except (OSError, AttributeError):
        return {"source": "unknown", "synced": False}
    if 0 <= state < _TIME_ERROR:
        return {"source": "ntp", "synced": True}
    return {"source": "unknown", "synced": False}


def _warn(message: str, *args: object) -> None:
    """Log a warning as ``fieldsync.node``. ``logging`` is imported here, not at the top:
    every command imports this module and almost none logs (issue 13 item 6)."""
    import logging

    logging.getLogger(__name__).warning(message, *args)


def utc_text(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Membership:
    """This node's place in the network: the manifest, its certificate and network keys."""

    manifest_item: bytes
    manifest: membership.Manifest
    network_key: bytes
    certificate: bytes
    certificate_info: membership.NodeCertificate
    #: The network key HQ rotates to, accepted next to ``network_key`` until the switch.
    next_key: homefiles.NextNetworkKey | None = None
    network_key_id: int = 0

    @property
    def network_keys(self) -> tuple[bytes, ...]:
        """Every network key this node accepts now: the current one, then the next."""
        return (self.network_key,) + (() if self.next_key is None else (self.next_key.key,))


@dataclass(frozen=True)
class Author:
    """An unlocked author key: what signs the reports of one monitor."""

    seed: bytes
    #: None for a key sealed before names were kept in it, and for a decoy (duress).
    name: str | None
    path: Path

    @property
    def key(self) -> bytes:
        return crypto.signing_public_key(self.seed)


def author_plaintext(seed: bytes, name: str | None) -> bytes:
    """What an author key file seals: the seed, then the name padded to a fixed size."""
    encoded = (name or "").encode("utf-8")
    if b"\0" in encoded or len(encoded) > AUTHOR_NAME_ROOM:
        raise InputRefused(
            f"an author name is 1 to {membership.MAX_NAME} characters, without NUL characters"
        )
    return seed + encoded.ljust(AUTHOR_NAME_ROOM, b"\0")


def _same_name(typed: str, stored: str) -> bool:
    return " ".join(typed.split()).casefold() == " ".join(stored.split()).casefold()


def _split_author(plaintext: bytes, path: Path) -> tuple[bytes, str | None]:
    seed, rest = plaintext[:32], plaintext[32:].rstrip(b"\0")
    try:
        return seed, rest.decode("utf-8") or None
    except UnicodeDecodeError:
        raise InputRefused(f"author key {path} is damaged (its name is not UTF-8)") from None


@dataclass(frozen=True)
class OwnReport:
    """One report of the unlocked author, with what HQ's receipts say of it."""

    report_id: str
    sequence: int
    created_at: int
    #: sealed (no receipt yet), held or dropped at HQ, or delivered (SPEC.md §9).
    status: str
    #: When the node received HQ's "accepted" (None until delivered).
    delivered_at: int | None
    attachments: tuple[media.AttachmentStatus, ...] = ()


@dataclass(frozen=True)
class BundleImport:
    """What importing one bundle file did."""

    counts: ImportCounts
    items_in_file: int


class Node:
    """Operations on one node home. Open stores are closed by ``close``."""

    def __init__(
        self,
        home: Path,
        store: Store | None = None,
        wipe_after_wrong_passphrases: int = 0,
        *,
        in_daemon: bool = False,
    ) -> None:
        """``store``: an open store to use (the daemon's, on its store thread); ``close``
        leaves it open. Without it the node opens its own on first use.
        ``wipe_after_wrong_passphrases``: wipe the node (``fieldsync.wipe``) after that many
        wrong author passphrases in a row; 0 never does ([security] of the config).
        ``in_daemon``: the caller is the daemon on this home (its web app): such a wipe does
        not kill it (``KeysDestroyed`` tells it to stop on its own)."""
        self.home = home
        self.wipe_after_wrong_passphrases = wipe_after_wrong_passphrases
        self.in_daemon = in_daemon
        self._store: Store | None = store
        self._owns_store = store is None

    # --- set-up ------------------------------------------------------------------------

    def init(self, author_name: str | None, passphrase: str | None, kdf_profile: str) -> Path:
        """Create node keys (and an author key); write the enrolment request."""
        if (self.home / NODE_SECRET).exists():
            raise FieldsyncError(f"{self.home} already holds a node; choose another --home")
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        node_secret = secrets.token_bytes(32)
        author_seed: bytes | None = None
        if author_name is not None:
            if passphrase is None:
                raise InputRefused("an author key needs a passphrase")
            author_seed = secrets.token_bytes(32)
            self._write_author_key(author_seed, author_name, passphrase, kdf_profile)
        keystore.write_private(self.home / NODE_SECRET, homefiles.encode_node_secret(node_secret))
        path = self._write_request(author_seed, author_name, crypto.box_public_key(node_secret))
        self.store()  # create the store now so `status` works before join
        return path

    def add_author(self, name: str, passphrase: str, kdf_profile: str) -> Path:
        """Another monitor on this node: a new author key under their own passphrase and an
        enrolment request naming it, for HQ to register in person (the node is already
        enrolled: ``join`` with HQ's answer only removes the request)."""
        node_secret = self.node_secret()
        if (self.home / REQUEST).exists():
            raise InputRefused(
                f"an enrolment request is still waiting at {self.home / REQUEST}: take it to HQ"
                " and run `join` with HQ's answer first, then add the next author"
            )
        seed = secrets.token_bytes(32)
        self._write_author_key(seed, name, passphrase, kdf_profile)
        return self._write_request(seed, name, crypto.box_public_key(node_secret))

    def _write_author_key(self, seed: bytes, name: str, passphrase: str, profile: str) -> Path:
        """Seal a new author key; further keys share the first one's salt and costs, so one
        key derivation finds whichever author a passphrase belongs to."""
        if not name.strip() or len(name) > membership.MAX_NAME:
            raise InputRefused(
                f"give the author a name or code of 1 to {membership.MAX_NAME} characters"
                " (HQ shows it next to reports)"
            )
        plaintext = author_plaintext(seed, name)
        existing = self.author_files()
        like = existing[0].read_bytes() if existing else None
        if existing:
            try:
                keystore.open_first([p.read_bytes() for p in existing], passphrase, "author key")
            except WrongPassphrase:
                pass
            else:
                # Said without naming whose: the person choosing it is not its owner.
                raise InputRefused("this passphrase cannot be used here: choose another")
        sealed = keystore.seal_with_passphrase(
            plaintext, passphrase, profile, with_alt=True, user_inputs=[name], like=like
        )
        path = (
            self.home / AUTHORS_DIR / f"{secrets.token_hex(8)}.secret"
            if existing
            else self.home / AUTHOR_SECRET
        )
        if existing:
            (self.home / AUTHORS_DIR).mkdir(mode=0o700, exist_ok=True)
        keystore.write_private(path, sealed)
        return path

    def _write_request(self, seed: bytes | None, name: str | None, node_key: bytes) -> Path:
        request = membership.EnrolmentRequest(
            node_key=node_key,
            author_key=None if seed is None else crypto.signing_public_key(seed),
            author_name=name,
            created=now_seconds(),
        )
        path = self.home / REQUEST
        keystore.write_private(path, (membership.encode_request(request, seed) + "\n").encode())
        return path

    def author_files(self) -> list[Path]:
        """Every author key file of this node: ``author.secret`` first, then the others."""
        first = [self.home / AUTHOR_SECRET] if (self.home / AUTHOR_SECRET).exists() else []
        return first + sorted((self.home / AUTHORS_DIR).glob("*.secret"))

    def node_secret(self) -> bytes:
        path = self.home / NODE_SECRET
        data = keystore.read_file(path, "node key", "run `fieldsync --home DIR init` first")
        return homefiles.decode_node_secret(data, path)

    def is_author(self) -> bool:
        return bool(self.author_files())

    def join(self, enrolment_text: str) -> Membership:
        """Take HQ's enrolment; then the request is removed (it names the author and their
        key, which a seized node must not show). A node that has already joined keeps its
        membership: HQ's answer to a further author's request (``add_author``) only
        confirms that HQ registered that author."""
        from fieldsync_protocol.items import check_item

        node_secret = self.node_secret()
        try:
            enrolment, manifest, cert = membership.decode_enrolment(enrolment_text, node_secret)
        except RemoteProtocolError as exc:
            raise InputRefused(f"enrolment refused: {exc}") from exc
        if (self.home / MEMBERSHIP).exists():
            member = self.membership()
            if member.manifest.network_id != manifest.network_id:
                raise InputRefused(
                    "enrolment refused: it is for another network than the one this node"
                    f" joined ({member.manifest.name!r})"
                )
            self._remove_request()
            return member
        data = homefiles.encode_membership(
            homefiles.MembershipFile(
                enrolment.manifest_item, enrolment.network_key, enrolment.certificate
            )
        )
        keystore.write_private(self.home / MEMBERSHIP, data)
        store = self.store()
        with store.transaction():
            store.add_checked(
                check_item(enrolment.manifest_item, manifest), ImportCounts(), now_seconds()
            )
        self._remove_request()
        return Membership(
            enrolment.manifest_item, manifest, enrolment.network_key, enrolment.certificate, cert
        )

    def _remove_request(self) -> None:
        """Overwrite, then unlink, the enrolment request (as ``wipe`` destroys key files)."""
        path = self.home / REQUEST
        try:
            cipher_db.destroy_file(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            _warn("could not remove %s: %s", path, exc.strerror or exc)

    def membership(self) -> Membership:
        path = self.home / MEMBERSHIP
        if not path.exists():
            if not (self.home / NODE_SECRET).exists():
                raise NotInitialised(
                    f"{self.home} is not a fieldsync node; run `fieldsync --home {self.home} init`"
                )
            raise NotInitialised(
                f"{self.home} has not joined a network;"
                f" take {self.home / REQUEST} to HQ and run `join`"
            )
        fields = self._membership_file()
        try:
            manifest = membership.open_manifest(fields.manifest_item)
            cert = membership.open_certificate(fields.certificate, manifest)
        except RemoteProtocolError as exc:
            raise InputRefused(f"membership file {path} is damaged: {exc}") from exc
        return Membership(
            fields.manifest_item,
            manifest,
            fields.network_key,
            fields.certificate,
            cert,
            fields.next_key,
            fields.network_key_id,
        )

    def _membership_file(self) -> homefiles.MembershipFile:
        path = self.home / MEMBERSHIP
        return homefiles.decode_membership(path.read_bytes(), path)

    def _write_membership(self, fields: homefiles.MembershipFile) -> None:
        keystore.write_private(self.home / MEMBERSHIP, homefiles.encode_membership(fields))

    # --- key deliveries and network-key rotation (SPEC.md §17.5) -----------------------

    def open_deliveries(self, items: Sequence[Checked]) -> list[KeyDelivery]:
        """The key deliveries among ``items`` that are sealed to this node and verify."""
        deliveries = [c for c in items if c.item.kind is ItemKind.KEY_DELIVERY]
        if not deliveries:
            return []
        from fieldsync_protocol.keydelivery import open_delivery

        member = self.membership()
        secret = self.node_secret()
        opened: list[KeyDelivery] = []
        for checked in deliveries:
            try:
                delivery = open_delivery(checked.item.fields, member.manifest, secret)
            except RemoteProtocolError as exc:
                # Anyone who knows our node key can seal to it: not HQ's, so ignored.
                _warn("ignoring a key delivery sealed to this node: %s", exc)
                continue
            if delivery is not None:
                opened.append(delivery)
        return opened

    def adopt_delivery(self, delivery: KeyDelivery, clock: int) -> bool:
        """Take HQ's renewed certificate and network key from a newer delivery; a newer key
        id becomes the next key, used alone once the running clock reaches ``clock`` +
        grace. An older or replayed delivery changes nothing."""
        fields = self._membership_file()
        if delivery.serial <= fields.delivery_serial:
            return False
        fields = dataclasses.replace(
            fields, certificate=delivery.certificate, delivery_serial=delivery.serial
        )
        pending = fields.next_key
        if delivery.network_key_id > fields.network_key_id and (
            pending is None or delivery.network_key_id > pending.key_id
        ):
            fields = dataclasses.replace(
                fields,
                next_key=homefiles.NextNetworkKey(
                    delivery.network_key_id, delivery.network_key, clock + delivery.grace
                ),
            )
        self._write_membership(fields)
        self.switch_network_key(clock)
        return True

    def switch_network_key(self, clock: int) -> bool:
        """Replace the network key by the next one once its grace period is over: from then
        on the previous key opens nothing here."""
        fields = self._membership_file()
        pending = fields.next_key
        if pending is None or clock < pending.switch_at:
            return False
        self._write_membership(
            dataclasses.replace(
                fields, network_key=pending.key, network_key_id=pending.key_id, next_key=None
            )
        )
        return True

    def store(self) -> Store:
        if self._store is None:
            if not (self.home / NODE_SECRET).exists():
                raise NotInitialised(
                    f"{self.home} is not a fieldsync node; run `fieldsync --home {self.home} init`"
                )
            self._store = Store(self.home / STORE)
        return self._store

    def close(self) -> None:
        if self._store is not None and self._owns_store:
            self._store.close()
            self._store = None

    # --- reports -----------------------------------------------------------------------

    def unlock_author(self, passphrase: str, name: str | None = None) -> bytes:
        """The seed of the author whose passphrase this is (see ``unlock``)."""
        return self.unlock(passphrase, name).seed

    def unlock(self, passphrase: str, name: str | None = None) -> Author:
        """The author whose passphrase this is: the passphrase chooses among the node's
        authors (their names are sealed, so there is no list to pick from); ``name``, when
        given, must be theirs too. A duress passphrase silently destroys that author's real
        key (and, on a node with one author, the store's own-report records) and returns
        the decoy (an author with no reports). Wrong passphrases are counted across all
        authors when ``wipe_after_wrong_passphrases`` is set, and the last one wipes every
        key of the node."""
        files = self._author_files_or_refuse()
        with self._wrong_passphrases().attempt():
            path, seed, stored_name = self._open_author(files, passphrase, name)
        return Author(seed, stored_name, path)

    def _open_author(
        self, files: list[Path], passphrase: str, name: str | None
    ) -> tuple[Path, bytes, str | None]:
        sealed = [p.read_bytes() for p in files]
        index, opened = keystore.open_first(sealed, passphrase, "author key")
        path = files[index]
        if opened.duress:
            self._duress_wipe(opened.plaintext, passphrase, path, alone=len(files) == 1)
            return path, opened.plaintext, None
        seed, stored_name = _split_author(opened.plaintext, path)
        if name is not None and stored_name is not None and not _same_name(name, stored_name):
            # The same answer as a wrong passphrase: names are not confirmed one by one.
            raise WrongPassphrase("wrong passphrase for author key")
        return path, seed, stored_name

    def _author_files_or_refuse(self) -> list[Path]:
        files = self.author_files()
        if not files and not (self.home / NODE_SECRET).exists():
            raise NotInitialised(
                f"{self.home} is not a fieldsync node; run `fieldsync --home {self.home} init`"
            )
        if not files:
            raise FieldsyncError(
                f"{self.home} is a relay-only node (no author key);"
                " reports are written on author nodes (`fieldsync author add NAME` adds one)"
            )
        return files

    def set_duress_passphrase(self, passphrase: str, duress_passphrase: str) -> None:
        """Let ``duress_passphrase`` open a decoy in place of the author whose passphrase
        ``passphrase`` is (and destroy that author's real key)."""
        files = self._author_files_or_refuse()
        sealed_files = [p.read_bytes() for p in files]
        index, opened = keystore.open_first(sealed_files, passphrase, "author key")
        if opened.duress:
            raise WrongPassphrase("wrong passphrase for author key")  # the owner sets it
        try:
            keystore.open_first(sealed_files, duress_passphrase, "author key")
        except WrongPassphrase:
            pass
        else:
            raise InputRefused(
                "the duress passphrase must differ from your passphrase (and from every"
                " passphrase on this node)"
            )
        updated = keystore.set_duress(
            sealed_files[index], duress_passphrase, secrets.token_bytes(32), "author key"
        )
        keystore.write_private(files[index], updated)

    def change_passphrase(self, passphrase: str, ask_new: Callable[[], str]) -> Author:
        """Seal the key of the author whose passphrase ``passphrase`` is under the new
        passphrase ``ask_new`` gives (asked only once ``passphrase`` opened a key); the old
        one stops opening it.

        ``passphrase`` is checked as ``unlock`` checks it: a wrong one is counted towards
        ``wipe_after_wrong_passphrases``, and a duress passphrase destroys the real key
        there and then, so what gets the new passphrase is the decoy. The change then goes
        on exactly as for a real key (same checks, same messages, same files written):
        whoever watches, or forces, the change cannot tell which passphrase was typed, and
        the real key is gone either way. The duress box of a real key is kept, so its
        duress passphrase still opens the decoy.

        The new passphrase is checked for strength without the author's name as a word to
        avoid: the decoy has no name, and a refusal that only a real key gives would tell
        an observer that the other one was a duress passphrase.
        """
        for leftover in self._interrupted_key_writes():
            # A change a crash interrupted before its rename: that key, under a passphrase
            # the monitor never confirmed working, must not outlive it on disk.
            cipher_db.destroy_file(leftover)
        author = self.unlock(passphrase)
        new_passphrase = ask_new()
        keystore.check_passphrase_strength(new_passphrase)
        files = self.author_files()
        sealed_files = [p.read_bytes() for p in files]
        try:
            index, opened = keystore.open_first(sealed_files, new_passphrase, "author key")
        except WrongPassphrase:
            pass
        else:
            if files[index] == author.path and not opened.duress:
                raise InputRefused(
                    "the new passphrase is the one you have now: choose another (the"
                    " passphrase was not changed)"
                )
            # Another author's passphrase, or a duress one: as for `author add`, said
            # without naming whose it is.
            raise InputRefused(
                "this passphrase cannot be used here: choose another (the passphrase was not"
                " changed)"
            )
        own = files.index(author.path)
        updated = keystore.reseal(sealed_files[own], passphrase, new_passphrase, "author key")
        keystore.replace_private(author.path, updated, "author-passphrase")
        return author

    def _interrupted_key_writes(self) -> list[Path]:
        """Temporary files ``keystore`` writes author keys to before renaming them."""
        return [
            tmp
            for path in self.author_files()
            if (tmp := path.with_name(f".{path.name}.tmp")).exists()
        ]

    def _duress_wipe(
        self, decoy_seed: bytes, duress_passphrase: str, path: Path, *, alone: bool
    ) -> None:
        """Make the decoy the author key at ``path``: the real key is gone, so what was
        sealed to it on this node opens for nobody. With one author, also forget every own
        report mark, leaving a node that looks like a new author's (its relayed items, own
        sealed reports included, stay and still travel to HQ); other authors' records stay."""
        sealed = path.read_bytes()
        decoy = decoy_seed.ljust(keystore.box_size(sealed, "author key"), b"\0")
        keystore.write_private(
            path,
            keystore.seal_with_passphrase(
                decoy, duress_passphrase, with_alt=True, check_strength=False, like=sealed
            ),
        )
        if not alone:
            return
        self.close()  # the scrub takes its own connection; ours may hold a read snapshot
        from fieldsync import wipe

        problems: list[str] = []
        wipe.scrub_store(self.home / STORE, problems)

    def _wrong_passphrases(self) -> WrongPassphraseLimit:
        """Author passphrases are counted across all authors; the last one allowed wipes
        every key of the node (``fieldsync.wrong_passphrases``)."""
        return WrongPassphraseLimit(
            self.home,
            self.wipe_after_wrong_passphrases,
            "[security] wipe_after_wrong_passphrases",
            self._wipe,
            "every key on this node",
            "set it up again with `fieldsync init` and enrol it at HQ in person",
        )

    def _wipe(self) -> list[str]:
        from fieldsync import wipe

        self.close()  # the wipe scrubs the store with its own connection
        return wipe.wipe_node(self.home, kill_daemon=not self.in_daemon).destroyed

    def add_report(
        self,
        fields: dict[str, Any],
        passphrase: str,
        attach: Sequence[Path] = (),
        progress: Progress | None = None,
        author_name: str | None = None,
    ) -> str:
        """Validate, sign, seal and store a report with its attachments; return its id.

        Signed by the author whose passphrase ``passphrase`` is (``author_name``: theirs).

        Each file in ``attach`` is streamed into chunk items (fieldsync.media) after the
        report's own fields validate and before the report is sealed, which names them.
        """
        from fieldsync import media

        self.membership()  # an unjoined node fails here, before any work
        author_seed = self.unlock_author(passphrase, author_name)
        now = time.time()
        body = self.draft_report(fields, now)
        store = self.store()
        prepared: list[media.PreparedAttachment] = []
        try:
            for path in attach:
                prepared.append(media.encrypt_file(store, path, now_seconds(), progress))
            return self.seal_report(body, author_seed, prepared, now)
        except BaseException:
            media.discard_chunks(store, prepared)
            raise

    def check_report(self, fields: dict[str, Any]) -> None:
        """Refuse now what ``add_report`` would refuse: before anyone types a passphrase."""
        self.draft_report(fields, time.time())

    def draft_report(
        self, fields: dict[str, Any], now: float, channel: str = "cli"
    ) -> dict[str, Any]:
        """The report body ``fields`` make at ``now``, validated: what ``seal_report`` signs.

        Needs no key, so a form can be checked before the passphrase is asked for.
        """
        from fieldsync_protocol.report import REPORT_ID_RANDOM, report_id, validate_report

        if "attachments" in fields:
            raise InputRefused("attachments are added with --attach FILE, not as report fields")
        self.membership()  # an unjoined node fails here, before any work
        body = {
            "schema": "fieldsync.report/1",
            "id": report_id(secrets.token_bytes(REPORT_ID_RANDOM)),
            "created_at": utc_text(now),
            "clock": clock_status(),
            "origin": {"channel": channel},
            "language": "en",
            "sensitivity": "restricted",
            "consent": {"share_with_hq": True},
            **fields,
        }
        try:
            validate_report(body)
        except RemoteProtocolError as exc:
            raise InputRefused(str(exc)) from exc
        return body

    def seal_report(
        self,
        body: dict[str, Any],
        author_seed: bytes,
        prepared: Sequence[media.PreparedAttachment],
        now: float,
    ) -> str:
        """Sign ``body`` (from ``draft_report``) naming the ``prepared`` attachments, seal it
        to HQ and record it with its chunks in one transaction; return the report id."""
        from fieldsync import media, outbox
        from fieldsync_protocol import envelope
        from fieldsync_protocol.items import check_item
        from fieldsync_protocol.report import validate_report

        member = self.membership()
        store = self.store()
        author = crypto.signing_public_key(author_seed)
        keys = outbox.outbox_keys(author_seed)
        if prepared:
            body = {**body, "attachments": [p.entry.as_body() for p in prepared]}
            try:
                validate_report(body)
            except RemoteProtocolError as exc:
                raise InputRefused(str(exc)) from exc
        key_id = member.manifest.current_hq_key_id

        def seal(conn: sqlite3.Connection, tip: outbox.Tip) -> OwnRecord:
            try:
                sealed = envelope.seal_report(
                    envelope.SealInput(
                        network_id=member.manifest.network_id,
                        hq_key_id=key_id,
                        hq_public_key=member.manifest.hq_keys[key_id],
                        author_seed=author_seed,
                        sequence=tip.sequence + 1,
                        previous=tip.header_hash,
                        claimed_time=int(now),
                        body=body,
                    ),
                    secrets.token_bytes(32),
                )
            except LocalProtocolError as exc:
                raise InputRefused(str(exc)) from exc
            checked = check_item(sealed.item, member.manifest)
            attachments = media.claim_for_report(conn, prepared, author)
            record = outbox.Entry(
                str(body["id"]),
                tip.sequence + 1,
                int(now),
                checked.item.tag,
                sealed.header_hash,
                tuple(attachments),
            )
            return OwnRecord(
                checked,
                outbox.seal_entry(record, keys.public),
                outbox.Tip(tip.sequence + 1, sealed.header_hash),
            )

        store.record_own_report(keys, str(body["id"]), int(now), seal)
        return str(body["id"])

    def reports(self, passphrase: str, name: str | None = None) -> list[OwnReport]:
        """The reports of the author whose passphrase this is, oldest first."""
        from fieldsync.outbox import outbox_keys

        return self.own_reports(outbox_keys(self.unlock_author(passphrase, name)))

    def own_reports(self, keys: OutboxKeys) -> list[OwnReport]:
        """The reports of the author whose outbox keys these are (the web app's unlocked
        session keeps them, not the signing key), with what HQ's receipts say of each."""
        from fieldsync import media, outbox

        store = self.store()
        mine = outbox.open_all(store.sealed_outbox(), keys)
        tags = [e.tag for e in mine if e.tag is not None]
        receipted = store.receipted(tags)
        found = []
        for e in mine:
            if e.report_id is None or e.tag is None:
                continue  # a chain position alone (migrated): nothing to list
            status, when = receipted.get(e.tag, ("sealed", None))
            found.append(
                OwnReport(
                    e.report_id,
                    e.sequence,
                    e.created_at,
                    status,
                    when if status == "delivered" else None,
                    tuple(media.attachment_status(store, e.attachments, keys)),
                )
            )
        return found

    # --- bundles -----------------------------------------------------------------------

    def export_bundle(self, path: Path, progress: Progress | None = None) -> int:
        """Write every stored item to a bundle file atomically; return the item count."""
        return sum(count for _, count in self.export_bundles(path, None, progress))

    def export_bundles(
        self, path: Path, max_size: int | None, progress: Progress | None = None
    ) -> list[tuple[Path, int]]:
        """Write every stored item to bundle files of at most ``max_size`` bytes each.

        Items go in transfer order (receipts and manifests, reports, then media), so the
        first file holds every report text. Each file is a complete bundle that imports on
        its own: ``path``, then ``NAME-2.EXT``, ``NAME-3.EXT``, … Returns (file, items) pairs.
        """
        if max_size is not None and max_size < MIN_BUNDLE_SIZE:
            raise InputRefused(
                f"--max-size must be at least {MIN_BUNDLE_SIZE} bytes (one item and its framing)"
            )
        keystore.check_output(path, "bundle file")
        member = self.membership()
        store = self.store()
        total = store.item_count()
        parts: list[tuple[Path, int]] = []
        items = iter_by_priority(store)
        pending: bytes | None = next(items, None)
        done = 0
        while True:
            target = (
                path if not parts else path.with_name(f"{path.stem}-{len(parts) + 1}{path.suffix}")
            )
            if parts:
                keystore.check_output(target, "bundle file")
            writer = BundleWriter(
                member.network_key, member.manifest.network_id, secrets.token_bytes(16)
            )
            tmp = target.with_name(f".{target.name}.partial")
            written = 0
            with open(tmp, "wb") as out:
                while pending is not None:
                    # The final chunk and the one being filled bound what finish() adds.
                    room = written + len(pending) + 3 * SEALED_CHUNK
                    if max_size is not None and writer.items_written and room > max_size:
                        break
                    data = writer.add(pending)
                    out.write(data)
                    written += len(data)
                    done += 1
                    if progress:
                        progress(done, total)
                    pending = next(items, None)
                out.write(writer.finish())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
            parts.append((target, writer.items_written))
            if pending is None:
                return parts

    def import_bundle(self, path: Path, progress: Progress | None = None) -> BundleImport:
        """Import a bundle all-or-nothing: a damaged or forged file leaves the store unchanged."""
        from fieldsync_protocol.items import check_item

        member = self.membership()
        store = self.store()
        counts = ImportCounts()
        now = now_seconds()
        window = now // limits.QUOTA_WINDOW_SECONDS
        key = bundle_key(path, member.network_keys)
        reader = BundleReader(key, member.manifest.network_id)
        newer: list[Checked] = []
        try:
            with store.transaction():
                for data in _read_bundle(path, reader, progress):
                    checked = check_item(data, member.manifest)
                    # As a sync push: an evicted item that comes back is still its first
                    # contributor's, and charged to it (SPEC.md §14.2).
                    store.add_imported(checked, counts, now, window)
                    if checked.manifest is not None or checked.item.kind is ItemKind.KEY_DELIVERY:
                        newer.append(checked)
        except RemoteProtocolError as exc:
            raise InputRefused(f"bundle {path} refused, nothing imported: {exc}") from exc
        if counts.purged:
            store.checkpoint()
        for checked in newer:
            self.adopt_manifest(checked)
        for delivery in self.open_deliveries(newer):
            self.adopt_delivery(delivery, store.local_clock())
        return BundleImport(counts, reader.items_read)

    def adopt_manifest(self, checked: Checked) -> bool:
        """Switch to a root-signed manifest update with a higher epoch (HQ key rotation).

        ``check_item`` has already verified it under this network's root; a lower or equal
        epoch is ignored, so a replayed old manifest can never roll keys back.
        """
        update = checked.manifest
        member = self.membership()
        if update is None or update.epoch <= member.manifest.epoch:
            return False
        self._write_membership(
            dataclasses.replace(self._membership_file(), manifest_item=checked.item.data)
        )
        return True

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "home": str(self.home),
            "role": "author" if self.is_author() else "relay",
        }
        try:
            member = self.membership()
        except NotInitialised:
            status["joined"] = False
        else:
            status["joined"] = True
            status["network"] = member.manifest.name
            status["network_id"] = key_to_text(KeyKind.NETWORK, member.manifest.network_id)
            status["node"] = fingerprint(KeyKind.NODE, member.certificate_info.node_key)
        status.update(self.store().status())
        return status


def current_revocations(store: Store, manifest: membership.Manifest) -> RevocationList | None:
    """The revocation list this node follows: the valid one with the highest serial among
    those it holds (SPEC.md §17.2). Every list is complete, so older ones change nothing;
    one that no longer verifies (after a root change) is skipped, never trusted."""
    from fieldsync_protocol.items import parse_item
    from fieldsync_protocol.revocation import open_revocation, supersedes

    current: RevocationList | None = None
    for data in store.items_of_kind(ItemKind.REVOCATION):
        try:
            candidate = open_revocation(parse_item(data).fields, manifest)
        except RemoteProtocolError:
            continue
        if supersedes(candidate, current):
            current = candidate
    return current


def bundle_key(path: Path, network_keys: Sequence[bytes]) -> bytes:
    """The network key that sealed the bundle at ``path``: while a network key rotates a
    member reads both (SPEC.md §17.5). The first key when none does (the reader then says
    "not a bundle of this network")."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_SIZE)
    except OSError:
        return network_keys[0]  # _read_bundle reports the problem with the file
    return sealed_by(head, network_keys) or network_keys[0]


def _read_bundle(path: Path, reader: BundleReader, progress: Progress | None) -> Iterator[bytes]:
    try:
        size = path.stat().st_size
        handle = open(path, "rb")  # noqa: SIM115 - closed in finally; generator
    except FileNotFoundError:
        raise NotFound(f"bundle file {path} does not exist") from None
    except IsADirectoryError:
        raise NotFound(f"{path} is a directory, not a bundle file") from None
    except OSError as exc:
        raise FieldsyncError(f"cannot read bundle file {path}: {exc.strerror or exc}") from exc
    try:
        done = 0
        while True:
            try:
                chunk = handle.read(SEALED_CHUNK * 4)
            except OSError as exc:
                raise FieldsyncError(
                    f"reading bundle file {path} failed after {done} bytes: {exc.strerror or exc}"
                    " (was the USB stick removed?); nothing was imported"
                ) from exc
            if not chunk:
                break
            reader.receive_data(chunk)
            done += len(chunk)
            yield from reader.items()
            if progress:
                progress(done, size)
        if done == 0:  # counted, not stat()ed: a pipe or /dev/stdin has no size
            raise RemoteProtocolError(
                "the file is empty (0 bytes): copy the bundle again from the source"
            )
        reader.end_of_file()
    finally:
        handle.close()
