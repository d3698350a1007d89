"""Airflow's task-log pipeline writing to a file, as the task supervisor does for every task it runs."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def task_log_file(dag_id: str, name: str) -> Iterator[Path]:
    """Airflow's task-log pipeline (JSON lines, secrets masker) writing INFO and up to a file under
    ``$AIRFLOW_HOME/logs/dag_id=<dag_id>/``, as the task supervisor does for every task it runs;
    the default logging again afterwards."""
    from airflow.sdk.log import configure_logging

    path = Path(os.environ["AIRFLOW_HOME"]) / "logs" / f"dag_id={dag_id}" / f"{name}-{time.time_ns()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as sink:
        configure_logging.cache_clear()
        configure_logging(json_output=True, log_level="INFO", output=sink)
        try:
            yield path
        finally:
            configure_logging.cache_clear()
            configure_logging()
