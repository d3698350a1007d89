"""Render a program step for one contact exactly as the send task would: ``lifecycle preview``
and the test copies a manual run sends to test recipients."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from lifecycle import config, paths
from lifecycle.messages.rendering import Rendered, message_context, render
from lifecycle.model import schema
from lifecycle.model.db import crm_url, get_engine, utc_naive


def render_step(
    engine: Engine,
    program: config.Program,
    step: config.Step,
    contact_id: str,
    *,
    as_of: datetime,
    brand: Mapping[str, Any],
    links: Mapping[str, str],
) -> Rendered:
    """Render ``step`` for ``contact_id`` with the context the send task would build."""
    c, a, e, en = schema.contacts, schema.accounts, schema.events, schema.enrollments
    with engine.connect() as conn:
        contact = conn.execute(select(c).where(c.c.contact_id == contact_id)).mappings().first()
        if contact is None:
            raise LookupError(f"contact {contact_id!r} is not in the CRM")
        account = conn.execute(select(a).where(a.c.account_id == contact["account_id"])).mappings().first()
        enrollment = conn.execute(
            select(en.c.variant, en.c.trigger)
            .where(en.c.program == program.id, en.c.contact_id == contact_id)
            .order_by(en.c.entry.desc())
            .limit(1)
        ).first()
        trigger = enrollment.trigger if enrollment else None
        if trigger is None and program.audience.trigger_event:
            trigger = conn.execute(
                select(e.c.properties)
                .where(
                    e.c.contact_id == contact_id,
                    e.c.event_type.in_(program.audience.trigger_event),
                    e.c.occurred_at <= utc_naive(as_of),
                )
                .order_by(e.c.occurred_at.desc())
                .limit(1)
            ).scalar()
    variant = enrollment.variant if enrollment else (program.ab_test.variants[0].name if program.ab_test else None)
    context = message_context(
        contact, program=program.id, step=step.id, variant=variant, trigger=trigger, account=account, links=links
    )
    context["brand"] = dict(brand)
    return render(step.template, step.channel, context)


def preview(url: str | None, program_id: str, contact_id: str, *, step: str | None, as_of: datetime) -> str:
    """The rendered parts of ``step`` (default: the first) of ``program_id`` for ``contact_id``."""
    program = config.load_program(paths.config_dir() / "programs" / f"{program_id}.yml")
    chosen = next((s for s in program.steps if s.id == step), None) if step else program.steps[0]
    if chosen is None:
        raise SystemExit(f"{program_id} has no step {step!r}; steps: {[s.id for s in program.steps]}")
    try:
        rendered = render_step(
            get_engine(url or crm_url()),
            program,
            chosen,
            contact_id,
            as_of=as_of,
            brand=config.load_policy().brand.model_dump(),
            links={"unsubscribe": "https://example.invalid/unsubscribe/preview"},
        )
    except LookupError as exc:
        raise SystemExit(str(exc)) from None
    if chosen.channel == "sms":
        return f"SMS ({len(rendered.text)} chars)\n{rendered.text}"
    return f"Subject: {rendered.subject}\n\n--- text ---\n{rendered.text}\n--- html ---\n{rendered.html}"
