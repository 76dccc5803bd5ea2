"""Bad bundle input: every malformed, forged or foreign file is refused with a clear message,
in bounded time and memory, and the store is exactly as it was (SPEC.md §11; issue 2 "Bad
input"). The same refusals through the real CLI give exit code 3 (4 for a missing file),
``fieldsync: error: ...`` on stderr and, with ``--json``, a JSON error object on stdout.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, replace
from pathlib import Path

import msgpack
import pytest

from fieldsync.errors import FieldsyncError, InputRefused, NotFound
from fieldsync.node import Node
from fieldsync_protocol import codec
from fieldsync_protocol.bundle import CHUNK_SIZE, FILE_NONCE_SIZE, SEALED_CHUNK, BundleWriter
from fieldsync_protocol.envelope import SIZE_CLASSES
from fieldsync_protocol.items import MAX_ITEM
from tests.fieldsync.offline_support import (
    PASSPHRASE,
    Net,
    author_seed,
    copy_network,
    export,
    header_record,
    hq_manifest,
    import_,
    network_key,
    raw_bundle,
    seal,
    snapshot,
    write_bundle,
)

#: Generous wall-clock guard per refusal; the real bound is that work stops at the bad byte.
TIME_LIMIT = 2.0
MiB = 1024 * 1024


@dataclass(frozen=True)
class Loaded:
    """Relay B holding A's reports, and a valid multi-chunk bundle to damage."""

    net: Net
    home: Path
    good: Path  # a valid bundle of 200 fresh envelopes, four chunks long
    good_items: list[bytes]
    key: bytes
    network_id: bytes

    def bundle(self, name: str, data: bytes) -> Path:
        path = self.net.usb / name
        path.write_bytes(data)
        return path


@pytest.fixture(scope="session")
def loaded_base(base_net: Net, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    """Built once: A wrote two reports, B imported them; 200 more envelopes in a bundle."""
    net = copy_network(base_net, tmp_path_factory.mktemp("bundle-input") / "net")
    node = Node(net.a)
    try:
        for text in ("first report", "second report"):
            node.add_report(
                {
                    "narrative": text,
                    "categories": ["threats"],
                    "occurred": {"start": "2025-03", "precision": "month", "approximate": True},
                },
                PASSPHRASE,
            )
    finally:
        node.close()
    export(net.a, net.usb / "a.bundle")
    import_(net.b, net.usb / "a.bundle")
    manifest = hq_manifest(net)
    seed = author_seed(net)
    items = [seal(manifest, seed, 100 + i, f"bulk report {i}").item for i in range(200)]
    good = net.usb / "good.bundle"
    write_bundle(net, good, items)
    assert good.stat().st_size > 3 * SEALED_CHUNK
    return Loaded(net, net.b, good, items, network_key(net), manifest.network_id)


@pytest.fixture
def loaded(loaded_base: Loaded, tmp_path: Path) -> Loaded:
    net = copy_network(loaded_base.net, tmp_path / "net")
    return replace(loaded_base, net=net, home=net.b, good=net.usb / loaded_base.good.name)


def refuse(
    loaded: Loaded,
    path: Path,
    error: type[FieldsyncError],
    *phrases: str,
    max_peak: int | None = None,
    time_limit: float = TIME_LIMIT,
) -> FieldsyncError:
    """Import ``path`` into B: refused with ``error`` naming ``phrases``, quickly, store unchanged.

    With ``max_peak``, Python's peak traced memory during the import must stay below it.
    """
    before = snapshot(loaded.home)
    node = Node(loaded.home)
    node.store()  # opening the database is not part of reading the input
    if max_peak is not None:
        tracemalloc.start()
    peak = 0
    started = time.monotonic()
    try:
        with pytest.raises(error) as caught:
            node.import_bundle(path)
    finally:
        elapsed = time.monotonic() - started
        if max_peak is not None:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        node.close()
    if max_peak is not None:
        assert peak < max_peak, f"peak traced memory {peak / MiB:.1f} MiB"
    message = str(caught.value)
    assert str(path) in message, "the message names the file"
    message = message.replace(str(path), "<file>")
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"
    assert elapsed < time_limit, f"refusal took {elapsed:.2f} s"
    after = snapshot(loaded.home)
    assert after == before
    assert after["integrity"] == "ok"
    return caught.value


# --- the valid bundle really is valid ------------------------------------------------------


def test_the_undamaged_bundle_imports(loaded: Loaded) -> None:
    counts = import_(loaded.home, loaded.good)
    assert counts.new == 200


# --- truncated ----------------------------------------------------------------------------


def _cut_points(size: int) -> dict[str, int]:
    start = FILE_NONCE_SIZE
    return {
        "inside the file nonce": 7,
        "right after the file nonce": start,
        "mid first chunk": start + 1000,
        "one byte short of the first chunk": start + SEALED_CHUNK - 1,
        "first chunk boundary": start + SEALED_CHUNK,
        "one byte into the second chunk": start + SEALED_CHUNK + 1,
        "second chunk boundary": start + 2 * SEALED_CHUNK,
        "mid third chunk": start + 2 * SEALED_CHUNK + SEALED_CHUNK // 2,
        "boundary before the final chunk": size - SEALED_CHUNK,
        "mid final chunk": size - SEALED_CHUNK // 2,
        "last byte missing": size - 1,
    }


def test_truncated_bundles_are_refused_at_every_kind_of_cut(loaded: Loaded) -> None:
    data = loaded.good.read_bytes()
    points = _cut_points(len(data))
    assert len(set(points.values())) == len(points)
    for where, cut in points.items():
        path = loaded.bundle(f"cut-{cut}.bundle", data[:cut])
        error = refuse(loaded, path, InputRefused, "truncated", "nothing imported")
        assert "copy it again" in str(error), where


def test_empty_file_is_refused_as_empty(loaded: Loaded) -> None:
    refuse(loaded, loaded.bundle("zero-bytes.bundle", b""), InputRefused, "empty")


def test_extra_bytes_after_the_final_chunk(loaded: Loaded) -> None:
    data = loaded.good.read_bytes()
    refuse(loaded, loaded.bundle("extra.bundle", data + b"\0"), InputRefused, "extra bytes")
    refuse(loaded, loaded.bundle("double.bundle", data + data), InputRefused, "extra bytes")


def test_reordered_and_damaged_chunks(loaded: Loaded) -> None:
    data = loaded.good.read_bytes()
    start = FILE_NONCE_SIZE
    one, two = (
        slice(start + SEALED_CHUNK, start + 2 * SEALED_CHUNK),
        slice(start + 2 * SEALED_CHUNK, start + 3 * SEALED_CHUNK),
    )
    swapped = bytearray(data)
    swapped[one], swapped[two] = data[two], data[one]
    refuse(
        loaded,
        loaded.bundle("swapped.bundle", bytes(swapped)),
        InputRefused,
        "chunk 1",
        "out of order",
    )
    flipped = bytearray(data)
    flipped[start + 2 * SEALED_CHUNK + 77] ^= 0x01
    refuse(
        loaded, loaded.bundle("flipped.bundle", bytes(flipped)), InputRefused, "chunk 2", "damaged"
    )
    dropped = data[: start + SEALED_CHUNK] + data[start + 2 * SEALED_CHUNK :]
    refuse(loaded, loaded.bundle("dropped.bundle", dropped), InputRefused, "chunk 1")


# --- structurally wrong content under a valid network key ----------------------------------


def _envelope_fields() -> list[tuple[str, object]]:
    return [
        ("c", secrets.token_bytes(SIZE_CLASSES[0])),
        ("k", 1),
        ("l", 3),
        ("t", "e"),
        ("v", 1),
    ]


def _pack_pairs(pairs: list[tuple[str, object]]) -> bytes:
    """A msgpack map written pair by pair (so keys may repeat)."""
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(
        msgpack.packb(k) + msgpack.packb(v, use_bin_type=True) for k, v in pairs
    )


def test_item_record_larger_than_max_item(loaded: Loaded) -> None:
    good = loaded.good_items[0]
    big = bytes(MAX_ITEM + 1)
    data = raw_bundle(loaded.key, [header_record(loaded.network_id), good, big])
    refuse(
        loaded,
        loaded.bundle("oversized.bundle", data),
        InputRefused,
        f"record of {MAX_ITEM + 1} bytes",
        f"exceeds the {MAX_ITEM} allowed",
    )


def test_record_length_claiming_four_gigabytes(loaded: Loaded) -> None:
    """Only the 4-byte length is there: refused before any buffer of that size exists."""
    header = header_record(loaded.network_id)
    stream_head = len(header).to_bytes(4, "big") + header + (2**32 - 1).to_bytes(4, "big")
    data = raw_bundle(loaded.key, [], end=False, tail=stream_head)
    refuse(loaded, loaded.bundle("huge-claim.bundle", data), InputRefused, f"{2**32 - 1} bytes")


def test_oversized_header_record(loaded: Loaded) -> None:
    data = raw_bundle(
        loaded.key, [codec.encode({"n": loaded.network_id, "pad": bytes(300), "v": 1})]
    )
    refuse(
        loaded, loaded.bundle("big-header.bundle", data), InputRefused, "exceeds the 256 allowed"
    )


def test_deeply_nested_items(loaded: Loaded) -> None:
    header = header_record(loaded.network_id)
    nested = (
        b"\x85\xa1c"
        + b"\x91" * 9
        + b"\xc0"
        + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in _envelope_fields()[1:])
    )
    refuse(
        loaded,
        loaded.bundle("nested.bundle", raw_bundle(loaded.key, [header, nested])),
        InputRefused,
        "item",
        "nests deeper than 8 levels",
    )
    very_deep = b"\x91" * 200_000 + b"\xc0"
    assert len(very_deep) < MAX_ITEM
    error = refuse(
        loaded,
        loaded.bundle("deeper.bundle", raw_bundle(loaded.key, [header, very_deep])),
        InputRefused,
        "item ",
    )
    assert "nests deeper" in str(error) or "not valid msgpack" in str(error)


def test_duplicate_key_item(loaded: Loaded) -> None:
    pairs = _envelope_fields()
    duplicated = _pack_pairs([*pairs[:2], ("k", 2), *pairs[2:]])
    assert msgpack.unpackb(duplicated)["k"] == 2  # a lenient decoder would take it
    data = raw_bundle(
        loaded.key, [header_record(loaded.network_id), loaded.good_items[0], duplicated]
    )
    refuse(loaded, loaded.bundle("dupkey.bundle", data), InputRefused, "not canonical", "duplicate")


def test_unsorted_keys_item(loaded: Loaded) -> None:
    pairs = _envelope_fields()
    unsorted = _pack_pairs(list(reversed(pairs)))
    data = raw_bundle(loaded.key, [header_record(loaded.network_id), unsorted])
    refuse(loaded, loaded.bundle("unsorted.bundle", data), InputRefused, "not canonical")


def test_wrong_version_item(loaded: Loaded) -> None:
    fields = dict(_envelope_fields())
    fields["v"] = 2
    data = raw_bundle(loaded.key, [header_record(loaded.network_id), codec.encode(fields)])
    refuse(
        loaded, loaded.bundle("v2-item.bundle", data), InputRefused, "version 2", "reads version 1"
    )


def test_wrong_version_bundle_header(loaded: Loaded) -> None:
    data = raw_bundle(
        loaded.key, [header_record(loaded.network_id, version=2), loaded.good_items[0]]
    )
    refuse(loaded, loaded.bundle("v2.bundle", data), InputRefused, "version 2", "upgrade fieldsync")


def test_header_naming_another_network_id(loaded: Loaded) -> None:
    data = raw_bundle(loaded.key, [header_record(bytes(16)), loaded.good_items[0]])
    refuse(loaded, loaded.bundle("other-id.bundle", data), InputRefused, "another network")


def test_header_that_is_not_a_map(loaded: Loaded) -> None:
    data = raw_bundle(loaded.key, [codec.encode([1, 2])])
    refuse(loaded, loaded.bundle("list-header.bundle", data), InputRefused, "bundle header")


@pytest.mark.parametrize(
    ("item", "phrase"),
    [
        (codec.encode({"t": 5, "v": 1}), "item type must be text"),
        (codec.encode([1, 2, 3]), "must be a map"),
        (b"\xc1", "not valid msgpack"),
        (codec.encode({"c": bytes(1000), "k": 1, "l": 3, "t": "e", "v": 1}), "not a size class"),
        (codec.encode({"c": bytes(512), "k": 1, "l": 9, "t": "e", "v": 1}), "envelope.l"),
        (
            codec.encode({"c": bytes(512), "k": 1, "l": 3, "t": "e", "v": 1, "x": 0}),
            "unknown field",
        ),
        (codec.encode({"b": b"x", "s": bytes(64), "t": "r", "v": 1}), "receipt"),
        (codec.encode({"b": b"x", "s": bytes(64), "t": "m", "v": 1}), "manifest"),
    ],
    ids=[
        "non-text-kind",
        "not-a-map",
        "bad-msgpack",
        "odd-size",
        "bad-ttl",
        "extra-field",
        "unsigned-receipt",
        "unsigned-manifest",
    ],
)
def test_malformed_items_after_good_ones_refuse_the_whole_bundle(
    loaded: Loaded, item: bytes, phrase: str
) -> None:
    records = [header_record(loaded.network_id), *loaded.good_items[:50], item]
    data = raw_bundle(loaded.key, records)
    refuse(loaded, loaded.bundle("bad-item.bundle", data), InputRefused, phrase, "nothing imported")


def test_end_marker_problems(loaded: Loaded) -> None:
    header = header_record(loaded.network_id)
    item = loaded.good_items[0]
    early = raw_bundle(loaded.key, [header, item], tail=bytes(CHUNK_SIZE + 100))
    refuse(
        loaded, loaded.bundle("early-end.bundle", early), InputRefused, "end in different places"
    )
    filler = bytes(CHUNK_SIZE - 4 - len(header) - 4)  # the stream fills one chunk exactly
    no_end = raw_bundle(loaded.key, [header, filler], end=False)
    assert len(no_end) == FILE_NONCE_SIZE + SEALED_CHUNK
    refuse(loaded, loaded.bundle("no-end.bundle", no_end), InputRefused, "end in different places")
    after_end = raw_bundle(loaded.key, [header, item], tail=b"\0\0\0\x05hello")
    refuse(
        loaded, loaded.bundle("after-end.bundle", after_end), InputRefused, "after its end marker"
    )


# --- not a bundle of this network at all --------------------------------------------------


def test_random_bytes(loaded: Loaded) -> None:
    for size in (1, 15, 16, 17, 1000, SEALED_CHUNK + FILE_NONCE_SIZE, 300_000):
        path = loaded.bundle(f"random-{size}.bin", secrets.token_bytes(size))
        phrase = (
            "not a bundle of this network"
            if size >= SEALED_CHUNK + FILE_NONCE_SIZE
            else "truncated"
        )
        refuse(loaded, path, InputRefused, phrase)


def test_bundle_of_another_network(loaded: Loaded) -> None:
    writer = BundleWriter(secrets.token_bytes(32), secrets.token_bytes(16), secrets.token_bytes(16))
    data = writer.add(loaded.good_items[0]) + writer.finish()
    refuse(
        loaded, loaded.bundle("foreign.bundle", data), InputRefused, "not a bundle of this network"
    )


def test_directory_and_missing_file(loaded: Loaded) -> None:
    refuse(loaded, loaded.net.usb, NotFound, "is a directory")
    refuse(loaded, loaded.net.usb / "nope.bundle", NotFound, "does not exist")


# --- bounded memory -----------------------------------------------------------------------


def _sparse_random_file(path: Path, size: int) -> Path:
    """``size`` bytes: 1 MiB of random data, then a sparse (zero) tail. Quick to make."""
    with open(path, "wb") as handle:
        handle.write(secrets.token_bytes(MiB))
        handle.truncate(size)
    return path


def test_hundred_megabyte_random_file_in_bounded_memory(loaded: Loaded) -> None:
    path = _sparse_random_file(loaded.net.usb / "random-100m.bin", 100 * MiB)
    refuse(loaded, path, InputRefused, "not a bundle of this network", max_peak=8 * MiB)


def test_long_valid_stream_truncated_at_the_very_end_in_bounded_memory(loaded: Loaded) -> None:
    """16 MiB of valid (repeated) items, all read and staged, then refused at the very end."""
    item = loaded.good_items[0]
    writer = BundleWriter(loaded.key, loaded.network_id, secrets.token_bytes(16))
    path = loaded.net.usb / "long.bundle"
    with open(path, "wb") as out:
        for _ in range(16 * MiB // len(item)):
            out.write(writer.add(item))
        out.write(writer.finish()[:-1])
    # Time grows with the input here (every item is checked); tracemalloc slows it down too.
    refuse(loaded, path, InputRefused, "truncated", max_peak=8 * MiB, time_limit=30)


# --- the same refusals through the real command line --------------------------------------


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "fieldsync_cli", "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _max_rss_kib(home: Path, *args: str) -> int:
    """Peak resident memory of one real CLI run (from wait4's rusage of that child only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fieldsync_cli", "--home", str(home), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped by wait4; keep Popen from waiting again
    return int(usage.ru_maxrss)


def test_cli_refusals_exit_3_with_a_message_and_json(loaded: Loaded) -> None:
    data = loaded.good.read_bytes()
    cases = {
        "truncated": (loaded.bundle("cli-cut.bundle", data[: len(data) // 2]), "truncated"),
        "random": (loaded.bundle("cli-random.bin", secrets.token_bytes(200_000)), "not a bundle"),
        "v2": (
            loaded.bundle(
                "cli-v2.bundle",
                raw_bundle(loaded.key, [header_record(loaded.network_id, version=2)]),
            ),
            "version 2",
        ),
    }
    before = snapshot(loaded.home)
    for name, (path, phrase) in cases.items():
        plain = _cli(loaded.home, "bundle", "import", str(path))
        assert plain.returncode == 3, (name, plain.stderr)
        assert plain.stderr.startswith("fieldsync: error: "), plain.stderr
        assert phrase in plain.stderr and "nothing imported" in plain.stderr
        assert plain.stdout == ""
        as_json = _cli(loaded.home, "bundle", "import", str(path), "--json")
        assert as_json.returncode == 3
        error = json.loads(as_json.stdout)
        assert error["exit_code"] == 3
        assert error["kind"] == "InputRefused"
        assert phrase in error["error"]
        assert as_json.stderr.startswith("fieldsync: error: ")
    missing = _cli(
        loaded.home, "bundle", "import", str(loaded.net.usb / "missing.bundle"), "--json"
    )
    assert missing.returncode == 4
    assert json.loads(missing.stdout)["kind"] == "NotFound"
    assert missing.stderr.startswith("fieldsync: error: bundle file ")
    assert snapshot(loaded.home) == before


def test_cli_import_of_100_megabytes_of_random_bytes_keeps_memory_flat(loaded: Loaded) -> None:
    path = _sparse_random_file(loaded.net.usb / "cli-random-100m.bin", 100 * MiB)
    baseline = _max_rss_kib(loaded.home, "status")
    refused = _max_rss_kib(loaded.home, "bundle", "import", str(path))
    assert refused - baseline < 16 * 1024, f"baseline {baseline} KiB, import {refused} KiB"
