"""Networking commands: ``run`` (serve and sync until stopped) and ``sync`` (one session)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from fieldsync.config import Config, ConfigError, HostPort, parse_host_port
from fieldsync.daemon import FieldDaemon
from fieldsync.errors import FieldsyncError
from fieldsync.peer import SyncOutcome
from fieldsync.runtime import Runtime
from fieldsync.transport import TransportError
from fieldsync_cli.common import emit, handle_errors, json_option, say
from fieldsync_cli.main import config_of, home_of

#: The peer was reached but the session did not complete (README "Exit codes").
EXIT_SYNC_FAILED = 5
#: The daemon's GIL switch interval (seconds; Python's default is 0.005).
DAEMON_SWITCH_INTERVAL = 0.001


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML config (or FIELDSYNC_CONFIG); see deploy/fieldsync.example.toml.",
)
@click.option(
    "--listen",
    "listen",
    multiple=True,
    help="Serve sync on HOST:PORT (repeatable; overrides [listen]).",
)
@click.option(
    "--ws-listen",
    "ws_listen",
    multiple=True,
    help="Also serve WebSocket sync (path /sync) on HOST:PORT.",
)
@click.option(
    "--hub",
    is_flag=True,
    default=None,
    help="HQ hub mode: [listen] addresses serve WebSocket (put TLS in front).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@json_option
@click.pass_context
@handle_errors
def run(
    ctx: click.Context,
    config_path: Path | None,
    listen: tuple[str, ...],
    ws_listen: tuple[str, ...],
    hub: bool | None,
    log_level: str | None,
    as_json: bool,
) -> None:
    """Run the node until SIGTERM: serve, discover, sync, relay, purge; logs go to stderr."""
    overrides: dict[str, Any] = {
        "listen.addresses": list(listen) or None,
        "hub.enabled": hub,
        "log.level": log_level.upper() if log_level else None,
    }
    config = config_of(ctx, overrides, config_path)
    configure_logging(config.log.level)
    ws = [_listen_address(text, "--ws-listen") for text in ws_listen]
    # The event loop (control API, web app) and the store thread share the GIL: at the
    # default 5 ms switch interval a request waits up to that long at each of its steps
    # while a sync flight is verified on the store thread (perf S11).
    sys.setswitchinterval(DAEMON_SWITCH_INTERVAL)
    asyncio.run(_serve(config, ws, as_json))


def _listen_address(text: str, option: str) -> HostPort:
    try:
        return parse_host_port(text, allow_port_zero=True)
    except ValueError as exc:
        raise ConfigError(f"{option} {text!r}: {exc}") from None


def configure_logging(level: str) -> None:
    """Log to stderr; with timestamps unless journald (which stamps every line) reads it.

    systemd sets ``JOURNAL_STREAM`` when stderr is connected to the journal (systemd.exec(5)).
    """
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    stamp = "" if under_journald else "%(asctime)s "
    logging.basicConfig(level=level, format=f"{stamp}%(levelname)s %(name)s: %(message)s")


async def _serve(config: Config, ws: list[HostPort], as_json: bool) -> None:
    daemon = FieldDaemon(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await daemon.start()
    try:
        if daemon.server is not None:
            try:
                for address in ws:
                    await daemon.server.listen_websocket(address.host, address.port)
            except TransportError as exc:
                raise FieldsyncError(str(exc)) from exc
            listening = [f"{h}:{p}" for h, p in daemon.server.addresses]
            say("listening on " + (", ".join(listening) or "nothing (dial-out only)"))
            emit(as_json, {"listening": listening, "control": str(config.control_socket)})
        await daemon.wait(stop)
        say("stopping: closing sessions and the store")
    finally:
        await daemon.stop()
    say("stopped")


@click.command()
@click.argument("target", required=False)
@click.option("--ws", "ws_url", help="Sync over WebSocket with this URL instead (ws:// or wss://).")
@json_option
@click.pass_context
@handle_errors
def sync(ctx: click.Context, target: str | None, ws_url: str | None, as_json: bool) -> None:
    """One sync session with TARGET (HOST:PORT) or --ws URL; print what moved."""
    if (target is None) == (ws_url is None):
        raise FieldsyncError("give exactly one of HOST:PORT or --ws URL")
    outcome = asyncio.run(_sync_once(home_of(ctx), ws_url or target or ""))
    data = outcome.summary()
    if not outcome.complete:
        say(f"sync interrupted: {outcome.error}")
        emit(as_json, data)
        raise SystemExit(EXIT_SYNC_FAILED)
    say(
        f"synced ({data['mode']}): received {data['items_received']} items"
        f" ({data['items_new']} new),"
        f" sent {data['items_sent']}; {data['wire_bytes_sent']} B out,"
        f" {data['wire_bytes_received']} B in,"
        f" {data['round_trips']} round trips"
    )
    emit(as_json, data)


async def _sync_once(home: Path, target: str) -> SyncOutcome:
    runtime = await Runtime.open(home)
    try:
        return await runtime.sync_with(target)
    except TransportError as exc:
        raise PeerUnreachable(str(exc)) from exc
    finally:
        await runtime.close()


class PeerUnreachable(FieldsyncError):
    exit_code = EXIT_SYNC_FAILED
