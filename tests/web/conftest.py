"""The web tests start from the offline test network (HQ, author node A, relay node B)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fieldsync.offline_support import Net, build_network, copy_network


@pytest.fixture(scope="session")
def web_base_net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    return build_network(tmp_path_factory.mktemp("web-base") / "net")


@pytest.fixture
def net(web_base_net: Net, tmp_path: Path) -> Net:
    return copy_network(web_base_net, tmp_path / "net")
