"""Airflow operators for the data_hygiene DAG: thin adapters over :mod:`lifecycle.engine.hygiene`.

Each runs one hygiene step on the CRM database for the run's as-of time (its data interval end,
never the clock) and returns the step's counts, which are small.
"""

from __future__ import annotations

from lifecycle import config
from lifecycle.airflow.base import LifecycleOperator, TaskRun
from lifecycle.engine import hygiene


class NormaliseAndValidateOperator(LifecycleOperator[dict[str, int]]):
    """Write this run's quality snapshot: normalised, validated email and phone, missing fields."""

    def run(self, run: TaskRun) -> dict[str, int]:
        return hygiene.normalise_and_validate(run.engine, run.run_id, run.as_of)


class ResolveDuplicatesOperator(LifecycleOperator[dict[str, int]]):
    """Group contacts that share an email or phone and pick each group's survivor."""

    def run(self, run: TaskRun) -> dict[str, int]:
        return hygiene.resolve_duplicates(run.engine, run.run_id, run.as_of)


class FlagSuppressionsOperator(LifecycleOperator[dict[str, int]]):
    """Keep the invalid-address and duplicate-contact suppressions in step with the snapshot."""

    def run(self, run: TaskRun) -> dict[str, int]:
        return hygiene.flag_suppressions(run.engine, run.run_id, run.as_of)


class ComputeFiguresOperator(LifecycleOperator[dict[str, float]]):
    """Write the run's data-quality figures to ``lifecycle_data_quality``, consent coverage by the
    policy's regions and topics among them."""

    def run(self, run: TaskRun) -> dict[str, float]:
        return hygiene.compute_figures(run.engine, run.run_id, run.as_of, config.load_policy())


class RefreshCampaignFiguresOperator(LifecycleOperator[dict[str, str]]):
    """Store every program's Campaigns page figures again, as of each one's newest run: provider
    feedback (delivered, bounced, unsubscribed) changes them between runs. Returns each program's
    as-of time."""

    def run(self, run: TaskRun) -> dict[str, str]:
        from lifecycle.reporting import figures

        programs, _errors = config.load_all_programs()
        return {pid: stored.as_of.isoformat() for pid, stored in figures.refresh(run.engine, programs).items()}
