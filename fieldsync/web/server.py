"""Serving the web app from the daemon: where it listens, HTTP or HTTPS, which Host names.

On a loopback address (the default, 127.0.0.1) the app serves plain HTTP to the browser on
the same computer (HTTPS too if ``[web] tls = "always"``). On any other address (phones on
the node's Wi-Fi) it always serves HTTPS with the node's own certificate
(``fieldsync.web.tls``). The app has its own listener: the sync
and hub listeners never serve it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fieldsync.config_addresses import HostPort
from fieldsync.errors import FieldsyncError
from fieldsync.store_worker import StoreWorker
from fieldsync.web import tls
from fieldsync.web.app import StatusProvider, WebApp, WebSettings
from fieldsync.web.http import HTTPServer, Limits

log = logging.getLogger(__name__)


def serves_https(host: str, tls_mode: str) -> bool:
    """The rule: any address but loopback is served over HTTPS, whatever the config says;
    ``[web] tls = "always"`` asks for HTTPS on loopback too."""
    return tls_mode == "always" or not tls.is_loopback(host)


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class WebServer:
    def __init__(
        self,
        listen: HostPort,
        home: Path,
        worker: StoreWorker,
        status: StatusProvider,
        max_upload_bytes: int,
        tls_mode: str = "auto",
        on_quick_exit: Callable[[str], Awaitable[None]] | None = None,
        wipe_after_wrong_passphrases: int = 0,
        on_wiped: Callable[[str], Awaitable[None]] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.listen = listen
        self.home = home
        self.https = serves_https(listen.host, tls_mode)
        self.settings = WebSettings(
            https=self.https,
            allowed_hosts=frozenset(),
            max_upload_bytes=max_upload_bytes,
            wipe_after_wrong_passphrases=wipe_after_wrong_passphrases,
        )
        self.app = WebApp(
            home, worker, status, self.settings, on_quick_exit=on_quick_exit, on_wiped=on_wiped
        )
        self.limits = limits or Limits()
        self._server: HTTPServer | None = None
        self.port = 0

    async def start(self) -> None:
        context: ssl.SSLContext | None = None
        if self.https:
            cert, key = await asyncio.to_thread(
                tls.ensure_certificate_apart, self.home, self.listen.host
            )
            context = await asyncio.to_thread(tls.server_context, cert, key)
            self.settings.fingerprint = await asyncio.to_thread(tls.fingerprint, self.home)
        handler = await self.app.application()
        # No access log (``fieldsync.web.http`` keeps none): it would write monitors'
        # addresses and pages to the node's disk.
        self._server = HTTPServer(handler, self.limits)
        try:
            await self._server.start(self.listen.host, self.listen.port, context)
        except OSError as exc:
            await self.stop()
            raise FieldsyncError(
                f"web app: cannot listen on {self.listen}: {exc.strerror or exc};"
                ' set [web] listen to a free address, or "" to turn the app off'
            ) from exc
        self.port = self._server.port
        self.settings.allowed_hosts = self._allowed_hosts()
        self.settings.url = self.url
        log.info("web app: serving on %s", self.url)

    def _allowed_hosts(self) -> frozenset[str]:
        """Host headers answered: IP literals (a rebinding attack needs a name) and
        ``localhost``, with our port; and the configured name if it is one."""
        port = self.port
        hosts = {f"localhost:{port}", f"{_host_text(self.listen.host).lower()}:{port}"}
        try:
            listen_ip = ipaddress.ip_address(self.listen.host)
        except ValueError:
            listen_ip = None
        self.settings.any_ip_port = (
            port if listen_ip is not None and listen_ip.is_unspecified else None
        )
        if listen_ip is not None and listen_ip.is_loopback:
            hosts |= {f"127.0.0.1:{port}", f"[::1]:{port}"}
        return frozenset(hosts)

    @property
    def url(self) -> str:
        scheme = "https" if self.https else "http"
        return f"{scheme}://{_host_text(self.listen.host)}:{self.port}/"

    def describe(self) -> dict[str, Any]:
        """For ``fieldsync status``: where the app is and the certificate to compare."""
        return {"url": self.url, "https": self.https, "fingerprint": self.settings.fingerprint}

    @property
    def addresses(self) -> set[str]:
        """The addresses the app's listener is bound to (empty before ``start``)."""
        return self._server.addresses if self._server is not None else set()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
            await self.app.shutdown()
