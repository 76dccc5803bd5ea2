"""The web app over real HTTP on loopback: pages, a report written with an attachment,
everything kept on a refused submission."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from fieldsync.node import Node
from tests.fieldsync.offline_support import PASSPHRASE, Net, copy_network, snapshot
from tests.web.support import csrf_of, report_form, served, url_of


def _client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _outbox(net: Net) -> list[object]:
    def read() -> list[object]:
        node = Node(net.a)
        try:
            return list(node.reports(PASSPHRASE))
        finally:
            node.close()

    return await asyncio.to_thread(read)


async def test_pages_render_and_a_report_is_sealed_with_its_photo(net: Net) -> None:
    photo = b"\xff\xd8\xff" + bytes(range(256)) * 3000  # ~770 kB: several chunks
    async with (
        served(net.a) as daemon,
        _client() as http,
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
        _client() as http,
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


async def _item_count(net: Net) -> int:
    def count() -> int:
        node = Node(net.a)
        try:
            return node.store().item_count()
        finally:
            node.close()

    return await asyncio.to_thread(count)


async def test_attachments_of_a_refused_submission_are_kept_for_the_next_try(net: Net) -> None:
    photo = bytes(range(256)) * 1200  # ~300 kB: two chunks
    async with served(net.a) as daemon, _client() as http:
        base = url_of(daemon)
        items_before = await _item_count(net)
        async with http.get(base + "/write") as response:
            csrf = csrf_of(await response.text())
        form = report_form(csrf, "wrong", attachment_files=("scene.jpg", photo, "image/jpeg"))
        async with http.post(base + "/write", data=form, headers={"Origin": base}) as response:
            page = await response.text()
            assert response.status == 422
        assert "Already received and encrypted" in page and "scene.jpg" in page
        assert await _item_count(net) == items_before + 2  # ciphertext only, no report yet
        form = report_form(csrf, PASSPHRASE)  # the file is not sent again
        async with http.post(base + "/write", data=form, headers={"Origin": base}) as response:
            assert response.status == 200
            assert "/reports?sealed=" in str(response.url)

    def attachments() -> list[int]:
        node = Node(net.a)
        try:
            (entry,) = node.reports(PASSPHRASE)
            return [a.size for a in entry.attachments]
        finally:
            node.close()

    assert await asyncio.to_thread(attachments) == [len(photo)]


async def test_quick_exit_discards_attachments_never_sent(net: Net) -> None:
    async with served(net.a) as daemon, _client() as http:
        base = url_of(daemon)
        before = await asyncio.to_thread(snapshot, net.a)
        async with http.get(base + "/write") as response:
            csrf = csrf_of(await response.text())
        form = report_form(csrf, "wrong", attachment_files=("scene.jpg", b"x" * 5000, "image/jpeg"))
        async with http.post(base + "/write", data=form, headers={"Origin": base}) as response:
            assert response.status == 422
        async with http.get(base + "/exit", allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/bye"
            assert "cookies" in response.headers["Clear-Site-Data"]
        await daemon.stop()  # waits for the discard it started
        assert await asyncio.to_thread(snapshot, net.a) == before


async def test_a_date_that_does_not_exist_is_shown_next_to_the_date(net: Net) -> None:
    async with served(net.a) as daemon, _client() as http:
        base = url_of(daemon)
        async with http.get(base + "/write") as response:
            csrf = csrf_of(await response.text())
        form = report_form(csrf, PASSPHRASE, occurred_date="2025-02-30", narrative="kept")
        async with http.post(base + "/write", data=form, headers={"Origin": base}) as response:
            page = await response.text()
            assert response.status == 422
        assert 'id="occurred_date-problem"' in page and "2025-02-30" in page
        assert ">kept</textarea>" in page
    assert await _outbox(net) == []


async def test_daemon_runs_on_when_the_apps_port_is_taken(
    net: Net, web_base_net: Net, tmp_path: Path
) -> None:
    other = await asyncio.to_thread(copy_network, web_base_net, tmp_path / "other")
    async with served(net.a) as first:
        port = url_of(first).rsplit(":", 1)[1]
        async with served(other.a, **{"web.listen": f"127.0.0.1:{port}"}) as second:
            assert second.web is None and second.server is not None
