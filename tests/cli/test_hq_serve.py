"""``fieldsync hq serve``: Datasette over the analyst database, as an analyst sees it (issue
12 item 4). A real ``fieldsync`` process on 127.0.0.1, real HTTP, and a real headless
Chromium: the reports' map shows one marker per located report, the alerts table shows the
seeded fork and gap by the author's name, and the tables holding blobs or raw bodies are
refused, also through the JSON API, SQL and a database download."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from fieldsync import hq_alerts
from tests.browser_support import chromium, screenshot, wait
from tests.cli.cli_support import Run, clean_env, fieldsync_command
from tests.fieldsync.offline_support import (
    PASSPHRASE,
    Net,
    author_seed,
    hq_manifest,
    ingest,
    open_hq,
    seal,
    write_bundle,
)

#: Where the seeded reports happened: far apart, so each is its own marker or cluster.
PLACES = {1: (33.5, 36.3), 2: (16.8, 96.2), 3: (-1.3, 36.8), 4: (51.5, -0.1)}
#: Sequence 6 has no position and 5 never arrives (a gap); a fork of 2 has a position.
FORK_PLACE = (16.9, 96.1)
LOCATED = len(PLACES) + 1
USAGE = 2
NOT_FOUND = 4


def _seed(net: Net) -> None:
    manifest, seed = hq_manifest(net), author_seed(net)
    items = [
        seal(
            manifest,
            seed,
            sequence,
            f"report {sequence}",
            location={"source": "gps", "lat": lat, "lon": lon, "place": f"place {sequence}"},
        ).item
        for sequence, (lat, lon) in PLACES.items()
    ]
    items.append(seal(manifest, seed, 6, "report 6, no position").item)
    lat, lon = FORK_PLACE
    fork_location = {"source": "gps", "lat": lat, "lon": lon}
    items.append(seal(manifest, seed, 2, "a different report 2", location=fork_location).item)
    write_bundle(net, net.usb / "seed.bundle", items)
    summary = ingest(net, net.usb / "seed.bundle")
    assert (summary.new, summary.forks) == (5, 1)
    with open_hq(net) as headquarters:  # as revocation (built elsewhere) will raise it
        headquarters.raise_alert(
            hq_alerts.Event(
                hq_alerts.REVOKED_AUTHOR,
                "an-envelope",
                "report from a revoked author",
                author_key=summary.alerts[0]["author_key"],
            )
        )


@pytest.fixture
def served(net: Net) -> Iterator[str]:
    """``fieldsync hq serve --port 0 --json`` running on the seeded HQ; yields its URL."""
    _seed(net)
    proc = subprocess.Popen(
        [*fieldsync_command(), "hq", "serve", "--hq", str(net.hq), "--port", "0", "--json"],
        env=clean_env(FIELDSYNC_PASSPHRASE=PASSPHRASE),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once listening
        assert line, proc.stderr.read() if proc.stderr else "no output"
        url = json.loads(line)["url"]
        assert url.startswith("http://127.0.0.1:")
        yield url
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as the analyst stops it
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def test_blobs_and_raw_bodies_are_refused_and_the_views_are_served(served: str, net: Net) -> None:
    for path in ("", "hq", "hq/alerts", "hq/report_list", "hq/report_list.json", "hq/authors"):
        assert _status(served + path) == 200, path
    refused = [
        "hq/reports",
        "hq/reports.json?_shape=array",
        "hq/forked_reports",
        "hq/envelopes.json",
        "hq/quarantine",
        "hq/receipts.csv",
        "hq/media_chunks",
        "hq/chain",
        "hq.db",  # the whole database
        "hq?sql=select+body_json+from+reports",
    ]
    for path in refused:
        assert _status(served + path) in (403, 404), path
    with urllib.request.urlopen(served + "hq/report_list.json?_shape=array", timeout=30) as got:  # noqa: S310 - loopback
        rows = json.load(got)
    assert len(rows) == 6 and not any("body_json" in row for row in rows)
    assert {row["status"] for row in rows} == {"current", "forked", "fork: second report"}
    # Everything served and written is private to HQ's user.
    assert all(
        oct(path.stat().st_mode & 0o777) == "0o600" for path in net.hq.iterdir() if path.is_file()
    )


def _markers(driver: WebDriver) -> int:
    """Markers the map shows: single markers plus the counts on cluster icons."""
    total = 0
    for icon in driver.find_elements(By.CSS_SELECTOR, ".leaflet-marker-icon"):
        classes = icon.get_attribute("class") or ""
        total += int(icon.text) if "marker-cluster" in classes else 1
    return total


@pytest.mark.browser
def test_the_map_shows_every_located_report_and_alerts_show_the_fork_and_gap(
    served: str, tmp_path: Path
) -> None:
    with chromium(tmp_path) as driver:
        driver.get(served + "hq/report_list")
        wait(driver).until(lambda d: _markers(d) >= LOCATED)
        assert _markers(driver) == LOCATED
        # No tile server by default: nothing was fetched from outside this machine.
        tiles = driver.find_elements(By.CSS_SELECTOR, "img.leaflet-tile")
        assert all((t.get_attribute("src") or "").startswith("data:") for t in tiles)
        facets = driver.find_element(By.CSS_SELECTOR, ".facet-results").text
        assert "category" in facets and "status" in facets and "sensitivity" in facets
        driver.execute_script("document.querySelector('.leaflet-container').scrollIntoView()")
        screenshot(driver, tmp_path / "map.png")

        # Alerts come first: before the reports on the database's page.
        driver.get(served + "hq")
        links = [
            a.get_attribute("href") or ""
            for a in driver.find_elements(By.CSS_SELECTOR, "a[href*='/hq/']")
        ]
        tables = [link.rsplit("/", 1)[-1] for link in links]
        assert tables.index("alerts") < tables.index("report_list")
        assert not {"reports", "quarantine", "envelopes"} & set(tables)  # hidden

    with chromium(tmp_path, phone=True) as phone:
        phone.get(served + "hq/alerts")
        kinds = [td.text for td in phone.find_elements(By.CSS_SELECTOR, "td.col-kind")]
        assert sorted(kinds) == ["fork", "gap", "revoked author"]
        authors = {td.text for td in phone.find_elements(By.CSS_SELECTOR, "td.col-author_name")}
        assert authors == {"monitor-17"}
        assert "sequence numbers 5..5 not received" in phone.page_source
        assert phone.execute_script("return window.innerWidth") <= 400
        screenshot(phone, tmp_path / "alerts-phone.png")


def test_serve_refuses_a_taken_port_and_a_tile_url_that_is_not_http(net: Net, run: Run) -> None:
    bad = run("hq", "serve", "--hq", net.hq, "--tiles", "file:///etc/passwd", passphrase=None)
    assert bad.returncode == USAGE and "--tiles" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        busy = run("hq", "serve", "--hq", net.hq, "--port", port, "--json")
    assert busy.returncode == 1, busy.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in json.loads(busy.stdout)["error"]
    missing = run("hq", "serve", "--hq", net.hq / "nowhere", passphrase=None)
    assert missing.returncode == NOT_FOUND and "not an HQ directory" in missing.stderr
