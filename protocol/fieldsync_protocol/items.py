"""Items: the units a node stores and syncs (SPEC.md §10).

An item is a canonical msgpack map with ``"t"`` (kind) and ``"v"`` (version). Its id is the
BLAKE2b-256 of its bytes. ``parse_item`` checks everything a holder can check without HQ's
secrets; signatures of receipts, manifests and forms are checked by ``check_item``.

A kind this version does not know parses as ``OPAQUE``: relays carry it unchanged within the
size cap (field devices upgrade at different times), while HQ refuses what it cannot verify.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from fieldsync_protocol import codec
from fieldsync_protocol.attachment import parse_chunk
from fieldsync_protocol.crypto import content_id, delivery_tag
from fieldsync_protocol.envelope import TTL_CLASSES, OuterEnvelope, parse_outer
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.form import Form, open_form
from fieldsync_protocol.keydelivery import parse_delivery

# ItemKind is re-exported: it lives apart so the store can name kinds without the parsers.
from fieldsync_protocol.kinds import ItemKind as ItemKind
from fieldsync_protocol.membership import VERSION, Manifest, is_version, open_manifest

# MAX_ITEM is re-exported: callers import it from here.
from fieldsync_protocol.padding import MAX_ITEM as MAX_ITEM
from fieldsync_protocol.padding import SIZE_CLASSES
from fieldsync_protocol.receipt import Receipt, open_receipt
from fieldsync_protocol.revocation import MAX_REVOCATION_ITEM, RevocationList, open_revocation

#: Longest kind string of an item this version does not know.
MAX_KIND = 16


_KNOWN = {kind.value: kind for kind in ItemKind if kind is not ItemKind.OPAQUE}

_R = TypeVar("_R")
_T = TypeVar("_T")
_new_object = object.__new__


def _frozen(cls: type[_T], values: dict[str, Any]) -> _T:
    """An instance of the frozen dataclass ``cls`` holding ``values`` (the fields left out
    read their defaults from the class), made without the generated ``__init__``, which sets
    every field through ``object.__setattr__``: ~0.8 us for ``Checked``'s seven, ~0.2 us so.
    The envelope path below makes three instances per item received (perf S1: ~1.2 us of a
    relay's ~20 us per item). Only for classes without ``__post_init__`` whose defaults are
    plain values: a test holds each class built here to its own constructor."""
    instance = _new_object(cls)
    instance.__dict__.update(values)
    return instance


class _ComputedOnce(Generic[_R]):
    """``functools.cached_property`` without its lock: Python 3.11 takes one on every first
    read, which cost a relay ~0.5 us per hash of every item received (perf S1; 3.12 dropped
    the lock). Two threads reading at once would both compute the same value: harmless."""

    def __init__(self, func: Callable[[Any], _R]) -> None:
        self._func = func
        self._name = func.__name__

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _ComputedOnce[_R]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _R: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> _ComputedOnce[_R] | _R:
        if obj is None:
            return self
        # Not a data descriptor: once in the instance's __dict__, reads go straight there.
        value = obj.__dict__[self._name] = self._func(obj)
        return value


@dataclass(frozen=True)
class Item:
    kind: ItemKind
    data: bytes
    fields: dict[str, Any]
    #: The parsed outer layer, for envelopes (parsed once, here).
    envelope: OuterEnvelope | None = None

    @_ComputedOnce  # hashed once per item: the store and the index both need it
    def id(self) -> bytes:
        return content_id(self.data)

    @_ComputedOnce
    def tag(self) -> bytes:
        return delivery_tag(self.data)


#: An envelope item's canonical bytes (SPEC.md §8.2) around its ciphertext, the fields in
#: key order: a map of 5, ``"c"`` and the ciphertext as bin16 or bin32 (every size class is
#: 256 bytes or more), then ``"k"``, ``"l"``, ``"t": "e"`` and ``"v"``.
_ENVELOPE_HEAD = b"\x85\xa1c"
_ENVELOPE_TAIL_SIZE = 13  # a1 6b K  a1 6c L  a1 74 a1 65 a1 76 V, each number a fixint
_BIN16, _BIN32 = 0xC5, 0xC6
_FIXINT_MAX = 0x7F
_SIZE_CLASSES = frozenset(SIZE_CLASSES)


def _canonical_envelope(data: bytes) -> Item | None:
    """An envelope in the layout every sender writes (one-byte key id, TTL class and
    version), parsed without the general decoder: the relay's per-item hot path (perf S1),
    which spends most of ``check_item`` decoding, walking and re-encoding each item to
    prove it canonical. Bytes in that layout are canonical by construction (keys in order,
    each value in its shortest form). None for anything else, left to the general path; for
    what it does parse, the same ``Item`` or error as the general path (a property test
    holds the two together)."""
    if len(data) > MAX_ITEM or not data.startswith(_ENVELOPE_HEAD):
        return None
    marker = data[3]
    if marker == _BIN16:
        size, start = int.from_bytes(data[4:6], "big"), 6
        if size < 0x100:
            return None  # bin8's range: not the shortest form
    elif marker == _BIN32:
        size, start = int.from_bytes(data[4:8], "big"), 8
        if size < 0x10000:
            return None
    else:
        return None
    end = start + size
    tail = data[end:]
    if (
        len(tail) != _ENVELOPE_TAIL_SIZE
        or tail[:2] != b"\xa1k"
        or tail[3:5] != b"\xa1l"
        or tail[6:12] != b"\xa1t\xa1e\xa1v"
    ):
        return None
    key_id, ttl_class, version = tail[2], tail[5], tail[12]
    if max(key_id, ttl_class, version) > _FIXINT_MAX or not is_version(version):
        return None
    ciphertext = data[start:end]
    fields = {"c": ciphertext, "k": key_id, "l": ttl_class, "t": "e", "v": version}
    if size in _SIZE_CLASSES and ttl_class in TTL_CLASSES:
        # All ``parse_outer`` checks, the key id's included (a fixint is within its range).
        outer = _frozen(
            OuterEnvelope, {"hq_key_id": key_id, "ttl_class": ttl_class, "ciphertext": ciphertext}
        )
    else:
        outer = parse_outer(fields)  # raises what the general path raises
    return _frozen(
        Item, {"kind": ItemKind.ENVELOPE, "data": data, "fields": fields, "envelope": outer}
    )


def parse_item(data: bytes) -> Item:
    """Structural check of untrusted item bytes; raises only ``RemoteProtocolError``."""
    envelope = _canonical_envelope(data)
    return envelope if envelope is not None else _parse_decoded(data)


def _parse_decoded(data: bytes) -> Item:
    """``parse_item`` for any item: decoded and checked canonical by ``codec.decode``."""
    fields = codec.decode(data, max_size=MAX_ITEM, what="item")
    if not isinstance(fields, dict):
        raise RemoteProtocolError("item must be a map")
    kind_text = fields.get("t")
    if not isinstance(kind_text, str) or not 1 <= len(kind_text) <= MAX_KIND:
        raise RemoteProtocolError(f"item type must be text of 1..{MAX_KIND} characters")
    kind = _KNOWN.get(kind_text, ItemKind.OPAQUE)
    if kind is ItemKind.OPAQUE:
        # A newer kind: carried as it is; its version is its own business.
        codec.get_int(codec.as_map(fields, "item", {"t", "v"}, set(fields)), "v", "item")
        return Item(kind, data, fields)
    if not is_version(fields.get("v")):
        raise RemoteProtocolError(
            f"item has version {fields.get('v')!r:.20}; this software reads version {VERSION}"
        )
    if kind is ItemKind.ENVELOPE:
        return Item(kind, data, fields, parse_outer(fields))
    if kind is ItemKind.CHUNK:
        parse_chunk(fields)
        return Item(kind, data, fields)
    if kind is ItemKind.KEY_DELIVERY:
        parse_delivery(fields)  # only the node it is sealed to can open it
        return Item(kind, data, fields)
    if kind is ItemKind.REVOCATION and len(data) > MAX_REVOCATION_ITEM:
        raise RemoteProtocolError(
            f"revocation list of {len(data)} bytes is over the {MAX_REVOCATION_ITEM}-byte cap"
        )
    codec.as_map(fields, "item", {"b", "s", "t", "v"})
    codec.get_bytes(fields, "b", "item")
    codec.get_bytes(fields, "s", "item", 64)
    return Item(kind, data, fields)


@dataclass(frozen=True)
class Checked:
    """An item a member may store: its parsed meaning, when it has one."""

    item: Item
    envelope: OuterEnvelope | None = None
    receipt: Receipt | None = None
    manifest: Manifest | None = None
    revocation: RevocationList | None = None
    form: Form | None = None


def check_item(data: bytes, manifest: Manifest) -> Checked:
    """Everything a member checks before storing an item: structure and HQ signatures."""
    return check_parsed(parse_item(data), manifest)


def check_parsed(item: Item, manifest: Manifest) -> Checked:
    """``check_item`` of an item ``parse_item`` already made: the checks that need the
    manifest (HQ's signatures), the rest having been done without it."""
    if item.kind is ItemKind.ENVELOPE:
        # An unknown HQ key id is not refused: it may come from a newer manifest that has
        # not reached this node yet, and relays must never block delivery.
        return _frozen(Checked, {"item": item, "envelope": item.envelope})
    if item.kind in (ItemKind.CHUNK, ItemKind.OPAQUE, ItemKind.KEY_DELIVERY):
        # Only HQ can open a chunk, only its recipient a key delivery (§17.5), and nobody
        # here can verify a kind it does not know: all are carried unchanged (SPEC.md §10).
        return _frozen(Checked, {"item": item})
    if item.kind is ItemKind.RECEIPT:
        return Checked(item, receipt=open_receipt(item.fields, manifest))
    if item.kind is ItemKind.REVOCATION:
        return Checked(item, revocation=open_revocation(item.fields, manifest))
    if item.kind is ItemKind.FORM:
        return Checked(item, form=open_form(item.data, manifest))
    update = open_manifest(item.data, trusted_root=manifest.root_key)
    if update.network_id != manifest.network_id:
        raise RemoteProtocolError("manifest update belongs to another network")
    return Checked(item, manifest=update)
