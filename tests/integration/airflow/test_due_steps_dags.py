"""The due-steps sweep through real DAG runs of ``lifecycle_due_steps`` on SQLite and PostgreSQL:
the cart reminder goes at the first sweep after its due time, a paused program is not swept, and
a sweep after the program's own run sends nothing twice."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from lifecycle.airflow.due_steps import DUE_STEPS_DAG
from lifecycle.model import schema
from lifecycle.model.ledger import Status
from tests.conftest import AS_OF
from tests.support.dagrun import dag_run, run_dag, set_paused
from tests.support.journey import treatment_contact

pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("airflow_db", "sandbox", "shipped_config")]
M = schema.messages
MINUTES = timedelta(minutes=1)


def _cart(engine) -> list[tuple]:
    query = select(M.c.step, M.c.status, M.c.planned_at, M.c.run_id).where(M.c.program == "abandoned_cart")
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query.order_by(M.c.message_id))]


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances() if ti.task_id.startswith("abandoned_cart.")}


def test_the_cart_reminder_goes_at_the_first_sweep_after_it_is_due_and_only_while_the_program_runs(
    crm, db_url, monkeypatch, sandbox
):
    engine, crm_rows = crm
    cid = treatment_contact(crm_rows, "abandoned_cart")
    crm_rows.event(cid, "cart_abandoned", AS_OF - 28 * MINUTES, cart_id="c-1", product="Template Pack", value=87.0)
    assert run_dag(monkeypatch, db_url, "abandoned_cart", AS_OF) == "success"  # enrolls; due at 15:32
    set_paused("abandoned_cart", False)
    early = dag_run(monkeypatch, db_url, DUE_STEPS_DAG, AS_OF + 30 * MINUTES)
    assert str(early.state) == "success" and _cart(engine) == []
    assert _states(early)["abandoned_cart.sweep"] == "success"
    # Paused, the program is not swept: its task says so and nothing goes.
    set_paused("abandoned_cart", True)
    paused = dag_run(monkeypatch, db_url, DUE_STEPS_DAG, AS_OF + 35 * MINUTES)
    assert str(paused.state) == "success" and _cart(engine) == []
    assert _states(paused)["abandoned_cart.sweep"] == "skipped"
    # Resumed, the next sweep sends it, under the sweep's run id.
    set_paused("abandoned_cart", False)
    due = dag_run(monkeypatch, db_url, DUE_STEPS_DAG, AS_OF + 40 * MINUTES)
    assert str(due.state) == "success"
    ((step, status, planned_at, run_id),) = _cart(engine)
    assert (step, status, planned_at) == ("reminder", Status.SENT, AS_OF + 40 * MINUTES)
    assert run_id == f"due_steps:abandoned_cart:{due.run_id}"
    assert len(sandbox.sendgrid_messages()) == 1
    # The program's own run (its as-of before the sweep's) and the next sweep send nothing more.
    assert run_dag(monkeypatch, db_url, "abandoned_cart", AS_OF + 30 * MINUTES) == "success"
    assert str(dag_run(monkeypatch, db_url, DUE_STEPS_DAG, AS_OF + 45 * MINUTES).state) == "success"
    assert len(_cart(engine)) == 1 and len(sandbox.sendgrid_messages()) == 1
