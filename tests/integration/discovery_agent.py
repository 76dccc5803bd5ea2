"""One discovery node for the netns tests: runs ``fieldsync.discovery.Discovery`` until SIGTERM.

Started inside a host namespace by ``test_discovery_netns.py``:

    ip netns exec NS python discovery_agent.py --key HEX --address 10.77.0.11 --port 7001 \
        --rotate 2

Reports what it observes as JSON lines on stdout, which the test waits on:
``{"event": "ready"}``, ``{"event": "announce", "name": ...}``,
``{"event": "peer", "host": ..., "port": ...}``, ``{"event": "gone", ...}``,
``{"event": "stopped"}``. It binds only to ``--address``; it never listens on ``--port``
(discovery is a hint, the tests check who was reported, not who can be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from fieldsync.discovery import DEFAULT_SERVICE_TYPE, Discovery, PeerAddress


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def on_peer(address: PeerAddress) -> None:
        emit("peer", host=address.host, port=address.port)

    def on_gone(address: PeerAddress) -> None:
        emit("gone", host=address.host, port=address.port)

    discovery = Discovery(
        network_key=bytes.fromhex(args.key),
        port=args.port,
        interfaces=[args.address],
        on_peer=on_peer,
        on_peer_gone=on_gone,
        service_type=args.service_type,
        rotate_seconds=args.rotate,
        on_announce=lambda name: emit("announce", name=name),
    )
    await discovery.start()
    emit("ready")
    try:
        await stop.wait()
    finally:
        await discovery.stop()
    emit("stopped")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True, help="network key, hex")
    parser.add_argument("--address", required=True, help="the one interface address to bind")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rotate", type=float, default=2.0)
    parser.add_argument("--service-type", default=DEFAULT_SERVICE_TYPE)
    args = parser.parse_args()
    # zeroconf warnings (e.g. sends failing while the link is down) go to stderr for triage.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
