"""The one wrong-passphrase count authors and HQ share (``fieldsync.wrong_passphrases``), on
real files; the CLI tests (tests/cli/test_hq_wrong_passphrases.py, test_wipe.py) run it
through real commands and real wipes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fieldsync.errors import InputRefused, KeysDestroyed, WrongPassphrase
from fieldsync.wrong_passphrases import UNLOCK_FAILURES, WrongPassphraseLimit


class Keys:
    """A stand-in for the files a wipe destroys: records each destruction."""

    def __init__(self) -> None:
        self.destroyed = 0

    def destroy(self) -> list[str]:
        self.destroyed += 1
        return ["key.secret"]


def limit_of(directory: Path, limit: int, keys: Keys) -> WrongPassphraseLimit:
    return WrongPassphraseLimit(
        directory, limit, "[test] limit", keys.destroy, "every test key", "start again"
    )


def wrong(guard: WrongPassphraseLimit) -> str:
    with pytest.raises(WrongPassphrase) as caught, guard.attempt():
        raise WrongPassphrase("wrong passphrase for test key")
    return str(caught.value)


def count(directory: Path) -> int | None:
    path = directory / UNLOCK_FAILURES
    return int(path.read_text()) if path.exists() else None


def test_the_last_wrong_try_destroys_and_says_what_and_what_next(tmp_path: Path) -> None:
    keys = Keys()
    guard = limit_of(tmp_path, 2, keys)
    assert wrong(guard) == "wrong passphrase for test key"
    assert count(tmp_path) == 1 and keys.destroyed == 0
    assert wrong(guard) == (
        "wrong passphrase for test key; that was wrong passphrase 2 of 2 in a row"
        " ([test] limit), so every test key was destroyed (key.secret); start again"
    )
    assert keys.destroyed == 1
    # What a front end tells apart (the daemon's web app stops): any try once used up.
    with pytest.raises(KeysDestroyed, match="was not tried"), guard.attempt():
        raise WrongPassphrase("wrong passphrase for test key")


def test_off_counts_nothing(tmp_path: Path) -> None:
    keys = Keys()
    for limit in (0, -1):
        guard = limit_of(tmp_path, limit, keys)
        for _ in range(5):
            wrong(guard)
    assert count(tmp_path) is None and keys.destroyed == 0


def test_another_error_takes_the_try_back(tmp_path: Path) -> None:
    """A damaged key file says nothing about the passphrase."""
    keys = Keys()
    guard = limit_of(tmp_path, 3, keys)
    wrong(guard)
    with pytest.raises(InputRefused), guard.attempt():
        raise InputRefused("test key is damaged")
    assert count(tmp_path) == 1
    (tmp_path / "fresh").mkdir()
    with pytest.raises(InputRefused), limit_of(tmp_path / "fresh", 3, keys).attempt():
        raise InputRefused("test key is damaged")
    assert count(tmp_path / "fresh") is None


def test_a_garbled_count_buys_no_tries_and_destroys_nothing_by_itself(tmp_path: Path) -> None:
    keys = Keys()
    guard = limit_of(tmp_path, 3, keys)
    (tmp_path / UNLOCK_FAILURES).write_text("lots")
    with guard.attempt():
        pass  # the right passphrase: the count starts again, nothing destroyed
    assert count(tmp_path) is None and keys.destroyed == 0
    (tmp_path / UNLOCK_FAILURES).write_text("lots")
    assert "was destroyed" in wrong(guard)  # one try short of the limit


def test_tries_at_the_same_time_are_all_counted(tmp_path: Path) -> None:
    """The count is read and written under a lock: no try is lost to another's write (each
    thread opens the directory itself, as another process would)."""
    keys = Keys()
    guard = limit_of(tmp_path, 1000, keys)
    start = threading.Barrier(8)
    failures: list[BaseException] = []

    def one() -> None:
        start.wait()
        try:
            for _ in range(10):
                wrong(guard)
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert count(tmp_path) == 80 and keys.destroyed == 0
