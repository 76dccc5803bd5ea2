"""The web app's browser tests: a phone-sized Chromium asking for one language (from
``tests.browser_support``), the phone's location, axe-core, full-page screenshots.

axe-core comes from npm into ``.cache/axe`` (``.ci/run`` installs it; ``ensure_axe``
installs it when missing and npm is there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser_support import PHONE_SIZE, chromium
from tests.environment import missing

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
#: Where screenshots are written (CI keeps them as artifacts; copies are in docs/screenshots).
SCREENSHOTS = Path(os.environ.get("FIELDSYNC_SCREENSHOTS", ROOT / ".cache" / "screenshots"))


@contextmanager
def phone_browser(language: str = "en") -> Iterator[WebDriver]:
    with chromium(phone=True, language=language) as driver:
        yield driver


def grant_location(driver: WebDriver, origin: str, lat: float, lon: float) -> None:
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


def axe_violations(driver: WebDriver, source: str) -> list[dict[str, Any]]:
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


def screenshot(driver: WebDriver, name: str) -> Path:
    """The whole page at phone width, as ``SCREENSHOTS/name.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE_SIZE[0], "height": height, "deviceScaleFactor": 1, "mobile": True},
    )
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE_SIZE[0], "height": PHONE_SIZE[1], "deviceScaleFactor": 2, "mobile": True},
    )
    return path
