"""`fieldsync status` and `fieldsync web-qr` say where the web app is."""

from __future__ import annotations

import asyncio
import json
import subprocess

from tests.cli.cli_support import clean_env, fieldsync_command
from tests.fieldsync.offline_support import Net
from tests.web.support import served, url_of


def _cli(net: Net, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*fieldsync_command(), "--home", str(net.a), *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )


async def test_status_and_web_qr_show_the_apps_address(net: Net) -> None:
    async with served(net.a) as daemon:
        url = url_of(daemon) + "/"
        status = await asyncio.to_thread(_cli, net, "status")
        assert status.returncode == 0, status.stderr
        assert f"web app     {url}" in status.stdout
        shown = await asyncio.to_thread(_cli, net, "web-qr")
        assert shown.returncode == 0, shown.stderr
        assert f"address     {url}" in shown.stdout
        assert "█" in shown.stdout or "▀" in shown.stdout  # the QR code itself
        assert "no certificate to compare" in shown.stdout
        as_json = await asyncio.to_thread(_cli, net, "web-qr", "--json")
        assert json.loads(as_json.stdout) == {"url": url, "https": False, "fingerprint": None}
    async with served(net.a, **{"web.listen": ""}) as daemon:
        assert daemon.web is None
        off = await asyncio.to_thread(_cli, net, "web-qr")
        assert off.returncode == 1 and "the web app is off" in off.stderr
        status = await asyncio.to_thread(_cli, net, "status")
        assert "web app     off" in status.stdout
    stopped = await asyncio.to_thread(_cli, net, "web-qr")
    assert stopped.returncode == 1 and "no daemon answers" in stopped.stderr
