"""Node set-up and state: ``init``, ``join``, ``status``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fieldsync.errors import FieldsyncError, NotFound
from fieldsync.keystore import DEFAULT_KDF_PROFILE, KDF_PROFILES
from fieldsync.node import Node, utc_text
from fieldsync_cli.common import (
    emit,
    get_passphrase,
    handle_errors,
    json_option,
    passphrase_option,
    say,
)
from fieldsync_cli.main import config_of, home_of


@click.command()
@click.option("--author", "author_name", help="Create an author key for this monitor (pseudonym).")
@click.option(
    "--kdf-profile",
    type=click.Choice(sorted(KDF_PROFILES)),
    default=DEFAULT_KDF_PROFILE,
    show_default=True,
    help="Argon2id cost for the author passphrase (interactive = 64 MiB for small devices).",
)
@passphrase_option
@json_option
@click.pass_context
@handle_errors
def init(
    ctx: click.Context,
    author_name: str | None,
    kdf_profile: str,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Create this node's keys and write an enrolment request for HQ.

    Without --author the node is relay-only: it carries sealed items and can read nothing.
    """
    node = Node(home_of(ctx))
    passphrase = None
    if author_name is not None:
        passphrase = get_passphrase(
            passphrase_file, f"the new author key of {author_name!r}", confirm=True
        )
    try:
        path = node.init(author_name, passphrase, kdf_profile)
    finally:
        node.close()
    say(f"node created in {node.home}; hand {path} to HQ in person (or show it as a QR code)")
    emit(as_json, {"request": str(path), "author": author_name is not None}, str(path))


@click.command()
@click.argument("enrolment", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@click.pass_context
@handle_errors
def join(ctx: click.Context, enrolment: Path, as_json: bool) -> None:
    """Join the network with the ENROLMENT file HQ made for this node."""
    node = Node(home_of(ctx))
    try:
        text = enrolment.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise NotFound(f"enrolment file {enrolment} does not exist") from None
    try:
        member = node.join(text)
        role = "author" if node.is_author() else "relay"
    finally:
        node.close()
    from fieldsync_protocol.keytext import KeyKind, fingerprint

    root = fingerprint(KeyKind.ROOT, member.manifest.root_key)
    say(f"joined network {member.manifest.name!r} as {role}")
    say(f"compare HQ's root fingerprint with HQ by phone: {root}")
    emit(
        as_json,
        {
            "network": member.manifest.name,
            "role": role,
            "root_fingerprint": root,
        },
    )


def _daemon(ctx: click.Context, what: str, socket: Path | None) -> dict[str, Any] | None:
    """Ask a running daemon over its control socket; None when none is running.

    The socket is ``--control-socket``, else the one the daemon running on this home
    recorded in its lock file, else ``[control] socket`` of the config (HOME/control.sock).
    """
    from fieldsync.control_client import request
    from fieldsync.homelock import recorded_control_socket

    if socket is None:
        config = config_of(ctx)
        socket = recorded_control_socket(config.node.home) or config.control_socket
    return request(socket, what)


socket_option = click.option(
    "--control-socket",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="FIELDSYNC_CONTROL_SOCKET",
    help="The daemon's control socket (default: the running daemon's, else [control] socket"
    " of the config, else HOME/control.sock).",
)


@click.command()
@socket_option
@json_option
@click.pass_context
@handle_errors
def status(ctx: click.Context, control_socket: Path | None, as_json: bool) -> None:
    """Items held, outbox by status, tombstones, disk; peers and upstream if the daemon runs."""
    home = home_of(ctx)
    node = Node(home)
    try:
        info = node.status()
    finally:
        node.close()
    live = _daemon(ctx, "status", control_socket)
    info["daemon"] = live is not None
    if live is not None:
        info.update(
            {
                k: live[k]
                for k in (
                    "peers",
                    "listening",
                    "last_upstream_contact",
                    "hub",
                    "web",
                    "discovery",
                    "components",
                    "degraded",
                    "store_error",
                    # Revocation, expiry and network keys as the daemon follows them (§17).
                    "revocation_list",
                    "revoked_nodes",
                    "hq_time",
                    "certificate_expires",
                    "network_key_id",
                    "network_key_rotating",
                    # Report items waiting for their offer time (timing privacy, §14.10).
                    "offer_held",
                    "offer_delay_minutes",
                )
                if k in live
            }
        )
    if as_json:
        emit(True, info)
        return
    lines = [f"node        {info['home']} ({info['role']})"]
    if info["joined"]:
        lines.append(f"network     {info['network']}  {info['network_id']}")
        lines.append(f"node key    {info['node']}")
    else:
        lines.append("network     not joined yet")
    items = info["items"]
    lines.append(
        f"items       {info['items_total']} held: {items['envelope']} reports (sealed),"
        f" {items['receipt']} receipts, {items['manifest']} manifests"
    )
    lines.append(
        f"outbox      {info['outbox']['sealed']} own reports not yet at HQ"
        " (yours, held or delivered: `fieldsync report list`)"
    )
    lines.append(f"tombstones  {info['tombstones']}")
    lines.append(f"disk        {info['disk_bytes'] / 1024:.0f} KiB")
    if live is None:
        lines.append("daemon      not running (no answer on the control socket)")
    else:
        lines.append(
            f"daemon      running; listening on"
            f" {', '.join(live.get('listening', [])) or 'nothing (dials out only)'}"
        )
        held = live.get("offer_held")
        if held:
            lines.append(
                f"held        {held} report items wait a random delay before they are offered"
                f" (timing privacy, [privacy] offer_delay_minutes ="
                f" {live.get('offer_delay_minutes', 0):g})"
            )
        lines.extend(_component_lines(live))
        lines.extend(_web_lines(live.get("web")))
        upstream = live.get("last_upstream_contact")
        lines.append(
            f"upstream    {'last contact ' + utc_text(upstream) if upstream else 'no contact yet'}"
        )
        lines.extend(_peer_lines(live.get("peers", [])))
    click.echo("\n".join(lines))


def _web_lines(web: dict[str, Any] | None) -> list[str]:
    """Where the monitor's web app is, and the certificate a phone must show."""
    if not web:
        return ["web app     off (relay, hub, or [web] listen is empty)"]
    lines = [f"web app     {web['url']}"]
    if web.get("fingerprint"):
        lines.append(f"certificate SHA-256 {web['fingerprint']}")
        lines.append("            (compare with the browser's; `fieldsync web-qr` shows a QR code)")
    return lines


def _component_lines(live: dict[str, Any]) -> list[str]:
    """One line per degraded component, with what last went wrong."""
    lines = []
    components = live.get("components", {})
    for name in live.get("degraded", []):
        info = components.get(name, {})
        why = info.get("unhealthy") or info.get("last_error") or "unknown"
        lines.append(f"DEGRADED    {name}: {info.get('state', '?')} ({why})")
    if live.get("store_error"):
        lines.append(f"DEGRADED    store: {live['store_error']}")
    return lines


def _peer_lines(peers: list[dict[str, Any]]) -> list[str]:
    lines = []
    for peer in peers:
        last = utc_text(peer["last_success"]) if peer.get("last_success") else "never"
        error = f"; last error: {peer['last_error']}" if peer.get("last_error") else ""
        lines.append(
            f"peer        {peer['target']} ({peer['origin']}): last sync {last},"
            f" {peer['last_items_in']} in / {peer['last_items_out']} out{error}"
        )
    return lines


@click.command()
@socket_option
@json_option
@click.pass_context
@handle_errors
def peers(ctx: click.Context, control_socket: Path | None, as_json: bool) -> None:
    """Peers the running daemon knows: where from, last sync, failures."""
    live = _daemon(ctx, "peers", control_socket)
    if live is None:
        raise FieldsyncError(
            "no daemon answers on the control socket: start it with `fieldsync run`"
        )
    if as_json:
        emit(True, live["peers"])
        return
    lines = _peer_lines(live["peers"])
    click.echo("\n".join(lines) if lines else "no peers yet")


@click.command("web-qr")
@socket_option
@json_option
@click.pass_context
@handle_errors
def web_qr(ctx: click.Context, control_socket: Path | None, as_json: bool) -> None:
    """The web app's address as a QR code for a phone, and its certificate fingerprint.

    The monitor scans the code on the node's Wi-Fi, then compares the fingerprint printed
    here with the one the phone's browser shows for the page (once per phone).
    """
    live = _daemon(ctx, "status", control_socket)
    if live is None:
        raise FieldsyncError(
            "no daemon answers on the control socket: start it with `fieldsync run`"
        )
    web = live.get("web")
    if not web:
        raise FieldsyncError(
            "the web app is off: it runs on author nodes (not the hub) when [web] listen is"
            ' set; for phones, set it to the Wi-Fi address, e.g. listen = "192.168.4.1:7343"'
        )
    if as_json:
        emit(True, web)
        return
    import io

    import segno

    text = io.StringIO()
    segno.make(web["url"], error="m").terminal(out=text, compact=True)
    lines = [text.getvalue().rstrip("\n"), f"address     {web['url']}"]
    if web.get("fingerprint"):
        lines.append(f"certificate SHA-256 {web['fingerprint']}")
    else:
        lines.append("            (plain HTTP on this computer only: no certificate to compare)")
    click.echo("\n".join(lines))
