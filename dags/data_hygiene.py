"""The ``data_hygiene`` Airflow DAG: daily validation, de-duplication and data-quality figures.

A thin DAG file: the steps are :mod:`lifecycle.engine.hygiene` functions run by the operators in
:mod:`lifecycle.airflow.hygiene_operators`; the DAG's docs are that module's docstring.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from lifecycle.airflow.hygiene_operators import (
    ComputeFiguresOperator,
    FlagSuppressionsOperator,
    NormaliseAndValidateOperator,
    RefreshCampaignFiguresOperator,
    ResolveDuplicatesOperator,
)
from lifecycle.airflow.notifications import OwnerAlert
from lifecycle.airflow.operators import SyncSourceOperator
from lifecycle.engine import hygiene

with DAG(
    dag_id="data_hygiene",
    description="Validate contacts, resolve duplicates, flag suppressions, measure data quality",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["lifecycle", "data-quality"],
    doc_md=hygiene.__doc__,
    default_args={
        "owner": "data-engineering",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "on_failure_callback": OwnerAlert(),
    },
):
    (
        SyncSourceOperator(task_id="sync_source", entities=["contacts", "consents"])
        >> NormaliseAndValidateOperator(task_id="normalise_and_validate")
        >> ResolveDuplicatesOperator(task_id="resolve_duplicates")
        >> FlagSuppressionsOperator(task_id="flag_suppressions")
        >> ComputeFiguresOperator(task_id="compute_figures")
        >> RefreshCampaignFiguresOperator(task_id="refresh_campaign_figures")
    )
