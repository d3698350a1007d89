"""What became of the planned messages, read from the ledger: a program's funnel over a period and
its journey's per-step performance.

Every planned message has exactly one outcome (:data:`OUTCOMES`, one bucket per ledger status), so
a funnel's outcomes always add up to what was planned. Figures count messages by the time they
were planned (``planned_at``, the as-of time of the run that planned them) and by their status
now: a message deferred by quiet hours and sent by a later run counts as sent.

Per channel: planned, sent, delivered, opened (or read), clicked, failed, simulated and converted,
for every channel a program's messages went on (the channel each went on, after any choice or
fallback).

Per step (and A/B variant): planned and every outcome, the suppression and skip reasons,
delivered and bounced (within sent), unsubscribes from provider events, and "converted after":
enrollments that reached the program's goal whose last message before leaving was this step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime

from sqlalchemy import Engine, and_, case, exists, func, literal, or_, select, true
from sqlalchemy.sql.expression import ColumnElement

from lifecycle.config import Program
from lifecycle.model import schema
from lifecycle.model.db import utc_naive
from lifecycle.model.ledger import (
    DELIVERED_OR_LATER,
    IN_FLIGHT,
    MESSAGED,
    OPENED_OR_LATER,
    WENT_OUT,
    ExitReason,
    Status,
    reason_kind,
)
from lifecycle.reporting.measurement import UNSUBSCRIBE_EVENTS

M = schema.messages
IN_PROGRESS = "in_progress"
SIMULATED = Status.DRY_RUN
E = schema.enrollments


@dataclass(frozen=True)
class Outcome:
    """One bucket of the funnel: its key, its label and the ledger statuses it holds."""

    key: str
    label: str
    statuses: tuple[Status, ...]


OUTCOMES: tuple[Outcome, ...] = (
    Outcome(Status.SKIPPED, "Skipped", (Status.SKIPPED,)),
    Outcome(Status.HELD_OUT, "Held out", (Status.HELD_OUT,)),
    Outcome(Status.SUPPRESSED, "Suppressed", (Status.SUPPRESSED,)),
    Outcome(Status.CAPPED, "Capped", (Status.CAPPED,)),
    Outcome(Status.DEFERRED, "Deferred", (Status.DEFERRED,)),
    Outcome(IN_PROGRESS, "In progress", (Status.PLANNED, *IN_FLIGHT)),
    Outcome(Status.SENT, "Sent", WENT_OUT),
    Outcome(Status.FAILED, "Failed", (Status.FAILED,)),
    Outcome(SIMULATED, "Simulated", (Status.DRY_RUN,)),
)
"""The partition of planned messages, in the order a message meets them, keyed by the status
that names them (``sent`` holds every status of a message that went out). ``dry_run`` only ever
holds the developer tools' simulated sends; the views show it only when it is not empty."""

OUTCOME_OF: Mapping[str, str] = {status: o.key for o in OUTCOMES for status in o.statuses}
REASONED = (Status.SKIPPED, Status.HELD_OUT, Status.SUPPRESSED, Status.CAPPED, Status.DEFERRED, Status.FAILED)


def _empty() -> dict[str, int]:
    return dict.fromkeys((o.key for o in OUTCOMES), 0)


@dataclass
class Funnel:
    """Planned messages by outcome; ``reasons`` counts why, per outcome, for those kept back."""

    outcomes: dict[str, int] = field(default_factory=_empty)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def planned(self) -> int:
        """Every planned message: the outcomes add up to it."""
        return sum(self.outcomes.values())

    def add(self, status: str, reason: str | None, n: int) -> None:
        """Count ``n`` messages now in ``status`` (with ``reason``)."""
        key = OUTCOME_OF.get(status, IN_PROGRESS)
        self.outcomes[key] += n
        if status in REASONED:
            per = self.reasons.setdefault(key, {})
            name = reason_kind(reason) or "unspecified"
            per[name] = per.get(name, 0) + n


def funnels(engine: Engine, windows: Mapping[str, tuple[datetime, datetime]]) -> dict[str, Funnel]:
    """Per program, the messages planned in its window ``(start, end]``, by outcome and reason."""
    result = {pid: Funnel() for pid in windows}
    if not windows:
        return result
    within = or_(
        *(
            and_(M.c.program == pid, M.c.planned_at > utc_naive(start), M.c.planned_at <= utc_naive(end))
            for pid, (start, end) in windows.items()
        )
    )
    query = (
        select(M.c.program, M.c.status, M.c.reason, func.count())
        .where(within)
        .group_by(M.c.program, M.c.status, M.c.reason)
    )
    with engine.connect() as conn:
        for program, status, reason, n in conn.execute(query):
            result[program].add(status, reason, n)
    return result


@dataclass
class StepFigures:
    """One step (and variant) of a journey: its funnel and what followed the messages that went out."""

    step: str
    variant: str | None
    funnel: Funnel = field(default_factory=Funnel)
    delivered: int = 0
    bounced: int = 0
    unsubscribed: int = 0
    converted_after: int = 0


def _converted_after(program_id: str, as_of: datetime):
    """Per (step, variant): converted enrollments whose last message before their exit was it."""
    later = M.alias("later")
    last_before_exit = ~exists().where(
        later.c.enrollment_id == M.c.enrollment_id,
        later.c.status.in_(MESSAGED),
        later.c.planned_at < E.c.exited_at,
        later.c.step_index > M.c.step_index,
    )
    return (
        select(M.c.step, M.c.variant, func.count(func.distinct(M.c.enrollment_id)))
        .select_from(M.join(E, E.c.enrollment_id == M.c.enrollment_id))
        .where(
            M.c.program == program_id,
            M.c.status.in_(MESSAGED),
            E.c.exit_reason == ExitReason.CONVERTED,
            E.c.exited_at <= as_of,
            M.c.planned_at < E.c.exited_at,
            last_before_exit,
        )
        .group_by(M.c.step, M.c.variant)
    )


def step_performance(engine: Engine, program: Program, as_of: datetime) -> list[StepFigures]:
    """Per step and variant, every message the program planned up to ``as_of``: in journey order
    (steps no longer in the program file last), variants by name."""
    as_of = utc_naive(as_of)
    pe = schema.provider_events
    figures: dict[tuple[str, str | None], StepFigures] = {}

    def of(step: str, variant: str | None) -> StepFigures:
        return figures.setdefault((step, variant), StepFigures(step, variant))

    with engine.connect() as conn:
        for step, variant, status, reason, n in conn.execute(
            select(M.c.step, M.c.variant, M.c.status, M.c.reason, func.count())
            .where(M.c.program == program.id, M.c.planned_at <= as_of)
            .group_by(M.c.step, M.c.variant, M.c.status, M.c.reason)
        ):
            row = of(step, variant)
            row.funnel.add(status, reason, n)
            row.delivered += n if status in DELIVERED_OR_LATER else 0
            row.bounced += n if status == Status.BOUNCED else 0
        for step, variant, n in conn.execute(
            select(M.c.step, M.c.variant, func.count(func.distinct(pe.c.message_id)))
            .select_from(pe.join(M, M.c.message_id == pe.c.message_id))
            .where(
                M.c.program == program.id,
                M.c.planned_at <= as_of,
                pe.c.occurred_at <= as_of,
                pe.c.event_type.in_(UNSUBSCRIBE_EVENTS),
            )
            .group_by(M.c.step, M.c.variant)
        ):
            of(step, variant).unsubscribed = n
        for step, variant, n in conn.execute(_converted_after(program.id, as_of)):
            of(step, variant).converted_after = n
    order = {s.id: i for i, s in enumerate(program.steps)}
    return sorted(figures.values(), key=lambda f: (order.get(f.step, len(order)), f.step, f.variant or ""))


@dataclass
class ChannelFigures:
    """What became of one program's messages on one channel (the channel each went on)."""

    channel: str
    planned: int = 0
    sent: int = 0  # went out: sent, delivered, opened, clicked or bounced
    delivered: int = 0  # delivered, whatever engagement followed
    opened: int = 0  # opened (an email) or read (a WhatsApp message), or clicked
    clicked: int = 0
    failed: int = 0
    simulated: int = 0  # the developer tools' simulated sends
    converted: int = 0  # enrollments that reached the goal after a message on this channel went out


CHANNEL_FIGURES: tuple[str, ...] = tuple(f.name for f in fields(ChannelFigures) if f.name != "channel")
"""The per-channel figures, in the order the tables show them."""


def channel_figures(
    engine: Engine, windows: Mapping[str, tuple[datetime | None, datetime]]
) -> dict[str, list[ChannelFigures]]:
    """Per program, its messages planned in its window ``(start, end]`` (``start`` None: from the
    first) per channel, by channel name. ``converted`` counts the enrollments that reached the
    program's goal by ``end`` after such a message went out (or was simulated) on the channel
    before they left: an enrollment messaged on two channels counts for both."""
    result: dict[str, dict[str, ChannelFigures]] = {pid: {} for pid in windows}
    if not windows:
        return {}

    def within(table) -> ColumnElement[bool]:
        return or_(
            *(
                and_(
                    table.c.program == pid,
                    table.c.planned_at <= utc_naive(end),
                    table.c.planned_at > utc_naive(start) if start is not None else true(),
                )
                for pid, (start, end) in windows.items()
            )
        )

    def of(program: str, channel: str) -> ChannelFigures:
        return result[program].setdefault(channel, ChannelFigures(channel))

    ends = case(*((E.c.program == pid, literal(utc_naive(end))) for pid, (_start, end) in windows.items()))
    with engine.connect() as conn:
        for program, channel, status, n in conn.execute(
            select(M.c.program, M.c.channel, M.c.status, func.count())
            .where(within(M))
            .group_by(M.c.program, M.c.channel, M.c.status)
        ):
            row = of(program, channel)
            row.planned += n
            row.sent += n if status in WENT_OUT else 0
            row.delivered += n if status in DELIVERED_OR_LATER else 0
            row.opened += n if status in OPENED_OR_LATER else 0
            row.clicked += n if status == Status.CLICKED else 0
            row.failed += n if status == Status.FAILED else 0
            row.simulated += n if status == Status.DRY_RUN else 0
        for program, channel, n in conn.execute(
            select(M.c.program, M.c.channel, func.count(func.distinct(M.c.enrollment_id)))
            .select_from(M.join(E, E.c.enrollment_id == M.c.enrollment_id))
            .where(
                within(M),
                M.c.status.in_(MESSAGED),
                E.c.exit_reason == ExitReason.CONVERTED,
                E.c.exited_at <= ends,
                M.c.planned_at < E.c.exited_at,
            )
            .group_by(M.c.program, M.c.channel)
        ):
            of(program, channel).converted = n
    return {pid: [per[c] for c in sorted(per)] for pid, per in result.items()}
