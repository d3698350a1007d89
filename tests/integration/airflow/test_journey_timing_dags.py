"""Journey timing through real DAG runs of the shipped programs, on SQLite and PostgreSQL: steps
timed from the trigger event, late steps skipped, a skipped step leaving the run to the next."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from lifecycle.model import schema
from lifecycle.model.ledger import SkipReason, Status
from tests.conftest import AS_OF
from tests.support.dagrun import run_dag
from tests.support.journey import treatment_contact

pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("airflow_db", "sandbox", "shipped_config")]
M = schema.messages
HOUR = timedelta(hours=1)


def _steps(engine, program: str) -> list[tuple]:
    query = select(M.c.contact_id, M.c.step, M.c.status, M.c.reason, M.c.planned_at).where(M.c.program == program)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query.order_by(M.c.message_id))]


def test_a_cart_abandoned_three_hours_before_the_first_run_gets_its_reminder_in_that_run(crm, db_url, monkeypatch):
    engine, crm_rows = crm
    cid = treatment_contact(crm_rows, "abandoned_cart")
    crm_rows.event(cid, "cart_abandoned", AS_OF - 3 * HOUR, cart_id="c-1", product="Template Pack", value=87.0)
    assert run_dag(monkeypatch, db_url, "abandoned_cart", AS_OF) == "success"
    assert _steps(engine, "abandoned_cart") == [(cid, "reminder", Status.SENT, None, AS_OF)]


def test_after_an_outage_the_missed_reminders_are_skipped_as_late(crm, db_url, monkeypatch):
    engine, crm_rows = crm
    cid = treatment_contact(crm_rows, "abandoned_cart")
    crm_rows.event(cid, "cart_abandoned", AS_OF - HOUR / 2, cart_id="c-1", product="Template Pack", value=87.0)
    assert run_dag(monkeypatch, db_url, "abandoned_cart", AS_OF) == "success"
    assert run_dag(monkeypatch, db_url, "abandoned_cart", AS_OF + 72 * HOUR) == "success"
    back = AS_OF + 72 * HOUR
    assert _steps(engine, "abandoned_cart") == [
        (cid, "reminder", Status.SKIPPED, SkipReason.STEP_LATE, back),
        (cid, "second_reminder", Status.SKIPPED, SkipReason.STEP_LATE, back),
        (cid, "last_call", Status.SENT, None, back),
    ]


def test_a_renewal_a_week_away_gets_the_week_reminder_in_the_run_that_skips_the_earlier_steps(crm, db_url, monkeypatch):
    engine, crm_rows = crm
    cid = treatment_contact(crm_rows, "renewal", lifecycle_stage="customer", plan="growth")
    crm_rows.consent(cid, "email", "granted", purpose="transactional")
    crm_rows.row(
        "subscriptions",
        subscription_id="sub-1",
        contact_id=cid,
        plan="growth",
        status="active",
        renews_at=AS_OF + timedelta(days=6, hours=20),
        billing_status="ok",
        mrr=490.0,
    )
    assert run_dag(monkeypatch, db_url, "renewal", AS_OF) == "success"
    assert _steps(engine, "renewal") == [
        (cid, "notice", Status.SKIPPED, SkipReason.STEP_LATE, AS_OF),
        (cid, "billing_fix", Status.SKIPPED, SkipReason.STEP_CONDITION_NOT_MET, AS_OF),
        (cid, "week_reminder", Status.SENT, None, AS_OF),
    ]
    # A re-run of the same day plans nothing more.
    assert run_dag(monkeypatch, db_url, "renewal", AS_OF) == "success"
    assert len(_steps(engine, "renewal")) == 3
