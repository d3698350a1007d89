"""The ``lifecycle_scoring`` Airflow DAG: daily predictive scores (churn risk, purchase propensity).

A thin DAG file: each score is trained, validated and published by
:class:`lifecycle.airflow.scoring_operators.TrainScoreOperator` over
:mod:`lifecycle.engine.scoring`; the DAG's docs are that module's docstring.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, chain

from lifecycle.airflow.notifications import OwnerAlert
from lifecycle.airflow.operators import SyncSourceOperator
from lifecycle.airflow.scoring_operators import TrainScoreOperator
from lifecycle.engine import scoring

with DAG(
    dag_id="lifecycle_scoring",
    description="Train, validate and publish the predictive scores (churn risk, purchase propensity)",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["lifecycle", "scoring"],
    doc_md=scoring.__doc__,
    default_args={
        "owner": "data-engineering",
        "retries": 1,
        "retry_delay": timedelta(minutes=5),
        "on_failure_callback": OwnerAlert(),
    },
):
    chain(
        SyncSourceOperator(task_id="sync_source", entities=list(scoring.ENTITIES)),
        *(TrainScoreOperator(task_id=f"score_{name}", score=name) for name in scoring.SCORE_NAMES),
    )
