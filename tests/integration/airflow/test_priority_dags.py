"""Priority under frequency caps through real DAG runs, in either run order: a higher-priority
program's demand takes the last slot of a cap only when that program would send the message."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from lifecycle.model import schema
from lifecycle.model.ledger import Status, SuppressionReason
from tests.conftest import AS_OF
from tests.support.dagrun import run_dag
from tests.support.journey import messages_already_sent

pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("airflow_db", "sandbox", "test_config")]
M = schema.messages


def _ledger(engine, program: str) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(select(M.c.contact_id, M.c.status, M.c.reason).where(M.c.program == program))
        return {r.contact_id: (r.status, r.reason) for r in rows}


@pytest.mark.parametrize("order", [("promo", "guide"), ("guide", "promo")])
def test_a_suppressed_higher_priority_program_does_not_take_the_last_slot(crm, db_url, monkeypatch, order):
    # 20 customers both promo (priority 40, promotional) and guide (30) want, each with an open
    # support ticket and two emails this week. Promo never writes during an open ticket, so its
    # demand can never use the third email slot: guide sends to all 20 in either order.
    engine, crm_rows = crm
    contacts = []
    for _ in range(20):
        cid = crm_rows.contact(lifecycle_stage="customer")
        crm_rows.row("tickets", ticket_id=f"tk-{cid}", contact_id=cid, status="open", opened_at=AS_OF - timedelta(1))
        messages_already_sent(engine, cid)
        contacts.append(cid)
    for dag_id in order:
        assert run_dag(monkeypatch, db_url, dag_id, AS_OF) == "success"
    promo, guide = _ledger(engine, "promo"), _ledger(engine, "guide")
    assert promo == dict.fromkeys(contacts, (Status.SUPPRESSED, SuppressionReason.OPEN_SUPPORT_TICKET))
    assert guide == dict.fromkeys(contacts, (Status.SENT, None))


@pytest.mark.parametrize("order", [("promo", "guide"), ("guide", "promo")])
def test_a_higher_priority_program_that_would_send_still_wins_the_last_slot(crm, db_url, monkeypatch, order):
    engine, crm_rows = crm
    cid = crm_rows.contact(lifecycle_stage="customer")
    messages_already_sent(engine, cid)
    for dag_id in order:
        assert run_dag(monkeypatch, db_url, dag_id, AS_OF) == "success"
    assert _ledger(engine, "promo") == {cid: (Status.SENT, None)}
    assert _ledger(engine, "guide") == {cid: (Status.CAPPED, "frequency_cap_email: 3 per 7d")}
