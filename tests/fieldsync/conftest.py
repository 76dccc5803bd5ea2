"""Fixtures for the fieldsync application tests: a real network on disk, copied per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fieldsync.offline_support import Net, build_network, copy_network


@pytest.fixture(scope="session")
def base_net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    """HQ + enrolled author node A + enrolled relay node B, built once per session."""
    return build_network(tmp_path_factory.mktemp("offline-base") / "net")


@pytest.fixture
def net(base_net: Net, tmp_path: Path) -> Net:
    """A private copy of the base network for one test."""
    return copy_network(base_net, tmp_path / "net")
