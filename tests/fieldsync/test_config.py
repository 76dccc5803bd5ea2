"""Daemon configuration: defaults < TOML file < FIELDSYNC_<SECTION>_<KEY> < overrides, and a
ConfigError naming source, section, key, value and expectation for every kind of bad input."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fieldsync import discovery, limits
from fieldsync.config import (
    CONFIG_ENV,
    DEFAULT_SERVICE_TYPE,
    EXIT_CONFIG,
    RELAY_DEFAULT_LISTEN,
    Config,
    ConfigError,
    HostPort,
    WebSocketURL,
    load_config,
    parse_host_port,
    parse_peer,
    parse_websocket_url,
)
from fieldsync.errors import FieldsyncError

ANY_V4 = "0.0.0.0"  # noqa: S104 - the default listen address under test
EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "fieldsync.example.toml"


def write(tmp_path: Path, text: str, name: str = "fieldsync.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def all_keys() -> dict[str, list[str]]:
    config = Config()
    return {
        section.name: [f.name for f in dataclasses.fields(getattr(config, section.name))]
        for section in dataclasses.fields(config)
        if section.name != "source"
    }


# --- defaults ----------------------------------------------------------------------------------


def test_defaults_without_file_env_or_overrides() -> None:
    config = load_config(None, {}, {})
    assert config == Config()
    assert config.source is None
    assert config.node.home == Path("~/.local/share/fieldsync").expanduser()
    assert config.listen.addresses is None  # "auto": the node's role decides
    assert config.discovery.enabled is True
    assert config.discovery.service_type == DEFAULT_SERVICE_TYPE
    assert config.discovery.interfaces == ()
    assert config.discovery.active is False
    assert config.discovery.rotate_minutes == 15
    assert config.peers.static == ()
    assert config.upstream.url is None
    assert config.upstream.interval_seconds == 60.0
    assert config.sync.interval_seconds == 300.0
    assert config.sync.max_concurrent == 4
    assert (config.sync.backoff_initial, config.sync.backoff_max) == (2.0, 300.0)
    assert config.sync.quota_items_per_day == limits.QUOTA_ITEMS_PER_DAY
    assert config.sync.quota_bytes_per_day == limits.QUOTA_BYTES_PER_DAY
    assert config.sync.forget_peers_days == 30
    assert config.storage.disk_budget_mb == 1024
    assert config.storage.checkpoint_minutes == 5
    assert config.hub.enabled is False
    assert config.control.socket is None
    assert config.control_socket == config.node.home / "control.sock"
    assert config.log.level == "INFO"


def test_default_service_type_names_no_app() -> None:
    assert "fieldsync" not in DEFAULT_SERVICE_TYPE.lower()


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hub = config.hub  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.sync.max_concurrent = 9  # type: ignore[misc]


def test_empty_interfaces_turn_discovery_off_with_a_notice() -> None:
    notices = load_config(None, {}, {}).notices()
    assert any("discovery is off" in line and "interfaces" in line for line in notices)
    on = load_config(None, {}, {"discovery.interfaces": ["wlan0"]})
    assert on.discovery.active
    assert not any("discovery is off" in line for line in on.notices())
    off = load_config(None, {}, {"discovery.interfaces": ["wlan0"], "discovery.enabled": False})
    assert not off.discovery.active


def test_notices_for_a_node_that_cannot_meet_anyone() -> None:
    lonely = load_config(None, {}, {"listen.addresses": []})
    text = "\n".join(lonely.notices())
    assert "not listening" in text
    assert "no way to meet peers" in text
    linked = load_config(None, {}, {"peers.static": ["192.168.4.2:7341"]})
    assert not any("no way to meet" in line for line in linked.notices())


def test_listen_default_depends_on_the_role_and_has_no_project_port() -> None:
    auto = load_config(None, {}, {}).listen
    assert auto.for_role(is_author=True, hub=False) == ()  # an author dials out only
    assert auto.for_role(is_author=False, hub=False) == RELAY_DEFAULT_LISTEN
    assert (HostPort(ANY_V4, 0),) == RELAY_DEFAULT_LISTEN  # the kernel picks, every start
    with pytest.raises(ConfigError, match=r"hub needs \[listen\] addresses"):
        auto.for_role(is_author=False, hub=True)
    fixed = load_config(None, {}, {"listen.addresses": ["0.0.0.0:23817"]}).listen
    for is_author in (True, False):
        assert fixed.for_role(is_author=is_author, hub=False) == (HostPort(ANY_V4, 23817),)
    assert fixed.for_role(is_author=False, hub=True) == (HostPort(ANY_V4, 23817),)
    none = load_config(None, {}, {"listen.addresses": []}).listen
    assert none.for_role(is_author=False, hub=False) == ()


def test_listen_auto_is_spelled_the_same_in_file_env_and_dict(tmp_path: Path) -> None:
    path = write(tmp_path, '[listen]\naddresses = "auto"\n')
    assert load_config(path, {}, {}).listen.addresses is None
    env = {"FIELDSYNC_LISTEN_ADDRESSES": "auto"}
    assert load_config(path, env, {}).listen.addresses is None
    env = {"FIELDSYNC_LISTEN_ADDRESSES": "127.0.0.1:0"}
    assert load_config(path, env, {}).listen.addresses == (HostPort("127.0.0.1", 0),)
    assert Config().to_dict()["listen"]["addresses"] == "auto"
    with pytest.raises(ConfigError, match='"auto" for the default'):
        load_config(write(tmp_path, '[listen]\naddresses = "automatic"\n'), {}, {})


def test_notices_say_why_an_author_or_a_hidden_relay_does_not_listen() -> None:
    config = load_config(None, {}, {"discovery.interfaces": ["wlan0"]})
    author = "\n".join(config.notices(is_author=True))
    assert "not listening" in author and "author key" in author
    assert not any("listening" in line for line in config.notices(is_author=False))
    hidden = "\n".join(load_config(None, {}, {}).notices(is_author=False))
    assert "chosen afresh at each start" in hidden and "[peers] static" in hidden
    hub = load_config(None, {}, {"hub.enabled": True, "listen.addresses": ["127.0.0.1:7342"]})
    assert not any("listening" in line for line in hub.notices(is_author=False))


def test_to_dict_is_json_ready_in_file_shape() -> None:
    config = load_config(
        None,
        {},
        {"upstream.url": "wss://hub.example.org/sync", "listen.addresses": ["[::]:7341"]},
    )
    data = config.to_dict()
    assert data["upstream"]["url"] == "wss://hub.example.org/sync"
    assert data["listen"]["addresses"] == ["[::]:7341"]
    assert data["control"]["socket"] is None
    assert {section: list(keys) for section, keys in data.items()} == all_keys()


# --- the TOML file -----------------------------------------------------------------------------


FULL = """
[node]
home = "state"
[listen]
addresses = ["127.0.0.1:7342", "[::1]:7342"]
[discovery]
enabled = true
service_type = "_Notes._TCP"
interfaces = ["wlan0", "192.168.4.1"]
rotate_minutes = 2.5
[peers]
static = ["192.168.4.20:7341", "relay.example.org:7341", "wss://relay.example.org/sync"]
[upstream]
url = "wss://hub.example.org/sync"
interval_seconds = 30
[sync]
interval_seconds = 120.5
max_concurrent = 2
backoff_initial = 1
backoff_max = 60
quota_items_per_day = 5_000
quota_bytes_per_day = 10_000_000
[storage]
disk_budget_mb = 256
checkpoint_minutes = 1
[hub]
enabled = true
[control]
socket = "/run/fieldsync/control.sock"
[log]
level = "debug"
"""


def test_every_key_from_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config(path, {}, {})
    assert config.source == path
    assert config.node.home == tmp_path / "state"  # relative to the file's directory
    assert config.listen.addresses == (HostPort("127.0.0.1", 7342), HostPort("::1", 7342))
    assert config.discovery.service_type == "_notes._tcp.local."
    assert config.discovery.interfaces == ("wlan0", "192.168.4.1")
    assert config.discovery.rotate_minutes == 2.5
    assert config.peers.static == (
        HostPort("192.168.4.20", 7341),
        HostPort("relay.example.org", 7341),
        WebSocketURL("wss://relay.example.org/sync", "relay.example.org", 443, True),
    )
    assert config.upstream.url == WebSocketURL(
        "wss://hub.example.org/sync", "hub.example.org", 443, True
    )
    assert config.upstream.interval_seconds == 30.0
    assert isinstance(config.upstream.interval_seconds, float)
    assert config.sync == dataclasses.replace(
        config.sync,
        interval_seconds=120.5,
        max_concurrent=2,
        backoff_initial=1.0,
        backoff_max=60.0,
        quota_items_per_day=5000,
        quota_bytes_per_day=10_000_000,
    )
    assert config.sync.max_concurrent == 2
    assert config.storage.disk_budget_mb == 256
    assert config.storage.checkpoint_minutes == 1
    assert config.hub.enabled is True
    assert config.control_socket == Path("/run/fieldsync/control.sock")
    assert config.log.level == "DEBUG"


def test_file_from_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "[sync]\nmax_concurrent = 7\n")
    config = load_config(None, {CONFIG_ENV: str(path)}, {})
    assert config.sync.max_concurrent == 7
    assert config.source == path


def test_explicit_path_wins_over_environment_file(tmp_path: Path) -> None:
    chosen = write(tmp_path, "[sync]\nmax_concurrent = 7\n", "a.toml")
    other = write(tmp_path, "[sync]\nmax_concurrent = 9\n", "b.toml")
    assert load_config(chosen, {CONFIG_ENV: str(other)}, {}).sync.max_concurrent == 7


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), {}, {}) == Config()


def test_tilde_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config(write(tmp_path, '[node]\nhome = "~/node"\n'), {}, {})
    assert config.node.home == tmp_path / "node"


# --- environment -------------------------------------------------------------------------------


def test_environment_overrides_every_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "[sync]\nmax_concurrent = 7\nbackoff_max = 99\n")
    env = {
        "FIELDSYNC_SYNC_MAX_CONCURRENT": "3",
        "FIELDSYNC_SYNC_INTERVAL_SECONDS": "12.5",
        "FIELDSYNC_HUB_ENABLED": "yes",
        "FIELDSYNC_DISCOVERY_ENABLED": "off",
        "FIELDSYNC_LISTEN_ADDRESSES": "127.0.0.1:0, [::1]:7341",
        "FIELDSYNC_DISCOVERY_INTERFACES": "wlan0,eth0",
        "FIELDSYNC_DISCOVERY_ROTATE_MINUTES": "0.05",
        "FIELDSYNC_PEERS_STATIC": "",
        "FIELDSYNC_UPSTREAM_URL": "ws://127.0.0.1:7342/sync",
        "FIELDSYNC_NODE_HOME": "/srv/node",
        "FIELDSYNC_CONTROL_SOCKET": "/run/x.sock",
        "FIELDSYNC_LOG_LEVEL": "warning",
        # not settings: left alone
        "FIELDSYNC_HOME": "/elsewhere",
        "FIELDSYNC_PASSPHRASE": "secret",
        "FIELDSYNC_HQ": "/hq",
        "PATH": "/usr/bin",
    }
    config = load_config(path, env, {})
    assert config.sync.max_concurrent == 3
    assert config.sync.backoff_max == 99.0  # from the file, untouched by the environment
    assert config.sync.interval_seconds == 12.5
    assert config.hub.enabled is True
    assert config.discovery.enabled is False
    assert config.listen.addresses == (HostPort("127.0.0.1", 0), HostPort("::1", 7341))
    assert config.discovery.interfaces == ("wlan0", "eth0")
    assert config.discovery.rotate_minutes == 0.05  # fractions: tests rotate every 3 s
    assert config.peers.static == ()
    assert config.upstream.url == WebSocketURL("ws://127.0.0.1:7342/sync", "127.0.0.1", 7342, False)
    assert config.node.home == Path("/srv/node")
    assert config.control.socket == Path("/run/x.sock")
    assert config.log.level == "WARNING"


def test_empty_environment_value_clears_optional_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[upstream]\nurl = "wss://hub.example.org/sync"\n[control]\nsocket = "/run/c"\n'
    )
    config = load_config(path, {"FIELDSYNC_UPSTREAM_URL": "", "FIELDSYNC_CONTROL_SOCKET": ""}, {})
    assert config.upstream.url is None
    assert config.control.socket is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("TRUE", True), ("on", True), ("0", False), ("No", False), ("off", False)],
)
def test_environment_booleans(text: str, expected: bool) -> None:
    assert load_config(None, {"FIELDSYNC_HUB_ENABLED": text}, {}).hub.enabled is expected


# --- overrides (command line) ------------------------------------------------------------------


def test_overrides_win_over_environment_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[sync]\nmax_concurrent = 7\n[hub]\nenabled = false\n")
    env = {"FIELDSYNC_SYNC_MAX_CONCURRENT": "3", "FIELDSYNC_HUB_ENABLED": "0"}
    overrides: dict[str, Any] = {
        "sync.max_concurrent": 1,
        "hub.enabled": True,
        "listen.addresses": ("127.0.0.1:7342",),
        "node.home": Path("/var/lib/fieldsync"),
        "log.level": None,  # an option that was not given
    }
    config = load_config(path, env, overrides)
    assert config.sync.max_concurrent == 1
    assert config.hub.enabled is True
    assert config.listen.addresses == (HostPort("127.0.0.1", 7342),)
    assert config.node.home == Path("/var/lib/fieldsync")
    assert config.log.level == "INFO"


def test_relative_override_paths_start_at_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(None, {}, {"node.home": "n"}).node.home == tmp_path / "n"


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        # unknown names
        (
            "[sync]\nmax_concurent = 3\n",
            ["[sync]", "'max_concurent'", "did you mean 'max_concurrent'"],
        ),
        ("[sycn]\nmax_concurrent = 3\n", ["unknown section [sycn]", "did you mean 'sync'"]),
        ('level = "INFO"\n', ["level", "outside any section", "[log]"]),
        ("sync = 3\n", ["sync = 3", "expected a [sync] section"]),
        ("[sync.extra]\na = 1\n", ["[sync]", "'extra'"]),
        # wrong types
        ("[sync]\nmax_concurrent = true\n", ["[sync] max_concurrent = true", "whole number"]),
        ('[sync]\nmax_concurrent = "4"\n', ['[sync] max_concurrent = "4"', "whole number"]),
        ("[sync]\nmax_concurrent = 2.5\n", ["max_concurrent = 2.5", "whole number"]),
        ('[hub]\nenabled = "yes"\n', ['[hub] enabled = "yes"', "true or false"]),
        ("[hub]\nenabled = 1\n", ["[hub] enabled = 1", "true or false"]),
        ('[listen]\naddresses = "0.0.0.0:7341"\n', ["[listen] addresses", "expected a list"]),
        ("[listen]\naddresses = [7341]\n", ["[listen] addresses", "7341", "not a string"]),
        ("[upstream]\nurl = 5\n", ["[upstream] url = 5", "ws://"]),
        ("[node]\nhome = 5\n", ["[node] home = 5", "expected a path"]),
        ('[node]\nhome = ""\n', ['[node] home = ""', "expected a path"]),
        ("[log]\nlevel = 10\n", ["[log] level = 10", "DEBUG"]),
        (
            "[privacy]\noffer_delay_minutes = -1\n",
            ["[privacy] offer_delay_minutes = -1", "minutes in 0–1440"],
        ),
        (
            '[privacy]\noffer_delay_jitter = "gaussian"\n',
            ["offer_delay_jitter", "gaussian", "exponential, uniform"],
        ),
        ("[sync]\ninterval_seconds = true\n", ["interval_seconds = true", "seconds"]),
        ("[sync]\ninterval_seconds = 1979-05-27\n", ["interval_seconds", "seconds"]),
        # negative, zero, out of range
        ("[sync]\nmax_concurrent = -1\n", ["[sync] max_concurrent = -1", "in 1–256"]),
        ("[sync]\nmax_concurrent = 0\n", ["max_concurrent = 0", "in 1–256"]),
        ("[sync]\ninterval_seconds = -5\n", ["[sync] interval_seconds = -5", "> 0"]),
        ("[sync]\nbackoff_initial = 0\n", ["backoff_initial = 0", "> 0"]),
        ("[sync]\nbackoff_max = nan\n", ["backoff_max", "> 0"]),
        ("[sync]\nbackoff_max = inf\n", ["backoff_max", "> 0"]),
        ("[sync]\nquota_items_per_day = -10\n", ["quota_items_per_day = -10", "≥ 1"]),
        ("[sync]\nquota_bytes_per_day = 0\n", ["quota_bytes_per_day = 0", "≥ 1"]),
        ("[storage]\ndisk_budget_mb = -1\n", ["[storage] disk_budget_mb = -1"]),
        ("[storage]\ncheckpoint_minutes = 0\n", ["[storage] checkpoint_minutes = 0"]),
        ("[discovery]\nrotate_minutes = 0\n", ["[discovery] rotate_minutes = 0", "0.05–1440"]),
        ("[discovery]\nrotate_minutes = 0.01\n", ["rotate_minutes = 0.01", "0.05–1440"]),
        ("[discovery]\nrotate_minutes = 1441\n", ["rotate_minutes = 1441", "0.05–1440"]),
        ("[discovery]\nrotate_minutes = nan\n", ["rotate_minutes", "minutes"]),
        ("[discovery]\nrotate_minutes = true\n", ["rotate_minutes = true", "minutes"]),
        ('[discovery]\nrotate_minutes = "5"\n', ['rotate_minutes = "5"', "minutes"]),
        # bad addresses
        ('[listen]\naddresses = ["0.0.0.0"]\n', ['"0.0.0.0"', "HOST:PORT"]),
        ('[listen]\naddresses = ["0.0.0.0:99999"]\n', ["99999", "out of range"]),
        ('[listen]\naddresses = ["0.0.0.0:http"]\n', ["'http'", "not a number"]),
        ('[listen]\naddresses = ["::1:7341"]\n', ["::1:7341", "brackets"]),
        ('[listen]\naddresses = ["[::1]7341"]\n', ["[::1]7341", "HOST:PORT"]),
        ('[listen]\naddresses = ["[10.0.0.1]:7341"]\n', ["only for IPv6"]),
        ('[listen]\naddresses = ["bad_host!:7341"]\n', ["bad_host!", "host name"]),
        ('[listen]\naddresses = ["a:1", "a:1"]\n', ['"a:1"', "listed twice"]),
        ('[peers]\nstatic = ["10.0.0.1:0"]\n', ["10.0.0.1:0", "out of range 1–65535"]),
        ('[peers]\nstatic = ["0.0.0.0:7341"]\n', [ANY_V4, "connect to"]),
        ('[peers]\nstatic = ["http://x.org/"]\n', ["http://x.org/", "ws://"]),
        ('[upstream]\nurl = "https://hub.example.org/sync"\n', ["[upstream] url", "wss://"]),
        ('[upstream]\nurl = "wss:///sync"\n', ["names no host"]),
        ('[upstream]\nurl = "wss://u:p@hub.example.org/"\n', ["credentials"]),
        ('[upstream]\nurl = "wss://hub.example.org:99999/"\n', ["port"]),
        ('[upstream]\nurl = "wss://hub.example.org/#x"\n', ["fragment"]),
        # discovery
        ('[discovery]\ninterfaces = ["all"]\n', ['"all"', "never multicasts on all interfaces"]),
        ('[discovery]\ninterfaces = ["0.0.0.0"]\n', ['"0.0.0.0"', "never multicasts"]),
        ('[discovery]\ninterfaces = ["a/b"]\n', ['"a/b"', "interface name"]),
        ('[discovery]\ninterfaces = ["fe80::1"]\n', ['"fe80::1"', "IPv4"]),
        ('[discovery]\ninterfaces = ["224.0.0.251"]\n', ['"224.0.0.251"', "unicast IPv4"]),
        ('[discovery]\ninterfaces = ["wlan0", "wlan0"]\n', ["listed twice"]),
        ('[discovery]\nservice_type = "fieldsync"\n', ["service_type", "DNS-SD"]),
        ('[discovery]\nservice_type = "_much-too-long-name._tcp"\n', ["≤ 15"]),
        ('[discovery]\nservice_type = "_x._sctp"\n', ["DNS-SD"]),
        # others
        ('[log]\nlevel = "verbose"\n', ["[log] level", "'verbose'", "DEBUG, INFO"]),
        ('[control]\nsocket = "/' + "s" * 120 + '"\n', ["[control] socket", "107 bytes"]),
        ("[sync]\nbackoff_initial = 900\n", ["backoff_initial = 900.0", "backoff_max = 300.0"]),
    ],
)
def test_bad_file_values_name_file_section_key_value_and_expectation(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {}, {})
    message = str(caught.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        (
            {"FIELDSYNC_SYNC_MAXCONCURRENT": "3"},
            ["FIELDSYNC_SYNC_MAXCONCURRENT", "'maxconcurrent'", "FIELDSYNC_SYNC_MAX_CONCURRENT"],
        ),
        ({"FIELDSYNC_SYNC": "3"}, ["FIELDSYNC_SYNC", "[sync] has no key"]),
        (
            {"FIELDSYNC_SYNC_MAX_CONCURRENT": "four"},
            ['FIELDSYNC_SYNC_MAX_CONCURRENT="four"', "[sync] max_concurrent", "whole number"],
        ),
        ({"FIELDSYNC_SYNC_MAX_CONCURRENT": "-2"}, ['"-2"', "in 1–256"]),
        ({"FIELDSYNC_SYNC_BACKOFF_MAX": "soon"}, ["[sync] backoff_max", "seconds"]),
        ({"FIELDSYNC_DISCOVERY_ROTATE_MINUTES": "often"}, ["[discovery] rotate_minutes"]),
        ({"FIELDSYNC_DISCOVERY_ROTATE_MINUTES": "0"}, ['"0"', "0.05–1440"]),
        ({"FIELDSYNC_HUB_ENABLED": "maybe"}, ['FIELDSYNC_HUB_ENABLED="maybe"', "true or false"]),
        ({"FIELDSYNC_LISTEN_ADDRESSES": "localhost"}, ["[listen] addresses", "HOST:PORT"]),
        ({"FIELDSYNC_UPSTREAM_URL": "hub.example.org"}, ["[upstream] url", "wss://"]),
        ({"FIELDSYNC_DISCOVERY_INTERFACES": "*"}, ["[discovery] interfaces", "never multicasts"]),
        ({"FIELDSYNC_NODE_HOME": ""}, ["FIELDSYNC_NODE_HOME", "expected a path"]),
        ({"FIELDSYNC_LOG_LEVEL": "loud"}, ["FIELDSYNC_LOG_LEVEL", "DEBUG"]),
    ],
)
def test_bad_environment_values_name_the_variable(env: dict[str, str], needles: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env, {})
    for needle in needles:
        assert needle in str(caught.value), f"{needle!r} not in {caught.value!s}"


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        ({"sync.max_concurrent": 0}, ["command-line override sync.max_concurrent = 0", "in 1–256"]),
        ({"sync.nope": 1}, ["'sync.nope'", "section.key"]),
        ({"max_concurrent": 1}, ["'max_concurrent'", "section.key"]),
        ({"hub.enabled": "true"}, ["hub.enabled", "true or false"]),
        ({"listen.addresses": "127.0.0.1:1"}, ["[listen] addresses", "expected a list"]),
    ],
)
def test_bad_overrides(overrides: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {}, overrides)
    for needle in needles:
        assert needle in str(caught.value), f"{needle!r} not in {caught.value!s}"


def test_cross_check_names_where_each_value_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, "[sync]\nbackoff_initial = 100\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {"FIELDSYNC_SYNC_BACKOFF_MAX": "10"}, {})
    message = str(caught.value)
    assert f"[sync] backoff_initial = 100.0 (config file {path})" in message
    assert "[sync] backoff_max = 10.0 (from FIELDSYNC_SYNC_BACKOFF_MAX)" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist.*fieldsync\.example\.toml"):
        load_config(tmp_path / "nope.toml", {}, {})
    with pytest.raises(ConfigError, match=rf"from {CONFIG_ENV}"):
        load_config(None, {CONFIG_ENV: str(tmp_path / "nope.toml")}, {})


def test_directory_unreadable_and_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, {}, {})
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[log]\nlevel = "\xe9"\n')
    with pytest.raises(ConfigError, match=re.escape(f"config file {latin} is not")):
        load_config(latin, {}, {})


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "")

    def refuse(*_: object, **__: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ConfigError, match="not readable by this user"):
        load_config(path, {}, {})


def test_invalid_toml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "[sync]\nmax_concurrent = = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {}, {})
    assert f"config file {path} is not valid TOML" in str(caught.value)
    assert "line 2" in str(caught.value)


def test_config_error_is_a_fieldsync_error_with_its_own_exit_code() -> None:
    assert issubclass(ConfigError, FieldsyncError)
    assert ConfigError.exit_code == EXIT_CONFIG == 78


# --- parsers used by the CLI -------------------------------------------------------------------


def test_parsers() -> None:
    assert parse_host_port("[fe80::1%wlan0]:7341") == HostPort("fe80::1%wlan0", 7341)
    assert str(HostPort("::1", 7341)) == "[::1]:7341"
    assert str(HostPort("10.0.0.1", 7341)) == "10.0.0.1:7341"
    assert parse_host_port("Relay.Example.org.:1") == HostPort("relay.example.org", 1)
    assert parse_websocket_url("ws://hub:8080/x") == WebSocketURL(
        "ws://hub:8080/x", "hub", 8080, False
    )
    assert parse_websocket_url("ws://hub/x").port == 80
    assert str(parse_peer("wss://hub.example.org/sync")) == "wss://hub.example.org/sync"
    with pytest.raises(ValueError, match="0–65535"):
        parse_host_port("h:70000", allow_port_zero=True)
    with pytest.raises(ValueError, match="1–65535"):
        parse_host_port("h:0")
    with pytest.raises(ValueError, match="not a valid IP address"):
        parse_host_port("[fe80::1%]:7341")


# --- the example config in deploy/ ------------------------------------------------------------


def _documented_defaults(text: str) -> str:
    """The example with every ``# key = value`` line uncommented (the documented defaults)."""
    return re.sub(r"(?m)^# ([a-z_]+ = )", r"\1", text)


def test_example_config_loads_and_differs_from_defaults_only_where_it_says(
    tmp_path: Path,
) -> None:
    example = load_config(EXAMPLE, {}, {})
    # The one active line: the control socket lives in the unit's RuntimeDirectory.
    assert example == dataclasses.replace(
        Config(),
        control=dataclasses.replace(Config().control, socket=Path("/run/fieldsync/control.sock")),
    )
    assert example.notices()  # discovery is off until interfaces are named: it says so


def test_example_documents_every_key_with_its_default(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = _documented_defaults(text)
    document = tomllib.loads(uncommented)
    assert {section: sorted(keys) for section, keys in document.items()} == {
        section: sorted(keys) for section, keys in all_keys().items()
    }, "every key of every section appears once in the example"
    path = write(tmp_path, uncommented)
    documented = load_config(path, {}, {})
    assert dataclasses.replace(documented, control=Config().control) == Config()


def test_defaults_agree_with_the_discovery_module() -> None:
    config = Config()
    assert config.discovery.service_type == discovery.DEFAULT_SERVICE_TYPE
    assert config.discovery.rotate_minutes * 60 == discovery.DEFAULT_ROTATE_SECONDS
