"""A sign-up reaches the welcome program within seconds, on the distributed topology.

``welcome`` is a realtime program: its DAG runs on its hourly cron or on its trigger events, through
an asset whose watcher the triggerer runs. A contact who signs up gets the welcome email at the
provider sandbox within :data:`WELCOME_WITHIN` seconds, by an asset-triggered run on the Celery
worker, whether the sign-up comes through the track endpoint (``POST /lifecycle/track``) or as a row
of the CRM's ``events``; replayed, it sends nothing more. A burst of sign-ups is taken by a few runs.
A stream of sign-ups loses none and sends none twice while a cron-style run interleaves with the
event runs and the triggerer is killed (SIGKILL) and restarted in the middle: its watermarks are in
the state database, so the restarted watcher resumes where the killed one stopped.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.pool import NullPool

from lifecycle import config
from lifecycle.messages.links import MESSAGE_ID_PARAM
from lifecycle.model import schema
from lifecycle.model.db import bucket_of, utc_naive
from tests.e2e.conftest import PROGRAMS, Cluster, afternoon_zone
from tests.support.cluster import ClusterError, wait_for
from tests.support.invariants import assert_outbox_invariants

pytestmark = pytest.mark.e2e

WATCH_TIMEOUT = 120
"""Seconds for an unpaused program's watcher to start (the DAG file's next parse, then the triggerer)."""
WELCOME_WITHIN = 120
"""Seconds from a sign-up to its welcome email at the sandbox."""
RUN_TIMEOUT = 240
QUIET_SECONDS = 20
"""How long a replayed (duplicate) track call is watched for a run it must not start."""
RECORDED_WITHIN = 60
"""Seconds between the sandbox answering a send and the ledger recording it."""
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


def _new_contact(cluster: Cluster) -> str:
    """A new trial contact with email consent, as the CRM holds it before its sign-up event."""
    now = utc_naive(datetime.now(UTC))
    contact_id = _treatment_contact()
    with _engine(cluster).begin() as conn:
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
    return contact_id


def _crm_sign_up(cluster: Cluster, contact_id: str) -> datetime:
    """A ``signed_up`` event written into the CRM's ``events`` now; returns its time."""
    now = utc_naive(datetime.now(UTC))
    with _engine(cluster).begin() as conn:
        conn.execute(
            insert(schema.events).values(
                event_id=f"ev{uuid.uuid4().hex[:12]}",
                contact_id=contact_id,
                event_type="signed_up",
                occurred_at=now,
                properties={},
            )
        )
    return now


def _track_call(contact_id: str, message_id: str, at: datetime) -> dict:
    return {
        "type": "track",
        "userId": contact_id,
        "event": "signed_up",
        "messageId": message_id,
        "timestamp": at.replace(tzinfo=UTC).isoformat(),
        "properties": {"plan": "trial"},
    }


def _post(cluster: Cluster, path: str, body: dict) -> dict:
    """A call to the track endpoint with the write key (Segment's way: HTTP Basic, the key as user)."""
    response = cluster.api.http.post(
        f"{cluster.topology.public_url}{path}", json=body, auth=(cluster.topology.write_key, "")
    )
    assert response.status_code == 202, response.text
    return response.json()


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
        airflow = [f"{name}: {[tuple(r) for r in conn.execute(text(sql))]}" for name, sql in queries.items()]
    with _engine(cluster).connect() as conn:
        watch = conn.execute(select(schema.event_watch)).mappings().all()
        funnels = conn.execute(
            select(schema.kpis.c.run_id, schema.kpis.c.as_of).where(schema.kpis.c.program == "welcome").distinct()
        ).all()
    return "\n".join([*airflow, f"event watch: {[dict(r) for r in watch]}", f"welcome funnels: {funnels}"])


def _queue_wakeups(cluster: Cluster) -> list[dict]:
    """The asset events the events queue's watcher (Airflow's MessageQueueTrigger) fired for welcome."""
    engine = create_engine(cluster.topology.metadata_url, poolclass=NullPool)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT timestamp, extra FROM asset_event ORDER BY id")).all()
    channel = f"{cluster.topology.events_channel_prefix}welcome"
    found = [
        (json.loads(extra) if isinstance(extra, str) else extra or {}) | {"at": utc_naive(at)} for at, extra in rows
    ]
    return [e for e in found if e.get("payload", {}).get("channel") == channel]


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

    services = list(cluster.services.values())
    wait_for("welcome's event watcher to start", watch_row, WATCH_TIMEOUT, services, 2)
    wait_for("welcome's events-queue watcher to subscribe", lambda: _queue_listeners(cluster), WATCH_TIMEOUT, services)
    return time.monotonic() - started


def _queue_listeners(cluster: Cluster) -> int | None:
    """How many subscribers welcome's events-queue channel has (None: none yet)."""
    channel = f"{cluster.topology.events_channel_prefix}welcome"
    client = redis.Redis.from_url(cluster.topology.broker_url)
    try:
        ((_name, listeners),) = client.pubsub_numsub(channel)
    finally:
        client.close()
    return listeners or None


def _welcome_email(cluster: Cluster, contact_id: str) -> tuple[dict, float]:
    """The one welcome email to ``contact_id`` once the sandbox has it, and the seconds it took."""
    started = time.monotonic()
    try:
        (email,) = wait_for(
            f"the welcome email to {contact_id}",
            lambda: _emails_to(cluster, contact_id) or None,
            WELCOME_WITHIN,
            list(cluster.services.values()),
        )
    except Exception:
        state = _airflow_state(cluster)
        pytest.fail(f"no welcome email within {WELCOME_WITHIN}s of the sign-up\n{state}\n{cluster.logs()}")
    return email, time.monotonic() - started


def _journey(cluster: Cluster, contact_id: str) -> tuple[dict, dict]:
    """The contact's welcome enrollment and its one message."""
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
        (message,) = conn.execute(select(schema.messages).where(schema.messages.c.contact_id == contact_id)).mappings()
    return dict(enrollment), dict(message)


def _recorded_journey(cluster: Cluster, contact_id: str) -> tuple[dict, dict] | None:
    """The enrollment and message once the ledger has the message's send time, else None."""
    enrollment, message = _journey(cluster, contact_id)
    return (enrollment, message) if message["sent_at"] is not None else None


def _check_and_report(cluster: Cluster, how: str, contact_id: str, signed_up_at: datetime, seconds: float) -> None:
    # The sandbox holds the email as soon as it answers; the ledger records the send once the
    # send task has read that answer, a moment later.
    enrollment, message = wait_for(
        f"the ledger to record the welcome sent to {contact_id}",
        lambda: _recorded_journey(cluster, contact_id),
        RECORDED_WITHIN,
        list(cluster.services.values()),
    )
    runs = {run["dag_run_id"] for run in _asset_runs(cluster)}
    assert enrollment["run_id"] in runs, (enrollment["run_id"], sorted(runs))
    assert abs((enrollment["triggered_at"] - signed_up_at).total_seconds()) < 1
    assert enrollment["enrolled_at"] >= enrollment["triggered_at"]
    assert message["step"] == "welcome" and message["sent_at"] is not None
    print(
        f"\n{how}: sign-up -> welcome email at the sandbox {seconds:.1f}s; event -> enrolled (the run's as-of) "
        f"{(enrollment['enrolled_at'] - enrollment['triggered_at']).total_seconds():.1f}s, "
        f"-> sent {(message['sent_at'] - enrollment['triggered_at']).total_seconds():.1f}s"
    )


def _finished_run_after(cluster: Cluster, moment: datetime) -> dict | None:
    """A finished asset-triggered run queued at or after ``moment`` (naive UTC), else None."""
    later = [
        run
        for run in _asset_runs(cluster)
        if utc_naive(datetime.fromisoformat(run["run_after"])) >= moment and run["state"] in FINISHED
    ]
    return later[0] if later else None


def test_a_sign_up_tracked_through_the_endpoint_is_welcomed_and_its_replay_is_not(cluster: Cluster, watching: float):
    contact_id = _new_contact(cluster)
    signed_up_at = utc_naive(datetime.now(UTC))
    call = _track_call(contact_id, f"signup-{contact_id}", signed_up_at)
    assert _post(cluster, "/track", call)["status"] == "accepted"
    _email, seconds = _welcome_email(cluster, contact_id)
    print(f"\nwatcher up {watching:.1f}s after unpausing")
    _check_and_report(cluster, "POST /lifecycle/track", contact_id, signed_up_at, seconds)
    # The track endpoint woke welcome through the events queue: the wake-up reached Airflow as an
    # asset event of the message-queue watcher (the watermark watcher only looks every 10 s here).
    wakeups = _queue_wakeups(cluster)
    assert wakeups and json.loads(wakeups[-1]["payload"]["data"]) == {"program": "welcome", "events": 1}, (
        _airflow_state(cluster)
    )

    # The same call again (a client retrying): a duplicate, no new event, so no run and no email.
    runs = {run["dag_run_id"] for run in _asset_runs(cluster)}
    assert _post(cluster, "/track", call)["status"] == "duplicate"
    time.sleep(QUIET_SECONDS)
    assert {run["dag_run_id"] for run in _asset_runs(cluster)} == runs
    assert len(_emails_to(cluster, contact_id)) == 1


def test_a_sign_up_written_to_the_crm_is_welcomed_and_written_again_sends_nothing_more(
    cluster: Cluster, watching: float
):
    contact_id = _new_contact(cluster)
    signed_up_at = _crm_sign_up(cluster, contact_id)
    _email, seconds = _welcome_email(cluster, contact_id)
    _check_and_report(cluster, "CRM events row", contact_id, signed_up_at, seconds)

    # The CRM writes the sign-up again (a re-import under a new id): a run, and nothing more for the contact.
    replayed_at = _crm_sign_up(cluster, contact_id)
    run = wait_for(
        "the replayed sign-up's run",
        lambda: _finished_run_after(cluster, replayed_at),
        RUN_TIMEOUT,
        list(cluster.services.values()),
        2,
    )
    assert run["state"] == "success", run
    assert len(_emails_to(cluster, contact_id)) == 1
    with _engine(cluster).connect() as conn:
        rows = conn.execute(select(schema.messages.c.message_id).where(schema.messages.c.contact_id == contact_id))
        assert len(rows.all()) == 1
    print(f"written again: run {run['dag_run_id']} {run['state']}, still one email")


BURST = 40


def test_a_burst_of_sign_ups_is_taken_by_a_few_runs_not_one_run_each(cluster: Cluster, watching: float):
    before = {run["dag_run_id"] for run in _asset_runs(cluster)}
    contacts = [_new_contact(cluster) for _ in range(BURST)]
    now = utc_naive(datetime.now(UTC))
    answer = _post(cluster, "/batch", {"batch": [_track_call(c, f"burst-{c}", now) for c in contacts]})
    assert answer["accepted"] == BURST, answer
    started = time.monotonic()

    def all_welcomed() -> bool | None:
        return True if all(_emails_to(cluster, contact_id) for contact_id in contacts) else None

    wait_for(f"the welcome emails of {BURST} sign-ups", all_welcomed, RUN_TIMEOUT, list(cluster.services.values()), 2)
    seconds = time.monotonic() - started
    runs = [run for run in _asset_runs(cluster) if run["dag_run_id"] not in before]
    assert 1 <= len(runs) <= 3, [(run["dag_run_id"], run["state"]) for run in runs]
    assert all(len(_emails_to(cluster, contact_id)) == 1 for contact_id in contacts)
    print(f"\n{BURST} sign-ups in one POST /lifecycle/batch: every welcome email after {seconds:.1f}s", end="")
    print(f", by {len(runs)} run(s)")


STREAM_SECONDS = 15.0
STREAM_RATE = 3
"""Sign-ups a second in the stream (one ``POST /lifecycle/track`` each)."""
CRON_RUN_AT, KILL_AT, RESTART_AT = 4.0, 6.0, 10.0
"""Seconds into the stream: a manual run of the program (as its cron would make one, at the moment it
is triggered), SIGKILL of the triggerer's process group, and its restart (once at least
:data:`OUTAGE_SIGN_UPS` sign-ups came in while it was down)."""
OUTAGE_SIGN_UPS = 5
STREAM_TIMEOUT = 600
"""Seconds from the stream's end until every sign-up in it has its welcome email. The restarted
triggerer takes the watcher over only once the killed one's heartbeat is older than
``[triggerer] triggerer_health_check_threshold`` (30 s), and the stream's runs (a few event runs and the
cron-style one) go one at a time (``max_active_runs=1``): about 30 s each on an idle machine, minutes
each on a loaded CI machine."""
ACTIVE = {"queued", "running"}


class _SandboxOverHttp:
    """The sandbox's records through its control API, as :func:`assert_outbox_invariants` reads them."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def _get(self, path: str) -> list[dict]:
        response = self.cluster.api.http.get(f"{self.cluster.sandbox_url}/_sandbox/{path}")
        response.raise_for_status()
        messages: list[dict] = response.json()["messages"]
        return messages

    def sendgrid_messages(self) -> list[dict]:
        return self._get("sendgrid/messages")

    def twilio_messages(self) -> list[dict]:
        return self._get("twilio/messages")


def _welcome_runs(cluster: Cluster) -> list[dict]:
    runs = cluster.api.call("GET", "/dags/welcome/dagRuns", params={"limit": 100, "order_by": "-run_after"})
    dag_runs: list[dict] = runs["dag_runs"]
    return dag_runs


def _settled(cluster: Cluster) -> bool | None:
    """True once no welcome run is queued or running, else None (for :func:`wait_for`)."""
    return True if not any(run["state"] in ACTIVE for run in _welcome_runs(cluster)) else None


def _fail_with_state(cluster: Cluster, what: str) -> None:
    pytest.fail(f"{what}\n{_airflow_state(cluster)}\n{cluster.logs()}")


def test_a_stream_of_sign_ups_survives_a_triggerer_crash_and_a_cron_run_in_between(cluster: Cluster, watching: float):
    triggerer = cluster.services["triggerer"]
    others = [service for service in cluster.services.values() if service is not triggerer]
    contacts = [_new_contact(cluster) for _ in range(int(STREAM_SECONDS * STREAM_RATE))]
    # The earlier tests' runs first: the stream's runs are then only its own.
    try:
        wait_for("the earlier welcome runs to settle", lambda: _settled(cluster), RUN_TIMEOUT, others, 2)
    except ClusterError as exc:
        _fail_with_state(cluster, str(exc))
    signed_up: dict[str, datetime] = {}
    moments: dict[str, datetime] = {}
    cron_run_id = f"e2e_cron__{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    try:
        for i, contact_id in enumerate(contacts):
            time.sleep(max(started + i / STREAM_RATE - time.monotonic(), 0))
            if time.monotonic() - started >= CRON_RUN_AT and "cron run" not in moments:
                moments["cron run"] = utc_naive(datetime.now(UTC))
                cluster.api.call(
                    "POST",
                    "/dags/welcome/dagRuns",
                    json={
                        "dag_run_id": cron_run_id,
                        "logical_date": moments["cron run"].replace(tzinfo=UTC).isoformat(),
                    },
                )
            if time.monotonic() - started >= KILL_AT and "kill" not in moments:
                moments["kill"] = utc_naive(datetime.now(UTC))
                triggerer.kill()
            # Restarted once some sign-ups came in while it was down, however late the stream runs.
            down = [c for c in signed_up if "kill" in moments and signed_up[c] >= moments["kill"]]
            if time.monotonic() - started >= RESTART_AT and len(down) >= OUTAGE_SIGN_UPS and "restart" not in moments:
                moments["restart"] = utc_naive(datetime.now(UTC))
                triggerer.restart()
            signed_up[contact_id] = utc_naive(datetime.now(UTC))
            assert (
                _post(cluster, "/track", _track_call(contact_id, f"stream-{contact_id}", signed_up[contact_id]))[
                    "status"
                ]
                == "accepted"
            )
    finally:
        if not triggerer.alive:
            triggerer.restart()
    streamed = time.monotonic() - started
    assert "restart" in moments, f"the stream ended before the triggerer's restart ({moments}, {streamed:.1f}s)"
    sandbox = _SandboxOverHttp(cluster)
    addresses = {f"{contact_id}@example.com": contact_id for contact_id in contacts}

    def welcomed() -> Counter[str] | None:
        received = Counter(m["to"] for m in sandbox.sendgrid_messages() if m["to"] in addresses)
        return received if len(received) == len(contacts) else None

    services = list(cluster.services.values())
    try:
        wait_for(f"the welcome emails of {len(contacts)} streamed sign-ups", welcomed, STREAM_TIMEOUT, services, 2)
    except ClusterError as exc:
        received = {m["to"] for m in sandbox.sendgrid_messages()}
        missing = sorted(c for a, c in addresses.items() if a not in received)
        _fail_with_state(cluster, f"{exc}; no welcome email for {len(missing)} sign-up(s): {missing}")
    all_welcomed = time.monotonic() - started
    # Settled: no welcome run is left queued or running (one could still plan or send a duplicate).
    try:
        wait_for("the welcome runs to settle", lambda: _settled(cluster), RUN_TIMEOUT, services, 2)
    except ClusterError as exc:
        _fail_with_state(cluster, str(exc))
    assert others and all(service.alive for service in services)

    # At the sandbox: exactly one email per streamed address.
    received = Counter(m["to"] for m in sandbox.sendgrid_messages() if m["to"] in addresses)
    assert {a: n for a, n in received.items() if n != 1} == {}, "addresses with more than one welcome email"
    assert set(received) == set(addresses)
    # In the ledger: one enrollment and one welcome message per contact, under distinct idempotency keys,
    # and that message is the one the sandbox took.
    with _engine(cluster).connect() as conn:
        enrollments = (
            conn.execute(
                select(schema.enrollments).where(
                    schema.enrollments.c.program == "welcome", schema.enrollments.c.contact_id.in_(contacts)
                )
            )
            .mappings()
            .all()
        )
        ledger = (
            conn.execute(select(schema.messages).where(schema.messages.c.contact_id.in_(contacts))).mappings().all()
        )
    assert sorted(e["contact_id"] for e in enrollments) == sorted(contacts)
    assert sorted(m["contact_id"] for m in ledger) == sorted(contacts), "a contact has more than one message"
    assert len({m["idempotency_key"] for m in ledger}) == len(contacts)
    assert {m["step"] for m in ledger} == {"welcome"} and all(m["sent_at"] is not None for m in ledger)
    sent = {str(m["message_id"]) for m in ledger}
    taken = {m["custom_args"][MESSAGE_ID_PARAM] for m in sandbox.sendgrid_messages() if m["to"] in addresses}
    assert taken == sent
    statuses = assert_outbox_invariants(_engine(cluster), sandbox)

    # The runs: the cron-style one finished, and what arrived after it was taken by asset-triggered runs,
    # including what arrived while the triggerer was down and after it came back.
    runs = {run["dag_run_id"]: run for run in _welcome_runs(cluster)}
    assert runs[cron_run_id]["state"] == "success", runs[cron_run_id]
    failed = [run_id for run_id, run in runs.items() if run["state"] != "success"]
    assert failed == [], failed
    by_run = {e["contact_id"]: e["run_id"] for e in enrollments}
    after_cron = [c for c in contacts if signed_up[c] > moments["cron run"]]
    assert all(runs[by_run[c]]["run_type"] == "asset_triggered" for c in after_cron), {
        c: by_run[c] for c in after_cron if runs[by_run[c]]["run_type"] != "asset_triggered"
    }
    during_outage = [c for c in contacts if moments["kill"] <= signed_up[c] < moments["restart"]]
    assert len(during_outage) >= OUTAGE_SIGN_UPS, (moments, len(during_outage))

    lags = sorted((m["sent_at"] - signed_up[m["contact_id"]]).total_seconds() for m in ledger)
    stream_runs = [
        run for run in runs.values() if utc_naive(datetime.fromisoformat(run["run_after"])) >= min(signed_up.values())
    ]
    kinds = Counter(run["run_type"] for run in stream_runs)
    # The events queue's watcher fired again and again (Airflow restarts it after each wake-up; what
    # is published while it restarts, or while the triggerer is down, is the watermark watcher's), and
    # the restarted triggerer subscribed it again.
    wakeups = [w["at"] for w in _queue_wakeups(cluster) if w["at"] >= min(signed_up.values())]
    assert len(wakeups) >= 2, (wakeups, moments)
    wait_for("the events-queue watcher to subscribe again", lambda: _queue_listeners(cluster), WATCH_TIMEOUT, services)
    print(
        f"\n{len(contacts)} sign-ups streamed over {streamed:.1f}s (cron-style run at {CRON_RUN_AT:.0f}s, triggerer "
        f"killed at {KILL_AT:.0f}s, restarted at {RESTART_AT:.0f}s): every welcome email after {all_welcomed:.1f}s; "
        f"sign-up -> sent p50 {lags[len(lags) // 2]:.1f}s, max {lags[-1]:.1f}s; "
        f"{len(during_outage)} signed up during the outage; runs {dict(kinds)}; {len(wakeups)} queue wake-ups "
        f"reached Airflow; ledger {dict(statuses)}"
    )
