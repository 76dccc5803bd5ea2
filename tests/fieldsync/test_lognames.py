"""Peers' addresses appear in logs as per-run pseudonyms; the address only at DEBUG level."""

from __future__ import annotations

import logging
import re

import pytest

from fieldsync.lognames import address_name


def test_an_address_keeps_one_name_and_the_name_hides_it() -> None:
    name = address_name("192.168.1.20:7341")
    assert re.fullmatch(r"addr-[a-z2-7]{8}", name)
    assert address_name("192.168.1.20:7341") == name
    assert address_name("192.168.1.20:7342") != name
    assert "192" not in name and "7341" not in name


def test_the_address_is_told_only_at_debug_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "fieldsync.lognames")
    address_name("10.1.2.3:9999")
    assert not caplog.records
    caplog.set_level(logging.DEBUG, "fieldsync.lognames")
    name = address_name("10.1.2.4:9999")
    address_name("10.1.2.4:9999")  # once per name
    assert [r.getMessage() for r in caplog.records] == [f"{name} is 10.1.2.4:9999"]
    assert all(r.levelno == logging.DEBUG for r in caplog.records)
