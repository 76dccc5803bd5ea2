"""USB-stick wipe trigger (``[privacy] wipe_trigger``, issue #11 item 5).

A real daemon (``FieldDaemon``, as ``fieldsync run`` starts it) watches a glob; trigger files
are written by the real CLI (``fieldsync wipe-trigger create``). A plain directory stands in
for the mount point in most tests; one test formats an ext4 image, writes the trigger on it,
unmounts it and loop-mounts it where the daemon looks, as a stick would be plugged in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldsync.daemon import FieldDaemon
from fieldsync.errors import FieldsyncError
from fieldsync.wipe import key_files
from fieldsync.wipe_trigger import MAGIC, MAX_TRIGGER_BYTES, TriggerWatcher
from tests.cli.cli_support import clean_env, fieldsync_command
from tests.fieldsync.offline_support import (
    Net,
    author_seed,
    build_network,
    copy_network,
)
from tests.integration.sync_support import start_server
from tests.web.support import served

#: How long a test waits for what it waits for before it calls the daemon stuck.
PATIENCE = 60.0


@pytest.fixture(scope="module")
def base_net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    return build_network(tmp_path_factory.mktemp("trigger-base") / "net")


@pytest.fixture
def net(base_net: Net, tmp_path: Path) -> Net:
    return copy_network(base_net, tmp_path / "net")


def _create(home: Path, path: Path) -> Path:
    done = subprocess.run(
        [*fieldsync_command(), "--home", str(home), "wipe-trigger", "create", str(path), "--json"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return Path(json.loads(done.stdout)["trigger"])


def _watcher(daemon: FieldDaemon) -> TriggerWatcher:
    assert daemon.wipe_trigger is not None, "the wipe trigger is not watched"
    return daemon.wipe_trigger


async def _rejected(daemon: FieldDaemon, *paths: Path) -> None:
    """Until the watcher has looked at every one of ``paths`` and turned it down."""

    watcher = _watcher(daemon)

    async def seen() -> None:
        while not set(paths) <= watcher.rejected:
            watcher.looked.clear()
            await watcher.looked.wait()

    await asyncio.wait_for(seen(), PATIENCE)


async def test_only_this_nodes_token_wipes(
    net: Net, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stick = tmp_path / "media" / "monitor" / "STICK"
    await asyncio.to_thread(stick.mkdir, parents=True)
    # A trigger made for another node (B), a file with the right name and junk in it, one
    # far too long, and one in the right format with a token nobody made.
    other = await asyncio.to_thread(_create, net.b, stick / "fieldsync-wipe-other")
    junk = stick / "fieldsync-wipe-junk"
    huge = stick / "fieldsync-wipe-huge"
    guessed = stick / "fieldsync-wipe-guessed"
    await asyncio.to_thread(junk.write_bytes, secrets.token_bytes(64))
    await asyncio.to_thread(huge.write_text, f"{MAGIC}\n" + "a" * MAX_TRIGGER_BYTES)
    await asyncio.to_thread(guessed.write_text, f"{MAGIC}\n{secrets.token_hex(32)}\n")
    mine = await asyncio.to_thread(_create, net.a, tmp_path)  # made here, plugged in later
    before = await asyncio.to_thread(key_files, net.a)
    glob = str(tmp_path / "media" / "*" / "*" / "fieldsync-wipe-*")
    caplog.set_level(logging.WARNING)
    async with served(net.a, **{"privacy.wipe_trigger": glob}) as daemon:
        await _rejected(daemon, other, junk, huge, guessed)
        assert not daemon.wiped.is_set()
        assert await asyncio.to_thread(key_files, net.a) == before
        assert f"{other} matches [privacy] wipe_trigger but holds no token" in caplog.text
        await asyncio.to_thread(os.replace, mine, stick / mine.name)
        await asyncio.wait_for(daemon.wiped.wait(), PATIENCE)
        await asyncio.wait_for(daemon.wait(asyncio.Event()), PATIENCE)  # it stops itself
        assert f"wipe trigger {stick / mine.name}: every key on this node was destroyed" in (
            caplog.text
        )
    assert await asyncio.to_thread(key_files, net.a) == []
    with pytest.raises(FieldsyncError):
        await asyncio.to_thread(author_seed, net)
    # B's trigger is still B's: its home still knows the token, A's wipe took nothing of B.
    assert await asyncio.to_thread(key_files, net.b)


async def test_a_node_without_a_trigger_of_its_own_says_so(
    net: Net, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = await asyncio.to_thread(_create, net.b, tmp_path / "fieldsync-wipe-b")
    caplog.set_level(logging.WARNING)
    async with served(net.a, **{"privacy.wipe_trigger": str(tmp_path / "fieldsync-wipe-*")}) as d:
        await _rejected(d, other)
        assert not d.wiped.is_set()
    assert "no trigger was created: fieldsync wipe-trigger create" in caplog.text
    assert "no trigger was made for this node yet" in caplog.text
    assert await asyncio.to_thread(author_seed, net)


def test_create_refuses_an_existing_file_and_an_empty_home(net: Net, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file the monitor keeps")

    def run(home: Path, path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*fieldsync_command(), "--home", str(home), "wipe-trigger", "create", str(path)],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=120,
            check=False,
        )

    refused = run(net.a, taken)
    assert refused.returncode != 0 and f"{taken} exists" in refused.stderr
    assert taken.read_text() == "a file the monitor keeps"
    empty = tmp_path / "empty-home"
    empty.mkdir()
    refused = run(empty, tmp_path / "trigger")
    assert refused.returncode != 0 and "holds no fieldsync keys" in refused.stderr
    assert not (tmp_path / "trigger").exists()


def test_a_relative_trigger_glob_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [*fieldsync_command(), "--home", str(tmp_path), "status"],
        capture_output=True,
        text=True,
        env=clean_env(FIELDSYNC_PRIVACY_WIPE_TRIGGER="media/*/fieldsync-wipe-*"),
        timeout=120,
        check=False,
    )
    assert done.returncode != 0 and "wipe_trigger" in done.stderr and "absolute" in done.stderr


@pytest.fixture
def stick_image(tmp_path: Path) -> Iterator[Path]:
    image = tmp_path / "stick.img"
    with image.open("wb") as file:
        file.truncate(8 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=60)
    yield image


def _mount(image: Path, where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(where)], check=True, timeout=60)


def _unmount(where: Path) -> None:
    if os.path.ismount(where):
        subprocess.run(["umount", str(where)], check=True, timeout=60)


@pytest.mark.loopmount
async def test_a_stick_plugged_in_wipes_the_node(
    net: Net, tmp_path: Path, stick_image: Path
) -> None:
    staging, plugged = tmp_path / "staging", tmp_path / "media" / "monitor" / "STICK"
    try:
        await asyncio.to_thread(_mount, stick_image, staging)
        await asyncio.to_thread(_create, net.a, staging)
        await asyncio.to_thread(_unmount, staging)
        glob = str(tmp_path / "media" / "*" / "*" / "fieldsync-wipe-*")
        async with served(net.a, **{"privacy.wipe_trigger": glob}) as daemon:
            assert await asyncio.to_thread(key_files, net.a)
            await asyncio.to_thread(_mount, stick_image, plugged)
            await asyncio.wait_for(daemon.wiped.wait(), PATIENCE)
        assert await asyncio.to_thread(key_files, net.a) == []
        with pytest.raises(FieldsyncError):
            await asyncio.to_thread(author_seed, net)
    finally:
        await asyncio.to_thread(_unmount, staging)
        await asyncio.to_thread(_unmount, plugged)


def test_fieldsync_run_on_a_relay_wipes_and_exits(net: Net, tmp_path: Path) -> None:
    """The ``fieldsync run`` process itself: it wipes, then stops with exit code 0 (so that
    systemd's ``Restart=on-failure`` does not start it again on a home with no keys)."""
    stick = tmp_path / "stick"
    stick.mkdir()
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[privacy]\nwipe_trigger = "{stick}/fieldsync-wipe-*"\n[discovery]\nenabled = false\n',
        encoding="utf-8",
    )
    trigger = _create(net.b, tmp_path)
    server = start_server(net.b, extra_args=["--config", str(config)])
    try:
        assert server.proc.poll() is None
        os.replace(trigger, stick / trigger.name)
        exit_code = server.proc.wait(timeout=PATIENCE)
    finally:
        server.kill()  # only if it still runs; closes its pipe either way
    assert exit_code == 0, server.log.read_text()
    assert key_files(net.b) == []
    assert "every key on this node was destroyed" in server.log.read_text()
