"""Author passphrases typed in the web app count towards ``[security]
wipe_after_wrong_passphrases``, with those typed on the command line (one count,
``fieldsync.wrong_passphrases``): the last wrong one allowed wipes the node, the page says so
and the daemon stops, as after a quick exit that wipes.

A real daemon process (``fieldsync run``, configured through the environment as a service
is) serves the app on loopback; a plain HTTP client types passphrases as the browser sends
them. One browser test shows the page a monitor then sees (and screenshots it).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from fieldsync.errors import NotInitialised
from fieldsync.wipe import key_files
from fieldsync.wrong_passphrases import UNLOCK_FAILURES
from tests.cli.cli_support import clean_env, fieldsync_command
from tests.fieldsync.offline_support import PASSPHRASE, Net, author_seed
from tests.web.browser import axe_violations, ensure_axe, phone_browser, screenshot
from tests.web.messages import catalogue
from tests.web.support import DaemonThread, csrf_of, report_form

#: How long a test waits for what it waits for before it calls the daemon stuck.
PATIENCE = 120.0
WIPED_TITLE = "Every key on this node was destroyed"
WRONG = "not the passphrase at all"


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    async def exited(self) -> int:
        """The daemon's exit code, once it has stopped on its own."""
        return await asyncio.to_thread(self.process.wait, PATIENCE)

    async def logged(self) -> str:
        return await asyncio.to_thread(self.log.read_text, encoding="utf-8")


def _cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*fieldsync_command(), "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=clean_env(**env),
        stdin=subprocess.DEVNULL,
        timeout=PATIENCE,
        check=False,
    )


def _start(home: Path, log: Path, limit: int | None) -> tuple[subprocess.Popen[bytes], str]:
    """``fieldsync run`` on ``home`` with the web app on loopback: the process, the app's
    address. ``limit``: the setting, from the environment (None: not set, the default)."""
    setting = (
        {} if limit is None else {"FIELDSYNC_SECURITY_WIPE_AFTER_WRONG_PASSPHRASES": str(limit)}
    )
    env = clean_env(FIELDSYNC_DISCOVERY_ENABLED="0", FIELDSYNC_WEB_LISTEN="127.0.0.1:0", **setting)
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [*fieldsync_command(), "--home", str(home), "run", "--json", "--listen", "127.0.0.1:0"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"the daemon ended before listening: {log.read_text()}"
    assert json.loads(line)["listening"]
    shown = _cli(home, "web-qr", "--json")
    assert shown.returncode == 0, shown.stderr
    return process, str(json.loads(shown.stdout)["url"]).rstrip("/")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(PATIENCE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


@asynccontextmanager
async def daemon(home: Path, tmp_path: Path, limit: int | None) -> AsyncIterator[Daemon]:
    log = tmp_path / "daemon.log"
    process, url = await asyncio.to_thread(_start, home, log, limit)
    try:
        yield Daemon(process, url, log)
    finally:
        await asyncio.to_thread(_stop, process)


def _client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _my_reports(http: aiohttp.ClientSession, base: str, passphrase: str) -> tuple[int, str]:
    """Open My reports with ``passphrase``: the status and the page shown."""
    async with http.get(base + "/reports") as response:
        csrf = csrf_of(await response.text())
    data = {"csrf": csrf, "passphrase": passphrase}
    async with http.post(base + "/reports", data=data, headers={"Origin": base}) as response:
        return response.status, await response.text()


async def _send_report(http: aiohttp.ClientSession, base: str, passphrase: str) -> tuple[int, str]:
    """Send a report from the form, signed with ``passphrase``: the status and the page."""
    async with http.get(base + "/write") as response:
        csrf = csrf_of(await response.text())
    form = report_form(csrf, passphrase)
    async with http.post(base + "/write", data=form, headers={"Origin": base}) as response:
        return response.status, await response.text()


async def _count(home: Path) -> int | None:
    path = home / UNLOCK_FAILURES
    if not await asyncio.to_thread(path.exists):
        return None
    return int(await asyncio.to_thread(path.read_text))


async def test_wrong_passphrases_in_the_app_count_and_the_last_one_wipes_and_stops(
    net: Net, tmp_path: Path
) -> None:
    """Both forms that ask for the passphrase count, on the count the command line keeps;
    the third wrong one in a row wipes every key, the page says so, the daemon exits."""
    async with daemon(net.a, tmp_path, 3) as served, _client() as http:
        typed = await asyncio.to_thread(
            _cli,
            net.a,
            "author",
            "list",
            "--unlock",
            "--json",
            FIELDSYNC_PASSPHRASE=WRONG,
            FIELDSYNC_SECURITY_WIPE_AFTER_WRONG_PASSPHRASES="3",
        )
        assert typed.returncode == 12, typed.stderr
        assert await _count(net.a) == 1
        status, page = await _send_report(http, served.url, WRONG)
        assert status == 422 and "Wrong passphrase." in page
        assert await _count(net.a) == 2
        assert await asyncio.to_thread(key_files, net.a)
        status, page = await _my_reports(http, served.url, WRONG)
        assert status == 410, page
        assert WIPED_TITLE in page and "enrolled at headquarters in person" in page
        assert "Wrong passphrase." not in page
        assert await asyncio.to_thread(key_files, net.a) == []
        # The daemon stops on its own, as after a quick exit that wipes.
        assert await served.exited() == 0
        logged = await served.logged()
        assert "wrong passphrase 3 of 3 in a row" in logged
        assert "every key on this node was destroyed" in logged and "stopping" in logged
        assert "Traceback" not in logged
    assert not await asyncio.to_thread((net.a / "store.db").exists)
    with pytest.raises(NotInitialised, match="not a fieldsync node"):
        await asyncio.to_thread(author_seed, net)


async def test_a_right_passphrase_in_the_app_resets_the_count(net: Net, tmp_path: Path) -> None:
    """Two wrong, a right one (a report sent), two wrong again, a right one (My reports):
    with a limit of 3 nothing is wiped, and the count starts again each time."""
    before = await asyncio.to_thread(key_files, net.a)
    async with daemon(net.a, tmp_path, 3) as served:
        for right in (_send_report, _my_reports):
            async with _client() as http:  # a new session: My reports asks again
                for expected in (1, 2):
                    status, _ = await _my_reports(http, served.url, WRONG)
                    assert status == 422
                    assert await _count(net.a) == expected
                status, page = await right(http, served.url, PASSPHRASE)
                assert status == 200 and "Show my reports" not in page, page  # unlocked
                assert await _count(net.a) is None  # reset: no file left
        assert served.process.poll() is None  # still serving
    assert await asyncio.to_thread(key_files, net.a) == before
    assert await asyncio.to_thread(author_seed, net)


async def test_the_default_counts_nothing_in_the_app(net: Net, tmp_path: Path) -> None:
    before = await asyncio.to_thread(key_files, net.a)
    async with daemon(net.a, tmp_path, None) as served, _client() as http:
        for _ in range(2):
            assert (await _my_reports(http, served.url, WRONG))[0] == 422
            assert (await _send_report(http, served.url, WRONG))[0] == 422
        assert await _count(net.a) is None
        assert served.process.poll() is None
    assert await asyncio.to_thread(key_files, net.a) == before
    assert await asyncio.to_thread(author_seed, net)


def _wait_heading(driver: WebDriver, text: str) -> None:
    """Until the page shown has ``text`` as its heading (a POST's answer replaces the page)."""
    WebDriverWait(driver, PATIENCE, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.find_element(By.TAG_NAME, "h1").text == text
    )


@pytest.mark.browser
@pytest.mark.parametrize("language", ["en", "ar"])
def test_the_page_says_the_node_was_wiped(net: Net, language: str) -> None:
    """What a monitor sees after the last wrong passphrase allowed: in their language,
    accessible, with no way back to a form that can no longer work."""
    found = catalogue(language).get(WIPED_TITLE) if language != "en" else None
    shown = WIPED_TITLE if found is None else str(found.string)
    axe = ensure_axe()
    settings = {"security.wipe_after_wrong_passphrases": 1}
    with DaemonThread(net.a, **settings) as served, phone_browser(language) as driver:
        driver.get(served.url + "/reports")
        driver.find_element(By.ID, "passphrase").send_keys(WRONG)
        driver.find_element(By.ID, "show-reports").click()
        _wait_heading(driver, shown)
        assert driver.find_element(By.CSS_SELECTOR, "[role=alert]").is_displayed()
        assert not driver.find_elements(By.ID, "passphrase")
        assert axe_violations(driver, axe) == []
        screenshot(driver, f"reports-{language}-wiped")
        assert served.daemon is not None and served.daemon.wiped.is_set()
        assert key_files(net.a) == []
        driver.get(served.url + "/write")  # until the daemon stops, every page says so
        _wait_heading(driver, shown)
