"""Test copies: what a given contact would receive in this run, sent to test recipients only.

A run with test recipients is a dry run for every real contact; the test copies carry no ledger
id, so provider feedback about them never touches a real contact's journey.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, select

from lifecycle.channels.base import OutboundEmail, OutboundSms, SendResult, Transport
from lifecycle.engine.scope import RunScope
from lifecycle.messages.preview import render_step
from lifecycle.model import schema

TEST_MESSAGE_ID = 0


def split_recipients(recipients: Sequence[str]) -> tuple[list[str], list[str]]:
    """Emails and E.164 phone numbers; anything else is a mistake worth stopping for."""
    emails = [r.strip() for r in recipients if "@" in r]
    phones = [r.strip() for r in recipients if r.strip().startswith("+")]
    wrong = [r for r in recipients if r.strip() not in emails + phones]
    if wrong:
        raise ValueError(
            f"test recipients must be email addresses or E.164 numbers (+14155550100); got {len(wrong)} other value(s)"
        )
    return emails, phones


def send_test_copies(
    engine: Engine, run: RunScope, contact_id: str, recipients: Sequence[str], transport: Transport
) -> list[SendResult]:
    """Send the steps this run planned for ``contact_id`` (else the first step) to ``recipients``."""
    emails, phones = split_recipients(recipients)
    m = schema.messages
    with engine.connect() as conn:
        planned = (
            conn.execute(
                select(m.c.step).where(
                    m.c.run_id == run.run_id, m.c.program == run.program.id, m.c.contact_id == contact_id
                )
            )
            .scalars()
            .all()
        )
    steps = [s for s in run.program.steps if s.id in planned] or run.program.steps[:1]
    brand = run.policy.brand.model_dump()
    results: list[SendResult] = []
    for step in steps:
        rendered = render_step(
            engine,
            run.program,
            step,
            contact_id,
            as_of=run.as_of,
            brand=brand,
            links={"unsubscribe": f"{brand['app_url']}/preferences"},
        )
        key = f"test:{run.run_id}:{step.id}"
        if step.channel == "email" and emails:
            results += transport.send_email(
                [
                    OutboundEmail(
                        TEST_MESSAGE_ID,
                        key,
                        contact_id,
                        address,
                        None,
                        f"[TEST] {rendered.subject}",
                        rendered.html or "",
                        rendered.text,
                        categories=("lifecycle-test", run.program.id),
                    )
                    for address in emails
                ]
            )
        if step.channel == "sms" and phones:
            results += transport.send_sms(
                [OutboundSms(TEST_MESSAGE_ID, key, contact_id, phone, f"[TEST] {rendered.text}") for phone in phones]
            )
    return results
