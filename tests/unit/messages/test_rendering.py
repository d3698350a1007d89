"""Template helpers: the indefinite article a sentence needs before a CRM value."""

from __future__ import annotations

import pytest

from lifecycle.messages.rendering import with_article


@pytest.mark.parametrize(
    ("noun", "lower", "expected"),
    [
        ("Software Engineer", True, "a software engineer"),
        ("Operations Manager", True, "an operations manager"),
        ("CRM Manager", True, "a CRM manager"),
        ("SDR", False, "an SDR"),
        ("CMO", True, "a CMO"),
        ("Head of Marketing", False, "a Head of Marketing"),
        ("unicorn", False, "a unicorn"),
        ("  Analyst ", False, "an Analyst"),
        ("", False, ""),
    ],
)
def test_with_article_chooses_by_the_first_sound(noun, lower, expected):
    assert with_article(noun, lower=lower) == expected
