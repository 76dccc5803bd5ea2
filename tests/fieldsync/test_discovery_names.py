"""Discovery pseudonyms, without a network (DESIGN §4 "Discovery", security_anchors T21).

Rotation, unlinkability across rotations, recognition by members only, tamper detection,
valid DNS names, and the configuration checks that keep ``Discovery`` off "all interfaces".
Nonces come from a seeded generator, so every run checks the same names.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
from collections.abc import Callable

import pytest
from zeroconf import ServiceStateChange

from fieldsync.discovery import (
    DEFAULT_SERVICE_TYPE,
    HOST_LABEL_LENGTH,
    INSTANCE_LABEL_LENGTH,
    OWN_NAME_MEMORY_SECONDS,
    Discovery,
    OwnNames,
    PeerAddress,
    Pseudonym,
    Pseudonyms,
    instance_label_of,
)
from fieldsync_protocol.crypto import derive_key

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
ROTATIONS = 64
# RFC 1123 host label: letters, digits, inner hyphens, at most 63 characters.
DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def rotations(key: bytes = KEY, count: int = ROTATIONS, seed: int = 1) -> list[Pseudonym]:
    pseudonyms, draw = Pseudonyms(key), seeded(seed)
    return [pseudonyms.fresh(draw) for _ in range(count)]


def substrings(text: str, length: int) -> set[str]:
    return {text[i : i + length] for i in range(len(text) - length + 1)}


def test_known_answer_pins_the_derivation() -> None:
    # Nodes of different versions must recognise each other: any change here is a protocol
    # change. instance = base32(nonce || BLAKE2b-56_k("instance\0" || nonce)),
    # k = derive_key(network key, "discovery"), personalisation "fs-discovery".
    pseudonym = Pseudonyms(KEY).for_nonce(bytes(range(8)))
    assert pseudonym == Pseudonym(
        instance_label="aaaqeayeaudapj5faviw3tb4", host_label="urbfm7zbskj4ejso"
    )
    subkey = derive_key(KEY, b"discovery")
    tag = hashlib.blake2b(
        b"instance\0" + bytes(range(8)), digest_size=7, key=subkey, person=b"fs-discovery"
    ).digest()
    assert base64.b32decode(pseudonym.instance_label.upper()) == bytes(range(8)) + tag
    assert pseudonym.server == "urbfm7zbskj4ejso.local."
    assert pseudonym.instance_name(DEFAULT_SERVICE_TYPE) == (
        "aaaqeayeaudapj5faviw3tb4._http._tcp.local."
    )


def test_every_rotation_has_new_names() -> None:
    names = rotations()
    assert len({p.instance_label for p in names}) == ROTATIONS
    assert len({p.host_label for p in names}) == ROTATIONS
    # Two nodes of one network never share names (each draws its own nonces).
    other_node = rotations(seed=2)
    assert not {p.instance_label for p in names} & {p.instance_label for p in other_node}


def test_no_six_byte_substring_links_two_rotations() -> None:
    # T21: "no byte string >= 6 B repeats across periods except the service type".
    seen: dict[str, int] = {}
    for period, pseudonym in enumerate(rotations()):
        own = substrings(pseudonym.instance_label, 6) | substrings(pseudonym.host_label, 6)
        for piece in own:
            assert seen.setdefault(piece, period) == period, (piece, seen[piece], period)


def test_names_are_valid_dns_labels() -> None:
    for pseudonym in rotations():
        assert len(pseudonym.instance_label) == INSTANCE_LABEL_LENGTH
        assert len(pseudonym.host_label) == HOST_LABEL_LENGTH
        assert DNS_LABEL.fullmatch(pseudonym.instance_label)
        assert DNS_LABEL.fullmatch(pseudonym.host_label)
        assert len(pseudonym.instance_name(DEFAULT_SERVICE_TYPE)) <= 255


def test_names_carry_nothing_of_the_key() -> None:
    subkey = derive_key(KEY, b"discovery")
    text = " ".join(p.instance_label + " " + p.host_label for p in rotations())
    for secret in (KEY, subkey):
        for encoded in (secret.hex(), base64.b32encode(secret).decode().lower()):
            assert not substrings(encoded, 8) & substrings(text, 8)


def test_members_recognise_each_other_and_outsiders_do_not() -> None:
    member, outsider = Pseudonyms(KEY), Pseudonyms(OTHER_KEY)
    for pseudonym in rotations():
        # recognise() returns what the SRV record must point to, for the resolve check.
        assert member.recognise(pseudonym.instance_label) == pseudonym
        assert member.recognise(pseudonym.instance_label.upper()) == pseudonym
        assert outsider.recognise(pseudonym.instance_label) is None
    for pseudonym in rotations(OTHER_KEY):
        assert member.recognise(pseudonym.instance_label) is None


def test_random_labels_are_not_recognised() -> None:
    # What every foreign _http._tcp service looks like to a member: dropped unresolved.
    member, draw = Pseudonyms(KEY), seeded(3)
    for _ in range(2000):
        label = base64.b32encode(draw(15)).decode().lower()
        assert member.recognise(label) is None


def test_any_tampering_breaks_recognition() -> None:
    member = Pseudonyms(KEY)
    label = rotations(count=1)[0].instance_label
    for position, char in enumerate(label):
        for replacement in "a7":
            if replacement != char:
                tampered = label[:position] + replacement + label[position + 1 :]
                assert member.recognise(tampered) is None, (position, replacement)


@pytest.mark.parametrize(
    "label",
    [
        "",
        "a",
        "aaaqeayeaudapj5faviw3tb",
        "aaaqeayeaudapj5faviw3tb4a",
        "aaaqeayeaudapj5faviw3tb1",
        "aaaqeayeaudapj5faviw3tb-",
        "aaaqeayeaudapj5faviw3tb\u00e9",
        "aaaqeayeaudapj5f.viw3tb4",
    ],
)
def test_malformed_labels_are_not_recognised(label: str) -> None:
    assert Pseudonyms(KEY).recognise(label) is None


def test_network_key_and_nonce_lengths_are_checked() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Pseudonyms(bytes(31))
    with pytest.raises(ValueError, match="8 bytes"):
        Pseudonyms(KEY).for_nonce(bytes(7))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("aaaqeayeaudapj5faviw3tb4._http._tcp.local.", "aaaqeayeaudapj5faviw3tb4"),
        ("AAAQEAYEAUDAPJ5FAVIW3TB4._HTTP._tcp.local.", "AAAQEAYEAUDAPJ5FAVIW3TB4"),
        ("a.b._http._tcp.local.", None),
        ("._http._tcp.local.", None),
        ("x._ipp._tcp.local.", None),
        ("_http._tcp.local.", None),
    ],
)
def test_instance_label_of(name: str, expected: str | None) -> None:
    assert instance_label_of(name, DEFAULT_SERVICE_TYPE) == expected


def _discovery(**overrides: object) -> Discovery:
    arguments: dict[str, object] = {
        "network_key": KEY,
        "port": 7000,
        "interfaces": ["10.77.0.11"],
        "on_peer": lambda address: None,
    }
    arguments.update(overrides)
    return Discovery(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"interfaces": []}, "at least one interface"),
        ({"interfaces": ["0.0.0.0"]}, "unicast IPv4"),  # noqa: S104 - must be refused
        ({"interfaces": ["224.0.0.251"]}, "unicast IPv4"),
        ({"interfaces": ["fe80::1"]}, "unicast IPv4"),
        ({"interfaces": ["eth0"]}, "not an IP address"),
        ({"service_type": "_http._tcp.local"}, "service type"),
        ({"service_type": "_Http._tcp.local."}, "service type"),
        ({"service_type": "_averyveryverylongname._tcp.local."}, "service type"),
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"rotate_seconds": 0.5}, "rotate_seconds"),
        ({"rotate_seconds": float("nan")}, "rotate_seconds"),
        ({"network_key": b"short"}, "32 bytes"),
    ],
)
def test_discovery_refuses_unsafe_or_invalid_configuration(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _discovery(**overrides)


def test_discovery_configuration_is_accepted_without_touching_the_network() -> None:
    discovery = _discovery(interfaces=["10.77.0.11", "127.0.0.1"], service_type="_ipp._tcp.local.")
    assert discovery.peers == frozenset()
    assert PeerAddress("10.77.0.11", 7000) == PeerAddress("10.77.0.11", 7000)


def test_default_service_type_is_neutral() -> None:
    assert "fieldsync" not in DEFAULT_SERVICE_TYPE
    assert DEFAULT_SERVICE_TYPE == "_http._tcp.local."


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_own_names_are_recognised_as_long_as_any_cache_may_hold_them() -> None:
    """At the shortest rotation config allows (3 s), every name withdrawn in the last
    120 s (the records' TTL) is still ours; eight remembered names covered only 24 s."""
    assert OWN_NAME_MEMORY_SECONDS >= 120
    clock = FakeClock()
    own = OwnNames(clock=clock)
    labels = [pseudonym.instance_label for pseudonym in rotations(count=60)]
    for previous, label in zip([None, *labels], labels, strict=False):
        own.add(label)
        if previous is not None:
            own.withdraw(previous)
        clock.now += 3.0
    # 60 rotations = 180 s: the last 40 names were withdrawn at most 120 s ago.
    assert all(label in own for label in labels[-41:])
    assert all(label.upper() in own for label in labels[-41:])  # DNS is case-insensitive
    clock.now += OWN_NAME_MEMORY_SECONDS + 3.0
    assert labels[-1] in own  # still announced
    assert not any(label in own for label in labels[:-1])
    own.add(labels[0])  # adding sweeps what is forgotten: memory stays bounded
    assert len(own) == 2


def test_discovery_ignores_its_own_names_long_after_rotating() -> None:
    clock = FakeClock()
    own = OwnNames(clock=clock)
    discovery = _discovery(own_names=own)
    names = rotations(count=30)
    for previous, pseudonym in zip([None, *names], names, strict=False):
        own.add(pseudonym.instance_label)
        if previous is not None:
            own.withdraw(previous.instance_label)
        clock.now += 3.0
    # The first name's records come back from a cache 87 s after it was withdrawn: it is
    # ours, so it is neither resolved nor reported (resolving would need a running loop).
    oldest = names[0].instance_name(DEFAULT_SERVICE_TYPE)
    discovery._on_state_change(None, DEFAULT_SERVICE_TYPE, oldest, ServiceStateChange.Added)  # type: ignore[arg-type]
    assert discovery.peers == frozenset()
