"""The node's current form (fieldsync/forms.py, SPEC.md §18.4): the newest verified form item
it holds wins; older versions, forged items and other networks' forms never do."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from fieldsync.forms import newest_form, node_form
from fieldsync.hq import HQ
from fieldsync.node import Node
from fieldsync_cli.main import main
from fieldsync_protocol import codec, crypto
from fieldsync_protocol.form import default_form, parse_form, sign_form
from tests.fieldsync.offline_support import PASSPHRASE, Net

EXAMPLE = json.loads(
    (Path(__file__).resolve().parents[2] / "protocol/vectors/form.json").read_text()
)["example"]


def _root_seed(net: Net) -> bytes:
    headquarters = HQ(net.hq, passphrase=PASSPHRASE)
    try:
        return headquarters.unlock(PASSPHRASE).root_seed
    finally:
        headquarters.close()


def test_newest_verified_form_wins(net: Net) -> None:
    node = Node(net.a)
    try:
        assert node_form(node) == default_form()
        manifest = node.membership().manifest
        root = _root_seed(net)
        v3 = parse_form({**EXAMPLE, "version": 3})
        v2 = parse_form({**EXAMPLE, "version": 2})
        items = [sign_form(v3, manifest, root), sign_form(v2, manifest, root)]
        assert newest_form(items, manifest) == v3  # an older version replayed later loses
        body = codec.decode(items[0])["b"]
        forged = codec.encode(
            {"b": body, "s": crypto.sign(crypto.Domain.FORM, bytes(32), body), "t": "f", "v": 1}
        )
        assert newest_form([forged, items[1]], manifest) == v2
        assert newest_form([b"\x00junk"], manifest) == default_form()
    finally:
        node.close()


def test_form_show_on_an_unjoined_node(tmp_path: Path) -> None:
    runner = CliRunner(env={"FIELDSYNC_HOME": None, "FIELDSYNC_PASSPHRASE": None})
    home = ["--home", str(tmp_path / "A")]
    assert runner.invoke(main, [*home, "init"]).exit_code == 0
    shown = runner.invoke(main, [*home, "form", "show", "--language", "es"])
    assert shown.exit_code == 0, shown.output
    assert "Arresto o detención arbitraria" in shown.stdout
    as_json = runner.invoke(main, [*home, "form", "show", "--json"])
    assert json.loads(as_json.stdout) == default_form().to_map()


def test_hq_form_set_spreads_with_receipts_and_nodes_adopt_it(net: Net, tmp_path: Path) -> None:
    runner = CliRunner(env={"FIELDSYNC_HOME": None, "FIELDSYNC_HQ": None})
    env = {"FIELDSYNC_PASSPHRASE": PASSPHRASE}
    form_file = tmp_path / "form.json"
    form_file.write_text(json.dumps(EXAMPLE))
    hq = ["--hq", str(net.hq)]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**EXAMPLE, "languages": ["en"]}))
    refused = runner.invoke(main, ["hq", "form", "set", str(bad), *hq], env=env)
    assert refused.exit_code == 3 and "must give exactly the form's languages" in refused.stderr
    done = runner.invoke(main, ["hq", "form", "set", str(form_file), *hq, "--json"], env=env)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"version": 3, "categories": 2}
    again = runner.invoke(main, ["hq", "form", "set", str(form_file), *hq], env=env)
    assert again.exit_code == 3 and "give it a higher version" in again.stderr
    shown = runner.invoke(main, ["hq", "form", "show", *hq, "--language", "fr"])
    assert "Détention arbitraire" in shown.stdout
    receipts = tmp_path / "receipts.bundle"
    made = runner.invoke(main, ["hq", "receipts", *hq, "--out", str(receipts)], env=env)
    assert made.exit_code == 0, made.output
    imported = runner.invoke(main, ["--home", str(net.a), "bundle", "import", str(receipts)])
    assert imported.exit_code == 0, imported.output
    node_shown = runner.invoke(main, ["--home", str(net.a), "form", "show", "--json"])
    assert json.loads(node_shown.stdout)["version"] == 3
    refused_category = runner.invoke(
        main,
        ["--home", str(net.a), "report", "add", "--narrative", "x", "--category", "torture",
         "--occurred", "2025"],
        env=env,
    )  # fmt: skip
    assert refused_category.exit_code == 3
    assert "choose from: arbitrary-detention, excessive-force" in refused_category.stderr
