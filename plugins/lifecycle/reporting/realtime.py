"""How fast trigger events become journeys: each program's trigger, its event lag and its backlog.

- **Trigger**: the events a program enters on and how they are noticed (realtime: the triggerer's
  watcher, within seconds; else its scheduled runs), with its schedule.
- **Event lag** over a day: from the trigger event (``lifecycle_enrollments.triggered_at``) to the
  run that enrolled the contact (``enrolled_at``, that run's as-of) and to the provider accepting the
  messages due at the event (``lifecycle_messages.sent_at``), as p50 / p95.
- **Backlog**: what the watcher last saw (``lifecycle_event_watch``): trigger events no finished run
  has taken yet, the oldest of them, and when it last looked — a watcher that stopped looking (the
  triggerer is down) or events that keep waiting mean it fell behind.

The Campaigns page and the DAG docs read these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, inspect, select

from lifecycle.config import Program
from lifecycle.model import schema
from lifecycle.reporting import display
from lifecycle.reporting.digest import DASH

LAG_WINDOW = timedelta(days=1)
STALE_AFTER = timedelta(minutes=2)
"""A watcher that has not looked for this long is not running."""
BEHIND_AFTER = timedelta(minutes=5)
"""Events waiting this long for a run mean the runs fall behind (a run takes them within a minute or two)."""
E, M, W = schema.enrollments, schema.messages, schema.event_watch


def trigger_text(program: Program) -> str:
    """How the program's journeys start, in words."""
    events = ", ".join(program.audience.trigger_event)
    schedule = f"schedule {program.schedule} (UTC)" if program.schedule else "no schedule"
    if program.audience.realtime:
        return f"realtime on {events} (the triggerer's watcher, within seconds), and the {schedule}"
    if program.audience.trigger_event:
        return f"{schedule}; {events} events are taken by the scheduled runs"
    return schedule


def _percentiles(values: Sequence[float]) -> tuple[str, str]:
    if not values:
        return DASH, DASH
    ordered = sorted(values)

    def at(q: float) -> str:
        # Nearest rank: the smallest value with at least q of the values at or below it.
        rank = max(math.ceil(q * len(ordered)) - 1, 0)
        return display.lag(timedelta(seconds=ordered[rank]))

    return at(0.5), at(0.95)


@dataclass(frozen=True)
class EventLag:
    """Trigger event -> enrolled and -> sent over a window, as p50 / p95 (``–`` without any)."""

    enrolled: int
    enrolled_p50: str
    enrolled_p95: str
    sent: int
    sent_p50: str
    sent_p95: str


def event_lag(engine: Engine, program_id: str, until: datetime, window: timedelta = LAG_WINDOW) -> EventLag:
    """The lag of the program's enrollments whose trigger event occurred in the ``window`` before ``until``."""
    recent = and_(
        E.c.program == program_id,
        E.c.triggered_at.is_not(None),
        E.c.triggered_at > until - window,
        E.c.triggered_at <= until,
    )
    with engine.connect() as conn:
        enrolled = conn.execute(select(E.c.triggered_at, E.c.enrolled_at).where(recent)).all()
        sent = conn.execute(
            select(E.c.triggered_at, func.min(M.c.sent_at))
            .join(M, M.c.enrollment_id == E.c.enrollment_id)
            .where(recent, M.c.sent_at.is_not(None), M.c.due_at <= E.c.triggered_at)
            .group_by(E.c.enrollment_id, E.c.triggered_at)
        ).all()
    to_enrolled = [(done - at).total_seconds() for at, done in enrolled]
    to_sent = [(done - at).total_seconds() for at, done in sent]
    return EventLag(len(to_enrolled), *_percentiles(to_enrolled), len(to_sent), *_percentiles(to_sent))


@dataclass(frozen=True)
class Backlog:
    """What a realtime program's watcher last saw."""

    checked_at: datetime
    fired_at: datetime | None
    waiting: int
    oldest_waiting: datetime | None
    stale: bool

    def behind(self, now: datetime) -> bool:
        """Whether the watcher stopped looking or events have waited too long for a run."""
        return self.stale or (self.oldest_waiting is not None and now - self.oldest_waiting > BEHIND_AFTER)

    def text(self, now: datetime) -> str:
        """The backlog in words, as of ``now``."""
        looked = f"last looked {display.lag(now - self.checked_at)} ago"
        if self.stale:
            return f"the watcher has stopped looking ({looked}): is the triggerer running?"
        if not self.waiting:
            return f"no event waiting for a run ({looked})"
        oldest = f", the oldest for {display.lag(now - self.oldest_waiting)}" if self.oldest_waiting else ""
        return f"{self.waiting:,} event{'s' * (self.waiting != 1)} waiting for a run{oldest} ({looked})"


def backlog(engine: Engine, program_id: str, now: datetime) -> Backlog | None:
    """The watcher's last look, or None when no watcher has looked yet (not realtime, or not started)."""
    if not inspect(engine).has_table(W.name):
        return None
    with engine.connect() as conn:
        row = conn.execute(select(W).where(W.c.program == program_id)).mappings().first()
    if row is None:
        return None
    return Backlog(
        row["checked_at"], row["fired_at"], row["waiting"], row["oldest_waiting"], now - row["checked_at"] > STALE_AFTER
    )


def realtime_view(program: Program, lag: EventLag | None, found: Backlog | None, now: datetime) -> dict[str, Any]:
    """The page's trigger, event lag (:func:`event_lag`: a day up to the program's newest run,
    stored with its figures) and backlog (:func:`backlog`, read live) figures."""
    view: dict[str, Any] = {
        "trigger": trigger_text(program),
        "realtime": program.audience.realtime,
        "lag": lag if program.audience.trigger_event else None,
        "backlog": None,
        "backlog_behind": False,
    }
    if program.audience.realtime:
        view["backlog"] = found.text(now) if found else "the watcher has not looked yet (is the program unpaused?)"
        view["backlog_behind"] = bool(found and found.behind(now))
    return view
