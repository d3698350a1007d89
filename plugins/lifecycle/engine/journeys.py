"""Journey state: audience snapshots, enrollment with re-entry, exits, and due-step planning.

Every function takes an open SQLAlchemy connection (the caller owns the transaction) and a
:class:`RunScope`, runs set-based statements, and returns counts. Each is idempotent for its
run: running it again for the same program, run and as-of time changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    String,
    Table,
    and_,
    case,
    cast,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.sql.expression import ColumnElement

from lifecycle.config import Policy, Program, Step, segments
from lifecycle.engine.scope import RunScope, runs_of_as_of
from lifecycle.model import schema
from lifecycle.model.db import bucket, concat, insert_ignore
from lifecycle.model.ledger import EnrollmentState, ExitReason, HeldOutReason, SkipReason, Status

E = schema.enrollments
M = schema.messages


# --- audience --------------------------------------------------------------------------------


def evaluate_segment(conn: Connection, run: RunScope) -> int:
    """Snapshot the entry segment's members for this run into ``lifecycle_audience``.

    The snapshot replaces that of any earlier run of the program at the same as-of time (one
    snapshot per program and as-of), so triggering a logical date again changes nothing."""
    program = run.program
    a = schema.audience
    conn.execute(delete(a).where(a.c.program == program.id, a.c.run_id.in_(runs_of_as_of(conn, run))))
    members = segments.audience_query(program.audience.segment.parsed, run.as_of, run.catalog).subquery()
    conn.execute(
        insert(schema.audience).from_select(
            ["program", "run_id", "contact_id"],
            select(literal(program.id), literal(run.run_id), members.c.contact_id),
        )
    )
    refresh_statistics(conn, schema.audience)
    return _audience_size(conn, run)


def refresh_statistics(conn: Connection, table: Table) -> None:
    """Let PostgreSQL's planner see the rows a stage just wrote. Stale statistics (autovacuum lags,
    or is off) make a table look empty, and the next stage's anti-join over it turns quadratic."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"ANALYZE {table.name}"))


def _audience_size(conn: Connection, run: RunScope) -> int:
    a = schema.audience
    return conn.execute(
        select(func.count()).where(a.c.program == run.program.id, a.c.run_id == run.run_id)
    ).scalar_one()


# --- groups and variants ---------------------------------------------------------------------


def group_expr(program: Program, policy: Policy, contact_id: ColumnElement) -> ColumnElement:
    """``control`` (global control group), ``holdout`` (program holdout) or ``treatment``.

    Both are deterministic hashes of the contact id with a salt, so a contact stays in its group
    across runs and re-entries, and the global control group is the same for every program.
    Service programs (:attr:`~lifecycle.config.Program.is_service`, such as renewal notices) are
    exempt from the global control group: it measures marketing. A step with ``holdout: false``
    goes to the program holdout too (see :func:`plan_due_steps`).
    """
    control = policy.control_group
    holdout = (
        bucket(concat(program.salt, ":", program.id, ":", contact_id)) < int(program.holdout_percent * 100),
        "holdout",
    )
    if program.is_service:
        return case(holdout, else_="treatment")
    return case(
        (bucket(concat(control.salt, ":", contact_id)) < int(control.percent * 100), "control"),
        holdout,
        else_="treatment",
    )


def variant_expr(program: Program, contact_id: ColumnElement, entry: ColumnElement) -> ColumnElement:
    """The A/B variant by weighted deterministic hash, or NULL when the program tests nothing."""
    test = program.ab_test
    if test is None:
        return literal(None)
    total = sum(v.weight for v in test.variants)
    key = bucket(concat(test.salt or f"{program.id}:{test.name}", ":", contact_id, ":", entry))
    whens, upper = [], 0
    for v in test.variants[:-1]:
        upper += v.weight
        whens.append((key < (upper * 10_000) // total, v.name))
    return case(*whens, else_=test.variants[-1].name)


# --- exits and enrollment -------------------------------------------------------------------


def _active(program_id: str) -> ColumnElement[bool]:
    return and_(E.c.program == program_id, E.c.state == EnrollmentState.ACTIVE)


def exit_enrollments(conn: Connection, run: RunScope, among: ColumnElement[bool] | None = None) -> dict[str, int]:
    """Exit active enrollments that met the goal (``converted``) or an exit rule.

    ``among`` narrows the enrollments looked at (a due-steps sweep: those with a step due); the
    entry segment is then read for them directly, since a sweep takes no audience snapshot."""
    program, as_of = run.program, run.as_of
    ctx = run.segment_context(E.c.contact_id, journey=True)
    rules: list[tuple[str, ColumnElement]] = []
    if program.exit.goal:
        rules.append((ExitReason.CONVERTED, segments.compile_segment(program.exit.goal.parsed, ctx)))
    rules += [(r.reason, segments.compile_segment(r.segment.parsed, ctx)) for r in program.exit.rules]
    if program.exit.on_segment_leave:
        a = schema.audience
        snapshot = exists().where(a.c.program == program.id, a.c.run_id == run.run_id, a.c.contact_id == E.c.contact_id)
        member = snapshot if among is None else segments.compile_segment(program.audience.segment.parsed, ctx)
        rules.append((ExitReason.LEFT_SEGMENT, not_(member)))
    exited = {}
    for reason, clause in rules:
        result = conn.execute(
            update(E)
            .where(_active(program.id), E.c.enrolled_at <= as_of, true() if among is None else among, clause)
            .values(state=EnrollmentState.EXITED, exit_reason=reason, exited_at=as_of)
        )
        exited[reason] = result.rowcount
    return exited


def _anchor_expr(program: Program, contact_id: ColumnElement, as_of: datetime) -> ColumnElement:
    anchor = program.audience.anchor
    if anchor is None:
        return literal(None)
    table = schema.CRM_TABLES[anchor.table].alias("anchor_src")
    column = table.c[anchor.column]
    chosen: ColumnElement[Any]
    if anchor.pick == "next":
        chosen, bound = func.min(column), column >= as_of
    else:
        chosen, bound = func.max(column), column <= as_of
    return select(chosen).where(table.c.contact_id == contact_id, bound).scalar_subquery()


def _trigger_expr(
    program: Program, contact_id: ColumnElement, as_of: datetime, column: str = "properties"
) -> ColumnElement:
    """The latest trigger event's ``column`` (its properties, or ``occurred_at``) as of the run."""
    types = program.audience.trigger_event
    if not types:
        return literal(None)
    ev = schema.all_events(
        "trigger_ev",
        lambda t: (t.c.contact_id == contact_id, t.c.event_type.in_(types), t.c.occurred_at <= as_of),
    )
    return select(ev.c[column]).order_by(ev.c.occurred_at.desc(), ev.c.event_id.desc()).limit(1).scalar_subquery()


def entry_eligible(program: Program, contact_id: ColumnElement, as_of: datetime) -> ColumnElement:
    """No active enrollment, and either never enrolled or re-entry allowed after the cooldown."""
    prior = E.alias("prior")
    mine = and_(prior.c.program == program.id, prior.c.contact_id == contact_id)
    no_active = not_(exists().where(mine, prior.c.state == EnrollmentState.ACTIVE))
    never = not_(exists().where(mine))
    if not program.re_entry.allowed:
        return and_(no_active, never)
    cutoff = as_of - program.re_entry.cooldown
    recent = exists().where(mine, func.coalesce(prior.c.exited_at, prior.c.last_step_at, prior.c.enrolled_at) > cutoff)
    return and_(no_active, not_(recent))


def enroll(conn: Connection, run: RunScope) -> int:
    """Enroll this run's audience members that may (re-)enter; returns how many entered."""
    program, as_of = run.program, run.as_of
    a = schema.audience
    prior = E.alias("entries")
    next_entry = (
        select(func.coalesce(func.max(prior.c.entry), 0) + 1)
        .where(prior.c.program == program.id, prior.c.contact_id == a.c.contact_id)
        .scalar_subquery()
    )
    source = select(
        literal(program.id),
        a.c.contact_id,
        next_entry,
        literal(EnrollmentState.ACTIVE),
        literal(as_of),
        literal(0),
        _anchor_expr(program, a.c.contact_id, as_of),
        group_expr(program, run.policy, a.c.contact_id),
        variant_expr(program, a.c.contact_id, next_entry),
        _trigger_expr(program, a.c.contact_id, as_of),
        _trigger_expr(program, a.c.contact_id, as_of, "occurred_at"),
        literal(run.run_id),
    ).where(
        a.c.program == program.id,
        a.c.run_id == run.run_id,
        entry_eligible(program, a.c.contact_id, as_of),
    )
    if program.audience.anchor is not None:
        source = source.where(_anchor_expr(program, a.c.contact_id, as_of).is_not(None))
    columns = [
        "program",
        "contact_id",
        "entry",
        "state",
        "enrolled_at",
        "next_step",
        "anchor_at",
        "group",
        "variant",
        "trigger",
        "triggered_at",
        "run_id",
    ]
    result = conn.execute(insert_ignore(conn, E).from_select(columns, source))
    refresh_statistics(conn, E)
    return result.rowcount


# --- planning --------------------------------------------------------------------------------


def step_base(program: Program, step: Step) -> ColumnElement:
    """The moment ``step``'s delay counts from: the trigger event (when the program is timed from
    it; else the enrollment), the previous step's planning, or the anchor date."""
    entered = func.coalesce(E.c.triggered_at, E.c.enrolled_at) if program.audience.trigger_timed else E.c.enrolled_at
    return {
        "enrollment": entered,
        "previous": func.coalesce(E.c.last_step_at, entered),
        "anchor": E.c.anchor_at,
    }[step.relative_to]


def step_due(program: Program, index: int, as_of: datetime) -> ColumnElement:
    """Active enrollments whose step ``index`` is due at ``as_of`` and that have no message planned
    in this run yet (one message per enrollment per run, so a re-run plans nothing new; a skipped
    step does not count, so the next step may follow it in the same run)."""
    step = program.steps[index]
    return and_(
        _active(program.id),
        E.c.next_step == index,
        step_base(program, step) <= as_of - step.delay,
        or_(E.c.last_planned_at.is_(None), E.c.last_planned_at < as_of),
    )


def any_step_due(program: Program, as_of: datetime) -> ColumnElement[bool]:
    """Active enrollments with a step due at ``as_of`` that no run at ``as_of`` planned yet: all a
    due-steps sweep looks at."""
    return or_(*(step_due(program, index, as_of) for index in range(len(program.steps))))


def step_late(program: Program, index: int, as_of: datetime) -> ColumnElement:
    """The step's moment passed more than its ``late_after`` before ``as_of``: skip it, never send it late."""
    step = program.steps[index]
    return step_base(program, step) < as_of - step.delay - program.late_after_for(step)


def _idempotency_key(program: Program, step: Step) -> ColumnElement:
    return concat(program.id, ":", E.c.contact_id, ":", cast(E.c.entry, String), ":", step.id)


def plan_due_steps(conn: Connection, run: RunScope) -> int:
    """Write one ledger row per (enrollment, due step); advance the enrollments. Returns rows added."""
    program, as_of = run.program, run.as_of
    added = 0
    last = len(program.steps) - 1
    for index, step in enumerate(program.steps):
        due = step_due(program, index, as_of)
        if step.when is not None:
            condition = segments.compile_segment(step.when.parsed, run.segment_context(E.c.contact_id, journey=True))
        else:
            condition = literal(True)
        late = step_late(program, index, as_of)
        # A step with ``holdout: false`` goes to the holdout and control groups too.
        held = E.c.group.in_(["control", "holdout"]) if step.holdout else false()
        status = case(
            (late, Status.SKIPPED),
            (held, Status.HELD_OUT),
            (not_(condition), Status.SKIPPED),
            else_=Status.PLANNED,
        )
        reason = case(
            (late, SkipReason.STEP_LATE),
            (and_(held, E.c.group == "control"), HeldOutReason.GLOBAL_CONTROL),
            (held, HeldOutReason.PROGRAM_HOLDOUT),
            (not_(condition), SkipReason.STEP_CONDITION_NOT_MET),
            else_=literal(None),
        )
        source = select(
            _idempotency_key(program, step),
            literal(program.id),
            literal(program.priority),
            E.c.enrollment_id,
            E.c.entry,
            literal(step.id),
            literal(index),
            E.c.contact_id,
            literal(step.channel),
            literal(step.fallback),
            literal(step.channel),
            literal(step.template),
            E.c.variant,
            E.c.group,
            status,
            reason,
            literal(as_of),
            literal(run.run_id),
            literal(as_of),
        ).where(due)
        columns = [
            "idempotency_key",
            "program",
            "priority",
            "enrollment_id",
            "entry",
            "step",
            "step_index",
            "contact_id",
            "channel",
            "fallback_channel",
            "planned_channel",
            "template",
            "variant",
            "group",
            "status",
            "reason",
            "due_at",
            "run_id",
            "planned_at",
        ]
        added += conn.execute(insert_ignore(conn, M).from_select(columns, source)).rowcount
        # A skip keeps the run's one message free for the next step, planned in this same loop.
        skipped = or_(late, and_(not_(held), not_(condition)))
        values = {
            "next_step": index + 1,
            "last_step_at": as_of,
            "last_planned_at": case((skipped, E.c.last_planned_at), else_=literal(as_of)),
        }
        if index == last:
            values |= {"state": EnrollmentState.COMPLETED, "exit_reason": ExitReason.COMPLETED, "exited_at": as_of}
        conn.execute(update(E).where(due).values(**values))
    refresh_statistics(conn, M)
    return added


def run_enrollment(conn: Connection, run: RunScope) -> dict[str, int]:
    """Exits first, then entries: the ``enroll_and_exit`` task."""
    exited = exit_enrollments(conn, run)
    enrolled = enroll(conn, run)
    return {"enrolled": enrolled, **{f"exited_{k}": v for k, v in exited.items()}}
