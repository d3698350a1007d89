"""The run funnel (``engine/funnel.py``) and the audience snapshot: one per (program, as-of).

Triggering a program again for a logical date it already ran (a backfill, or a new manual run)
gives a new run id but the same as-of time: it must change nothing, in ``lifecycle_kpis`` or in
``lifecycle_audience``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from lifecycle.model import schema
from lifecycle.reporting import measurement
from tests.conftest import AS_OF
from tests.support.journey import run_program

pytestmark = pytest.mark.usefixtures("test_config")
K = schema.kpis
A = schema.audience


def kpi_rows(engine, program: str = "alpha") -> list[tuple]:
    """The program's funnel rows, without their surrogate key and run id."""
    with engine.connect() as conn:
        query = select(K.c.as_of, K.c.metric, K.c.dimension, K.c.value).where(K.c.program == program)
        return sorted(tuple(r) for r in conn.execute(query))


def kpi_run_ids(engine, program: str = "alpha") -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(K.c.run_id).where(K.c.program == program)).scalars())


def audience_rows(engine, program: str = "alpha") -> list[tuple]:
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(select(A.c.program, A.c.contact_id).where(A.c.program == program)))


def _crm_with_leads(crm_rows, n: int = 6) -> None:
    for _ in range(n):
        crm_rows.contact()


def test_a_second_run_for_the_same_as_of_leaves_the_funnel_and_audience_of_one_run(crm):
    engine, crm_rows = crm
    _crm_with_leads(crm_rows)
    first = run_program(engine, "alpha", AS_OF, run_id="scheduled__first")
    one_run_kpis, one_run_audience = kpi_rows(engine), audience_rows(engine)
    assert first["planned"] == 6 and first["audience"] == 6
    assert len(one_run_audience) == 6

    again = run_program(engine, "alpha", AS_OF, run_id="backfill__again")
    third = run_program(engine, "alpha", AS_OF, run_id="manual__third")

    assert again == first and third == first
    assert kpi_rows(engine) == one_run_kpis
    assert audience_rows(engine) == one_run_audience
    assert kpi_run_ids(engine) == {"manual__third"}


def test_relogging_an_earlier_run_of_the_as_of_keeps_one_funnel(crm):
    """Clearing ``log_kpis`` of the first run after a re-run (same as-of) logs the same figures once."""
    from lifecycle.engine import pipeline

    engine, crm_rows = crm
    _crm_with_leads(crm_rows, 3)
    run_program(engine, "alpha", AS_OF, run_id="scheduled__first")
    one_run_kpis = kpi_rows(engine)
    run_program(engine, "alpha", AS_OF, run_id="backfill__again")
    scope, _programs = pipeline.load_scope("alpha", "scheduled__first", AS_OF)
    pipeline.log_kpis(engine, scope)
    assert kpi_rows(engine) == one_run_kpis
    assert kpi_run_ids(engine) == {"scheduled__first"}


def test_runs_at_other_as_of_times_keep_their_own_funnel_and_history_reads_one_row_per_as_of(crm):
    engine, crm_rows = crm
    _crm_with_leads(crm_rows, 4)
    later = AS_OF + timedelta(hours=1)
    run_program(engine, "alpha", AS_OF, run_id="scheduled__1")
    run_program(engine, "alpha", later, run_id="scheduled__2")
    crm_rows.contact()
    run_program(engine, "alpha", AS_OF, run_id="backfill__1")  # re-run of the first as-of
    history = measurement.funnel_history(engine, "alpha")
    assert list(history["as_of"]) == [AS_OF, later]
    assert list(history["run_id"]) == ["backfill__1", "scheduled__2"]
    assert list(history["planned"]) == [5, 0]
    # The later as-of's snapshot is still there; the earlier one was replaced, not added to.
    assert len(audience_rows(engine)) == 4 + 5
