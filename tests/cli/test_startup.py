"""Start-up stays small (issue 13 item 6): which modules a command imports, never timings.

Each command runs in a fresh interpreter (``fieldsync_cli.main.main`` in-process there) that
then writes its ``sys.modules``: ``--help`` imports no command module at all; ``status``
(with and without a running daemon) and ``report list`` never import the daemon, aiohttp,
zeroconf or sqlite-utils; ``status`` parses no item and loads nothing that writes, lists or
wipes reports, nor does ``author list``; ``report list`` parses no item and loads no form; no
command that writes a report starts a process for it.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import click
from click.testing import CliRunner

from fieldsync_cli.main import COMMANDS, SHORT_HELP, main
from tests.cli.cli_support import clean_env
from tests.fieldsync.offline_support import PASSPHRASE, Net, add_reports
from tests.integration.sync_support import start_server

#: Never needed to show help, status or the outbox.
HEAVY = (
    "aiohttp",
    "zeroconf",
    "sqlite_utils",
    "fieldsync.daemon",
    "fieldsync.runtime",
    "fieldsync.peer",
    "fieldsync.discovery",
    "fieldsync.hq",
    "fieldsync.control",  # the server side; the client is fieldsync.control_client
    "asyncio",
)

#: What parses items, writes, lists or carries reports, and wipes: ``status`` only counts
#: what the store holds and reads the membership file (fieldsync.node imports these where
#: they are used).
REPORT_MACHINERY = (
    "fieldsync.media",
    "fieldsync.outbox",
    "fieldsync.wipe",
    "fieldsync.forms",
    "fieldsync_protocol.items",
    "fieldsync_protocol.envelope",
    "fieldsync_protocol.report",
    "fieldsync_protocol.attachment",
    "fieldsync_protocol.form",
    "fieldsync_protocol.keydelivery",
    "fieldsync_protocol.revocation",
)

#: What writing a report needs and listing reports does not: the network's form (parser,
#: signature check), envelopes and the item parsers (``report list`` opens sealed outbox
#: entries only).
REPORT_ADD_ONLY = (
    "fieldsync.forms",
    "fieldsync_protocol.envelope",
    "fieldsync_protocol.form",
    "fieldsync_protocol.items",
    "fieldsync_protocol.keydelivery",
    "fieldsync_protocol.revocation",
)

_PROBE = """\
import json, sys
from fieldsync_cli.main import main
code = 0
try:
    main(sys.argv[2:], prog_name="fieldsync")
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""


def imported_by(tmp_path: Path, *args: str | Path) -> tuple[set[str], str]:
    """The modules ``fieldsync ARGS`` imported, and what it printed on stdout."""
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *map(str, args)],
        env=without_coverage(clean_env(FIELDSYNC_PASSPHRASE=PASSPHRASE)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result = json.loads(out.read_text())
    assert result["code"] in (0, None), done.stderr
    return set(result["modules"]), done.stdout


def without_coverage(env: dict[str, str]) -> dict[str, str]:
    """``env`` without what starts coverage in a child (``make test`` measures every process):
    coverage itself loads ``tomllib``, ``socket`` and more, which would hide what the command
    imports."""
    return {k: v for k, v in env.items() if not k.startswith(("COVERAGE_", "COV_CORE_"))}


def heavy_in(modules: set[str], heavy: tuple[str, ...] = HEAVY) -> set[str]:
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy)}


def test_help_imports_no_command_module(tmp_path: Path) -> None:
    modules, out = imported_by(tmp_path, "--help")
    assert not heavy_in(modules)  # the daemon, aiohttp, zeroconf...
    assert not {m for m in modules if m.startswith(("fieldsync.", "fieldsync_protocol", "nacl"))}
    assert not {m for m in modules if m.startswith("fieldsync_cli.cmd_")}
    for name in COMMANDS:
        assert f"  {name} " in out, name


def test_help_lines_match_each_commands_own_help() -> None:
    """``SHORT_HELP`` is what each command's docstring says (it is listed without import)."""
    assert set(SHORT_HELP) == set(COMMANDS)
    for name, (module, attribute) in COMMANDS.items():
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        assert SHORT_HELP[name] == command.get_short_help_str(limit=1000), name


def test_status_without_a_daemon_stays_light(net: Net, tmp_path: Path) -> None:
    modules, out = imported_by(tmp_path, "--home", net.b, "status", "--json")
    assert json.loads(out)["daemon"] is False
    assert not heavy_in(modules)
    assert not heavy_in(modules, REPORT_MACHINERY)
    assert "logging" not in modules  # nothing logs here (fieldsync.node imports it to warn)


def test_status_without_a_daemon_loads_no_socket_toml_or_suggestions(
    net: Net, tmp_path: Path
) -> None:
    """No control socket: no socket module; no config file: no TOML parser; no error: no
    "did you mean" matcher."""
    modules, out = imported_by(tmp_path, "--home", net.b, "status", "--json")
    assert json.loads(out)["daemon"] is False
    assert not modules & {"socket", "tomllib", "difflib"}


def test_status_asks_a_running_daemon_without_aiohttp(net: Net, tmp_path: Path) -> None:
    server = start_server(net.b)
    try:
        modules, out = imported_by(tmp_path, "--home", net.b, "status", "--json")
    finally:
        assert server.stop() == 0
    info = json.loads(out)
    assert info["daemon"] is True and info["listening"] == server.addresses
    assert not heavy_in(modules)
    assert not heavy_in(modules, REPORT_MACHINERY)


def test_report_list_stays_light(net: Net, tmp_path: Path) -> None:
    (report_id,) = add_reports(net.a, ["listed"])  # so an outbox entry is opened
    modules, out = imported_by(tmp_path, "--home", net.a, "report", "list", "--json")
    assert [row["id"] for row in json.loads(out)] == [report_id]
    assert not heavy_in(modules)
    assert not heavy_in(modules, REPORT_ADD_ONLY)


def test_author_list_stays_light(net: Net, tmp_path: Path) -> None:
    """Counting author keys reads file names: nothing that parses items or writes reports."""
    modules, out = imported_by(tmp_path, "--home", net.a, "author", "list", "--json")
    assert json.loads(out)
    assert not heavy_in(modules)
    assert not heavy_in(modules, REPORT_MACHINERY)


def test_report_add_starts_no_process(net: Net, tmp_path: Path) -> None:
    """The clock's state comes from one system call, not ``timedatectl`` per report."""
    args = [
        "report",
        "add",
        "--narrative",
        "x",
        "--category",
        "threats-harassment",
        "--occurred",
        "2025",
    ]
    modules, _out = imported_by(tmp_path, "--home", net.a, *args, "--json")
    assert "subprocess" not in modules
    assert not heavy_in(modules) - {m for m in modules if m.startswith("sqlite_utils")}


_GC_PROBE_COMMAND = """\
import gc, json, sys

import click

LOADED_WITH_THE_COMMAND = [object()]  # tracked by the collector, made while modules load


@click.command()
@click.argument("out")
def probe(out):
    tracked = {id(o) for o in gc.get_objects()}  # every generation but the frozen one
    with open(out, "w") as f:
        json.dump({
            "enabled": gc.isenabled(),
            "frozen": gc.get_freeze_count(),
            "collectable": len(tracked),
            "module_object_frozen": gc.is_tracked(LOADED_WITH_THE_COMMAND)
            and id(LOADED_WITH_THE_COMMAND) not in tracked,
        }, f)
"""

# ``python -m fieldsync_cli probe OUT``, with the probe command registered first.
_GC_PROBE = """\
import runpy, sys
from fieldsync_cli import main
main.COMMANDS["probe"] = ("gc_probe_command", "probe")
sys.argv = ["fieldsync", "probe", sys.argv[1]]
runpy.run_module("fieldsync_cli", run_name="__main__", alter_sys=True)
"""


def test_the_program_runs_each_command_with_its_start_up_objects_frozen(
    tmp_path: Path,
) -> None:
    """``python -m fieldsync_cli`` (``fieldsync_cli.entry``, as the console script) loads a
    command with the collector off, then freezes what loading made and turns collection back
    on before the command runs: a daemon that ran with collection off would never free a
    reference cycle."""
    (tmp_path / "gc_probe_command.py").write_text(_GC_PROBE_COMMAND)
    out = tmp_path / "gc.json"
    # The probe command's module is found through PYTHONPATH (the directory it is written to).
    paths = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    subprocess.run(
        [sys.executable, "-c", _GC_PROBE, str(out)],
        env=without_coverage(clean_env(PYTHONPATH=os.pathsep.join(paths))),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=True,
    )
    seen = json.loads(out.read_text())
    assert seen["enabled"] is True
    assert seen["module_object_frozen"] is True
    # click, fieldsync_cli and the command module: thousands of objects, none walked again.
    assert seen["frozen"] > 10 * seen["collectable"]


def test_the_program_is_the_entry_that_keeps_start_up_out_of_the_collector() -> None:
    """The ``fieldsync`` console script starts through ``entry.run`` as ``python -m
    fieldsync_cli`` does (the test above); the command group called in-process (tests,
    embedding) leaves the collector alone."""
    root = Path(__file__).resolve().parents[2]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"fieldsync": "fieldsync_cli.entry:run"}
    frozen = gc.get_freeze_count()
    assert CliRunner().invoke(main, ["form", "--help"]).exit_code == 0
    assert gc.isenabled() and gc.get_freeze_count() == frozen
