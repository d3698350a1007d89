"""Airflow DAG lifecycle_due_steps: every program's due steps every five minutes (see
lifecycle.airflow.due_steps)."""

from __future__ import annotations

from lifecycle.airflow.due_steps import build

globals().update(build())
