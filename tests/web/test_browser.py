"""The web app in a real browser (Debian chromium) at phone size."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from fieldsync.node import Node
from tests.fieldsync.offline_support import (
    KDF,
    PASSPHRASE,
    Net,
    enroll,
    export,
    fields,
    import_,
    ingest,
    receipts,
)
from tests.web.browser import (
    axe_violations,
    ensure_axe,
    grant_location,
    phone_browser,
    screenshot,
)
from tests.web.messages import catalogue, extracted
from tests.web.support import DaemonThread

pytestmark = pytest.mark.browser

PAGES = ("/write", "/reports", "/status")


def _type(driver: WebDriver, field: str, text: str) -> None:
    element = driver.find_element(By.ID, field)
    element.clear()
    element.send_keys(text)


def _click(driver: WebDriver, by: str, what: str) -> None:
    """Click like a thumb: scrolled to the middle of the screen, clear of the sticky bar."""
    element = driver.find_element(by, what)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def _wait_text(driver: WebDriver, text: str) -> None:
    try:
        # The page may be replaced while it is read (a redirect after a POST): Chromium then
        # reports the old body as stale or "not in the document"; read again until the time.
        WebDriverWait(driver, 60, ignored_exceptions=(WebDriverException,)).until(
            expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "body"), text)
        )
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"{text!r} not shown at {driver.current_url}:\n{body}") from None


def _outbox_states(home: Path) -> list[str]:
    node = Node(home)
    try:
        return [entry.status for entry in node.reports(PASSPHRASE)]
    finally:
        node.close()


def test_arabic_report_with_photo_and_location_is_sealed_then_delivered(
    net: Net, tmp_path: Path
) -> None:
    photo = tmp_path / "صورة-السوق.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2000)  # ~512 kB, 2 chunks
    with DaemonThread(net.a) as served, phone_browser("ar") as driver:
        base = served.url
        grant_location(driver, base, 12.3657, -1.5339)
        driver.get(base + "/write")
        html = driver.find_element(By.TAG_NAME, "html")
        assert html.get_attribute("lang") == "ar" and html.get_attribute("dir") == "rtl"
        assert driver.execute_script("return getComputedStyle(document.body).direction") == "rtl"
        # Right to left: the page title sits at the right edge of the screen.
        title = driver.find_element(By.TAG_NAME, "h1")
        assert title.location["x"] + title.size["width"] > 300
        _type(driver, "title", "اعتقالات في السوق")
        _type(driver, "narrative", "اعتقل جنود ثلاثة تجار في السوق المركزي صباحًا.")
        _click(driver, By.ID, "categories-arbitrary-detention")
        _type(driver, "occurred_date", "2025-03-01")
        _click(driver, By.ID, "approximate")
        _click(driver, By.ID, "locate")
        WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.ID, "lat").get_attribute("value") != ""
        )
        assert driver.find_element(By.ID, "lat").get_attribute("value") == "12.365700"
        assert driver.find_element(By.ID, "lon").get_attribute("value") == "-1.533900"
        driver.find_element(By.ID, "attachment_camera").send_keys(str(photo))
        _type(driver, "passphrase", PASSPHRASE)
        screenshot(driver, "write-ar-filled")
        _click(driver, By.ID, "send")
        _wait_text(driver, "تقريرك مختوم")
        assert "مختوم: في انتظار الوصول إلى المقر" in driver.find_element(By.TAG_NAME, "body").text
        screenshot(driver, "reports-ar-sealed")
        assert _outbox_states(net.a) == ["sealed"]

        # HQ's real path: a bundle from the node, ingest, receipts back to the node.
        export(net.a, net.usb / "a.bundle")
        summary = ingest(net, net.usb / "a.bundle")
        assert summary.new == 1 and not summary.quarantined
        receipts(net, net.usb / "r.bundle")
        import_(net.a, net.usb / "r.bundle")
        driver.get(base + "/reports")
        _wait_text(driver, "تم التسليم: المقر استلمه")
        progress = driver.find_element(By.TAG_NAME, "progress")
        assert progress.get_attribute("value") == progress.get_attribute("max") == "2"
        screenshot(driver, "reports-ar-delivered")
    assert _outbox_states(net.a) == ["delivered"]


def test_wrong_passphrase_keeps_every_field_in_the_browser(net: Net) -> None:
    with DaemonThread(net.a) as served, phone_browser("fr") as driver:
        driver.get(served.url + "/write")
        values = {
            "title": "Arrestations au marché",
            "narrative": "Vers 9h30, des agents ont arrêté trois commerçants.\nDeux blessés.",
            "occurred_date": "2025-03",
            "occurred_time": "",
            "place": "Marché central, secteur 4",
            "lat": "12.3657",
            "lon": "-1.5339",
            "accuracy": "50",
        }
        for field, text in values.items():
            if text:
                _type(driver, field, text)
        _click(driver, By.ID, "categories-excessive-force")
        _click(driver, By.ID, "categories-unlawful-killing")
        _click(driver, By.ID, "approximate")
        _click(driver, By.CSS_SELECTOR, "#sensitivity option[value='confidential']")
        _type(driver, "passphrase", "pas la bonne")
        _click(driver, By.ID, "send")
        _wait_text(driver, "Phrase secrète erronée.")
        for field, text in values.items():
            assert driver.find_element(By.ID, field).get_attribute("value") == text, field
        for key, checked in (
            ("excessive-force", True),
            ("unlawful-killing", True),
            ("unclassified", False),
        ):
            assert driver.find_element(By.ID, f"categories-{key}").is_selected() is checked
        assert driver.find_element(By.ID, "approximate").is_selected()
        assert driver.find_element(By.ID, "sensitivity").get_attribute("value") == "confidential"
        assert driver.find_element(By.ID, "passphrase").get_attribute("value") == ""
        problem = driver.find_element(By.ID, "passphrase-problem")
        assert problem.is_displayed()
        screenshot(driver, "write-fr-wrong-passphrase")
    assert _outbox_states(net.a) == []


def _visible_texts(driver: WebDriver) -> list[str]:
    script = (
        "const out = [];"
        "const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);"
        "while (walk.nextNode()) {"
        "  const t = walk.currentNode.textContent.trim();"
        "  const el = walk.currentNode.parentElement;"
        "  if (t && el.closest('[lang=en]') === null && el.offsetParent !== null) out.push(t);"
        "}"
        "for (const el of document.querySelectorAll('[aria-label],[placeholder],[data-busy]'))"
        "  for (const a of ['aria-label', 'data-busy', 'data-failed', 'data-found'])"
        "    if (el.getAttribute(a)) out.push(el.getAttribute(a));"
        "out.push(document.title);"
        "return out;"
    )
    return list(driver.execute_script(script))


@pytest.mark.parametrize("language", ["fr", "ar", "es"])
def test_pages_show_no_untranslated_text_and_pass_axe(net: Net, language: str) -> None:
    english = {m.id for m in extracted() if isinstance(m.id, str) and m.id}
    translated = catalogue(language)
    same_in_both = {m for m in english if translated.get(m) and translated[m].string == m}
    axe = ensure_axe()
    with DaemonThread(net.a) as served, phone_browser(language) as driver:
        for path in PAGES:
            driver.get(served.url + path)
            assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == language
            left = [t for t in _visible_texts(driver) if t in english - same_in_both]
            assert left == [], f"{path} in {language}: untranslated {left}"
            assert axe_violations(driver, axe) == [], path
            screenshot(driver, f"{path.strip('/')}-{language}")


def test_english_pages_pass_axe_and_quick_exit_ends_the_session(net: Net) -> None:
    axe = ensure_axe()
    with DaemonThread(net.a) as served, phone_browser("en") as driver:
        for path in PAGES:
            driver.get(served.url + path)
            assert axe_violations(driver, axe) == [], path
            screenshot(driver, f"{path.strip('/')}-en")
        driver.get(served.url + "/write")
        _type(driver, "narrative", "half-written")
        _click(driver, By.ID, "quick-exit")
        WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/bye"))
        assert "It works!" in driver.page_source
        assert driver.get_cookies() == []
        driver.back()  # no history entry of the form to come back to
        assert not driver.current_url.endswith("/write") or "half-written" not in driver.page_source


SECOND_NAME = "monitor-42"
SECOND_PASSPHRASE = "lantern orchard quietly folding maps"


def test_two_monitors_on_one_node_each_see_only_their_own_reports(net: Net) -> None:
    """My reports shows nothing before a passphrase, no list of authors, and after it the
    reports of that author only (issue 10 item 1, issue 11 item 3)."""
    node = Node(net.a)
    try:
        node.join(enroll(net, node.add_author(SECOND_NAME, SECOND_PASSPHRASE, KDF)))
        first = node.add_report(fields("written by the first monitor"), PASSPHRASE)
    finally:
        node.close()
    axe = ensure_axe()
    with DaemonThread(net.a) as served, phone_browser("en") as driver:
        driver.get(served.url + "/reports")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert SECOND_NAME not in body and "monitor-17" not in body and _references(driver) == []
        assert driver.find_element(By.ID, "passphrase").get_attribute("type") == "password"
        assert axe_violations(driver, axe) == []
        screenshot(driver, "reports-en-locked")

        _type(driver, "passphrase", "not the passphrase of anyone")
        _click(driver, By.ID, "show-reports")
        _wait_text(driver, "Wrong passphrase.")
        assert _references(driver) == []

        _type(driver, "passphrase", SECOND_PASSPHRASE)
        _click(driver, By.ID, "show-reports")
        _wait_text(driver, "No reports written on this node yet.")
        assert _references(driver) == []

        # The second monitor writes one in the same session: it shows, the first's does not.
        driver.get(served.url + "/write")
        _type(driver, "narrative", "written by the second monitor")
        _click(driver, By.ID, "categories-arbitrary-detention")
        _type(driver, "occurred_date", "2025-03-01")
        _type(driver, "passphrase", SECOND_PASSPHRASE)
        _click(driver, By.ID, "send")
        _wait_text(driver, "Your report is sealed.")
        second = driver.current_url.split("sealed=")[1]
        assert _references(driver) == [second[:8]]

        # Quick exit ends the session: My reports is sealed again; the first monitor's
        # passphrase then shows their report and not the second's.
        _click(driver, By.ID, "quick-exit")
        WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/bye"))
        driver.get(served.url + "/reports")
        assert driver.find_elements(By.CSS_SELECTOR, "li.report") == []
        _type(driver, "passphrase", PASSPHRASE)
        _click(driver, By.ID, "show-reports")
        _wait_text(driver, "Reference")
        assert _references(driver) == [first[:8]]
    node = Node(net.a)
    try:
        assert [e.report_id for e in node.reports(SECOND_PASSPHRASE)] == [second]
        assert [e.report_id for e in node.reports(PASSPHRASE)] == [first]
    finally:
        node.close()


def _references(driver: WebDriver) -> list[str]:
    """The report references My reports shows (one per report listed)."""
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "li.report .id code")]
