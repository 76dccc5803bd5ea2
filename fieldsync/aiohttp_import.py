"""Importing aiohttp without the two copies of the system's CA bundle that its import loads,
and the TLS context our ``wss://`` dial verifies servers with instead.

Any import of aiohttp (its WebSocket server included) imports ``aiohttp.connector``, which
builds aiohttp's default client TLS contexts at once, each loading the system CA bundle:
about 2 MB of OpenSSL heap, kept for good, in a daemon whose one HTTPS request may be the
hub's ``wss://`` dial, or none (a hub). The web app does not use aiohttp at all
(``fieldsync.web.http``). ``import_aiohttp`` imports aiohttp with ``SSL_CERT_FILE`` (OpenSSL's
documented variable; aiohttp's maintainers point to it, set before the import) naming an
empty file, so those contexts hold no CA certificate. Our one client, the ``wss://`` dial
(``fieldsync.transport``), never relies on them: it passes ``client_context()``, which loads
the system's CA bundle (honouring the caller's own ``SSL_CERT_FILE``) on first use.
"""

from __future__ import annotations

import functools
import importlib
import os
import ssl
import sys
import threading

#: OpenSSL reads its default CA file from this variable (``ssl.get_default_verify_paths()``).
CA_FILE_VARIABLE = "SSL_CERT_FILE"

_importing = threading.Lock()


def import_aiohttp() -> None:
    """Import aiohttp, unless it is loaded already (blocking: it reads files).

    The variable is set for the import only, and ``os.environ`` is the whole process's:
    the daemon calls this before it opens its store, while no other thread of its own runs
    (C code reading the environment at that moment would see an empty CA file).
    """
    with _importing:
        if "aiohttp" in sys.modules:
            return
        saved = os.environ.get(CA_FILE_VARIABLE)
        os.environ[CA_FILE_VARIABLE] = os.devnull
        try:
            importlib.import_module("aiohttp")
        finally:
            if saved is None:
                del os.environ[CA_FILE_VARIABLE]
            else:
                os.environ[CA_FILE_VARIABLE] = saved


@functools.cache
def client_context() -> ssl.SSLContext:
    """What a ``wss://`` dial verifies the server with: Python's defaults (certificate and
    host name checked) and the system's CA certificates. Blocking the first time: it reads
    them; call it on a thread."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])  # the WebSocket upgrade is an HTTP/1.1 request
    return context
