"""Sales tasks and the activity write-back through real DAG runs against the provider sandbox's
CRM: a task for the contact's owner (signed, idempotent, due within the step's ``due_within``), a
contact without an owner suppressed with the reason, and every sent touch posted once as an
activity, through 5xx answers, re-runs and an endpoint that is down."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert, select

from lifecycle.model import schema
from lifecycle.model.ledger import Status
from lifecycle.model.ledger import SuppressionReason as R
from tests.conftest import AS_OF
from tests.support.dagrun import run_dag
from tests.support.journey import holdout_contact, treatment_contact
from tests.support.sales import use_sales_programs

pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("airflow_db")]
M = schema.messages
W = schema.activity_writebacks


def _ledger(engine, program: str) -> dict[str, dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(M).where(M.c.program == program)).mappings()
        return {r["contact_id"]: dict(r) for r in rows}


def _written_back(engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(W.c.message_id)).scalars())


def test_a_task_for_each_owner_once_through_faults_and_reruns_and_none_without_an_owner(
    crm, db_url, monkeypatch, sandbox, tmp_path
):
    use_sales_programs(tmp_path, monkeypatch)
    engine, c = crm
    # No consent rows at all: a task reaches the salesperson, so the contact's consent is not asked.
    owned = {
        treatment_contact(c, "calls", consent={}, industry="calls", owner=f"owner-{i}"): f"owner-{i}" for i in range(3)
    }
    ownerless = treatment_contact(c, "calls", consent={}, industry="calls", owner=None)
    blank = treatment_contact(c, "calls", consent={}, industry="calls", owner="  ")
    # Opted out of everything ("unsubscribe from all"): no task; out of email only: a task.
    opted_out = treatment_contact(c, "calls", consent={}, industry="calls", owner="owner-x")
    owned[treatment_contact(c, "calls", consent={}, industry="calls", owner="owner-e")] = "owner-e"
    email_only = list(owned)[-1]
    with engine.begin() as conn:
        listed = [(opted_out, ch) for ch in ("email", "sms", "whatsapp")] + [(email_only, "email")]
        conn.execute(
            insert(schema.suppressions),
            [
                {
                    "contact_id": cid,
                    "channel": ch,
                    "reason": R.UNSUBSCRIBED,
                    "source": "preference_centre",
                    "created_at": AS_OF,
                }
                for cid, ch in listed
            ],
        )
    sandbox.add_fault("sales_tasks", "503", count=1)
    sandbox.add_fault("sales_tasks", "drop_after_accept", count=1)  # recorded, answer lost: retried, replayed

    for _ in range(2):  # the same logical date twice: the second run creates nothing
        assert run_dag(monkeypatch, db_url, "calls", AS_OF) == "success"

    ledger = _ledger(engine, "calls")
    assert {cid: ledger[cid]["status"] for cid in owned} == dict.fromkeys(owned, Status.SENT)
    for cid in (ownerless, blank):
        assert (ledger[cid]["status"], ledger[cid]["reason"]) == (Status.SUPPRESSED, R.MISSING_ADDRESS)
    assert (ledger[opted_out]["status"], ledger[opted_out]["reason"]) == (Status.SUPPRESSED, R.UNSUBSCRIBED)
    tasks = sandbox.sales_tasks()
    assert Counter(t["idempotency_key"] for t in tasks) == Counter(ledger[cid]["idempotency_key"] for cid in owned)
    assert sandbox.app.sales_tasks.replays >= 1
    for task in tasks:
        payload = task["payload"]
        cid = payload["contact_id"]
        assert payload["owner_id"] == owned[cid]
        assert payload["subject"] == "High-intent lead: call Ada within 4h"
        assert (payload["priority"], payload["type"], payload["idempotency_key"]) == (
            "high",
            "call",
            task["idempotency_key"],
        )
        due = datetime.fromisoformat(payload["due_at"]).replace(tzinfo=None)
        assert timedelta(hours=3) < due - ledger[cid]["sent_at"] <= timedelta(hours=4, minutes=1)  # due_within: 4h
        assert ledger[cid]["provider_message_id"] == task["id"]


def test_each_sent_touch_is_written_back_once_through_a_500_and_a_rerun(crm, db_url, monkeypatch, sandbox, tmp_path):
    use_sales_programs(tmp_path, monkeypatch)
    engine, c = crm
    sent = [treatment_contact(c, "touches", industry="touches") for _ in range(3)]
    no_consent = treatment_contact(c, "touches", consent={}, industry="touches")
    held_out = holdout_contact(c, "touches", industry="touches")
    sandbox.add_fault("crm_activities", "500", count=1)

    for _ in range(2):
        assert run_dag(monkeypatch, db_url, "touches", AS_OF) == "success"

    ledger = _ledger(engine, "touches")
    assert {cid: ledger[cid]["status"] for cid in sent} == dict.fromkeys(sent, Status.SENT)
    assert ledger[no_consent]["status"] == Status.SUPPRESSED and ledger[held_out]["status"] == Status.HELD_OUT
    activities = sandbox.activities()
    assert sorted(a["payload"]["contact_id"] for a in activities) == sorted(sent)
    assert sandbox.app.crm_activities.replays == 0  # the re-run posted nothing again
    assert _written_back(engine) == sorted(ledger[cid]["message_id"] for cid in sent)
    first = next(a for a in activities if a["payload"]["contact_id"] == sent[0])
    row = ledger[sent[0]]
    assert first["idempotency_key"] == str(row["message_id"])
    assert {k: first["payload"][k] for k in ("channel", "program", "step", "template", "provider_message_id")} == {
        "channel": "email",
        "program": "touches",
        "step": "hello",
        "template": "simple/hello",
        "provider_message_id": row["provider_message_id"],
    }


def test_a_write_back_endpoint_that_is_down_fails_no_send_and_the_next_run_posts(
    crm, db_url, monkeypatch, sandbox, tmp_path
):
    from lifecycle.devtools.local import connection_json

    use_sales_programs(tmp_path, monkeypatch)
    engine, c = crm
    contact = treatment_contact(c, "touches", industry="touches")
    monkeypatch.setenv(
        "AIRFLOW_CONN_CRM_ACTIVITIES_DEFAULT",
        connection_json("http", host="http://127.0.0.1:9/sales/activities", password=sandbox.webhook_secret),
    )
    assert run_dag(monkeypatch, db_url, "touches", AS_OF) == "success"
    assert _ledger(engine, "touches")[contact]["status"] == Status.SENT
    assert sandbox.activities() == [] and _written_back(engine) == []

    monkeypatch.setenv(
        "AIRFLOW_CONN_CRM_ACTIVITIES_DEFAULT",
        connection_json("http", host=sandbox.activities_url(), password=sandbox.webhook_secret),
    )
    assert run_dag(monkeypatch, db_url, "touches", AS_OF + timedelta(hours=1)) == "success"
    assert [a["payload"]["contact_id"] for a in sandbox.activities()] == [contact]
