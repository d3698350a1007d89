"""Frequency capping across programs, priority between programs, and quiet hours.

A cap (for example email 3 per 7 days) counts every message that holds a slot — sent, on its
way, or deferred — across all programs under the same caps, within the cap's period before or
after the as-of time: a run that executes minutes after its as-of (a slow segment) still sees what
a due-steps sweep sent meanwhile, at a later as-of. Marketing programs are under the
policy's ``caps`` and count only marketing messages (a ledger row of a program the loaded config
does not know counts as marketing); service programs (:attr:`~lifecycle.config.Program.is_service`)
are under its ``service_caps`` (none: uncapped) and count only service messages. A program yields
the last slots to programs of higher priority under the same caps that want the same contact at
the same as-of time, whether or not those programs have run yet: their demand is computed from
their journey state and entry segment, counting only the messages they would send (their holdout,
suppressions, fallbacks and own caps applied), so the higher priority program wins in either run
order and never takes a slot with a message that never goes. Under the policy's
``decision.mode: next_best_action`` the marketing programs ahead of a program for a contact are
those :mod:`lifecycle.engine.decision` ranks ahead in the contact's score band (expected
incremental value), instead of those of higher priority; a message that yields records which
program took the slot and their expected values after its cap reason. Quiet hours defer a message to the
end of the window in the recipient's time zone instead of dropping it, service messages too.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, literal, not_, select, text, union_all, update
from sqlalchemy.sql.expression import ColumnElement

from lifecycle.channels import registry
from lifecycle.config import Cap, Program, QuietHours, Step, segments
from lifecycle.engine import decision
from lifecycle.engine.journeys import E, entry_eligible, group_expr, step_due
from lifecycle.engine.quiet_hours import quiet_until
from lifecycle.engine.scope import RunScope
from lifecycle.engine.suppression import (
    channel_blocked,
    choice_routes,
    choice_steps,
    contact_reasons,
    reachable_orders,
)
from lifecycle.model import schema
from lifecycle.model.addresses import phone_number
from lifecycle.model.ledger import SLOT_HOLDING, CapReason, ChannelReason, Status, SuppressionReason

M = schema.messages
C = schema.contacts
_CAP_LOCK_KEY = 7_412_001
REASON_LENGTH = 200  # lifecycle_messages.reason is String(200)


def lock_caps(conn: Connection) -> None:
    """Serialise cap decisions across concurrently running programs for this transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CAP_LOCK_KEY})
    else:
        conn.execute(update(M).where(literal(False)).values(status=M.c.status))


def _pending(run: RunScope) -> ColumnElement[bool]:
    return and_(M.c.program == run.program.id, M.c.status == Status.PLANNED)


def _service_programs(run: RunScope, programs: Mapping[str, Program]) -> list[str]:
    """The ids of the service programs: their messages count under the service caps only."""
    known = {**programs, run.program.id: run.program}
    return sorted(program_id for program_id, program in known.items() if program.is_service)


def _used(scope: str, cap: Cap, run: RunScope, service_programs: list[str]) -> ColumnElement[int]:
    other = M.alias("held")
    same_caps = (
        other.c.program.in_(service_programs) if run.program.is_service else other.c.program.not_in(service_programs)
    )
    filters = [
        other.c.contact_id == M.c.contact_id,
        other.c.message_id != M.c.message_id,
        other.c.status.in_(SLOT_HOLDING),
        other.c.due_at > run.as_of - cap.per,
        other.c.due_at < run.as_of + cap.per,
        same_caps,
    ]
    if scope != "all":
        filters.append(other.c.channel == scope)
    return select(func.count()).where(*filters).scalar_subquery()


def cap_decision(
    channel: str,
    used: Mapping[str, int],
    demand: Mapping[str, int],
    caps: Mapping[str, Cap],
    *,
    service: bool = False,
) -> str | None:
    """The cap a message on ``channel`` hits, as the reason it records, or ``None`` when it may go.

    ``used`` is the slots other messages already hold per scope (a channel, or ``"all"``) within
    the cap's period; ``demand`` the slots programs of higher priority will take at this as-of. The
    message's own channel cap is checked first, then the all-channels cap; a scope without a cap
    never stops it. ``service``: ``caps`` are the service caps, and the reason says so.
    """
    for scope in (channel, "all"):
        limit = caps.get(scope)
        if limit is not None and used.get(scope, 0) + demand.get(scope, 0) >= limit.max:
            return cap_reason(scope, limit, service=service)
    return None


def accepted_demand(wanted: Iterable[str], used: Mapping[str, int], caps: Mapping[str, Cap]) -> Counter[str]:
    """The slots per scope that higher-priority messages will take, given their channels highest
    priority first: each is counted only when its own cap decision (against the slots used and the
    demand above it) lets it through, as it will when its program runs."""
    taken: Counter[str] = Counter()
    for channel in wanted:
        if cap_decision(channel, used, taken, caps) is None:
            taken[channel] += 1
            taken["all"] += 1
    return taken


def _open(channel: str, run: RunScope, contact_id: ColumnElement) -> ColumnElement:
    return not_(channel_blocked(channel, run, contact_id))


def _routes(channel: str, fallback: str | None, run: RunScope, contact_id: ColumnElement) -> list[tuple[str, Any]]:
    """Where a message planned on ``channel`` goes: there when it is open, else to its fallback when
    that is open (suppression's fallback rule); each with the clause that sends it there."""
    routes: list[tuple[str, Any]] = [(channel, _open(channel, run, contact_id))]
    if fallback is not None and fallback != channel:
        routes.append((fallback, and_(not_(_open(channel, run, contact_id)), _open(fallback, run, contact_id))))
    return routes


def _step_routes(step: Step, run: RunScope, contact_id: ColumnElement) -> list[tuple[str, Any]]:
    """Where a message of ``step`` goes: its channel choice (a step with ``channels``), else its
    channel or fallback; each with the clause that sends it there."""
    if step.channels is not None:
        return [(route.channel, route.when) for route in choice_routes(step, run, contact_id)]
    return _routes(step.channel, step.fallback, run, contact_id)


def _not_suppressed(run: RunScope, contact_id: ColumnElement, *, planned: bool) -> list[ColumnElement]:
    """The program's contact rules (open ticket, negotiation, recent purchase...) do not stop it.
    ``already_converted`` reads the message's enrollment, so it applies to planned messages only;
    enrollments are checked against the goal where the program itself checks it."""
    return [
        not_(r.predicate(contact_id))
        for r in contact_reasons(run)
        if planned or r.name != SuppressionReason.ALREADY_CONVERTED
    ]


def _stays_enrolled(run: RunScope) -> list[ColumnElement]:
    """An active enrollment the program's own run would not exit first (goal met, exit rule)."""
    program = run.program
    ctx = run.segment_context(E.c.contact_id, journey=True)
    exits = [r.segment.parsed for r in program.exit.rules]
    if program.exit.goal is not None:
        exits.append(program.exit.goal.parsed)
    return [E.c.enrolled_at <= run.as_of, *(not_(segments.compile_segment(node, ctx)) for node in exits)]


def _demand_queries(other: RunScope, targets: Any) -> list[Any]:
    """(contact id, channel) of every message ``other`` will send at this as-of to a contact in
    ``targets``: messages it planned, steps due for its enrollments, and first steps of contacts
    about to enroll, once its holdout (for the steps that have one), its suppressions and its
    channel fallbacks have had their say."""
    program, as_of = other.program, other.as_of
    queries = []
    channels = {c for s in program.steps for c in s.reach}
    choosing = choice_steps(program)
    for step in choosing:
        planned = [
            M.c.program == program.id,
            M.c.status == Status.PLANNED,
            M.c.step == step.id,
            M.c.contact_id.in_(targets),
            *_not_suppressed(other, M.c.contact_id, planned=True),
        ]
        for sent_on, route in _step_routes(step, other, M.c.contact_id):
            queries.append(select(M.c.contact_id, literal(sent_on)).where(*planned, route))
    for channel in sorted(channels):
        planned = [
            M.c.program == program.id,
            M.c.status == Status.PLANNED,
            M.c.channel == channel,
            M.c.contact_id.in_(targets),
            *_not_suppressed(other, M.c.contact_id, planned=True),
        ]
        if choosing:
            planned.append(M.c.step.not_in([step.id for step in choosing]))
        for fallback in [None, *sorted(channels - {channel})]:
            sent_on, route = _routes(channel, fallback, other, M.c.contact_id)[-1]
            if fallback is not None:
                route = and_(M.c.fallback_channel == fallback, route)
            queries.append(select(M.c.contact_id, literal(sent_on)).where(*planned, route))
    for index, step in enumerate(program.steps):
        where = [
            step_due(program, index, as_of),
            E.c.group == "treatment" if step.holdout else literal(True),
            E.c.contact_id.in_(targets),
            *_stays_enrolled(other),
            *_not_suppressed(other, E.c.contact_id, planned=False),
        ]
        if step.when is not None:
            where.append(
                segments.compile_segment(step.when.parsed, other.segment_context(E.c.contact_id, journey=True))
            )
        for sent_on, route in _step_routes(step, other, E.c.contact_id):
            queries.append(select(E.c.contact_id, literal(sent_on)).where(*where, route))
    first = program.steps[0]
    if first.relative_to != "anchor" and not first.delay and first.when is None:
        ctx = segments.Context(as_of, C.c.contact_id, catalog=other.catalog)
        where = [
            C.c.contact_id.in_(targets),
            segments.compile_segment(program.audience.segment.parsed, ctx),
            entry_eligible(program, C.c.contact_id, as_of),
            group_expr(program, other.policy, C.c.contact_id) == "treatment" if first.holdout else literal(True),
            *_not_suppressed(other, C.c.contact_id, planned=False),
        ]
        if program.exit.goal is not None:
            # Suppression's already_converted for an enrollment made at this as-of.
            entering = segments.Context(
                as_of, C.c.contact_id, catalog=other.catalog, enrolled_at=literal(as_of), anchor_at=literal(None)
            )
            where.append(not_(segments.compile_segment(program.exit.goal.parsed, entering)))
        for sent_on, route in _step_routes(first, other, C.c.contact_id):
            queries.append(select(C.c.contact_id, literal(sent_on)).where(*where, route))
    return queries


def _program_demand(conn: Connection, run: RunScope, other: Program, targets: Any) -> list[tuple[str, str]]:
    """(contact id, channel) of the messages ``other`` will send at this as-of to ``targets``, sorted."""
    scope = RunScope(other, run.policy, run.catalog, run.run_id, run.as_of)
    return sorted(
        (contact_id, channel) for contact_id, channel in conn.execute(union_all(*_demand_queries(scope, targets)))
    )


def _targets(run: RunScope) -> Any:
    mine = M.alias("mine")
    return (
        select(mine.c.contact_id)
        .where(mine.c.program == run.program.id, mine.c.status == Status.PLANNED)
        .scalar_subquery()
    )


def higher_priority_demand(conn: Connection, run: RunScope, programs: Mapping[str, Program]) -> dict[str, list[str]]:
    """Per contact of this run's pending messages: the channels of the messages programs of higher
    priority will send at this as-of time (planned, due, or about to enroll), highest priority
    first. Only messages those programs would actually send count: not their held-out contacts,
    not what their own suppressions (contact rules, consent, lists, addresses) stop, and on the
    channel their fallback moves a message to. Only programs under the same caps count: a service
    program's demand never reserves a marketing slot, nor the reverse."""
    targets = _targets(run)
    ranked = sorted(
        (
            p
            for p in programs.values()
            if p.priority > run.program.priority and p.id != run.program.id and p.is_service == run.program.is_service
        ),
        key=lambda p: (-p.priority, p.id),
    )
    demand: dict[str, list[str]] = defaultdict(list)
    for other in ranked:
        for contact_id, channel in _program_demand(conn, run, other, targets):
            demand[contact_id].append(channel)
    return demand


@dataclass(frozen=True)
class Ranked:
    """What next-best-action found for a run's pending messages, per contact: the messages
    (rank, program, channel) the programs ranked ahead of this one will send at this as-of,
    first-ranked first; those (rank, program, channel) they already sent or hold from this as-of;
    and the contact's band with each contest program's expected value, for the ledger."""

    wanted: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)
    decided: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)
    values: dict[str, tuple[int, dict[str, float | None]]] = field(default_factory=dict)

    def demand(self, contact_id: str) -> list[str]:
        """The channels of :attr:`wanted`, first-ranked first (:func:`higher_priority_demand`'s shape)."""
        return [channel for _, _, channel in self.wanted.get(contact_id, ())]

    def yielded_to(self, contact_id: str, used: Mapping[str, int], caps: Mapping[str, Cap]) -> str | None:
        """The first-ranked program ahead that takes or took a slot of this contact at this as-of:
        its message already went, or its cap decision (as :func:`accepted_demand` makes it) lets
        it through; ``None`` when there is none."""
        taken: Counter[str] = Counter()
        takers = [(rank, program) for rank, program, _ in self.decided.get(contact_id, ())]
        for rank, program, channel in self.wanted.get(contact_id, ()):
            if cap_decision(channel, used, taken, caps) is None:
                taken[channel] += 1
                taken["all"] += 1
                takers.append((rank, program))
        return min(takers)[1] if takers else None

    def slots_before(self, contact_id: str, used: Mapping[str, int]) -> dict[str, int]:
        """``used`` without the slots the programs ahead took at this as-of."""
        held: Counter[str] = Counter()
        for _, _, channel in self.decided.get(contact_id, ()):
            held[channel] += 1
            held["all"] += 1
        return {scope: n - held[scope] for scope, n in used.items()}


def ranked_demand(conn: Connection, run: RunScope, programs: Mapping[str, Program]) -> Ranked:
    """Next-best-action's :func:`higher_priority_demand`: the marketing programs ranked ahead of
    this (marketing) one for each contact of its pending messages
    (:func:`lifecycle.engine.decision.ranking` in the contact's score band), what they will send
    at this as-of and what they already sent (or hold) from this as-of, so that neither the
    decision nor the reason it records depends on which program ran first."""
    targets = _targets(run)
    contest = [run.program, *(p for p in programs.values() if p.id != run.program.id and not p.is_service)]
    found = decision.estimates(conn, run, contest)
    bands = decision.contact_bands(conn, run, targets)
    policy = run.policy.decision
    orders = {band: decision.ranking(contest, found, policy, band) for band in {decision.UNSCORED, *bands.values()}}
    ahead = {band: order[: order.index(run.program.id)] for band, order in orders.items()}
    rivals = sorted({p for band_ahead in ahead.values() for p in band_ahead})
    ranked = Ranked()

    def add(into: dict[str, list[tuple[int, str, str]]], contact_id: str, other: str, channel: str) -> None:
        band_ahead = ahead[bands.get(contact_id, decision.UNSCORED)]
        if other in band_ahead:
            into.setdefault(contact_id, []).append((band_ahead.index(other), other, channel))

    for other in rivals:
        for contact_id, channel in _program_demand(conn, run, programs[other], targets):
            add(ranked.wanted, contact_id, other, channel)
    decided = conn.execute(
        select(M.c.contact_id, M.c.program, M.c.channel).where(
            M.c.program.in_(rivals),
            M.c.contact_id.in_(targets),
            M.c.planned_at == run.as_of,
            M.c.status.in_(SLOT_HOLDING),
        )
    ).all()
    for contact_id, other, channel in sorted(decided):
        add(ranked.decided, contact_id, other, channel)
    for rows in (*ranked.wanted.values(), *ranked.decided.values()):
        rows.sort()
    for contact_id in {*ranked.wanted, *ranked.decided}:
        band = bands.get(contact_id, decision.UNSCORED)
        ranked.values[contact_id] = (band, {p.id: decision.expected_value(found[p.id], policy, band) for p in contest})
    return ranked


def _next_with_room(
    channel: str,
    reason: str,
    prior: str | None,
    order: list[str],
    decide: Callable[[str], str | None],
) -> tuple[str, str] | None:
    """For a message of a step with ``channels`` capped on ``channel``: the next channel of the
    contact's reachable ``order`` whose caps have room, and the channel reason that says so
    (``fallback: sms capped (frequency_cap_sms: 2 per 7d)``, after the channels ``prior`` passed
    over); None when every one is full."""
    if channel not in order:
        return None
    clauses = [f"{channel} capped ({reason})"]
    for other in order[order.index(channel) + 1 :]:
        full = decide(other)
        if full is None:
            fell_back = f"{ChannelReason.FALLBACK}: "
            passed = f"{prior}, " if prior and prior.startswith(fell_back) else fell_back
            return other, (passed + ", ".join(clauses))[: schema.CHANNEL_REASON_LENGTH]
        clauses.append(f"{other} capped ({full})")
    return None


def cap(conn: Connection, run: RunScope, programs: Mapping[str, Program]) -> dict[str, int]:
    """Mark this program's pending messages ``capped`` (with the cap as reason) or ``ready``. A
    message of a step with ``channels`` whose channel is full moves to the next channel in the
    contact's order that can reach it and has room (the channel reason says why)."""
    lock_caps(conn)
    caps = run.policy.caps_for(run.program)
    scopes = [s for s in (*registry.names(), "all") if s in caps]
    service = _service_programs(run, programs)
    used_columns = (_used(s, caps[s], run, service).label(f"used_{s}") for s in scopes)
    rows = conn.execute(
        select(M.c.message_id, M.c.contact_id, M.c.channel, M.c.channel_reason, *used_columns).where(_pending(run))
    ).all()
    nba = run.policy.decision.next_best_action and not run.program.is_service
    ranked = ranked_demand(conn, run, programs) if rows and nba else Ranked()
    demand = higher_priority_demand(conn, run, programs) if rows and not nba else {}
    orders = reachable_orders(conn, run) if rows and choice_steps(run.program) else {}
    decisions: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for row in rows:
        used: dict[str, int] = {scope: getattr(row, f"used_{scope}") for scope in scopes}
        wanted = accepted_demand(ranked.demand(row.contact_id) if nba else demand.get(row.contact_id, ()), used, caps)

        def decide(channel: str, used: dict[str, int] = used, wanted: Counter[str] = wanted) -> str | None:
            return cap_decision(channel, used, wanted, caps, service=run.program.is_service)

        channel, channel_reason = row.channel, row.channel_reason
        reason = decide(channel)
        if reason and row.message_id in orders:
            moved = _next_with_room(channel, reason, channel_reason, orders[row.message_id], decide)
            if moved:
                (channel, channel_reason), reason = moved, None
        if reason and nba and cap_decision(channel, ranked.slots_before(row.contact_id, used), {}, caps) is None:
            # The last slot went to a program ranked ahead at this as-of: say which, and why.
            winner = ranked.yielded_to(row.contact_id, used, caps)
            if winner is not None:
                band, values = ranked.values[row.contact_id]
                reason = (reason + decision.why(winner, run.program.id, values, band))[:REASON_LENGTH]
        status = Status.CAPPED if reason else Status.READY
        counts[status] += 1
        decisions.append({"mid": row.message_id, "st": status, "rs": reason, "ch": channel, "cr": channel_reason})
    if decisions:
        conn.execute(
            update(M)
            .where(M.c.message_id == bindparam("mid"))
            .values(
                status=bindparam("st"),
                reason=bindparam("rs"),
                channel=bindparam("ch"),
                channel_reason=bindparam("cr"),
            ),
            decisions,
        )
    counts[Status.DEFERRED] = defer_quiet_hours(conn, run)
    counts[Status.READY] -= counts[Status.DEFERRED]
    return dict(counts)


def cap_reason(scope: str, limit: Cap, *, service: bool = False) -> str:
    """The reason a capped message records, e.g. ``frequency_cap_email: 3 per 7d``, or
    ``frequency_cap_email: 2 per 7d (service)`` for a service cap."""
    return f"{CapReason.FREQUENCY_CAP}_{scope}: {limit.max} per {_human(limit.per)}" + " (service)" * service


def _human(delta: timedelta) -> str:
    if delta.days and not delta.seconds:
        return f"{delta.days}d"
    return f"{int(delta.total_seconds() // 3600)}h"


def defer_quiet_hours(conn: Connection, run: RunScope) -> int:
    """Defer ready messages that fall in their channel's quiet hours to the window's end."""
    deferred = 0
    for channel, window in run.policy.quiet_hours.items():
        rows = conn.execute(
            select(M.c.message_id, C.c.timezone, phone_number(C), C.c.country)
            .join(C, C.c.contact_id == M.c.contact_id, isouter=True)
            .where(
                M.c.program == run.program.id,
                M.c.status == Status.READY,
                M.c.channel == channel,
                M.c.send_run_id.is_(None),
            )
        ).all()
        updates = _deferrals(rows, run.as_of, window)
        if updates:
            conn.execute(
                update(M)
                .where(M.c.message_id == bindparam("mid"))
                .values(status=Status.DEFERRED, send_after=bindparam("until"), reason=CapReason.QUIET_HOURS),
                updates,
            )
        deferred += len(updates)
    return deferred


def _deferrals(rows: Iterable, as_of: datetime, window: QuietHours) -> list[dict]:
    updates = []
    for message_id, timezone, phone, country in rows:
        until = quiet_until(as_of, timezone, window, phone=phone, country=country)
        if until is not None:
            updates.append({"mid": message_id, "until": until})
    return updates
