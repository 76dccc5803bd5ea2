"""A relay daemon loads only what a relay uses (issue 13 item 7): which modules, never MB.

The relay node B runs ``fieldsync run`` in a fresh interpreter (``fieldsync_cli.main.main``
in-process there), receives a sync from the author node A, is stopped with SIGTERM like
systemd stops it, and then writes its ``sys.modules``. HQ's database layer (sqlite-utils,
which pulls in numpy when installed), aiohttp (WebSocket and the web app), the web app and
its templates and locales, the passphrase-strength checker, X.509 certificates and the
exporters are for other roles.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.cli.cli_support import Run, clean_env
from tests.fieldsync.offline_support import Net, add_reports

#: Never loaded by a relay daemon, even after a sync.
NOT_FOR_A_RELAY = (
    "aiohttp",  # WebSocket (hub) and the web app only: TCP sync and the control API use asyncio
    "fieldsync.hq",
    "fieldsync.hq_hub",
    "fieldsync.web",
    "fieldsync.exports",
    "fieldsync.export_csv",
    "sqlite_utils",
    "numpy",
    "jinja2",
    "babel",
    "cryptography",
    "zxcvbn",
    # Discovery is off unless interfaces are named (the default here): zeroconf is loaded
    # only when discovery starts.
    "zeroconf",
    "fieldsync.discovery",
)

_PROBE_SCRIPT = """\
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


PROBE = (sys.executable, "-c", _PROBE_SCRIPT)


def not_for_a_relay(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in NOT_FOR_A_RELAY)}


def test_a_relay_daemon_never_imports_what_other_roles_use(
    net: Net, tmp_path: Path, run: Run
) -> None:
    add_reports(net.a, ["a report the relay carries"])
    out = tmp_path / "modules.json"
    with subprocess.Popen(
        [*PROBE, str(out), "--home", str(net.b), "run", "--listen", "127.0.0.1:0", "--json"],
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as daemon:
        try:
            assert daemon.stdout is not None
            address = json.loads(daemon.stdout.readline())["listening"][0]
            synced = run("--home", net.a, "sync", address, "--json")
            assert synced.returncode == 0, synced.stderr
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(60) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
    result = json.loads(out.read_text())
    modules = set(result["modules"])
    assert "fieldsync.peer" in modules  # it did serve a sync session
    assert not not_for_a_relay(modules)
