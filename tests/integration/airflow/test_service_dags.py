"""A service program through real DAG runs: its message reaches a contact who unsubscribed from
marketing email, and takes none of the marketing cap's slots."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select

from lifecycle.model import schema
from lifecycle.model.ledger import Status, SuppressionReason
from tests.conftest import AS_OF
from tests.support.dagrun import run_dag
from tests.support.journey import messages_already_sent
from tests.support.service import SERVICE, service_config

pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("airflow_db")]
M = schema.messages


def _ledger(engine, program: str) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(select(M.c.contact_id, M.c.status, M.c.reason).where(M.c.program == program))
        return {r.contact_id: (r.status, r.reason) for r in rows}


def test_a_service_dag_sends_past_a_marketing_unsubscribe_and_leaves_the_marketing_slot(
    crm, db_url, monkeypatch, tmp_path, sandbox
):
    service_config(tmp_path, monkeypatch)
    engine, crm_rows = crm
    unsubscribed = crm_rows.contact()
    with engine.begin() as conn:
        conn.execute(
            insert(schema.suppressions).values(
                contact_id=unsubscribed, channel="email", reason="unsubscribed", source="test", created_at=AS_OF
            )
        )
    one_slot_left = crm_rows.contact()
    messages_already_sent(engine, one_slot_left)
    for dag_id in (SERVICE, "beta"):
        assert run_dag(monkeypatch, db_url, dag_id, AS_OF) == "success"
    assert _ledger(engine, SERVICE) == dict.fromkeys((unsubscribed, one_slot_left), (Status.SENT, None))
    assert _ledger(engine, "beta") == {
        unsubscribed: (Status.SUPPRESSED, SuppressionReason.UNSUBSCRIBED),
        one_slot_left: (Status.SENT, None),
    }


def test_the_dag_docs_say_a_program_is_a_service_program(monkeypatch):
    from lifecycle.airflow.factory import build_all

    monkeypatch.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
    dags = build_all()
    renewal, welcome = dags["renewal"].doc_md, dags["welcome"].doc_md
    assert "**Service program**" in renewal and "not stopped by a marketing unsubscribe" in renewal
    assert "**Caps (policy service_caps):** none (uncapped)" in renewal
    assert "14d before the anchor date (sent to the holdout too) | `renewal/billing_fix` |" in renewal
    assert "Service program" not in welcome
    assert "**Caps (policy):** email 3 per 7d, sms 2 per 7d, all 5 per 7d" in welcome
