"""The web app's pure parts: reading the form, placing node errors, sessions, limiters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from fieldsync.config import ConfigError, load_config
from fieldsync.web.form_view import (
    ATTACHMENTS_FIELD,
    MESSAGES,
    FormValues,
    field_of_error,
    read_form,
)
from fieldsync.web.guard import (
    KeptAttachment,
    PassphraseLimiter,
    RequestLimiter,
    Sessions,
    csrf_matches,
)
from fieldsync.web.server import serves_https
from fieldsync.web.tls import is_loopback


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def form(**values: str | list[str]) -> FormValues:
    out = FormValues()
    for name, value in values.items():
        for item in [value] if isinstance(value, str) else value:
            out.add(name, item)
    return out


def test_a_complete_form_becomes_report_fields() -> None:
    fields, errors = read_form(
        form(
            narrative="Line one\r\nline two",
            title="T",
            categories=["unlawful-killing", "arbitrary-detention"],
            occurred_date="2025-03-01",
            occurred_time="09:30",
            approximate="on",
            lat="0",
            lon="0,5",
            accuracy="12",
            place="Market",
            sensitivity="public",
            language="ar",
        )
    )
    assert errors == {}
    assert fields == {
        "origin": {"channel": "web-form"},
        "title": "T",
        "narrative": "Line one\nline two",
        "categories": ["unlawful-killing", "arbitrary-detention"],
        "occurred": {"start": "2025-03-01T09:30Z", "precision": "minute", "approximate": True},
        "location": {
            "source": "gps",
            "place": "Market",
            "lat": 0.0,
            "lon": 0.5,
            "accuracy_m": 12.0,
        },
        "sensitivity": "public",
        "language": "ar",
    }


@pytest.mark.parametrize(
    ("date", "precision"), [("2025", "year"), ("2025-03", "month"), ("2025-03-01", "day")]
)
def test_partial_dates_keep_their_precision(date: str, precision: str) -> None:
    fields, errors = read_form(
        form(narrative="x", categories="unlawful-killing", occurred_date=date)
    )
    assert errors == {}
    assert fields["occurred"] == {"start": date, "precision": precision, "approximate": False}
    assert "location" not in fields


def test_what_the_form_cannot_read_is_named_per_field() -> None:
    _, errors = read_form(
        form(
            narrative="  ",
            categories=["unlawful-killing", "not-a-listed-key"],
            occurred_date="01/03/2025",
            lat="north",
            lon="inf",
            accuracy="nan",
        )
    )
    assert set(errors) == {"narrative", "categories", "occurred_date", "lat", "lon", "accuracy"}
    _, errors = read_form(
        form(
            narrative="x",
            categories="unlawful-killing",
            occurred_date="2025-03",
            occurred_time="09:30",
        )
    )
    assert set(errors) == {"occurred_date"}  # a time needs a day
    _, errors = read_form(
        form(
            narrative="x",
            categories="unlawful-killing",
            occurred_date="2025-03-01",
            occurred_time="9h",
        )
    )
    assert set(errors) == {"occurred_time"}
    _, errors = read_form(form(narrative="x"))
    assert set(errors) == {"categories", "occurred_date"}


@pytest.mark.parametrize(
    ("message", "control"),
    [
        ("report field occurred.start: is not a real date or time: '2025-02-30'", "occurred_date"),
        ("report field location: needs both lat and lon, or neither", "lat"),
        ("report field location.lon: must be between -180 and 180", "lon"),
        ("report field location.accuracy_m: must be between 0 and 40000000", "accuracy"),
        ("report field location.place: is longer than 500 characters", "place"),
        ("report field narrative: is empty; describe what happened", "narrative"),
        ("report field attachments: too many", ATTACHMENTS_FIELD),
        ("report field people[0].role: must be one of", ""),
        ("wrong passphrase for author key", ""),
    ],
)
def test_node_errors_are_shown_next_to_their_field(message: str, control: str) -> None:
    assert field_of_error(message) == control
    assert control in MESSAGES


def test_sessions_store_only_what_keeps_attachments_and_discard_them_at_the_end() -> None:
    clock = Clock()
    dropped: list[list[KeptAttachment]] = []
    sessions = Sessions(dropped.append, clock, idle_seconds=60, max_sessions=2)
    first = sessions.new()
    again = sessions.get(first.sid)  # nothing stored, the same token
    assert again is not None and again.csrf == first.csrf and len(sessions) == 0
    forged = sessions.get("f" * 43)
    assert forged is not None and not csrf_matches(forged, first.csrf)
    assert sessions.get("not a session id") is None and sessions.get(None) is None
    assert csrf_matches(first, first.csrf) and not csrf_matches(first, "x" + first.csrf)
    assert not csrf_matches(None, first.csrf)
    kept = KeptAttachment("a.jpg", 1, object())  # type: ignore[arg-type]
    first.kept.append(kept)
    sessions.remember(first)
    sessions.remember(first)
    assert sessions.get(first.sid) is first and len(sessions) == 1
    clock.now += 61
    assert sessions.get(first.sid) is not first
    assert dropped == [[kept]]
    a, b, c = sessions.new(), sessions.new(), sessions.new()
    a.kept.append(kept)
    for session in (a, b, c):  # the table holds two: the least recently used goes
        sessions.remember(session)
    assert sessions.get(a.sid) is not a and sessions.get(b.sid) is b
    assert len(dropped) == 2
    sessions.end(b.sid)
    sessions.end("unknown")
    sessions.end_all()
    assert len(sessions) == 0


def test_passphrase_limiter_pauses_a_client_then_doubles_and_caps_everyone() -> None:
    clock = Clock()
    limiter = PassphraseLimiter(clock)
    for _ in range(PassphraseLimiter.FREE_TRIES - 1):
        limiter.failed("phone")
        assert limiter.allowed("phone") == 0
    limiter.failed("phone")
    assert limiter.allowed("phone") == PassphraseLimiter.FIRST_PAUSE
    clock.now += PassphraseLimiter.FIRST_PAUSE
    assert limiter.allowed("phone") == 0
    limiter.failed("phone")
    assert limiter.allowed("phone") == 2 * PassphraseLimiter.FIRST_PAUSE
    limiter.succeeded("phone")
    assert limiter.allowed("phone") == 0
    # Many clients, one key: the whole app stops trying for the rest of the minute.
    clock.now += 3600
    for client in range(PassphraseLimiter.GLOBAL_PER_MINUTE):
        limiter.failed(f"client-{client}")
    assert limiter.allowed("someone-new") > 0
    clock.now += 61
    assert limiter.allowed("someone-new") == 0


def test_request_limiter_allows_a_number_per_minute() -> None:
    clock = Clock()
    limiter = RequestLimiter(3, clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
    clock.now += 61
    assert limiter.allow("a")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("192.168.4.1", False),
        ("node.lan", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "mode", "https"),
    [
        ("127.0.0.1", "auto", False),
        ("::1", "auto", False),
        ("localhost", "auto", False),
        ("127.0.0.1", "always", True),
        ("localhost", "always", True),
        ("192.168.4.1", "auto", True),
        ("10.0.0.1", "always", True),
        ("0.0.0.0", "auto", True),  # noqa: S104 - a string checked, nothing bound
        ("::", "auto", True),
        ("fe80::1", "auto", True),
        ("node.lan", "auto", True),
    ],
)
def test_any_address_but_loopback_is_served_over_https(host: str, mode: str, https: bool) -> None:
    assert serves_https(host, mode) is https


def test_web_tls_accepts_only_auto_or_always(tmp_path: Path) -> None:
    """No config turns HTTPS off beyond loopback: "never" is refused, with the choices."""
    assert load_config(None, {}, {}).web.tls == "auto"
    path = tmp_path / "fieldsync.toml"
    path.write_text('[web]\ntls = "ALWAYS"\n', encoding="utf-8")
    assert load_config(path, {}, {}).web.tls == "always"
    for value in ('"never"', '"off"', "false"):
        path.write_text(f"[web]\ntls = {value}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_config(path, {}, {})
        assert "[web] tls" in str(caught.value) and "auto, always" in str(caught.value)


def test_languages_keep_only_the_locale_data_pages_use_and_format_as_babel_does() -> None:
    """The slim locales (read in a child process) format dates and numbers exactly as
    Babel does with the whole locale, and each language carries its own name."""
    from datetime import UTC, datetime

    from babel import Locale
    from babel.dates import format_datetime
    from babel.numbers import format_decimal

    from fieldsync.web.i18n import LOCALE_KEYS, load_languages

    languages = load_languages()
    assert {"en", "fr", "es", "ar"} <= set(languages)
    assert languages["ar"].name == "العربية" and languages["fr"].name == "Français"
    for code, language in languages.items():
        assert language.data is not None and set(language.data) <= set(LOCALE_KEYS), code
        whole = Locale.parse(code)
        for value in (0.0, 1234567.5, 1.7e9):
            moment = datetime.fromtimestamp(value, UTC)
            assert language.datetime(value) == format_datetime(
                moment, "medium", tzinfo=UTC, locale=whole
            ), code
            assert language.number(value) == format_decimal(value, locale=whole), code


def test_catalogues_are_plain_data_read_apart_and_the_same_as_read_here() -> None:
    """Translations reach the app as plain strings and tuples (no Babel ``Message``
    objects), read in the child; the child's answer equals reading the files in-process."""
    from fieldsync.web.i18n import LOCALES_DIR, load_languages, locale_data_apart, read_translations

    languages = load_languages()
    apart = locale_data_apart(sorted(languages))
    for code, language in languages.items():
        if language.catalog is None:
            assert code == "en"
            continue
        messages = language.catalog.messages
        assert messages and all(type(key) is str for key in messages), code
        assert all(
            type(text) is str or (type(text) is tuple and all(type(t) is str for t in text))
            for text in messages.values()
        ), code
        here = read_translations(LOCALES_DIR / code / "LC_MESSAGES" / "messages.po", code)
        assert apart[code][2] == (here.messages, here.plural_expr), code
        assert language.catalog == here, code


def test_the_app_process_never_loads_babels_message_parser() -> None:
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from fieldsync.web.i18n import load_languages\n"
        "languages = load_languages()\n"
        "assert languages['fr'].gettext('Quick exit') != 'Quick exit'\n"
        "print(sorted(m for m in sys.modules if m.startswith('babel.messages')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


def test_at_start_only_the_source_language_is_read_and_another_on_first_use() -> None:
    """A node keeps the catalogues and locale data of the languages its monitors read:
    the others are named (for the switch on every page) but read when first asked for."""
    from fieldsync.web.i18n import SOURCE_LANGUAGE, load_languages

    def loaded() -> list[str]:
        return [code for code, language in languages.items() if language.loaded]

    languages = load_languages()
    assert loaded() == [SOURCE_LANGUAGE]
    french = languages["fr"]
    assert french.name == "Français" and french.direction == "ltr"  # no reading for these
    assert loaded() == [SOURCE_LANGUAGE]
    french.warm()
    assert loaded() == [SOURCE_LANGUAGE, "fr"]
    assert french.gettext("Quick exit") != "Quick exit"
    assert french.data is not None  # read apart, in the child


def test_templates_compiled_apart_are_the_ones_jinja2_compiles_here() -> None:
    """The child's bytecode covers every template, is what the app loads (nothing is
    compiled in the app), and renders as a template compiled in-process does."""
    import jinja2

    from fieldsync.web import template_code

    directory = template_code.TEMPLATES_DIR
    compiled = template_code.compiled_apart(directory)
    # The same templates (by cache key) as compiling here; not byte for byte: marshalled code
    # differs between processes (hash seed, interned strings), what it renders does not.
    assert compiled.keys() == template_code.compile_all(directory).keys()
    names = jinja2.FileSystemLoader(directory).list_templates()
    assert len(compiled) == len([n for n in names if n.endswith(".html")])

    def environment(cache: jinja2.BytecodeCache | None) -> jinja2.Environment:
        env = jinja2.Environment(  # noqa: S701 - autoescape is among the options
            **template_code.environment_options(directory), bytecode_cache=cache
        )
        template_code.prepare(env)
        return env

    cache = template_code.ChildBytecode(dict(compiled))
    apart = environment(cache)
    template_code.load_all(apart)
    assert cache.compiled == {}  # every template came from the child's code
    here = environment(None)
    context = {
        "title": "Too large",
        "message": "<b>larger</b> than this node accepts",
        "limit": "1 MB",
        "lang": type("Lang", (), {"code": "en", "direction": "ltr", "name": "English"})(),
        "languages": [],
        "gettext": lambda text, **variables: text % variables if variables else text,
        "ngettext": lambda one, many, n, **variables: (one if n == 1 else many) % variables,
        "csrf": "token",
        "path": "/write",
    }
    page = apart.get_template("message.html").render(context)
    assert page == here.get_template("message.html").render(context)
    assert "&lt;b&gt;larger" in page  # autoescaped, as the app's environment does


def test_the_app_compiles_its_templates_itself_if_the_child_fails() -> None:
    import jinja2

    from fieldsync.web import template_code

    directory = template_code.TEMPLATES_DIR
    assert template_code.compiled_apart(directory, timeout=0.001) == {}  # killed: too slow
    env = jinja2.Environment(  # noqa: S701 - autoescape is among the options
        **template_code.environment_options(directory),
        bytecode_cache=template_code.ChildBytecode({}),
    )
    template_code.prepare(env)
    template_code.load_all(env)
    assert env.get_template("message.html") is env.get_template("message.html")  # cached
