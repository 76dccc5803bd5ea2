"""The node store at rest (issue 11 item 4): SQLCipher under ``store.key``, key rotation
that turns old page images into noise, migration of a plaintext store, clear errors."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from fieldsync import cipher_db, synthetic
from fieldsync.cipher_db import WrongDatabaseKey
from fieldsync.janitor import Janitor
from fieldsync.keystore import write_private
from fieldsync.peer import SyncSource
from fieldsync.store import Store, connect_store, store_key_file
from fieldsync.store_worker import StoreWorker
from fieldsync_protocol.envelope import TTL_CLASSES
from fieldsync_protocol.items import check_item
from tests.fieldsync.offline_support import files_under
from tests.fieldsync.test_janitor import add, relayed

HEADER = b"SQLite format 3"


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> synthetic.SyntheticNetwork:
    return synthetic.create_network(tmp_path_factory.mktemp("store-encryption"))


def markers(network: synthetic.SyntheticNetwork, items: list[bytes]) -> list[bytes]:
    """Ids and delivery tags of ``items``: what a forensic scan looks for."""
    checked = [check_item(data, network.manifest).item for data in items]
    return [c.id for c in checked] + [c.tag for c in checked]


def found(directory: Path, needles: list[bytes]) -> dict[str, int]:
    """Per file of ``directory``: how many needles (and SQLite headers) its raw bytes hold."""
    hits = {}
    for path in files_under(directory):
        data = path.read_bytes()
        count = sum(1 for n in [*needles, HEADER] if n in data)
        if count:
            hits[path.name] = count
    return hits


def test_store_and_wal_hold_no_id_tag_or_plaintext_page(
    network: synthetic.SyntheticNetwork, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    store = Store(home / "store.db")
    kept, purged = relayed(network.manifest, 20, ttl_class=3), relayed(network.manifest, 20)
    add(store, network.manifest, kept)
    add(store, network.manifest, purged)
    wal = home / "store.db-wal"
    assert wal.stat().st_size > 0  # the rows are in the WAL too, not yet checkpointed
    needles = markers(network, kept + purged)
    assert found(home, needles) == {}
    store.advance_clock(TTL_CLASSES[0])
    assert store.expire() == 20  # a purge: secure_delete, truncating checkpoint
    assert store.purged_since_rotation
    assert found(home, needles) == {}
    store.close()
    # Positive control: the same scan on a plaintext export finds them all.
    plain = tmp_path / "plain.db"
    conn = connect_store(home / "store.db")
    conn.execute("ATTACH DATABASE ? AS plain KEY ''", (str(plain),))
    conn.execute("SELECT sqlcipher_export('plain')")
    conn.close()
    assert found(tmp_path, markers(network, kept))["plain.db"] == len(kept) * 2 + 1


def test_rotation_makes_an_old_copy_noise_and_destroys_the_old_key(
    network: synthetic.SyntheticNetwork, tmp_path: Path
) -> None:
    path = tmp_path / "home" / "store.db"
    store = Store(path)
    add(store, network.manifest, relayed(network.manifest, 30))
    old_key = store.key_file.read_bytes()
    # What an examiner could recover later: the files as they are before the rotation.
    before = tmp_path / "before"
    before.mkdir()
    for name in ("store.db", "store.db-wal"):
        shutil.copy(path.parent / name, before / name)
    ids_before = set(store.sorted_ids())

    assert store.rotate_key()
    assert not store.purged_since_rotation

    new_key = store.key_file.read_bytes()
    assert new_key != old_key and len(new_key) == 32
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "store.db",
        "store.db-shm",
        "store.db-wal",
        "store.key",
    ]
    for file in files_under(path.parent):  # the old key is nowhere in the home
        assert old_key not in file.read_bytes(), file
    with pytest.raises(WrongDatabaseKey):
        cipher_db.connect(before / "store.db", new_key)
    with pytest.raises(WrongDatabaseKey):
        cipher_db.connect(path, old_key)  # every page was rewritten under the new key
    assert set(store.sorted_ids()) == ids_before  # the live store goes on
    store.close()
    reopened = Store(path)
    assert set(reopened.sorted_ids()) == ids_before
    with reopened.transaction(), pytest.raises(RuntimeError, match="inside a transaction"):
        reopened.rotate_key()
    reopened.close()


def test_a_rotation_cut_off_after_the_rekey_is_finished_on_open(
    network: synthetic.SyntheticNetwork, tmp_path: Path
) -> None:
    path = tmp_path / "store.db"
    store = Store(path)
    add(store, network.manifest, relayed(network.manifest, 5))
    ids = set(store.sorted_ids())
    store.close()
    # The first steps of cipher_db.rotate, then a crash before the key file is replaced.
    conn = connect_store(path)
    next_key = b"\x07" * 32
    write_private(path.with_suffix(".key.next"), next_key)
    conn.execute(cipher_db.key_pragma("rekey", next_key))
    conn.close()
    store = Store(path)
    assert set(store.sorted_ids()) == ids
    assert store_key_file(path).read_bytes() == next_key
    assert not path.with_suffix(".key.next").exists()
    store.close()


def test_a_wrong_or_missing_key_fails_clearly_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    Store(path).close()
    key_file = store_key_file(path)
    good = key_file.read_bytes()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    key_file.write_bytes(bytes(32))
    with pytest.raises(WrongDatabaseKey, match=rf"{path}: the key does not open this store"):
        Store(path)
    key_file.write_bytes(b"short")
    with pytest.raises(WrongDatabaseKey, match=r"store\.key is damaged \(5 bytes"):
        Store(path)
    key_file.unlink()
    with pytest.raises(WrongDatabaseKey, match=r"store\.key is missing.*Move .* aside"):
        Store(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert not key_file.exists()  # no new key was made for the old file
    key_file.write_bytes(good)
    Store(path).close()


def test_a_plaintext_store_is_encrypted_on_first_open_and_keeps_every_item(
    network: synthetic.SyntheticNetwork, tmp_path: Path
) -> None:
    path = tmp_path / "store.db"
    store = Store(path)
    items = relayed(network.manifest, 25)
    add(store, network.manifest, items)
    ids = set(store.sorted_ids())
    store.close()
    # Turn it into the plaintext store an older fieldsync wrote (with its WAL in use).
    plain = tmp_path / "plain.db"
    conn = connect_store(path)
    conn.execute("ATTACH DATABASE ? AS plain KEY ''", (str(plain),))
    conn.execute("SELECT sqlcipher_export('plain')")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    for name in ("store.db", "store.db-wal", "store.db-shm", "store.key"):
        (tmp_path / name).unlink(missing_ok=True)
    plain.rename(path)
    legacy = sqlite3.connect(path, isolation_level=None)
    legacy.execute(f"PRAGMA user_version = {version}")
    legacy.execute("PRAGMA journal_mode=WAL")
    legacy.execute("UPDATE store_meta SET value = value WHERE 0")
    legacy.close()
    assert cipher_db.is_plaintext(path)

    store = Store(path)
    assert set(store.sorted_ids()) == ids
    assert page_size(store) == cipher_db.PAGE_SIZE
    store.close()
    assert not cipher_db.is_plaintext(path)
    assert found(tmp_path, markers(network, items)) == {}
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("store.db-")) == [
        "store.db",
        "store.key",
    ]


async def test_the_janitor_rotates_the_key_after_a_purge_and_on_schedule(
    network: synthetic.SyntheticNetwork, tmp_path: Path
) -> None:
    path = tmp_path / "store.db"

    def prepare() -> None:
        store = Store(path)
        add(store, network.manifest, relayed(network.manifest, 10, ttl_class=0))
        store.advance_clock(TTL_CLASSES[0])
        store.close()

    await asyncio.to_thread(prepare)
    key_file = store_key_file(path)
    first = await asyncio.to_thread(key_file.read_bytes)
    worker = StoreWorker(path)
    await worker.open()
    source = await worker.call(SyncSource)
    janitor = Janitor(
        worker, source, disk_budget_bytes=1 << 30, checkpoint_every=0.0, rotate_after_purge_gap=0.0
    )
    report = await janitor.tick()  # expires the 10 items: a purge, then the rotation
    assert report.expired == 10 and report.key_rotated
    second = await asyncio.to_thread(key_file.read_bytes)
    assert second != first
    assert not (await janitor.tick()).key_rotated  # nothing purged since, not due
    scheduled = Janitor(worker, source, disk_budget_bytes=1 << 30, rotate_key_every=0.0)
    assert (await scheduled.tick()).key_rotated
    assert await asyncio.to_thread(key_file.read_bytes) not in (first, second)
    await worker.close()


def test_a_store_opened_elsewhere_follows_a_rotation_at_its_next_transaction(
    network: synthetic.SyntheticNetwork, tmp_path: Path
) -> None:
    """The CLI's store, opened while the daemon's janitor rotates the key, writes on."""
    path = tmp_path / "store.db"
    daemon, cli = Store(path), Store(path)
    try:
        add(daemon, network.manifest, relayed(network.manifest, 3))
        assert daemon.rotate_key()
        add(cli, network.manifest, relayed(network.manifest, 2))  # reopened under the new key
        assert cli.item_count() == daemon.item_count() == 5
    finally:
        cli.close()
        daemon.close()


def page_size(store: Store) -> int:
    return int(store.conn.execute("PRAGMA page_size").fetchone()[0])


def test_a_new_store_has_the_larger_pages(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.db")
    try:
        assert page_size(store) == cipher_db.PAGE_SIZE == 8192
        assert cipher_db.LEGACY_PAGE_SIZE == 4096  # SQLCipher 4's default (SPEC.md §15)
    finally:
        store.close()


def test_a_store_with_sqlciphers_default_pages_is_opened_as_it_is(
    network: synthetic.SyntheticNetwork, tmp_path: Path
) -> None:
    """A store an older release wrote (SQLCipher's 4 KiB pages) keeps its pages: it is read,
    written and rotated under them, and a wrong key still fails clearly."""
    path = tmp_path / "store.db"
    store = Store(path)
    items = relayed(network.manifest, 25)
    add(store, network.manifest, items[:20])
    ids = set(store.sorted_ids())
    store.close()
    # The same store exported under the same key with 4 KiB pages, as that release left it.
    key = store_key_file(path).read_bytes()
    legacy = tmp_path / "legacy.db"
    conn = connect_store(path)
    conn.execute(f"ATTACH DATABASE ? AS legacy KEY \"x'{key.hex()}'\"", (str(legacy),))
    conn.execute("PRAGMA legacy.cipher_page_size = 4096")
    conn.execute("SELECT sqlcipher_export('legacy')")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.execute(f"PRAGMA legacy.user_version = {version}")
    conn.execute("DETACH DATABASE legacy")
    conn.close()
    for side in ("-wal", "-shm"):
        path.with_name(path.name + side).unlink(missing_ok=True)
    legacy.rename(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    store_key_file(path).write_bytes(bytes(32))
    with pytest.raises(WrongDatabaseKey, match=rf"{path}: the key does not open this store"):
        Store(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # tried twice, wrote nothing
    store_key_file(path).write_bytes(key)

    store = Store(path)
    try:
        assert page_size(store) == cipher_db.LEGACY_PAGE_SIZE
        assert set(store.sorted_ids()) == ids
        add(store, network.manifest, items[20:])
        assert store.rotate_key()
    finally:
        store.close()
    assert store_key_file(path).read_bytes() != key
    again = Store(path)
    try:
        assert page_size(again) == cipher_db.LEGACY_PAGE_SIZE
        assert len(set(again.sorted_ids())) == 25
        assert again.integrity_check() == "ok"
    finally:
        again.close()
