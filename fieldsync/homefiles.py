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
class NextNetworkKey:
    """A network key HQ rotates to (SPEC.md §17.5), accepted next to the current one until
    the store's running clock reaches ``switch_at``; then it replaces it."""

    key_id: int
    key: bytes
    switch_at: int


@dataclass(frozen=True)
class MembershipFile:
    """``membership.secret`` as read from disk: what joining the network gave this node."""

    manifest_item: bytes
    network_key: bytes
    certificate: bytes
    #: Id of ``network_key`` (0: the key of the enrolment).
    network_key_id: int = 0
    next_key: NextNetworkKey | None = None
    #: Serial of the last key delivery adopted (0: none).
    delivery_serial: int = 0


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
    fields: dict[str, codec.Value] = {
        "cert": membership.certificate,
        "knet": membership.network_key,
        "man": membership.manifest_item,
        "t": MEMBERSHIP_TYPE,
        "v": FORMAT_VERSION,
    }
    # Written only once a key delivery set them (SPEC.md §15.2, §17.5).
    if membership.network_key_id:
        fields["kid"] = membership.network_key_id
    if membership.delivery_serial:
        fields["dq"] = membership.delivery_serial
    if membership.next_key is not None:
        fields["knext"] = {
            "at": membership.next_key.switch_at,
            "id": membership.next_key.key_id,
            "key": membership.next_key.key,
        }
    return codec.encode(fields)


def decode_membership(data: bytes, path: Path) -> MembershipFile:
    """The membership file's fields, not yet verified (the caller opens the manifest and
    certificate against each other)."""
    what = "membership file"
    fields = _versioned_map(
        data, path, what, MEMBERSHIP_TYPE, {"cert", "knet", "man"}, {"dq", "kid", "knext"}
    )
    try:
        next_key = None
        if "knext" in fields:
            entry = codec.as_map(fields["knext"], f"{what}.knext", {"at", "id", "key"})
            next_key = NextNetworkKey(
                key_id=codec.get_int(entry, "id", f"{what}.knext", 0, 2**32 - 1),
                key=codec.get_bytes(entry, "key", f"{what}.knext", KEY_SIZE),
                switch_at=codec.get_int(entry, "at", f"{what}.knext"),
            )
        return MembershipFile(
            manifest_item=codec.get_bytes(fields, "man", what),
            network_key=codec.get_bytes(fields, "knet", what, KEY_SIZE),
            certificate=codec.get_bytes(fields, "cert", what),
            network_key_id=codec.get_int(fields, "kid", what, 0, 2**32 - 1)
            if "kid" in fields
            else 0,
            next_key=next_key,
            delivery_serial=codec.get_int(fields, "dq", what, 0, 2**32 - 1)
            if "dq" in fields
            else 0,
        )
    except RemoteProtocolError as exc:
        raise _damaged(path, "membership file", exc) from exc


def _versioned_map(
    data: bytes,
    path: Path,
    what: str,
    file_type: str,
    fields: set[str],
    optional: set[str] | None = None,
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
        return codec.as_map(value, what, fields | {"t", "v"}, optional)
    except RemoteProtocolError as exc:
        raise _damaged(path, what, exc) from exc


def _require_map(value: codec.Value, what: str) -> dict[str, codec.Value]:
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"{what} must be a map")
    return value


def _damaged(path: Path, what: str, exc: RemoteProtocolError) -> InputRefused:
    return InputRefused(f"{what} {path} is damaged ({exc}); restore it from a backup")
