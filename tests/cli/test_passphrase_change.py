"""``author passphrase``, ``hq passphrase`` and ``hq rekey`` as people run them (real
processes, real files), and what a ``kill -9`` at each crash point leaves: the old
passphrase or key working, or the new one, never neither."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fieldsync import cipher_db, keystore
from fieldsync.faults import CRASH_AT_VARIABLE
from fieldsync.hq import DATABASE, DATABASE_KEY, HQ, HQ_SECRET, NEXT_DATABASE_KEY
from fieldsync.node import AUTHOR_SECRET, AUTHORS_DIR, UNLOCK_FAILURES
from tests.cli.cli_support import Run, clean_env, fieldsync_command
from tests.fieldsync.offline_support import (
    AUTHOR_NAME,
    PASSPHRASE,
    Net,
    add_reports,
    copy_network,
    export,
    ingest,
)

NEW = "violet tundra mango rickshaw"
DURESS = "lantern orchard quietly sideways"
SECOND = "pebble saffron glacier ukulele"
KILLED = -signal.SIGKILL
OK, REFUSED, WRONG = 0, 3, 12


def _change_author(
    run: Run, home: Path, current: str, new: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = clean_env(FIELDSYNC_PASSPHRASE=current, FIELDSYNC_NEW_PASSPHRASE=new, **extra)
    return run("--home", home, "author", "passphrase", "--json", env=env)


def _whose(run: Run, home: Path, passphrase: str) -> subprocess.CompletedProcess[str]:
    return run("--home", home, "author", "list", "--unlock", "--json", passphrase=passphrase)


def _name(run: Run, home: Path, passphrase: str) -> str | None:
    """The author name ``passphrase`` opens on ``home`` (None: the decoy); fails if none."""
    opened = _whose(run, home, passphrase)
    assert opened.returncode == OK, opened.stderr
    name: str | None = json.loads(opened.stdout)["you"]["name"]
    return name


def _report_ids(run: Run, home: Path, passphrase: str) -> list[str]:
    listed = run("--home", home, "report", "list", "--json", passphrase=passphrase)
    assert listed.returncode == OK, listed.stderr
    return sorted(entry["id"] for entry in json.loads(listed.stdout))


def _error(result: subprocess.CompletedProcess[str], kind: str, code: int) -> str:
    """The ``--json`` error of a failed command, checked for its documented shape."""
    assert result.returncode == code, result.stderr
    error = json.loads(result.stdout)
    assert set(error) == {"error", "kind", "exit_code"}
    assert error["kind"] == kind and error["exit_code"] == code
    assert f"fieldsync: error: {error['error']}" in result.stderr
    message: str = error["error"]
    return message


# --- author passphrase ----------------------------------------------------------------------


def test_author_passphrase_change_keeps_the_key_and_only_the_new_passphrase_opens_it(
    net: Net, run: Run
) -> None:
    add_reports(net.a, ["Before the change."])
    before = _report_ids(run, net.a, PASSPHRASE)

    changed = _change_author(run, net.a, PASSPHRASE, NEW)

    assert changed.returncode == OK, changed.stderr
    assert json.loads(changed.stdout) == {"changed": True}
    assert "passphrase changed" in changed.stderr
    assert (net.a / AUTHOR_SECRET).stat().st_mode & 0o777 == 0o600
    assert _name(run, net.a, NEW) == AUTHOR_NAME
    assert _report_ids(run, net.a, NEW) == before  # same key: its outbox still opens
    old = _whose(run, net.a, PASSPHRASE)
    assert "wrong passphrase" in _error(old, "WrongPassphrase", WRONG)
    assert not list(net.a.glob(".*.tmp"))


def test_a_wrong_current_passphrase_is_refused_and_counted(net: Net, run: Run) -> None:
    sealed = (net.a / AUTHOR_SECRET).read_bytes()
    counting = {"FIELDSYNC_SECURITY_WIPE_AFTER_WRONG_PASSPHRASES": "3"}

    for attempt in (1, 2):
        wrong = _change_author(run, net.a, "not my passphrase at all", NEW, **counting)
        assert "wrong passphrase for author key" in _error(wrong, "WrongPassphrase", WRONG)
        assert (net.a / UNLOCK_FAILURES).read_text().strip() == str(attempt)
    assert (net.a / AUTHOR_SECRET).read_bytes() == sealed

    # The count goes on across commands: a third wrong one at another prompt wipes.
    env = clean_env(FIELDSYNC_PASSPHRASE="nope nope", **counting)
    third = run("--home", net.a, "author", "list", "--unlock", "--json", env=env)
    # KeysDestroyed: the WrongPassphrase that wiped (same exit code).
    assert "every key on this node was destroyed" in _error(third, "KeysDestroyed", WRONG)
    assert not (net.a / AUTHOR_SECRET).exists()


def test_a_weak_or_unchanged_new_passphrase_is_refused_and_the_old_one_still_works(
    net: Net, run: Run
) -> None:
    weak = _change_author(run, net.a, PASSPHRASE, "password1234")
    assert "too easy to guess" in _error(weak, "InputRefused", REFUSED)
    short = _change_author(run, net.a, PASSPHRASE, "abc def")
    assert "at least 12 characters" in _error(short, "InputRefused", REFUSED)
    same = _change_author(run, net.a, PASSPHRASE, PASSPHRASE)
    assert "the one you have now" in _error(same, "InputRefused", REFUSED)
    no_new = run("--home", net.a, "author", "passphrase", "--json")
    assert "FIELDSYNC_NEW_PASSPHRASE" in _error(no_new, "FieldsyncError", 1)

    assert _name(run, net.a, PASSPHRASE) == AUTHOR_NAME


def _on_terminal(args: list[str], env: dict[str, str], answers: list[str]) -> tuple[int, str]:
    """Run ``fieldsync ARGS`` on a pseudo-terminal, typing ``answers`` at its prompts."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes the command, with the terminal as its own
        command = [*fieldsync_command(), *args]
        os.execve(command[0], command, env)  # noqa: S606 - our own command, no shell
    output, pending, deadline = b"", list(answers), time.monotonic() + 60
    since_answer = b""
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            since_answer += chunk
            if pending and since_answer.rstrip().endswith(b":"):
                os.write(fd, pending.pop(0).encode() + b"\n")
                since_answer = b""
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_two_different_new_entries_at_the_prompt_are_refused(net: Net) -> None:
    sealed = (net.a / AUTHOR_SECRET).read_bytes()
    env = clean_env(FIELDSYNC_PASSPHRASE=PASSPHRASE)
    args = ["--home", str(net.a), "author", "passphrase"]

    code, output = _on_terminal(args, env, [NEW, SECOND])

    assert code == REFUSED, output
    assert "New passphrase for your author key" in output and "again" in output
    assert "the two entries of the new passphrase differ" in output
    assert NEW not in output  # hidden input
    assert (net.a / AUTHOR_SECRET).read_bytes() == sealed

    code, output = _on_terminal(args, env, [NEW, NEW])
    assert code == OK, output


def _set_duress(run: Run, home: Path, passphrase: str = PASSPHRASE) -> None:
    env = clean_env(FIELDSYNC_PASSPHRASE=passphrase, FIELDSYNC_DURESS_PASSPHRASE=DURESS)
    done = run("--home", home, "duress-set", "--json", env=env)
    assert done.returncode == OK, done.stderr


def test_the_duress_passphrase_still_opens_the_decoy_after_a_change(net: Net, run: Run) -> None:
    _set_duress(run, net.a)
    as_duress = _change_author(run, net.a, PASSPHRASE, DURESS)
    assert "cannot be used here" in _error(as_duress, "InputRefused", REFUSED)

    assert _change_author(run, net.a, PASSPHRASE, NEW).returncode == OK

    assert _name(run, net.a, NEW) == AUTHOR_NAME
    assert _name(run, net.a, DURESS) is None  # the decoy; the real key is now destroyed
    gone = _whose(run, net.a, NEW)
    assert gone.returncode == WRONG


def test_the_duress_passphrase_as_current_changes_only_the_decoy_and_looks_the_same(
    net: Net, run: Run, tmp_path: Path
) -> None:
    add_reports(net.a, ["Sealed before the duress."])
    _set_duress(run, net.a)
    twin = copy_network(net, tmp_path / "twin")

    forced = _change_author(run, net.a, DURESS, NEW)
    real = _change_author(run, twin.a, PASSPHRASE, NEW)

    # What a watcher sees is the same: exit code, output, the key file's size.
    assert (forced.returncode, forced.stdout, forced.stderr) == (
        real.returncode,
        real.stdout,
        real.stderr,
    )
    assert forced.returncode == OK
    sizes = [len((home / AUTHOR_SECRET).read_bytes()) for home in (net.a, twin.a)]
    assert sizes[0] == sizes[1]
    # But the real key is gone: the new passphrase opens an author with no name and no
    # reports, and neither the real passphrase nor the duress one opens anything.
    assert _name(run, net.a, NEW) is None
    assert _report_ids(run, net.a, NEW) == []
    assert _whose(run, net.a, PASSPHRASE).returncode == WRONG
    assert _whose(run, net.a, DURESS).returncode == WRONG
    assert _name(run, twin.a, NEW) == AUTHOR_NAME


def test_on_a_node_of_two_authors_only_the_one_whose_passphrase_it_is_changes(
    net: Net, run: Run
) -> None:
    added = run("--home", net.a, "author", "add", "second-monitor", "--kdf-profile",
                "interactive", "--json", passphrase=SECOND)  # fmt: skip
    assert added.returncode == OK, added.stderr
    first_file = (net.a / AUTHOR_SECRET).read_bytes()
    [second_path] = (net.a / AUTHORS_DIR).glob("*.secret")

    taken = _change_author(run, net.a, SECOND, PASSPHRASE)
    assert "cannot be used here" in _error(taken, "InputRefused", REFUSED)
    changed = _change_author(run, net.a, SECOND, NEW)

    assert changed.returncode == OK, changed.stderr
    assert (net.a / AUTHOR_SECRET).read_bytes() == first_file
    assert _name(run, net.a, NEW) == "second-monitor"
    assert _name(run, net.a, PASSPHRASE) == AUTHOR_NAME
    assert _whose(run, net.a, SECOND).returncode == WRONG
    # Still one derivation for all: the changed file kept the node's salt and costs.
    assert keystore.open_first([first_file, second_path.read_bytes()], NEW, "author key") == (
        1,
        keystore.open_either(second_path.read_bytes(), NEW, "author key"),
    )


@pytest.mark.parametrize(
    ("point", "works"),
    [("author-passphrase:written", PASSPHRASE), ("author-passphrase:replaced", NEW)],
    ids=["written-old-works", "replaced-new-works"],
)
def test_kill_9_during_an_author_passphrase_change_leaves_one_passphrase_working(
    net: Net, run: Run, point: str, works: str
) -> None:
    _set_duress(run, net.a)
    killed = _change_author(run, net.a, PASSPHRASE, NEW, **{CRASH_AT_VARIABLE: point})
    assert killed.returncode == KILLED, killed.stderr

    assert _name(run, net.a, works) == AUTHOR_NAME
    other = NEW if works == PASSPHRASE else PASSPHRASE
    assert _whose(run, net.a, other).returncode == WRONG
    # The change can be made (again) from there, and leaves no temporary copy behind.
    again = _change_author(run, net.a, works, SECOND)
    assert again.returncode == OK, again.stderr
    assert not list(net.a.glob(".*.tmp"))
    assert _name(run, net.a, SECOND) == AUTHOR_NAME
    assert _name(run, net.a, DURESS) is None


# --- hq passphrase ----------------------------------------------------------------------------


def _hq(run: Run, passphrase: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run("hq", *args, "--json", passphrase=passphrase)


def _change_hq(
    run: Run, net: Net, current: str, new: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = clean_env(FIELDSYNC_PASSPHRASE=current, FIELDSYNC_NEW_PASSPHRASE=new, **extra)
    return run("hq", "passphrase", "--hq", net.hq, "--json", env=env)


def _narratives(run: Run, net: Net, passphrase: str) -> list[str]:
    exported = _hq(run, passphrase, "export", "--hq", net.hq, "--format", "jsonl",
                   "--include-confidential")  # fmt: skip
    assert exported.returncode == OK, exported.stderr
    return sorted(json.loads(line)["narrative"] for line in exported.stdout.splitlines())


def test_after_an_hq_passphrase_change_every_hq_command_opens_with_the_new_one(
    net: Net, run: Run
) -> None:
    add_reports(net.a, ["Ingested before the change."])
    export(net.a, net.usb / "first.bundle")
    ingest(net, net.usb / "first.bundle")
    add_reports(net.a, ["Ingested after the change."])
    export(net.a, net.usb / "second.bundle")

    weak = _change_hq(run, net, PASSPHRASE, "password1234")
    assert "too easy to guess" in _error(weak, "InputRefused", REFUSED)
    wrong = _change_hq(run, net, "not the hq passphrase", NEW)
    assert "wrong passphrase" in _error(wrong, "WrongPassphrase", WRONG)
    changed = _change_hq(run, net, PASSPHRASE, NEW)
    assert changed.returncode == OK, changed.stderr
    assert json.loads(changed.stdout) == {"changed": True, "hq": str(net.hq)}

    commands: list[tuple[str | Path, ...]] = [
        ("ingest", "--hq", net.hq, net.usb / "second.bundle"),
        ("alerts", "--hq", net.hq),
        ("receipts", "--hq", net.hq, "--out", net.usb / "receipts.bundle"),
        ("quarantine", "list", "--hq", net.hq),
        ("media", "--hq", net.hq),
        ("revoked", "--hq", net.hq),
        ("renew", "--hq", net.hq),
    ]
    for command in commands:
        refused = _hq(run, PASSPHRASE, *command)
        assert refused.returncode == WRONG, (command, refused.stderr)
        opened = _hq(run, NEW, *command)
        assert opened.returncode == OK, (command, opened.stderr)
    assert _narratives(run, net, NEW) == [
        "Ingested after the change.",
        "Ingested before the change.",
    ]
    for name in (HQ_SECRET, DATABASE_KEY):
        assert (net.hq / name).stat().st_mode & 0o777 == 0o600
        with pytest.raises(Exception, match="wrong passphrase"):
            keystore.open_with_passphrase((net.hq / name).read_bytes(), PASSPHRASE, name)


@pytest.mark.parametrize(
    ("point", "works"),
    [
        ("hq-passphrase:secret-written", PASSPHRASE),
        ("hq-passphrase:both-written", PASSPHRASE),
        ("hq-passphrase:secret-replaced", NEW),
        ("hq-passphrase:replaced", NEW),
    ],
    ids=["secret-written", "both-written", "secret-replaced", "replaced"],
)
def test_kill_9_during_an_hq_passphrase_change_leaves_one_passphrase_working(
    net: Net, run: Run, point: str, works: str
) -> None:
    add_reports(net.a, ["Kept through the crash."])
    export(net.a, net.usb / "a.bundle")
    ingest(net, net.usb / "a.bundle")

    killed = _change_hq(run, net, PASSPHRASE, NEW, **{CRASH_AT_VARIABLE: point})
    assert killed.returncode == KILLED, killed.stderr

    other = NEW if works == PASSPHRASE else PASSPHRASE
    assert _hq(run, other, "alerts", "--hq", net.hq).returncode == WRONG
    # The database (hq.dbkey) and the HQ keys (hq.secret) both open with the same one...
    assert _narratives(run, net, works) == ["Kept through the crash."]
    receipts = _hq(run, works, "receipts", "--hq", net.hq, "--out", net.usb / "r.bundle")
    assert receipts.returncode == OK, receipts.stderr
    # ... and the next command tidied up: no new or temporary file is left.
    assert sorted(p.name for p in net.hq.iterdir() if ".new" in p.name) == []
    assert _hq(run, other, "alerts", "--hq", net.hq).returncode == WRONG


# --- hq rekey ---------------------------------------------------------------------------------


def _database_key(net: Net, passphrase: str) -> bytes:
    headquarters = HQ(net.hq, passphrase=passphrase)
    try:
        return headquarters.database_key()
    finally:
        headquarters.close()


def _opens(net: Net, key: bytes) -> bool:
    try:
        cipher_db.connect(net.hq / DATABASE, key).close()
    except cipher_db.WrongDatabaseKey:
        return False
    return True


@pytest.fixture
def ingested(net: Net) -> Net:
    add_reports(net.a, ["First report.", "Second report."])
    export(net.a, net.usb / "a.bundle")
    ingest(net, net.usb / "a.bundle")
    return net


REPORTS = ["First report.", "Second report."]


def test_rekey_keeps_every_report_and_the_old_key_opens_nothing(ingested: Net, run: Run) -> None:
    net = ingested
    old_key = _database_key(net, PASSPHRASE)

    wrong = _hq(run, "not the hq passphrase", "rekey", "--hq", net.hq)
    assert "wrong passphrase" in _error(wrong, "WrongPassphrase", WRONG)
    rekeyed = _hq(run, PASSPHRASE, "rekey", "--hq", net.hq)

    assert rekeyed.returncode == OK, rekeyed.stderr
    assert json.loads(rekeyed.stdout) == {"rekeyed": True, "hq": str(net.hq)}
    new_key = _database_key(net, PASSPHRASE)
    assert new_key != old_key
    assert not _opens(net, old_key) and _opens(net, new_key)
    assert _narratives(run, net, PASSPHRASE) == REPORTS
    assert not (net.hq / NEXT_DATABASE_KEY).exists()
    assert (net.hq / DATABASE_KEY).stat().st_mode & 0o777 == 0o600
    missing = run("hq", "rekey", "--hq", net.root / "nowhere", "--json")
    assert "not an HQ directory" in _error(missing, "NotFound", 4)


@pytest.mark.parametrize(
    ("point", "old_key_kept"),
    [
        ("hq-rekey:next-written", True),
        ("hq-rekey:rekeyed", False),
        ("hq-rekey:checkpointed", False),
        ("hq-rekey:replaced", False),
    ],
)
def test_kill_9_during_a_rekey_leaves_a_key_that_opens_every_report(
    ingested: Net, run: Run, point: str, old_key_kept: bool
) -> None:
    net = ingested
    old_key = _database_key(net, PASSPHRASE)
    env = clean_env(FIELDSYNC_PASSPHRASE=PASSPHRASE, **{CRASH_AT_VARIABLE: point})

    killed = run("hq", "rekey", "--hq", net.hq, "--json", env=env)
    assert killed.returncode == KILLED, killed.stderr

    assert _narratives(run, net, PASSPHRASE) == REPORTS  # finishes or drops the rekey
    assert not (net.hq / NEXT_DATABASE_KEY).exists()
    assert _opens(net, old_key) is old_key_kept
    assert (_database_key(net, PASSPHRASE) == old_key) is old_key_kept
    # A rekey runs again from there.
    again = _hq(run, PASSPHRASE, "rekey", "--hq", net.hq)
    assert again.returncode == OK, again.stderr
    assert not _opens(net, old_key)
    assert _narratives(run, net, PASSPHRASE) == REPORTS


def test_hq_passphrase_then_rekey_then_a_copy_of_the_old_dbkey_opens_nothing(
    ingested: Net, run: Run, tmp_path: Path
) -> None:
    """The leak case: someone copied hq.dbkey and saw the passphrase. After both commands
    neither the copy nor the old passphrase opens the database."""
    net = ingested
    leaked = tmp_path / "leaked.dbkey"
    shutil.copy(net.hq / DATABASE_KEY, leaked)
    assert _change_hq(run, net, PASSPHRASE, NEW).returncode == OK
    assert _hq(run, NEW, "rekey", "--hq", net.hq).returncode == OK

    leaked_key = keystore.open_with_passphrase(leaked.read_bytes(), PASSPHRASE, "leaked")
    assert not _opens(net, leaked_key)
    assert _narratives(run, net, NEW) == REPORTS
