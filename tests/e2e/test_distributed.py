"""Program runs on the distributed topology: CeleryExecutor on Redis, PostgreSQL, real providers' SDKs.

``welcome`` (email) and the SMS-only ``texts`` fixture program are triggered through the REST
API for the seeded CRM's as-of time and run by the scheduler on the Celery worker. What the
sandbox accepted must match the ledger exactly: every message recorded as sent arrived once,
nothing else arrived, and no message of the runs is left half-way. The sandbox's signed
delivery webhooks then come back through the api-server's Lifecycle app into the ledger.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from lifecycle.messages.links import MESSAGE_ID_PARAM
from lifecycle.model import schema
from tests.e2e.conftest import E2E_AS_OF, PROGRAMS, Cluster
from tests.support.cluster import ClusterError, wait_for

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 360
FINISHED = {"success", "failed"}
UNSETTLED = {"planned", "ready", "sending"}
M = schema.messages


def _task_instances(cluster: Cluster, dag_id: str, run_id: str) -> list[dict]:
    return cluster.api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]


def _task_log_tails(cluster: Cluster, dag_id: str, run_id: str, lines: int = 30) -> str:
    folder = cluster.topology.work / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    return "\n".join(
        f"----- task log {path.relative_to(folder)} -----\n"
        + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        for path in sorted(folder.rglob("*.log"))
    )


def _read(cluster: Cluster, query) -> list:
    engine = create_engine(cluster.topology.crm_url, poolclass=NullPool)
    with engine.connect() as conn:
        return list(conn.execute(query))


@pytest.fixture(scope="module")
def runs(cluster: Cluster) -> dict[str, tuple[str, str]]:
    """Unpause and trigger every program for the as-of time; wait until all finish.

    Returns dag_id -> (run_id, final state).
    """
    run_ids = {}
    for dag_id in PROGRAMS:
        cluster.api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        run = cluster.api.call(
            "POST",
            f"/dags/{dag_id}/dagRuns",
            json={"dag_run_id": f"e2e__{dag_id}", "logical_date": E2E_AS_OF.replace(tzinfo=UTC).isoformat()},
        )
        run_ids[dag_id] = run["dag_run_id"]

    def finished() -> dict[str, str] | None:
        states = {d: cluster.api.call("GET", f"/dags/{d}/dagRuns/{r}")["state"] for d, r in run_ids.items()}
        return states if set(states.values()) <= FINISHED else None

    try:
        states = wait_for(
            "the program runs to finish", finished, RUN_TIMEOUT, list(cluster.services.values()), interval=2
        )
    except ClusterError as exc:
        states = {dag_id: f"unfinished: {exc}" for dag_id in run_ids}
    return {dag_id: (run_ids[dag_id], states[dag_id]) for dag_id in run_ids}


@pytest.fixture(scope="module")
def ledger(cluster: Cluster, runs) -> list[dict]:
    """Every ledger row the runs planned or sent."""
    run_ids = [run_id for run_id, _state in runs.values()]
    query = select(M).where(M.c.run_id.in_(run_ids) | M.c.send_run_id.in_(run_ids)).order_by(M.c.message_id)
    return [dict(row._mapping) for row in _read(cluster, query)]


def _require_success(runs) -> None:
    if any(state != "success" for _run_id, state in runs.values()):
        pytest.fail(f"the program runs did not all succeed ({runs}); see test_program_runs_succeed_on_celery")


def _sent_ids(ledger: list[dict], channel: str) -> list[int]:
    """Ids of the messages the ledger says a provider accepted (``sent_at`` stays set whatever
    delivery events arrive later)."""
    return [row["message_id"] for row in ledger if row["channel"] == channel and row["sent_at"] is not None]


def test_program_runs_succeed_on_celery(cluster: Cluster, runs):
    failed = {dag_id: outcome for dag_id, outcome in runs.items() if outcome[1] != "success"}
    if failed:
        details = []
        for dag_id, (run_id, state) in failed.items():
            tasks = [(t["task_id"], t["map_index"], t["state"]) for t in _task_instances(cluster, dag_id, run_id)]
            details.append(f"{dag_id} {run_id}: {state}; tasks {tasks}\n{_task_log_tails(cluster, dag_id, run_id)}")
        pytest.fail("\n".join(details) + "\n" + cluster.logs())


def test_send_tasks_ran_on_the_celery_worker(cluster: Cluster, runs):
    _require_success(runs)
    executed = [
        line for line in cluster.services["celery-worker"].text().splitlines() if "Executing workload in Celery" in line
    ]
    for dag_id, (run_id, _state) in runs.items():
        sends = [t for t in _task_instances(cluster, dag_id, run_id) if t["task_id"] == "send"]
        assert sends and all(t["state"] == "success" and t["queue"] == "default" for t in sends), sends
        for ti in sends:
            assert any(f"id=UUID('{ti['id']}')" in line for line in executed), (
                f"{dag_id} send[{ti['map_index']}] ({ti['id']}) is not in the Celery worker's log"
            )


def test_every_email_the_ledger_sent_reached_sendgrid_exactly_once(cluster: Cluster, runs, ledger):
    _require_success(runs)
    emails = cluster.api.http.get(f"{cluster.sandbox_url}/_sandbox/sendgrid/messages").json()["messages"]
    received = Counter(int(email["custom_args"][MESSAGE_ID_PARAM]) for email in emails)
    sent = _sent_ids(ledger, "email")
    assert sent, "the welcome run sent no email: the seeded CRM should have new sign-ups at the as-of time"
    assert [mid for mid, n in received.items() if n > 1] == []
    assert sorted(received) == sorted(sent)


def test_every_sms_the_ledger_sent_reached_twilio_exactly_once(cluster: Cluster, runs, ledger):
    _require_success(runs)
    messages = cluster.api.http.get(f"{cluster.sandbox_url}/_sandbox/twilio/messages").json()["messages"]
    received = Counter(int(parse_qs(urlsplit(sms["status_callback"]).query)[MESSAGE_ID_PARAM][0]) for sms in messages)
    sent = _sent_ids(ledger, "sms")
    assert sent, "the texts run sent no SMS: the seeded CRM should have trial contacts with SMS consent"
    assert [mid for mid, n in received.items() if n > 1] == []
    assert sorted(received) == sorted(sent)


def test_no_message_of_the_runs_is_left_unsettled(runs, ledger):
    _require_success(runs)
    assert ledger
    assert [(row["message_id"], row["status"]) for row in ledger if row["status"] in UNSETTLED] == []
    assert all(row["provider_message_id"] for row in ledger if row["sent_at"] is not None)


def test_signed_delivery_webhooks_reach_the_ledger_through_the_api_server(cluster: Cluster, runs, ledger):
    _require_success(runs)
    webhooks = cluster.api.http.post(f"{cluster.sandbox_url}/_sandbox/flush", json={"timeout": 30}).json()
    assert webhooks["delivered"] > 0 and (webhooks["failed"], webhooks["pending"]) == (0, 0), webhooks
    reported = {row.message_id for row in _read(cluster, select(schema.provider_events.c.message_id))}
    assert reported == set(_sent_ids(ledger, "email") + _sent_ids(ledger, "sms"))
