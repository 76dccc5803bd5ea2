"""The monitor's web app in the daemon (issue 10 "Must show"): its memory and its pages
under sync.

RSS.web: an author node's daemon (``fieldsync run``, its own process) is started with the
app off (``FIELDSYNC_WEB_LISTEN=""``: the daemon then does not even import it) and then on;
with the app on, every page (write, my reports, status) is loaded in one language, then in
every language the app has. VmRSS is read after each step, once the daemon has settled;
each start is repeated and the median kept. Goal: the app adds at most 10 MB with the pages
of one language loaded (a node serves the languages its monitors read; the all-languages
figure is printed beside it), and the author node with the app stays within 60 MB idle. The
table also says where the app's memory goes: each library the app loads, measured step by
step in a fresh interpreter that already holds the daemon. The app's HTTP server is
``fieldsync.web.http`` (h11 and python-multipart): an author's daemon serving it never
imports aiohttp, which only the hub's and HQ's WebSocket transport use.

render.web: the same daemon with the app on; a probe process loads the pages one after
the other (the Arabic ones, every ``PROBE_EVERY_S``), first with the daemon idle, then while
A pushes N items (10,000 in --quick and --full) into it. A page's time is the client's, from
the request to the last byte of the page, so it includes everything the daemon's loop did
meanwhile. Goal: p99 under sync below 100 ms; the ratio to the idle median is printed too.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import statistics
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.env import status_kib
from bench.nodes import sync_once
from bench.responsive import latency_ms, probe_idle_then_busy
from bench.workload import ItemPool, ServerProcess, add_items
from fieldsync.synthetic import SyntheticNetwork

APP_MB = 10.0
#: Issue 13: an author node with the app, idle, within this (its daemon's VmRSS).
AUTHOR_WITH_APP_MB = 60.0
#: Where the app's memory goes: what each step adds to a fresh interpreter that already
#: holds the daemon (``breakdown``), in the order the daemon loads them.
BREAKDOWN_STEPS = (
    ("h11 (HTTP/1.1 parser)", "h11"),
    ("python-multipart (streaming form parser)", "python_multipart.multipart"),
    ("jinja2", "jinja2"),
    ("babel (dates, numbers)", "babel.dates babel.numbers"),
    ("fieldsync.web (app, HTTP server, forms, TLS)", "fieldsync.web.server"),
    ("templates (compiled apart, loaded)", "@templates"),
    ("languages at start (names; the source language, read apart)", "@languages"),
    ("every other language, on first use (read apart)", "@warm"),
)
_BREAKDOWN_PROBE = """\
import gc, importlib, json, sys
from fieldsync import heap
def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
import fieldsync.daemon
heap.release_free_memory()
steps = json.loads(sys.argv[1])
last = rss()
added = []
kept = []
for label, what in steps:
    if what == "@templates":
        import jinja2
        from fieldsync.web import template_code
        directory = template_code.TEMPLATES_DIR
        compiled = template_code.compiled_apart(directory)
        env = jinja2.Environment(  # noqa: S701 - autoescape is among the options
            **template_code.environment_options(directory),
            bytecode_cache=template_code.ChildBytecode(compiled),
        )
        template_code.prepare(env)
        template_code.load_all(env)
        kept.append(env)
    elif what == "@languages":
        from fieldsync.web.i18n import load_languages
        languages = load_languages()
    elif what == "@warm":
        for language in languages.values():
            language.warm()
    else:
        for name in what.split():
            importlib.import_module(name)
    gc.collect()
    heap.release_free_memory()
    now = rss()
    added.append([label, now - last])
    last = now
print(json.dumps(added))
"""
RENDER_MS = 100.0
PAGES = ("/write", "/reports", "/status")
LANGUAGES = ("en", "fr", "es", "ar")
#: The language the render probe reads: right-to-left, the largest locale data.
PROBE_LANGUAGE = "ar"
PROBE_EVERY_S = 0.01
SETTLE_S = 0.5  # let a started daemon finish its first tasks before reading its memory
APP_ON = {"FIELDSYNC_WEB_LISTEN": "127.0.0.1:0"}
APP_OFF = {"FIELDSYNC_WEB_LISTEN": ""}


def _web_port(server: ServerProcess) -> int:
    """The app's port, from the daemon's status over its control socket."""
    from fieldsync.control_client import request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = request(server.home / "control.sock", "status")
        web = (status or {}).get("web")
        if web:
            return int(str(web["url"]).rstrip("/").rsplit(":", 1)[1])
        time.sleep(0.1)  # polling: the daemon starts its app after its listener
    raise RuntimeError(f"the web app of {server.home.name} did not start")


def _get(connection: http.client.HTTPConnection, path: str, language: str) -> int:
    connection.request("GET", path, headers={"Accept-Language": language})
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path} ({language}) answered {response.status}")
    return len(body)


def _load_pages(port: int, languages: tuple[str, ...]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for language in languages:
            for path in PAGES:
                _get(connection, path, language)
    finally:
        connection.close()


def _memory_once(home: Path, log: Path) -> dict[str, int]:
    with ServerProcess(home, log, env=APP_OFF) as server:
        time.sleep(SETTLE_S)
        off = status_kib("VmRSS", server.pid)
    with ServerProcess(home, log, env=APP_ON) as server:
        port = _web_port(server)
        time.sleep(SETTLE_S)
        on_idle = status_kib("VmRSS", server.pid)
        _load_pages(port, ("en",))
        time.sleep(SETTLE_S)
        one_language = status_kib("VmRSS", server.pid)
        _load_pages(port, LANGUAGES)
        time.sleep(SETTLE_S)
        every_language = status_kib("VmRSS", server.pid)
    return {
        "off": off,
        "on_idle": on_idle,
        "one_language": one_language,
        "every_language": every_language,
    }


def breakdown() -> list[tuple[str, int]]:
    """KiB each step of ``BREAKDOWN_STEPS`` adds, in a fresh interpreter holding the daemon
    (freed heap returned after each step, as the daemon does once started)."""
    done = subprocess.run(
        [sys.executable, "-c", _BREAKDOWN_PROBE, json.dumps(BREAKDOWN_STEPS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [(str(label), int(kib)) for label, kib in json.loads(done.stdout)]


def run_memory(net: SyntheticNetwork, reps: int, workdir: Path) -> dict[str, Any]:
    home = net.add_node("web-mem", author=True)
    runs = [_memory_once(home, workdir / "servers.log") for _ in range(reps)]
    return {
        "reps": reps,
        "breakdown_kib": breakdown(),
        "runs_kib": runs,
        **{
            f"{key}_kib": int(statistics.median(run[key] for run in runs))
            for key in ("off", "on_idle", "one_language", "every_language")
        },
    }


def memory_result(raw: dict[str, Any]) -> dict[str, Any]:
    def added(key: str) -> float:
        return float(raw[f"{key}_kib"] - raw["off_kib"]) * 1024 / 1e6

    one, every, idle = added("one_language"), added("every_language"), added("on_idle")
    with_app = raw["on_idle_kib"] * 1024 / 1e6
    notes = [
        f"author node with the app, idle: {with_app:.1f} MB (goal <= {AUTHOR_WITH_APP_MB:.0f});"
        f" without it: {raw['off_kib'] * 1024 / 1e6:.1f} MB",
        "where the app's memory goes (each step in a fresh interpreter holding the daemon):",
        *(f"  +{kib * 1024 / 1e6:.1f} MB {label}" for label, kib in raw["breakdown_kib"]),
    ]
    return {
        "metric": "VmRSS the web app adds to an author node's daemon, MB (app on, pages of"
        " one language loaded, minus app off)",
        "value": round(one, 1),
        "measured": f"+{one:.1f} MB (+{idle:.1f} idle, +{every:.1f} all 4 languages)",
        "target": f"<= {APP_MB:.0f} MB",
        "pass": one <= APP_MB,
        "off_mb": round(raw["off_kib"] * 1024 / 1e6, 1),
        "added_idle_mb": round(idle, 1),
        "added_one_language_mb": round(one, 1),
        "added_every_language_mb": round(every, 1),
        "author_with_app_idle_mb": round(with_app, 1),
        "author_with_app_pass": with_app <= AUTHOR_WITH_APP_MB,
        "breakdown_mb": {label: round(kib * 1024 / 1e6, 1) for label, kib in raw["breakdown_kib"]},
        "notes": notes,
        "reps": raw["reps"],
    }


def _probe_process(port: int, conn: Connection) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    turn = [0]

    def render() -> float:
        path = PAGES[turn[0] % len(PAGES)]
        turn[0] += 1
        start = time.perf_counter()
        _get(connection, path, PROBE_LANGUAGE)
        return time.perf_counter() - start

    def probe_until(stop: Any) -> list[float]:
        times: list[float] = []
        while not stop():
            times.append(render())
            time.sleep(PROBE_EVERY_S)
        return times

    try:
        for path in PAGES:  # first loads (the language's data) are not what is measured
            _get(connection, path, PROBE_LANGUAGE)
        probe_idle_then_busy(conn, probe_until)
    except Exception as exc:
        conn.send(f"error: {exc!r}")
    finally:
        connection.close()


def run_render(net: SyntheticNetwork, pool: ItemPool, n: int, workdir: Path) -> dict[str, Any]:
    a = net.add_node("web-A")
    b = net.add_node("web-B", author=True)
    add_items(a, pool.manifest, pool.items[:n])
    ctx = multiprocessing.get_context("spawn")
    with ServerProcess(b, workdir / "servers.log", env=APP_ON) as server:
        port = _web_port(server)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_probe_process, args=(port, child), daemon=True)
        proc.start()
        try:
            if not parent.poll(120):
                raise RuntimeError("render.web: the probe process did not finish its idle probes")
            answer = parent.recv()
            if answer != "idle-done":
                raise RuntimeError(f"render.web: {answer}")
            synced = sync_once(a, server.address, server.pid)
            parent.send("stop")
            if not parent.poll(60):
                raise RuntimeError("render.web: the probe process did not report")
            result = parent.recv()
        finally:
            proc.join(30)
            if proc.is_alive():
                proc.terminate()
    if isinstance(result, str):
        raise RuntimeError(f"render.web: {result}")  # noqa: TRY004 - the probe process failed
    if synced.outcome.stats.items_sent != n:
        raise RuntimeError(f"render.web pushed {synced.outcome.stats.items_sent} items, not {n}")
    return {
        "n": n,
        "sync_seconds": round(synced.seconds, 3),
        "language": PROBE_LANGUAGE,
        "pages": list(PAGES),
        "idle": latency_ms(result["idle"]),
        "under_sync": latency_ms(result["busy"]),
    }


def render_result(raw: dict[str, Any]) -> dict[str, Any]:
    idle, busy = raw["idle"], raw["under_sync"]
    ratio = busy["p99_ms"] / idle["p50_ms"] if idle["p50_ms"] else 0.0
    return {
        "metric": "ms from request to last byte of a page (write, my reports, status; Arabic)"
        " while N items arrive: p99; ratio to the idle median",
        "value": busy["p99_ms"],
        "measured": f"p99 {busy['p99_ms']:.1f} ms under sync, idle p50 {idle['p50_ms']:.1f}"
        f" (x{ratio:.1f})",
        "target": f"p99 < {RENDER_MS:.0f} ms",
        "pass": busy["p99_ms"] < RENDER_MS,
        "ratio_to_idle": round(ratio, 2),
        **raw,
    }
