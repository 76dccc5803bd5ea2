"""Revocation end to end on real nodes (SPEC.md §17; issue 11 item 1).

HQ revokes node C (an author); the signed list reaches A by a receipts bundle and B by sync
with A; from then on C gets nothing from A or B and can push nothing to them, a session
already running with C is cut, and A and B go on syncing. HQ flags C's reports written past
the cut-off. Real homes, stores, handshakes and sockets; no mocks. The autouse blockbuster
fixture fails any test in which something blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from fieldsync import hq_revocation, synthetic
from fieldsync.daemon import FieldDaemon
from fieldsync.discovery import Pseudonyms
from fieldsync.errors import InputRefused
from fieldsync.forms import set_hq_form
from fieldsync.hq import HQ
from fieldsync.node import Node
from fieldsync.peer import PeerLimits, run_peer
from fieldsync.runtime import Runtime, Server
from fieldsync.transport import memory_pair
from fieldsync_protocol import codec, crypto
from fieldsync_protocol.bundle import BundleWriter
from fieldsync_protocol.form import default_form, parse_form
from fieldsync_protocol.handshake import PeerHandshake
from fieldsync_protocol.keydelivery import KeyDelivery, seal_delivery
from fieldsync_protocol.membership import Manifest
from fieldsync_protocol.revocation import RevocationList, sign_revocation
from tests.cli.cli_support import clean_env, fieldsync_command
from tests.fieldsync.test_daemon import config_for
from tests.fieldsync.test_peer import over_memory, over_tcp

PASSPHRASE = synthetic.PASSPHRASE
FAST = PeerLimits(silent_close=(0.0, 0.01))


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    with blockbuster_ctx() as bb:
        yield bb


@dataclasses.dataclass(frozen=True)
class Net:
    root: Path

    @property
    def hq(self) -> Path:
        return self.root / "hq"

    def home(self, name: str) -> Path:
        return self.root / name


@pytest.fixture(scope="session")
def base_net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    """HQ, author A with 3 reports, relay B, author C ("carol") with 2 reports, author D."""
    root = tmp_path_factory.mktemp("revoke") / "net"
    network = synthetic.create_network(root)
    network.add_node("a", author=True)
    network.add_node("b")
    network.add_node("carol", author=True)
    network.add_node("dan", author=True)
    for name, count in (("a", 3), ("carol", 2)):
        add_reports(root / name, count)
    return Net(root)


@pytest.fixture
def net(base_net: Net, tmp_path: Path) -> Net:
    shutil.copytree(base_net.root, tmp_path / "net")
    return Net(tmp_path / "net")


def add_reports(home: Path, count: int) -> list[str]:
    node = Node(home)
    try:
        return [
            node.add_report(
                {
                    "narrative": f"report {secrets.token_hex(4)}",
                    "categories": ["arbitrary-detention"],
                    "occurred": {"start": "2025-03-01", "precision": "day", "approximate": False},
                },
                PASSPHRASE,
            )
            for _ in range(count)
        ]
    finally:
        node.close()


def revoke(net: Net, target: str, reason: str = "device seized") -> hq_revocation.Revocation:
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        keys = headquarters.unlock(PASSPHRASE)
        return hq_revocation.revoke(
            headquarters.database(), headquarters.manifest(), keys.root_seed, target, reason
        )
    finally:
        headquarters.close()


def receipts_bundle(net: Net, path: Path) -> dict[str, int]:
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        return headquarters.write_receipts_bundle(path, PASSPHRASE)
    finally:
        headquarters.close()


def import_bundle(home: Path, path: Path) -> None:
    node = Node(home)
    try:
        node.import_bundle(path)
    finally:
        node.close()


def export_bundle(home: Path, path: Path) -> None:
    node = Node(home)
    try:
        node.export_bundle(path)
    finally:
        node.close()


def node_key(home: Path) -> bytes:
    node = Node(home)
    try:
        return crypto.box_public_key(node.node_secret())
    finally:
        node.close()


@contextlib.asynccontextmanager
async def opened(home: Path) -> AsyncIterator[Runtime]:
    runtime = await Runtime.open(home, limits=FAST)
    try:
        yield runtime
    finally:
        await runtime.close()


def following(runtime: Runtime) -> int | None:
    """The serial of the revocation list ``runtime`` follows (None: none yet)."""
    return None if runtime.revocations is None else runtime.revocations.serial


async def ids_of(runtime: Runtime) -> set[bytes]:
    return await runtime.worker.call(lambda store: set(store.sorted_ids()))


async def new_local_items(runtime: Runtime) -> None:
    """Another process (the CLI) changed the store: drop the cached index."""
    await runtime.worker.call(lambda _store: runtime.context.source.refresh())


# --- the "must show" ------------------------------------------------------------------------


async def test_revoked_node_gets_nothing_and_cannot_push(net: Net, tmp_path: Path) -> None:
    carol = await asyncio.to_thread(node_key, net.home("carol"))
    done = await asyncio.to_thread(revoke, net, "carol")
    assert done.serial == 1
    assert done.nodes and done.authors  # the author and the node it was enrolled on
    bundle = tmp_path / "receipts.bundle"
    await asyncio.to_thread(receipts_bundle, net, bundle)
    await asyncio.to_thread(import_bundle, net.home("a"), bundle)  # A: by bundle

    async with (
        opened(net.home("a")) as a,
        opened(net.home("b")) as b,
        opened(net.home("carol")) as c,
    ):
        assert following(a) == 1
        assert carol in a.context.revoked_nodes
        assert following(b) is None
        mine, theirs = await over_tcp(b, a)  # B: by sync with A
        assert mine.complete and theirs.complete
        assert following(b) == 1
        assert carol in b.context.revoked_nodes

        before = {name: await ids_of(r) for name, r in (("a", a), ("b", b), ("c", c))}
        for honest in (a, b):
            # C dials A and B, and A and B dial C: every attempt ends in the handshake.
            for initiator, responder in ((c, honest), (honest, c)):
                mine, theirs = await over_memory(initiator.context, responder.context)
                assert not mine.complete and not theirs.complete
                assert mine.stats.items_received == theirs.stats.items_received == 0
                assert mine.stats.items_sent == theirs.stats.items_sent == 0
                refuser = theirs if responder is honest else mine
                assert refuser.error == "handshake failed" and refuser.peer is None
            mine, theirs = await over_tcp(c, honest)
            assert not mine.complete and mine.items_new == 0
        after = {name: await ids_of(r) for name, r in (("a", a), ("b", b), ("c", c))}
        assert after == before  # C got 0 items and pushed 0 items

        # Honest nodes never stop syncing: a new report of A's still reaches B.
        await asyncio.to_thread(add_reports, net.home("a"), 1)
        await new_local_items(a)
        mine, theirs = await over_tcp(b, a)
        assert mine.complete and mine.items_new == 1


async def test_a_running_session_with_the_revoked_peer_is_cut(net: Net, tmp_path: Path) -> None:
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        keys = await asyncio.to_thread(headquarters.unlock, PASSPHRASE)
        manifest = await asyncio.to_thread(headquarters.manifest)
    finally:
        await asyncio.to_thread(headquarters.close)
    carol = await asyncio.to_thread(node_key, net.home("carol"))
    async with opened(net.home("a")) as a, opened(net.home("carol")) as c:
        end_c, end_a = memory_pair()
        ctx = c.context

        async def handshake_then_stall() -> None:
            handshake = PeerHandshake(
                initiator=True,
                network_key=ctx.network_key,
                static_secret=ctx.static_secret,
                certificate=ctx.certificate,
                manifest=ctx.manifest,
                ephemeral_secret=secrets.token_bytes(32),
            )
            await end_c.send(handshake.data_to_send())
            while not handshake.is_complete:
                handshake.receive_data(await end_c.receive())
                if out := handshake.data_to_send():
                    await end_c.send(out)
            while await end_c.receive():  # a member that stays connected, saying nothing
                pass

        stalled = asyncio.create_task(handshake_then_stall())
        serving = asyncio.create_task(run_peer(end_a, a.context, initiator=False))
        deadline = time.monotonic() + 10
        while not len(a.context.live):  # until the session is running
            assert time.monotonic() < deadline, "the session never started"
            await asyncio.sleep(0.01)
        revocations = RevocationList(manifest.network_id, 1, 0, (carol,))
        item = sign_revocation(revocations, keys.root_seed)
        await a.worker.call(lambda store: a.adopt_revocation(revocations))
        outcome = await asyncio.wait_for(serving, 10)
        await asyncio.wait_for(stalled, 10)
        assert outcome.peer is not None and not outcome.complete
        assert outcome.error == "session ended: the peer was revoked by HQ"
        assert len(a.context.live) == 0
        assert codec.decode(item)["t"] == "l"


async def test_hq_flags_reports_written_after_the_cutoff(net: Net, tmp_path: Path) -> None:
    first = tmp_path / "first.bundle"
    await asyncio.to_thread(export_bundle, net.home("carol"), first)
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        summary = await asyncio.to_thread(headquarters.ingest_files, [first], PASSPHRASE)
        assert summary.new == 2 and not summary.alerts  # carol's reports 1 and 2
    finally:
        await asyncio.to_thread(headquarters.close)
    done = await asyncio.to_thread(revoke, net, "carol")
    assert list(done.authors.values()) == [2]  # the highest sequence HQ had
    await asyncio.to_thread(add_reports, net.home("carol"), 1)  # sequence 3: after the cut-off
    later = tmp_path / "later.bundle"
    await asyncio.to_thread(export_bundle, net.home("carol"), later)
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        summary = await asyncio.to_thread(headquarters.ingest_files, [later], PASSPHRASE)
        alerts = await asyncio.to_thread(
            lambda: (
                headquarters.database()
                .execute(
                    "SELECT kind, sequence, author_name FROM alerts WHERE kind = ?",
                    ["revoked author"],
                )
                .fetchall()
            )
        )
    finally:
        await asyncio.to_thread(headquarters.close)
    assert summary.new == 1 and summary.duplicate == 2
    assert [a["kind"] for a in summary.alerts] == ["revoked author"]
    assert alerts == [("revoked author", 3, "carol")]


# --- negative: what a node refuses or ignores -----------------------------------------------


async def test_replayed_older_list_is_not_followed(net: Net, tmp_path: Path) -> None:
    await asyncio.to_thread(revoke, net, "carol")
    old = tmp_path / "old.bundle"
    await asyncio.to_thread(receipts_bundle, net, old)
    await asyncio.to_thread(revoke, net, "dan")
    new = tmp_path / "new.bundle"
    await asyncio.to_thread(receipts_bundle, net, new)
    dan = await asyncio.to_thread(node_key, net.home("dan"))
    await asyncio.to_thread(import_bundle, net.home("a"), new)
    await asyncio.to_thread(import_bundle, net.home("a"), old)  # a replay of list 1
    async with opened(net.home("a")) as a:
        assert a.revocations is not None and a.revocations.serial == 2
        assert dan in a.context.revoked_nodes and len(a.context.revoked_nodes) == 2
        older = RevocationList(a.context.manifest.network_id, 1, 0)
        await a.worker.call(lambda store: a.adopt_revocation(older))
        assert a.revocations.serial == 2  # never rolled back


@pytest.mark.parametrize("forgery", ["receipt key", "other root", "tampered"])
async def test_forged_list_in_a_bundle_is_refused_whole(
    net: Net, tmp_path: Path, forgery: str
) -> None:
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        keys = await asyncio.to_thread(headquarters.unlock, PASSPHRASE)
        manifest = await asyncio.to_thread(headquarters.manifest)
    finally:
        await asyncio.to_thread(headquarters.close)
    listed = RevocationList(
        manifest.network_id, 9, 0, (await asyncio.to_thread(node_key, net.home("a")),)
    )
    signer = {"receipt key": keys.receipt_seed, "other root": secrets.token_bytes(32)}
    item = sign_revocation(listed, signer.get(forgery, keys.root_seed))
    if forgery == "tampered":
        fields = codec.decode(item)
        fields["b"] = fields["b"].replace(
            listed.nodes[0], await asyncio.to_thread(node_key, net.home("b"))
        )
        item = codec.encode(fields)
    path = tmp_path / "forged.bundle"
    writer = BundleWriter(keys.network_key, manifest.network_id, secrets.token_bytes(16))
    await asyncio.to_thread(path.write_bytes, writer.add(item) + writer.finish())
    with pytest.raises(InputRefused, match="signature is not valid"):
        await asyncio.to_thread(import_bundle, net.home("b"), path)
    async with opened(net.home("b")) as b:
        assert b.revocations is None and not b.context.revoked_nodes


def test_cli_revoke_and_list(net: Net, tmp_path: Path) -> None:
    passphrase = tmp_path / "pass"
    passphrase.write_text(PASSPHRASE)
    run = [*fieldsync_command(), "hq"]
    common = ["--hq", str(net.hq), "--json"]
    done = subprocess.run(
        [
            *run,
            "revoke",
            "carol",
            *common,
            "--reason",
            "seized",
            "--passphrase-file",
            str(passphrase),
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "revoked node node:" in done.stderr and "signed revocation list 1" in done.stderr
    listed = subprocess.run(
        [*run, "revoked", *common, "--passphrase-file", str(passphrase)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0
    rows = json.loads(listed.stdout)
    assert {row["kind"] for row in rows} == {"node", "author"}
    assert all(row["reason"] == "seized" and row["list_serial"] == 1 for row in rows)
    unknown = subprocess.run(
        [*run, "revoke", "nobody", *common, "--passphrase-file", str(passphrase)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=False,
    )
    assert unknown.returncode == 4 and "names no enrolled node or author" in unknown.stderr


# --- certificate expiry and renewal (SPEC.md §17.4) -----------------------------------------


def hq_keys(net: Net) -> tuple[Any, Manifest]:
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        return headquarters.unlock(PASSPHRASE), headquarters.manifest()
    finally:
        headquarters.close()


def renew(net: Net, days: int = hq_revocation.CERTIFICATE_DAYS) -> hq_revocation.Renewal:
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        keys = headquarters.unlock(PASSPHRASE)
        return hq_revocation.renew(
            net.hq, headquarters.database(), headquarters.manifest(), keys, days
        )
    finally:
        headquarters.close()


def rotate(net: Net, grace_days: int) -> hq_revocation.Renewal:
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        keys = headquarters.unlock(PASSPHRASE)
        return hq_revocation.rotate_network_key(
            net.hq, headquarters.database(), headquarters.manifest(), keys, grace_days
        )
    finally:
        headquarters.close()


def bundle_of(network_key: bytes, network_id: bytes, path: Path, items: list[bytes]) -> Path:
    writer = BundleWriter(network_key, network_id, secrets.token_bytes(16))
    path.write_bytes(b"".join(writer.add(item) for item in items) + writer.finish())
    return path


async def test_expired_certificate_is_refused_until_hq_renews_it(
    net: Net, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys, manifest = await asyncio.to_thread(hq_keys, net)
    # HQ's signed time a year ahead reaches B: every certificate issued at enrolment
    # (90 days) has expired for B. (HQ would get there by running for a year.)
    later = int(time.time()) + 365 * 86_400
    beacon = sign_revocation(RevocationList(manifest.network_id, 50, later), keys.root_seed)
    path = tmp_path / "beacon.bundle"
    await asyncio.to_thread(bundle_of, keys.network_key, manifest.network_id, path, [beacon])
    await asyncio.to_thread(import_bundle, net.home("b"), path)
    async with opened(net.home("a")) as a, opened(net.home("b")) as b:
        assert b.context.hq_time == later
        before = await ids_of(b)
        with caplog.at_level(logging.INFO):
            mine, theirs = await over_tcp(a, b)
        assert not mine.complete and not theirs.complete and theirs.peer is None
        assert await ids_of(b) == before
        warned = [r for r in caplog.records if "peer certificate expired" in r.getMessage()]
        assert warned and warned[0].levelno == logging.WARNING
        assert "HQ must renew it" in warned[0].getMessage()

    # HQ renews (ten years); the renewal reaches B by bundle and A by sync with D.
    done = await asyncio.to_thread(renew, net, 3650)
    assert done.certificates == 4 and done.expires > later  # a, b, carol, dan (no hub yet)
    receipts = tmp_path / "receipts.bundle"
    await asyncio.to_thread(receipts_bundle, net, receipts)
    await asyncio.to_thread(import_bundle, net.home("b"), receipts)
    await asyncio.to_thread(import_bundle, net.home("dan"), receipts)
    async with opened(net.home("a")) as a, opened(net.home("dan")) as d:
        mine, _ = await over_tcp(a, d)
        assert mine.complete
        assert a.own_expiry == done.expires  # A took its renewed certificate from the sync
    async with opened(net.home("a")) as a, opened(net.home("b")) as b:
        assert b.context.hq_time == later  # still a year ahead
        mine, theirs = await over_tcp(a, b)
        assert mine.complete and theirs.complete
        assert theirs.peer is not None and theirs.peer.expires == done.expires


async def test_a_forged_or_replayed_delivery_changes_nothing(net: Net, tmp_path: Path) -> None:
    keys, manifest = await asyncio.to_thread(hq_keys, net)
    a_key = await asyncio.to_thread(node_key, net.home("a"))
    await asyncio.to_thread(renew, net)
    receipts = tmp_path / "receipts.bundle"
    await asyncio.to_thread(receipts_bundle, net, receipts)
    await asyncio.to_thread(import_bundle, net.home("a"), receipts)
    node = Node(net.home("a"))
    try:
        adopted = await asyncio.to_thread(node.membership)
        # Signed by the certificate key instead of the root, sealed to A: ignored.
        forged = KeyDelivery(
            manifest.network_id,
            a_key,
            99,
            adopted.certificate,
            7,
            secrets.token_bytes(32),
            0,
        )
        item = seal_delivery(forged, keys.certificate_seed, secrets.token_bytes(32))
        path = tmp_path / "forged.bundle"
        await asyncio.to_thread(bundle_of, keys.network_key, manifest.network_id, path, [item])
        await asyncio.to_thread(node.import_bundle, path)
        # And HQ's first delivery again (a replay of an older serial): ignored too.
        await asyncio.to_thread(node.import_bundle, receipts)
        after = await asyncio.to_thread(node.membership)
    finally:
        await asyncio.to_thread(node.close)
    assert after == adopted and after.network_key_id == 0 and after.next_key is None


# --- network-key rotation (SPEC.md §17.5) -------------------------------------------------------


async def advance(runtime: Runtime, seconds: int) -> None:
    """Let ``seconds`` of the node's running time pass, then let it look at its keys."""
    await runtime.worker.call(lambda store: store.advance_clock(seconds))
    await runtime.refresh_keys()


async def test_rotation_leaves_the_old_key_with_nothing(net: Net, tmp_path: Path) -> None:
    keys, _ = await asyncio.to_thread(hq_keys, net)
    old_key = keys.network_key
    await asyncio.to_thread(revoke, net, "carol")  # revoke first, then rotate
    done = await asyncio.to_thread(rotate, net, 1)
    assert done.network_key_id == 1 and done.grace_seconds > 0
    receipts = tmp_path / "receipts.bundle"
    await asyncio.to_thread(receipts_bundle, net, receipts)  # still under the old key
    await asyncio.to_thread(import_bundle, net.home("a"), receipts)  # A: by bundle
    await asyncio.to_thread(import_bundle, net.home("carol"), receipts)  # carol: nothing for her

    async with (
        opened(net.home("a")) as a,
        opened(net.home("b")) as b,
        opened(net.home("carol")) as c,
    ):
        new_key = a.context.also_accept[0]
        assert a.context.network_key == old_key and new_key != old_key
        assert c.context.also_accept == ()  # no delivery was sealed to the revoked node
        mine, theirs = await over_tcp(b, a)  # B: by sync with A, under the old key
        assert mine.complete and b.context.also_accept == (new_key,)

        # A's grace is over, B's not yet: B dials with the old key, A refuses it, B dials
        # again with the new one. Honest nodes never stop syncing.
        await advance(a, done.grace_seconds)
        assert a.context.network_key == new_key and a.context.also_accept == ()
        await asyncio.to_thread(add_reports, net.home("a"), 1)
        await new_local_items(a)
        mine, theirs = await over_tcp(b, a)
        assert mine.complete and mine.items_new == 1
        mine, theirs = await over_tcp(a, b)  # and A dials B under the new key
        assert mine.complete

        # The ex-member (old key only) gets 0 bytes from A, which switched, and from B
        # once B switched too.
        await advance(b, done.grace_seconds)
        for honest in (a, b):
            mine, theirs = await over_tcp(c, honest)
            assert mine.wire_bytes_received == 0 and theirs.wire_bytes_sent == 0
            assert theirs.peer is None and mine.items_new == 0

        # Bundles: A now writes under the new key; B reads them, the ex-member cannot.
        exported = tmp_path / "a.bundle"
        await asyncio.to_thread(export_bundle, net.home("a"), exported)
    with pytest.raises(InputRefused, match="not a bundle of this network"):
        await asyncio.to_thread(import_bundle, net.home("carol"), exported)
    await asyncio.to_thread(import_bundle, net.home("b"), exported)


async def test_a_peer_that_answered_under_the_old_key_is_not_dialled_under_the_new(
    net: Net, tmp_path: Path
) -> None:
    """During the grace B dials carol (revoked, old key only): she answers under the old key
    and B refuses her certificate. She holds the old key, so the failure is no key mismatch:
    B must not dial her again under the new key (SPEC.md §17.5)."""
    await asyncio.to_thread(revoke, net, "carol")
    await asyncio.to_thread(rotate, net, 1)
    receipts = tmp_path / "receipts.bundle"
    await asyncio.to_thread(receipts_bundle, net, receipts)
    await asyncio.to_thread(import_bundle, net.home("b"), receipts)
    async with opened(net.home("b")) as b, opened(net.home("carol")) as c:
        assert b.context.also_accept  # in the grace: a next key to dial with
        server = Server(c)
        host, port = await server.listen_tcp("127.0.0.1", 0)
        try:
            mine = await b.sync_with(f"{host}:{port}")
        finally:
            await server.close()
    # The outcome is the first dial's (carol answered), not a second one's under the new key
    # (which she, holding only the old key, would have met with silence).
    assert mine.peer is None and not mine.complete
    assert mine.wire_bytes_received > 0


async def test_the_switch_forgets_discovered_peers_and_ends_their_syncs(
    net: Net, tmp_path: Path
) -> None:
    """B's daemon is dialling a peer it found by discovery under the old key when its grace
    ends: the switch forgets that peer and cancels the dial at once (SPEC.md §17.5), so B
    never goes on, or starts again, under the new key with a peer known only from the old
    key's announcements. The peer here takes the connection and stays silent, so the dial is
    in flight at the switch whatever the timing."""
    done = await asyncio.to_thread(rotate, net, 1)
    receipts = tmp_path / "receipts.bundle"
    await asyncio.to_thread(receipts_bundle, net, receipts)
    await asyncio.to_thread(import_bundle, net.home("b"), receipts)
    connected, closed = asyncio.Event(), asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        while await reader.read(65536):
            pass
        closed.set()
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    target = f"127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    daemon = FieldDaemon(await config_for(net.home("b")))
    await daemon.start()
    try:
        scheduler, runtime = daemon.scheduler, daemon.runtime
        assert scheduler is not None and runtime is not None
        old_key = runtime.context.network_key
        scheduler.add(target, "discovered")  # as discovery reports a member it heard
        scheduler.add("127.0.0.1:9", "static")
        async with asyncio.timeout(60):  # hang guards only: each wait is for an event
            await connected.wait()
            assert scheduler.targets[target].in_flight
            await runtime.worker.call(lambda store: store.advance_clock(done.grace_seconds))
            await runtime.refresh_keys()
            assert runtime.context.network_key != old_key
            assert target not in scheduler.targets  # forgotten in the switch step itself
            assert "127.0.0.1:9" in scheduler.targets  # configured peers stay
            await closed.wait()  # the dial under the old key was ended, not left to run
        assert target not in scheduler.targets
    finally:
        await daemon.stop()
        listener.close()
        await listener.wait_closed()


def test_discovery_names_under_the_new_key_mean_nothing_to_the_old_one() -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    announced = [Pseudonyms(new).fresh().instance_label for _ in range(50)]
    assert all(Pseudonyms(new).recognise(label) for label in announced)
    assert not any(Pseudonyms(old).recognise(label) for label in announced)


def test_cli_renew_and_rotate(net: Net, tmp_path: Path) -> None:
    passphrase = tmp_path / "pass"
    passphrase.write_text(PASSPHRASE)
    base = [*fieldsync_command(), "hq"]
    common = ["--hq", str(net.hq), "--json", "--passphrase-file", str(passphrase)]

    def hq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args, *common],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=120,
            check=False,
        )

    renewed = hq("renew", "--days", "30")
    assert renewed.returncode == 0, renewed.stderr
    data = json.loads(renewed.stdout)
    assert data["certificates"] == 4 and data["network_key_id"] == 0
    assert data["revocation_list_serial"] == 1 and "renewed 4 certificates" in renewed.stderr
    rotated = hq("rotate-network-key", "--grace", "3")
    assert rotated.returncode == 0, rotated.stderr
    data = json.loads(rotated.stdout)
    assert data["network_key_id"] == 1 and data["grace_seconds"] > 2 * 86_400
    for args, message in (
        (("rotate-network-key", "--grace", "0"), "--grace must be 1.."),
        (("renew", "--days", "0"), "--days must be 1..3650"),
    ):
        refused = hq(*args)
        assert refused.returncode == 3 and message in refused.stderr
        assert json.loads(refused.stdout)["kind"] == "InputRefused"
    # The new key went into HQ's sealed key file; HQ still seals bundles under the old one
    # until the grace has passed, so every member can read the bundle that carries the key.
    keys, _ = hq_keys(net)
    known = hq_revocation.network_keys(net.hq, keys.root_seed, keys.network_key)
    assert [k.key_id for k in known] == [0, 1]
    in_use = hq_revocation.network_key_in_use(net.hq, keys.root_seed, keys.network_key)
    assert in_use.key_id == 0
    (net.hq / hq_revocation.NETWORK_KEYS).write_bytes(b"damaged")
    with pytest.raises(InputRefused, match="damaged or from another HQ"):
        hq_revocation.network_keys(net.hq, keys.root_seed, keys.network_key)


# --- through the hub ------------------------------------------------------------------------


def enrol_hub(net: Net) -> Path:
    home = net.home("hub")
    node = Node(home)
    try:
        request = node.init(None, None, synthetic.KDF_PROFILE)
        headquarters = HQ(net.hq, passphrase=PASSPHRASE)
        try:
            enrolment, _ = headquarters.enroll(request.read_text(), PASSPHRASE, "hub")
        finally:
            headquarters.close()
        node.join(enrolment)
    finally:
        node.close()
    return home


def set_example_form(net: Net, version: int) -> bytes:
    """HQ sets a network form (SPEC.md §18.4); returns its signed item."""
    keys, manifest = hq_keys(net)
    form = parse_form({**default_form().to_map(), "version": version})
    return set_hq_form(net.hq, form, manifest, keys.root_seed)


async def test_the_list_and_deliveries_travel_through_the_hub(net: Net) -> None:
    """Revocation list, key deliveries and the network's form reach members by the hub."""
    from fieldsync.hq_hub import ingest_from_hub
    from fieldsync.runtime import Server

    hub_home = await asyncio.to_thread(enrol_hub, net)
    await asyncio.to_thread(revoke, net, "carol")
    renewal = await asyncio.to_thread(renew, net)
    form_item = await asyncio.to_thread(set_example_form, net, 7)
    async with opened(hub_home) as hub, opened(net.home("a")) as a, opened(net.home("carol")) as c:
        server = Server(hub)
        host, port = await server.listen_websocket("127.0.0.1", 0)
        url = f"ws://{host}:{port}/sync"
        try:
            headquarters = HQ(net.hq, passphrase=PASSPHRASE)
            try:
                _, pulled = await ingest_from_hub(headquarters, url, PASSPHRASE)
            finally:
                await asyncio.to_thread(headquarters.close)
            assert pulled.pushed is not None and pulled.pushed.complete
            assert following(hub) == 2  # revoke, then renew: the hub follows the newest
            assert hub.own_expiry == renewal.expires  # its own delivery came with the push
            # A field node gets the list and its renewed certificate from the hub.
            before = a.own_expiry
            outcome = await a.sync_with(url)
            assert outcome.complete and following(a) == 2 and a.own_expiry > before
            held = await a.worker.call(lambda store: store.form_items())
            assert held == [form_item]  # HQ's form came with the push and went on to A
            # The revoked node gets nothing from the hub.
            outcome = await c.sync_with(url)
            assert not outcome.complete and outcome.items_new == 0 and outcome.peer is not None
        finally:
            await server.close()
