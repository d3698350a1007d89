"""Airflow operators for the lifecycle_scoring DAG: thin adapters over :mod:`lifecycle.engine.scoring`.

Each trains, validates and (when it beats its baseline) publishes one score on the state database
for the run's as-of time (its data interval end, never the clock), and returns the model's
figures, which are small.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from lifecycle.airflow.base import LifecycleOperator, TaskRun
from lifecycle.engine import scoring


class TrainScoreOperator(LifecycleOperator[dict[str, Any]]):
    """Train score ``score`` as of the run, record its validation figures in
    ``lifecycle_score_models`` and, when published, replace the contacts' rows in ``lifecycle_scores``.

    :param score: one of :data:`lifecycle.engine.scoring.SCORE_NAMES`.
    :param seed: the models' random seed (the same CRM, as-of time and seed give the same scores).
    """

    template_fields: Sequence[str] = ("score", "crm_conn_id", "state_conn_id")

    def __init__(self, *, score: str, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.score = score
        self.seed = seed

    def log_name(self) -> str:
        return f"{self.task_id} {self.score}"

    def run(self, run: TaskRun) -> dict[str, Any]:
        trained_at = datetime.now(UTC).replace(tzinfo=None)
        with run.engine.begin() as conn:
            (report,) = scoring.run_scoring(conn, run.as_of, names=[self.score], seed=self.seed, trained_at=trained_at)
        return {
            "model_version": report.model_version,
            "auc": report.auc,
            "baseline_auc": report.baseline_auc,
            "brier": report.brier,
            "published": report.published,
            "reason": report.reason,
            "scored": report.scored,
        }
