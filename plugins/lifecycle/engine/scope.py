"""The run scope: what every stage of one program run shares.

A run is one program at one as-of time (the run's data interval end, never the clock). Stages
take a :class:`RunScope` and decide everything from it, so a run and its re-run decide the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, union
from sqlalchemy.sql.expression import ColumnElement

from lifecycle.config import Policy, Program, segments
from lifecycle.model import schema

E = schema.enrollments
M = schema.messages
K = schema.kpis


@dataclass(frozen=True)
class RunScope:
    """One program run: its program, the policy, named segments, run id and as-of time."""

    program: Program
    policy: Policy
    catalog: Mapping[str, segments.Segment]
    run_id: str
    as_of: datetime  # naive UTC

    def segment_context(self, contact_id: ColumnElement, *, journey: bool = False) -> segments.Context:
        """A compile context for a segment correlated to ``contact_id``."""
        return segments.Context(
            as_of=self.as_of,
            contact_id=contact_id,
            contacts_in_scope=False,
            catalog=self.catalog,
            enrolled_at=E.c.enrolled_at if journey else None,
            anchor_at=E.c.anchor_at if journey else None,
        )


SWEEP_RUN_PREFIX = "due_steps"


def sweep_run_id(program_id: str, run_id: str) -> str:
    """The ledger run id of a due-steps sweep of one program: ``due_steps:<program>:<Airflow run id>``.

    One sweep DAG run covers every program and its Airflow run id names only the logical date, as a
    program DAG's scheduled run does; naming the sweep and the program keeps each program's sweep
    its own run in the ledger (``run_id``, ``send_run_id`` and send batches)."""
    return f"{SWEEP_RUN_PREFIX}:{program_id}:{run_id}"


def runs_of_as_of(conn: Connection, run: RunScope) -> list[str]:
    """The run ids of every run of this program at this run's as-of time, this one included.

    Triggering a program again for a logical date it already ran (a backfill, or a new manual run)
    gives a new run id but the same as-of time, and so the same decisions: the funnel and the
    audience snapshot belong to the (program, as-of), not to the run id. Earlier runs are known by
    what they left: the funnel they logged, the messages they planned, the contacts they enrolled.
    """
    program, as_of = run.program.id, run.as_of
    earlier = union(
        select(K.c.run_id).where(K.c.program == program, K.c.as_of == as_of),
        select(M.c.run_id).where(M.c.program == program, M.c.planned_at == as_of),
        select(E.c.run_id).where(E.c.program == program, E.c.enrolled_at == as_of, E.c.run_id.is_not(None)),
    )
    return sorted({run.run_id, *conn.execute(earlier).scalars()})
