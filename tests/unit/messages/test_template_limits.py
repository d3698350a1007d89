"""Bounds on what one template expression may allocate: ordinary uses of the same operators,
filters and methods render as before, and the same ones at absurd sizes fail with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle.messages.rendering import RenderError, environment, render

ORDINARY = {
    "{{ '-' * 3 }}": "---",
    "{{ 2 ** 10 }}": "1024",
    "{{ 10.0 ** 2 }}": "100.0",
    "{{ 7 % 3 }}": "1",
    "{{ '%5s|' % 'ab' }}": "   ab|",
    "{{ '%.2f' % 3.14159 }}": "3.14",
    "{{ '%s %s'|format('a', 'b') }}": "a b",
    "{{ '{:>5}|'.format('ab') }}": "   ab|",
    "{{ 'ab'|center(6) }}|": "  ab  |",
    "{{ 'ab'.ljust(4) }}|": "ab  |",
    "{{ 'plan: pro'|replace('pro', 'business') }}": "plan: business",
    "{{ [1, 2, 3, 4]|slice(2)|list }}": "[[1, 2], [3, 4]]",
}

ABSURD = {
    "{{ 'x' * 10 ** 8 }}": "a repeated string or list's length may be at most 1,000,000",
    "{{ [0] * 10 ** 8 }}": "a repeated string or list's length may be at most 1,000,000",
    "{{ 3 ** 10000000 }}": "an integer power's size in bits may be at most 4,096",
    "{{ '%*s' % (10 ** 8, 'x') }}": "a format width may be at most 10,000",
    "{{ '%(n)99999999s' % {'n': 'x'} }}": "a format width may be at most 10,000",
    "{{ '%99999999s'|format('x') }}": "a format width may be at most 10,000",
    "{{ '{:>{w}}'.format('x', w=10 ** 8) }}": "a format width may be at most 10,000",
    "{{ 'x'.zfill(10 ** 8) }}": "a width or count may be at most 10,000",
    "{{ 'a\\nb'|indent(10 ** 8) }}": "a width or count may be at most 10,000",
    "{{ [1]|slice(10 ** 8)|list }}": "a width or count may be at most 10,000",
    "{{ ('x' * 10000).replace('x', 'y' * 1000) }}": "a replacement's result length may be at most 1,000,000",
}


def _render(tmp_path: Path, body: str) -> str:
    (tmp_path / "t.sms.j2").write_text(body)
    return render("t", "sms", {}, root=tmp_path).text


@pytest.mark.parametrize(("body", "expected"), ORDINARY.items())
def test_ordinary_uses_render(tmp_path, body, expected):
    assert environment(str(tmp_path)).from_string(body).render() == expected


@pytest.mark.parametrize(("body", "problem"), ABSURD.items())
def test_absurd_sizes_fail_with_the_limit_named(tmp_path, body, problem):
    with pytest.raises(RenderError, match="SecurityError: " + problem):
        _render(tmp_path, body)
