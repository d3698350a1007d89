"""Helpers for the program tests: run a program over a schedule of as-of times, and render a step
or a ledger message the way sending does."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Engine, update

from lifecycle import config, paths
from lifecycle.engine.dispatch import load_messages
from lifecycle.messages.context import MessageData, template_context
from lifecycle.messages.rendering import Rendered, render
from lifecycle.model import schema
from tests.conftest import AS_OF
from tests.support.journey import messages, run_program

UNSUBSCRIBE = "https://example.invalid/unsubscribe/1"
STOP = "Reply STOP to opt out."


def run_schedule(engine: Engine, program_id: str, offsets: Iterable[timedelta], start: datetime = AS_OF) -> dict:
    """Run the program at ``start + offset`` for each offset, in order; returns, per offset, the
    ledger rows that run added as ``{contact_id: [(step, status, reason, channel), ...]}``."""
    seen = {m["message_id"] for m in messages(engine, program_id)}
    added: dict[timedelta, dict[str, list[tuple]]] = {}
    for offset in offsets:
        run_program(engine, program_id, start + offset)
        new = [m for m in messages(engine, program_id) if m["message_id"] not in seen]
        seen.update(m["message_id"] for m in new)
        by_contact: dict[str, list[tuple]] = {}
        for m in new:
            by_contact.setdefault(m["contact_id"], []).append((m["step"], m["status"], m["reason"], m["channel"]))
        added[offset] = by_contact
    return added


def set_fields(engine: Engine, table_name: str, contact_id: str, **values: Any) -> None:
    """Change a contact's rows in a CRM table, as a CRM sync would between two runs."""
    table = schema.CRM_TABLES[table_name]
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.contact_id == contact_id).values(**values))


def days(*numbers: int) -> list[timedelta]:
    """Offsets of whole days."""
    return [timedelta(days=n) for n in numbers]


def steps_for(schedule: Mapping[timedelta, Mapping[str, list[tuple]]], contact_id: str) -> dict[timedelta, list]:
    """Only the offsets at which ``contact_id`` got a ledger row, with (step, status) pairs."""
    return {
        offset: [(step, status) for step, status, _reason, _channel in rows[contact_id]]
        for offset, rows in schedule.items()
        if contact_id in rows
    }


@cache
def _shipped(config_dir: str, program_id: str) -> tuple[config.Program, dict[str, Any]]:
    program = config.load_program(paths.config_dir() / "programs" / f"{program_id}.yml")
    return program, config.load_policy().brand.model_dump()


def _brand() -> dict[str, Any]:
    return config.load_policy().brand.model_dump()


def render_step(
    program_id: str,
    step_id: str,
    contact: Mapping[str, Any],
    *,
    channel: str | None = None,
    trigger: Mapping[str, Any] | None = None,
    variant: str | None = None,
    account: Mapping[str, Any] | None = None,
) -> Rendered:
    """Render a step of a shipped program for a hand-made contact (on its own channel by default)."""
    program, brand = _shipped(str(paths.config_dir()), program_id)
    step = next(s for s in program.steps if s.id == step_id)
    data = MessageData(program_id, step_id, variant, contact, account, trigger)
    context = template_context(data, {"unsubscribe": UNSUBSCRIBE}, brand)
    return render(step.template, channel or step.channel, context)


def render_message(engine: Engine, message: Mapping[str, Any]) -> Rendered:
    """Render a ledger message from what the database holds, through the send task's own loader
    and template context."""
    with engine.connect() as conn:
        (item,) = load_messages(conn, schema.messages.c.message_id == message["message_id"])
    return render(item.template, item.channel, template_context(item, {"unsubscribe": UNSUBSCRIBE}, _brand()))
