"""Airflow DAGs: one per lifecycle program file in config/programs/ (see lifecycle.airflow.factory)."""

from __future__ import annotations

from lifecycle.airflow.factory import build_all

globals().update(build_all())
