"""The due-steps sweep's operators: a program's steps sent within minutes of their due time.

Each program has a task group in the ``lifecycle_due_steps`` DAG: ``sweep`` decides (exits for the
enrollments with a step due, planning, suppression, caps) and numbers the ready messages into send
batches, ``send`` sends them. Both are the program run's stages under the sweep's ledger run id
(:func:`~lifecycle.engine.scope.sweep_run_id`), so the idempotency keys and claims are those of the
program's own runs. A program whose DAG is paused is skipped, and so is an invalid program file,
with its error.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from lifecycle import config
from lifecycle.airflow.base import LifecycleOperator, TaskRun
from lifecycle.airflow.operators import ProgramOperator, SendBatchOperator
from lifecycle.engine import pipeline
from lifecycle.engine.scope import RunScope, sweep_run_id

log = logging.getLogger(__name__)


def program_paused(ti: Any, program_id: str) -> bool:
    """Whether the program's own DAG is paused (or not known to Airflow yet), read through the task
    SDK (``RuntimeTaskInstance.get_dag``: the execution API's DAG record). Any other error of the
    API fails the task."""
    from airflow.sdk.exceptions import AirflowRuntimeError

    try:
        return bool(ti.get_dag(program_id).is_paused)
    except AirflowRuntimeError as exc:
        if (getattr(exc.error, "detail", None) or {}).get("status_code") != HTTPStatus.NOT_FOUND:
            raise
        log.warning("program %s has no DAG in Airflow yet; its sweep waits for it", program_id)
        return True


class SweepScope:
    """Makes a program stage's task part of a sweep: its ledger run id names the sweep and program."""

    program_id: str

    def scope(self, run: TaskRun) -> tuple[RunScope, dict[str, config.Program]]:
        return pipeline.load_scope(self.program_id, sweep_run_id(self.program_id, run.run_id), run.as_of)


class SweepDueStepsOperator(SweepScope, ProgramOperator[list[int]]):
    """Decide the program's due steps at the sweep's as-of time and number the ready messages into
    send batches; returns the batch numbers. Skipped when the program's DAG is paused."""

    def execute(self, context: Any) -> list[int]:
        from airflow.sdk.exceptions import AirflowSkipException

        if program_paused(context["ti"], self.program_id):
            raise AirflowSkipException(f"{self.program_id} is paused: its due steps wait until it is resumed")
        return super().execute(context)

    def run(self, run: TaskRun) -> list[int]:
        scope, programs = self.scope(run)
        decided = pipeline.sweep(run.engine, scope, programs)
        log.info("sweep %s as of %s: %s", self.program_id, scope.as_of.isoformat(), decided)
        return pipeline.prepare(run.engine, scope, adopt=False)


class SendDueBatchOperator(SweepScope, SendBatchOperator):
    """Claim, render and send one batch of the program's sweep."""


class RefreshDueFiguresOperator(SweepScope, ProgramOperator[None]):
    """After the sweep's batches were sent, store the program's Campaigns page figures again
    (messages sent between runs change the outcomes counted up to its newest run). Skipped, with
    the sends, when the sweep had nothing to send."""

    def run(self, run: TaskRun) -> None:
        from lifecycle.reporting import figures

        figures.refresh_run(run.engine, self.scope(run)[0])


class SkipInvalidProgramOperator(LifecycleOperator[None]):
    """Stands in for a program whose file is wrong: the sweep skips it, with the file's error.

    :param error: the file's validation error (file, field and fix).
    """

    def __init__(self, *, error: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def execute(self, context: Any) -> None:
        from airflow.sdk.exceptions import AirflowSkipException

        log.error("program file is invalid, not swept: %s", self.error)
        raise AirflowSkipException(self.error)
