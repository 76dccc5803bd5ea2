"""The versioned files of a node home: ``node.secret`` and ``membership.bin`` (SPEC.md §15).

Both are canonical msgpack maps naming their type (``"t"``) and format version (``"v": 1``),
so a file of another kind or from a newer fieldsync is refused by name instead of being
misread. Files written before the version existed (format 0: the bare 32-byte node key; the
membership map without ``t`` and ``v``) are still read.

Neither file is encrypted: a relay must start unattended, so nothing could unlock them. The
directory is 0700 and the files 0600; a seized node yields its node key and ``K_net``, and HQ
revokes the node (SPEC.md §15).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fieldsync.errors import InputRefused
from fieldsync_protocol import codec
from fieldsync_protocol.errors import RemoteProtocolError

#: The format version these functions write, and the newest they read.
FORMAT_VERSION = 1
NODE_SECRET_TYPE = "node-secret"  # noqa: S105 - a file type name
MEMBERSHIP_TYPE = "membership"
KEY_SIZE = 32
#: Both files are small; anything larger is not one of them.
MAX_HOME_FILE = 64 * 1024


@dataclass(frozen=True)
class MembershipFile:
    manifest_item: bytes
    network_key: bytes
    certificate: bytes


def encode_node_secret(key: bytes) -> bytes:
    if len(key) != KEY_SIZE:
        raise ValueError(f"a node key is {KEY_SIZE} bytes, not {len(key)}")
    return codec.encode({"node": key, "t": NODE_SECRET_TYPE, "v": FORMAT_VERSION})


def decode_node_secret(data: bytes, path: Path) -> bytes:
    """The node's X25519 secret from the bytes of ``path`` (format 1, or the bare format 0)."""
    if len(data) == KEY_SIZE:  # format 0: the key itself (a format 1 file is longer)
        return data
    fields = _versioned_map(data, path, "node key", NODE_SECRET_TYPE, {"node"})
    try:
        return codec.get_bytes(fields, "node", "node key", KEY_SIZE)
    except RemoteProtocolError as exc:
        raise _damaged(path, "node key", exc) from exc


def encode_membership(membership: MembershipFile) -> bytes:
    return codec.encode(
        {
            "cert": membership.certificate,
            "knet": membership.network_key,
            "man": membership.manifest_item,
            "t": MEMBERSHIP_TYPE,
            "v": FORMAT_VERSION,
        }
    )


def decode_membership(data: bytes, path: Path) -> MembershipFile:
    """The membership file's fields, not yet verified (the caller opens the manifest and
    certificate against each other)."""
    fields = _versioned_map(data, path, "membership file", MEMBERSHIP_TYPE, {"cert", "knet", "man"})
    try:
        return MembershipFile(
            manifest_item=codec.get_bytes(fields, "man", "membership file"),
            network_key=codec.get_bytes(fields, "knet", "membership file", KEY_SIZE),
            certificate=codec.get_bytes(fields, "cert", "membership file"),
        )
    except RemoteProtocolError as exc:
        raise _damaged(path, "membership file", exc) from exc


def _versioned_map(
    data: bytes, path: Path, what: str, file_type: str, fields: set[str]
) -> dict[str, codec.Value]:
    """Decode a home file: format 1 (with ``t`` and ``v``) or format 0 (neither). The type and
    version are checked first, so another file or a newer format is refused by name."""
    try:
        value = _require_map(codec.decode(data, max_size=MAX_HOME_FILE, what=what), what)
        if "t" not in value and "v" not in value:
            return codec.as_map(value, what, fields)  # format 0
        header = codec.as_map({k: value[k] for k in ("t", "v") if k in value}, what, {"t", "v"})
        file_kind = codec.get_str(header, "t", what, 64)
        version = codec.get_int(header, "v", what)
    except RemoteProtocolError as exc:
        raise _damaged(path, what, exc) from exc
    if file_kind != file_type:
        raise InputRefused(f"{path} is a {file_kind!r} file, not a {what} ({file_type!r})")
    if version != FORMAT_VERSION:
        raise InputRefused(
            f"{what} {path} has format version {version}; this fieldsync reads versions 0 to"
            f" {FORMAT_VERSION}: upgrade fieldsync to use this node"
        )
    try:
        return codec.as_map(value, what, fields | {"t", "v"})
    except RemoteProtocolError as exc:
        raise _damaged(path, what, exc) from exc


def _require_map(value: codec.Value, what: str) -> dict[str, codec.Value]:
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"{what} must be a map")
    return value


def _damaged(path: Path, what: str, exc: RemoteProtocolError) -> InputRefused:
    return InputRefused(f"{what} {path} is damaged ({exc}); restore it from a backup")
