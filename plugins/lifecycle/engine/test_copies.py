"""Test copies: what a given contact would receive in this run, sent to test recipients only.

A run with test recipients is a dry run for every real contact; the test copies carry no ledger
id, so provider feedback about them never touches a real contact's journey.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, select

from lifecycle.channels import registry
from lifecycle.channels.base import SendResult, Transport
from lifecycle.engine.scope import RunScope
from lifecycle.messages.preview import render_step
from lifecycle.model import schema


def split_recipients(recipients: Sequence[str]) -> dict[str, list[str]]:
    """The recipients by the channel whose address each is written as (emails, E.164 phone
    numbers...); anything else is a mistake worth stopping for."""
    by_channel = {
        name: [r.strip() for r in recipients if registry.get(name).is_test_recipient(r)] for name in registry.names()
    }
    known = {r for found in by_channel.values() for r in found}
    wrong = [r for r in recipients if r.strip() not in known]
    if wrong:
        written = " or ".join(registry.get(name).test_recipients for name in registry.names())
        raise ValueError(f"test recipients must be {written}; got {len(wrong)} other value(s)")
    return by_channel


def send_test_copies(
    engine: Engine, run: RunScope, contact_id: str, recipients: Sequence[str], transport: Transport
) -> list[SendResult]:
    """Send the steps this run planned for ``contact_id`` (else the first step) to ``recipients``."""
    by_channel = split_recipients(recipients)
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
        channel = registry.get(step.channel)
        if by_channel[step.channel]:
            copies = [
                channel.test_copy(key, contact_id, address, rendered, run.program.id)
                for address in by_channel[step.channel]
            ]
            results += transport.send(step.channel, copies)
    return results
