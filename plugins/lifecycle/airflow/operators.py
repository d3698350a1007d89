"""Airflow operators for the stages of a program run: thin adapters over :mod:`lifecycle.engine.pipeline`.

Each follows :class:`~lifecycle.airflow.base.LifecycleOperator`: it stores its arguments, and its
``run`` reads the run scope for the run's as-of time and calls one pipeline stage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from lifecycle import config
from lifecycle.airflow.base import LifecycleOperator, TaskRun
from lifecycle.engine import pipeline
from lifecycle.engine.scope import RunScope

log = logging.getLogger(__name__)
R = TypeVar("R")


RETIRED_OPTIONS = {
    "dry_run": "trigger lifecycle_dry_run with program={program}",
    "test_recipients": "trigger lifecycle_test_send with program={program}, contact and recipients",
    "test_contact": "trigger lifecycle_test_send with program={program}, contact and recipients",
}
"""Manual-run options program DAGs no longer take, and the DAG that does the job now."""


def refuse_retired_options(program_id: str, conf: Mapping[str, Any]) -> None:
    """Fail (without retries) a program run whose conf asks for a dry run or a test send: those
    are DAGs of their own now, and a program run is always real."""
    from airflow.sdk.exceptions import AirflowFailException

    for option, instead in RETIRED_OPTIONS.items():
        if option in conf:
            raise AirflowFailException(
                f"{option} is no longer a program-run option: {instead.format(program=program_id)}; "
                "nothing was planned or sent"
            )


class ProgramOperator(LifecycleOperator[R]):
    """Base for the stages of a program run.

    :param program_id: the program (DAG id) whose stage this task runs.
    """

    template_fields: Sequence[str] = ("program_id", "crm_conn_id", "state_conn_id")

    def __init__(self, *, program_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.program_id = program_id

    def execute(self, context: Any) -> R:
        dag_run = context.get("dag_run")
        conf = {**(getattr(dag_run, "conf", None) or {}), **(context.get("params") or {})}
        refuse_retired_options(self.program_id, conf)
        return super().execute(context)

    def log_name(self) -> str:
        return f"{self.task_id} {self.program_id}"

    def scope(self, run: TaskRun) -> tuple[RunScope, dict[str, config.Program]]:
        """The run scope and every valid program (capping needs the others)."""
        return pipeline.load_scope(self.program_id, run.run_id, run.as_of)


class SyncSourceOperator(LifecycleOperator[dict[str, dict[str, Any]]]):
    """Copy what the run reads from the source (``crm_conn_id``, read-only) into the state
    database's canonical mirror tables; nothing to do where they are one database.

    :param program_id: the program whose entities must copy (its run fails when one does not);
        left out, ``entities`` are.
    :param entities: the entities to copy when no program is named (data hygiene's contacts and consents).
    """

    template_fields: Sequence[str] = ("program_id", "crm_conn_id", "state_conn_id")

    def __init__(self, *, program_id: str | None = None, entities: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.program_id = program_id
        self.entities = list(entities)

    def run(self, run: TaskRun) -> dict[str, dict[str, Any]]:
        from dataclasses import asdict

        from lifecycle.config.sources import load_sources
        from lifecycle.engine import sync
        from lifecycle.model.db import crm_url, source_engine, state_url

        source = crm_url(self.crm_conn_id)
        shared = sync.same_database(source, state_url(self.state_conn_id, self.crm_conn_id))
        own, others = sync.entities_for(self.program_id, self.entities)
        results = sync.sync(source_engine(source), run.engine, load_sources(), own, shared=shared, also=others)
        return {entity: asdict(result) for entity, result in results.items()}


class EvaluateSegmentOperator(ProgramOperator[int]):
    """Snapshot the entry segment's members for this run; returns the audience size."""

    def run(self, run: TaskRun) -> int:
        return pipeline.evaluate(run.engine, self.scope(run)[0])


class EnrollAndExitOperator(ProgramOperator[dict[str, int]]):
    """Exit enrollments that converted or met an exit rule, then enroll new members."""

    def run(self, run: TaskRun) -> dict[str, int]:
        return pipeline.enroll_and_exit(run.engine, self.scope(run)[0])


class PlanDueStepsOperator(ProgramOperator[int]):
    """Write one planned message per due (enrollment, step), holdouts included."""

    def run(self, run: TaskRun) -> int:
        return pipeline.plan(run.engine, self.scope(run)[0])


class SuppressOperator(ProgramOperator[dict[str, int]]):
    """Mark messages that must not go out, with their reason; re-plan on the fallback channel."""

    def run(self, run: TaskRun) -> dict[str, int]:
        return pipeline.suppress(run.engine, self.scope(run)[0])


class CapOperator(ProgramOperator[dict[str, int]]):
    """Apply frequency caps across programs (priority wins) and quiet hours."""

    def run(self, run: TaskRun) -> dict[str, int]:
        scope, programs = self.scope(run)
        return pipeline.cap(run.engine, scope, programs)


class PrepareBatchesOperator(ProgramOperator[list[int]]):
    """Number this run's ready messages into send batches; returns the batch numbers to map over."""

    def run(self, run: TaskRun) -> list[int]:
        limit = run.params.get("limit")
        return pipeline.prepare(run.engine, self.scope(run)[0], int(limit) if limit else None)


class SendBatchOperator(ProgramOperator[dict[str, int]]):
    """Claim, render and send one batch through the channel transport."""

    template_fields: Sequence[str] = ("program_id", "batch")

    def __init__(self, *, batch: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch = batch

    def run(self, run: TaskRun) -> dict[str, int]:
        from lifecycle.channels.selection import provider_transport

        transport, links = provider_transport()
        return pipeline.send(run.engine, self.scope(run)[0], int(self.batch), transport, links=links)


class LogKpisOperator(ProgramOperator[dict[str, float]]):
    """Write the run's funnel and primary-KPI counts to ``lifecycle_kpis``, then store the
    Campaigns page's figures of the program as of this run (``lifecycle_campaign_figures``)."""

    def run(self, run: TaskRun) -> dict[str, float]:
        from lifecycle.reporting import figures  # pandas and the charts: not at DAG parse

        scope = self.scope(run)[0]
        logged = pipeline.log_kpis(run.engine, scope)
        figures.refresh_run(run.engine, scope)
        return logged


class WriteBackOperator(ProgramOperator[dict[str, int]]):
    """Post the program's sent touches to the CRM as activities (policy ``write_back``), each once;
    an endpoint that refuses or is down is logged and counted, and the next run tries again."""

    def run(self, run: TaskRun) -> dict[str, int]:
        from lifecycle.channels.http_webhook import WebhookHook

        scope = self.scope(run)[0]
        rule = scope.policy.write_back
        if rule is None:
            log.info("The policy has no write_back: no activity is posted")
            return {}
        hook = WebhookHook(rule.connection)
        return pipeline.write_back(run.engine, scope, lambda payload, key: hook.deliver(payload, key))


class SyncAudienceOperator(ProgramOperator[dict[str, int]]):
    """Send the program's ad audience (``audience_sync``) the adds and removes since its last sync;
    fails, after recording what the platform took, when a batch was not taken (the next run or a
    retry sends the rest)."""

    def run(self, run: TaskRun) -> dict[str, int]:
        from lifecycle.channels.ad_audience import MetaAudienceHook

        scope = self.scope(run)[0]
        sync = scope.program.audience_sync
        if sync is None:
            log.info("The program has no audience_sync: no audience is synced")
            return {}
        hook = MetaAudienceHook(sync.conn_id)
        return pipeline.sync_audience(
            run.engine, scope, lambda action, names, rows: hook.upload(sync.audience, action, names, rows)
        )


class CheckRunOperator(LifecycleOperator[None]):
    """The run's last task (after ``log_kpis``, whatever happened upstream): fails when a send
    batch or ``log_kpis`` failed (a failed earlier stage leaves the sends
    upstream_failed), so the run ends failed and the owner is alerted, while the funnel is still
    logged.

    :param task_ids: the tasks whose failure fails the run (every map index of a mapped one).
    """

    def __init__(self, *, task_ids: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task_ids = list(task_ids)

    def execute(self, context: Any) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        ti = context["ti"]
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=self.task_ids, run_ids=[ti.run_id])
        failed = failed_tasks(states.get(ti.run_id, {}))
        if failed:
            raise AirflowFailException(
                f"{len(failed)} task(s) of this run failed: {', '.join(failed)}; "
                "see the failed task's log for the error"
            )
        log.info("Every send task of the run succeeded or had nothing to send; the funnel is logged")


def failed_tasks(states: Mapping[str, Any]) -> list[str]:
    """The task ids (``send_2`` for map index 2) whose Airflow state is failed or upstream_failed."""
    from airflow.sdk import TaskInstanceState

    failed = {TaskInstanceState.FAILED, TaskInstanceState.UPSTREAM_FAILED}
    return sorted(task for task, state in states.items() if state in failed)


class InvalidProgramOperator(LifecycleOperator[None]):
    """Stands in for a program whose file is wrong: fails with the file's error, sends nothing.

    :param error: the file's validation error (file, field and fix).
    """

    def __init__(self, *, error: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def execute(self, context: Any) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(self.error)
