"""Render a program step for one contact exactly as the send task would: ``lifecycle preview``
and the test copies ``lifecycle_test_send`` sends to test recipients."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from lifecycle import config, paths
from lifecycle.messages.context import MessageData, crm_columns, read_crm, template_context
from lifecycle.messages.rendering import Rendered, render
from lifecycle.model import channels, schema
from lifecycle.model.db import get_engine, state_url, utc_naive


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
    """Render ``step`` for ``contact_id`` from the same CRM reading and template context the send
    task uses. The trigger is the contact's newest enrollment's (else its newest trigger event up to
    ``as_of``), the variant that enrollment's (else the A/B test's first)."""
    c, a, en = schema.contacts, schema.accounts, schema.enrollments
    newest = en.c.program == program.id, en.c.contact_id == c.c.contact_id
    enrolled_trigger = select(en.c.trigger).where(*newest).order_by(en.c.entry.desc()).limit(1).scalar_subquery()
    variant = select(en.c.variant).where(*newest).order_by(en.c.entry.desc()).limit(1).scalar_subquery()
    trigger: Any = enrolled_trigger
    if program.audience.trigger_event:
        types = program.audience.trigger_event
        e = schema.all_events(
            "trigger_ev",
            lambda t: (
                t.c.contact_id == c.c.contact_id,
                t.c.event_type.in_(types),
                t.c.occurred_at <= utc_naive(as_of),
            ),
        )
        last_event = select(e.c.properties).order_by(e.c.occurred_at.desc()).limit(1).scalar_subquery()
        trigger = func.coalesce(enrolled_trigger, last_event)
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(*crm_columns(c, a, trigger), variant.label("variant"))
                .select_from(c.outerjoin(a, a.c.account_id == c.c.account_id))
                .where(c.c.contact_id == contact_id)
                .limit(1)
            )
            .mappings()
            .first()
        )
    if row is None:
        raise LookupError(f"contact {contact_id!r} is not in the CRM")
    contact, account, trigger_properties, problem = read_crm(row)
    if problem is not None:
        raise LookupError(f"contact {contact_id!r}: {problem}")
    default_variant = program.ab_test.variants[0].name if program.ab_test else None
    data = MessageData(
        program=program.id,
        step=step.id,
        variant=row["variant"] or default_variant,
        contact=contact,
        account=account,
        trigger=trigger_properties,
    )
    return render(step.template, step.channel, template_context(data, links, brand))


def preview(url: str | None, program_id: str, contact_id: str, *, step: str | None, as_of: datetime) -> str:
    """The rendered parts of ``step`` (default: the first) of ``program_id`` for ``contact_id``."""
    program = config.load_program(paths.config_dir() / "programs" / f"{program_id}.yml")
    chosen = next((s for s in program.steps if s.id == step), None) if step else program.steps[0]
    if chosen is None:
        raise SystemExit(f"{program_id} has no step {step!r}; steps: {[s.id for s in program.steps]}")
    try:
        rendered = render_step(
            get_engine(url or state_url()),
            program,
            chosen,
            contact_id,
            as_of=as_of,
            brand=config.load_policy().brand.model_dump(),
            links={"unsubscribe": "https://example.invalid/unsubscribe/preview"},
        )
    except LookupError as exc:
        raise SystemExit(str(exc)) from None
    return channels.get(chosen.channel).describe(rendered.parts)
