"""Every suppression reason is recorded, on SQLite and PostgreSQL; fallbacks re-plan the channel."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert

from lifecycle.model import schema
from tests.conftest import AS_OF
from tests.support.journey import messages, run_program

pytestmark = pytest.mark.usefixtures("test_config")


def _suppress(engine, contact_id: str, channel: str, reason: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.suppressions).values(
                contact_id=contact_id, channel=channel, reason=reason, source="test", created_at=AS_OF
            )
        )


def test_every_reason_is_recorded(crm):
    engine, c = crm
    customer = {"lifecycle_stage": "customer"}
    expected = {
        c.contact(**customer): None,
        c.contact(email=None, phone=None, **customer): "missing_address",
        c.contact(email="no-at-sign.example.com", phone="12", **customer): "invalid_address",
        c.contact(consent={"email": "denied", "sms": "denied"}, **customer): "no_consent",
        c.contact(consent={}, **customer): "no_consent",
    }
    withdrawn = c.contact(**customer)
    c.consent(withdrawn, "email", "withdrawn", at=AS_OF - timedelta(days=2))
    c.consent(withdrawn, "sms", "withdrawn", at=AS_OF - timedelta(days=2))
    expected[withdrawn] = "consent_withdrawn"
    regranted = c.contact(**customer)
    c.consent(regranted, "email", "withdrawn", at=AS_OF - timedelta(days=20))
    c.consent(regranted, "email", "granted", at=AS_OF - timedelta(days=2))
    expected[regranted] = None
    for reason in ("unsubscribed", "hard_bounce", "spam_report"):
        cid = c.contact(consent={"email": "granted"}, **customer)
        _suppress(engine, cid, "email", reason)
        expected[cid] = reason
    ticket = c.contact(**customer)
    c.row("tickets", ticket_id="tk1", contact_id=ticket, status="open", opened_at=AS_OF - timedelta(days=1))
    expected[ticket] = "open_support_ticket"
    solved = c.contact(**customer)
    c.row("tickets", ticket_id="tk2", contact_id=solved, status="solved", opened_at=AS_OF - timedelta(days=9))
    expected[solved] = None
    negotiating = c.contact(account_id="acme", **customer)
    c.row("opportunities", opportunity_id="o1", account_id="acme", stage="negotiation", updated_at=AS_OF)
    expected[negotiating] = "in_sales_negotiation"
    bought = c.contact(**customer)
    c.event(bought, "purchase", AS_OF - timedelta(days=1), amount=10)
    expected[bought] = "recent_purchase"
    bought_long_ago = c.contact(**customer)
    c.event(bought_long_ago, "purchase", AS_OF - timedelta(days=10), amount=10)
    expected[bought_long_ago] = None

    run_program(engine, "promo", AS_OF)
    got = {m["contact_id"]: m["reason"] for m in messages(engine, "promo")}
    assert got == expected
    statuses = {m["contact_id"]: m["status"] for m in messages(engine, "promo")}
    assert all((statuses[cid] == "dry_run") == (reason is None) for cid, reason in expected.items())


def test_converted_between_plan_and_send_is_suppressed_and_sms_fallback_is_used(crm):
    engine, c = crm
    converts = c.contact(lifecycle_stage="customer")
    stops_email = c.contact(lifecycle_stage="customer")
    run_program(engine, "promo", AS_OF)
    _suppress(engine, stops_email, "email", "unsubscribed")
    c.event(converts, "purchase", AS_OF + timedelta(hours=23, minutes=59), amount=10)
    from lifecycle.engine import pipeline

    scope, _programs = pipeline.load_scope("promo", "next", AS_OF + timedelta(days=1))
    pipeline.evaluate(engine, scope)
    pipeline.plan(engine, scope)  # the goal exit has not run yet: the step is planned
    counts = pipeline.suppress(engine, scope)
    assert counts["already_converted"] == 1 and counts["fallback"] == 1
    reminder = {m["contact_id"]: m for m in messages(engine, "promo") if m["step"] == "reminder"}
    assert reminder[converts]["status"] == "suppressed" and reminder[converts]["reason"] == "already_converted"
    assert reminder[stops_email]["channel"] == "sms" and reminder[stops_email]["status"] == "planned"


def test_formatted_but_valid_addresses_are_cleaned_not_suppressed(crm):
    engine, c = crm
    formatted = c.contact(lifecycle_stage="trial", phone=" +1 (415) 555-2671 ")
    national = c.contact(lifecycle_stage="trial", phone="415 555 2672")  # no country code: not E.164
    run_program(engine, "texts", AS_OF)
    got = {m["contact_id"]: (m["status"], m["reason"]) for m in messages(engine, "texts")}
    assert got[formatted] == ("dry_run", None)
    assert got[national] == ("suppressed", "invalid_address")
    from lifecycle.engine.dispatch import load_messages

    with engine.connect() as conn:
        (loaded,) = load_messages(conn, schema.messages.c.contact_id == formatted)
    assert loaded.contact["phone"] == "+14155552671"
