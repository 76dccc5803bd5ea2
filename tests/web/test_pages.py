"""The web app over real HTTP on loopback: pages, a report written with an attachment,
everything kept on a refused submission."""

from __future__ import annotations

import asyncio

import aiohttp

from fieldsync.node import Node
from tests.fieldsync.offline_support import PASSPHRASE, Net, snapshot
from tests.web.support import csrf_of, report_form, served, url_of


async def _outbox(net: Net) -> list[object]:
    def read() -> list[object]:
        node = Node(net.a)
        try:
            return list(node.reports())
        finally:
            node.close()

    return await asyncio.to_thread(read)


async def test_pages_render_and_a_report_is_sealed_with_its_photo(net: Net) -> None:
    photo = b"\xff\xd8\xff" + bytes(range(256)) * 3000  # ~770 kB: several chunks
    async with (
        served(net.a) as daemon,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        base = url_of(daemon)
        for path in ("/write", "/reports", "/status"):
            async with http.get(base + path) as response:
                assert response.status == 200, path
                assert response.headers["Cache-Control"] == "no-store"
                assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        async with http.get(base + "/write") as response:
            csrf = csrf_of(await response.text())
        form = report_form(
            csrf,
            PASSPHRASE,
            lat="12.3657",
            lon="-1.5339",
            attachment_camera=("IMG_1.jpg", photo, "image/jpeg"),
        )
        async with http.post(base + "/write", data=form, headers={"Origin": base}) as response:
            page = await response.text()
            assert response.status == 200, page
            assert str(response.url).startswith(base + "/reports?sealed=")
            assert "Sealed" in page
    entries = await _outbox(net)
    assert len(entries) == 1


async def test_wrong_passphrase_keeps_every_field(net: Net) -> None:
    async with (
        served(net.a) as daemon,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        base = url_of(daemon)
        before = await asyncio.to_thread(snapshot, net.a)
        async with http.get(base + "/write") as response:
            csrf = csrf_of(await response.text())
        form = report_form(
            csrf,
            "not the passphrase",
            title="Market arrests",
            narrative="Three traders taken <b>away</b>.",
            place="Central market",
            approximate="on",
        )
        async with http.post(base + "/write", data=form, headers={"Origin": base}) as response:
            page = await response.text()
            assert response.status == 422
        assert "Wrong passphrase." in page
        assert 'value="Market arrests"' in page
        assert "Three traders taken &lt;b&gt;away&lt;/b&gt;." in page
        assert 'value="Central market"' in page
        assert 'id="approximate" name="approximate" checked' in page
        assert 'value="arbitrary-detention" checked' in page
        assert await asyncio.to_thread(snapshot, net.a) == before
