"""The public consent pages' words: every language has exactly the English entries, with the same
placeholders, and the choice of language (``?lang``, the contact's locale, ``Accept-Language``,
English) reads every form a locale or header comes in and never fails on a bad one."""

from __future__ import annotations

import pytest

from lifecycle.messages import i18n

SEED_LOCALES = ["de-DE", "en-AU", "en-GB", "en-US", "es-ES", "es-US", "fr-CA", "fr-FR", "ja-JP", "pt-BR"]


@pytest.mark.parametrize("language", sorted(i18n.CATALOGUES))
def test_every_language_has_exactly_the_english_entries_and_placeholders(language):
    catalogue = i18n.CATALOGUES[language]
    assert set(catalogue) == set(i18n.EN)
    for key, words in catalogue.items():
        assert words.strip(), f"{language}.{key} is empty"
        assert i18n.placeholders(words) == i18n.placeholders(i18n.EN[key]), f"{language}.{key}"


def test_the_languages_asked_for_are_there():
    assert {"en", "de", "fr", "es", "nl", "it", "pt"} <= set(i18n.CATALOGUES)


def test_translations_are_translated():
    """A language other than English says its buttons and titles in its own words."""
    for language, catalogue in i18n.CATALOGUES.items():
        if language == "en":
            continue
        for key in ("preferences_title", "save_button", "confirm_button", "pending", "email_ignore"):
            assert catalogue[key] != i18n.EN[key], f"{language}.{key} is English"


@pytest.mark.parametrize(
    ("locale", "language"),
    [
        ("de-DE", "de"),
        ("de_DE", "de"),
        ("DE", "de"),
        (" fr_FR ", "fr"),
        ("fr-CA", "fr"),
        ("pt-BR", "pt"),
        ("pt_PT", "pt"),
        ("nl-BE", "nl"),
        ("it", "it"),
        ("es-419", "es"),
        ("en_US.UTF-8", "en"),
        ("zh-Hant-TW", None),
        ("hi-IN", None),
        ("xx", None),
        ("", None),
        ("   ", None),
        ("<script>", None),
        ("de-DE\x00", "de"),
        (None, None),
        (42, None),
    ],
)
def test_a_locale_gives_its_language_without_the_region(locale, language):
    assert i18n.language_of(locale) == language


def test_every_seeded_locale_gives_a_language():
    for locale in SEED_LOCALES:
        assert i18n.negotiate(contact_locale=locale) == locale[:2]


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7", "de"),
        ("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5", "fr"),
        ("en;q=0.5, nl;q=0.8", "nl"),  # by q-value, not by order
        ("it, es", "it"),  # the header's order among equals
        ("da, en-gb;q=0.8, de;q=0.9", "de"),  # a language we lack is passed over
        ("de;q=0, fr;q=0.1", "fr"),  # q=0: not wanted
        ("de;q=0.000", None),
        ("de;q=1.5, es;q=0.2", "es"),  # an impossible q is unreadable
        ("pt-BR;q=0.9", "pt"),
        ("*", None),
        ("zh-CN, ja;q=0.4", "ja"),
        ("", None),
        (None, None),
        (";;;,,q=x", None),
        ("de;q=abc, es", "es"),
        ("\x00\xff garbage, fr", "fr"),
        ("en-US" + ", xx" * 5000, "en"),  # a huge header is read only so far
        ("xx, " * 500 + "de", None),
    ],
)
def test_accept_language_by_q_value(header, language):
    assert i18n.from_accept_language(header) == language


@pytest.mark.parametrize(
    ("override", "locale", "header", "language"),
    [
        ("", "de-DE", "fr", "de"),  # the contact's locale before the browser's
        ("it", "de-DE", "fr", "it"),  # an explicit ?lang before both
        ("klingon", "de-DE", "fr", "de"),  # an unknown ?lang is passed over
        ("", "hi-IN", "es;q=0.8", "es"),  # a locale we lack: the browser's
        ("", None, "nl-NL", "nl"),
        ("", "", "", "en"),
        ("", "zz", "garbage", "en"),
        (None, None, None, "en"),
    ],
)
def test_negotiation_order(override, locale, header, language):
    assert i18n.negotiate(override=override, contact_locale=locale, accept_language=header) == language


def test_text_fills_in_values_and_falls_back_to_english():
    assert i18n.text("de", "channel_choice", channel="SMS") == "Marketing per SMS"
    assert i18n.text("xx", "save_button") == "Save preferences"
    assert i18n.text("fr", "email_subject", brand="{brand} & Co") == "Confirmez votre abonnement à {brand} & Co"
    assert i18n.channel_name("de", "email") == "E-Mail"
    assert i18n.channel_name("de", "carrier_pigeon") == "carrier_pigeon"
