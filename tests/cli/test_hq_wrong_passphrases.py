"""``[security] hq_wipe_after_wrong_passphrases`` on a seized HQ laptop (real processes, real
files): wrong HQ passphrases are counted across ``hq`` commands and processes, a right one
resets the count, and the last wrong one allowed destroys every HQ key
(``fieldsync.wipe.wipe_hq``). Off by default. It bounds guessing through fieldsync only:
a copy of the files is still guessed offline, at Argon2id's pace."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from fieldsync.faults import CRASH_AT_VARIABLE
from fieldsync.hq import DATABASE, DATABASE_KEY, HQ, HQ_SECRET, MANIFEST
from fieldsync.wrong_passphrases import UNLOCK_FAILURES
from tests.cli.cli_support import Run, clean_env
from tests.fieldsync.offline_support import PASSPHRASE, Net, add_reports, export, ingest

OK, REFUSED, NOT_FOUND, WRONG = 0, 3, 4, 12
KILLED = -signal.SIGKILL
BAD = "not the hq passphrase at all"
NEW = "violet tundra mango rickshaw"
LIMIT = "3"


def _hq(
    run: Run, passphrase: str, *args: str | Path, limit: str | None = LIMIT, **extra: str
) -> subprocess.CompletedProcess[str]:
    """``fieldsync hq ARGS --json`` with the HQ limit set in the environment (as in a
    ``--config`` file's [security]); ``limit=None``: not set at all (the default)."""
    settings = (
        {} if limit is None else {"FIELDSYNC_SECURITY_HQ_WIPE_AFTER_WRONG_PASSPHRASES": limit}
    )
    env = clean_env(FIELDSYNC_PASSPHRASE=passphrase, **settings, **extra)
    return run("hq", *args, "--json", env=env)


def _error(result: subprocess.CompletedProcess[str], code: int = WRONG) -> str:
    assert result.returncode == code, result.stderr
    error = json.loads(result.stdout)
    assert error["exit_code"] == code
    assert f"fieldsync: error: {error['error']}" in result.stderr
    message: str = error["error"]
    return message


def _count(net: Net) -> int | None:
    path = net.hq / UNLOCK_FAILURES
    return int(path.read_text()) if path.exists() else None


@pytest.fixture
def ingested(net: Net) -> Net:
    add_reports(net.a, ["Held overnight at the checkpoint."])
    export(net.a, net.usb / "a.bundle")
    ingest(net, net.usb / "a.bundle")
    return net


def _with_hub_node(net: Net) -> Path:
    """HQ's own node (as ``hq ingest --hub`` makes it): it holds the network key too."""
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        return headquarters.hub_node(headquarters.unlock(PASSPHRASE))
    finally:
        headquarters.close()


def test_wrong_then_right_resets_the_count(ingested: Net, run: Run) -> None:
    net = ingested
    secret = (net.hq / HQ_SECRET).read_bytes()
    for attempt in (1, 2):
        wrong = _hq(run, BAD, "alerts", "--hq", net.hq)
        assert "wrong passphrase for HQ database key" in _error(wrong)
        assert _count(net) == attempt
    assert _hq(run, PASSPHRASE, "alerts", "--hq", net.hq).returncode == OK
    assert _count(net) is None  # the count starts again

    # Two more wrong ones (another command, hq.secret this time): still below the limit.
    for attempt in (1, 2):
        wrong = _hq(run, BAD, "receipts", "--hq", net.hq, "--out", net.usb / "r.bundle")
        assert "wrong passphrase for HQ secrets" in _error(wrong)
        assert _count(net) == attempt
    assert (net.hq / HQ_SECRET).read_bytes() == secret
    right = _hq(run, PASSPHRASE, "receipts", "--hq", net.hq, "--out", net.usb / "r.bundle")
    assert right.returncode == OK, right.stderr
    assert _count(net) is None


def test_the_limit_reached_across_commands_destroys_every_hq_key(ingested: Net, run: Run) -> None:
    net = ingested
    hub_node = _with_hub_node(net)
    backup = net.root / "offline-backup"
    shutil.copytree(net.hq, backup)

    # Three processes, three commands: the count goes on from one to the next.
    first = _hq(run, BAD, "alerts", "--hq", net.hq)
    assert _error(first) == "wrong passphrase for HQ database key"
    second = _hq(run, BAD, "passphrase", "--hq", net.hq, FIELDSYNC_NEW_PASSPHRASE=NEW)
    assert _error(second) == "wrong passphrase for HQ secrets"
    assert _count(net) == 2
    third = _hq(run, BAD, "rekey", "--hq", net.hq)
    message = _error(third)
    assert message.startswith(
        "wrong passphrase for HQ database key; that was wrong passphrase 3 of 3 in a row"
        " ([security] hq_wipe_after_wrong_passphrases), so every HQ key in"
    )
    assert "hq.secret" in message and "hq.dbkey" in message and "node/node.secret" in message
    assert "restore the HQ directory from an offline backup" in message

    for gone in (HQ_SECRET, DATABASE_KEY, DATABASE, UNLOCK_FAILURES):
        assert not (net.hq / gone).exists(), gone
    assert not (hub_node / "node.secret").exists()
    assert not (hub_node / "membership.bin").exists()
    assert (net.hq / MANIFEST).exists()  # public: every member holds it
    assert not list(net.hq.glob("*.secret")) and not list(net.hq.glob(".*.tmp"))

    # The right passphrase now meets a clear error, not a traceback ...
    after = _hq(run, PASSPHRASE, "alerts", "--hq", net.hq)
    assert "is not an HQ directory (no hq.secret)" in _error(after, NOT_FOUND)
    # ... and an offline backup made before still opens with it, every report kept.
    exported = _hq(run, PASSPHRASE, "export", "--hq", backup, "--format", "jsonl",
                   "--include-confidential")  # fmt: skip
    assert exported.returncode == OK, exported.stderr
    assert [json.loads(line)["narrative"] for line in exported.stdout.splitlines()] == [
        "Held overnight at the checkpoint."
    ]


def test_a_try_killed_before_its_answer_stays_counted(ingested: Net, run: Run) -> None:
    """Counted before the key derivation: kill -9 during it gets no guess for free."""
    net = ingested
    killed = _hq(
        run, BAD, "alerts", "--hq", net.hq, **{CRASH_AT_VARIABLE: "wrong-passphrase:counted"}
    )
    assert killed.returncode == KILLED, killed.stderr
    assert _count(net) == 1
    # Even the right passphrase, cut short, counts until a right one gets its answer.
    killed = _hq(
        run, PASSPHRASE, "alerts", "--hq", net.hq, **{CRASH_AT_VARIABLE: "wrong-passphrase:counted"}
    )
    assert killed.returncode == KILLED
    assert _count(net) == 2
    # Used up by a wrong try: the third wrong one is the last.
    assert "every HQ key" in _error(_hq(run, BAD, "alerts", "--hq", net.hq))
    assert not (net.hq / HQ_SECRET).exists()


def test_tries_cut_short_up_to_the_limit_let_no_further_passphrase_be_tried(
    ingested: Net, run: Run
) -> None:
    net = ingested
    for _ in range(3):
        killed = _hq(
            run, BAD, "alerts", "--hq", net.hq, **{CRASH_AT_VARIABLE: "wrong-passphrase:counted"}
        )
        assert killed.returncode == KILLED
    assert _count(net) == 3
    # Even the right one is not tried any more: whoever cut those tries short used them.
    refused = _error(_hq(run, PASSPHRASE, "alerts", "--hq", net.hq))
    assert refused.startswith("this passphrase was not tried: the 3 wrong passphrases in a row")
    assert "every HQ key" in refused
    assert not (net.hq / HQ_SECRET).exists() and not (net.hq / DATABASE_KEY).exists()


def test_off_by_default_nothing_is_counted_or_destroyed(ingested: Net, run: Run) -> None:
    net = ingested
    secret = (net.hq / HQ_SECRET).read_bytes()
    for _ in range(4):
        wrong = _hq(run, BAD, "alerts", "--hq", net.hq, limit=None)
        assert _error(wrong) == "wrong passphrase for HQ database key"
    wrong = _hq(run, BAD, "alerts", "--hq", net.hq, limit="0")  # 0 = off, said explicitly
    assert _error(wrong) == "wrong passphrase for HQ database key"
    assert _count(net) is None
    assert (net.hq / HQ_SECRET).read_bytes() == secret
    assert _hq(run, PASSPHRASE, "alerts", "--hq", net.hq, limit=None).returncode == OK


def test_the_author_limit_does_not_count_hq_passphrases(ingested: Net, run: Run) -> None:
    """Two settings: an HQ laptop's author-side limit must not wipe the HQ by surprise."""
    net = ingested
    for _ in range(3):
        wrong = _hq(
            run, BAD, "alerts", "--hq", net.hq, limit=None,
            FIELDSYNC_SECURITY_WIPE_AFTER_WRONG_PASSPHRASES="2",
        )  # fmt: skip
        assert _error(wrong) == "wrong passphrase for HQ database key"
    assert (net.hq / HQ_SECRET).exists() and _count(net) is None


def test_a_database_key_file_damaged_by_hand_is_not_a_wrong_passphrase(
    ingested: Net, run: Run
) -> None:
    """A damaged key file says nothing about the passphrase: not counted, nothing lost."""
    net = ingested
    dbkey = (net.hq / DATABASE_KEY).read_bytes()
    (net.hq / DATABASE_KEY).write_bytes(b"garbage")
    damaged = _hq(run, PASSPHRASE, "alerts", "--hq", net.hq)
    assert "HQ database key is damaged" in _error(damaged, REFUSED)
    assert _count(net) is None
    (net.hq / DATABASE_KEY).write_bytes(dbkey)
    assert _hq(run, PASSPHRASE, "alerts", "--hq", net.hq).returncode == OK
