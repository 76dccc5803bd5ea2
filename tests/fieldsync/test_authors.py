"""Several author keys on one node (issue 10 item 1): the passphrase says which author, the
files do not say whose they are, and duress, wrong-passphrase wipes and ``wipe`` stay sane."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldsync.errors import InputRefused, WrongPassphrase
from fieldsync.node import AUTHOR_SECRET, AUTHORS_DIR, REQUEST, Node
from fieldsync.wipe import key_files, wipe_node
from fieldsync_protocol import codec, crypto, membership
from tests.fieldsync.offline_support import (
    AUTHOR_NAME,
    KDF,
    PASSPHRASE,
    Net,
    add_reports,
    enroll,
    fields,
)

SECOND = "monitor-42"
SECOND_PASSPHRASE = "lantern orchard quietly folding maps"
DURESS = "copper kettle whistling at midnight"


def _add_second(net: Net) -> Path:
    node = Node(net.a)
    try:
        request = node.add_author(SECOND, SECOND_PASSPHRASE, KDF)
        asked = membership.decode_request(request.read_text())
        assert asked.author_name == SECOND
        assert asked.node_key == crypto.box_public_key(node.node_secret())  # the same node
        node.join(enroll(net, request))
        assert not request.exists()
        (path,) = (net.a / AUTHORS_DIR).glob("*.secret")
        return path
    finally:
        node.close()


def test_the_passphrase_chooses_the_author_and_the_files_look_alike(net: Net) -> None:
    second_file = _add_second(net)
    first_file = net.a / AUTHOR_SECRET
    first, second = codec.decode(first_file.read_bytes()), codec.decode(second_file.read_bytes())
    # One salt and cost for the node (one Argon2id run finds either author) ...
    assert (first["salt"], first["ops"], first["mem"]) == (
        second["salt"],
        second["ops"],
        second["mem"],
    )
    # ... and the same size whatever the names: no name shows in a file name or a size.
    assert first_file.stat().st_size == second_file.stat().st_size
    assert SECOND not in second_file.name
    node = Node(net.a)
    try:
        assert node.unlock(PASSPHRASE).name == AUTHOR_NAME
        assert node.unlock(SECOND_PASSPHRASE).name == SECOND
        assert node.unlock(SECOND_PASSPHRASE, " Monitor-42 ").name == SECOND  # a check only
        with pytest.raises(WrongPassphrase):
            node.unlock(SECOND_PASSPHRASE, AUTHOR_NAME)  # said like a wrong passphrase
        assert node.unlock(PASSPHRASE).key != node.unlock(SECOND_PASSPHRASE).key
    finally:
        node.close()


def test_a_new_author_is_refused_while_a_request_waits_or_with_a_taken_passphrase(
    net: Net,
) -> None:
    node = Node(net.a)
    try:
        with pytest.raises(InputRefused, match="choose another"):
            node.add_author(SECOND, PASSPHRASE, KDF)
        for name in ("   ", "x" * 65):
            with pytest.raises(InputRefused, match="name or code of 1 to 64 characters"):
                node.add_author(name, SECOND_PASSPHRASE, KDF)
        assert len(node.author_files()) == 1  # nothing written for a refused name
        node.add_author(SECOND, SECOND_PASSPHRASE, KDF)
        with pytest.raises(InputRefused, match="still waiting"):
            node.add_author("third", "another quite unusual phrase here", KDF)
        assert len(node.author_files()) == 2
    finally:
        node.close()


def test_a_relay_node_can_take_its_first_author_later(net: Net) -> None:
    node = Node(net.b)
    try:
        assert not node.is_author()
        request = node.add_author(SECOND, SECOND_PASSPHRASE, KDF)
        node.join(enroll(net, request))
        assert (net.b / AUTHOR_SECRET).exists() and not (net.b / REQUEST).exists()
        assert node.unlock(SECOND_PASSPHRASE).name == SECOND
        report_id = node.add_report(fields("the relay's first report"), SECOND_PASSPHRASE)
        assert [e.report_id for e in node.reports(SECOND_PASSPHRASE)] == [report_id]
    finally:
        node.close()


def test_duress_replaces_only_that_authors_key(net: Net) -> None:
    _add_second(net)
    first_ids = add_reports(net.a, ["first monitor's report"])
    node = Node(net.a)
    try:
        second_id = node.add_report(fields("second monitor's report"), SECOND_PASSPHRASE)
        node.set_duress_passphrase(SECOND_PASSPHRASE, DURESS)
        with pytest.raises(InputRefused, match="differ"):
            node.set_duress_passphrase(SECOND_PASSPHRASE, PASSPHRASE)  # another's passphrase
        assert [e.report_id for e in node.reports(SECOND_PASSPHRASE)] == [second_id]

        decoy = node.unlock(DURESS)
        assert decoy.name is None and node.reports(DURESS) == []
        with pytest.raises(WrongPassphrase):
            node.unlock(SECOND_PASSPHRASE)  # the real key is gone
        # The other monitor keeps their key, their reports and their own-report marks.
        assert [e.report_id for e in node.reports(PASSPHRASE)] == first_ids
        own = node.store().db.execute("SELECT count(*) FROM items WHERE own = 1").fetchone()[0]
        assert own == 2
    finally:
        node.close()


def test_wrong_passphrases_count_across_authors_and_the_wipe_takes_every_key(net: Net) -> None:
    _add_second(net)
    node = Node(net.a, wipe_after_wrong_passphrases=3)
    try:
        for _ in range(2):
            with pytest.raises(WrongPassphrase):
                node.unlock("not anybody's passphrase")
        node.unlock(SECOND_PASSPHRASE)  # any author's success resets the count
        for _ in range(2):
            with pytest.raises(WrongPassphrase):
                node.unlock("not anybody's passphrase")
        with pytest.raises(WrongPassphrase, match="every key on this node was destroyed"):
            node.unlock("not anybody's passphrase")
    finally:
        node.close()
    assert key_files(net.a) == []
    assert not (net.a / AUTHOR_SECRET).exists()
    assert list((net.a / AUTHORS_DIR).glob("*")) == []


def test_wipe_destroys_every_authors_key(net: Net) -> None:
    second_file = _add_second(net)
    assert second_file in key_files(net.a)
    result = wipe_node(net.a)
    assert not result.problems
    assert str(second_file.relative_to(net.a)) in result.destroyed
    assert not second_file.exists() and not (net.a / AUTHOR_SECRET).exists()
