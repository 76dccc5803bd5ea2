"""``[privacy] quick_exit_wipes``: the web app's quick exit wipes the node (issue #11 item 5).

A real daemon serves the app on loopback; a plain HTTP client presses the quick exit as the
browser does (a GET the app's own page started: ``Sec-Fetch-Site: same-origin``), and one
test taps the button in a real browser.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from fieldsync.errors import FieldsyncError
from fieldsync.wipe import key_files
from tests.fieldsync.offline_support import Net, author_seed
from tests.web.browser import phone_browser
from tests.web.support import DaemonThread, served, url_of

FROM_OUR_PAGE = {"Sec-Fetch-Site": "same-origin"}


async def _quick_exit(base: str, headers: dict[str, str]) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(base + "/exit", headers=headers, allow_redirects=False) as response,
    ):
        assert response.status == 303 and response.headers["Location"] == "/bye"


async def test_quick_exit_wipes_every_key_and_stops_the_daemon(net: Net) -> None:
    assert await asyncio.to_thread(key_files, net.a)
    async with served(net.a, **{"privacy.quick_exit_wipes": True}) as daemon:
        await _quick_exit(url_of(daemon), FROM_OUR_PAGE)
        # The keys are gone when the redirect arrives, and the daemon is told to stop.
        assert await asyncio.to_thread(key_files, net.a) == []
        assert daemon.wiped.is_set()
        await daemon.wait(asyncio.Event())  # returns: the daemon stops itself
    assert not await asyncio.to_thread((net.a / "store.db").exists)
    with pytest.raises(FieldsyncError):
        await asyncio.to_thread(author_seed, net)


async def test_quick_exit_from_another_site_does_not_wipe(net: Net) -> None:
    """Another site's link or image (cross-site GET) only ends the session."""
    before = await asyncio.to_thread(key_files, net.a)
    async with served(net.a, **{"privacy.quick_exit_wipes": True}) as daemon:
        base = url_of(daemon)
        await _quick_exit(base, {"Sec-Fetch-Site": "cross-site"})
        await _quick_exit(base, {"Referer": "http://example.org/page"})  # an old browser
        await _quick_exit(base, {})  # no header saying where it came from
        assert not daemon.wiped.is_set()
    assert await asyncio.to_thread(key_files, net.a) == before
    assert await asyncio.to_thread(author_seed, net)


async def test_quick_exit_wipes_nothing_by_default(net: Net) -> None:
    before = await asyncio.to_thread(key_files, net.a)
    async with served(net.a) as daemon:
        base = url_of(daemon)
        await _quick_exit(base, FROM_OUR_PAGE)
        await _quick_exit(base, {"Referer": base + "/write"})
        assert not daemon.wiped.is_set()
    assert await asyncio.to_thread(key_files, net.a) == before
    assert await asyncio.to_thread(author_seed, net)


async def test_quick_exit_from_an_old_browser_on_our_page_wipes(net: Net) -> None:
    """No Sec-Fetch-Site header: a Referer of ours says the app's page started it."""
    async with served(net.a, **{"privacy.quick_exit_wipes": True}) as daemon:
        base = url_of(daemon)
        await _quick_exit(base, {"Referer": base + "/write"})
        assert daemon.wiped.is_set()
    assert await asyncio.to_thread(key_files, net.a) == []


@pytest.mark.browser
def test_the_quick_exit_button_in_a_browser_wipes(net: Net) -> None:
    """What the browser really sends when the monitor taps the button is enough to wipe."""
    with (
        DaemonThread(net.a, **{"privacy.quick_exit_wipes": True}) as served_app,
        phone_browser("en") as driver,
    ):
        driver.get(served_app.url + "/write")
        driver.find_element(By.ID, "quick-exit").click()
        WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/bye"))
        assert "It works!" in driver.page_source
        assert served_app.daemon is not None and served_app.daemon.wiped.is_set()
        assert key_files(net.a) == []
