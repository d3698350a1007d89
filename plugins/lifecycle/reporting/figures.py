"""The Campaigns page's precomputed figures: per program, everything its card shows as of the
program's newest run, in ``lifecycle_campaign_figures`` (migration 0013).

Computing a program's figures reads the ledger, the enrollments, the provider events and the
events (:func:`measurement.program_kpis`, the week's funnels, the funnel history, the per-step
figures, the event lag) and draws its chart: seconds per program on a large CRM. So the runs
compute them and the page only reads them:

- a program run's ``log_kpis`` task stores its program's figures after logging the funnel
  (:func:`refresh_run`; its ``sync_audience`` task runs before, so the ad audiences show as just
  synced), as does an in-process run given ``then=refresh_run``
  (:func:`lifecycle.engine.pipeline.run_program`; the simulation refreshes once at its end);
- the due-steps sweep refreshes its program's figures after it sent anything (deferred messages
  released, steps sent between runs change the outcomes counted up to the run);
- the ``data_hygiene`` DAG refreshes every program's, daily: provider feedback (delivered,
  bounced, unsubscribed) changes the figures between runs, and the card's "computed" time says
  how old they are;
- the page computes (and stores) a program's figures itself only when none are stored, or the
  stored ones are of an older run or an older payload format (:data:`VERSION`): a fresh install
  and the first view after an upgrade work, and a page view otherwise reads one small table.

What is live on the page stays live: whether the DAG is paused (Airflow's API) and a realtime
program's backlog (one row of ``lifecycle_event_watch``). A dry run (rehearsal) never writes
figures: it calls none of this, and rolls its transaction back.

The payload holds the inputs of the card's view rather than its HTML, so the program file's and
the policy's current text (names, steps, currency) is shown with the stored counts, exactly as
the live computation would (a test compares the two pages).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, delete, func, insert, inspect, select

from lifecycle.config import Program
from lifecycle.engine import ad_audiences
from lifecycle.model import schema
from lifecycle.model.db import utc_naive
from lifecycle.model.ledger import Status
from lifecycle.reporting import charts, digest, measurement, performance, realtime

if TYPE_CHECKING:
    from lifecycle.engine.scope import RunScope

VERSION = 3
"""The payload's format: stored figures of another version are computed again on the next view.
2: per-channel figures (``channels``); 3: the program's ad audiences (``audiences``)."""
TREND_WEEKS = 12
CHART_SIZE = (560, 170)
F = schema.campaign_figures
K = schema.kpis


@dataclass(frozen=True)
class NewestRun:
    """A program's newest logged run."""

    as_of: datetime
    run_id: str


@dataclass(frozen=True)
class Stored:
    """One program's figures as stored."""

    program: str
    as_of: datetime
    run_id: str
    computed_at: datetime
    version: int
    payload: dict[str, Any]

    def current(self, newest: NewestRun) -> bool:
        """Whether these are the figures of ``newest`` in this payload format."""
        return self.version == VERSION and self.as_of == newest.as_of and self.run_id == newest.run_id


def newest_runs(engine: Engine) -> dict[str, NewestRun]:
    """Each program's newest logged run (as-of time and run id); empty before the first run."""
    if not inspect(engine).has_table(K.name):
        return {}
    newest = select(K.c.program, func.max(K.c.as_of).label("as_of")).group_by(K.c.program).subquery()
    query = (
        select(K.c.program, K.c.as_of, func.max(K.c.run_id))
        .join(newest, and_(newest.c.program == K.c.program, newest.c.as_of == K.c.as_of))
        .group_by(K.c.program, K.c.as_of)
    )
    with engine.connect() as conn:
        return {program: NewestRun(at, run_id) for program, at, run_id in conn.execute(query)}


# --- computing ---------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it: NaN (a DataFrame's "nothing") as None, numpy and pandas
    scalars as Python's, times as ISO text."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def funnel_chart(program_id: str, trend: pd.DataFrame) -> str:
    """The program's funnel per week (entered, planned, blocked, messages) and its KPI rate vs
    holdout, as a PNG data URI."""
    weeks = digest.program_weeks(trend, program_id)
    funnel = charts.Panel(
        "Funnel per week",
        [
            charts.Series("enrolled", list(weeks["enrolled"])),
            charts.Series("planned", list(weeks[Status.PLANNED])),
            charts.Series("suppressed or capped", list(weeks[Status.SUPPRESSED] + weeks[Status.CAPPED]), dashed=True),
            charts.Series("messages", list(weeks["messages"])),
        ],
    )
    png = charts.render(digest.week_labels(weeks), [funnel, digest.kpi_panel(weeks)], CHART_SIZE)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _funnel(funnel: performance.Funnel) -> dict[str, Any]:
    return {"outcomes": dict(funnel.outcomes), "reasons": {k: dict(v) for k, v in funnel.reasons.items()}}


def compute(
    engine: Engine, programs: Mapping[str, Program], as_of: Mapping[str, datetime]
) -> dict[str, dict[str, Any]]:
    """Every figure the page shows of each of ``programs`` as of its time in ``as_of``: the KPI
    row, this week's and last week's funnels, the weekly trend and its chart, the per-step and
    per-channel figures, the event lag and the program's ad audiences as last synced. The heavy
    part of the page; JSON-ready payloads."""
    times = {pid: utc_naive(as_of[pid]) for pid in programs}
    if not times:
        return {}
    kpis = {r["program"]: r for r in digest.records(measurement.program_kpis(engine, programs, times))}
    weeks = digest.weekly_funnels(engine, times)
    history = measurement.funnel_history(engine)
    per_channel = performance.channel_figures(engine, {pid: (None, at) for pid, at in times.items()})
    payloads = {}
    for pid, program in programs.items():
        at = times[pid]
        trend = digest.period_trend(history, [pid], at, TREND_WEEKS)
        steps = performance.step_performance(engine, program, at)
        lag = realtime.event_lag(engine, pid, at) if program.audience.trigger_event else None
        payloads[pid] = plain(
            {
                "kpis": kpis[pid],
                "week": _funnel(weeks[pid][0]),
                "week_before": _funnel(weeks[pid][1]),
                "trend": digest.records(trend),
                "chart": funnel_chart(pid, trend),
                "steps": [asdict(f) for f in steps],  # the funnel as {"outcomes", "reasons"}
                "channels": [asdict(c) for c in per_channel[pid]],
                "lag": asdict(lag) if lag else None,
                "audiences": [asdict(a) for a in ad_audiences.audience_status(engine, pid)],
            }
        )
    return payloads


# --- reading a payload back ----------------------------------------------------------------------


def funnel_of(stored: Mapping[str, Any]) -> performance.Funnel:
    return performance.Funnel(dict(stored["outcomes"]), {k: dict(v) for k, v in stored["reasons"].items()})


def steps_of(payload: Mapping[str, Any]) -> list[performance.StepFigures]:
    return [performance.StepFigures(**{**s, "funnel": funnel_of(s["funnel"])}) for s in payload["steps"]]


def channels_of(payload: Mapping[str, Any]) -> list[performance.ChannelFigures]:
    return [performance.ChannelFigures(**c) for c in payload.get("channels", [])]


def audiences_of(payload: Mapping[str, Any]) -> list[ad_audiences.AudienceStatus]:
    return [
        ad_audiences.AudienceStatus(
            **{**a, "last_synced_at": datetime.fromisoformat(a["last_synced_at"]) if a["last_synced_at"] else None}
        )
        for a in payload.get("audiences", [])
    ]


def trend_of(payload: Mapping[str, Any]) -> pd.DataFrame:
    trend = pd.DataFrame(payload["trend"])
    return trend.fillna(math.nan) if len(trend) else trend


def lag_of(payload: Mapping[str, Any]) -> realtime.EventLag | None:
    return realtime.EventLag(**payload["lag"]) if payload.get("lag") else None


# --- storing -------------------------------------------------------------------------------------


def load(engine: Engine) -> dict[str, Stored]:
    """Every program's stored figures (none before migration 0013 or the first store)."""
    if not inspect(engine).has_table(F.name):
        return {}
    with engine.connect() as conn:
        return {
            r.program: Stored(r.program, r.as_of, r.run_id, r.computed_at, r.version, r.payload)
            for r in conn.execute(select(F))
        }


def store(
    engine: Engine,
    payloads: Mapping[str, dict[str, Any]],
    runs: Mapping[str, NewestRun],
    computed_at: datetime | None = None,
) -> dict[str, Stored]:
    """Upsert the figures of the programs in ``payloads`` (one statement). Two refreshes at once
    (a run's and a sweep's) both land; stored figures of a newer run are never replaced by those
    of an older one."""
    computed_at = utc_naive(computed_at or datetime.now(UTC)).replace(microsecond=0)
    rows = [
        Stored(pid, runs[pid].as_of, runs[pid].run_id, computed_at, VERSION, payload)
        for pid, payload in payloads.items()
    ]
    if not rows:
        return {}
    with engine.begin() as conn:
        if conn.dialect.name in ("postgresql", "sqlite"):
            from sqlalchemy.dialects import postgresql, sqlite

            dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            statement = dialect_insert(F)
            changed = [c.name for c in F.columns if c.name != "program"]
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[F.c.program],
                    set_={name: statement.excluded[name] for name in changed},
                    where=F.c.as_of <= statement.excluded.as_of,
                ),
                [asdict(r) for r in rows],
            )
        else:
            conn.execute(delete(F).where(F.c.program.in_([r.program for r in rows])))
            conn.execute(insert(F), [asdict(r) for r in rows])
    return {r.program: r for r in rows}


def refresh(engine: Engine, programs: Mapping[str, Program], only: set[str] | None = None) -> dict[str, Stored]:
    """Compute and store the figures of ``programs`` (or of those in ``only``) that have run, as
    of each one's newest run; returns what was stored."""
    runs = newest_runs(engine)
    chosen = {pid: p for pid, p in programs.items() if pid in runs and (only is None or pid in only)}
    payloads = compute(engine, chosen, {pid: runs[pid].as_of for pid in chosen})
    return store(engine, payloads, runs)


def refresh_run(engine: Engine, run: RunScope) -> None:
    """Store the figures of the run's program as of its newest logged run: after ``log_kpis``, and
    after a due-steps sweep that sent (the DAGs' tasks; ``then=`` of the in-process runs)."""
    refresh(engine, {run.program.id: run.program})


def current(engine: Engine, programs: Mapping[str, Program]) -> dict[str, Stored]:
    """The figures the page shows: the stored ones where they are of the program's newest run,
    the rest (none stored yet, an older run, an older format) computed and stored now."""
    runs = newest_runs(engine)
    found = load(engine)
    stale = {pid for pid in programs if pid in runs and not (pid in found and found[pid].current(runs[pid]))}
    if stale:
        found |= refresh(engine, programs, only=stale)
    return {pid: found[pid] for pid in programs if pid in runs and pid in found}
