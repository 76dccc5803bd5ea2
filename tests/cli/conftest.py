"""Fixtures for the CLI tests: the shared offline network (built with the Python API) and a
runner for the real ``fieldsync`` command in a subprocess."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli.cli_support import Run, clean_env, fieldsync_command
from tests.fieldsync.offline_support import PASSPHRASE, Net, build_network, copy_network


@pytest.fixture(scope="session")
def base_net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    return build_network(tmp_path_factory.mktemp("cli-base") / "net")


@pytest.fixture
def net(base_net: Net, tmp_path: Path) -> Net:
    return copy_network(base_net, tmp_path / "net")


@pytest.fixture
def run() -> Run:
    """``run(*args, passphrase=..., env=...)``: one real ``fieldsync`` process.

    The passphrase goes in FIELDSYNC_PASSPHRASE unless ``passphrase=None``; stdin is not a
    terminal. Never raises on an exit code: tests check it.
    """

    def _run(
        *args: str | Path,
        env: dict[str, str] | None = None,
        passphrase: str | None = PASSPHRASE,
    ) -> subprocess.CompletedProcess[str]:
        extra = {} if passphrase is None else {"FIELDSYNC_PASSPHRASE": passphrase}
        return subprocess.run(
            [*fieldsync_command(), *map(str, args)],
            env=clean_env(**extra) if env is None else env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return _run
