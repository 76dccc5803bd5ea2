"""Debian's chromium driven by Selenium at phone size, axe-core, and page screenshots.

Chromium runs headless with a fresh profile, no sandbox (the tests run as root in CI), and
nothing that reaches out (updates, sync, QUIC). axe-core comes from npm into ``.cache/axe``
(``.ci/run`` installs it; ``ensure_axe`` installs it when missing and npm is there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.environment import browser_path, missing

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
#: Where screenshots are written (CI keeps them as artifacts; copies are in docs/screenshots).
SCREENSHOTS = Path(os.environ.get("FIELDSYNC_SCREENSHOTS", ROOT / ".cache" / "screenshots"))
#: A mid-size phone in portrait (CSS pixels).
PHONE = {"width": 390, "height": 844, "pixelRatio": 2.0}
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def _chromedriver() -> str:
    for name in ("chromedriver", "chromium-driver"):
        found = shutil.which(name)
        if found:
            return found
    for path in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"):
        if Path(path).exists():
            return path
    missing("needs chromedriver (Debian: apt-get install chromium-driver)")


@contextmanager
def phone_browser(language: str = "en") -> Iterator[webdriver.Chrome]:
    binary = browser_path()
    if binary is None:
        missing("needs chromium (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="fieldsync-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--lang={language}")
        options.add_experimental_option("prefs", {"intl.accept_languages": language})
        options.add_experimental_option(
            "mobileEmulation",
            {"deviceMetrics": PHONE, "userAgent": "Mozilla/5.0 (Linux; Android 14) Mobile"},
        )
        driver = webdriver.Chrome(options=options, service=Service(_chromedriver()))
        try:
            driver.set_page_load_timeout(60)
            yield driver
        finally:
            driver.quit()


def grant_location(driver: webdriver.Chrome, origin: str, lat: float, lon: float) -> None:
    driver.execute_cdp_cmd(
        "Browser.grantPermissions", {"origin": origin, "permissions": ["geolocation"]}
    )
    driver.execute_cdp_cmd(
        "Emulation.setGeolocationOverride", {"latitude": lat, "longitude": lon, "accuracy": 12}
    )


def ensure_axe() -> str:
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            missing("needs axe-core: `npm install --prefix .cache/axe axe-core@4` (npm)")
        subprocess.run(
            [npm, "install", "--prefix", str(AXE.parents[2]), "axe-core@4", "--no-audit"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return AXE.read_text(encoding="utf-8")


def axe_violations(driver: webdriver.Chrome, source: str) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations of the page shown."""
    driver.execute_script(source)
    result: dict[str, Any] = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(JSON.stringify(r.violations)),"
        " e => done(JSON.stringify([{id: 'axe-error', impact: 'critical', help: String(e)}])));"
    )
    violations: list[dict[str, Any]] = json.loads(str(result))
    return [v for v in violations if v.get("impact") in ("serious", "critical")]


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """The whole page at phone width, as ``SCREENSHOTS/name.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE["width"], "height": height, "deviceScaleFactor": 1, "mobile": True},
    )
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {
            "width": PHONE["width"],
            "height": PHONE["height"],
            "deviceScaleFactor": PHONE["pixelRatio"],
            "mobile": True,
        },
    )
    return path
