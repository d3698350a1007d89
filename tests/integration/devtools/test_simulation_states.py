"""Lead nurture and renewal convert through CRM state, not events: the simulation plants an
opportunity at a qualified stage and a renewed subscription, measurement reads them, and the
Campaigns page says what the KPI is measured from."""

from __future__ import annotations

import html
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from lifecycle import config
from lifecycle.devtools import simulation
from lifecycle.model import schema
from lifecycle.model.db import get_engine
from lifecycle.reporting import digest
from lifecycle.web.campaigns import campaigns_page

START = datetime(2026, 11, 16, 15, 0)
DAYS = 4
PLANTED = {"renewal": 0.3, "lead_nurture": 0.3}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> simulation.SimulationReport:
    url = f"sqlite:///{tmp_path_factory.mktemp('simulation-states') / 'crm.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        mp.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
        return simulation.simulate(url, 3000, DAYS, START, PLANTED, seed=7)


def test_the_conversions_through_crm_state_are_planted_as_that_state(shipped_config):
    programs, _errors = config.load_all_programs()
    catalog = config.load_segments().parsed
    assert simulation.conversion_for(programs["lead_nurture"], catalog) == simulation.StateChange(
        "opportunities", {"stage": "qualification"}
    )
    assert simulation.conversion_for(programs["renewal"], catalog) == simulation.StateChange(
        "subscriptions", {"status": "active", "renews_at": simulation.PAST_ANCHOR}
    )


@pytest.mark.parametrize("program", sorted(PLANTED))
def test_lead_nurture_and_renewal_are_measured_non_zero(report, program):
    assert program in report.results and program not in report.skipped
    result = report.results[program]
    assert result.conversion_event.endswith(" change")
    assert result.lift.treatment_conversions > 0 and result.lift.treatment_rate > 0


def test_the_planted_changes_are_in_the_crm(report):
    engine = get_engine(report.url)
    o, e, s = schema.opportunities, schema.enrollments, schema.subscriptions
    with engine.connect() as conn:
        planted = conn.execute(
            select(func.count()).select_from(o).where(o.c.opportunity_id.like("sim-lead_nurture-%"))
        ).scalar_one()
        renewed = conn.execute(
            select(func.count())
            .select_from(e.join(s, s.c.contact_id == e.c.contact_id))
            .where(e.c.program == "renewal", s.c.renews_at > e.c.anchor_at + timedelta(days=300))
        ).scalar_one()
    assert planted >= report.results["lead_nurture"].lift.treatment_conversions > 0
    assert renewed >= report.results["renewal"].lift.treatment_conversions


def test_the_page_says_what_the_kpi_is_measured_from(report, shipped_config):
    engine = get_engine(report.url)
    page = html.unescape(campaigns_page(engine, as_of=START + DAYS * timedelta(days=1)))
    for program, table in (("lead_nurture", "opportunities"), ("renewal", "subscriptions")):
        card = page[page.index(f'<div class="panel" id="{program}">') :]
        card = card[: card.find('<div class="panel" id=', 1)]
        assert f'data-measured-from="{table}">Measured from the CRM\'s {table}' in card
        assert f"<b>{digest.NOT_MEASURED}</b>" in card
        assert 'data-group="treatment"><div class="muted small">treatment</div><div class="rate">0.0%' not in card
