"""Provider feedback closes the loop: a STOP reply or a bounce, posted back by the sandbox as a
signed webhook, suppresses that contact on the very next program run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from lifecycle.channels.providers import ProviderTransport, links_from_connection
from lifecycle.devtools.local import WebApp, provider_connections
from lifecycle.engine import pipeline
from lifecycle.model import schema
from lifecycle.model.ledger import WENT_OUT
from lifecycle.sandbox import SandboxServer
from tests.conftest import AS_OF
from tests.support.local_crm import use_crm

pytestmark = pytest.mark.usefixtures("test_config")
M = schema.messages


@pytest.fixture
def loop(crm, db_url, monkeypatch):
    """The CRM, the webhook app on loopback, and the sandbox posting signed webhooks to it."""
    use_crm(monkeypatch, db_url)
    web = WebApp().start()
    with SandboxServer(
        sendgrid_webhook_url=f"{web.base_url}/webhooks/sendgrid",
        twilio_inbound_url=f"{web.base_url}/webhooks/twilio/inbound",
    ) as sandbox:
        for key, value in provider_connections(sandbox, web.base_url, "loop-secret").items():
            monkeypatch.setenv(key, value)
        yield crm[0], crm[1], sandbox
    web.stop()


def _run(engine, program: str, as_of) -> None:
    scope, programs = pipeline.load_scope(program, f"loop_{as_of:%Y%m%d%H}", as_of)
    pipeline.run_program(engine, scope, programs, ProviderTransport(), links=links_from_connection())


def _outcomes(engine, program: str, step: str) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(M.c.contact_id, M.c.status, M.c.reason).where(M.c.program == program, M.c.step == step)
        )
        return {r.contact_id: (r.status, r.reason) for r in rows}


def test_stop_reply_suppresses_sms_on_the_next_run(loop):
    engine, crm_rows, sandbox = loop
    stopper = crm_rows.contact(lifecycle_stage="trial", phone="+14155550142")
    stayer = crm_rows.contact(lifecycle_stage="trial", phone="+14155550143")
    _run(engine, "texts", AS_OF)
    assert {c: s in WENT_OUT for c, (s, _r) in _outcomes(engine, "texts", "ping").items()} == {
        stopper: True,
        stayer: True,
    }
    sandbox.inbound_sms("+14155550142", "STOP")
    sandbox.flush()
    _run(engine, "texts", AS_OF + timedelta(days=1))
    follow_up = _outcomes(engine, "texts", "follow_up")
    assert follow_up[stopper] == ("suppressed", "sms_stop")
    assert follow_up[stayer][0] in WENT_OUT
    assert [m["to"] for m in sandbox.twilio_messages()].count("+14155550142") == 1
    consent = schema.consents
    with engine.connect() as conn:
        newest = conn.execute(
            select(consent.c.status, consent.c.source)
            .where(consent.c.contact_id == stopper, consent.c.channel == "sms")
            .order_by(consent.c.captured_at.desc())
            .limit(1)
        ).one()
    assert newest.status == "withdrawn" and newest.source


def test_bounce_suppresses_email_on_the_next_run(loop):
    engine, crm_rows, sandbox = loop
    bouncer = crm_rows.contact(lifecycle_stage="customer", email="gone@bounce.test")
    fine = crm_rows.contact(lifecycle_stage="customer")
    _run(engine, "promo", AS_OF)
    sandbox.flush()
    offer = _outcomes(engine, "promo", "offer")
    assert offer[bouncer][0] == "bounced" and offer[fine][0] == "delivered"
    _run(engine, "promo", AS_OF + timedelta(days=1))
    reminder = _outcomes(engine, "promo", "reminder")
    assert reminder[fine][0] in WENT_OUT
    # Email is impossible after the hard bounce, so the step falls back to SMS.
    with engine.connect() as conn:
        channel = conn.execute(
            select(M.c.channel).where(M.c.contact_id == bouncer, M.c.step == "reminder")
        ).scalar_one()
    assert channel == "sms" and reminder[bouncer][0] in WENT_OUT
