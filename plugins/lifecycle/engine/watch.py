"""Watching for trigger events: what decides that a realtime program needs a run now.

A program with ``audience.realtime: true`` is watched by the triggerer (the trigger in
``lifecycle.airflow.triggers`` polls :meth:`EventWatch.poll` every few seconds). The watch reads
two feeds for new rows of the program's trigger event types:

- the **source's events**: the events entity's compiled mapping (``config/sources.yml``; without it the
  canonical ``events`` table), the same SELECT the sync stage copies with, ordered by each part's
  ``watermark`` (its ``occurred_at`` where the mapping names none);
- the **inbox**, ``lifecycle_tracked_events`` in the state database (events posted to the track
  endpoint), by ``received_at``.

Its watermarks are stored in ``lifecycle_event_watch`` as it advances, so a restarted triggerer
carries on where it stopped. A new row past them **fires** (the trigger tells Airflow, whose asset
queue collapses fires into one run). The watch also counts the events **waiting**: trigger events that
occurred after the as-of of the program's newest finished run (its funnel in ``lifecycle_kpis``) and
before now. They are what a run has yet to take — an event that reached Airflow's queue just after the
run was created, an event stamped a few seconds ahead of the run's as-of (clock skew), one seen just
before a triggerer crash — and they fire again once a run finished without them, or after
:data:`REFIRE_AFTER` without a run, so none waits for the next scheduled run. The count and the oldest
of them are kept in the watch's row for the Campaigns page (the backlog).

With an events queue (``announced``), the track endpoint announces the inbox's new rows itself (a
wake-up per program, :mod:`lifecycle.engine.event_queue`), so a new inbox row does not fire here: it
would only queue a second run for an event the announced run takes. The watch still fires for new
source rows (nothing announces them) and, like any waiting event, for an inbox event a run has not
taken :data:`ANNOUNCED_GRACE` after it occurred (its wake-up was lost, or its run failed).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from lifecycle.config.sources import SOURCES_FILE, Sources
from lifecycle.engine.sync import _Part, dump_mark, entity_parts, load_mark
from lifecycle.model import schema

log = logging.getLogger(__name__)
W, T = schema.event_watch, schema.tracked_events
REFIRE_AFTER = timedelta(minutes=5)
"""How long events may wait after a fire before the watch fires again though no run finished since."""
ANNOUNCED_GRACE = timedelta(minutes=2)
"""With an events queue: how long an announced event may wait for a run before the watch fires for it."""
HEARTBEAT = timedelta(seconds=30)
"""How often the watch's row is written when nothing changed (``checked_at``: the watcher is alive)."""
CANONICAL = "canonical"


@dataclass(frozen=True)
class Poll:
    """What one look at the feeds found, and whether the program should run now (``fire``)."""

    arrived: int
    waiting: int
    oldest_waiting: datetime | None
    consumed: datetime | None
    fire: bool
    reason: str

    def payload(self) -> dict[str, Any]:
        """The trigger event's payload (JSON): why it fired and what it saw."""
        return {
            "reason": self.reason,
            "arrived": self.arrived,
            "waiting": self.waiting,
            "oldest_waiting": self.oldest_waiting.isoformat() if self.oldest_waiting else None,
        }


def _digest(sources: Sources | None) -> str:
    if sources is None or "events" not in sources.entities:
        return CANONICAL
    text_ = json.dumps([m.digest() for m in sources.entities["events"]])
    return hashlib.md5(text_.encode()).hexdigest()[:16]


def watched_parts(sources: Sources | None) -> list[_Part]:
    """The events mapping parts, each ordered by its ``watermark`` (its ``occurred_at`` where it has none)."""
    file = sources.file if sources is not None else Path(SOURCES_FILE)
    return [
        part
        if part.mapping.watermark
        else _Part(
            part.entity,
            part.where,
            part.mapping.model_copy(update={"watermark": part.mapping.columns["occurred_at"]}),
            part.file,
            part.strict,
        )
        for part in entity_parts("events", sources, file)
    ]


def _source_types(part: _Part, types: Sequence[str]) -> list[Any]:
    """The source values of the canonical event types ``types`` (a mapped vocabulary, and the types as written)."""
    mapped = [value for value, canonical in part.mapping.source_values("event_type").items() if canonical in types]
    return [*mapped, *types]


class EventWatch:
    """One realtime program's watch over its trigger events (see the module docstring).

    ``source``: the engine the source's events are read on (the state's own where they are one
    database); ``state``: where the watch's row, the inbox and the runs' funnel live."""

    def __init__(
        self,
        program_id: str,
        event_types: Sequence[str],
        source: Engine,
        state: Engine,
        sources: Sources | None,
        announced: bool = False,
    ) -> None:
        self.program_id = program_id
        self.announced = announced
        self.types = list(event_types)
        self.source, self.state = source, state
        self.parts = watched_parts(sources)
        self.mapping = _digest(sources)
        self.fired_at: datetime | None = None
        self.consumed_at_fire: datetime | None = None
        self.looked = False
        self.written: tuple[Any, ...] | None = None
        self.written_at: datetime | None = None

    # --- reading the feeds ---------------------------------------------------------------------

    def _source_tops(self, conn: Connection, marks: Sequence[Any] | None) -> tuple[int, list[Any]]:
        """How many matching source rows are past ``marks`` (per part; None: count none, read the tops)."""
        arrived, tops = 0, []
        for i, part in enumerate(self.parts):
            rows = part.select().subquery()
            mark = load_mark(marks[i]) if marks is not None else None
            stmt = select(func.count(), func.max(rows.c.w__)).where(
                rows.c.c__event_type.in_(_source_types(part, self.types))
            )
            if mark is not None:
                stmt = stmt.where(rows.c.w__ > mark)
            count, top = conn.execute(stmt).one()
            arrived += count if marks is not None else 0
            tops.append(dump_mark(top) if top is not None else (marks[i] if marks is not None else None))
        return arrived, tops

    def _inbox_top(self, conn: Connection, mark: Any, count: bool) -> tuple[int, Any]:
        since = load_mark(mark)
        stmt = select(func.count(), func.max(T.c.received_at)).where(T.c.event_type.in_(self.types))
        if since is not None:
            stmt = stmt.where(T.c.received_at > since)
        arrived, top = conn.execute(stmt).one()
        return (arrived if count else 0), (dump_mark(top) if top is not None else mark)

    def _waiting(
        self, src: Connection, conn: Connection, floor: datetime, now: datetime
    ) -> tuple[int, datetime | None]:
        """Trigger events that occurred after ``floor`` and by ``now``: what no finished run has taken."""
        count, oldest = 0, None
        feeds: list[tuple[Connection, Any, Any, list[Any]]] = []
        for part in self.parts:
            rows = part.select().subquery()
            feeds.append((src, rows.c.c__occurred_at, rows.c.c__event_type, _source_types(part, self.types)))
        feeds.append((conn, T.c.occurred_at, T.c.event_type, self.types))
        for db, occurred, kind, types in feeds:
            n, first = db.execute(
                select(func.count(), func.min(occurred)).where(kind.in_(types), occurred > floor, occurred <= now)
            ).one()
            count += n
            if first is not None:
                first = first if isinstance(first, datetime) else datetime.fromisoformat(str(first))
                oldest = first if oldest is None or first < oldest else oldest
        return count, oldest

    def consumed(self, conn: Connection) -> datetime | None:
        """The as-of of the program's newest finished run (its funnel is logged last)."""
        k = schema.kpis
        newest: datetime | None = conn.execute(
            select(func.max(k.c.as_of)).where(k.c.program == self.program_id)
        ).scalar_one()
        return newest

    # --- one poll ----------------------------------------------------------------------------

    def poll(self, now: datetime) -> Poll:
        """Look at the feeds as of ``now`` (naive UTC), store the advanced watermarks, and say whether to fire."""
        with self.source.connect() as src, self.state.begin() as conn:
            row = conn.execute(select(W).where(W.c.program == self.program_id)).mappings().first()
            if row is None or row["mapping"] != self.mapping:
                # A first watch (or a new mapping) starts at the newest rows: what came before is the schedule's.
                _arrived, tops = self._source_tops(src, None)
                _none, inbox = self._inbox_top(conn, None, count=False)
                marks = {"source": tops, "inbox": inbox}
                started = row["started_at"] if row is not None else now
                arrived = unannounced = 0
            else:
                marks = dict(row["marks"])
                source_marks = marks.get("source") or [None] * len(self.parts)
                arrived, tops = self._source_tops(src, source_marks)
                inbox_arrived, inbox = self._inbox_top(conn, marks.get("inbox"), count=True)
                unannounced = arrived + (0 if self.announced else inbox_arrived)
                arrived += inbox_arrived
                marks = {"source": tops, "inbox": inbox}
                started = row["started_at"]
            consumed = self.consumed(conn)
            # Waiting: what occurred after the newest finished run (a watch that starts after a pause or
            # an outage catches up at once), else after the watch began.
            floor = consumed if consumed is not None else started
            waiting, oldest = self._waiting(src, conn, floor, now)
            fire, reason = self._decide(unannounced, waiting, oldest, consumed, now)
            self.looked = True
            if fire:
                self.fired_at, self.consumed_at_fire = now, consumed
            values = {
                "mapping": self.mapping,
                "marks": marks,
                "started_at": started,
                "waiting": waiting,
                "oldest_waiting": oldest,
                "fired_at": self.fired_at if fire or row is None else row["fired_at"],
            }
            state = (json.dumps(marks, sort_keys=True), waiting, oldest, values["fired_at"], self.mapping)
            stale = self.written_at is None or now - self.written_at >= HEARTBEAT
            if row is None or state != self.written or stale:
                values["checked_at"] = now
                if row is None:
                    conn.execute(W.insert().values(program=self.program_id, **values))
                else:
                    conn.execute(W.update().where(W.c.program == self.program_id).values(**values))
                self.written, self.written_at = state, now
        return Poll(arrived, waiting, oldest, consumed, fire, reason)

    def _decide(
        self, arrived: int, waiting: int, oldest: datetime | None, consumed: datetime | None, now: datetime
    ) -> tuple[bool, str]:
        """Whether to fire. ``arrived``: new rows nothing else announces (with an events queue, the
        source's only)."""
        if arrived:
            return True, "new_events"
        if not waiting:
            return False, ""
        if not self.looked:
            return True, "waiting_at_start"
        if self.announced:
            # The announced run is likely under way: fire only for what it left waiting past the grace.
            overdue = oldest is not None and now - oldest >= ANNOUNCED_GRACE
            recent = self.fired_at is not None and now - self.fired_at < ANNOUNCED_GRACE
            return (True, "waiting_unannounced") if overdue and not recent else (False, "")
        if consumed != self.consumed_at_fire:
            return True, "waiting_after_run"
        if self.fired_at is None or now - self.fired_at >= REFIRE_AFTER:
            return True, "still_waiting"
        return False, ""
