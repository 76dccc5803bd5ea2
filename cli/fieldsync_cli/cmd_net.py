"""Networking commands: ``run`` (serve and sync until stopped) and ``sync`` (one session)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from fieldsync.daemon import Runtime, Server, parse_host_port
from fieldsync.errors import FieldsyncError
from fieldsync.peer import SyncOutcome
from fieldsync.transport import TransportError
from fieldsync_cli.common import emit, handle_errors, json_option, say
from fieldsync_cli.main import home_of

#: The peer was reached but the session did not complete (README "Exit codes").
EXIT_SYNC_FAILED = 5


@click.command()
@click.option("--listen", "listen", multiple=True, help="Serve raw TCP sync on HOST:PORT (repeatable).")
@click.option("--ws-listen", "ws_listen", multiple=True, help="Serve WebSocket sync (path /sync) on HOST:PORT.")
@click.option("--hub", is_flag=True, help="HQ hub mode: serve WebSocket sync for the field (put TLS in front).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
@json_option
@click.pass_context
@handle_errors
def run(ctx: click.Context, listen: tuple[str, ...], ws_listen: tuple[str, ...], hub: bool, log_level: str, as_json: bool) -> None:
    """Serve sync until SIGTERM or Ctrl-C; logs go to stderr (journald)."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not listen and not ws_listen:
        raise FieldsyncError("nothing to serve: give --listen HOST:PORT and/or --ws-listen HOST:PORT")
    if hub and not ws_listen:
        raise FieldsyncError("--hub serves WebSocket: give --ws-listen HOST:PORT (behind a TLS proxy)")
    tcp = [parse_host_port(a, "--listen") for a in listen]
    ws = [parse_host_port(a, "--ws-listen") for a in ws_listen]
    asyncio.run(_serve(home_of(ctx), tcp, ws, as_json))


async def _serve(home: Path, tcp: list[tuple[str, int]], ws: list[tuple[str, int]], as_json: bool) -> None:
    runtime = await Runtime.open(home)
    server = Server(runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            for host, port in tcp:
                bound = await server.listen_tcp(host, port)
                say(f"listening for sync on tcp {bound[0]}:{bound[1]}")
            for host, port in ws:
                bound = await server.listen_websocket(host, port)
                say(f"listening for sync on ws://{bound[0]}:{bound[1]}/sync")
        except TransportError as exc:
            raise FieldsyncError(str(exc)) from exc
        emit(as_json, {"listening": [f"{h}:{p}" for h, p in server.addresses]})
        await stop.wait()
        say("stopping: finishing open sessions")
    finally:
        await server.close()
        await runtime.close()
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
        f"synced ({data['mode']}): received {data['items_received']} items ({data['items_new']} new),"
        f" sent {data['items_sent']}; {data['wire_bytes_sent']} B out, {data['wire_bytes_received']} B in,"
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
