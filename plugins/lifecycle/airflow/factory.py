"""The DAG factory: one DAG per program file, DAG id = program id.

A program file that fails validation still gets a DAG under its id, with one task that fails
with the file's error and the error in the DAG's docs, so operators see what to fix where they
look for the program, and every other program loads as usual.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, TriggerRule

from lifecycle import config
from lifecycle.airflow.notifications import OwnerAlert
from lifecycle.airflow.operators import (
    CapOperator,
    CheckRunOperator,
    EnrollAndExitOperator,
    EvaluateSegmentOperator,
    InvalidProgramOperator,
    LogKpisOperator,
    PlanDueStepsOperator,
    PrepareBatchesOperator,
    SendBatchOperator,
    SendTestCopiesOperator,
    SuppressOperator,
)

START = datetime(2026, 1, 1)
BASE_TAGS = ["lifecycle"]


SERVICE_DOC = (
    "- **Service program** (consent purpose `transactional`): not counted by the marketing caps, not stopped "
    "by a marketing unsubscribe (bounces, spam reports, STOP and a withdrawn transactional consent still "
    "stop it); never in the global control group."
)


def _doc(program: config.Program, policy_caps: str) -> str:
    steps = "\n".join(
        f"| {i + 1} | `{s.id}` | {s.channel}{' → ' + s.fallback if s.fallback else ''} | "
        f"{s.delay} after {s.relative_to} | `{s.template}`{'' if s.holdout else ' (sent to the holdout too)'} |"
        for i, s in enumerate(program.steps)
    )
    caps = (
        f"**Caps (policy service_caps):** {policy_caps}" if program.is_service else f"**Caps (policy):** {policy_caps}"
    )
    service = f"{SERVICE_DOC}\n" if program.is_service else ""
    return f"""### {program.name}

{program.description}

- **Owner:** {program.owner} · **Priority:** {program.priority} · **Schedule:** `{program.schedule}`
- **Primary KPI:** {program.kpi.label} (`{program.kpi.primary}`), attribution window
  {program.kpi.attribution_window}
- **Holdout:** {program.holdout_percent}% · **A/B test:** {program.ab_test.name if program.ab_test else "none"}
- {caps}
{service}
**Entry segment:** `{program.audience.segment.raw}`

**Exit goal:** `{program.exit.goal.raw if program.exit.goal else "none"}`

| # | step | channel | when | template |
|---|---|---|---|---|
{steps}

Manual runs: `dry_run` renders and records without sending; `limit` caps the messages sent;
`test_recipients` + `test_contact` send the test recipients what that contact would receive (and make
the run a dry run for every real contact).
"""


def _params() -> dict[str, Param]:
    return {
        "dry_run": Param(False, type="boolean", description="Render and record in the ledger; send nothing."),
        "test_recipients": Param(
            [],
            type="array",
            items={"type": "string", "pattern": r"^(\+[1-9][0-9]{6,14}|[^@\s]+@[^@\s]+\.[^@\s]+)$"},
            description="Email addresses or E.164 numbers that receive what test_contact would; "
            "the run is then a dry run for every real contact.",
        ),
        "test_contact": Param(None, type=["null", "string"], description="Contact id for test_recipients."),
        "limit": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Send at most this many messages in this run; the rest wait.",
        ),
    }


def build_program_dag(program: config.Program, caps: str = "") -> DAG:
    """The DAG of one program: segment → enroll/exit → plan → suppress → cap → send → KPIs → check."""
    with DAG(
        dag_id=program.id,
        description=program.name,
        schedule=program.schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=sorted({*BASE_TAGS, "program", *program.tags}),
        doc_md=_doc(program, caps),
        params=_params(),
        default_args={
            "owner": program.owner,
            "retries": 2,
            "retry_delay": timedelta(seconds=30),
            "on_failure_callback": OwnerAlert(),
        },
    ) as dag:
        common = {"program_id": program.id}
        evaluate = EvaluateSegmentOperator(task_id="evaluate_segment", **common)
        enroll = EnrollAndExitOperator(task_id="enroll_and_exit", **common)
        plan = PlanDueStepsOperator(task_id="plan_due_steps", **common)
        suppress = SuppressOperator(task_id="suppress", **common)
        cap = CapOperator(task_id="cap", **common)
        batches = PrepareBatchesOperator(task_id="prepare_batches", **common)
        send = SendBatchOperator.partial(
            task_id="send", max_active_tis_per_dag=4, retry_delay=timedelta(seconds=90), **common
        ).expand(batch=batches.output)
        test_copies = SendTestCopiesOperator(task_id="send_test_copies", trigger_rule=TriggerRule.ALL_DONE, **common)
        kpis = LogKpisOperator(task_id="log_kpis", trigger_rule=TriggerRule.ALL_DONE, **common)
        # The run's state follows its last task: log_kpis runs whatever happened (ALL_DONE) and
        # succeeds, so check_run, after it, fails the run when a send batch, the test send or the
        # funnel failed (and the owner alert fires for it).
        check = CheckRunOperator(
            task_id="check_run",
            task_ids=["send", "send_test_copies", "log_kpis"],
            trigger_rule=TriggerRule.ALL_DONE,
            retries=0,
        )
        evaluate >> enroll >> plan >> suppress >> cap >> batches >> send >> test_copies >> kpis >> check
    return dag


def build_invalid_dag(program_id: str, error: config.ConfigError) -> DAG:
    """A one-task DAG that fails with the program file's error."""
    problems = "\n".join(f"- {p}" for p in error.problems)
    with DAG(
        dag_id=program_id,
        description=f"INVALID program file: {error.file}",
        schedule=None,
        start_date=START,
        catchup=False,
        tags=[*BASE_TAGS, "invalid"],
        doc_md=f"### Program file is invalid\n\n`{error.file}`\n\n{problems}\n\nFix the file; the DAG "
        "comes back on the next parse.",
    ) as dag:
        InvalidProgramOperator(task_id="invalid_program_file", error=str(error))
    return dag


def _caps_text(caps: Mapping[str, config.Cap]) -> str:
    return ", ".join(f"{k} {v.max}/{v.per.days}d" for k, v in caps.items()) or "none (uncapped)"


def build_all() -> dict[str, DAG]:
    """Every program DAG, in file order, keyed by DAG id."""
    programs, errors = config.load_all_programs()
    try:
        policy = config.load_policy()
    except config.ConfigError as exc:
        errors = {pid: exc for pid in programs} | errors
        programs = {}
    dags = {pid: build_program_dag(p, _caps_text(policy.caps_for(p))) for pid, p in programs.items()}
    dags |= {pid: build_invalid_dag(pid, err) for pid, err in errors.items()}
    return dict(sorted(dags.items()))
