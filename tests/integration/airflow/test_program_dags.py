"""Program DAGs run through real Airflow on SQLite and PostgreSQL: the engine's guarantees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from lifecycle.engine import dispatch
from lifecycle.model import schema
from tests.conftest import AS_OF
from tests.support.dagrun import run_dag
from tests.support.journey import messages_already_sent

pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("airflow_db", "sandbox", "test_config")]
M = schema.messages


def _messages(engine, **where):
    query = select(M.c.program, M.c.contact_id, M.c.channel, M.c.status, M.c.reason)
    for column, value in where.items():
        query = query.where(M.c[column] == value)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query.order_by(M.c.message_id))]


def test_rerunning_a_run_adds_no_message(crm, db_url, monkeypatch):
    engine, crm_rows = crm
    for _ in range(5):
        crm_rows.contact()
    assert run_dag(monkeypatch, db_url, "alpha", AS_OF) == "success"
    first = _messages(engine)
    assert len(first) == 5 and {m[3] for m in first} == {"sent"}
    assert run_dag(monkeypatch, db_url, "alpha", AS_OF) == "success"
    assert _messages(engine) == first


def test_no_granted_marketing_consent_means_nothing_on_that_channel(crm, db_url, monkeypatch):
    engine, crm_rows = crm
    granted = crm_rows.contact(consent={"email": "granted"})
    withdrawn = crm_rows.contact(consent={"email": "granted"})
    crm_rows.consent(withdrawn, "email", "withdrawn", at=AS_OF - timedelta(days=1))
    denied = crm_rows.contact(consent={"email": "denied"})
    missing = crm_rows.contact(consent={})
    transactional_only = crm_rows.contact(consent={})
    crm_rows.consent(transactional_only, "email", "granted", purpose="transactional")
    assert run_dag(monkeypatch, db_url, "alpha", AS_OF) == "success"
    outcome = {m[1]: (m[3], m[4]) for m in _messages(engine)}
    assert outcome[granted] == ("sent", None)
    assert outcome[withdrawn] == ("suppressed", "consent_withdrawn")
    assert outcome[denied] == ("suppressed", "no_consent")
    assert outcome[missing] == ("suppressed", "no_consent")
    assert outcome[transactional_only] == ("suppressed", "no_consent")


@pytest.mark.parametrize("order", [("alpha", "beta"), ("beta", "alpha")])
def test_higher_priority_wins_the_last_capped_slot_in_either_order(crm, db_url, monkeypatch, order):
    engine, crm_rows = crm
    contested = crm_rows.contact()
    messages_already_sent(engine, contested)
    free = crm_rows.contact()
    for dag_id in order:
        assert run_dag(monkeypatch, db_url, dag_id, AS_OF) == "success"
    contested_out = {m[0]: (m[3], m[4]) for m in _messages(engine, contact_id=contested) if m[0] != "earlier"}
    assert contested_out["beta"] == ("sent", None)
    assert contested_out["alpha"] == ("capped", "frequency_cap_email: 3 per 7d")
    free_out = {m[0]: m[3] for m in _messages(engine, contact_id=free)}
    assert free_out == {"alpha": "sent", "beta": "sent"}


def test_sms_due_at_23_local_is_deferred_to_the_morning(crm, db_url, monkeypatch):
    engine, crm_rows = crm
    # 04:00 UTC on 17 Nov is 23:00 on 16 Nov in New York (UTC-5): inside 21:00-08:00 quiet hours.
    late = datetime(2026, 11, 17, 4, 0)
    night = crm_rows.contact(lifecycle_stage="trial", timezone="America/New_York")
    day = crm_rows.contact(lifecycle_stage="trial", timezone="Asia/Tokyo")  # 13:00 there
    # Each run executes on time: its texts go out at its as-of (quiet hours are read again then).
    monkeypatch.setattr(dispatch, "quiet_hours_clock", lambda: late)
    assert run_dag(monkeypatch, db_url, "texts", late) == "success"
    with engine.connect() as conn:
        rows = {r.contact_id: r for r in conn.execute(select(M).where(M.c.program == "texts"))}
    assert rows[night].status == "deferred" and rows[night].reason == "quiet_hours"
    assert rows[night].send_after == datetime(2026, 11, 17, 13, 0)  # 08:00 in New York
    assert rows[day].status == "sent"
    # The next run after the morning sends it, once.
    monkeypatch.setattr(dispatch, "quiet_hours_clock", lambda: datetime(2026, 11, 17, 14, 0))
    assert run_dag(monkeypatch, db_url, "texts", datetime(2026, 11, 17, 14, 0)) == "success"
    with engine.connect() as conn:
        after = conn.execute(select(M.c.status).where(M.c.contact_id == night)).scalars().all()
        total = conn.execute(select(func.count()).select_from(M)).scalar_one()
    assert after == ["sent"] and total == 2


def _funnel_and_audience(engine, program: str) -> tuple[list[tuple], list[str], set[str]]:
    k, a = schema.kpis, schema.audience
    with engine.connect() as conn:
        kpis = sorted(
            tuple(r)
            for r in conn.execute(select(k.c.as_of, k.c.metric, k.c.dimension, k.c.value).where(k.c.program == program))
        )
        audience = sorted(conn.execute(select(a.c.contact_id).where(a.c.program == program)).scalars())
        run_ids = set(conn.execute(select(k.c.run_id).where(k.c.program == program)).scalars())
    return kpis, audience, run_ids


def test_triggering_the_same_logical_date_again_logs_one_funnel_and_one_audience(crm, db_url, monkeypatch):
    """A second DAG run for the same logical date (a new run id, as a backfill or a new trigger
    gives) leaves lifecycle_kpis and lifecycle_audience as one run left them."""
    engine, crm_rows = crm
    for _ in range(4):
        crm_rows.contact()
    assert run_dag(monkeypatch, db_url, "alpha", AS_OF) == "success"
    kpis, audience, first_ids = _funnel_and_audience(engine, "alpha")
    assert len(audience) == 4 and ("planned", 4.0) in {(m, v) for _t, m, _d, v in kpis}
    assert run_dag(monkeypatch, db_url, "alpha", AS_OF) == "success"
    kpis_after, audience_after, second_ids = _funnel_and_audience(engine, "alpha")
    assert first_ids != second_ids and len(second_ids) == 1  # a new run id, and only its rows remain
    assert kpis_after == kpis
    assert audience_after == audience


def test_a_failed_send_batch_fails_the_run_after_logging_the_kpis_and_alerts_the_owner(crm, db_url, monkeypatch):
    """A send batch that fails (here: no provider connection configured) used to end the run
    `success`, because log_kpis (ALL_DONE) was its only last task."""
    from lifecycle.airflow.notifications import Failure, OwnerAlert
    from tests.support.dagrun import load_dags
    from tests.support.local_crm import use_crm

    engine, crm_rows = crm
    for _ in range(2):
        crm_rows.contact()
    monkeypatch.delenv("AIRFLOW_CONN_SENDGRID_DEFAULT", raising=False)
    alerts: list[str] = []
    monkeypatch.setattr(OwnerAlert, "notify", lambda self, context: alerts.append(Failure.from_context(context).where))
    use_crm(monkeypatch, db_url)
    dag = load_dags().get_dag("alpha")
    dag.get_task("send").partial_kwargs["retries"] = 0  # its last try, without waiting for the retries
    run = dag.test(logical_date=AS_OF.replace(tzinfo=UTC))

    assert str(run.state) == "failed"
    kpis, _audience, _ids = _funnel_and_audience(engine, "alpha")
    assert ("planned", 2.0) in {(m, v) for _t, m, _d, v in kpis}
    # One alert, from the task that failed and with its error; check_run only fails the run.
    assert alerts == ["alpha.send"]
