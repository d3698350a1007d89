"""CRM text bound for email headers: the recipient's display name and the subject."""

from __future__ import annotations

import pytest

from lifecycle.channels.email import MAX_DISPLAY_NAME, MAX_SUBJECT, display_name, header_text


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        ("Ada", "Lovelace", "Ada Lovelace"),
        ("Ada\r\nBcc: victim@example.net", None, "Ada Bcc: victim@example.net"),
        ("Ada <ceo@evil.example>", "Lovelace", "Ada Lovelace"),
        ('"Ada" \\', "O'Neil", "Ada O'Neil"),
        ("Ada\x00\x07\u2028", "L", "Ada L"),
        ("<>", None, None),
        (None, None, None),
        ("Zoë 👩🏽‍💻", None, "Zoë 👩🏽‍💻"),
    ],
)
def test_a_display_name_is_one_line_with_no_address_or_quotes(first, last, expected):
    assert display_name({"first_name": first, "last_name": last}) == expected


def test_a_long_display_name_is_cut():
    name = display_name({"first_name": "A" * 5_000})
    assert name is not None and len(name) == MAX_DISPLAY_NAME and name.endswith("…")


@pytest.mark.parametrize("size", [MAX_SUBJECT + 1, 998, 10_000])
def test_a_subject_is_capped_with_an_ellipsis(size):
    subject = header_text("x" * size, MAX_SUBJECT)
    assert len(subject) == MAX_SUBJECT and subject.endswith("…")


def test_a_subject_within_the_limit_is_kept_as_written():
    assert header_text("Hello Zoë 👩🏽‍💻🚀\r\n from alpha", MAX_SUBJECT) == "Hello Zoë 👩🏽‍💻🚀 from alpha"
