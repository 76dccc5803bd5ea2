"""A real browser for tests of web pages: headless Debian Chromium driven by Selenium.

Generic on purpose (any page: HQ's Datasette view, the monitor's web app)::

    with chromium(tmp_path, phone=True) as driver:
        driver.get(url)
        screenshot(driver, tmp_path / "page.png")

Tests that use it carry ``@pytest.mark.browser`` (see ``tests/environment.py``: skipped
without chromium and chromedriver, failed instead under ``FIELDSYNC_REQUIRE_ALL=1``). The
browser and its driver are the machine's (Debian ``chromium`` and ``chromium-driver``, which
``.ci/run`` installs): Selenium is given both paths, so it never looks for or downloads a
driver, and Chromium runs with everything that would reach the network switched off.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.environment import browser_path, missing, missing_browser

#: A desktop window, and a phone's (CSS pixels of a common small Android phone).
DESKTOP_SIZE = (1280, 900)
PHONE_SIZE = (360, 740)
#: Seconds a page may take to show what a test waits for (a bound, not a timing assertion).
PAGE_WAIT = 30

_FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-default-browser-check",
)


def chromedriver_path() -> str | None:
    return shutil.which("chromedriver")


@contextmanager
def chromium(
    scratch: Path | None = None, *, phone: bool = False, language: str | None = None
) -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile (under ``scratch``, or a temporary
    directory), at desktop or phone size, asking for pages in ``language`` (its
    Accept-Language) if given; quit on exit."""
    lacking = missing_browser()
    if lacking is None and chromedriver_path() is None:
        lacking = "needs `chromedriver` on PATH (Debian: apt-get install chromium-driver)"
    if lacking is not None:
        missing(lacking)
    binary, driver_binary = browser_path(), chromedriver_path()
    assert binary is not None and driver_binary is not None
    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium: no usage statistics
    with tempfile.TemporaryDirectory(prefix="chromium-", dir=scratch) as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in _FLAGS:
            options.add_argument(flag)
        width, height = PHONE_SIZE if phone else DESKTOP_SIZE
        options.add_argument(f"--window-size={width},{height}")
        options.add_argument(f"--user-data-dir={profile}")
        if language is not None:
            options.add_argument(f"--lang={language}")
            options.add_experimental_option("prefs", {"intl.accept_languages": language})
        if phone:
            options.add_experimental_option(
                "mobileEmulation",
                {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0}},
            )
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_binary))
        try:
            driver.set_page_load_timeout(PAGE_WAIT)
            yield driver
        finally:
            driver.quit()


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    """``wait(driver).until(condition)``, bounded by PAGE_WAIT."""
    return WebDriverWait(driver, PAGE_WAIT)


def screenshot(driver: WebDriver, path: Path) -> Path:
    """Save what the browser shows as a PNG at ``path`` (for a person to look at)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise AssertionError(f"the browser could not save a screenshot to {path}")
    return path
