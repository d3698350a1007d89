"""Running program DAGs through real Airflow (``dag.test()``) inside tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from lifecycle.paths import PROJECT_ROOT
from tests.support.local_crm import use_crm

PUBLIC_BASE_URL = "http://127.0.0.1:9/lifecycle"


def load_dags():
    """Parse the project's DAG folder as Airflow does; returns the DagBag."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


def run_dag(monkeypatch, crm_url: str, dag_id: str, as_of: datetime, /, **params) -> str:
    """Run one DAG for ``as_of`` against the CRM at ``crm_url``; returns the run's final state."""
    return str(dag_run(monkeypatch, crm_url, dag_id, as_of, **params).state)


def dag_run(monkeypatch, crm_url: str, dag_id: str, as_of: datetime, /, **params) -> Any:
    """Run one DAG for ``as_of`` against the CRM at ``crm_url``; returns the finished DAG run."""
    use_crm(monkeypatch, crm_url)
    dag = load_dags().get_dag(dag_id)
    return dag.test(logical_date=as_of.replace(tzinfo=UTC), run_conf=params or None)


def set_paused(dag_id: str, paused: bool) -> None:
    """Pause or resume a DAG in Airflow's metadata database, as the UI's toggle does."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id == dag_id).values(is_paused=paused))


@contextmanager
def provider_sandbox(monkeypatch, public_base_url: str = PUBLIC_BASE_URL) -> Iterator[Any]:
    """A provider sandbox that ``sendgrid_default`` and ``twilio_default`` point at while it runs;
    ``lifecycle_default`` points the public links at ``public_base_url`` (nothing listens there by
    default, so no webhook comes back)."""
    from lifecycle.devtools.local import provider_connections
    from lifecycle.sandbox import SandboxServer

    with SandboxServer() as sandbox:
        for key, value in provider_connections(sandbox, public_base_url, "dag-test-secret").items():
            monkeypatch.setenv(key, value)
        yield sandbox
