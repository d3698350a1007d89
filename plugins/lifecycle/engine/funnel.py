"""A run's funnel and its primary-KPI counts, written to ``lifecycle_kpis``.

Every figure is read back from the engine tables, so re-running ``log_kpis`` for a run writes
the same rows again (replacing the old ones) and the funnel always matches the ledger. A funnel
belongs to the (program, as-of): a run triggered again for a logical date that already ran (a new
run id) counts what every run of that as-of did and replaces their rows, under its own run id.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, delete, func, insert, or_, select

from lifecycle.engine.scope import RunScope, runs_of_as_of
from lifecycle.model import schema
from lifecycle.model.ledger import WENT_OUT, WITHHELD, EnrollmentState, ExitReason, Status, reason_kind

M = schema.messages
E = schema.enrollments
K = schema.kpis


def run_funnel(conn: Connection, run: RunScope) -> dict[tuple[str, str], float]:
    """``{(metric, dimension): value}`` for one program run. Metrics are named after the ledger's
    statuses: ``planned`` counts every message the run planned, ``sent`` those that went out.
    "The run" is every run of the program at this as-of time (:func:`runs_of_as_of`)."""
    program = run.program.id
    runs = runs_of_as_of(conn, run)
    a = schema.audience
    figures: dict[tuple[str, str], float] = {
        ("audience", ""): conn.execute(
            select(func.count()).where(a.c.program == program, a.c.run_id.in_(runs))
        ).scalar_one(),
        ("enrolled", ""): conn.execute(
            select(func.count()).where(E.c.program == program, E.c.run_id.in_(runs), E.c.enrolled_at == run.as_of)
        ).scalar_one(),
    }
    for reason, n in conn.execute(
        select(E.c.exit_reason, func.count())
        .where(E.c.program == program, E.c.exited_at == run.as_of, E.c.state == EnrollmentState.EXITED)
        .group_by(E.c.exit_reason)
    ):
        figures[(EnrollmentState.EXITED, reason)] = n
    figures[(Status.PLANNED, "")] = conn.execute(
        select(func.count()).where(M.c.program == program, M.c.run_id.in_(runs))
    ).scalar_one()
    for status, reason, n in conn.execute(
        select(M.c.status, M.c.reason, func.count())
        .where(
            M.c.program == program,
            M.c.run_id.in_(runs),
            M.c.status.in_(WITHHELD),
        )
        .group_by(M.c.status, M.c.reason)
    ):
        key = (status, reason_kind(reason) or "")
        figures[key] = figures.get(key, 0) + n
    for status, channel, n in conn.execute(
        select(M.c.status, M.c.channel, func.count())
        .where(M.c.program == program, M.c.send_run_id.in_(runs))
        .group_by(M.c.status, M.c.channel)
    ):
        metric = Status.SENT if status in WENT_OUT else status
        figures[(metric, channel)] = figures.get((metric, channel), 0) + n
    for group, converted, n in conn.execute(
        select(E.c.group, E.c.exit_reason == ExitReason.CONVERTED, func.count())
        .where(E.c.program == program, E.c.enrolled_at <= run.as_of)
        .group_by(E.c.group, E.c.exit_reason == ExitReason.CONVERTED)
    ):
        figures[("kpi_enrolled", group)] = figures.get(("kpi_enrolled", group), 0) + n
        if converted:
            figures[("kpi_converted", group)] = n
    return figures


def log_funnel(conn: Connection, run: RunScope) -> dict[tuple[str, str], float]:
    """Replace the rows of this (program, as-of) in ``lifecycle_kpis`` with its funnel, under this
    run's id: the rows of an earlier run of the same as-of go, so a re-run adds nothing."""
    figures = run_funnel(conn, run)
    program = run.program.id
    conn.execute(delete(K).where(K.c.program == program, or_(K.c.run_id == run.run_id, K.c.as_of == run.as_of)))
    conn.execute(
        insert(K),
        [
            {
                "program": program,
                "run_id": run.run_id,
                "as_of": run.as_of,
                "metric": m,
                "dimension": d,
                "value": float(v),
            }
            for (m, d), v in figures.items()
        ],
    )
    return figures


def summarize(figures: Mapping[tuple[str, str], float]) -> dict[str, float]:
    """Totals per metric (dimensions summed), for logs and the demo table."""
    totals: dict[str, float] = {}
    for (metric, _dimension), value in figures.items():
        totals[metric] = totals.get(metric, 0) + value
    return totals
