"""A realtime program's DAG runs on its cron or on its trigger events, through an Airflow asset
watched by the triggerer; the other programs keep their cron alone."""

from __future__ import annotations

import pytest
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable

from lifecycle import config
from lifecycle.airflow.factory import build_all, build_program_dag
from lifecycle.airflow.triggers import ProgramEventTrigger


@pytest.fixture(scope="module")
def shipped() -> dict[str, config.Program]:
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        env.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
        programs, errors = config.load_all_programs()
    assert errors == {}
    return programs


def _watcher(asset: Asset) -> ProgramEventTrigger:
    (watcher,) = asset.watchers
    assert isinstance(watcher.trigger, ProgramEventTrigger)
    return watcher.trigger


def test_welcome_runs_on_its_cron_or_on_sign_ups(shipped):
    dag = build_program_dag(shipped["welcome"])
    assert dag.dag_id == "welcome" and dag.max_active_runs == 1
    schedule = dag.timetable
    assert isinstance(schedule, AssetOrTimeSchedule)
    assert isinstance(schedule.timetable, CronTriggerTimetable)
    assert schedule.timetable.expression == "0 * * * *"
    asset = schedule.asset_condition
    assert isinstance(asset, Asset) and asset.uri == "lifecycle://events/welcome"
    trigger = _watcher(asset)
    assert trigger.serialize() == (
        "lifecycle.airflow.triggers.ProgramEventTrigger",
        {
            "program_id": "welcome",
            "event_types": ["signed_up"],
            "poll_interval": 3.0,
            "crm_conn_id": "crm_default",
            "state_conn_id": "lifecycle_state",
            "announced": False,
        },
    )


def test_the_trigger_kwargs_are_the_same_at_every_parse(shipped):
    # The triggerer identifies a watcher by its class and kwargs: a kwarg that changed between parses
    # would start a new watcher (and its asset events) every time the DAG file is read.
    first = _watcher(build_program_dag(shipped["welcome"]).timetable.asset_condition).serialize()
    again = _watcher(build_program_dag(shipped["welcome"]).timetable.asset_condition).serialize()
    assert first == again


def test_programs_without_realtime_keep_their_cron(shipped):
    for pid, program in shipped.items():
        if program.audience.realtime:
            continue
        assert build_program_dag(program).timetable.__class__.__name__ == "CronTriggerTimetable", pid


def test_a_realtime_program_without_a_schedule_runs_on_its_events_only(shipped):
    program = shipped["welcome"].model_copy(update={"schedule": None})
    dag = build_program_dag(program)
    assert not isinstance(dag.timetable, AssetOrTimeSchedule)
    assert _watcher(dag.timetable.asset_condition).program_id == "welcome"


def test_the_docs_name_the_trigger(shipped):
    docs = {pid: build_all()[pid].doc_md or "" for pid in shipped}
    assert "**Trigger:** realtime — a new `signed_up` event starts a run within seconds" in docs["welcome"]
    assert "the schedule `0 * * * *` (UTC)" in docs["welcome"]
    assert (
        "**Trigger:** schedule `30 * * * *` (UTC); trigger events `cart_abandoned`, `quote_sent` are noticed"
        in docs["abandoned_cart"]
    )
    assert "**Trigger:** schedule `0 9 * * *` (UTC)\n" in docs["renewal"]


def test_realtime_without_trigger_events_names_the_field_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"realtime: true needs the events.*fix: name them in audience.trigger_event"):
        config.Audience.model_validate({"segment": {"attribute": "plan", "eq": "pro"}, "realtime": True})


def test_the_dag_serializes_with_its_watcher_as_the_dag_processor_stores_it(shipped):
    from airflow.serialization.serialized_objects import DagSerialization

    serialized = DagSerialization.to_dict(build_program_dag(shipped["welcome"]))
    dag = DagSerialization.from_dict(serialized)
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert dag.timetable.summary == "Asset or 0 * * * *"
    text = str(serialized)
    assert "lifecycle.airflow.triggers.ProgramEventTrigger" in text and "lifecycle://events/welcome" in text


def test_an_asset_triggered_run_is_decided_as_of_when_airflow_queued_it():
    # Asset-triggered runs have no data interval and no logical date: their as-of is run_after, the
    # time the asset queue took the first trigger event of the batch.
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from lifecycle.airflow.base import as_of_from_context

    queued = datetime(2026, 11, 16, 15, 0, 3, tzinfo=UTC)
    context = {"data_interval_end": None, "logical_date": None, "dag_run": SimpleNamespace(run_after=queued)}
    assert as_of_from_context(context) == queued
    cron = datetime(2026, 11, 16, 15, 0, tzinfo=UTC)
    assert as_of_from_context({"data_interval_end": cron, "logical_date": cron}) == cron


QUEUE = config.EventsQueue(conn_id="events_redis", channel_prefix="acme.events.", poll_seconds=45)


def test_with_an_events_queue_welcome_is_also_woken_by_airflows_message_queue_trigger(shipped):
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    asset = build_program_dag(shipped["welcome"], queue=QUEUE).timetable.asset_condition
    polled, woken = asset.watchers
    # The watermark watcher stays, looking less often: it finds what no wake-up announced.
    assert isinstance(polled.trigger, ProgramEventTrigger) and polled.trigger.poll_interval == 45
    assert polled.trigger.announced  # new inbox rows are the queue's to announce
    assert isinstance(woken.trigger, MessageQueueTrigger)
    assert woken.name == "welcome_queue_wakeups"
    assert woken.trigger.serialize() == (
        "airflow.providers.redis.triggers.redis_await_message.AwaitMessageTrigger",
        {"channels": ["acme.events.welcome"], "redis_conn_id": "events_redis", "poll_interval": 0.5},
    )


def test_with_an_events_queue_the_dag_serializes_and_its_docs_name_the_channel(shipped):
    from airflow.serialization.serialized_objects import DagSerialization

    dag = build_program_dag(shipped["welcome"], queue=QUEUE)
    text = str(DagSerialization.to_dict(dag))
    assert "AwaitMessageTrigger" in text and "acme.events.welcome" in text
    assert "woken through the events queue on `acme.events.welcome` (connection `events_redis`)" in (dag.doc_md or "")
    assert "looking every 45 s for what no wake-up announced" in (dag.doc_md or "")


def test_an_events_queue_changes_nothing_for_programs_that_are_not_realtime(shipped):
    for pid, program in shipped.items():
        if not program.audience.realtime:
            assert build_program_dag(program, queue=QUEUE).timetable.__class__.__name__ == "CronTriggerTimetable", pid
