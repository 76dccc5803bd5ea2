"""A real node daemon serving the web app, for the web tests.

``served`` starts ``FieldDaemon`` (the composition root, as ``fieldsync run`` does) on a copy
of the offline test network's author node, with sync and the app on loopback ports the
kernel picks. ``DaemonThread`` runs the same daemon on its own event loop in a thread, for
the browser tests, whose Selenium calls block.
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from fieldsync.config import Config, load_config
from fieldsync.daemon import FieldDaemon


async def config_for(home: Path, **settings: object) -> Config:
    overrides = {
        "node.home": str(home),
        "listen.addresses": ["127.0.0.1:0"],
        "discovery.enabled": False,
        "privacy.offer_delay_minutes": 0,  # offer at once (timing privacy has its own tests)
        "web.listen": "127.0.0.1:0",
        **settings,
    }
    return await asyncio.to_thread(load_config, None, {}, overrides)


@asynccontextmanager
async def served(home: Path, **settings: object) -> AsyncIterator[FieldDaemon]:
    daemon = FieldDaemon(await config_for(home, **settings))
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


def url_of(daemon: FieldDaemon) -> str:
    assert daemon.web is not None, "the web app did not start"
    return daemon.web.url.rstrip("/")


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, "no CSRF token in the page"
    return found.group(1)


def report_form(csrf: str | None, passphrase: str, **values: Any) -> aiohttp.FormData:
    """A submission as the browser sends it: the token first, then the fields, then files.

    ``values``: field name -> text, or (file name, bytes, media type) for a file field.
    """
    form = aiohttp.FormData(default_to_multipart=True)
    if csrf is not None:
        form.add_field("csrf", csrf)
    defaults = {
        "narrative": "Soldiers detained three traders at the market.",
        "categories": "arbitrary-detention",
        "occurred_date": "2025-03-01",
        "sensitivity": "restricted",
        "language": "en",
    }
    for name, value in {**defaults, **values}.items():
        if isinstance(value, tuple):
            filename, data, media_type = value
            form.add_field(name, io.BytesIO(data), filename=filename, content_type=media_type)
        elif value is not None:
            form.add_field(name, value)
    form.add_field("passphrase", passphrase)
    return form


class DaemonThread:
    """The daemon on an event loop of its own (for tests whose calls block)."""

    def __init__(self, home: Path, **settings: object) -> None:
        self.home = home
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.daemon: FieldDaemon | None = None

    def __enter__(self) -> DaemonThread:
        self.thread.start()
        self.daemon = self.call(self._start())
        return self

    async def _start(self) -> FieldDaemon:
        daemon = FieldDaemon(await config_for(self.home, **self.settings))
        await daemon.start()
        return daemon

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)

    @property
    def url(self) -> str:
        assert self.daemon is not None
        return url_of(self.daemon)

    def __exit__(self, *exc: object) -> None:
        if self.daemon is not None:
            self.call(self.daemon.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


BOUNDARY = "fieldsync-test-boundary"


def raw_multipart(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    """A multipart body written byte for byte (a client library may clean file names):
    (field name, file name or None, content)."""
    out = bytearray()
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: image/jpeg\r\n"
        out += b"\r\n" + content + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
