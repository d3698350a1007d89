"""config/sources.yml: a mapping the file itself gets wrong, or leaves an entity out of, breaks only the
programs that read that entity, naming the file, the entry and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lifecycle import config
from lifecycle.config.sources import load_sources
from tests.conftest import ROOT
from tests.support.warehouse import WAREHOUSE_MAPPING


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "config"
    shutil.copytree(ROOT / "config", folder)
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(folder))
    return folder / "sources.yml"


def _without(entity: str) -> str:
    lines, skipping = [], False
    for line in WAREHOUSE_MAPPING.splitlines():
        if not line.startswith(" "):
            skipping = line.startswith(f"{entity}:")
        if not skipping:
            lines.append(line)
    return "\n".join(lines) + "\n"


def test_the_warehouse_mapping_loads_every_program(shipped: Path) -> None:
    shipped.write_text(WAREHOUSE_MAPPING)
    programs, errors = config.load_all_programs()
    assert errors == {}
    assert len(programs) == 8


def test_an_entity_left_out_breaks_only_the_programs_that_read_it(shipped: Path) -> None:
    shipped.write_text(_without("subscriptions"))
    programs, errors = config.load_all_programs()
    assert sorted(errors) == ["renewal", "upsell", "winback"]
    assert "welcome" in programs
    problem = errors["renewal"].problems[0]
    assert str(errors["renewal"]).startswith(str(shipped))
    assert (
        "subscriptions: not mapped, and program renewal reads it in audience.segment — fix: map subscriptions"
        in problem
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("  table: support_tickets\n", "  table: support_tickets\n  query: SELECT 1\n"), "tickets: give either table"),
        (("ticket_id: id, ", ""), "tickets.columns: ticket_id not mapped — fix: map it"),
        (
            ("status: state, opened_at", "state: state, opened_at"),
            "tickets.columns.state: tickets has no column 'state'",
        ),
        (("open: new", "reopened: new"), "tickets.values.status: 'reopened' not a canonical status — fix"),
    ],
)
def test_a_wrong_entry_names_the_entry_and_the_fix(shipped: Path, change, expected) -> None:
    shipped.write_text(WAREHOUSE_MAPPING.replace(*change))
    sources = load_sources()
    assert sources is not None
    assert any(expected in p for p in sources.errors["tickets"]), sources.errors
    _programs, errors = config.load_all_programs()
    assert sorted(errors) == ["abandoned_cart", "reactivation", "upsell", "winback"]  # the open-ticket rule's programs


def test_an_unknown_entity_names_the_canonical_ones(shipped: Path) -> None:
    shipped.write_text(WAREHOUSE_MAPPING + "leads:\n  table: leads\n  columns: {}\n")
    with pytest.raises(config.ConfigError, match="leads: not a canonical entity — fix: use one of"):
        load_sources()
