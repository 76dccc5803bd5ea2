"""The ``fieldsync`` command: one click group; each command lives in a ``cmd_*`` module
imported only when used, so ``fieldsync --help`` stays fast on a Raspberry Pi.

Conventions (README "Command line"): data on stdout, messages on stderr, ``--json`` on
every command (errors too), exit codes from ``fieldsync.errors`` via ``handle_errors``.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from fieldsync.config import Config
    from fieldsync.hq import HQ
    from fieldsync.node import Node

# command name -> (module, attribute); modules are imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "network": ("fieldsync_cli.cmd_hq", "network"),
    "hq": ("fieldsync_cli.cmd_hq", "hq"),
    "init": ("fieldsync_cli.cmd_node", "init"),
    "author": ("fieldsync_cli.cmd_author", "author"),
    "join": ("fieldsync_cli.cmd_node", "join"),
    "status": ("fieldsync_cli.cmd_node", "status"),
    "peers": ("fieldsync_cli.cmd_node", "peers"),
    "web-qr": ("fieldsync_cli.cmd_node", "web_qr"),
    "report": ("fieldsync_cli.cmd_report", "report"),
    "form": ("fieldsync_cli.cmd_form", "form"),
    "bundle": ("fieldsync_cli.cmd_bundle", "bundle"),
    "wipe": ("fieldsync_cli.cmd_wipe", "wipe"),
    "duress-set": ("fieldsync_cli.cmd_wipe", "duress_set"),
    "wipe-trigger": ("fieldsync_cli.cmd_wipe", "wipe_trigger"),
    "run": ("fieldsync_cli.cmd_net", "run"),
    "sync": ("fieldsync_cli.cmd_net", "sync"),
}

# command name -> its one-line help, so ``fieldsync --help`` lists the commands without
# importing a single command module (each pulls in the store, crypto, the daemon...).
# tests/cli/test_startup.py checks every line against the command's own docstring.
SHORT_HELP: dict[str, str] = {
    "author": "Monitors of this node: add an author key, see yours, change your passphrase.",
    "bundle": "Carry sealed items between nodes and HQ on removable media.",
    "duress-set": "Set a duress passphrase: typed instead of yours, it opens an empty-looking"
    " author and silently destroys your real key and your list of reports.",
    "form": "The network's report form: what `report add` and the web app ask.",
    "hq": "Headquarters: enrol nodes, ingest reports, alerts, export, issue receipts, serve.",
    "init": "Create this node's keys and write an enrolment request for HQ.",
    "join": "Join the network with the ENROLMENT file HQ made for this node.",
    "network": "Create a network (run once, at HQ).",
    "peers": "Peers the running daemon knows: where from, last sync, failures.",
    "report": "Write reports (signed by you, readable only by HQ) and see their delivery.",
    "run": "Run the node until SIGTERM: serve, discover, sync, relay, purge; logs go to stderr.",
    "status": "Items held, outbox by status, tombstones, disk; peers and upstream if the daemon"
    " runs.",
    "sync": "One sync session with TARGET (HOST:PORT) or --ws URL; print what moved.",
    "wipe": "Destroy every key on this node at once: author, node and network keys.",
    "wipe-trigger": "USB-stick wipe trigger: a file that wipes this node when the daemon sees it.",
    "web-qr": "The web app's address as a QR code for a phone, and its certificate fingerprint.",
}

_WANTS_JSON = "fieldsync.json"


def _usage_error_as_json(ctx: click.Context, exc: click.UsageError) -> None:
    """With ``--json``, a usage error is also a JSON object on stdout (exit code 2)."""
    if ctx.meta.get(_WANTS_JSON):
        error = {"error": exc.format_message(), "kind": "UsageError", "exit_code": exc.exit_code}
        click.echo(json.dumps(error))


class LazyGroup(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            # Seen before any parsing, so even an error in the first option can answer in JSON.
            options = args[: args.index("--")] if "--" in args else args
            ctx.meta[_WANTS_JSON] = "--json" in options
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            _usage_error_as_json(ctx, exc)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            _usage_error_as_json(exc.ctx or ctx, exc)
            raise

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from ``SHORT_HELP``: no command module is imported for it."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [
            (name, click.Command(name, help=SHORT_HELP.get(name, "")).get_short_help_str(limit))
            for name in names
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        resolved = super().resolve_command(ctx, args)
        if not gc.isenabled():
            # The command's modules are loaded, with collection off (fieldsync_cli.entry):
            # keep what they made out of every later collection, then collect again. Run
            # in-process with collection on (tests), the group leaves the collector alone.
            gc.freeze()
            gc.enable()
        return resolved

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{attribute} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="FIELDSYNC_HOME",
    default=None,
    help="Node home directory (or FIELDSYNC_HOME; else [node] home of the config, else"
    " ~/.local/share/fieldsync).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config (or FIELDSYNC_CONFIG) for every command: [node] home, [control] socket.",
)
@click.version_option(package_name="fieldsync")
@click.pass_context
def main(ctx: click.Context, home: Path | None, config_path: Path | None) -> None:
    """fieldsync: signed, sealed incident reports that travel node to node to HQ."""
    ctx.obj = {"home": home, "config_path": config_path}


def config_of(
    ctx: click.Context,
    overrides: Mapping[str, Any] | None = None,
    config_path: Path | None = None,
) -> Config:
    """The configuration every command shares: ``--config`` or ``FIELDSYNC_CONFIG``, the
    environment, then ``overrides``; ``--home`` (or ``FIELDSYNC_HOME``) wins over
    ``[node] home``. ``config_path`` is a command's own ``--config`` (``run --config``)."""
    from fieldsync.config import load_config

    obj: dict[str, Any] = ctx.find_root().obj
    settings = dict(overrides or {})
    if obj["home"] is not None:
        settings["node.home"] = str(obj["home"])
    return load_config(config_path or obj["config_path"], os.environ, settings)


def home_of(ctx: click.Context) -> Path:
    """The node home: ``--home``, else ``[node] home`` of the config, else the default."""
    return config_of(ctx).node.home


def open_hq(hq_dir: Path, passphrase: str | None = None) -> HQ:
    """The HQ directory ``hq_dir``, counting wrong HQ passphrases as ``[security]`` says
    (the configuration of the command running now: ``--config`` or the environment)."""
    from fieldsync.hq import HQ

    config = config_of(click.get_current_context())
    return HQ(
        hq_dir,
        passphrase=passphrase,
        wipe_after_wrong_passphrases=config.security.hq_wipe_after_wrong_passphrases,
    )


def author_node(ctx: click.Context) -> Node:
    """The node of ``home_of``, counting wrong author passphrases as ``[security]`` says."""
    from fieldsync.node import Node

    config = config_of(ctx)
    return Node(
        config.node.home,
        wipe_after_wrong_passphrases=config.security.wipe_after_wrong_passphrases,
    )
