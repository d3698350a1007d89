"""A step that chooses among WhatsApp, SMS and email, through real DAG runs sending to the provider
sandbox: each contact's message goes once, on the channel its rule and its reach give (WhatsApp
through the approved content template), a second run of the same logical date sends nothing
again, and the contact lookup shows why each went where it went."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from sqlalchemy import select

from lifecycle.model import schema
from lifecycle.model.ledger import Status
from lifecycle.web.campaigns import campaigns_page, contact_page
from tests.conftest import AS_OF
from tests.support.channel_choice import choice_contact, prefers, use_choice_programs
from tests.support.dagrun import run_dag
from tests.support.invariants import deliveries
from tests.support.whatsapp import TEMPLATE_SID, TEMPLATE_TEXT, outbound, phone_of

pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("airflow_db")]
M = schema.messages
PROGRAM = "by_preference"


@pytest.fixture
def choosing(sandbox, tmp_path, monkeypatch):
    use_choice_programs(tmp_path, monkeypatch)
    sandbox.approve_content(TEMPLATE_SID, TEMPLATE_TEXT)
    return sandbox


def test_each_contact_gets_one_message_on_the_channel_chosen_for_it(crm, db_url, monkeypatch, choosing):
    engine, c = crm
    by_email = choice_contact(c, PROGRAM, first_name="Ada")
    prefers(engine, by_email, "email")
    by_sms = choice_contact(c, PROGRAM, consent={"sms": "granted", "email": "granted"}, first_name="Grace")
    prefers(engine, by_sms, "whatsapp")
    by_whatsapp = choice_contact(c, PROGRAM, first_name="Barbara")
    unreachable = choice_contact(c, PROGRAM, consent={})

    for _ in range(2):  # the same logical date twice: the second run sends nothing
        assert run_dag(monkeypatch, db_url, PROGRAM, AS_OF) == "success"

    with engine.connect() as conn:
        rows = conn.execute(select(M).where(M.c.program == PROGRAM)).mappings().all()
    ledger = {r["contact_id"]: (r["channel"], r["status"], r["channel_reason"], r["reason"]) for r in rows}
    assert ledger == {
        by_email: ("email", Status.SENT, "preferred_channel", None),
        by_sms: ("sms", Status.SENT, "fallback: whatsapp unreachable (no_consent)", None),
        by_whatsapp: ("whatsapp", Status.SENT, "order", None),
        unreachable: ("whatsapp", Status.SUPPRESSED, None, "no_consent"),
    }
    assert Counter(deliveries(choosing).values()) == {1: 3}
    texts = outbound(choosing)
    assert texts[phone_of(engine, by_sms)]["to"] == phone_of(engine, by_sms)  # an SMS, not whatsapp:
    whatsapp = texts[phone_of(engine, by_whatsapp)]
    assert whatsapp["to"].startswith("whatsapp:")
    assert whatsapp["body"] == "Hi Barbara, news from Lifecycle is waiting for you."  # the approved template
    assert len(choosing.sendgrid_messages()) == len(choosing.sendgrid_messages(f"{by_email}@example.com")) == 1
    assert "(fallback: whatsapp unreachable (no_consent))" in contact_page(engine, by_sms)
    assert "(preferred_channel)" in contact_page(engine, by_email)
    # The Campaigns page: the step's channels and rule, and the program's figures per channel.
    page = campaigns_page(engine, as_of=AS_OF)
    assert "(by preferred_channel)" in page
    table = re.search(r'<table class="steps small channels" data-program="by_preference">(.*?)</table>', page, re.S)
    assert table, "no per-channel table for by_preference"
    sent = dict(re.findall(r'<tr data-channel="(\w+)">.*?data-figure="sent">(\d+)<', table.group(1), re.S))
    assert sent == {"email": "1", "sms": "1", "whatsapp": "1"}
