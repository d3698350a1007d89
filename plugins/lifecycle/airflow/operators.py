"""Airflow operators: thin adapters from a task's context to the pipeline stages.

Each operator stores its arguments in ``__init__``, reads config and opens the database in
``execute``, runs one stage for the run's as-of time (its data interval end / logical date,
never the clock), and returns a small summary.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from airflow.sdk import BaseOperator

from lifecycle.engine import pipeline
from lifecycle.model.db import CRM_CONN_ID, crm_url, get_engine
from lifecycle.model.ledger import Status

log = logging.getLogger(__name__)


def is_dry_run(params: Mapping[str, Any]) -> bool:
    """A run with test recipients is a dry run for every real contact."""
    return bool(params.get("dry_run") or params.get("test_recipients"))


def as_of_from_context(context: Mapping[str, Any]) -> datetime:
    """The run's as-of time: the data interval end, else the logical date, else when it ran."""
    for key in ("data_interval_end", "logical_date"):
        if context.get(key) is not None:
            return context[key]
    return context["dag_run"].run_after


class ProgramOperator(BaseOperator):
    """Base for the stages of a program run."""

    template_fields = ("program_id",)

    def __init__(self, *, program_id: str, crm_conn_id: str = CRM_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.program_id = program_id
        self.crm_conn_id = crm_conn_id

    def prepare(self, context: Mapping[str, Any]):
        """The run scope, every valid program, and the CRM engine."""
        scope, programs = pipeline.load_scope(self.program_id, context["run_id"], as_of_from_context(context))
        return scope, programs, get_engine(crm_url(self.crm_conn_id))

    def execute(self, context: Mapping[str, Any]) -> Any:
        scope, programs, engine = self.prepare(context)
        result = self.run_stage(engine, scope, programs, context)
        log.info("%s %s as of %s: %s", self.task_id, scope.program.id, scope.as_of.isoformat(), result)
        return result

    def run_stage(self, engine, scope, programs, context) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class EvaluateSegmentOperator(ProgramOperator):
    """Snapshot the entry segment's members for this run; returns the audience size."""

    def run_stage(self, engine, scope, programs, context) -> int:
        return pipeline.evaluate(engine, scope)


class EnrollAndExitOperator(ProgramOperator):
    """Exit enrollments that converted or met an exit rule, then enroll new members."""

    def run_stage(self, engine, scope, programs, context) -> dict[str, int]:
        return pipeline.enroll_and_exit(engine, scope)


class PlanDueStepsOperator(ProgramOperator):
    """Write one planned message per due (enrollment, step), holdouts included."""

    def run_stage(self, engine, scope, programs, context) -> int:
        return pipeline.plan(engine, scope)


class SuppressOperator(ProgramOperator):
    """Mark messages that must not go out, with their reason; re-plan on the fallback channel."""

    def run_stage(self, engine, scope, programs, context) -> dict[str, int]:
        return pipeline.suppress(engine, scope)


class CapOperator(ProgramOperator):
    """Apply frequency caps across programs (priority wins) and quiet hours."""

    def run_stage(self, engine, scope, programs, context) -> dict[str, int]:
        return pipeline.cap(engine, scope, programs)


class PrepareBatchesOperator(ProgramOperator):
    """Number this run's ready messages into send batches; returns the batch numbers to map over."""

    def run_stage(self, engine, scope, programs, context) -> list[int]:
        limit = context["params"].get("limit")
        return pipeline.prepare(engine, scope, int(limit) if limit else None)


class SendBatchOperator(ProgramOperator):
    """Claim, render and send one batch through the channel transport."""

    template_fields = ("program_id", "batch")

    def __init__(self, *, batch: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch = batch

    def run_stage(self, engine, scope, programs, context) -> dict[str, int]:
        from lifecycle.channels.selection import transport_for_run

        dry_run = is_dry_run(context["params"])
        transport, links = transport_for_run(dry_run)
        return pipeline.send(engine, scope, int(self.batch), transport, links=links, dry_run=dry_run)


class SendTestCopiesOperator(ProgramOperator):
    """Send test recipients what the run's test contact would receive (no-op without recipients)."""

    def run_stage(self, engine, scope, programs, context) -> int:
        params = context["params"]
        recipients = params.get("test_recipients") or []
        if not recipients:
            return 0
        if not params.get("test_contact"):
            raise ValueError("test_recipients needs test_contact: the contact whose messages they should receive")
        from lifecycle.channels.selection import transport_for_run
        from lifecycle.engine.test_copies import send_test_copies

        transport, _links = transport_for_run(dry_run=False)
        results = send_test_copies(engine, scope, params["test_contact"], recipients, transport)
        failed = [r.reason for r in results if r.status != Status.SENT]
        if failed:
            raise RuntimeError(f"{len(failed)} test cop(ies) not sent: {failed[:3]}")
        return len(results)


class LogKpisOperator(ProgramOperator):
    """Write the run's funnel and primary-KPI counts to ``lifecycle_kpis``."""

    def run_stage(self, engine, scope, programs, context) -> dict[str, float]:
        return pipeline.log_kpis(engine, scope)


class InvalidProgramOperator(BaseOperator):
    """Stands in for a program whose file is wrong: fails with the file's error, sends nothing."""

    def __init__(self, *, error: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def execute(self, context: Mapping[str, Any]) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(self.error)
