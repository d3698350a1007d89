"""Airflow operators for the data_hygiene DAG: thin adapters over :mod:`lifecycle.engine.hygiene`.

Each runs one hygiene step on the CRM database for the run's as-of time (its data interval end,
never the clock) and returns the step's counts, which are small.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from airflow.sdk import BaseOperator
from sqlalchemy import Engine

from lifecycle.airflow.operators import as_of_from_context
from lifecycle.engine import hygiene
from lifecycle.model.db import CRM_CONN_ID, crm_url, get_engine, utc_naive

log = logging.getLogger(__name__)


class HygieneOperator(BaseOperator):
    """Base for the data_hygiene steps: ``step(engine, run_id, as_of)`` on the CRM connection."""

    template_fields = ("crm_conn_id",)
    step: ClassVar[staticmethod[[Engine, str, datetime], Mapping[str, float]]]

    def __init__(self, *, crm_conn_id: str = CRM_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crm_conn_id = crm_conn_id

    def execute(self, context: Mapping[str, Any]) -> dict[str, float]:
        as_of = utc_naive(as_of_from_context(context))
        result = dict(self.step(get_engine(crm_url(self.crm_conn_id)), context["run_id"], as_of))
        log.info("%s as of %s: %s", self.task_id, as_of.isoformat(), result)
        return result


class NormaliseAndValidateOperator(HygieneOperator):
    """Write this run's quality snapshot: normalised, validated email and phone, missing fields."""

    step = staticmethod(hygiene.normalise_and_validate)


class ResolveDuplicatesOperator(HygieneOperator):
    """Group contacts that share an email or phone and pick each group's survivor."""

    step = staticmethod(hygiene.resolve_duplicates)


class FlagSuppressionsOperator(HygieneOperator):
    """Keep the invalid-address and duplicate-contact suppressions in step with the snapshot."""

    step = staticmethod(hygiene.flag_suppressions)


class ComputeFiguresOperator(HygieneOperator):
    """Write the run's data-quality figures to ``lifecycle_data_quality``."""

    step = staticmethod(hygiene.compute_figures)
