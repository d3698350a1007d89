"""Frequency capping across programs, priority between programs, and quiet hours.

A cap (for example email 3 per 7 days) counts every message that holds a slot — sent, on its
way, or deferred — across all programs. A program yields the last slots to programs of higher
priority that want the same contact at the same as-of time, whether or not those programs have
run yet: their demand is computed from their journey state and entry segment, so the higher
priority program wins in either run order. Quiet hours defer a message to the end of the
window in the recipient's time zone instead of dropping it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, and_, bindparam, func, literal, not_, select, text, union_all, update

from lifecycle.channels import registry
from lifecycle.config import Cap, Program, QuietHours, segments
from lifecycle.engine.journeys import E, entry_eligible, group_expr, step_due
from lifecycle.engine.scope import RunScope
from lifecycle.engine.suppression import channel_blocked
from lifecycle.model import schema
from lifecycle.model.ledger import SLOT_HOLDING, CapReason, Status

M = schema.messages
C = schema.contacts
_CAP_LOCK_KEY = 7_412_001


def lock_caps(conn: Connection) -> None:
    """Serialise cap decisions across concurrently running programs for this transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CAP_LOCK_KEY})
    else:
        conn.execute(update(M).where(literal(False)).values(status=M.c.status))


def _pending(run: RunScope):
    return and_(M.c.program == run.program.id, M.c.status == Status.PLANNED)


def _used(scope: str, run: RunScope):
    cap = run.policy.caps[scope]
    other = M.alias("held")
    filters = [
        other.c.contact_id == M.c.contact_id,
        other.c.message_id != M.c.message_id,
        other.c.status.in_(SLOT_HOLDING),
        other.c.due_at > run.as_of - cap.per,
        other.c.due_at <= run.as_of,
    ]
    if scope != "all":
        filters.append(other.c.channel == scope)
    return select(func.count()).where(*filters).scalar_subquery()


def higher_priority_demand(conn: Connection, run: RunScope, programs: Mapping[str, Program]) -> dict[str, Counter]:
    """Per contact of this run's pending messages: how many messages per channel programs of
    higher priority want to send at this as-of time (planned, due, or about to enroll)."""
    targets = select(M.c.contact_id).where(_pending(run)).scalar_subquery()
    queries = []
    for other in programs.values():
        if other.priority <= run.program.priority or other.id == run.program.id:
            continue
        scope = RunScope(other, run.policy, run.catalog, run.run_id, run.as_of)
        queries.append(
            select(M.c.contact_id, M.c.channel).where(
                M.c.program == other.id, M.c.status == Status.PLANNED, M.c.contact_id.in_(targets)
            )
        )
        for index, step in enumerate(other.steps):
            where = [
                step_due(other, index, run.as_of),
                E.c.group == "treatment",
                E.c.contact_id.in_(targets),
                not_(channel_blocked(step.channel, scope, E.c.contact_id)),
            ]
            if step.when is not None:
                where.append(
                    segments.compile_segment(step.when.parsed, scope.segment_context(E.c.contact_id, journey=True))
                )
            queries.append(select(E.c.contact_id, literal(step.channel)).where(*where))
        first = other.steps[0]
        if first.relative_to != "anchor" and not first.delay and first.when is None:
            ctx = segments.Context(run.as_of, C.c.contact_id, catalog=run.catalog)
            queries.append(
                select(C.c.contact_id, literal(first.channel)).where(
                    C.c.contact_id.in_(targets),
                    segments.compile_segment(other.audience.segment.parsed, ctx),
                    entry_eligible(other, C.c.contact_id, run.as_of),
                    group_expr(other, run.policy, C.c.contact_id) == "treatment",
                    not_(channel_blocked(first.channel, scope, C.c.contact_id)),
                )
            )
    demand: dict[str, Counter] = defaultdict(Counter)
    if queries:
        for contact_id, channel in conn.execute(union_all(*queries)):
            demand[contact_id][channel] += 1
            demand[contact_id]["all"] += 1
    return demand


def cap(conn: Connection, run: RunScope, programs: Mapping[str, Program]) -> dict[str, int]:
    """Mark this program's pending messages ``capped`` (with the cap as reason) or ``ready``."""
    lock_caps(conn)
    caps = run.policy.caps
    scopes = [s for s in (*registry.names(), "all") if s in caps]
    rows = conn.execute(
        select(M.c.message_id, M.c.contact_id, M.c.channel, *(_used(s, run).label(f"used_{s}") for s in scopes)).where(
            _pending(run)
        )
    ).all()
    demand = higher_priority_demand(conn, run, programs) if rows else {}
    decisions, counts = [], Counter()
    for row in rows:
        reason = None
        wanted = demand.get(row.contact_id, Counter())
        for scope in (row.channel, "all"):
            if scope in caps and getattr(row, f"used_{scope}") + wanted[scope] >= caps[scope].max:
                reason = cap_reason(scope, caps[scope])
                break
        status = Status.CAPPED if reason else Status.READY
        counts[status] += 1
        decisions.append({"mid": row.message_id, "st": status, "rs": reason})
    if decisions:
        conn.execute(
            update(M).where(M.c.message_id == bindparam("mid")).values(status=bindparam("st"), reason=bindparam("rs")),
            decisions,
        )
    counts[Status.DEFERRED] = defer_quiet_hours(conn, run)
    counts[Status.READY] -= counts[Status.DEFERRED]
    return dict(counts)


def cap_reason(scope: str, limit: Cap) -> str:
    """The reason a capped message records, e.g. ``frequency_cap_email: 3 per 7d``."""
    return f"{CapReason.FREQUENCY_CAP}_{scope}: {limit.max} per {_human(limit.per)}"


def _human(delta: timedelta) -> str:
    if delta.days and not delta.seconds:
        return f"{delta.days}d"
    return f"{int(delta.total_seconds() // 3600)}h"


def _zone(name: str | None, default: str) -> ZoneInfo:
    for candidate in (name, default):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                continue
    return ZoneInfo("UTC")


def _in_window(local: time, start: time, end: time) -> bool:
    if start <= end:
        return start <= local < end
    return local >= start or local < end


def quiet_until(as_of: datetime, timezone: str | None, window: QuietHours) -> datetime | None:
    """When a message due at ``as_of`` (naive UTC) may go out in the recipient's zone, as naive
    UTC; ``None`` when it may go now. Unknown zones fall back to the window's default zone."""
    zone = _zone(timezone, window.default_timezone)
    local = as_of.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone)
    if not _in_window(local.time().replace(tzinfo=None), window.start, window.end):
        return None
    release = local.replace(hour=window.end.hour, minute=window.end.minute, second=0, microsecond=0)
    if release <= local:
        release = (local + timedelta(days=1)).replace(
            hour=window.end.hour, minute=window.end.minute, second=0, microsecond=0
        )
    return release.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


def defer_quiet_hours(conn: Connection, run: RunScope) -> int:
    """Defer ready messages that fall in their channel's quiet hours to the window's end."""
    deferred = 0
    for channel, window in run.policy.quiet_hours.items():
        rows = conn.execute(
            select(M.c.message_id, C.c.timezone)
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
    for message_id, timezone in rows:
        until = quiet_until(as_of, timezone, window)
        if until is not None:
            updates.append({"mid": message_id, "until": until})
    return updates
