"""The DAG factory: one DAG per program file, DAG id = program id, and the manual-run tools
(``lifecycle_test_send``, ``lifecycle_dry_run``) that take a program as a param.

A program file that fails validation still gets a DAG under its id, with one task that fails
with the file's error and the error in the DAG's docs, so operators see what to fix where they
look for the program, and every other program loads as usual.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable, Param, TriggerRule

from lifecycle import config
from lifecycle.airflow.manual_operators import DryRunOperator, SendTestCopiesOperator
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
    SuppressOperator,
    SyncAudienceOperator,
    SyncSourceOperator,
    WriteBackOperator,
)
from lifecycle.airflow.pools import SEND_POOL
from lifecycle.airflow.triggers import POLL_SECONDS, QUEUE_POLL_SECONDS, ProgramEventTrigger
from lifecycle.engine import event_queue
from lifecycle.reporting import display

START = datetime(2026, 1, 1)
BASE_TAGS = ["lifecycle"]
TOOLS_OWNER = "lifecycle-ops"
TEST_SEND_DAG = "lifecycle_test_send"
DRY_RUN_DAG = "lifecycle_dry_run"
RECIPIENT_PATTERN = r"^(\+[1-9][0-9]{6,14}|[^@\s]+@[^@\s]+\.[^@\s]+)$"


SERVICE_DOC = (
    "- **Service program** (consent purpose `transactional`): not counted by the marketing caps, not stopped "
    "by a marketing unsubscribe (bounces, spam reports, STOP and a withdrawn transactional consent still "
    "stop it); never in the global control group."
)


def _doc(program: config.Program, policy_caps: str, queue: config.EventsQueue | None = None) -> str:
    steps = "\n".join(
        f"| {i + 1} | `{s.id}` | {' → '.join(s.reach)}{f' (by {s.rule})' if s.channels else ''} | "
        f"{display.step_timing(s)}{' (sent to the holdout too)' if not s.holdout else ''} | `{s.template}` |"
        for i, s in enumerate(program.steps)
    )
    caps = (
        f"**Caps (policy service_caps):** {policy_caps}" if program.is_service else f"**Caps (policy):** {policy_caps}"
    )
    service = f"{SERVICE_DOC}\n" if program.is_service else ""
    return f"""### {program.name}

{program.description}

- **Owner:** {program.owner} · **Priority:** {program.priority} · **Schedule:** `{program.schedule}`
{_trigger_doc(program, queue)}
- **Primary KPI:** {program.kpi.label} (`{program.kpi.primary}`), attribution window
  {display.duration(program.kpi.attribution_window)}
- **Holdout:** {program.holdout_percent:g}% · **A/B test:** {program.ab_test.name if program.ab_test else "none"}
- {caps}
{service}
**Entry segment:** `{display.segment(program.audience.segment.raw)}`

**Exit goal:** `{display.segment(program.exit.goal.raw if program.exit.goal else None)}`

| # | step | channel | when | template |
|---|---|---|---|---|
{steps}

**Manual runs.** Triggering this DAG runs the program for real: it plans, sends and advances
journeys as its schedule would (`limit` caps how many messages the run sends; the rest wait for
the next run). To see what a run would do without changing anything, trigger `lifecycle_dry_run`
with `program={program.id}`; to send test recipients what a contact would receive, trigger
`lifecycle_test_send` with `program={program.id}`. Neither touches this DAG, so pausing it and
sending a test leaves it paused.
"""


def event_asset(program: config.Program, queue: config.EventsQueue | None = None) -> Asset:
    """The asset a realtime program's DAG is scheduled on: updated by the triggerer when its trigger
    events need a run (:class:`ProgramEventTrigger`, looking every few seconds); with an events
    queue, also as a wake-up arrives on the program's channel (Airflow's ``MessageQueueTrigger``),
    the watermark watcher then looking only every ``queue.poll_seconds``."""
    poll = queue.poll_seconds if queue else POLL_SECONDS
    trigger = ProgramEventTrigger(
        program_id=program.id,
        event_types=program.audience.trigger_event,
        poll_interval=poll,
        announced=queue is not None,
    )
    watchers = [AssetWatcher(name=f"{program.id}_trigger_events", trigger=trigger)]
    if queue is not None:
        from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

        woken = MessageQueueTrigger(
            scheme=queue.scheme,
            channels=[event_queue.channel(queue, program.id)],
            redis_conn_id=queue.conn_id,
            poll_interval=QUEUE_POLL_SECONDS,
        )
        watchers.append(AssetWatcher(name=f"{program.id}_queue_wakeups", trigger=woken))
    return Asset(name=f"lifecycle_events_{program.id}", uri=f"lifecycle://events/{program.id}", watchers=watchers)


def program_schedule(
    program: config.Program, queue: config.EventsQueue | None = None
) -> str | Asset | AssetOrTimeSchedule | None:
    """The program's cron; for a realtime program, its cron or its trigger events, whichever comes first."""
    if not program.audience.realtime:
        return program.schedule
    if program.schedule is None:
        return event_asset(program, queue)
    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(program.schedule, timezone="UTC"), assets=event_asset(program, queue)
    )


def _trigger_doc(program: config.Program, queue: config.EventsQueue | None = None) -> str:
    events = ", ".join(f"`{e}`" for e in program.audience.trigger_event)
    schedule = f"`{program.schedule}` (UTC)" if program.schedule else "none"
    if not program.audience.realtime:
        if not program.audience.trigger_event:
            return f"- **Trigger:** schedule {schedule}"
        return f"- **Trigger:** schedule {schedule}; trigger events {events} are noticed by the scheduled runs"
    looks = (
        f"woken through the events queue on `{event_queue.channel(queue, program.id)}` (connection "
        f"`{queue.conn_id}`), and looking every {queue.poll_seconds:g} s for what no wake-up announced"
        if queue
        else f"the triggerer looks every {POLL_SECONDS:g} s"
    )
    return (
        f"- **Trigger:** realtime — a new {events} event starts a run within seconds ({looks}; events arriving "
        f"while a run is active are taken by the next one), and the schedule {schedule}. The event lag "
        "(event → enrolled → sent) and the watcher's backlog are on the Campaigns page."
    )


def _params() -> dict[str, Param]:
    return {
        "limit": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Send at most this many messages in this run; the rest wait.",
        ),
    }


def build_program_dag(program: config.Program, caps: str = "", queue: config.EventsQueue | None = None) -> DAG:
    """The DAG of one program: source sync → segment → enroll/exit → plan → suppress → cap → send →
    write-back → KPIs → check."""
    with DAG(
        dag_id=program.id,
        description=program.name,
        schedule=program_schedule(program, queue),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=sorted({*BASE_TAGS, "program", *program.tags}),
        doc_md=_doc(program, caps, queue),
        params=_params(),
        default_args={
            "owner": program.owner,
            "retries": 2,
            "retry_delay": timedelta(seconds=30),
            "on_failure_callback": OwnerAlert(),
        },
    ) as dag:
        common = {"program_id": program.id}
        source = SyncSourceOperator(task_id="sync_source", **common)
        evaluate = EvaluateSegmentOperator(task_id="evaluate_segment", **common)
        enroll = EnrollAndExitOperator(task_id="enroll_and_exit", **common)
        plan = PlanDueStepsOperator(task_id="plan_due_steps", **common)
        suppress = SuppressOperator(task_id="suppress", **common)
        cap = CapOperator(task_id="cap", **common)
        batches = PrepareBatchesOperator(task_id="prepare_batches", **common)
        send = SendBatchOperator.partial(
            task_id="send",
            max_active_tis_per_dag=4,
            pool=SEND_POOL,
            retry_delay=timedelta(seconds=90),
            **common,
        ).expand(batch=batches.output)
        # Activities for the touches that went out, whatever became of the batches (ALL_DONE); its
        # failure fails neither a send nor the run.
        written = WriteBackOperator(task_id="write_back", trigger_rule=TriggerRule.ALL_DONE, **common)
        kpis = LogKpisOperator(task_id="log_kpis", trigger_rule=TriggerRule.ALL_DONE, **common)
        watched = ["send", "log_kpis"]
        before_kpis: WriteBackOperator | SyncAudienceOperator = written
        if program.audience_sync is not None:
            # The ad audience, after the run's exits and enrollments, whatever the sends did. A
            # batch the platform did not take fails it (and the run); the next run sends the rest,
            # so it is not retried within the run.
            audience = SyncAudienceOperator(
                task_id="sync_audience", trigger_rule=TriggerRule.ALL_DONE, retries=0, **common
            )
            written >> audience
            before_kpis = audience
            watched.append("sync_audience")
        # The run's state follows its last task: log_kpis runs whatever happened (ALL_DONE) and
        # succeeds, so check_run, after it, fails the run when a send batch, the audience sync or
        # the funnel failed. It alerts no one: the task that failed has alerted the owner, with its error.
        check = CheckRunOperator(
            task_id="check_run",
            task_ids=watched,
            trigger_rule=TriggerRule.ALL_DONE,
            retries=0,
            on_failure_callback=None,
        )
        source >> evaluate >> enroll >> plan >> suppress >> cap >> batches >> send >> written
        before_kpis >> kpis >> check
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


_TEST_SEND_DOC = """### Test send

Sends the test recipients what one contact would receive from a program, marked **[TEST]**,
through the provider connections (`sendgrid_default`, `twilio_default`).

- `program`, `contact` (a contact id), `recipients` (email addresses and E.164 numbers: each
  step goes to the recipients written as its channel's address);
- `step`: empty for the contact's next step (the one after the last step planned in its active
  enrollment, else the first step), a step id, or `all`.

It changes nothing real: no ledger row, no journey step, no cap slot, and it never touches the
program's DAG, so it works while that DAG is paused and leaves it paused. A test copy carries no
ledger id, and its unsubscribe link opens a page saying it was a test copy. The task fails, saying
why, when nothing could be sent (unknown contact or step, no recipient for the step's channel).
"""

_DRY_RUN_DOC = """### Dry run

Runs a program as its DAG would at an as-of time — segment, enrollment and exits, planning,
suppression, caps, then rendering every message it would send (the first 1,000) — without
calling any provider, inside one database transaction that is rolled back. Nothing real changes:
no ledger rows, enrollments, funnel or cap slots, and the program's DAG is not touched.

- `program`; `as_of`: an ISO date-time (UTC unless it names its offset), empty for this run's
  logical date; `render`: whether to render the messages it would send.

The task's log shows the funnel the run would log (audience, enrolled, exited, planned, held out,
suppressed, capped and deferred by reason, would send per channel) and every template failure by
message and contact id; its return value (XCom) holds the same figures.
"""


def _tools_dag(dag_id: str, description: str, doc: str, params: dict[str, Param]) -> DAG:
    return DAG(
        dag_id=dag_id,
        description=description,
        schedule=None,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=[*BASE_TAGS, "tools"],
        doc_md=doc,
        params=params,
        default_args={"owner": TOOLS_OWNER, "retries": 0, "on_failure_callback": OwnerAlert()},
    )


def _program_param(program_ids: list[str]) -> Param:
    description = "The program (its DAG id)."
    if not program_ids:  # no valid program file: an empty enum would be an invalid schema
        return Param(type="string", description=description)
    return Param(type="string", enum=program_ids, description=description)


def build_test_send_dag(program_ids: list[str]) -> DAG:
    """``lifecycle_test_send``: what a contact would receive, to test recipients; nothing recorded."""
    params = {
        "program": _program_param(program_ids),
        "contact": Param(type="string", minLength=1, description="The contact id whose messages to send."),
        "recipients": Param(
            [],
            type="array",
            minItems=1,
            items={"type": "string", "pattern": RECIPIENT_PATTERN},
            description="Email addresses or E.164 numbers (+14155550100) that receive the test copies.",
        ),
        "step": Param(
            None,
            type=["null", "string"],
            description="Empty: the contact's next step; a step id; or all.",
        ),
    }
    description = "Send test recipients what a contact would receive; changes nothing"
    with _tools_dag(TEST_SEND_DAG, description, _TEST_SEND_DOC, params) as dag:
        SendTestCopiesOperator(task_id="send_test_copies")
    return dag


def build_dry_run_dag(program_ids: list[str]) -> DAG:
    """``lifecycle_dry_run``: a program's whole run at an as-of time, rolled back."""
    params = {
        "program": _program_param(program_ids),
        "as_of": Param(
            None,
            type=["null", "string"],
            format="date-time",
            description="ISO date-time to run as of (UTC unless it names its offset); empty: this run's date.",
        ),
        "render": Param(True, type="boolean", description="Render every message the run would send."),
    }
    description = "What a program run would do, rolled back; changes nothing"
    with _tools_dag(DRY_RUN_DAG, description, _DRY_RUN_DOC, params) as dag:
        DryRunOperator(task_id="dry_run_program")
    return dag


def build_manual_run_dags() -> dict[str, DAG]:
    """The test-send and dry-run DAGs, offering every valid program."""
    programs, _errors = config.load_all_programs()
    program_ids = sorted(programs)
    return {TEST_SEND_DAG: build_test_send_dag(program_ids), DRY_RUN_DAG: build_dry_run_dag(program_ids)}


def _caps_text(caps: Mapping[str, config.Cap]) -> str:
    return ", ".join(f"{k} {v.max} per {display.duration(v.per)}" for k, v in caps.items()) or "none (uncapped)"


def load_programs() -> tuple[dict[str, config.Program], dict[str, config.ConfigError], config.Policy | None]:
    """Every valid program, every invalid file's error, and the policy; an invalid policy makes
    every program invalid, with the policy's error."""
    programs, errors = config.load_all_programs()
    try:
        return programs, errors, config.load_policy()
    except config.ConfigError as exc:
        return {}, {pid: exc for pid in programs} | errors, None


def build_all() -> dict[str, DAG]:
    """Every program DAG, in file order, keyed by DAG id."""
    programs, errors, policy = load_programs()
    dags = {
        pid: build_program_dag(p, _caps_text(policy.caps_for(p)), policy.events_queue)
        for pid, p in programs.items()
        if policy
    }
    dags |= {pid: build_invalid_dag(pid, err) for pid, err in errors.items()}
    return dict(sorted(dags.items()))
