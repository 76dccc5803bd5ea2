"""Secrets at rest: passphrase-sealed files and private key files."""

from __future__ import annotations

import stat
from pathlib import Path

import nacl.pwhash
import pytest

from fieldsync import keystore
from fieldsync.errors import InputRefused, NotFound, WrongPassphrase
from fieldsync_protocol import codec

PASSPHRASE = "correct horse battery staple"
SECRET = bytes(range(32))


@pytest.fixture(scope="module")
def sealed() -> bytes:
    return keystore.seal_with_passphrase(SECRET, PASSPHRASE, "interactive")


def test_round_trip_and_kdf_parameters_travel_with_the_file(sealed: bytes) -> None:
    assert keystore.open_with_passphrase(sealed, PASSPHRASE, "test key") == SECRET
    fields = codec.decode(sealed)
    assert fields["kdf"] == "argon2id13"
    assert fields["ops"] == nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
    assert fields["mem"] == nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
    assert SECRET not in sealed


def test_each_sealing_uses_a_fresh_salt_and_nonce(sealed: bytes) -> None:
    again = keystore.seal_with_passphrase(SECRET, PASSPHRASE, "interactive")
    assert codec.decode(again)["salt"] != codec.decode(sealed)["salt"]
    assert codec.decode(again)["nonce"] != codec.decode(sealed)["nonce"]


def test_wrong_passphrase(sealed: bytes) -> None:
    with pytest.raises(WrongPassphrase, match="wrong passphrase for test key"):
        keystore.open_with_passphrase(sealed, PASSPHRASE + "!", "test key")
    assert WrongPassphrase.exit_code == 12


def test_short_passphrase_and_unknown_profile_are_refused() -> None:
    with pytest.raises(InputRefused, match="at least 12 characters"):
        keystore.seal_with_passphrase(SECRET, "1234567", "interactive")
    with pytest.raises(InputRefused, match="unknown KDF profile"):
        keystore.seal_with_passphrase(SECRET, PASSPHRASE, "instant")


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s[: len(s) // 2],
        lambda s: b"",
        lambda s: b"\xc1" + s[1:],
        lambda s: codec.encode({**codec.decode(s), "kdf": "scrypt"}),
        lambda s: codec.encode({**codec.decode(s), "salt": b"short"}),
        lambda s: codec.encode({**codec.decode(s), "mem": 1}),
        lambda s: codec.encode({k: v for k, v in codec.decode(s).items() if k != "box"}),
        lambda s: s + bytes(70_000),
    ],
    ids=[
        "truncated",
        "empty",
        "bad-msgpack",
        "unknown-kdf",
        "short-salt",
        "tiny-mem",
        "no-box",
        "huge",
    ],
)
def test_damaged_files_are_refused_not_crashed_on(sealed: bytes, damage: object) -> None:
    assert callable(damage)
    with pytest.raises(InputRefused, match="test key"):
        keystore.open_with_passphrase(damage(sealed), PASSPHRASE, "test key")


def test_a_flipped_ciphertext_byte_does_not_open(sealed: bytes) -> None:
    fields = codec.decode(sealed)
    box = bytearray(fields["box"])
    box[0] ^= 1
    with pytest.raises(WrongPassphrase):
        keystore.open_with_passphrase(codec.encode({**fields, "box": bytes(box)}), PASSPHRASE, "k")


def test_write_private_is_atomic_and_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "key.secret"
    keystore.write_private(path, b"one")
    assert path.read_bytes() == b"one"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    keystore.write_private(path, b"two")
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "a replaced file is private again"
    assert sorted(p.name for p in path.parent.iterdir()) == ["key.secret"]


def test_read_file_and_load_map_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"node key not found at .*; run init"):
        keystore.read_file(tmp_path / "missing", "node key", "run init")
    assert keystore.load_map(codec.encode({"a": 1}), "thing", {"a"}) == {"a": 1}
    with pytest.raises(InputRefused, match=r"thing is damaged .*restore it from a backup"):
        keystore.load_map(b"\x00\x01", "thing", {"a"})
    with pytest.raises(InputRefused, match="lacks field"):
        keystore.load_map(codec.encode({"b": 1}), "thing", {"a"})


def test_author_key_file_on_a_node(tmp_path: Path) -> None:
    """The author's seed is only in the sealed file, which opens with the passphrase."""
    from fieldsync.node import AUTHOR_SECRET, Node

    node = Node(tmp_path / "a")
    node.init("monitor", PASSPHRASE, "interactive")
    node.close()
    sealed_file = tmp_path / "a" / AUTHOR_SECRET
    assert stat.S_IMODE(sealed_file.stat().st_mode) == 0o600
    seed = Node(tmp_path / "a").unlock_author(PASSPHRASE)
    assert len(seed) == 32 and seed not in sealed_file.read_bytes()
    with pytest.raises(WrongPassphrase, match="author key"):
        Node(tmp_path / "a").unlock_author("wrong passphrase")
    sealed_file.write_bytes(sealed_file.read_bytes()[:-5])
    with pytest.raises(InputRefused, match="author key"):
        Node(tmp_path / "a").unlock_author(PASSPHRASE)


def test_passphrases_are_compared_after_unicode_normalisation() -> None:
    """The same visible passphrase typed on another keyboard (NFD vs NFC) opens the key."""
    composed = "caf\u00e9 au lait, s\u00f8ster"
    decomposed = "cafe\u0301 au lait, s\u00f8ster"
    assert composed != decomposed
    sealed = keystore.seal_with_passphrase(SECRET, composed, "interactive")
    assert keystore.open_with_passphrase(sealed, decomposed, "k") == SECRET
    assert keystore.open_with_passphrase(sealed, composed, "k") == SECRET


def test_sealed_files_carry_format_version_2_and_formats_0_1_still_open(sealed: bytes) -> None:
    fields = codec.decode(sealed)
    assert isinstance(fields, dict) and fields["v"] == keystore.SEALED_FORMAT_VERSION == 2
    format_0 = codec.encode({k: v for k, v in fields.items() if k != "v"})
    assert keystore.open_with_passphrase(format_0, PASSPHRASE, "test key") == SECRET
    format_1 = codec.encode({**fields, "v": 1})
    assert keystore.open_with_passphrase(format_1, PASSPHRASE, "test key") == SECRET


def test_a_sealed_file_from_a_newer_fieldsync_is_refused_by_version(sealed: bytes) -> None:
    fields = codec.decode(sealed)
    assert isinstance(fields, dict)
    newer = codec.encode({**fields, "v": 3})
    with pytest.raises(InputRefused, match=r"format version 3.*upgrade fieldsync"):
        keystore.open_with_passphrase(newer, PASSPHRASE, "test key")
    for bad in (0, True, "1"):
        with pytest.raises(InputRefused, match="test key is damaged"):
            keystore.open_with_passphrase(
                codec.encode({**fields, "v": bad}), PASSPHRASE, "test key"
            )


def test_reseal_changes_the_passphrase_and_keeps_salt_costs_and_the_duress_box() -> None:
    duress, new = "lantern orchard quietly sideways", "violet tundra mango rickshaw"
    decoy = bytes(32)
    original = keystore.set_duress(
        keystore.seal_with_passphrase(SECRET, PASSPHRASE, "interactive", with_alt=True),
        duress,
        decoy,
        "author key",
    )

    changed = keystore.reseal(original, PASSPHRASE, new, "author key")

    assert keystore.open_either(changed, new, "author key") == keystore.Opened(SECRET, False)
    assert keystore.open_either(changed, duress, "author key") == keystore.Opened(decoy, True)
    with pytest.raises(WrongPassphrase):
        keystore.open_either(changed, PASSPHRASE, "author key")
    before, after = codec.decode(original), codec.decode(changed)
    for kept in ("alt", "salt", "ops", "mem", "kdf", "v"):
        assert after[kept] == before[kept], kept
    assert after["nonce"] != before["nonce"]
    with pytest.raises(WrongPassphrase):  # only the main box's passphrase re-seals it
        keystore.reseal(original, duress, new, "author key")


def test_replace_private_overwrites_the_bytes_of_the_file_it_replaces(tmp_path: Path) -> None:
    path = tmp_path / "key.secret"
    keystore.write_private(path, b"old")
    keeper = tmp_path / "hard-link"
    keeper.hardlink_to(path)  # sees the old file's blocks after the rename

    keystore.replace_private(path, b"new", "test")

    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keeper.read_bytes() != b"old"  # the replaced bytes were overwritten in place
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
