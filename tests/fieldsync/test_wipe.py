"""Panic wipe, duress passphrase, wrong-passphrase wipe and passphrase strength (issue 11)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fieldsync import keystore
from fieldsync.cipher_db import WrongDatabaseKey, connect
from fieldsync.errors import FieldsyncError, InputRefused, NotInitialised, WrongPassphrase
from fieldsync.homelock import LOCK_FILE
from fieldsync.node import AUTHOR_SECRET, MEMBERSHIP, NODE_SECRET, REQUEST, STORE, Node
from fieldsync.store import connect_store
from fieldsync.wipe import key_files, scrub_statements, wipe_node
from fieldsync_protocol import codec
from tests.fieldsync.offline_support import PASSPHRASE, Net, add_reports, fields

DURESS = "lantern orchard quietly sideways"


def _count(home: Path, sql: str) -> int:
    conn = connect_store(home / STORE)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def test_wipe_destroys_every_key_and_leaves_the_store_as_noise(net: Net) -> None:
    add_reports(net.a, ["wipe me"])
    (net.a / ".author.secret.tmp").write_bytes(b"left by an interrupted write")
    conn = connect_store(net.a / STORE)
    ids = [bytes(row[0]) for row in conn.execute("SELECT id FROM items")]
    conn.close()
    keys = {p.name: p.read_bytes() for p in key_files(net.a)}
    assert {AUTHOR_SECRET, NODE_SECRET, MEMBERSHIP, "store.key"}
    assert REQUEST not in keys  # removed by join: it names the author and their key <= set(keys)
    assert ids
    # What a copy of the disk would keep of the store (its blocks once freed): the files.
    kept_dir = net.root / "disk-copy"
    kept_dir.mkdir()
    shutil.copy(net.a / STORE, kept_dir / STORE)

    result = wipe_node(net.a)

    assert set(result.destroyed) == set(keys)
    assert not result.problems and result.store_scrubbed and result.daemon_killed is None
    assert key_files(net.a) == []
    for name in keys:
        assert not (net.a / name).exists()
    # The store files are gone; what a disk keeps of them is ciphertext whose key is gone.
    assert not [p for p in net.a.iterdir() if p.name.startswith(STORE)]
    data = (kept_dir / STORE).read_bytes()
    assert b"SQLite format 3" not in data and not [i for i in ids if i in data]
    with pytest.raises(WrongDatabaseKey, match=r"store\.key is missing \(destroyed by a wipe"):
        connect_store(kept_dir / STORE)
    # Positive control: the destroyed key (kept aside here) opens that copy.
    kept = connect(kept_dir / STORE, keys["store.key"])
    try:
        assert {bytes(r[0]) for r in kept.execute("SELECT id FROM items")} == set(ids)
    finally:
        kept.close()
    node = Node(net.a)
    with pytest.raises(NotInitialised):
        node.membership()
    node.close()
    # The home can be set up again (a new node, an empty store).
    again = Node(net.a)
    try:
        again.init(None, None, "interactive")
        assert again.store().item_count() == 0
    finally:
        again.close()


def test_wipe_kills_the_daemon_holding_the_home(net: Net) -> None:
    """A process holding the home's lock (as ``fieldsync run`` does) is killed: it has the
    keys in memory. A stale pid in a lock nobody holds is left alone."""
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from fieldsync.homelock import HomeLock;"
            f"HomeLock.acquire(Path({str(net.a)!r}), Path('x')); print('locked', flush=True);"
            " time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            result = wipe_node(net.a)
            assert result.daemon_killed == holder.pid
            assert holder.wait(timeout=30) == -9
        finally:
            if holder.poll() is None:
                holder.kill()
    (net.b / LOCK_FILE).write_text('{"pid": 1}')
    assert wipe_node(net.b).daemon_killed is None


def test_wipe_of_an_empty_directory_and_an_old_store(tmp_path: Path) -> None:
    result = wipe_node(tmp_path)
    assert result.destroyed == [] and result.store_scrubbed
    assert scrub_statements({"items", "peers"}) == [
        "UPDATE items SET own = 0, origin = NULL WHERE own = 1 OR origin IS NOT NULL",
        "DELETE FROM peers",
    ]


def test_duress_passphrase_opens_an_empty_author_and_destroys_the_real_key(net: Net) -> None:
    ids = add_reports(net.a, ["before duress"])
    node = Node(net.a)
    try:
        real_seed = node.unlock_author(PASSPHRASE)
        size_before = (net.a / AUTHOR_SECRET).stat().st_size
        node.set_duress_passphrase(PASSPHRASE, DURESS)
        # A duress passphrase changes nothing visible: same size, same fields.
        sealed = (net.a / AUTHOR_SECRET).read_bytes()
        assert len(sealed) == size_before and set(codec.decode(sealed)) >= {"alt", "box"}
        assert node.unlock_author(PASSPHRASE) == real_seed  # the real one still works
        assert [e.report_id for e in node.reports(PASSPHRASE)] == ids
        items = _count(net.a, "SELECT count(*) FROM items")

        decoy = node.unlock_author(DURESS)

        assert decoy != real_seed and len(decoy) == 32
        # The decoy key file is the size the real one was: the swap does not show.
        assert (net.a / AUTHOR_SECRET).stat().st_size == size_before
        assert node.reports(DURESS) == []  # an author with no reports
        assert node.unlock_author(DURESS) == decoy  # and it stays that way
        with pytest.raises(WrongPassphrase):
            node.unlock_author(PASSPHRASE)  # the real key is gone
        # The reports already sealed still travel to HQ, as anybody's relayed items.
        assert _count(net.a, "SELECT count(*) FROM items") == items
        assert _count(net.a, "SELECT count(*) FROM items WHERE own = 1") == 0
        # The decoy author writes reports like any author.
        new_id = node.add_report(fields("under duress"), DURESS)
        assert [e.report_id for e in node.reports(DURESS)] == [new_id]
    finally:
        node.close()


def test_duress_passphrase_must_differ_and_needs_the_real_passphrase(net: Net) -> None:
    node = Node(net.a)
    try:
        with pytest.raises(InputRefused, match="must differ"):
            node.set_duress_passphrase(PASSPHRASE, PASSPHRASE)
        with pytest.raises(WrongPassphrase):
            node.set_duress_passphrase(DURESS, "another rather long phrase")
        with pytest.raises(InputRefused, match="too easy to guess"):
            node.set_duress_passphrase(PASSPHRASE, "password12345")
        with pytest.raises(FieldsyncError, match="relay-only"):
            Node(net.b).set_duress_passphrase(PASSPHRASE, DURESS)
    finally:
        node.close()


def test_wrong_passphrases_in_a_row_wipe_when_configured(net: Net) -> None:
    node = Node(net.a, wipe_after_wrong_passphrases=3)
    try:
        for _ in range(2):
            with pytest.raises(WrongPassphrase, match=r"^wrong passphrase for author key$"):
                node.unlock_author("not the passphrase at all")
        node.unlock_author(PASSPHRASE)  # a success resets the count
        assert not (net.a / "unlock.failures").exists()
        for _ in range(2):
            with pytest.raises(WrongPassphrase):
                node.unlock_author("not the passphrase at all")
        assert (net.a / AUTHOR_SECRET).exists()
        with pytest.raises(WrongPassphrase, match=r"3 of 3 in a row.*destroyed.*author\.secret"):
            node.unlock_author("not the passphrase at all")
    finally:
        node.close()
    assert key_files(net.a) == []


def test_wrong_passphrases_are_not_counted_by_default(net: Net) -> None:
    node = Node(net.a)
    try:
        for _ in range(5):
            with pytest.raises(WrongPassphrase):
                node.unlock_author("not the passphrase at all")
    finally:
        node.close()
    assert not (net.a / "unlock.failures").exists()
    assert (net.a / AUTHOR_SECRET).exists()


@pytest.mark.parametrize(
    ("passphrase", "message"),
    [
        ("short one", "too short: use at least 12 characters"),
        ("password1234", "too easy to guess.*very common password"),
        ("aaaaaaaaaaaaaaaa", "too easy to guess.*Repeats"),
        ("qwertyuiop1234", "too easy to guess"),  # a keyboard row
    ],
)
def test_weak_passphrases_are_refused_with_zxcvbns_feedback(
    tmp_path: Path, passphrase: str, message: str
) -> None:
    with pytest.raises(InputRefused, match=message):
        Node(tmp_path / "n").init("monitor-17", passphrase, "interactive")
    assert not (tmp_path / "n" / AUTHOR_SECRET).exists()


def test_one_derivation_opens_either_box_and_old_files_still_open() -> None:
    seed, decoy = bytes(range(32)), bytes(32)
    sealed = keystore.seal_with_passphrase(seed, PASSPHRASE, "interactive", with_alt=True)
    with_duress = keystore.set_duress(sealed, DURESS, decoy, "k")
    assert keystore.open_either(with_duress, PASSPHRASE, "k") == keystore.Opened(seed, False)
    assert keystore.open_either(with_duress, DURESS, "k") == keystore.Opened(decoy, True)
    # Code that only knows the main box never hands out the decoy.
    with pytest.raises(WrongPassphrase):
        keystore.open_with_passphrase(with_duress, DURESS, "k")
    with pytest.raises(WrongPassphrase):
        keystore.open_either(sealed, DURESS, "k")  # random alt: no duress set
    plain = {k: v for k, v in codec.decode(sealed).items() if k != "alt"}
    assert keystore.open_either(codec.encode({**plain, "v": 1}), PASSPHRASE, "k").plaintext == seed
    with pytest.raises(WrongPassphrase):
        keystore.open_either(codec.encode({**plain, "v": 1}), DURESS, "k")
    with pytest.raises(InputRefused, match="damaged"):
        keystore.open_either(codec.encode({**codec.decode(sealed), "alt": b"short"}), DURESS, "k")
    assert keystore.profile_of(sealed, "k") == "interactive"
    odd = codec.encode({**codec.decode(sealed), "ops": 1})
    assert keystore.profile_of(odd, "k") == keystore.DEFAULT_KDF_PROFILE
