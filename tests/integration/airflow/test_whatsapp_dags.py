"""WhatsApp programs through real DAG runs, sending to the provider sandbox: inside the contact's
24-hour window the free-form text goes, outside it the approved content template, and a step
without one fails with its reason; consent and caps hold, and a second run of the same logical
date (or one through 5xx answers) sends nothing twice."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from lifecycle.model import schema
from lifecycle.model.ledger import Status
from tests.conftest import AS_OF
from tests.support.dagrun import run_dag
from tests.support.invariants import deliveries
from tests.support.journey import messages_already_sent
from tests.support.whatsapp import (
    OUTSIDE_WINDOW,
    TEMPLATE_SID,
    TEMPLATE_TEXT,
    outbound,
    phone_of,
    use_whatsapp_programs,
    whatsapp_contact,
    wrote,
)

pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("airflow_db")]
M = schema.messages


@pytest.fixture
def whatsapp(sandbox, tmp_path, monkeypatch):
    use_whatsapp_programs(tmp_path, monkeypatch)
    sandbox.approve_content(TEMPLATE_SID, TEMPLATE_TEXT)
    return sandbox


def _ledger(engine, program: str) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(select(M.c.contact_id, M.c.status, M.c.reason).where(M.c.program == program))
        return {r.contact_id: (r.status, r.reason) for r in rows}


def test_whatsapp_program_runs_keep_the_window_template_consent_and_cap_rules(crm, db_url, monkeypatch, whatsapp):
    engine, c = crm
    inside = whatsapp_contact(c, first_name="Ada")
    wrote(whatsapp, engine, inside, timedelta(hours=2))
    outside = whatsapp_contact(c, first_name="Grace")
    no_consent = whatsapp_contact(c, consent={"sms": "granted"})
    capped = whatsapp_contact(c)
    messages_already_sent(engine, capped, 1, channel="whatsapp")
    note_inside = whatsapp_contact(c, "notes", first_name="Barbara")
    wrote(whatsapp, engine, note_inside, timedelta(hours=1))
    note_outside = whatsapp_contact(c, "notes")

    for _ in range(2):  # the same logical date twice: the second run changes nothing
        assert run_dag(monkeypatch, db_url, "chats", AS_OF) == "success"
        assert run_dag(monkeypatch, db_url, "notes", AS_OF) == "success"

    assert _ledger(engine, "chats") == {
        inside: (Status.SENT, None),
        outside: (Status.SENT, None),
        no_consent: (Status.SUPPRESSED, "no_consent"),
        capped: (Status.CAPPED, "frequency_cap_whatsapp: 1 per 7d"),
    }
    assert _ledger(engine, "notes") == {note_inside: (Status.SENT, None), note_outside: (Status.FAILED, OUTSIDE_WINDOW)}
    sent = outbound(whatsapp)
    assert sent[phone_of(engine, inside)]["body"] == "Lifecycle: hi Ada, thanks for writing to us."
    assert sent[phone_of(engine, outside)]["body"] == "Hi Grace, news from Lifecycle is waiting for you."
    assert sent[phone_of(engine, note_inside)]["body"] == "Lifecycle: hi Barbara, thanks for writing to us."
    assert Counter(deliveries(whatsapp).values()) == {1: 3}


def test_a_whatsapp_program_run_through_provider_5xx_sends_each_message_once(crm, db_url, monkeypatch, whatsapp):
    engine, c = crm
    contacts = [whatsapp_contact(c) for _ in range(4)]
    whatsapp.add_fault("twilio", "503", count=3)

    assert run_dag(monkeypatch, db_url, "chats", AS_OF) == "success"

    assert _ledger(engine, "chats") == dict.fromkeys(contacts, (Status.SENT, None))
    assert Counter(deliveries(whatsapp).values()) == {1: 4}
