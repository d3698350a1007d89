"""Running program DAGs through real Airflow (``dag.test()``) inside tests."""

from __future__ import annotations

from datetime import UTC, datetime

from lifecycle.paths import PROJECT_ROOT
from tests.support.local_crm import use_crm


def load_dags():
    """Parse the project's DAG folder as Airflow does; returns the DagBag."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


def run_dag(monkeypatch, crm_url: str, dag_id: str, as_of: datetime, **params) -> str:
    """Run one DAG for ``as_of`` against the CRM at ``crm_url``; returns the run's final state."""
    use_crm(monkeypatch, crm_url)
    dag = load_dags().get_dag(dag_id)
    run = dag.test(logical_date=as_of.replace(tzinfo=UTC), run_conf=params or None)
    return str(run.state)
