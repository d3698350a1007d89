"""``lifecycle sources check`` on the warehouse-shaped CRM: counts, masked samples, and a broken mapping
named with the programs it breaks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lifecycle.config.sources import load_sources
from lifecycle.devtools import cli
from lifecycle.devtools.sources_check import check_sources
from lifecycle.model.db import source_engine
from tests.conftest import AS_OF, ROOT
from tests.support.warehouse import WAREHOUSE_MAPPING, canonical_crm, write_warehouse


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("warehouse")
    canonical = canonical_crm(f"sqlite:///{tmp / 'canonical.db'}", 60, AS_OF)
    url = f"sqlite:///{tmp / 'warehouse.db'}"
    write_warehouse(canonical, url)
    return url


def _check(tmp_path: Path, monkeypatch, mapping: str, url: str) -> tuple[int, str]:
    cfg = tmp_path / "config"
    shutil.copytree(ROOT / "config", cfg)
    (cfg / "sources.yml").write_text(mapping)
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(cfg))
    lines: list[str] = []
    code = check_sources(source_engine(url), load_sources(), lines.append)
    return code, "\n".join(lines)


def test_a_fitting_source_reports_counts_and_masked_samples(tmp_path, monkeypatch, warehouse) -> None:
    mapping = WAREHOUSE_MAPPING.replace("  table: users\n", "  table: users\n  custom: {tz_name: tz}\n", 1)
    code, report = _check(tmp_path, monkeypatch, mapping, warehouse)
    assert code == 0, report
    assert "contacts: ok" in report and "  contacts: table users, 21 columns mapped, custom ['tz_name']" in report
    assert "    rows: 60" in report
    assert "sample: contact_id=" in report and "tz_name=" in report
    assert "•••@" in report
    assert "@example" not in report.replace("•••@", "")
    assert "the source fits the mapping" in report


def test_missing_and_mistyped_columns_name_the_programs_they_break(tmp_path, monkeypatch, warehouse) -> None:
    mapping = WAREHOUSE_MAPPING.replace("requester", "requested_by").replace(
        "    renews_at: renewal_date", "    renews_at: card_status"
    )
    mapping = mapping.replace("opportunities:\n", "unused_opportunities:\n").split("unused_opportunities:")[0] + (
        "tickets:" + mapping.split("tickets:")[1]
    )
    code, report = _check(tmp_path, monkeypatch, mapping, warehouse)
    assert code == 1
    assert "tickets: WRONG" in report
    assert "tickets.columns.contact_id: column 'requested_by' is not in support_tickets" in report
    assert "subscriptions: WRONG" in report
    assert "subscriptions.columns.renews_at: 'card_status' gives values that are not a timestamp" in report
    assert "breaks: renewal (" in report
    assert "  segments reading it: " in report and "active_subscription" in report
    assert "opportunities: not mapped — breaks lead_nurture (reads it in audience.segment)" in report


def test_the_command(tmp_path, monkeypatch, warehouse, capsys) -> None:
    cfg = tmp_path / "config"
    shutil.copytree(ROOT / "config", cfg)
    (cfg / "sources.yml").write_text(WAREHOUSE_MAPPING)
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(cfg))
    assert cli.main(["sources", "check", "--url", warehouse]) == 0
    assert "events: ok" in capsys.readouterr().out
