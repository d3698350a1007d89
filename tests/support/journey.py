"""Run a shipped program's stages in-process on a test CRM (no Airflow): for program tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache

from sqlalchemy import select

from lifecycle import paths
from lifecycle.channels.simulated import SimulatedTransport
from lifecycle.engine import pipeline
from lifecycle.model import schema
from lifecycle.reporting import figures


def _links(message_id: int, contact_id: str, channel: str) -> dict[str, str]:
    return {"unsubscribe": f"https://example.invalid/unsubscribe/{message_id}"}


def run_program(engine, program_id: str, as_of: datetime, run_id: str | None = None) -> dict:
    """Every stage of ``program_id`` for ``as_of`` through the simulated transport; returns the funnel."""
    scope, programs = pipeline.load_scope(program_id, run_id or f"test__{as_of.isoformat()}", as_of)
    return pipeline.run_program(
        engine, scope, programs, SimulatedTransport(), links=_links, simulate=True, then=figures.refresh_run
    )


def run_sweep(engine, program_id: str, as_of: datetime) -> dict:
    """The program's due-steps sweep for ``as_of`` through the simulated transport."""
    from lifecycle.engine.scope import sweep_run_id

    scope, programs = pipeline.load_scope(program_id, sweep_run_id(program_id, f"test__{as_of.isoformat()}"), as_of)
    return pipeline.run_sweep(
        engine, scope, programs, SimulatedTransport(), links=_links, simulate=True, then=figures.refresh_run
    )


def messages(engine, program_id: str) -> list[dict]:
    """The program's ledger rows, oldest first, as dicts."""
    m = schema.messages
    with engine.connect() as conn:
        rows = conn.execute(select(m).where(m.c.program == program_id).order_by(m.c.message_id)).mappings()
        return [dict(r) for r in rows]


def enrollments(engine, program_id: str) -> list[dict]:
    """The program's enrollments as dicts."""
    e = schema.enrollments
    with engine.connect() as conn:
        rows = conn.execute(select(e).where(e.c.program == program_id).order_by(e.c.enrollment_id)).mappings()
        return [dict(r) for r in rows]


_used: set[str] = set()


@cache
def _groups(config_dir: str, program_id: str):
    """The program and the global control group, read once per config folder (not once per contact)."""
    from lifecycle import config

    program = config.load_program(paths.config_dir() / "programs" / f"{program_id}.yml")
    return program, config.load_policy().control_group


def _contact_in(crm_rows, program_id: str, *, held_out: bool, **fields) -> str:
    """A new contact whose id the global control group leaves alone and the program's holdout takes
    (``held_out``) or leaves in treatment."""
    from lifecycle.model.db import bucket_of

    program, control = _groups(str(paths.config_dir()), program_id)
    prefix = f"{program_id[:3]}{'h' if held_out else ''}"
    for i in range(100_000):
        cid = f"{prefix}{i:05d}"
        if cid in _used or bucket_of(f"{control.salt}:{cid}") < control.percent * 100:
            continue
        if (bucket_of(f"{program.salt}:{program.id}:{cid}") < program.holdout_percent * 100) == held_out:
            _used.add(cid)
            return crm_rows.contact(cid, **fields)
    raise AssertionError(f"no {'holdout' if held_out else 'treatment'} contact id found for {program_id}")


def treatment_contact(crm_rows, program_id: str, **fields) -> str:
    """A contact id the program's holdout and the global control group both leave in treatment."""
    return _contact_in(crm_rows, program_id, held_out=False, **fields)


def holdout_contact(crm_rows, program_id: str, **fields) -> str:
    """A contact id the program's holdout takes (and the global control group leaves alone)."""
    return _contact_in(crm_rows, program_id, held_out=True, **fields)


def earlier_messages(contact_id: str, channel: str = "email", count: int = 2, first_day: int = 1) -> list[dict]:
    """Ledger rows for ``count`` messages on ``channel`` delivered to the contact on the days before
    AS_OF, starting ``first_day`` days before (from an unrelated program): they hold cap slots."""
    from tests.conftest import AS_OF

    return [
        {
            "idempotency_key": f"earlier:{contact_id}:{channel}:{i}",
            "program": "earlier",
            "priority": 0,
            "enrollment_id": 0,
            "entry": 1,
            "step": "s",
            "step_index": 0,
            "contact_id": contact_id,
            "channel": channel,
            "planned_channel": channel,
            "template": "t",
            "group": "treatment",
            "status": "delivered",
            "due_at": AS_OF - timedelta(days=i + first_day),
            "run_id": "earlier",
            "planned_at": AS_OF - timedelta(days=i + first_day),
        }
        for i in range(count)
    ]


def messages_already_sent(engine, contact_id: str, count: int = 2, channel: str = "email") -> None:
    """``count`` messages (emails by default) delivered to the contact in the days before AS_OF, so
    the next one takes one of the cap's last slots."""
    from sqlalchemy import insert

    with engine.begin() as conn:
        conn.execute(insert(schema.messages), earlier_messages(contact_id, channel, count))
