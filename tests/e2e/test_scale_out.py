"""Scale-out: the same batch fan-out on one Celery worker, then on two, with throughput printed.

Two copies of one email program, each with its own 240 contacts (so the second run is not
deduplicated by the first), send in batches of 20 (the policy's ``send_batch_size`` for this
module), about twelve ``send`` tasks a run, while the sandbox answers every provider request
after a lognormal round trip with a 150 ms median, as SendGrid does over the internet. The first
run has the cluster's one worker (``--concurrency 2``: two batches at once); a second ``airflow
celery worker`` on the same queue joins for the second run (four at once: the send task's
``max_active_tis_per_dag``). Each run must send every planned message exactly once at the
sandbox; the two-worker run's send tasks must have run on both workers. What each run sent, its
send stage's wall time (first send task's start to the last one's end) and messages per second
are printed with the speed-up, which is not asserted: on a shared 2-core machine it says as much
about the other processes as about Lifecycle.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import create_engine, insert, select
from sqlalchemy.pool import NullPool

from lifecycle.messages.links import MESSAGE_ID_PARAM
from lifecycle.model import schema
from tests.e2e.conftest import E2E_AS_OF, Cluster
from tests.support.cluster import ClusterError, Service, free_port, stop_all, wait_for
from tests.support.invariants import GONE_OUT, inconsistent, lost, sent_twice

pytestmark = pytest.mark.e2e

CONTACTS_PER_RUN = 240
BATCH_SIZE = 20
LATENCY = {"median_ms": 150, "sigma": 0.4}
RUN_TIMEOUT = 480
WORKER_READY_TIMEOUT = 120
DAG_PARSE_TIMEOUT = 150
FINISHED = {"success", "failed"}
WORKER_READY = re.compile(r"(\S+@\S+) ready\.")
PROGRAM = """\
name: Scale-out ({label})
owner: tests
priority: {priority}
schedule: null
audience:
  segment: {{attribute: owner, eq: {segment}}}
steps:
  - {{id: hello, channel: email, template: simple/hello}}
holdout_percent: 0
kpi:
  primary: conversion
  label: Conversion
  conversion: {{event: purchase, since: enrollment}}
"""
M = schema.messages


@dataclass(frozen=True)
class Pass:
    """One run of the fan-out and what it measured."""

    workers: int
    dag_id: str
    run_id: str
    sent: int
    batches: int
    seconds: float
    task_seconds: float
    retries: int
    hosts: Counter[str]

    @property
    def rate(self) -> float:
        """Messages a second over the send stage."""
        return self.sent / self.seconds

    def describe(self) -> str:
        """``1 worker: 228 messages in 41.2 s, 6.9 msg/s (send task 5.3 s on average, 0 retried)``."""
        label = "worker" if self.workers == 1 else "workers"
        return (
            f"{self.workers} {label}: {self.sent} messages in {self.seconds:.1f} s, {self.rate:.1f} msg/s "
            f"(send task {self.task_seconds:.1f} s on average, {self.retries} retried)"
        )


def _engine(cluster: Cluster):
    return create_engine(cluster.topology.crm_url, poolclass=NullPool)


def _seed_contacts(cluster: Cluster, segment: str) -> None:
    """``CONTACTS_PER_RUN`` long-standing leads whose CRM owner is ``segment``, with email consent."""
    created = E2E_AS_OF - timedelta(days=400)
    contacts = [
        {
            "contact_id": f"{segment}-{number:04d}",
            "email": f"{segment}-{number:04d}@example.com",
            "first_name": "Ada",
            "country": "US",
            "timezone": "UTC",
            "locale": "en-US",
            "lifecycle_stage": "lead",
            "owner": segment,
            "created_at": created,
            "last_active_at": created,
        }
        for number in range(CONTACTS_PER_RUN)
    ]
    consents = [
        {
            "contact_id": contact["contact_id"],
            "channel": "email",
            "purpose": "marketing",
            "status": "granted",
            "source": "signup_form",
            "captured_at": created,
            "proof": "e2e",
        }
        for contact in contacts
    ]
    with _engine(cluster).begin() as conn:
        conn.execute(insert(schema.contacts), contacts)
        conn.execute(insert(schema.consents), consents)


@pytest.fixture(scope="module")
def programs(cluster: Cluster) -> Iterator[list[str]]:
    """Two copies of one email program, each with its own contacts, sending in batches of
    ``BATCH_SIZE``; parsed and unpaused. Removed afterwards, with the cluster's policy put back."""
    config = cluster.topology.config_dir
    policy = config / "policy.yml"
    text = policy.read_text()  # the cluster's policy (the shipped one with the events queue)
    assert re.search(r"^send_batch_size: \d+$", text, re.MULTILINE), "the cluster's policy sets send_batch_size"
    policy.unlink()
    policy.write_text(re.sub(r"^send_batch_size: \d+$", f"send_batch_size: {BATCH_SIZE}", text, flags=re.MULTILINE))
    dag_ids = ["scale_one", "scale_two"]
    files = [config / "programs" / f"{dag_id}.yml" for dag_id in dag_ids]
    try:
        for number, (dag_id, path) in enumerate(zip(dag_ids, files, strict=True)):
            _seed_contacts(cluster, dag_id)
            path.write_text(PROGRAM.format(label=dag_id, priority=20 + number, segment=dag_id))
        services = list(cluster.services.values())
        for dag_id in dag_ids:
            wait_for(
                f"DAG {dag_id} to be parsed", lambda d=dag_id: cluster.api.dag_loaded(d), DAG_PARSE_TIMEOUT, services
            )
            cluster.api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        yield dag_ids
    finally:
        for dag_id in dag_ids:
            with contextlib.suppress(ClusterError):
                cluster.api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": True})
        for path in files:
            path.unlink(missing_ok=True)
        policy.write_text(text)


@pytest.fixture(scope="module")
def provider_latency(cluster: Cluster) -> Iterator[dict]:
    """The sandbox at a real provider's round trip for this module; as it was afterwards."""
    control = f"{cluster.sandbox_url}/_sandbox/latency"
    before = cluster.api.http.get(control).json()
    answer = cluster.api.http.post(control, json=LATENCY)
    answer.raise_for_status()
    try:
        yield answer.json()
    finally:
        restored = cluster.api.http.post(control, json={"median_ms": before["median_ms"], "sigma": before["sigma"]})
        restored.raise_for_status()


def _worker_name(service: Service) -> str:
    """The Celery hostname the worker announced (``celery@host``), else the service's name."""
    match = WORKER_READY.search(service.text())
    return match.group(1) if match else service.name


@pytest.fixture(scope="module")
def second_worker(cluster: Cluster) -> Iterator[Service]:
    """Another ``airflow celery worker`` on the cluster's queue, with its own Celery hostname and log
    server port, ready to take tasks; stopped afterwards."""
    first = cluster.services["celery-worker"]
    env = dict(first.env or {}) | {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
    argv = [
        *first.argv[:1],
        "celery",
        "worker",
        "--concurrency",
        "2",
        "--queues",
        "default",
        "--celery-hostname",
        "scale-worker-2@%h",
    ]
    worker = Service.start("celery-worker-2", argv, env, cluster.topology.work / "logs")
    try:
        services = [*cluster.services.values(), worker]
        wait_for(
            "the second Celery worker to be ready",
            lambda: WORKER_READY.search(worker.text()),
            WORKER_READY_TIMEOUT,
            services,
        )
        yield worker
    finally:
        stop_all([worker])


def _run(cluster: Cluster, dag_id: str, services: list[Service]) -> tuple[str, str]:
    """Trigger ``dag_id`` for the as-of time and wait for it to finish: (run id, final state)."""
    run = cluster.api.call(
        "POST",
        f"/dags/{dag_id}/dagRuns",
        json={"dag_run_id": f"e2e__{dag_id}", "logical_date": E2E_AS_OF.replace(tzinfo=UTC).isoformat()},
    )
    run_id = run["dag_run_id"]

    def finished() -> str | None:
        state = cluster.api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
        return state if state in FINISHED else None

    return run_id, wait_for(f"the {dag_id} run to finish", finished, RUN_TIMEOUT, services, interval=2)


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _ran_on(ti_id: str, workers: list[Service]) -> str:
    """The Celery hostname of the worker whose log shows it executing task instance ``ti_id``."""
    marker = f"id=UUID('{ti_id}')"
    names = [
        _worker_name(worker)
        for worker in workers
        if any(marker in line for line in worker.text().splitlines() if "Executing workload in Celery" in line)
    ]
    return names[0] if len(names) == 1 else f"unknown ({len(names)} workers)"


def _sandbox_accepted(cluster: Cluster) -> Counter[int]:
    """How many times the sandbox accepted each ledger message, by message id (email and SMS)."""
    emails = cluster.api.http.get(f"{cluster.sandbox_url}/_sandbox/sendgrid/messages").json()["messages"]
    texts = cluster.api.http.get(f"{cluster.sandbox_url}/_sandbox/twilio/messages").json()["messages"]
    ids = [int(email["custom_args"][MESSAGE_ID_PARAM]) for email in emails]
    ids += [
        int(parse_qs(urlsplit(sms["status_callback"]).query)[MESSAGE_ID_PARAM][0])
        for sms in texts
        if sms.get("direction") != "inbound"
    ]
    return Counter(ids)


def _check_and_measure(cluster: Cluster, workers: list[Service], dag_id: str, run_id: str, state: str) -> Pass:
    """Assert the run sent each of its planned messages exactly once; measure its send stage."""
    tis = cluster.api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
    sends = [ti for ti in tis["task_instances"] if ti["task_id"] == "send"]
    assert state == "success", (
        f"{dag_id} {run_id}: {state}; tasks "
        f"{[(ti['task_id'], ti['map_index'], ti['state']) for ti in tis['task_instances']]}\n{cluster.logs()}"
    )
    assert sends and all(ti["state"] == "success" for ti in sends), sends
    engine = _engine(cluster)
    with engine.connect() as conn:
        ledger = [dict(row) for row in conn.execute(select(M).where(M.c.program == dag_id)).mappings()]
        events = [dict(row) for row in conn.execute(select(schema.provider_events)).mappings()]
        suppressions = [dict(row) for row in conn.execute(select(schema.suppressions)).mappings()]
        contacts = {
            row["contact_id"]: dict(row)
            for row in conn.execute(select(schema.contacts).where(schema.contacts.c.owner == dag_id)).mappings()
        }
    mine = {row["message_id"] for row in ledger}
    accepted = Counter({mid: n for mid, n in _sandbox_accepted(cluster).items() if mid in mine})
    problems = sent_twice(ledger, accepted) + lost(ledger, accepted, events, ())
    problems += inconsistent(ledger, accepted, suppressions, events, contacts)
    assert not problems, "outbox invariants broken:\n" + "\n".join(problems)
    assert {row["run_id"] for row in ledger} == {run_id}
    statuses = Counter(row["status"] for row in ledger)
    sent = [row for row in ledger if row["sent_at"] is not None]
    # Each contact is planned at most once; all but the global control group's go out, and only those.
    assert set(statuses) <= {*GONE_OUT, "held_out"} and len(ledger) <= CONTACTS_PER_RUN, statuses
    assert len(sent) >= 0.9 * CONTACTS_PER_RUN and len(sent) == sum(statuses[s] for s in GONE_OUT), statuses
    assert sorted(accepted) == sorted(row["message_id"] for row in sent)
    assert len(sends) == len({row["batch"] for row in sent}) == -(-len(sent) // BATCH_SIZE), (len(sends), len(sent))
    started = min(_when(ti["start_date"]) for ti in sends)
    ended = max(_when(ti["end_date"]) for ti in sends)
    hosts = Counter(_ran_on(ti["id"], workers) for ti in sends)
    task_seconds = sum((_when(ti["end_date"]) - _when(ti["start_date"])).total_seconds() for ti in sends) / len(sends)
    seconds = (ended - started).total_seconds()
    retries = sum(ti["try_number"] > 1 for ti in sends)
    return Pass(len(workers), dag_id, run_id, len(sent), len(sends), seconds, task_seconds, retries, hosts)


def test_the_batch_fan_out_scales_out_across_celery_workers(
    cluster: Cluster, programs: list[str], provider_latency: dict, request: pytest.FixtureRequest
):
    first = cluster.services["celery-worker"]
    one_dag, two_dag = programs
    services = list(cluster.services.values())

    run_id, state = _run(cluster, one_dag, services)
    one = _check_and_measure(cluster, [first], one_dag, run_id, state)
    assert set(one.hosts) == {_worker_name(first)}, one.hosts

    second: Service = request.getfixturevalue("second_worker")
    run_id, state = _run(cluster, two_dag, [*services, second])
    two = _check_and_measure(cluster, [first, second], two_dag, run_id, state)
    assert set(two.hosts) == {_worker_name(first), _worker_name(second)}, (
        f"the two-worker run's send tasks ran on {dict(two.hosts)}"
    )

    loadavg = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(
        f"\nscale-out, {one.batches} and {two.batches} batches of up to {BATCH_SIZE}, provider latency "
        f"{provider_latency['description']}: {one.describe()}; {two.describe()}; speed-up {two.rate / one.rate:.2f}x "
        f"(send tasks per worker: {dict(two.hosts)}; load average {' '.join(loadavg)}; {os.cpu_count()} CPUs)"
    )
