"""Airflow DAGs for manual runs that change nothing real: lifecycle_test_send and lifecycle_dry_run
(see lifecycle.airflow.factory)."""

from __future__ import annotations

from lifecycle.airflow.factory import build_manual_run_dags

globals().update(build_manual_run_dags())
