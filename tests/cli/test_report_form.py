"""``report add`` follows the network's form (issue #10 item 5): on a real terminal, every
answer is checked as it is typed, ``?`` lists the categories, the narrative takes several
lines, and a wrong passphrase keeps the answers; without a terminal, every problem is named
at once and nothing is asked or written."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fieldsync_cli.main import main
from tests.cli.cli_support import Run, clean_env, fieldsync_command
from tests.cli.test_cli import Terminal
from tests.fieldsync.offline_support import PASSPHRASE, Net, export, open_hq, snapshot

OK, REFUSED, WRONG_PASSPHRASE = 0, 3, 12


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner(
        env={"FIELDSYNC_HOME": None, "FIELDSYNC_PASSPHRASE": None, "FIELDSYNC_HQ": None}
    )


def _hq_rows(net: Net, run: Run) -> list[dict[str, object]]:
    export(net.a, net.usb / "a.bundle")
    ingested = run("hq", "ingest", "--hq", net.hq, net.usb / "a.bundle")
    assert ingested.returncode == OK, ingested.stderr
    with open_hq(net) as headquarters:
        return list(headquarters.database()["reports"].rows)


def test_interactive_report_follows_the_form(net: Net, run: Run) -> None:
    term = Terminal(
        [*fieldsync_command(), "--home", str(net.a), "report", "add"], clean_env(LANG="C.UTF-8")
    )
    term.expect("In your own words: who, what, where, when.")
    term.expect("What happened (end with a line containing only .):")
    term.send("Soldiers burned the community radio.\n")
    term.send("Two journalists were beaten.\n.\n")
    term.expect("Categories (comma separated) [unclassified]: ")
    term.send("?\n")  # lists every category with its label, then asks again
    term.expect("arbitrary-detention")
    term.expect("Arbitrary arrest or detention")
    term.expect("Categories (comma separated) [unclassified]: ")
    term.send("freedom-of-expresion, torture\n")  # a typo: refused with the list
    term.expect("Unknown category 'freedom-of-expresion'; choose from: unclassified,")
    term.expect("Categories (comma separated) [unclassified]: ")
    term.send("freedom-of-expression, torture\n")
    term.expect("When did it happen: ")
    term.send("2025-02-30\n")  # impossible: refused at the prompt, not after it
    term.expect("'2025-02-30' is not a real date or time.")
    term.expect("When did it happen: ")
    term.send("2025-02-28\n")
    term.expect("Is this date approximate? [y/N]: ")
    term.send("y\n")
    term.expect("Short title (optional): ")
    term.send("\n")
    term.expect("Place (optional): ")
    term.send("Koudougou\n")
    term.expect("Latitude (optional): ")
    term.send("0\n")  # 0 is a coordinate
    term.expect("Longitude (optional): ")
    term.send("0\n")
    term.expect("Sensitivity [restricted]: ")
    term.send("secret\n")
    term.expect("'secret' is not one of: public, internal, restricted, confidential.")
    term.expect("Sensitivity [restricted]: ")
    term.send("\n")
    term.expect("Attach a file (path; Enter when done): ")
    term.send("\n")
    term.expect("Passphrase for your author key: ")
    term.send("not the passphrase\n")
    term.expect("wrong passphrase; your answers are kept (2 more)")
    term.expect("Passphrase for your author key: ")
    term.send(PASSPHRASE + "\n")
    code, transcript = term.finish()
    assert code == OK, transcript
    assert PASSPHRASE.encode() not in transcript
    (row,) = _hq_rows(net, run)
    assert row["narrative"] == "Soldiers burned the community radio.\nTwo journalists were beaten."
    assert json.loads(str(row["categories"])) == ["freedom-of-expression", "torture"]
    assert (row["occurred_start"], row["occurred_precision"]) == ("2025-02-28", "day")
    assert (row["place"], row["sensitivity"]) == ("Koudougou", "restricted")
    assert (row["lat"], row["lon"]) == (0, 0)


def test_three_wrong_passphrases_write_nothing(net: Net) -> None:
    term = Terminal(
        [*fieldsync_command(), "--home", str(net.a), "report", "add", "--narrative", "x",
         "--category", "torture", "--occurred", "2025"],
        clean_env(),
    )  # fmt: skip
    for _ in range(3):
        term.expect("Passphrase for your author key: ")
        term.send("wrong wrong\n")
    code, transcript = term.finish()
    assert code == WRONG_PASSPHRASE, transcript
    assert transcript.count(b"your answers are kept") == 2
    assert snapshot(net.a)["outbox"] == []


def test_a_typed_passphrase_that_wipes_is_not_asked_again(net: Net) -> None:
    """The last wrong passphrase ``[security] wipe_after_wrong_passphrases`` allows ends the
    command with what was destroyed: there is no key left to ask a passphrase for."""
    term = Terminal(
        [*fieldsync_command(), "--home", str(net.a), "report", "add", "--narrative", "x",
         "--category", "torture", "--occurred", "2025"],
        clean_env(FIELDSYNC_SECURITY_WIPE_AFTER_WRONG_PASSPHRASES="2"),
    )  # fmt: skip
    for _ in range(2):
        term.expect("Passphrase for your author key: ")
        term.send("wrong wrong\n")
    code, transcript = term.finish()
    assert code == WRONG_PASSPHRASE, transcript
    assert transcript.count(b"your answers are kept") == 1
    assert b"every key on this node was destroyed" in transcript
    assert b"not a fieldsync node" not in transcript
    assert transcript.count(b"Passphrase for your author key: ") == 2


def test_narrative_in_the_editor(net: Net, run: Run, tmp_path: Path) -> None:
    editor = tmp_path / "editor.py"
    editor.write_text(
        f"#!{sys.executable}\nimport sys\n"
        "open(sys.argv[1], 'w').write('Written in the editor.\\nSecond line.\\n')\n"
    )
    editor.chmod(editor.stat().st_mode | stat.S_IXUSR)
    term = Terminal(
        [*fieldsync_command(), "--home", str(net.a), "report", "add", "--editor"],
        clean_env(EDITOR=str(editor), FIELDSYNC_PASSPHRASE=PASSPHRASE),
    )
    term.expect("Categories (comma separated) [unclassified]: ")
    term.send("\n")
    term.expect("When did it happen: ")
    term.send("2025-03\n")
    term.expect("approximate? [y/N]: ")
    term.send("\n")
    for _ in range(4):  # title, place, latitude, longitude
        term.expect("(optional): ")
        term.send("\n")
    term.expect("Sensitivity [restricted]: ")
    term.send("confidential\n")
    term.expect("Attach a file (path; Enter when done): ")
    term.send("\n")
    code, transcript = term.finish()
    assert code == OK, transcript
    (row,) = _hq_rows(net, run)
    assert row["narrative"] == "Written in the editor.\nSecond line.\n"
    assert (row["sensitivity"], row["occurred_precision"]) == ("confidential", "month")


def test_every_problem_is_named_before_any_passphrase(run: Run, net: Net) -> None:
    refused = run(
        "--home", net.a, "report", "add", "--category", "tortur", "--occurred", "2025-02-30",
        "--lat", "0", "--json", passphrase=None,
    )  # fmt: skip
    assert refused.returncode == REFUSED, refused.stderr
    error = json.loads(refused.stdout)["error"]
    assert "--narrative: Describe what happened." in error
    assert "--category: Unknown category 'tortur'; choose from: unclassified," in error
    assert "--occurred: '2025-02-30' is not a real date or time." in error
    assert "--lat/--lon/--accuracy: Give both latitude and longitude" in error
    assert "passphrase" not in refused.stderr.lower()
    assert snapshot(net.a)["outbox"] == []


def test_zero_coordinates_and_extra_fields_from_options(net: Net, run: Run) -> None:
    added = run(
        "--home", net.a, "report", "add", "--narrative", "On the equator.", "--category",
        "other", "--occurred", "2025-03-01", "--lat", "0", "--lon", "0", "--json",
    )  # fmt: skip
    assert added.returncode == OK, added.stderr
    (row,) = _hq_rows(net, run)
    assert (row["lat"], row["lon"]) == (0, 0)


def test_field_option_needs_key_and_value(cli: CliRunner, net: Net) -> None:
    result = cli.invoke(
        main,
        ["--home", str(net.a), "report", "add", "--narrative", "x", "--category", "other",
         "--occurred", "2025", "--field", "novalue"],
        env={"FIELDSYNC_PASSPHRASE": PASSPHRASE},
    )  # fmt: skip
    assert result.exit_code == REFUSED and "write KEY=VALUE" in result.stderr


def test_json_file_categories_are_checked_against_the_form(
    cli: CliRunner, net: Net, tmp_path: Path
) -> None:
    fields = tmp_path / "report.json"
    fields.write_text(
        json.dumps(
            {
                "narrative": "From a file.",
                "categories": ["land-grab"],
                "occurred": {"start": "2025", "precision": "year", "approximate": False},
            }
        )
    )
    env = {"FIELDSYNC_PASSPHRASE": PASSPHRASE}
    home = ["--home", str(net.a), "report", "add", "--json-file", str(fields)]
    refused = cli.invoke(main, home, env=env)
    assert refused.exit_code == REFUSED
    assert "unknown category 'land-grab'; the network's form has: unclassified" in refused.stderr
    overridden = cli.invoke(
        main, [*home, "--category", "other", "--lat", "0", "--lon", "0"], env=env
    )
    assert overridden.exit_code == OK, overridden.stderr
    assert len(snapshot(net.a)["outbox"]) == 1
    bad_option = cli.invoke(main, [*home, "--category", "nope"], env=env)
    assert bad_option.exit_code == REFUSED and "--category: Unknown category" in bad_option.stderr


def test_labels_follow_the_locale(net: Net) -> None:
    term = Terminal(
        [*fieldsync_command(), "--home", str(net.a), "report", "add"],
        clean_env(LANG="fr_FR.UTF-8"),
    )
    term.expect("Ce qui s'est passé (end with a line containing only .):")
    term.send("\x04")  # Ctrl-D on an empty narrative: cancelled, nothing written
    code, _ = term.finish()
    assert code == 130
    assert snapshot(net.a)["outbox"] == []
