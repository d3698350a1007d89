"""The ``lifecycle_due_steps`` DAG: every program's due steps, every five minutes.

One task group per program (``<program>.sweep >> <program>.send[batch] >> <program>.refresh_figures``,
the last skipped when nothing was sent), owned by the program's
owner and alerting it on failure like the program's own tasks; an invalid program file gets a task
that is skipped with the file's error.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, TaskGroup

from lifecycle import config
from lifecycle.airflow.due_steps_operators import (
    RefreshDueFiguresOperator,
    SendDueBatchOperator,
    SkipInvalidProgramOperator,
    SweepDueStepsOperator,
)
from lifecycle.airflow.factory import load_programs
from lifecycle.airflow.notifications import OwnerAlert
from lifecycle.airflow.pools import SEND_POOL

DUE_STEPS_DAG = "lifecycle_due_steps"
DUE_STEPS_SCHEDULE = "*/5 * * * *"
OWNER = "lifecycle-ops"

_DOC = """### Due steps

Sends every program's steps within minutes of their due time, between the program's own runs:
a "+1h" cart reminder goes out at the first sweep after the hour, not at the next hourly run.

Every five minutes, as of its logical date, for each program whose DAG is not paused:

- exits (goal, exit rules, leaving the segment) for the active enrollments that have a step due;
- plans those steps, suppresses, applies the caps with priority between programs, defers what falls
  in quiet hours (and releases deferrals whose quiet hours are over);
- sends, through the same ledger, idempotency keys and claims as the program's runs, so a sweep
  and a program run never send one step twice;
- when it sent anything, stores the program's Campaigns page figures again (`refresh_figures`).

It reads only the ledger and the active enrollments (and, for the contacts with a step due, the CRM
rows their exits and suppressions need); it never evaluates an entry segment over the CRM nor
enrolls anyone: new enrollments come from the program's run. A paused program is skipped (its
sweep task shows why) and so is an invalid program file, with its error. Its ledger rows carry the
run id `due_steps:<program>:<run id>`.
"""


def build_due_steps_dag(programs: dict[str, config.Program], errors: dict[str, config.ConfigError]) -> DAG:
    """The sweep DAG over the valid ``programs`` (highest priority first) and the invalid files."""
    with DAG(
        dag_id=DUE_STEPS_DAG,
        description="Send every program's due steps within minutes of their due time",
        schedule=DUE_STEPS_SCHEDULE,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["lifecycle", "due-steps"],
        doc_md=_DOC,
        default_args={
            "owner": OWNER,
            "retries": 1,
            "retry_delay": timedelta(seconds=30),
            "on_failure_callback": OwnerAlert(),
        },
    ) as dag:
        for program in sorted(programs.values(), key=lambda p: (-p.priority, p.id)):
            with TaskGroup(group_id=program.id):
                common = {"program_id": program.id, "owner": program.owner}
                sweep = SweepDueStepsOperator(task_id="sweep", **common)
                send = SendDueBatchOperator.partial(
                    task_id="send",
                    max_active_tis_per_dag=4,
                    pool=SEND_POOL,
                    retry_delay=timedelta(seconds=90),
                    **common,
                ).expand(batch=sweep.output)
                send >> RefreshDueFiguresOperator(task_id="refresh_figures", **common)
        for program_id, error in sorted(errors.items()):
            with TaskGroup(group_id=program_id):
                SkipInvalidProgramOperator(task_id="invalid_program_file", error=str(error))
    return dag


def build() -> dict[str, DAG]:
    """The sweep DAG keyed by its id, over every program file."""
    programs, errors, _policy = load_programs()
    return {DUE_STEPS_DAG: build_due_steps_dag(programs, errors)}
