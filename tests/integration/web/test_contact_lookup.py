"""The contact lookup on the Campaigns app: "why didn't she get it?" answered from the ledger,
enrollments, consents and suppressions (also those of another contact row with the same address),
with addresses masked and only for signed-in users."""

from __future__ import annotations

import html
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import insert

from lifecycle.model import schema
from lifecycle.model.ledger import EnrollmentState, ExitReason, Status, SuppressionReason
from lifecycle.web import create_app
from lifecycle.web.campaigns import contact_page
from tests.conftest import AS_OF


def _story(engine, crm_rows) -> str:
    """Ada: in renewal, her notice suppressed (no consent), her billing fix sent; she left welcome
    converted. Her twin row (same email) unsubscribed, which holds for Ada's address too."""
    ada = crm_rows.contact("ada", email="Ada.Lovelace@Example.com ", phone="+14155550123")
    crm_rows.contact("ada-twin", email="ada.lovelace@example.com")
    crm_rows.consent(ada, "email", "withdrawn", at=AS_OF - timedelta(days=2))
    e, m = schema.enrollments, schema.messages
    common = {
        "contact_id": ada,
        "entry": 1,
        "group": "treatment",
        "next_step": 1,
        "exit_reason": None,
        "exited_at": None,
    }
    message = {"contact_id": ada, "entry": 1, "priority": 0, "group": "treatment", "due_at": AS_OF, "reason": None}
    with engine.begin() as conn:
        conn.execute(
            insert(e),
            [
                common
                | {"enrollment_id": 1, "program": "renewal", "state": EnrollmentState.ACTIVE, "enrolled_at": AS_OF},
                common
                | {
                    "enrollment_id": 2,
                    "program": "welcome",
                    "state": EnrollmentState.EXITED,
                    "exit_reason": ExitReason.CONVERTED,
                    "enrolled_at": AS_OF - timedelta(days=20),
                    "exited_at": AS_OF - timedelta(days=18),
                },
            ],
        )
        conn.execute(
            insert(m),
            [
                message
                | {
                    "idempotency_key": "renewal:ada:1:notice",
                    "program": "renewal",
                    "enrollment_id": 1,
                    "step": "notice",
                    "step_index": 0,
                    "channel": "email",
                    "planned_channel": "email",
                    "template": "renewal/notice",
                    "status": Status.SUPPRESSED,
                    "reason": SuppressionReason.CONSENT_WITHDRAWN,
                    "run_id": "r1",
                    "planned_at": AS_OF,
                    "sent_at": None,
                },
                message
                | {
                    "idempotency_key": "renewal:ada:1:billing_fix",
                    "program": "renewal",
                    "enrollment_id": 1,
                    "step": "billing_fix",
                    "step_index": 1,
                    "channel": "sms",
                    "planned_channel": "email",
                    "template": "renewal/billing_fix",
                    "status": Status.DELIVERED,
                    "run_id": "r2",
                    "planned_at": AS_OF + timedelta(days=1),
                    "sent_at": AS_OF + timedelta(days=1, minutes=1),
                },
            ],
        )
        conn.execute(
            insert(schema.suppressions),
            {
                "contact_id": "ada-twin",
                "channel": "email",
                "reason": SuppressionReason.UNSUBSCRIBED,
                "source": "sendgrid",
                "created_at": AS_OF - timedelta(days=1),
                "address": "ada.lovelace@example.com",
            },
        )
    return ada


def test_the_timeline_says_why_each_message_did_or_did_not_go(shipped_crm):
    engine, crm_rows = shipped_crm
    ada = _story(engine, crm_rows)
    page = html.unescape(contact_page(engine, ada))
    messages = page.split('id="messages"')[1].split('id="enrollments"')[0]
    assert messages.index("notice") < messages.index("billing_fix")
    assert "Suppressed</td><td><code>suppressed</code></td><td>consent_withdrawn</td>" in messages
    assert "Sent</td><td><code>delivered</code></td>" in messages and "(fallback from email)" in messages
    enrollments = page.split('id="enrollments"')[1].split('id="consents"')[0]
    assert "Welcome / onboarding" in enrollments and "converted" in enrollments and "Renewal reminders" in enrollments
    consents = page.split('id="consents"')[1].split('id="suppressions"')[0]
    email_marketing = consents.split("<tr><td>email</td><td>marketing</td>")[1].split("</tr>")[0]
    assert "withdrawn" in email_marketing and ">no</td>" in email_marketing
    email_service = consents.split("<tr><td>email</td><td>transactional</td>")[1].split("</tr>")[0]
    assert "no consent row" in email_service and "implied" in email_service and ">yes</td>" in email_service
    suppressions = page.split('id="suppressions"')[1]
    assert "unsubscribed" in suppressions and "another contact with the same address" in suppressions


def test_addresses_are_masked(shipped_crm):
    engine, crm_rows = shipped_crm
    ada = _story(engine, crm_rows)
    page = html.unescape(contact_page(engine, ada))
    assert "a•••@example.com" in page and "+1••••••••23" in page
    assert "lovelace" not in page.lower() and "4155550123" not in page


def test_an_unknown_contact_says_so(shipped_crm):
    engine, _crm_rows = shipped_crm
    page = contact_page(engine, "nobody")
    assert 'id="not-found"' in page and "<b>nobody</b>" in page


def test_the_lookup_is_for_signed_in_users_only():
    with TestClient(create_app()) as client:
        response = client.get("/campaigns/contact", params={"contact_id": "ada"}, follow_redirects=False)
    assert response.status_code == 303 and "/login" in response.headers["location"]


def test_the_campaigns_page_offers_the_lookup(shipped_crm):
    from lifecycle.web.campaigns import campaigns_page

    engine, _crm_rows = shipped_crm
    page = campaigns_page(engine)
    assert '<form class="lookup" method="get" action="campaigns/contact">' in page
    assert '<input id="contact_id" name="contact_id"' in page
