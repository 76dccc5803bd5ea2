"""aiohttp imported without its CA bundles (``fieldsync.aiohttp_import``), and ``wss://``
dials that still verify the server against the system's CA certificates.

Each check runs in a fresh interpreter: the test process has imported aiohttp already.
Everything stays on loopback: the WebSocket server is this test's, with a certificate made
for 127.0.0.1, which the dialling process trusts only when ``SSL_CERT_FILE`` names it.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from fieldsync.transport import Transport, websocket_route
from fieldsync.web import tls

_IMPORT_PROBE = """\
import gc, json, os, ssl, sys
from fieldsync.aiohttp_import import client_context, import_aiohttp
import_aiohttp()
import aiohttp
contexts = [c for c in gc.get_objects() if isinstance(c, ssl.SSLContext)]
print(json.dumps({
    "aiohttp_ca": [c.cert_store_stats()["x509"] for c in contexts],
    "variable": os.environ.get("SSL_CERT_FILE"),
    "client_ca": client_context().cert_store_stats()["x509"],
    "client_verifies": client_context().verify_mode == ssl.CERT_REQUIRED
    and client_context().check_hostname,
}))
"""


def probe(script: str, *args: str, **env: str | None) -> dict[str, object]:
    environment = {k: v for k, v in os.environ.items() if k not in env}
    environment.update({k: v for k, v in env.items() if v is not None})
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("variable", [None, "ca.pem"])
def test_aiohttp_is_imported_without_ca_certificates_and_the_variable_restored(
    tmp_path: Path, variable: str | None
) -> None:
    cert, _key = tls.ensure_certificate(tmp_path, "127.0.0.1")
    value = str(cert) if variable else None
    result = probe(_IMPORT_PROBE, SSL_CERT_FILE=value)
    assert result["variable"] == value
    aiohttp_ca = result["aiohttp_ca"]
    assert isinstance(aiohttp_ca, list) and len(aiohttp_ca) >= 2 and set(aiohttp_ca) == {0}
    assert result["client_verifies"] is True
    if value is not None:
        assert result["client_ca"] == 1  # the caller's own CA file is honoured
    elif os.path.isfile(str(ssl.get_default_verify_paths().cafile)):
        client_ca = result["client_ca"]
        assert isinstance(client_ca, int) and client_ca > 0  # the system's CA bundle


_DIAL_PROBE = """\
import asyncio, json, sys
from fieldsync.aiohttp_import import import_aiohttp
import_aiohttp()
from fieldsync.transport import TransportError, connect_websocket

async def dial():
    try:
        transport = await connect_websocket(sys.argv[1], connect_timeout=30)
    except TransportError as exc:
        return str(exc)
    await transport.send(b"ping")
    answer = await transport.receive()
    await transport.close()
    return answer.decode()

print(json.dumps({"answer": asyncio.run(dial())}))
"""


@pytest.fixture
async def wss_url(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A WebSocket server on 127.0.0.1 over TLS that answers "pong", and its certificate."""
    cert, key = await asyncio.to_thread(tls.ensure_certificate, tmp_path, "127.0.0.1")
    context = await asyncio.to_thread(tls.server_context, cert, key)

    async def handler(transport: Transport) -> None:
        if await transport.receive() == b"ping":
            await transport.send(b"pong")
        await transport.close()

    app = web.Application()
    app.router.add_get("/sync", websocket_route(handler))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"wss://127.0.0.1:{port}/sync", cert
    finally:
        await runner.cleanup()


async def dial(url: str, ca_file: str | None) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
    if ca_file is not None:
        environment["SSL_CERT_FILE"] = ca_file
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _DIAL_PROBE,
        url,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 120)
    assert child.returncode == 0, err.decode()
    answer: str = json.loads(out)["answer"]
    return answer


async def test_a_wss_dial_verifies_the_server_with_the_ca_file_of_the_environment(
    wss_url: tuple[str, Path],
) -> None:
    url, cert = wss_url
    assert await dial(url, str(cert)) == "pong"
    refused = await dial(url, os.devnull)
    assert "cannot open websocket" in refused and "certificate verify failed" in refused
