"""Test sends: what one contact would receive from a program, sent to test recipients only.

A test send reads the CRM and the contact's journey and writes nothing: no ledger row, no
enrollment, no cap slot. Its copies are marked ``[TEST]`` and carry no ledger id, so provider
feedback about them never touches a real contact's journey, and their unsubscribe links lead to a
page that says they are test copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from lifecycle import config
from lifecycle.channels import registry
from lifecycle.channels.base import SendResult, Transport
from lifecycle.engine.scope import RunScope
from lifecycle.messages.preview import render_step
from lifecycle.messages.rendering import RenderError
from lifecycle.model import schema
from lifecycle.model.ledger import EnrollmentState, Status

ALL_STEPS = "all"
"""The ``step`` that asks for every step of the program."""


class NothingSent(ValueError):
    """A test send sent nothing: the message names what to change (contact, step, recipients)."""


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
        raise NothingSent(f"test recipients must be {written}; got {len(wrong)} other value(s)")
    return by_channel


def next_step(conn: Connection, program: config.Program, contact_id: str) -> config.Step:
    """The contact's next step: the one after the last step planned in its active enrollment,
    else the program's first step."""
    e, m = schema.enrollments, schema.messages
    active = (
        select(e.c.enrollment_id)
        .where(e.c.program == program.id, e.c.contact_id == contact_id, e.c.state == EnrollmentState.ACTIVE)
        .order_by(e.c.entry.desc())
        .limit(1)
        .scalar_subquery()
    )
    last = conn.execute(select(func.max(m.c.step_index)).where(m.c.enrollment_id == active)).scalar_one()
    index = 0 if last is None else last + 1
    if index >= len(program.steps):
        raise NothingSent(f"contact {contact_id!r} has had every step of {program.id}; name a step or {ALL_STEPS!r}")
    return program.steps[index]


def choose_steps(conn: Connection, program: config.Program, contact_id: str, step: str | None) -> list[config.Step]:
    """The steps a test send covers: ``None`` for the contact's next step, a step id, or ``all``."""
    if step is None:
        return [next_step(conn, program, contact_id)]
    if step == ALL_STEPS:
        return list(program.steps)
    chosen = [s for s in program.steps if s.id == step]
    if not chosen:
        steps = ", ".join(s.id for s in program.steps)
        raise NothingSent(f"{program.id} has no step {step!r}; its steps: {steps} (or {ALL_STEPS!r})")
    return chosen


@dataclass
class CopiesSent:
    """What a test send sent (steps and how many copies each) and why any step was not sent."""

    program: str
    contact: str
    sent: dict[str, int] = field(default_factory=dict)
    not_sent: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A small, address-free dict for the task's log and XCom."""
        return asdict(self)


def send_test_copies(
    engine: Engine,
    run: RunScope,
    contact_id: str,
    recipients: Sequence[str],
    transport: Transport,
    *,
    step: str | None = None,
    unsubscribe_url: str,
) -> CopiesSent:
    """Send the test recipients what ``contact_id`` would receive from ``run.program`` (its next step,
    a named step, or every step), each step on its channel to the recipients written as that
    channel's address. Raises :class:`NothingSent` when nothing could be sent (unknown contact or
    step, no recipient for the step's channel, templates or provider refusing), and
    :class:`LookupError` when the contact's CRM row cannot be read."""
    by_channel = split_recipients(recipients)
    if not any(by_channel.values()):
        raise NothingSent("no test recipient given")
    program = run.program
    c = schema.contacts
    with engine.connect() as conn:
        if conn.execute(select(c.c.contact_id).where(c.c.contact_id == contact_id).limit(1)).first() is None:
            raise NothingSent(f"contact {contact_id!r} is not in the CRM")
        steps = choose_steps(conn, program, contact_id, step)
    brand = run.policy.brand.model_dump()
    report = CopiesSent(program.id, contact_id)
    for chosen in steps:
        addresses = by_channel[chosen.channel]
        if not addresses:
            report.not_sent[chosen.id] = f"step {chosen.id} is {chosen.channel}; no {chosen.channel} recipient given"
            continue
        try:
            rendered = render_step(
                engine,
                program,
                chosen,
                contact_id,
                as_of=run.as_of,
                brand=brand,
                links={"unsubscribe": unsubscribe_url},
            )
        except RenderError as exc:
            report.not_sent[chosen.id] = str(exc)
            continue
        channel = registry.get(chosen.channel)
        key = f"test:{run.run_id}:{chosen.id}"
        copies = [channel.test_copy(key, contact_id, address, rendered, program.id) for address in addresses]
        results: list[SendResult] = list(transport.send(chosen.channel, copies))
        refused = [r.reason or r.status for r in results if r.status != Status.SENT]
        if refused:
            report.not_sent[chosen.id] = f"{len(refused)} of {len(results)} cop(ies) not sent: {refused[0]}"
        if len(refused) < len(results):
            report.sent[chosen.id] = len(results) - len(refused)
    if not report.sent:
        reasons = "; ".join(report.not_sent.values())
        raise NothingSent(f"nothing sent for contact {contact_id!r}: {reasons}")
    return report
