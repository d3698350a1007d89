"""The simulation: play days of every program on a synthetic CRM with a planted uplift, then check
that measurement finds it.

Each simulated day runs every valid program's stages through :func:`lifecycle.engine.pipeline.run_program`
(the code the DAG tasks run) with the simulated transport. Then contacts respond. An enrollment
converts with the program's base probability ``p0``, plus the planted uplift only if a message
actually went out to it (``dry_run``/``sent``): holdout and control contacts, and treatment
contacts no message reached, get ``p0``. Responses happen on the days the enrollment's messages
settle (go out, or are held out, suppressed, capped or skipped); a conversion is an event of the
type the program's ``kpi.conversion`` names, written into the CRM ``events`` table later that
day, or, for a program that converts through CRM state, that state change: lead nurture's
opportunity at a qualified stage, renewal's subscription renewed past its anchor. The planted
uplift is thus the effect on messaged contacts, the quantity :meth:`LiftResult.among_messaged`
estimates from the treatment-vs-holdout lift. Everything is deterministic for a seed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, delete, insert, or_, select, update

from lifecycle import config
from lifecycle.channels.simulated import SimulatedTransport
from lifecycle.config import segments
from lifecycle.devtools.seed import seed_crm
from lifecycle.engine import pipeline
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate, utc_naive
from lifecycle.model.ledger import MESSAGED, Status
from lifecycle.reporting import figures, measurement
from lifecycle.reporting.measurement import LiftResult

M = schema.messages
BASE_RATE_RANGE = (0.05, 0.15)
DAY = timedelta(days=1)
_MINUTE = 60


@dataclass(frozen=True)
class Conversion:
    """How to plant one conversion: ``count`` events of ``event_type`` with ``properties``."""

    event_type: str
    properties: Mapping[str, Any]
    count: int = 1

    @property
    def label(self) -> str:
        """What is planted, for the report."""
        return self.event_type


@dataclass(frozen=True)
class StateChange:
    """How to plant one conversion the CRM records as a state rather than an event: a new
    opportunity with ``values`` (its stage), or the contact's subscriptions updated to ``values``
    (active, renewed). A value :data:`PAST_ANCHOR` is a renewal date a year past the enrollment's
    anchor (the old renewal date)."""

    table: str
    values: Mapping[str, Any]

    @property
    def label(self) -> str:
        """What is planted, for the report."""
        return f"{self.table} change"


PAST_ANCHOR = "past the anchor"
RENEWAL_TERM = timedelta(days=365)
STATE_TABLES = ("opportunities", "subscriptions")


@dataclass(frozen=True)
class ProgramResult:
    """One program's planted uplift against what measurement found.

    ``lift`` is treatment vs program holdout (intent to treat); ``lift_among_messaged`` rescales
    it by ``exposure`` (the share of treatment a message reached), the quantity planted.
    """

    program: str
    conversion_event: str
    base_rate: float
    planted_uplift: float
    exposure: float
    lift: LiftResult
    lift_among_messaged: LiftResult

    @property
    def inside_ci(self) -> bool:
        """Whether the planted uplift lies inside the 95% interval of the effect on messaged."""
        return self.lift_among_messaged.ci_low <= self.planted_uplift <= self.lift_among_messaged.ci_high


@dataclass(frozen=True)
class SimulationReport:
    """What a simulation played and measured; ``skipped`` says why a program was not measured."""

    contacts: int
    days: int
    start: datetime
    seed: int
    url: str
    results: Mapping[str, ProgramResult]
    skipped: Mapping[str, str] = field(default_factory=dict)
    elapsed_seconds: float = 0.0

    def render(self) -> str:
        """The report as a text table."""
        lines = [
            f"Simulation: {self.contacts:,} contacts, {self.days} days from {self.start:%Y-%m-%d %H:%M}, "
            f"seed {self.seed}, {self.elapsed_seconds:.1f}s",
            "lift = treatment vs program holdout (points, 95% CI); on messaged = lift / exposure, the quantity planted",
            "",
            f"{'program':<15}{'event':<19}{'p0':>5}{'planted':>8}{'treat':>7}{'hold':>6}{'expo':>6}"
            f"{'lift':>25}{'on messaged':>25}{'p':>9}  inside",
        ]
        for r in self.results.values():
            inside = "yes" if r.inside_ci else "NO"
            lines.append(
                f"{r.program:<15}{r.conversion_event:<19}{r.base_rate:>5.2f}{_pts(r.planted_uplift):>8}"
                f"{r.lift.treatment_n:>7}{r.lift.control_n:>6}{r.exposure:>6.2f}{_interval(r.lift):>25}"
                f"{_interval(r.lift_among_messaged):>25}{r.lift.p_value:>9.2g}  {inside}"
            )
        lines += [f"{program:<15}skipped: {why}" for program, why in self.skipped.items()]
        return "\n".join(lines)


def _pts(value: float) -> str:
    return f"{value * 100:+.1f}"


def _interval(result: LiftResult) -> str:
    return f"{_pts(result.absolute)} [{_pts(result.ci_low)}, {_pts(result.ci_high)}]"


# --- what a conversion is ---------------------------------------------------------------------


_COUNT_NEEDED = {"eq": 0, "gte": 0, "gt": 1}


def _planted_values(conditions: Sequence[segments.Condition], what: str) -> dict[str, Any] | str:
    values: dict[str, Any] = {}
    for cond in conditions:
        if cond.op == "eq":
            values[cond.column] = cond.value
        elif cond.op == "in":
            values[cond.column] = cond.value[0]
        elif cond.op == "after" and cond.value == "anchor":
            values[cond.column] = PAST_ANCHOR
        else:
            return (
                f"kpi.conversion {what} {cond.column!r} uses {cond.op!r}; only eq/in (and after: anchor) can be planted"
            )
    return values


def _state_change(program: config.Program, catalog: Mapping[str, segments.Segment]) -> StateChange | str:
    leaves = [leaf for leaf in measurement.conversion_states(program, catalog) if leaf.table in STATE_TABLES]
    if not leaves:
        return "kpi.conversion names no event, opportunity or subscription change; not simulated"
    values = _planted_values(leaves[0].where, f"{leaves[0].table} column")
    return values if isinstance(values, str) else StateChange(leaves[0].table, values)


def conversion_for(program: config.Program, catalog: Mapping[str, segments.Segment]) -> Conversion | StateChange | str:
    """What meets the program's ``kpi.conversion``: its first event condition, with its ``where``
    values; else, for a conversion through CRM state, its first opportunity or subscription
    condition; or a note saying why the conversion cannot be planted."""
    leaves = measurement.conversion_events(program, catalog)
    if not leaves:
        return _state_change(program, catalog)
    leaf = leaves[0]
    properties = _planted_values(leaf.where, "event property")
    if isinstance(properties, str):
        return properties
    count = 1
    if leaf.count is not None:
        op, n = leaf.count
        if op not in _COUNT_NEEDED or n + _COUNT_NEEDED[op] < 1:
            return f"kpi.conversion counts events with {op} {n}; not simulated"
        count = n + _COUNT_NEEDED[op]
    return Conversion(leaf.types[0], properties, count)


def _uplift_for(planted: Mapping[str, float] | float, program_id: str) -> float:
    return float(planted.get(program_id, 0.0)) if isinstance(planted, Mapping) else float(planted)


# --- playing days -----------------------------------------------------------------------------


def _links(message_id: int, contact_id: str, channel: str) -> dict[str, str]:
    return {"unsubscribe": f"https://simulation.invalid/unsubscribe/{message_id}"}


def _reset_engine_tables(engine: Engine) -> None:
    """The simulation owns its database: start from empty ``lifecycle_*`` tables."""
    migrate(engine)
    with engine.begin() as conn:
        for table in reversed(schema.engine_metadata.sorted_tables):
            conn.execute(delete(table))


def _settled_today(engine: Engine, program_id: str, run_id: str) -> list[tuple[int, str, bool]]:
    """(enrollment, contact, messaged) for enrollments with a message that settled in this run."""
    settled = or_(M.c.send_run_id == run_id, (M.c.run_id == run_id) & (M.c.status != Status.DEFERRED))
    query = (
        select(M.c.enrollment_id, M.c.contact_id, M.c.status)
        .where(M.c.program == program_id, settled)
        .order_by(M.c.enrollment_id, M.c.message_id)
    )
    touched: dict[int, tuple[str, bool]] = {}
    with engine.connect() as conn:
        for enrollment_id, contact_id, status in conn.execute(query):
            _, messaged = touched.get(enrollment_id, (contact_id, False))
            touched[enrollment_id] = (contact_id, messaged or status in MESSAGED)
    return [(e, c, m) for e, (c, m) in touched.items()]


@dataclass
class _Responder:
    """How one program's enrollments respond.

    Each enrollment draws one uniform number ``u`` the first time one of its messages settles.
    It converts when ``u < p0``, or when ``u < p0 + uplift`` once a message to it went out. So
    over its journey it converts with probability ``p0``, plus ``uplift`` if it was messaged at
    all: exactly what the treatment-vs-holdout lift divided by exposure estimates.
    """

    program: config.Program
    conversion: Conversion | StateChange
    p0: float
    uplift: float
    draws: dict[int, float] = field(default_factory=dict)
    messaged: set[int] = field(default_factory=set)
    converted: set[int] = field(default_factory=set)

    def respond(self, engine: Engine, rng: np.random.Generator, run_id: str, as_of: datetime) -> None:
        """Decide the enrollments whose messages settled in this run; write their conversions."""
        touched = [row for row in _settled_today(engine, self.program.id, run_id) if row[0] not in self.converted]
        new = [e for e, _, _ in touched if e not in self.draws]
        self.draws.update(zip(new, rng.random(len(new)).tolist(), strict=True))
        self.messaged.update(e for e, _, m in touched if m)
        winners = [(e, c) for e, c, _ in touched if self.draws[e] < self.p0 + self.uplift * (e in self.messaged)]
        offsets = rng.integers(_MINUTE, int(DAY.total_seconds()) - _MINUTE, size=len(winners)).tolist()
        values = rng.uniform(20, 400, size=len(winners)).round(2).tolist()
        planted = [
            (enrollment_id, contact_id, as_of + timedelta(seconds=offset), value)
            for (enrollment_id, contact_id), offset, value in zip(winners, offsets, values, strict=True)
        ]
        if planted:
            with engine.begin() as conn:
                if isinstance(self.conversion, Conversion):
                    rows = [row for p in planted for row in self._events(self.conversion, *p)]
                    conn.execute(insert(schema.events), rows)
                else:
                    self._change_state(conn, self.conversion, planted)
        self.converted.update(e for e, _ in winners)

    def _change_state(
        self, conn: Connection, change: StateChange, planted: Sequence[tuple[int, str, datetime, float]]
    ) -> None:
        """A new opportunity per winner (their account's, at the planted stage), or the winner's
        subscriptions moved to the planted state (renewed a year past their anchor)."""
        e, c = schema.enrollments, schema.contacts
        ids = [enrollment_id for enrollment_id, _, _, _ in planted]
        anchors = dict(conn.execute(select(e.c.enrollment_id, e.c.anchor_at).where(e.c.enrollment_id.in_(ids))).all())
        if change.table == "opportunities":
            contacts = [contact_id for _, contact_id, _, _ in planted]
            accounts = dict(
                conn.execute(select(c.c.contact_id, c.c.account_id).where(c.c.contact_id.in_(contacts))).all()
            )
            rows = [
                {
                    "opportunity_id": f"sim-{self.program.id}-{enrollment_id}",
                    "account_id": accounts.get(contact_id),
                    "contact_id": contact_id,
                    "amount": value,
                    "updated_at": at,
                }
                | dict(change.values)
                for enrollment_id, contact_id, at, value in planted
            ]
            conn.execute(insert(schema.opportunities), rows)
            return
        s = schema.subscriptions
        for enrollment_id, contact_id, at, _value in planted:
            renewed = (anchors.get(enrollment_id) or at) + RENEWAL_TERM
            values = {k: renewed if v == PAST_ANCHOR else v for k, v in change.values.items()}
            conn.execute(update(s).where(s.c.contact_id == contact_id).values(values))

    def _events(
        self, conversion: Conversion, enrollment_id: int, contact_id: str, at: datetime, value: float
    ) -> list[dict[str, Any]]:
        properties = dict(conversion.properties)
        if self.program.kpi.value_property:
            properties[self.program.kpi.value_property] = value
        return [
            {
                "event_id": f"sim-{self.program.id}-{enrollment_id}-{k}",
                "contact_id": contact_id,
                "event_type": conversion.event_type,
                "occurred_at": at + timedelta(seconds=k),
                "properties": properties,
            }
            for k in range(conversion.count)
        ]


def _responders(
    programs: Mapping[str, config.Program],
    planted_uplift: Mapping[str, float] | float,
    rng: np.random.Generator,
) -> tuple[dict[str, _Responder], dict[str, str]]:
    """A responder per program whose conversion can be planted (base rates drawn in program order),
    and a note for each program that cannot."""
    catalog = config.load_segments().parsed
    responders, skipped = {}, {}
    for pid in sorted(programs):
        p0 = float(rng.uniform(*BASE_RATE_RANGE))
        found = conversion_for(programs[pid], catalog)
        if not isinstance(found, str):
            responders[pid] = _Responder(programs[pid], found, p0, _uplift_for(planted_uplift, pid))
        else:
            skipped[pid] = found
    return responders, skipped


def _measure(engine: Engine, responder: _Responder, end: datetime) -> ProgramResult:
    """Treatment vs holdout lift of one program's KPI at ``end``, next to what was planted."""
    outcomes = measurement.program_outcomes(engine, responder.program, end)
    treated = outcomes[outcomes["group"] == "treatment"]
    held = outcomes[outcomes["group"] == "holdout"]
    itt = measurement.lift(int(treated["converted"].sum()), len(treated), int(held["converted"].sum()), len(held))
    exposure = float(treated["messaged"].mean()) if len(treated) else 0.0
    return ProgramResult(
        program=responder.program.id,
        conversion_event=responder.conversion.label,
        base_rate=responder.p0,
        planted_uplift=responder.uplift,
        exposure=exposure,
        lift=itt,
        lift_among_messaged=itt.among_messaged(exposure),
    )


def simulate(
    url: str,
    contacts: int,
    days: int,
    start: datetime,
    planted_uplift: Mapping[str, float] | float,
    seed: int = 7,
    crm_as_of: datetime | None = None,
) -> SimulationReport:
    """Seed a CRM at ``url`` (its CRM and engine tables are recreated), play ``days`` days from
    ``start`` with every valid program, plant ``planted_uplift`` (one value for every program or
    a value per program id, missing ids get 0) and measure each program's lift.

    The CRM is seeded as of ``crm_as_of`` (default ``start``); the demo seeds it as of the day
    after the simulation so real runs can follow it. Every stage reads the CRM as of its own run,
    so rows dated after a simulated day do not exist for that day."""
    started = time.perf_counter()
    start = utc_naive(start)
    seed_crm(url, contacts, utc_naive(crm_as_of) if crm_as_of else start, seed=seed)
    engine = get_engine(url)
    _reset_engine_tables(engine)
    programs, errors = config.load_all_programs()
    rng = np.random.default_rng(seed)
    responders, skipped = _responders(programs, planted_uplift, rng)
    skipped |= {
        pid: f"invalid program file ({len(e.problems)} problem(s)), first: {e.problems[0]}" for pid, e in errors.items()
    }
    scopes = [pipeline.load_scope(pid, "simulation", start)[0] for pid in sorted(programs)]
    transport = SimulatedTransport()
    for day in range(days):
        as_of = start + day * DAY
        run_id = f"simulation__{as_of.isoformat()}"
        for scope in scopes:
            run = replace(scope, run_id=run_id, as_of=as_of)
            pipeline.run_program(engine, run, programs, transport, links=_links, simulate=True)
        for responder in responders.values():
            responder.respond(engine, rng, run_id, as_of)
    figures.refresh(engine, programs)
    results = {pid: _measure(engine, r, start + days * DAY) for pid, r in responders.items()}
    return SimulationReport(contacts, days, start, seed, url, results, skipped, time.perf_counter() - started)


# --- command line ----------------------------------------------------------------------------


def uplift_arguments(values: Sequence[str], program_ids: Sequence[str]) -> Mapping[str, float] | float:
    """``0.08`` for every program, ``welcome=0.15`` for one; per-program values override the common one."""
    common, per_program = 0.0, {}
    for value in values:
        name, sep, number = value.rpartition("=")
        if sep:
            per_program[name] = float(number)
        else:
            common = float(number)
    if not per_program:
        return common
    return {pid: per_program.get(pid, common) for pid in program_ids} | per_program


def main(argv: Sequence[str] | None = None) -> int:
    """``lifecycle simulate --days N --contacts M --uplift 0.08 [--uplift welcome=0.15]``;
    ``lifecycle simulate --next-best-action ...`` runs the next-best-action comparison instead."""
    argv = list(argv) if argv is not None else sys.argv[1:]
    if "--next-best-action" in argv:
        from lifecycle.devtools import nba_simulation

        return nba_simulation.main([a for a in argv if a != "--next-best-action"])
    parser = argparse.ArgumentParser(prog="lifecycle simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument(
        "--uplift",
        action="append",
        default=[],
        help="planted uplift in proportion points: 0.08 for all programs or PROGRAM=0.15 (repeatable; default 0.08)",
    )
    parser.add_argument(
        "--start",
        type=datetime.fromisoformat,
        default=datetime(2026, 11, 16, 15, 0),
        help="as-of time of the first day (UTC)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--url", help="SQLAlchemy URL of a scratch database (recreated; default: a temp SQLite file)")
    args = parser.parse_args(argv)
    url = args.url or f"sqlite:///{Path(tempfile.mkdtemp(prefix='lifecycle-sim-')) / 'crm.db'}"
    programs, _errors = config.load_all_programs()
    uplift = uplift_arguments(args.uplift or ["0.08"], sorted(programs))
    report = simulate(url, args.contacts, args.days, args.start, uplift, seed=args.seed)
    print(report.render())
    print(f"\nCRM and ledger: {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
