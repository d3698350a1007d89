"""The operators' pure helpers (the DAG-level behaviour is in tests/integration/airflow)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowRuntimeError, AirflowSkipException, ErrorType

from lifecycle.airflow.due_steps_operators import SkipInvalidProgramOperator, program_paused
from lifecycle.airflow.operators import failed_tasks


def test_failed_tasks_names_each_failed_or_upstream_failed_instance():
    states = {"send_0": "success", "send_1": "failed", "send_2": "upstream_failed", "log_kpis": None}
    assert failed_tasks(states) == ["send_1", "send_2"]
    assert failed_tasks({"send": "skipped", "log_kpis": "success"}) == []


def test_the_sweep_skips_an_invalid_program_file_with_its_error():
    error = "broken.yml: priority: fix: write a whole number"
    with pytest.raises(AirflowSkipException, match="fix: write a whole number"):
        SkipInvalidProgramOperator(task_id="invalid_program_file", error=error).execute({})


def test_the_sweep_reads_whether_the_program_dag_is_paused_and_waits_for_a_dag_airflow_lacks():
    class Ti:
        def __init__(self, paused: bool | int) -> None:
            self.paused = paused

        def get_dag(self, dag_id: str) -> SimpleNamespace:
            if isinstance(self.paused, bool):
                return SimpleNamespace(is_paused=self.paused)
            detail = {"status_code": self.paused, "message": dag_id}
            raise AirflowRuntimeError(SimpleNamespace(error=ErrorType.API_SERVER_ERROR, detail=detail))

    assert program_paused(Ti(True), "welcome") and not program_paused(Ti(False), "welcome")
    assert program_paused(Ti(404), "welcome")
    with pytest.raises(AirflowRuntimeError):
        program_paused(Ti(500), "welcome")
