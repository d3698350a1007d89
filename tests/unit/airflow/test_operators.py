"""The operators' pure helpers (the DAG-level behaviour is in tests/integration/airflow)."""

from __future__ import annotations

from lifecycle.airflow.operators import failed_tasks


def test_failed_tasks_names_each_failed_or_upstream_failed_instance():
    states = {"send_0": "success", "send_1": "failed", "send_2": "upstream_failed", "log_kpis": None}
    assert failed_tasks(states) == ["send_1", "send_2"]
    assert failed_tasks({"send": "skipped", "log_kpis": "success"}) == []
