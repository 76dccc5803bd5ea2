"""A daemon loads only what its role uses (issue 13 item 7): which modules, never MB.

The relay node B runs ``fieldsync run`` in a fresh interpreter (``fieldsync_cli.main.main``
in-process there), receives a sync from the author node A, is stopped with SIGTERM like
systemd stops it, and then writes its ``sys.modules``. HQ's database layer (sqlite-utils,
which pulls in numpy when installed), aiohttp (WebSocket), the web app and
its templates and locales, the passphrase-strength checker, X.509 certificates and the
exporters are for other roles.

The author node A, with the web app on loopback, loads the app's libraries (its own HTTP
server on h11, ``fieldsync.web.http``) but neither aiohttp (about 13 MB: only the hub's and
HQ's WebSocket transport use it), Babel's catalogue parser nor X.509 certificates, and holds
no TLS context with CA certificates, after serving pages, a static file and a form.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from fieldsync.control_client import request
from tests.cli.cli_support import Run, clean_env
from tests.fieldsync.offline_support import Net, add_reports

#: Never loaded by a relay daemon, even after a sync.
NOT_FOR_A_RELAY = (
    "aiohttp",  # WebSocket (hub) only: TCP sync, the control API and the web app use asyncio
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
import gc, json, ssl, sys
from fieldsync_cli.main import main
code = 0
try:
    main(sys.argv[2:], prog_name="fieldsync")
except SystemExit as exc:
    code = exc.code
contexts = [c for c in gc.get_objects() if isinstance(c, ssl.SSLContext)]
with open(sys.argv[1], "w") as out:
    json.dump(
        {
            "code": code,
            "modules": sorted(sys.modules),
            "ca_certificates": [c.cert_store_stats()["x509"] for c in contexts],
        },
        out,
    )
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


#: Loaded by an author's daemon serving the web app on loopback.
FOR_THE_WEB_APP = (
    "fieldsync.web.http",
    "h11",
    "python_multipart",
    "jinja2",
    "babel.dates",
    "fieldsync.web.app",
)
#: Never loaded by it: aiohttp (the app has its own server), Babel's catalogue parser
#: (catalogues are read apart), X.509 (no HTTPS on loopback), and what other roles use.
NOT_FOR_AN_AUTHOR_ON_LOOPBACK = (
    "aiohttp",
    "aiohttp_jinja2",
    "babel.messages",
    "cryptography",
    "fieldsync.hq",
    "fieldsync.hq_hub",
    "fieldsync.exports",
    "sqlite_utils",
    "zeroconf",
)


def web_port(home: Path) -> int:
    """The app's port, from the daemon's status over its control socket."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = request(home / "control.sock", "status")
        web = (status or {}).get("web")
        if web:
            return int(str(web["url"]).rstrip("/").rsplit(":", 1)[1])
        time.sleep(0.1)  # polling: the app starts after the sync listener
    raise AssertionError("the web app did not start")


def test_an_author_daemon_serving_the_web_app_loads_neither_aiohttp_nor_ca_certificates(
    net: Net, tmp_path: Path
) -> None:
    out = tmp_path / "modules.json"
    with subprocess.Popen(
        [*PROBE, str(out), "--home", str(net.a), "run", "--json"],
        env=clean_env(FIELDSYNC_WEB_LISTEN="127.0.0.1:0"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as daemon:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", web_port(net.a), timeout=30)
            try:
                for path in ("/write", "/status", "/static/app.css"):  # loopback only
                    connection.request("GET", path, headers={"Accept-Language": "fr"})
                    response = connection.getresponse()
                    response.read()
                    assert response.status == 200, path
                # A form through the multipart reader (no session: refused, nothing stored).
                boundary = "probe"
                form = f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\nx\r\n'
                connection.request(
                    "POST",
                    "/write",
                    body=f"{form}--{boundary}--\r\n".encode(),
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                )
                response = connection.getresponse()
                response.read()
                assert response.status == 403
            finally:
                connection.close()
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(60) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
    result = json.loads(out.read_text())
    modules = set(result["modules"])
    assert set(FOR_THE_WEB_APP) <= modules
    assert not {
        m
        for m in modules
        if any(m == h or m.startswith(h + ".") for h in NOT_FOR_AN_AUTHOR_ON_LOOPBACK)
    }
    # No TLS context holds the system's CA certificates (aiohttp's client made two).
    assert set(result["ca_certificates"]) <= {0}
