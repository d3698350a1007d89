"""The watch over a realtime program's trigger events: it fires for new events of its types only,
carries on from its stored watermarks after a restart, and fires again for events no finished run
has taken (one that reached Airflow's queue too late for the run, one stamped ahead of the run's
as-of), so none waits for the next scheduled run."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Column, DateTime, MetaData, String, Table, select

from lifecycle.config.sources import load_sources
from lifecycle.engine.watch import REFIRE_AFTER, EventWatch
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate

T0 = datetime(2026, 11, 16, 15, 0)


@pytest.fixture
def db(tmp_path: Path):
    engine = get_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    return engine


def _event(engine, event_id: str, kind: str, at: datetime, contact: str = "c1") -> None:
    with engine.begin() as conn:
        conn.execute(
            schema.events.insert().values(
                event_id=event_id, contact_id=contact, event_type=kind, occurred_at=at, properties={}
            )
        )


def _run_finished(engine, as_of: datetime) -> None:
    """A welcome run logged its funnel for ``as_of`` (what the watch reads as consumed)."""
    with engine.begin() as conn:
        conn.execute(
            schema.kpis.insert().values(
                program="welcome", run_id=f"run {as_of}", as_of=as_of, metric="audience", dimension="", value=1
            )
        )


def _watch(engine, sources=None) -> EventWatch:
    return EventWatch("welcome", ["signed_up"], engine, engine, sources)


def test_fires_for_a_new_event_of_its_types_only(db):
    _event(db, "old", "signed_up", T0 - timedelta(days=1))
    watch = _watch(db)
    assert not watch.poll(T0).fire  # history is the schedule's
    _event(db, "e1", "page_viewed", T0)
    assert not watch.poll(T0 + timedelta(seconds=3)).fire
    _event(db, "e2", "signed_up", T0 + timedelta(seconds=4))
    poll = watch.poll(T0 + timedelta(seconds=6))
    assert (poll.fire, poll.reason, poll.arrived) == (True, "new_events", 1)
    assert not watch.poll(T0 + timedelta(seconds=9)).fire  # seen once, fired once


def test_a_restarted_watch_carries_on_from_its_stored_watermark(db):
    watch = _watch(db)
    watch.poll(T0)
    _event(db, "e1", "signed_up", T0 + timedelta(seconds=1))
    assert watch.poll(T0 + timedelta(seconds=3)).fire
    _run_finished(db, T0 + timedelta(seconds=2))
    # The triggerer stops; a sign-up arrives meanwhile; a new trigger instance starts.
    _event(db, "e2", "signed_up", T0 + timedelta(seconds=30))
    restarted = _watch(db)
    poll = restarted.poll(T0 + timedelta(seconds=40))
    assert (poll.fire, poll.arrived) == (True, 1)
    row = db.connect().execute(select(schema.event_watch)).mappings().one()
    assert row["program"] == "welcome" and row["started_at"] == T0 and row["waiting"] == 1


def test_events_a_run_left_behind_fire_again_once_it_finished(db):
    watch = _watch(db)
    watch.poll(T0)
    _event(db, "e1", "signed_up", T0 + timedelta(seconds=1))
    _event(db, "e2", "signed_up", T0 + timedelta(seconds=2))
    assert watch.poll(T0 + timedelta(seconds=3)).fire
    # Airflow's queue made one run as of the first fire's asset event: e2 came after its as-of.
    assert not watch.poll(T0 + timedelta(seconds=6)).fire  # the run is on its way
    _run_finished(db, T0 + timedelta(seconds=1, milliseconds=500))
    poll = watch.poll(T0 + timedelta(seconds=20))
    assert (poll.fire, poll.reason, poll.waiting) == (True, "waiting_after_run", 1)
    _run_finished(db, T0 + timedelta(seconds=21))
    poll = watch.poll(T0 + timedelta(seconds=40))
    assert (poll.fire, poll.waiting) == (False, 0)


def test_an_event_stamped_ahead_of_the_run_is_taken_by_a_later_run(db):
    watch = _watch(db)
    watch.poll(T0)
    _event(db, "skewed", "signed_up", T0 + timedelta(seconds=8))  # the CRM's clock runs 5 s ahead
    assert watch.poll(T0 + timedelta(seconds=3)).fire
    _run_finished(db, T0 + timedelta(seconds=4))  # its as-of is before the event's time: not taken
    assert not watch.poll(T0 + timedelta(seconds=6)).fire  # not due yet for any run
    poll = watch.poll(T0 + timedelta(seconds=9))
    assert (poll.fire, poll.reason, poll.oldest_waiting) == (True, "waiting_after_run", T0 + timedelta(seconds=8))


def test_events_still_waiting_without_a_run_fire_again_after_a_while(db):
    watch = _watch(db)
    watch.poll(T0)
    _event(db, "e1", "signed_up", T0 + timedelta(seconds=1))
    assert watch.poll(T0 + timedelta(seconds=2)).fire
    assert not watch.poll(T0 + timedelta(seconds=60)).fire
    poll = watch.poll(T0 + timedelta(seconds=2) + REFIRE_AFTER)
    assert (poll.fire, poll.reason) == (True, "still_waiting")


def test_events_tracked_into_the_inbox_fire_too(db):
    watch = _watch(db)
    watch.poll(T0)
    assert not watch.poll(T0 + timedelta(seconds=3)).fire

    def tracked(event_id: str, kind: str) -> dict:
        return {
            "event_id": event_id,
            "message_id": f"m-{event_id}",
            "contact_id": "c9",
            "event_type": kind,
            "occurred_at": T0,
            "received_at": T0 + timedelta(seconds=4),
            "properties": {},
        }

    with db.begin() as conn:
        conn.execute(schema.tracked_events.insert(), [tracked("t1", "signed_up"), tracked("t2", "activated")])
    poll = watch.poll(T0 + timedelta(seconds=6))
    assert (poll.fire, poll.arrived) == (True, 1)


def test_a_mapped_source_is_watched_through_its_mapping_and_watermark(tmp_path: Path, monkeypatch):
    source = get_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    state = get_engine(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(state)
    app_events = Table(
        "app_events",
        MetaData(),
        Column("id", String(20), primary_key=True),
        Column("user_id", String(20)),
        Column("name", String(20)),
        Column("ts", DateTime),
        Column("loaded_at", DateTime),
    )
    app_events.create(source)
    (tmp_path / "sources.yml").write_text(
        "events:\n"
        "  table: app_events\n"
        "  watermark: loaded_at\n"
        "  columns: {event_id: id, contact_id: user_id, event_type: name, occurred_at: ts}\n"
        "  values: {event_type: {signed_up: user_created}}\n"
    )
    sources = load_sources(tmp_path / "sources.yml")
    watch = EventWatch("welcome", ["signed_up"], source, state, sources)
    watch.poll(T0)

    def load(event_id: str, name: str, ts: datetime, loaded: datetime) -> None:
        with source.begin() as conn:
            conn.execute(app_events.insert().values(id=event_id, user_id="u1", name=name, ts=ts, loaded_at=loaded))

    load("a", "page_view", T0, T0)
    assert not watch.poll(T0 + timedelta(seconds=3)).fire
    # Loaded late: it occurred an hour ago, but its load time is past the watermark.
    load("b", "user_created", T0 - timedelta(hours=1), T0 + timedelta(seconds=4))
    poll = watch.poll(T0 + timedelta(seconds=6))
    assert (poll.fire, poll.arrived) == (True, 1)


def test_a_restart_after_storing_the_watermark_but_before_airflow_stored_the_fire_fires_at_once(db):
    # The watch stored its watermark past e1, then the triggerer died before Airflow recorded the asset
    # event: no run took e1. The next watch fires for it when it starts.
    watch = _watch(db)
    watch.poll(T0)
    _run_finished(db, T0)
    _event(db, "e1", "signed_up", T0 + timedelta(seconds=1))
    assert watch.poll(T0 + timedelta(seconds=3)).fire  # this fire is lost with the triggerer
    poll = _watch(db).poll(T0 + timedelta(seconds=30))
    assert (poll.fire, poll.reason, poll.arrived, poll.waiting) == (True, "waiting_at_start", 0, 1)


def _tracked(engine, event_id: str, occurred_at: datetime, received_at: datetime) -> None:
    row = {
        "event_id": event_id,
        "message_id": f"m-{event_id}",
        "contact_id": "c9",
        "event_type": "signed_up",
        "occurred_at": occurred_at,
        "received_at": received_at,
        "properties": {},
    }
    with engine.begin() as conn:
        conn.execute(schema.tracked_events.insert(), [row])


def test_with_an_events_queue_a_tracked_event_is_the_queues_to_announce_and_fires_nothing_here(db):
    # The endpoint's wake-up runs the program; a fire here would queue a second run that finds nothing.
    watch = EventWatch("welcome", ["signed_up"], db, db, None, announced=True)
    watch.poll(T0)
    assert not watch.poll(T0 + timedelta(seconds=3)).fire
    _tracked(db, "t1", T0 + timedelta(seconds=4), T0 + timedelta(seconds=4))
    poll = watch.poll(T0 + timedelta(seconds=6))
    assert (poll.fire, poll.arrived, poll.waiting) == (False, 1, 1)
    _run_finished(db, T0 + timedelta(seconds=5))  # the announced run took it
    assert watch.poll(T0 + timedelta(seconds=30)).waiting == 0
    assert not watch.poll(T0 + timedelta(minutes=10)).fire


def test_with_an_events_queue_a_lost_wake_up_still_gets_its_run_after_the_grace(db):
    from lifecycle.engine.watch import ANNOUNCED_GRACE

    watch = EventWatch("welcome", ["signed_up"], db, db, None, announced=True)
    watch.poll(T0)
    _tracked(db, "t1", T0 + timedelta(seconds=4), T0 + timedelta(seconds=4))  # its wake-up is lost
    assert not watch.poll(T0 + timedelta(seconds=6)).fire
    assert not watch.poll(T0 + timedelta(seconds=3) + ANNOUNCED_GRACE).fire
    poll = watch.poll(T0 + timedelta(seconds=4) + ANNOUNCED_GRACE)
    assert (poll.fire, poll.reason, poll.waiting) == (True, "waiting_unannounced", 1)
    assert not watch.poll(T0 + timedelta(seconds=30) + ANNOUNCED_GRACE).fire  # once per grace, not every look
    # A triggerer that restarts with events waiting fires at its first look, whatever announced them.
    restarted = EventWatch("welcome", ["signed_up"], db, db, None, announced=True)
    poll = restarted.poll(T0 + timedelta(seconds=40) + ANNOUNCED_GRACE)
    assert (poll.fire, poll.reason) == (True, "waiting_at_start")


def test_with_an_events_queue_new_source_rows_still_fire_nothing_announces_them(db):
    watch = EventWatch("welcome", ["signed_up"], db, db, None, announced=True)
    watch.poll(T0)
    _event(db, "e1", "signed_up", T0 + timedelta(seconds=1))
    poll = watch.poll(T0 + timedelta(seconds=3))
    assert (poll.fire, poll.reason) == (True, "new_events")
