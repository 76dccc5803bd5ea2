"""The versioned node home files (SPEC.md §15): node.secret and membership.bin.

Written as format 1; format 0 files (before the version existed) still read; a newer version,
a file of another type and damage are refused with a message that says which.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldsync import homefiles
from fieldsync.errors import InputRefused
from fieldsync.node import MEMBERSHIP, NODE_SECRET, Node
from fieldsync_protocol import codec, crypto
from tests.fieldsync.offline_support import Net, add_reports, export, import_

#: The examples of SPEC.md §15.1 and §15.2, byte for byte.
NODE_SECRET_EXAMPLE = bytes.fromhex(
    "83a46e6f6465c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "a174ab6e6f64652d736563726574a17601"
)
MEMBERSHIP_EXAMPLE = bytes.fromhex(
    "85a463657274c40143a46b6e6574c420"
    + "00" * 32
    + "a36d616ec4014da174aa6d656d62657273686970a17601"
)


def test_the_spec_examples() -> None:
    assert homefiles.encode_node_secret(bytes(range(32))) == NODE_SECRET_EXAMPLE
    example = homefiles.MembershipFile(manifest_item=b"M", network_key=bytes(32), certificate=b"C")
    assert homefiles.encode_membership(example) == MEMBERSHIP_EXAMPLE
    assert homefiles.decode_membership(MEMBERSHIP_EXAMPLE, Path("m")) == example
    assert homefiles.decode_node_secret(NODE_SECRET_EXAMPLE, Path("n")) == bytes(range(32))


def test_a_joined_node_writes_format_1(net: Net) -> None:
    secret = codec.decode((net.a / NODE_SECRET).read_bytes())
    assert isinstance(secret, dict) and secret["t"] == "node-secret" and secret["v"] == 1
    member = codec.decode((net.a / MEMBERSHIP).read_bytes())
    assert isinstance(member, dict) and member["t"] == "membership" and member["v"] == 1
    assert set(member) == {"cert", "knet", "man", "t", "v"}


def _to_format_0(home: Path) -> bytes:
    """Rewrite ``home``'s files as fieldsync wrote them before format versions; the node key."""
    key = homefiles.decode_node_secret((home / NODE_SECRET).read_bytes(), home / NODE_SECRET)
    member = codec.decode((home / MEMBERSHIP).read_bytes())
    assert isinstance(member, dict)
    (home / NODE_SECRET).write_bytes(key)
    (home / MEMBERSHIP).write_bytes(codec.encode({k: member[k] for k in ("cert", "knet", "man")}))
    return key


def test_a_format_0_home_still_works(net: Net) -> None:
    key = _to_format_0(net.b)
    node = Node(net.b)
    try:
        assert node.node_secret() == key
        member = node.membership()
        assert member.certificate_info.node_key == crypto.box_public_key(key)
    finally:
        node.close()
    # The old relay still takes a courier's bundle (which needs its membership).
    add_reports(net.a, ["one"])
    assert export(net.a, net.usb / "a.bundle") >= 1
    assert import_(net.b, net.usb / "a.bundle").new >= 1


@pytest.mark.parametrize("name", [NODE_SECRET, MEMBERSHIP])
def test_a_newer_format_is_refused_naming_the_version(net: Net, name: str) -> None:
    path = net.a / name
    fields = codec.decode(path.read_bytes())
    assert isinstance(fields, dict)
    path.write_bytes(codec.encode({**fields, "v": 2}))
    node = Node(net.a)
    try:
        with pytest.raises(InputRefused, match=r"format version 2.*upgrade fieldsync"):
            node.node_secret() if name == NODE_SECRET else node.membership()
    finally:
        node.close()


def test_a_file_of_another_type_is_refused_by_name(net: Net) -> None:
    (net.a / NODE_SECRET).write_bytes((net.a / MEMBERSHIP).read_bytes())
    with pytest.raises(InputRefused, match="is a 'membership' file, not a node key"):
        Node(net.a).node_secret()


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"node": bytes(32), "v": 1}, "lacks field"),  # v without t
        ({"node": bytes(32), "t": "node-secret"}, "lacks field"),  # t without v
        ({"node": bytes(31), "t": "node-secret", "v": 1}, "must be 32 bytes"),
        ({"node": bytes(32), "t": "node-secret", "v": True}, "v"),
        ({"node": bytes(32), "t": "node-secret", "v": 1, "x": 0}, "unknown field"),
        ({"key": bytes(32)}, "lacks field"),
    ],
)
def test_damaged_node_secret_is_refused(
    tmp_path: Path, fields: dict[str, object], phrase: str
) -> None:
    path = tmp_path / NODE_SECRET
    with pytest.raises(InputRefused, match=f"node key {path} is damaged.*{phrase}"):
        homefiles.decode_node_secret(codec.encode(fields), path)


def test_damaged_membership_is_refused(tmp_path: Path) -> None:
    path = tmp_path / MEMBERSHIP
    short_key = {"cert": b"C", "knet": bytes(16), "man": b"M", "t": "membership", "v": 1}
    for data, phrase in (
        (codec.encode(short_key), "knet must be 32 bytes"),
        (b"\x93garbage", "damaged"),
        (bytes(33), "damaged"),
        (codec.encode([b"C", bytes(32), b"M"]), "must be a map"),
    ):
        with pytest.raises(InputRefused, match=phrase):
            homefiles.decode_membership(data, path)
    with pytest.raises(ValueError, match="32 bytes"):
        homefiles.encode_node_secret(bytes(31))
