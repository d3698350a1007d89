"""A sign-up reaches the welcome program within seconds, on the distributed topology.

``welcome`` is a realtime program: its DAG runs on its hourly cron or on its trigger events, through
an asset whose watcher the triggerer runs. A contact who signs up (a ``signed_up`` event written to
the CRM) gets the welcome email at the provider sandbox within :data:`WELCOME_WITHIN` seconds, by an
asset-triggered run on the Celery worker; the same sign-up replayed starts another run that sends
nothing more.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.pool import NullPool

from lifecycle import config
from lifecycle.model import schema
from lifecycle.model.db import bucket_of, utc_naive
from tests.e2e.conftest import PROGRAMS, Cluster, afternoon_zone
from tests.support.cluster import wait_for

pytestmark = pytest.mark.e2e

WATCH_TIMEOUT = 120
"""Seconds for an unpaused program's watcher to start (the DAG file's next parse, then the triggerer)."""
WELCOME_WITHIN = 120
"""Seconds from a sign-up to its welcome email at the sandbox."""
RUN_TIMEOUT = 240
FINISHED = {"success", "failed"}


def _engine(cluster: Cluster):
    return create_engine(cluster.topology.crm_url, poolclass=NullPool)


def _treatment_contact() -> str:
    """A new contact id that is in neither the global control group nor welcome's holdout."""
    policy = config.load_policy()
    welcome = config.load_program(PROGRAMS["welcome"])
    while True:
        contact_id = f"rt{uuid.uuid4().hex[:10]}"
        control = bucket_of(f"{policy.control_group.salt}:{contact_id}") < policy.control_group.percent * 100
        holdout = bucket_of(f"{welcome.salt}:welcome:{contact_id}") < welcome.holdout_percent * 100
        if not control and not holdout:
            return contact_id


def _sign_up(cluster: Cluster, contact_id: str | None = None) -> tuple[str, datetime]:
    """A sign-up as a CRM writes it: the contact with email consent (a new one unless given) and its
    ``signed_up`` event, now."""
    now = utc_naive(datetime.now(UTC))
    with _engine(cluster).begin() as conn:
        if contact_id is None:
            contact_id = _treatment_contact()
            conn.execute(
                insert(schema.contacts).values(
                    contact_id=contact_id,
                    email=f"{contact_id}@example.com",
                    first_name="Grace",
                    last_name="Hopper",
                    country="US",
                    timezone=afternoon_zone(now),
                    locale="en-US",
                    lifecycle_stage="trial",
                    created_at=now,
                    last_active_at=now,
                )
            )
            conn.execute(
                insert(schema.consents).values(
                    contact_id=contact_id,
                    channel="email",
                    purpose="marketing",
                    status="granted",
                    source="signup_form",
                    captured_at=now - timedelta(seconds=1),
                    proof="e2e",
                )
            )
        conn.execute(
            insert(schema.events).values(
                event_id=f"ev{uuid.uuid4().hex[:12]}",
                contact_id=contact_id,
                event_type="signed_up",
                occurred_at=now,
                properties={},
            )
        )
    return contact_id, now


def _emails_to(cluster: Cluster, contact_id: str) -> list[dict]:
    response = cluster.api.http.get(
        f"{cluster.sandbox_url}/_sandbox/sendgrid/messages", params={"to": f"{contact_id}@example.com"}
    )
    return response.json()["messages"]


def _asset_runs(cluster: Cluster) -> list[dict]:
    runs = cluster.api.call("GET", "/dags/welcome/dagRuns", params={"limit": 100, "order_by": "-run_after"})
    return [run for run in runs["dag_runs"] if run["run_type"] == "asset_triggered"]


def _airflow_state(cluster: Cluster) -> str:
    """The asset events, the asset queue and the welcome runs in Airflow's metadata database."""
    engine = create_engine(cluster.topology.metadata_url, poolclass=NullPool)
    queries = {
        "asset events": "SELECT id, asset_id, timestamp, extra FROM asset_event ORDER BY id",
        "asset queue": "SELECT asset_id, target_dag_id, created_at FROM asset_dag_run_queue",
        "welcome runs": "SELECT run_id, run_type, state, run_after FROM dag_run WHERE dag_id = 'welcome'",
        "triggers": "SELECT id, classpath, triggerer_id FROM trigger",
    }
    with engine.connect() as conn:
        return "\n".join(f"{name}: {[tuple(r) for r in conn.execute(text(sql))]}" for name, sql in queries.items())


@pytest.fixture(scope="module")
def watching(cluster: Cluster) -> float:
    """welcome unpaused and its watcher polling; returns how many seconds that took."""
    started = time.monotonic()
    cluster.api.call("PATCH", "/dags/welcome", json={"is_paused": False})

    def watch_row():
        with _engine(cluster).connect() as conn:
            return conn.execute(
                select(schema.event_watch.c.checked_at).where(schema.event_watch.c.program == "welcome")
            ).first()

    wait_for("welcome's event watcher to start", watch_row, WATCH_TIMEOUT, list(cluster.services.values()), 2)
    return time.monotonic() - started


def test_a_sign_up_gets_the_welcome_email_within_two_minutes_and_a_replay_sends_nothing_more(
    cluster: Cluster, watching: float
):
    services = list(cluster.services.values())
    before = {run["dag_run_id"] for run in _asset_runs(cluster)}
    contact_id, signed_up_at = _sign_up(cluster)
    started = time.monotonic()
    try:
        (email,) = wait_for(
            f"the welcome email to {contact_id}",
            lambda: _emails_to(cluster, contact_id) or None,
            WELCOME_WITHIN,
            services,
        )
    except Exception:
        pytest.fail(
            f"no welcome email within {WELCOME_WITHIN}s of the sign-up\n{_airflow_state(cluster)}\n{cluster.logs()}"
        )
    seconds = time.monotonic() - started

    with _engine(cluster).connect() as conn:
        enrollment = (
            conn.execute(
                select(schema.enrollments).where(
                    schema.enrollments.c.program == "welcome", schema.enrollments.c.contact_id == contact_id
                )
            )
            .mappings()
            .one()
        )
        (message,) = (
            conn.execute(select(schema.messages).where(schema.messages.c.contact_id == contact_id)).mappings().all()
        )
    runs = {run["dag_run_id"]: run for run in _asset_runs(cluster)}
    assert enrollment["run_id"] in runs and enrollment["run_id"] not in before, (enrollment["run_id"], sorted(runs))
    assert enrollment["triggered_at"] == signed_up_at and enrollment["enrolled_at"] >= signed_up_at
    assert message["step"] == "welcome" and message["sent_at"] is not None
    print(
        f"\nwatcher up {watching:.1f}s after unpausing; sign-up -> welcome email at the sandbox {seconds:.1f}s; "
        f"event -> enrolled (the run's as-of) {(enrollment['enrolled_at'] - signed_up_at).total_seconds():.1f}s, "
        f"-> sent {(message['sent_at'] - signed_up_at).total_seconds():.1f}s"
    )

    # The same sign-up again: another run, and nothing more for the contact.
    _contact, replayed_at = _sign_up(cluster, contact_id)

    def replay_run_finished() -> dict | None:
        later = [
            run
            for run in _asset_runs(cluster)
            if utc_naive(datetime.fromisoformat(run["run_after"])) >= replayed_at and run["state"] in FINISHED
        ]
        return later[0] if later else None

    run = wait_for("the replayed sign-up's run", replay_run_finished, RUN_TIMEOUT, services, 2)
    assert run["state"] == "success", run
    assert len(_emails_to(cluster, contact_id)) == 1
    with _engine(cluster).connect() as conn:
        rows = conn.execute(select(schema.messages.c.message_id).where(schema.messages.c.contact_id == contact_id))
        assert len(rows.all()) == 1
    print(f"replayed sign-up: run {run['dag_run_id']} {run['state']}, still one email ({email['subject']!r})")


BURST = 40


def test_a_burst_of_sign_ups_is_taken_by_a_few_runs_not_one_run_each(cluster: Cluster, watching: float):
    services = list(cluster.services.values())
    before = {run["dag_run_id"] for run in _asset_runs(cluster)}
    contacts = []
    for _ in range(BURST):
        contact_id, _at = _sign_up(cluster)
        contacts.append(contact_id)
    started = time.monotonic()

    def all_welcomed() -> bool | None:
        return True if all(_emails_to(cluster, contact_id) for contact_id in contacts) else None

    wait_for(f"the welcome emails of {BURST} sign-ups", all_welcomed, RUN_TIMEOUT, services, 2)
    seconds = time.monotonic() - started
    runs = [run for run in _asset_runs(cluster) if run["dag_run_id"] not in before]
    assert 1 <= len(runs) <= 3, [(run["dag_run_id"], run["state"]) for run in runs]
    assert all(len(_emails_to(cluster, contact_id)) == 1 for contact_id in contacts)
    print(f"\n{BURST} sign-ups: every welcome email at the sandbox after {seconds:.1f}s, by {len(runs)} run(s)")
