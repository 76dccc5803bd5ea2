"""``fieldsync wipe`` and ``fieldsync duress-set`` as a user runs them (real processes)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from fieldsync.node import AUTHOR_SECRET, MEMBERSHIP, NODE_SECRET, REQUEST, UNLOCK_FAILURES
from tests.cli.cli_support import Run, clean_env
from tests.fieldsync.offline_support import PASSPHRASE, Net

DURESS = "lantern orchard quietly sideways"


def _report(run: Run, home: Path, passphrase: str = PASSPHRASE) -> subprocess.CompletedProcess[str]:
    return run(
        "--home", home, "report", "add", "--narrative", "x", "--category", "arbitrary-detention",
        "--occurred", "2025-03-01", "--json", passphrase=passphrase,
    )  # fmt: skip


def test_wipe_needs_yes_without_a_terminal_then_destroys_every_key(net: Net, run: Run) -> None:
    refused = run("--home", net.a, "wipe", "--json")
    assert refused.returncode == 1 and "add --yes" in refused.stderr
    assert (net.a / AUTHOR_SECRET).exists()

    wiped = run("--home", net.a, "wipe", "--yes", "--json")

    assert wiped.returncode == 0, wiped.stderr
    result = json.loads(wiped.stdout)
    assert {AUTHOR_SECRET, NODE_SECRET, MEMBERSHIP} <= set(result["destroyed"])
    assert result["store_scrubbed"] is True and result["problems"] == []
    assert "wiped" in wiped.stderr and AUTHOR_SECRET in wiped.stderr
    for name in (AUTHOR_SECRET, NODE_SECRET, MEMBERSHIP, REQUEST):
        assert not (net.a / name).exists()
    after = run("--home", net.a, "status", "--json")
    assert after.returncode != 0 and "not a fieldsync node" in after.stderr
    again = run("--home", net.a, "wipe", "--yes", "--json")
    assert again.returncode != 0 and "nothing to wipe" in json.loads(again.stdout)["error"]


def test_duress_set_then_the_duress_passphrase_shows_an_empty_author(net: Net, run: Run) -> None:
    assert _report(run, net.a).returncode == 0
    env = clean_env(FIELDSYNC_PASSPHRASE=PASSPHRASE, FIELDSYNC_DURESS_PASSPHRASE=DURESS)
    set_ = run("--home", net.a, "duress-set", "--json", env=env)
    assert set_.returncode == 0, set_.stderr
    assert json.loads(set_.stdout) == {"duress": True}
    weak = run(
        "--home", net.a, "duress-set", "--json",
        env=clean_env(FIELDSYNC_PASSPHRASE=PASSPHRASE, FIELDSYNC_DURESS_PASSPHRASE="password1234"),
    )  # fmt: skip
    assert weak.returncode == 3 and "too easy to guess" in weak.stderr

    under_duress = _report(run, net.a, DURESS)
    assert under_duress.returncode == 0, under_duress.stderr
    real = _report(run, net.a, PASSPHRASE)
    assert real.returncode == 12


def test_wrong_passphrases_wipe_when_the_config_says_so(net: Net, run: Run) -> None:
    env = clean_env(
        FIELDSYNC_PASSPHRASE="not the passphrase at all",
        FIELDSYNC_SECURITY_WIPE_AFTER_WRONG_PASSPHRASES="2",
    )
    args = ("--home", net.a, "report", "add", "--narrative", "x", "--category", "torture",
            "--occurred", "2025-03-01", "--json")  # fmt: skip
    first = run(*args, env=env)
    assert first.returncode == 12 and (net.a / AUTHOR_SECRET).exists()
    second = run(*args, env=env)
    assert second.returncode == 12
    assert "every key on this node was destroyed" in json.loads(second.stdout)["error"]
    assert not (net.a / AUTHOR_SECRET).exists() and not (net.a / NODE_SECRET).exists()


def test_an_author_unlock_killed_before_its_answer_stays_counted(net: Net, run: Run) -> None:
    """The count is written before the key derivation (``fieldsync.wrong_passphrases``, the
    mechanism HQ shares): killing the process during it gets no guess for free."""
    counting = {"FIELDSYNC_SECURITY_WIPE_AFTER_WRONG_PASSPHRASES": "2"}
    args = ("--home", net.a, "author", "list", "--unlock", "--json")
    killed = run(
        *args,
        env=clean_env(
            FIELDSYNC_PASSPHRASE="not the passphrase at all",
            FIELDSYNC_CRASH_AT="wrong-passphrase:counted",
            **counting,
        ),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (net.a / UNLOCK_FAILURES).read_text().strip() == "1"
    right = run(*args, env=clean_env(FIELDSYNC_PASSPHRASE=PASSPHRASE, **counting))
    assert right.returncode == 0, right.stderr
    assert not (net.a / UNLOCK_FAILURES).exists()  # a right one resets it


def test_init_refuses_a_weak_passphrase_with_advice(tmp_path: Path, run: Run) -> None:
    weak = run("--home", tmp_path, "init", "--author", "m", "--json", passphrase="password1234")
    assert weak.returncode == 3
    error = json.loads(weak.stdout)["error"]
    assert "too easy to guess" in error and "very common password" in error
    short = run("--home", tmp_path, "init", "--author", "m", "--json", passphrase="abc def")
    assert short.returncode == 3 and "at least 12 characters" in short.stderr
