"""The analyst's browser view: Datasette over ``hq.db`` (``fieldsync hq serve``).

Needs the ``hq`` extra (``pip install 'fieldsync[hq]'``: Datasette and
datasette-cluster-map). What it shows and hides:

* ``alerts`` first (sorted by last seen, facets on kind and state), then the views of
  ``fieldsync.hq_schema`` migration 3: ``report_list`` (facets on category, status and
  sensitivity, the reports on a map), ``attachment_list``, ``envelope_log``,
  ``quarantine_list``, ``receipt_list``, and the enrolled ``authors`` and ``nodes``;
* the tables holding blobs or raw bodies (``reports.body_json``, envelope and quarantine
  bytes, chunks, signed receipts, chain hashes) are hidden **and** refused (HTTP 403, also
  through the JSON API and blob downloads); arbitrary SQL and downloading the database are
  off, so nothing hidden can be read another way.

It listens on 127.0.0.1 only (reach it from elsewhere through an SSH tunnel): what it serves
holds every report in clear. ``hq.db`` is encrypted (SQLCipher) and Datasette's SQLite cannot
read it, so ``serve`` copies it, decrypted, into a named in-memory database of this process
(``snapshot_in_memory``) and Datasette serves that: no plaintext reaches the disk. The view is
the database as it was when ``serve`` started (restart it to see later ingests); the blobs
of ``media_chunks`` (attachment pieces, which no view shows) are not copied, to spare memory.
The map draws no tiles unless ``--tiles`` names a tile server,
because fetching tiles tells that server which places the analyst is looking at.
"""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fieldsync.errors import FieldsyncError
from fieldsync.hq_schema import DATABASE

HOST = "127.0.0.1"
DEFAULT_PORT = 8001
#: Datasette names a database after its file.
DATABASE_NAME = Path(DATABASE).stem
#: A transparent 1x1 GIF as every tile: the map shows the markers and fetches nothing.
NO_TILES = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"

#: Tables whose rows carry blobs or raw bodies: hidden and refused.
HIDDEN_TABLES = (
    "reports",
    "forked_reports",
    "envelopes",
    "quarantine",
    "receipts",
    "chain",
    "media_chunks",
    "media_attachments",
)

#: Column descriptions (Datasette lists them above the table: only what is not obvious).
_REPORT_COLUMNS = {
    "status": "current; superseded (a correction replaced it); forked (its author signed"
    " another report with the same sequence number); fork: second report",
    "sensitivity": "public, internal, restricted or confidential: handle accordingly",
    "supersedes": "The id of the report this one corrects (same author)",
    "claimed_time": "When the author's device says it sealed the report (not proof)",
    "envelope_id": "Unique; report ids are chosen by devices (`fieldsync hq report show ID`)",
}

_ALERT_COLUMNS = {
    "id": "Acknowledge with `fieldsync hq alerts --ack ID`",
    "state": "open; acknowledged; resolved (the event ended by itself)",
    "count": "Times seen between first_seen and last_seen",
    "alert_key": "What makes two sightings the same event",
}


def metadata(network_name: str, tiles: str | None = None) -> dict[str, Any]:
    """Datasette metadata for an HQ: titles, descriptions, facets, the map, what is hidden."""
    tables: dict[str, Any] = {
        "alerts": {
            "title": "Alerts: start here",
            "description": "Forks, gaps, held and junk envelopes, attachments that failed or"
            " are incomplete, reports of revoked authors. Open ones need an analyst.",
            "sort_desc": "last_seen",
            "facets": ["state", "kind"],
            "columns": _ALERT_COLUMNS,
        },
        "report_list": {
            "title": "Reports",
            "description": "One row per report HQ accepted, and the second report of each"
            " fork. Respect each report's sensitivity.",
            "sort_desc": "received_at",
            "facets": ["category", "status", "sensitivity"],
            "columns": _REPORT_COLUMNS,
        },
        "attachment_list": {
            "title": "Attachments",
            "description": "Verified, pending or failed; files are under the HQ directory"
            " (`fieldsync hq media`).",
            "facets": ["status", "media_type"],
        },
        "envelope_log": {
            "title": "Envelopes",
            "description": "Every envelope HQ has seen and what it decided.",
            "facets": ["status"],
        },
        "quarantine_list": {
            "title": "Quarantine",
            "description": "Held envelopes (`fieldsync hq quarantine reingest`).",
        },
        "receipt_list": {"title": "Receipts", "description": "Receipts HQ has signed."},
        "authors": {"title": "Authors", "description": "Enrolled authors."},
        "nodes": {"title": "Nodes", "description": "Enrolled nodes."},
    }
    for name in HIDDEN_TABLES:
        tables[name] = {"hidden": True, "allow": False}
    return {
        "title": f"fieldsync HQ: {network_name}",
        "description": "Open alerts first; then reports on the map. Served on this machine only.",
        "databases": {
            DATABASE_NAME: {
                "title": f"{network_name}: analyst database",
                "allow_sql": False,
                "tables": tables,
            }
        },
        "plugins": {
            "datasette-cluster-map": {
                "latitude_column": "lat",
                "longitude_column": "lon",
                "tile_layer": tiles or NO_TILES,
                "tile_layer_options": {
                    "maxZoom": 19,
                    "attribution": "no map tiles (fieldsync hq serve --tiles URL)"
                    if tiles is None
                    else "map tiles: " + tiles.split("/")[2],
                },
            }
        },
    }


SETTINGS = {
    "allow_download": False,
    "default_allow_sql": False,
    "suggest_facets": False,
    "allow_facet": True,
}


def check_installed() -> None:
    missing = [
        name
        for name in ("datasette", "datasette_cluster_map", "uvicorn")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise FieldsyncError(
            f"`hq serve` needs Datasette and its map plugin ({', '.join(missing)} missing):"
            " pip install 'fieldsync[hq]'"
        )


def listen(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise FieldsyncError(
            f"cannot listen on {HOST}:{port}: {exc.strerror}; choose another --port"
        ) from exc
    return sock


#: Tables whose rows are not copied into the served snapshot (none of the views reads them).
_NOT_COPIED = ("media_chunks",)


def snapshot_in_memory(source: sqlite3.Connection, memory_name: str) -> sqlite3.Connection:
    """Copy the database of ``source`` (decrypted, any binding) into the shared in-memory
    database ``memory_name`` of the stdlib's SQLite, which Datasette opens by that name; the
    copy lives as long as the returned connection stays open."""
    target = sqlite3.connect(
        f"file:{memory_name}?mode=memory&cache=shared",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
    )
    schema = source.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL"
        " AND name NOT LIKE 'sqlite_%' ORDER BY type = 'view', type = 'index', rowid"
    ).fetchall()
    target.execute("BEGIN")
    for kind, name, sql in schema:
        target.execute(sql)
        if kind == "table" and name not in _NOT_COPIED:
            rows = source.execute(f"SELECT * FROM [{name}]")  # noqa: S608 - names from the schema
            marks = ", ".join("?" for _ in rows.description)
            target.executemany(f"INSERT INTO [{name}] VALUES ({marks})", rows)  # noqa: S608
    target.execute("COMMIT")
    return target


def serve(
    source: sqlite3.Connection,
    network_name: str,
    sock: socket.socket,
    tiles: str | None,
    ready: Callable[[str], None],
) -> None:
    """Serve a decrypted in-memory copy of the opened (and so migrated) ``hq.db``
    connection ``source`` on ``sock`` until interrupted; ``ready(url)`` once listening."""
    check_installed()
    from datasette.app import Datasette
    from datasette.database import Database
    from uvicorn import Config, Server

    memory_name = f"fieldsync-hq-{secrets.token_hex(8)}"
    snapshot = snapshot_in_memory(source, memory_name)
    app = Datasette(metadata=metadata(network_name, tiles), settings=SETTINGS)
    app.add_database(Database(app, memory_name=memory_name, is_mutable=False), name=DATABASE_NAME)

    async def main() -> None:
        await app.invoke_startup()
        server = Server(Config(app.app(), log_level="warning", lifespan="on"))
        host, port = sock.getsockname()[:2]
        ready(f"http://{host}:{port}/")
        await server.serve(sockets=[sock])

    try:
        asyncio.run(main())
    finally:
        snapshot.close()
