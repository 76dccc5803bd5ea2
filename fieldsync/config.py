"""Daemon configuration: one frozen, typed ``Config`` built from four layers.

Later layers win, key by key::

    defaults  <  TOML file  <  environment  <  explicit overrides (command line)

- **TOML file**: ``load_config(path=...)`` (``fieldsync run --config PATH``), else the file
  named by ``FIELDSYNC_CONFIG``, else none (defaults only). Read with stdlib ``tomllib``.
  Relative paths in the file are relative to the file's directory.
- **Environment**: ``FIELDSYNC_<SECTION>_<KEY>`` for every key, e.g.
  ``FIELDSYNC_SYNC_MAX_CONCURRENT=2`` or ``FIELDSYNC_LISTEN_ADDRESSES=127.0.0.1:23817,[::1]:23817``
  (lists are comma-separated; booleans are 1/0, true/false, yes/no, on/off; an empty value
  clears ``[upstream] url`` and ``[control] socket``). A variable naming a known section but an
  unknown key is an error, so typos never pass silently; other ``FIELDSYNC_*`` variables
  (``FIELDSYNC_HOME``, ``FIELDSYNC_PASSPHRASE``, ...) are not configuration and are ignored.
- **Overrides**: a mapping ``{"section.key": value}`` from command-line options, with the same
  types a TOML file would hold (``Path`` is accepted for paths, tuples for lists). ``None``
  means "option not given" and is skipped.

Anything unknown, of the wrong type, out of range or malformed raises ``ConfigError`` naming
where it came from (file, environment variable or override), the section, the key, the bad
value and what is expected. Nothing is guessed: an empty ``[discovery] interfaces`` list means
no multicast at all, never "all interfaces".

This module is the loader (the layers above). What each section and key may hold, every
default and how a value is checked are in ``config_schema``; the address types and their
parsers in ``config_addresses``. Their public names are importable from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from fieldsync.config_addresses import (
    HostPort,
    Peer,
    WebSocketURL,
    check_service_type,
    parse_host_port,
    parse_peer,
    parse_websocket_url,
)
from fieldsync.config_schema import (
    DEFAULT_HOME,
    DEFAULT_ROTATE_MINUTES,
    DEFAULT_SERVICE_TYPE,
    EXIT_CONFIG,
    LOG_LEVELS,
    MAX_UNIX_SOCKET_PATH,
    RELAY_DEFAULT_LISTEN,
    SECTIONS,
    Config,
    ConfigError,
    ControlConfig,
    DebugConfig,
    DiscoveryConfig,
    HubConfig,
    Invalid,
    Kind,
    LimitsConfig,
    ListenConfig,
    LogConfig,
    NodeConfig,
    PeersConfig,
    PrivacyConfig,
    SecurityConfig,
    StorageConfig,
    SyncConfig,
    UpstreamConfig,
    keys_of,
    show_value,
)

# The public names of the three config modules, importable from here as before the split.
__all__ = [
    "CONFIG_ENV",
    "DEFAULT_HOME",
    "DEFAULT_ROTATE_MINUTES",
    "DEFAULT_SERVICE_TYPE",
    "ENV_PREFIX",
    "EXIT_CONFIG",
    "LOG_LEVELS",
    "MAX_UNIX_SOCKET_PATH",
    "RELAY_DEFAULT_LISTEN",
    "Config",
    "ConfigError",
    "ControlConfig",
    "DebugConfig",
    "DiscoveryConfig",
    "HostPort",
    "HubConfig",
    "LimitsConfig",
    "ListenConfig",
    "LogConfig",
    "NodeConfig",
    "Peer",
    "PeersConfig",
    "PrivacyConfig",
    "SecurityConfig",
    "StorageConfig",
    "SyncConfig",
    "UpstreamConfig",
    "WebSocketURL",
    "check_service_type",
    "load_config",
    "parse_host_port",
    "parse_peer",
    "parse_websocket_url",
]

CONFIG_ENV: Final = "FIELDSYNC_CONFIG"
ENV_PREFIX: Final = "FIELDSYNC_"


#: One layer of settings: (section, key) -> (typed value, where it came from).
_Layer = dict[tuple[str, str], tuple[Any, str]]


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] = MappingProxyType({}),
    overrides: Mapping[str, Any] = MappingProxyType({}),
) -> Config:
    """Build the ``Config``: defaults < TOML file < environment < ``overrides``.

    ``path`` is the ``--config`` file; without it ``env["FIELDSYNC_CONFIG"]`` names one; with
    neither only defaults, environment and overrides apply. The daemon passes ``os.environ``.
    """
    layers: _Layer = {}
    cwd = Path.cwd()
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV]).expanduser()
        where_path = f"config file {path} (from {CONFIG_ENV})"
    else:
        where_path = f"config file {path}"
    if path is not None:
        path = path if path.is_absolute() else cwd / path
        layers.update(_from_file(path, where_path))
    layers.update(_from_env(env, cwd))
    layers.update(_from_overrides(overrides, cwd))

    built: dict[str, Any] = {}
    for name, section in SECTIONS.items():
        values = {key: value for (sec, key), (value, _) in layers.items() if sec == name}
        built[name] = section(**values)
    config = Config(**built, source=path)
    _cross_checks(config, {setting: origin for setting, (_, origin) in layers.items()})
    return config


def _cross_checks(config: Config, origins: Mapping[tuple[str, str], str]) -> None:
    def setting(section: str, key: str) -> str:
        value = getattr(getattr(config, section), key)
        origin = origins.get((section, key), "default")
        return f"[{section}] {key} = {show_value(value)} ({origin})"

    if config.sync.backoff_initial > config.sync.backoff_max:
        raise ConfigError(
            f"{setting('sync', 'backoff_initial')} is larger than "
            f"{setting('sync', 'backoff_max')}: the first retry delay must not exceed the "
            "longest one"
        )


def _from_file(path: Path, where: str) -> _Layer:
    import tomllib  # only with a config file: most commands never read one

    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"{where} does not exist: create it (deploy/fieldsync.example.toml documents every "
            f"key) or leave out --config"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{where} is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigError(
            f"{where} is not readable by this user: check its owner and mode "
            f"(the service reads it as user fieldsync)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where} could not be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None

    sections = SECTIONS
    out: _Layer = {}
    for name, table in document.items():
        if name not in sections:
            if isinstance(table, dict):
                raise ConfigError(
                    f"{where}: unknown section [{name}]{_did_you_mean(name, sections)}; "
                    f"known sections: {', '.join(f'[{s}]' for s in sections)}"
                )
            raise ConfigError(
                f"{where}: key {name} = {show_value(table)} is outside any section; every setting "
                f"belongs under a [section] header{_section_hint(name, sections)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(
                f"{where}: {name} = {show_value(table)}: expected a [{name}] section (a table)"
            )
        kinds = keys_of(sections[name])
        for key, value in table.items():
            if key not in kinds:
                raise ConfigError(
                    f"{where}: [{name}] has no key {key!r}{_did_you_mean(key, kinds)}; "
                    f"known keys: {', '.join(kinds)}"
                )
            out[(name, key)] = (
                _convert(
                    kinds[key], value, path.parent, f"{where}: [{name}] {key} = {show_value(value)}"
                ),
                where,
            )
    return out


def _from_env(env: Mapping[str, str], cwd: Path) -> _Layer:
    sections = SECTIONS
    out: _Layer = {}
    for variable in sorted(env):
        if not variable.startswith(ENV_PREFIX):
            continue
        section, _, key = variable[len(ENV_PREFIX) :].partition("_")
        section = section.lower()
        if section not in sections:
            continue  # FIELDSYNC_HOME, FIELDSYNC_CONFIG, FIELDSYNC_PASSPHRASE ...: not settings
        key = key.lower()
        kinds = keys_of(sections[section])
        if key not in kinds:
            known = ", ".join(f"{ENV_PREFIX}{section.upper()}_{k.upper()}" for k in kinds)
            raise ConfigError(
                f"environment variable {variable}: [{section}] has no key {key!r}"
                f"{_did_you_mean(key, kinds)}; known variables for [{section}]: {known}"
            )
        text = env[variable]
        where = f"environment variable {variable}={show_value(text)} ([{section}] {key})"
        try:
            value = kinds[key].from_env(text)
        except Invalid as exc:
            raise ConfigError(f"{where}: {exc}") from None
        out[(section, key)] = (_convert(kinds[key], value, cwd, where), f"from {variable}")
    return out


def _from_overrides(overrides: Mapping[str, Any], cwd: Path) -> _Layer:
    sections = SECTIONS
    out: _Layer = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if section not in sections or key not in keys_of(sections[section]):
            raise ConfigError(
                f'override {dotted!r} names no setting: expected "section.key" such as '
                f'"sync.max_concurrent"'
            )
        where = f"command-line override {dotted} = {show_value(value)} ([{section}] {key})"
        kind = keys_of(sections[section])[key]
        out[(section, key)] = (_convert(kind, value, cwd, where), "from the command line")
    return out


def _convert(kind: Kind, value: object, base: Path, where: str) -> Any:
    try:
        return kind.from_value(value, base)
    except Invalid as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _did_you_mean(word: str, choices: Mapping[str, object]) -> str:
    import difflib  # only on a configuration error

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _section_hint(key: str, sections: Mapping[str, type]) -> str:
    homes = [name for name, section in sections.items() if key in keys_of(section)]
    return f" (it belongs in [{homes[0]}])" if len(homes) == 1 else ""
