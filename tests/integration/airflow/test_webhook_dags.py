"""A webhook program through real DAG runs, posting to the provider sandbox's receiver: consent
and caps hold, every payload is delivered once (signed, with the ledger's idempotency key), also
through 429 and 5xx answers and when the same logical date runs twice."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from lifecycle.model import schema
from lifecycle.model.ledger import Status
from tests.conftest import AS_OF
from tests.support.dagrun import run_dag
from tests.support.journey import messages_already_sent
from tests.support.webhook import use_webhook_program, webhook_contact

pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("airflow_db")]
M = schema.messages


def _ledger(engine) -> dict[str, tuple[str, str | None, str]]:
    with engine.connect() as conn:
        rows = conn.execute(select(M.c.contact_id, M.c.status, M.c.reason, M.c.idempotency_key))
        return {r.contact_id: (r.status, r.reason, r.idempotency_key) for r in rows}


def test_a_webhook_program_delivers_each_payload_once_through_faults_and_reruns(
    crm, db_url, monkeypatch, sandbox, tmp_path
):
    use_webhook_program(tmp_path, monkeypatch)
    engine, c = crm
    posted = [webhook_contact(c) for _ in range(4)]
    no_consent = webhook_contact(c, consent={"sms": "granted"})
    capped = webhook_contact(c)
    messages_already_sent(engine, capped, 1, channel="webhook")
    sandbox.add_fault("webhook", "503", count=2)
    sandbox.add_fault("webhook", "429", count=1, retry_after=0)

    for _ in range(2):  # the same logical date twice: the second run changes nothing
        assert run_dag(monkeypatch, db_url, "signals", AS_OF) == "success"

    ledger = _ledger(engine)
    assert {cid: status for cid, (status, _r, _k) in ledger.items()} == {
        **dict.fromkeys(posted, Status.SENT),
        no_consent: Status.SUPPRESSED,
        capped: Status.CAPPED,
    }
    delivered = Counter(d["idempotency_key"] for d in sandbox.webhook_deliveries())
    assert delivered == Counter(ledger[cid][2] for cid in posted)
