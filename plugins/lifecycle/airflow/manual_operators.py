"""The manual-run tools' operators: test sends and dry runs, which change nothing real.

Both read their DAG run's params (``program`` and the rest) and never touch the program's own DAG,
so they work whatever its pause state. A test send writes no ledger row, enrollment or cap slot;
a dry run keeps nothing at all.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from lifecycle.airflow.base import LifecycleOperator, TaskRun
from lifecycle.engine import pipeline
from lifecycle.model.db import utc_naive

log = logging.getLogger(__name__)


class SendTestCopiesOperator(LifecycleOperator[dict[str, Any]]):
    """Send the run's test recipients what its contact would receive from its program, marked
    ``[TEST]``, through the provider transport; fails when nothing could be sent, saying why.

    Params: ``program``, ``contact``, ``recipients`` (emails and E.164 numbers), ``step`` (none for
    the contact's next step, a step id, or ``all``).
    """

    def run(self, run: TaskRun) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from lifecycle.channels.providers import ProviderTransport
        from lifecycle.engine.test_copies import NothingSent, send_test_copies
        from lifecycle.messages.links import TEST_COPY_UNSUBSCRIBE_PATH, PublicLinks

        params = run.params
        scope, _programs = pipeline.load_scope(params["program"], run.run_id, run.as_of)
        links = PublicLinks.load()
        try:
            report = send_test_copies(
                run.engine,
                scope,
                str(params["contact"]),
                list(params.get("recipients") or []),
                ProviderTransport(links=links),
                step=params.get("step") or None,
                unsubscribe_url=links.url(TEST_COPY_UNSUBSCRIBE_PATH),
            )
        except (NothingSent, LookupError) as exc:
            raise AirflowFailException(f"test send of {params['program']}: {exc}") from None
        for step, why in report.not_sent.items():
            log.warning("step %s not sent: %s", step, why)
        return report.summary()


class DryRunOperator(LifecycleOperator[dict[str, Any]]):
    """Run the params' program at ``as_of`` (default: this run's logical date) — segment,
    enrollment, planning, suppression, capping, rendering; no provider call — in one transaction
    that is rolled back; log the funnel and the template failures and return them.

    Params: ``program``, ``as_of`` (ISO date-time, UTC unless it names its offset), ``render``.
    """

    def run(self, run: TaskRun) -> dict[str, Any]:
        from lifecycle.engine.rehearsal import rehearse

        params = run.params
        as_of = utc_naive(datetime.fromisoformat(params["as_of"])) if params.get("as_of") else run.as_of
        scope, programs = pipeline.load_scope(params["program"], run.run_id, as_of)
        report = rehearse(run.engine, scope, programs, render=bool(params.get("render", True)))
        log.info("%s", report.table())
        return report.summary()
