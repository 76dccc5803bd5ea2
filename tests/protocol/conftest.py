"""Fixtures for the protocol tests: two complete, deterministic test networks."""

from __future__ import annotations

import pytest

from tests.protocol.protocol_support import Net, make_net


@pytest.fixture(scope="session")
def net() -> Net:
    """Network "alpha": HQ holds key ids 0 and 1 (1 is current); 20 enrolled authors."""
    return make_net("alpha", key_ids=(0, 1), authors=20)


@pytest.fixture(scope="session")
def other_net() -> Net:
    """Network "beta": another HQ, another root, another network key."""
    return make_net("beta", key_ids=(0,), authors=3)
