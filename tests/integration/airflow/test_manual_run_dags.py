"""Manual runs through real Airflow on SQLite and PostgreSQL: a test send and a dry run change
nothing real and do not depend on the program DAG's pause state; a program run is always real and
refuses the options that used to make it half a test."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from lifecycle.model import schema
from tests.conftest import AS_OF
from tests.support.dagrun import dag_run, run_dag, set_paused
from tests.support.journey import messages_already_sent

pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("airflow_db", "test_config", "sandbox")]
M = schema.messages
ENGINE_TABLES = (schema.messages, schema.enrollments, schema.kpis, schema.audience)


def _tables(engine) -> dict[str, list[tuple]]:
    """Every row of the engine tables a run writes, in key order."""
    with engine.connect() as conn:
        return {
            t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))] for t in ENGINE_TABLES
        }


def _is_paused(dag_id: str) -> bool:
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return bool(session.scalar(select(DagModel.is_paused).where(DagModel.dag_id == dag_id)))


def _returned(run, task_id: str):
    """What a task of a finished DAG run returned (its XCom)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == run.dag_id,
                XComModel.run_id == run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == "return_value",
            )
        ).one()
        return XComModel.deserialize_value(row)


@pytest.fixture
def alerts(monkeypatch) -> list[tuple[str, str]]:
    """The (dag.task, error) of every owner alert that fires."""
    from lifecycle.airflow.notifications import Failure, OwnerAlert

    fired: list[tuple[str, str]] = []

    def notify(self, context):
        failure = Failure.from_context(context)
        fired.append((failure.where, failure.error))

    monkeypatch.setattr(OwnerAlert, "notify", notify)
    return fired


def test_a_test_send_reaches_only_the_test_recipient_and_changes_nothing_real(crm, db_url, monkeypatch, sandbox):
    engine, crm_rows = crm
    shown = crm_rows.contact(first_name="Grace")
    for _ in range(3):
        crm_rows.contact()
    assert run_dag(monkeypatch, db_url, "alpha", AS_OF) == "success"
    set_paused("alpha", True)
    before = _tables(engine)
    sandbox.reset()

    run = dag_run(
        monkeypatch,
        db_url,
        "lifecycle_test_send",
        AS_OF + timedelta(hours=1),
        program="alpha",
        contact=shown,
        recipients=["qa@example.com"],
    )

    assert str(run.state) == "success"
    accepted = sandbox.sendgrid_messages()
    assert [m["to"] for m in accepted] == ["qa@example.com"] and sandbox.twilio_messages() == []
    assert accepted[0]["subject"] == "[TEST] Hello Grace from alpha"
    # The test copy is about a real contact: its links must not carry that contact's token.
    test_page = "http://127.0.0.1:9/lifecycle/unsubscribe/test-copy"
    assert accepted[0]["headers"]["List-Unsubscribe"] == f"<{test_page}>"
    assert f"Unsubscribe: {test_page}" in accepted[0]["text"]
    assert _returned(run, "send_test_copies") == {
        "program": "alpha",
        "contact": shown,
        "sent": {"hello": 1},
        "not_sent": {},
    }
    assert _tables(engine) == before
    assert _is_paused("alpha")


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"recipients": ["+14155550100"]}, "step hello is email; no email recipient given"),
        ({"recipients": ["qa@example.com"], "step": "goodbye"}, "alpha has no step 'goodbye'; its steps: hello"),
        ({"recipients": ["qa@example.com"], "contact": "nobody"}, "contact 'nobody' is not in the CRM"),
    ],
    ids=["no-recipient-for-the-channel", "unknown-step", "unknown-contact"],
)
def test_a_test_send_that_can_send_nothing_fails_saying_why(crm, db_url, monkeypatch, sandbox, alerts, params, error):
    engine, crm_rows = crm
    contact = crm_rows.contact()
    before = _tables(engine)
    state = run_dag(
        monkeypatch, db_url, "lifecycle_test_send", AS_OF, program="alpha", **{"contact": contact, **params}
    )
    assert state == "failed"
    assert [where for where, _error in alerts] == ["lifecycle_test_send.send_test_copies"]
    assert error in alerts[0][1], alerts[0][1]
    assert sandbox.sendgrid_messages() == [] and sandbox.twilio_messages() == []
    assert _tables(engine) == before


def _logged_funnel(engine, program: str) -> dict:
    """The funnel log_kpis wrote, shaped as a dry run reports it (``sent`` is what it would send)."""
    k = schema.kpis
    funnel: dict = {}
    with engine.connect() as conn:
        rows = conn.execute(select(k.c.metric, k.c.dimension, k.c.value).where(k.c.program == program))
        for metric, dimension, value in rows:
            if metric.startswith("kpi_"):
                continue
            metric = "would_send" if metric == "sent" else metric
            if dimension:
                funnel.setdefault(metric, {})[dimension] = int(value)
            else:
                funnel[metric] = int(value)
    return funnel


def test_a_dry_run_reports_the_funnel_the_real_run_then_logs_and_changes_nothing(crm, db_url, monkeypatch, sandbox):
    engine, crm_rows = crm
    for _ in range(3):
        crm_rows.contact()
    crm_rows.contact(consent={})  # suppressed: no consent
    capped = crm_rows.contact()
    messages_already_sent(engine, capped, count=3)  # email 3 per 7 days: capped
    set_paused("alpha", True)
    before = _tables(engine)

    run = dag_run(monkeypatch, db_url, "lifecycle_dry_run", AS_OF, program="alpha", as_of=AS_OF.isoformat())

    assert str(run.state) == "success"
    report = _returned(run, "dry_run_program")
    assert _tables(engine) == before and sandbox.sendgrid_messages() == []
    assert _is_paused("alpha")
    assert report["funnel"]["would_send"] == {"email": 3}
    assert report["funnel"]["suppressed"] == {"no_consent": 1}
    assert report["rendered"] == 3 and report["render_failures"] == []

    assert run_dag(monkeypatch, db_url, "alpha", AS_OF) == "success"
    assert _logged_funnel(engine, "alpha") == report["funnel"]
    assert len(sandbox.sendgrid_messages()) == 3


@pytest.mark.parametrize(
    ("conf", "instead"),
    [
        ({"dry_run": True}, "dry_run is no longer a program-run option: trigger lifecycle_dry_run with program=alpha"),
        (
            {"test_recipients": ["qa@example.com"], "test_contact": "c1"},
            "test_recipients is no longer a program-run option: trigger lifecycle_test_send with program=alpha",
        ),
    ],
    ids=["dry_run", "test_recipients"],
)
def test_a_program_run_with_a_retired_option_fails_in_its_first_task_and_plans_nothing(
    crm, db_url, monkeypatch, sandbox, alerts, conf, instead
):
    engine, crm_rows = crm
    for _ in range(3):
        crm_rows.contact()
    before = _tables(engine)
    run = dag_run(monkeypatch, db_url, "alpha", AS_OF, **conf)
    assert str(run.state) == "failed"
    where, error = alerts[0]
    assert where == "alpha.evaluate_segment"
    assert instead in error and "nothing was planned or sent" in error
    assert _tables(engine) == before
    assert sandbox.sendgrid_messages() == []
