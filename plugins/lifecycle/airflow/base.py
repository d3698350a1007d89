"""The one operator idiom every Lifecycle task follows.

An operator stores its arguments in ``__init__`` (no I/O), and in ``execute`` builds a
:class:`TaskRun` — the run id, the run's as-of time (its data interval end, never the clock),
the manual-run params and the state engine (where the engine's tables and the canonical CRM
tables it decides on live) — hands it to its :meth:`LifecycleOperator.run`, which
calls one engine or reporting function, and returns what that returned: counts or ids, small
enough for XCom.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from airflow.sdk import BaseOperator
from sqlalchemy import Engine

from lifecycle.model.db import CRM_CONN_ID, STATE_CONN_ID, get_engine, state_url, utc_naive

log = logging.getLogger(__name__)
R = TypeVar("R")


def as_of_from_context(context: Mapping[str, Any]) -> datetime:
    """The run's as-of time: the data interval end, else the logical date, else when it ran."""
    for key in ("data_interval_end", "logical_date"):
        if context.get(key) is not None:
            return context[key]
    return context["dag_run"].run_after


@dataclass(frozen=True)
class TaskRun:
    """What a task knows of its run: id, as-of time (naive UTC), manual-run params, state engine."""

    run_id: str
    as_of: datetime
    params: Mapping[str, Any]
    engine: Engine


class LifecycleOperator(BaseOperator, Generic[R]):
    """Base of every Lifecycle operator: ``execute`` builds the :class:`TaskRun` and logs the result.

    :param crm_conn_id: the connection of the source CRM database, only ever read.
    :param state_conn_id: the connection of the state database (the engine's tables); when it is
        not configured, the CRM's database holds them.
    """

    template_fields: Sequence[str] = ("crm_conn_id", "state_conn_id")

    def __init__(self, *, crm_conn_id: str = CRM_CONN_ID, state_conn_id: str = STATE_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crm_conn_id = crm_conn_id
        self.state_conn_id = state_conn_id

    def execute(self, context: Any) -> R:
        run = TaskRun(
            run_id=context["run_id"],
            as_of=utc_naive(as_of_from_context(context)),
            params=context.get("params") or {},
            engine=get_engine(state_url(self.state_conn_id, self.crm_conn_id)),
        )
        result = self.run(run)
        log.info("%s as of %s: %s", self.log_name(), run.as_of.isoformat(), result)
        return result

    def log_name(self) -> str:
        """How the task names itself in its log line."""
        return self.task_id

    def run(self, run: TaskRun) -> R:
        """Do the task's one piece of work for ``run``; return something small."""
        raise NotImplementedError
