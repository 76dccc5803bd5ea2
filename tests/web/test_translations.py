"""Every message of the web app is translated in every catalogue we ship (a missing or
fuzzy translation fails), and the pages render in each language with its direction."""

from __future__ import annotations

import pytest

from fieldsync.web.i18n import load_languages, negotiate
from tests.web.messages import extracted, untranslated

SHIPPED = ("fr", "es", "ar")


def test_messages_are_extracted_from_code_and_templates() -> None:
    ids = {m.id for m in extracted() if m.id}
    assert "Quick exit" in ids  # a template
    assert "Describe what happened." in ids  # form_view.py, marked with N_
    assert len(ids) > 100


@pytest.mark.parametrize("language", SHIPPED)
def test_catalogue_translates_every_message(language: str) -> None:
    assert untranslated(language) == []


def test_languages_their_names_and_directions() -> None:
    languages = load_languages()
    assert set(languages) == {"en", *SHIPPED}
    assert languages["ar"].direction == "rtl"
    assert languages["fr"].direction == "ltr"
    assert languages["fr"].name == "Français"
    assert languages["ar"].gettext("Quick exit") == "خروج سريع"
    assert languages["fr"].number(1234.5) == "1\u202f234,5"
    assert languages["ar"].ngettext("Wait about %(num)s minute.", "x", 2) == "انتظر دقيقتين."


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        ("fr-FR,fr;q=0.9,en;q=0.8", "fr"),
        ("de-DE,de;q=0.9,ar;q=0.5", "ar"),
        ("es;q=0.1,fr;q=0.2", "fr"),
        ("de", "en"),
        ("", "en"),
        ("fr;q=0, es", "es"),
        ("fr;q=nonsense,ar", "ar"),
    ],
)
def test_language_from_accept_language(header: str, chosen: str) -> None:
    assert negotiate(header, {"en", *SHIPPED}) == chosen
