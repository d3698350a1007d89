"""The program DAGs' docs read as the Campaigns page does: durations as program files write them,
step timing in words, segments in the files' own YAML."""

from __future__ import annotations

import re

import pytest

from lifecycle import config
from lifecycle.airflow.factory import build_all
from lifecycle.reporting import display


@pytest.fixture(scope="module")
def docs() -> dict[str, str]:
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        env.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
        programs, _errors = config.load_all_programs()
        return {pid: build_all()[pid].doc_md or "" for pid in programs}


def test_no_doc_shows_a_python_value(docs):
    for pid, doc in docs.items():
        settings = doc.split("- **Owner:**")[1]  # after the program's own description
        assert not re.search(r"\d+:\d\d:\d\d|-?\d+ days?, |\{'|timedelta|datetime", settings), pid


def test_steps_read_as_timing_in_words(docs):
    renewal, welcome = docs["renewal"], docs["welcome"]
    assert "| 1 | `notice` | email | 30d before the anchor date | `renewal/notice` |" in renewal
    assert "| 1 | `welcome` | email | at enrollment | `welcome/welcome` |" in welcome
    assert "| 2 | `activation_nudge` | email → sms | 2d after enrollment |" in welcome
    assert "attribution window\n  45d" in renewal


def test_segments_are_written_as_the_program_file_writes_them(docs):
    renewal = docs["renewal"]
    assert (
        "**Entry segment:** `{related: subscriptions, where: {status: active, renews_at: {within_next: 30d}}}`"
        in renewal
    )
    assert "**Exit goal:** `{related: subscriptions, where: {status: active, renews_at: {after: anchor}}}`" in renewal


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (None, "none"),
        ({"event": "activated", "since": "enrollment"}, "{event: activated, since: enrollment}"),
        ({"all": [{"stage": "lead"}, {"not": {"segment": "x"}}]}, "{all: [{stage: lead}, {not: {segment: x}}]}"),
    ],
)
def test_a_segment_is_one_line_of_yaml(raw, shown):
    assert display.segment(raw) == shown
