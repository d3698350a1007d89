"""### Weekly KPI digest

Every Monday at 08:00 UTC, one email to the stakeholders listed in `config/policy.yml`
(`stakeholders`), sent through the `sendgrid_default` connection:

- every program's primary KPI for treatment, program holdout and global control, the lift vs
  each with its 95% confidence interval, and the A/B test's verdict ("no winner yet" until the
  interval excludes zero);
- this week's funnel and deliverability, and the week-over-week trend as inline PNG charts;
- business outcomes and the newest `data_hygiene` figures;
- a short "what changed": biggest movers, significant lifts, A/B tests without a winner,
  deliverability alerts, invalid program files.

The digest's as-of time is the run's data interval end, so re-running a past week rebuilds that
week's digest. A send whose outcome is unknown fails without a retry rather than risk a double
email. Code: `lifecycle.reporting.digest` (figures and rendering), `lifecycle.airflow.digest_operators` (sending);
templates: `include/templates/_digest/`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from lifecycle.airflow.digest_operators import SendKpiDigestOperator
from lifecycle.airflow.notifications import OwnerAlert

with DAG(
    dag_id="kpi_digest",
    description="Weekly KPI digest email to the stakeholders in config/policy.yml",
    schedule="0 8 * * MON",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["lifecycle", "reporting"],
    doc_md=__doc__,
    default_args={
        "owner": "lifecycle-ops",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "on_failure_callback": OwnerAlert(),
    },
):
    SendKpiDigestOperator(task_id="send_digest")
