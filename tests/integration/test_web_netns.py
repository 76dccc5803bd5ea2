"""The web app on a Wi-Fi address, as a phone sees it (issue 10 "Must show": the HTTPS
certificate fingerprint in ``status`` equals the served one).

A node and a phone are two network namespaces on a bridge this test creates; nothing touches
the machine's own interfaces. The node's daemon runs with ``[web] listen`` on its namespace
address, so the app serves HTTPS with the node's certificate. A small client run inside the
phone's namespace connects to it, hashes the certificate it was served (its own SHA-256, not
fieldsync's code) and loads the status page; that fingerprint must be the one ``fieldsync
status --json`` shows, and the session cookie must be ``__Host-`` and Secure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.field_support import (
    PORT,
    Daemon,
    Deployment,
    status,
    wait_for,
    write_config,
)
from tests.integration.netns import Host, Network

pytestmark = pytest.mark.netns

DEADLINE = 60.0
WEB_PORT = 7343

#: Runs in the phone's namespace: ``python -c PHONE ADDRESS PORT`` prints one JSON line.
PHONE = r"""
import hashlib, http.client, json, socket, ssl, sys

address, port = sys.argv[1], int(sys.argv[2])
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE  # self-signed: the monitor compares the fingerprint
with socket.create_connection((address, port), timeout=20) as raw:
    with context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
digest = hashlib.sha256(der).hexdigest().upper()
fingerprint = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
page = http.client.HTTPSConnection(address, port, timeout=20, context=context)
page.request("GET", "/status")
response = page.getresponse()
body = response.read().decode()
plain = http.client.HTTPConnection(address, port, timeout=20)
try:
    plain.request("GET", "/status")
    plain_status = plain.getresponse().status
except (OSError, http.client.HTTPException):
    plain_status = None
print(json.dumps({
    "fingerprint": fingerprint,
    "status": response.status,
    "cookies": response.headers.get_all("Set-Cookie") or [],
    "fingerprint_on_page": fingerprint in body,
    "plain_http_status": plain_status,
}))
"""


def _web_of(home: Path) -> dict[str, Any] | None:
    web: dict[str, Any] | None = status(home).get("web")
    return web


@pytest.fixture
def node_and_phone() -> Iterator[tuple[Network, Host, Host]]:
    with Network() as network:
        node = network.add_host("node")
        phone = network.add_host("phone")
        yield network, node, phone


def test_phone_is_served_the_certificate_whose_fingerprint_status_shows(
    tmp_path: Path, node_and_phone: tuple[Network, Host, Host]
) -> None:
    _network, node, phone = node_and_phone
    deployment = Deployment.create(tmp_path / "net", "Wi-Fi monitors")
    home = deployment.add_node("a", "author", author="monitor-a")
    config = write_config(tmp_path / "a.toml")
    with config.open("a", encoding="utf-8") as handle:
        handle.write(f'[web]\nlisten = "{node.address}:{WEB_PORT}"\n')
    daemon = Daemon("a", node, home, config, f"{node.address}:{PORT}", tmp_path / "a.log")
    daemon.start()
    try:
        wait_for(lambda: _web_of(home) is not None, DEADLINE, "the web app", daemon.tail)
        web = _web_of(home)
        assert web is not None
        assert web["https"] is True
        assert web["url"] == f"https://{node.address}:{WEB_PORT}/"
        assert isinstance(web["fingerprint"], str) and len(web["fingerprint"]) == 95

        seen = json.loads(
            phone.run([sys.executable, "-c", PHONE, node.address, str(WEB_PORT)], timeout=60).stdout
        )
        assert seen["fingerprint"] == web["fingerprint"]
        assert seen["status"] == 200
        assert seen["fingerprint_on_page"]
        session = [c for c in seen["cookies"] if c.startswith("__Host-fieldsync=")]
        assert session, seen["cookies"]
        attributes = {part.strip().split("=")[0].lower() for part in session[0].split(";")}
        assert {"secure", "httponly", "samesite", "path"} <= attributes
        assert "domain" not in attributes  # __Host-: this host only
        # The HTTPS port answers no page over plain HTTP.
        assert seen["plain_http_status"] in (None, 400)

        # Restarted, the node serves the same certificate: the phone's comparison stands.
        daemon.stop()
        daemon.start()
        wait_for(lambda: _web_of(home) is not None, DEADLINE, "the web app again", daemon.tail)
        again = json.loads(
            phone.run([sys.executable, "-c", PHONE, node.address, str(WEB_PORT)], timeout=60).stdout
        )
        assert again["fingerprint"] == web["fingerprint"]
    finally:
        if daemon.alive():
            daemon.stop()
