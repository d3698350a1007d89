"""Fault injection through real runs: killed send tasks, lost database connections, provider
errors, replayed and reordered webhooks, and two send tasks racing on one batch. After every
fault the outbox invariants (tests/support/invariants.py) must hold: nothing sent twice, nothing lost,
ledger and suppressions consistent.

Everything goes through the real SDKs to the provider sandbox, on SQLite and PostgreSQL. Send
tasks run as forked processes (real processes, really SIGKILLed) so they start in milliseconds.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from lifecycle import config
from lifecycle.channels.providers import ProviderTransport, links_from_connection
from lifecycle.channels.retry import RetryPolicy
from lifecycle.channels.sendgrid import SendGridHook
from lifecycle.channels.twilio import TwilioHook
from lifecycle.devtools.local import WebApp, provider_connections
from lifecycle.engine import dispatch, pipeline
from lifecycle.messages.links import MESSAGE_ID_PARAM
from lifecycle.model import schema
from lifecycle.model.db import get_engine
from lifecycle.sandbox import DEFAULT_TWILIO_TOKEN, SandboxServer
from lifecycle.sandbox.signing import TWILIO_SIGNATURE_HEADER, twilio_signature
from tests.conftest import AS_OF
from tests.support.invariants import (
    DyingTransport,
    WorkerDied,
    assert_outbox_invariants,
    deliveries,
    post_sendgrid_events,
    stage_run,
    stale_claims,
)
from tests.support.local_crm import use_crm

pytestmark = pytest.mark.usefixtures("test_config")
M = schema.messages
FORK = multiprocessing.get_context("fork")
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)
CLIENT_TIMEOUT = 5.0
SHORT_TIMEOUT = 0.5
# A killed worker's request can still land at the sandbox until its slow answer is done; the
# retry waits out this lease (shortened from a minute) so reconciliation may safely resend SMS.
LEASE = timedelta(seconds=0.3)
STAGE_OF = {"alpha": "lead", "texts": "trial"}


def send(
    engine: Engine, run_id: str, claim_size: int = 3, timeout: float = CLIENT_TIMEOUT, mps: float | None = None
) -> dict[str, int]:
    """One send task for batch 0, as the DAG's send task runs it, with quick provider retries
    (``mps``: the SMS sender's rate, when not the connection's)."""
    transport = ProviderTransport(
        SendGridHook(retry_policy=FAST, timeout=timeout), TwilioHook(retry_policy=FAST, timeout=timeout, mps=mps)
    )
    return dispatch.send_batch(
        engine,
        run_id,
        0,
        transport,
        links=links_from_connection(),
        brand=config.load_policy().brand.model_dump(),
        claim_size=claim_size,
    )


def _send_in_child(url: str, run_id: str, start=None, claim_size: int = 3, mps: float | None = None) -> None:
    engine = get_engine(url)
    engine.dispose(close=False)
    if start is not None:
        start.wait()
    send(engine, run_id, claim_size=claim_size, mps=mps)


@pytest.fixture
def sandbox(monkeypatch) -> Iterator[SandboxServer]:
    """The provider sandbox behind the SendGrid and Twilio connections (its webhooks go nowhere)."""
    with SandboxServer() as server:
        for key, value in provider_connections(server, "http://127.0.0.1:9/lifecycle", "fault-secret").items():
            monkeypatch.setenv(key, value)
        yield server


def _contacts(crm_rows, program: str, n: int) -> list[str]:
    return [
        crm_rows.contact(lifecycle_stage=STAGE_OF[program], first_name=f"F{i}", phone=f"+1415555{i + 1:04d}")
        for i in range(n)
    ]


def _statuses(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(conn.execute(select(M.c.status)).scalars())


# --- the send task SIGKILLed at random points ---------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_send_task_sigkilled_at_random_points_then_retried(crm, db_url, sandbox, monkeypatch, seed):
    engine, crm_rows = crm
    rng = random.Random(seed)
    program = "texts" if seed % 2 else "alpha"
    _contacts(crm_rows, program, 12)
    run_id = f"kill_{seed}"
    assert stage_run(engine, program, run_id, AS_OF, batch_size=1000) == [0]
    sandbox.add_fault("all", "slow", count=10_000, delay=0.05)
    monkeypatch.setattr(dispatch, "CLAIM_LEASE", LEASE)
    for _kill in range(2):
        child = FORK.Process(target=_send_in_child, args=(str(engine.url), run_id))
        child.start()
        time.sleep(rng.uniform(0.05, 1.0))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        time.sleep(LEASE.total_seconds() + 0.2)
        assert_outbox_invariants(engine, sandbox, in_flight=stale_claims(engine))
    send(engine, run_id)

    statuses = assert_outbox_invariants(engine, sandbox)
    accepted = deliveries(sandbox)
    assert sum(statuses.values()) == 12 and set(statuses) <= {"sent", "unknown"}
    if program == "texts":
        # Twilio can be asked: every SMS is settled and sent exactly once.
        assert statuses == {"sent": 12} and sorted(accepted.values()) == [1] * 12


def test_reconciliation_never_takes_one_sms_for_another(crm, db_url, sandbox, monkeypatch):
    engine, crm_rows = crm
    # Two people sharing a phone get the very same text: Twilio's records cannot tell them apart.
    sent_first = crm_rows.contact(lifecycle_stage="trial", first_name="Sam", phone="+14155550150")
    never_sent = crm_rows.contact(lifecycle_stage="trial", first_name="Sam", phone="+14155550150")
    stage_run(engine, "texts", "shared", AS_OF, batch_size=1000)
    brand = config.load_policy().brand.model_dump()
    with pytest.raises(WorkerDied):
        dispatch.send_batch(
            engine, "shared", 0, DyingTransport(survivors=1), links=links_from_connection(), brand=brand, claim_size=2
        )
    monkeypatch.setattr(dispatch, "CLAIM_LEASE", timedelta(0))
    send(engine, "shared")

    assert assert_outbox_invariants(engine, sandbox) == {"sent": 2}
    with engine.connect() as conn:
        sids = dict(conn.execute(select(M.c.contact_id, M.c.provider_message_id)).all())
    assert sids[sent_first] != sids[never_sent]
    assert len(sandbox.twilio_messages()) == 2


def _die_mid_chunk(engine: Engine, run_id: str) -> None:
    """A send task of ``run_id`` that hands one message of its chunk to the provider and dies."""
    brand = config.load_policy().brand.model_dump()
    with pytest.raises(WorkerDied):
        dispatch.send_batch(
            engine, run_id, 0, DyingTransport(survivors=1), links=links_from_connection(), brand=brand, claim_size=3
        )


@pytest.mark.parametrize("program", ["alpha", "texts"])
def test_killed_runs_leave_nothing_sending_once_a_later_run_completes(crm, db_url, sandbox, monkeypatch, program):
    engine, crm_rows = crm
    _contacts(crm_rows, program, 9)
    # Two runs die mid-chunk for good (a killed run is never retried: the next one has a new run id),
    # the first with messages it had not even claimed; a third, later run goes to completion.
    assert stage_run(engine, program, "killed_1", AS_OF, batch_size=1000) == [0]
    _die_mid_chunk(engine, "killed_1")
    monkeypatch.setattr(dispatch, "CLAIM_LEASE", LEASE)
    time.sleep(LEASE.total_seconds() + 0.1)
    assert stage_run(engine, program, "killed_2", AS_OF + timedelta(hours=1), batch_size=1000) == [0]
    _die_mid_chunk(engine, "killed_2")
    time.sleep(LEASE.total_seconds() + 0.1)
    assert stage_run(engine, program, "completes", AS_OF + timedelta(hours=2), batch_size=1000) == [0]
    send(engine, "completes")

    statuses = assert_outbox_invariants(engine, sandbox)
    assert sum(statuses.values()) == 9 and "sending" not in statuses and "ready" not in statuses
    if program == "texts":
        # Twilio can be asked: every text the killed runs left is settled, and each went out once.
        assert statuses == {"sent": 9} and sorted(deliveries(sandbox).values()) == [1] * 9
    else:
        # SendGrid cannot be asked: what a killed run claimed is unknown, never resent; the rest went.
        assert statuses == {"sent": 3, "unknown": 6}


def test_unknown_texts_are_looked_up_again_until_settled(crm, db_url, sandbox, monkeypatch):
    engine, crm_rows = crm
    _contacts(crm_rows, "texts", 3)
    stage_run(engine, "texts", "first", AS_OF, batch_size=1000)
    _die_mid_chunk(engine, "first")
    # The retry comes within the claim lease: the two texts Twilio has not got may still be on their
    # way, so they are unknown for now.
    send(engine, "first")
    assert _statuses(engine) == {"sent": 1, "unknown": 2}
    monkeypatch.setattr(dispatch, "CLAIM_LEASE", LEASE)
    time.sleep(LEASE.total_seconds() + 0.1)
    # The next run looks again: past the lease, "not found" means never sent, so they go now.
    stage_run(engine, "texts", "next", AS_OF + timedelta(hours=1), batch_size=1000)
    send(engine, "next")

    assert assert_outbox_invariants(engine, sandbox) == {"sent": 3}
    assert sorted(deliveries(sandbox).values()) == [1] * 3


# --- the database connection lost mid-stage -------------------------------------------------------

# Where a stage loses its connection: a trigger on a statement the stage runs mid-transaction. On
# SQLite it raises; on PostgreSQL it stalls and the test terminates the backend from outside.
FAULT_POINTS = {
    "plan": ("lifecycle_enrollments", "1 = 1"),
    "cap": ("lifecycle_messages", "OLD.status = 'planned' AND NEW.status IN ('ready', 'capped')"),
    "send": ("lifecycle_messages", "OLD.status = 'sending' AND NEW.status <> 'sending'"),
}


@contextmanager
def _fault_point(engine: Engine, table: str, when: str) -> Iterator[None]:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(
                text(
                    "CREATE FUNCTION test_stall() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN PERFORM pg_sleep(60); RETURN NEW; END $$"
                )
            )
            conn.execute(
                text(
                    f"CREATE TRIGGER test_fault BEFORE UPDATE ON {table} FOR EACH ROW "
                    f"WHEN ({when}) EXECUTE FUNCTION test_stall()"
                )
            )
        else:
            conn.execute(
                text(
                    f"CREATE TRIGGER test_fault BEFORE UPDATE ON {table} WHEN {when} "
                    "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
                )
            )
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(
                text(f"DROP TRIGGER test_fault{' ON ' + table if engine.dialect.name == 'postgresql' else ''}")
            )


def _terminate_stalled(engine: Engine) -> None:
    query = text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
        deadline = time.monotonic() + 30
        while not (pids := admin.execute(query).scalars().all()):
            assert time.monotonic() < deadline, "the stage never reached its fault point"
            time.sleep(0.02)
        admin.execute(select(func.pg_terminate_backend(pids[0])))


def _lose_connection(engine: Engine, stage: str, run: Callable[[], object]) -> BaseException | None:
    """Run a stage with its connection lost at the stage's fault point; returns what it raised."""
    with _fault_point(engine, *FAULT_POINTS[stage]), ThreadPoolExecutor(1) as pool:
        future = pool.submit(run)
        if engine.dialect.name == "postgresql":
            _terminate_stalled(engine)
        return future.exception(timeout=60)


@pytest.mark.parametrize("stage", ["plan", "cap", "send"])
def test_database_connection_lost_mid_stage_then_rerun(crm, db_url, sandbox, stage):
    engine, crm_rows = crm
    _contacts(crm_rows, "texts", 6)
    scope, programs = pipeline.load_scope("texts", "dbfault", AS_OF)
    stages: dict[str, Callable[[], object]] = {
        "plan": lambda: pipeline.plan(engine, scope),
        "cap": lambda: pipeline.cap(engine, scope, programs),
        "send": lambda: send(engine, "dbfault", claim_size=2),
    }
    pipeline.evaluate(engine, scope)
    pipeline.enroll_and_exit(engine, scope)
    order = ["plan", "suppress", "cap", "prepare", "send"]
    stages |= {
        "suppress": lambda: pipeline.suppress(engine, scope),
        "prepare": lambda: dispatch.prepare_batches(engine, "texts", "dbfault", 1000),
    }
    for name in order[: order.index(stage)]:
        stages[name]()

    error = _lose_connection(engine, stage, stages[stage])
    assert isinstance(error, DBAPIError), f"the {stage} stage should have lost its connection, got {error!r}"
    if stage == "plan":
        assert _statuses(engine) == {}, "a stage that failed mid-transaction must leave nothing behind"
    if stage == "send":
        claimed = stale_claims(engine)
        assert claimed and claimed <= set(deliveries(sandbox)), "the provider took a chunk whose outcome was lost"
    for name in order[order.index(stage) :]:
        stages[name]()

    assert assert_outbox_invariants(engine, sandbox) == {"sent": 6}
    assert sorted(deliveries(sandbox).values()) == [1] * 6


# --- provider errors ------------------------------------------------------------------------------

# (fault kind, how many, fault options, expected ledger statuses and provider deliveries for 6
# messages). Requests go out concurrently, so which of them a run of faults hits is left to timing:
# six 429s (four attempts each) exhaust at most one message's retries, or none when they are spread
# over several messages; four 503s likewise. Either way each message is sent once or has a reason.
PROVIDER_FAULTS = {
    "429-storm": ("429", 6, {"retry_after": 0}, ({"failed": 1, "sent": 5}, {"sent": 6}), None),
    "500": ("500", 3, {}, {"sent": 6}, 6),
    "503-outlasting-retries": ("503", 4, {}, ({"unknown": 1, "sent": 5}, {"sent": 6}), None),
    "timeout": ("timeout", 2, {"delay": 0.1}, {"unknown": 2, "sent": 4}, 4),
    "slow": ("slow", 2, {"delay": 0.2}, {"sent": 6}, 6),
    "slow-past-client-timeout": ("slow", 2, {"delay": SHORT_TIMEOUT + 0.3}, {"unknown": 2, "sent": 4}, 6),
    "drop": ("drop", 2, {}, {"unknown": 2, "sent": 4}, 4),
    "drop-after-accept": ("drop_after_accept", 2, {}, {"unknown": 2, "sent": 4}, 6),
}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("program", ["alpha", "texts"])
@pytest.mark.parametrize("fault", list(PROVIDER_FAULTS))
def test_provider_errors_leave_every_message_sent_once_or_failed_with_a_reason(crm, sandbox, fault, program):
    engine, crm_rows = crm
    kind, count, options, expected, accepted = PROVIDER_FAULTS[fault]
    _contacts(crm_rows, program, 6)
    run_id = f"provider_{fault}"
    stage_run(engine, program, run_id, AS_OF, batch_size=1000)
    sandbox.add_fault("sendgrid" if program == "alpha" else "twilio", kind, count=count, **options)

    send(engine, run_id, timeout=SHORT_TIMEOUT)
    time.sleep(options.get("delay", 0) if kind == "slow" else 0)
    first = assert_outbox_invariants(engine, sandbox)
    assert first in (expected if isinstance(expected, tuple) else (expected,))
    send(engine, run_id, timeout=SHORT_TIMEOUT)
    assert assert_outbox_invariants(engine, sandbox) == first, "a retry must resend nothing"
    assert sorted(deliveries(sandbox).values()) == [1] * (first["sent"] if accepted is None else accepted)


# --- two send tasks racing on one batch -----------------------------------------------------------


@pytest.mark.parametrize("second", ["at_once", "mid_chunk"])
@pytest.mark.parametrize("program", ["alpha", "texts"])
def test_two_send_tasks_on_one_batch_at_once_claim_each_message_once(crm, db_url, sandbox, program, second):
    engine, crm_rows = crm
    _contacts(crm_rows, program, 16)
    run_id = f"race_{program}"
    stage_run(engine, program, run_id, AS_OF, batch_size=1000)
    # The first chunk's first request is slow, so a task joining mid-chunk finds that chunk in flight.
    sandbox.add_fault("all", "slow", count=1, delay=0.6)
    sandbox.add_fault("all", "slow", count=10_000, delay=0.02)
    start = FORK.Event()
    first, later = (FORK.Process(target=_send_in_child, args=(str(engine.url), run_id, start)) for _ in "ab")
    first.start()
    if second == "mid_chunk":
        start.set()
        _wait_for(lambda: stale_claims(engine), "the first send task never claimed a chunk")
    later.start()
    start.set()
    for worker in (first, later):
        worker.join(60)
    assert [first.exitcode, later.exitcode] == [0, 0]

    with engine.connect() as conn:
        attempts = Counter(conn.execute(select(M.c.attempts)).scalars())
    assert attempts == {1: 16}, "every message is claimed exactly once"
    # Both tasks were alive and heard every answer, so the ledger knows every outcome.
    assert assert_outbox_invariants(engine, sandbox) == {"sent": 16}
    assert sorted(deliveries(sandbox).values()) == [1] * 16


def test_a_live_send_task_slower_than_the_lease_never_shares_an_sms_with_its_retry(crm, db_url, sandbox, monkeypatch):
    """A worker still sending a long chunk of SMS when its claims pass the lease (it was taken for
    dead, say, and the task retried): the retry requeues and sends what the worker has not reached,
    and the worker, asking before every attempt, gives those up. Each SMS goes out once. The worker
    is slow the way a real one is: its sender's rate spreads the chunk over seconds, while all its
    requests wait at once."""
    engine, crm_rows = crm
    _contacts(crm_rows, "texts", 8)
    stage_run(engine, "texts", "slow_worker", AS_OF, batch_size=1000)
    monkeypatch.setattr(dispatch, "CLAIM_LEASE", LEASE)
    # 8 SMS at 3 a second, 0.3 s each: the slow task is still at it well after the retry has taken over.
    sandbox.add_fault("all", "slow", count=10_000, delay=0.3)
    slow = FORK.Process(target=_send_in_child, args=(str(engine.url), "slow_worker", None, 8, 3.0))
    slow.start()
    _wait_for(lambda: stale_claims(engine), "the slow send task never claimed its chunk")
    time.sleep(LEASE.total_seconds() + 0.1)
    retried = send(engine, "slow_worker")
    slow.join(60)
    assert slow.exitcode == 0

    assert retried["requeued"] > 0, "the retry found SMS the slow task had not reached yet"
    assert assert_outbox_invariants(engine, sandbox) == {"sent": 8}
    assert sorted(deliveries(sandbox).values()) == [1] * 8


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_claim_takes_the_next_messages_while_another_claim_holds_the_first(crm, db_url):
    engine, crm_rows = crm
    _contacts(crm_rows, "alpha", 6)
    stage_run(engine, "alpha", "skip", AS_OF, batch_size=1000)
    with engine.connect() as holder, ThreadPoolExecutor(1) as pool:
        held = (
            holder.execute(select(M.c.message_id).order_by(M.c.message_id).limit(3).with_for_update()).scalars().all()
        )
        claiming = pool.submit(dispatch.claim, engine, "skip", 0, 3)
        try:
            claimed = claiming.result(timeout=10)
        finally:
            holder.rollback()
    assert len(held) == 3 and len(claimed) == 3
    assert not {item.message_id for item in claimed} & set(held), "the locked messages are left to their claimer"


def test_a_claim_takes_one_chunk_of_the_batch_and_leaves_the_rest_ready(crm, db_url):
    engine, crm_rows = crm
    _contacts(crm_rows, "alpha", 9)
    stage_run(engine, "alpha", "chunks", AS_OF, batch_size=1000)
    # A worker that dies mid-chunk leaves only its chunk's outcomes unknown: the rest must still be ready.
    claimed = dispatch.claim(engine, "chunks", 0, 3)
    assert [item.message_id for item in claimed] == [1, 2, 3]
    assert _statuses(engine) == {"sending": 3, "ready": 6}


def _wait_for(condition: Callable[[], object], failure: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.005)


# --- duplicate and out-of-order webhooks ----------------------------------------------------------


@pytest.fixture
def webhooks(crm, db_url, monkeypatch) -> Iterator[tuple[Engine, object, SandboxServer, WebApp]]:
    """The webhook app on loopback; the sandbox posts Twilio webhooks to it and keeps SendGrid events
    for the test to post (in its own order, as often as it likes)."""
    use_crm(monkeypatch, db_url)
    web = WebApp().start()
    with SandboxServer(twilio_inbound_url=f"{web.base_url}/webhooks/twilio/inbound") as sandbox:
        for key, value in provider_connections(sandbox, web.base_url, "webhook-secret").items():
            monkeypatch.setenv(key, value)
        yield crm[0], crm[1], sandbox, web
    web.stop()


def _snapshot(engine: Engine) -> dict[str, list]:
    tables = {
        "messages": (M.c.message_id, M.c.status, M.c.reason, M.c.provider_message_id),
        "events": (schema.provider_events.c.event_pk,),
        "suppressions": (schema.suppressions.c.suppression_id,),
        "consents": (schema.consents.c.contact_id, schema.consents.c.status, schema.consents.c.captured_at),
    }
    with engine.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(select(*columns)))) for name, columns in tables.items()}


def _post_twice(post: Callable[[], httpx.Response], engine: Engine) -> list[httpx.Response]:
    """Post a webhook, then the very same request again: the replay must change nothing."""
    first = post()
    after_first = _snapshot(engine)
    second = post()
    assert first.is_success and second.is_success
    assert _snapshot(engine) == after_first
    return [first, second]


def _status_of(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(M.c.contact_id, M.c.status)).all())


def test_sendgrid_batch_replayed_and_out_of_order_moves_nothing_back(webhooks):
    engine, crm_rows, sandbox, web = webhooks
    plain = crm_rows.contact(lifecycle_stage="lead")
    reader = crm_rows.contact(lifecycle_stage="lead")
    spammer = crm_rows.contact(lifecycle_stage="lead", email="sp@spam.test")
    bouncer = crm_rows.contact(lifecycle_stage="lead", email="gone@bounce.test")
    stage_run(engine, "alpha", "hooks", AS_OF, batch_size=1000)
    send(engine, "hooks")
    (email,) = sandbox.sendgrid_messages(f"{reader}@example.com")
    sandbox.sendgrid_event("open", sg_message_id=email["sg_message_id"])
    sandbox.sendgrid_event("click", sg_message_id=email["sg_message_id"])
    # Newest first: opens and clicks before 'delivered', reports before 'processed'.
    events = [hook["payload"] for hook in reversed(sandbox.webhooks("sendgrid"))]

    first, second = _post_twice(post_sendgrid_events(sandbox, web.base_url, events), engine)
    assert (first.json()["new"], second.json()["new"]) == (len(events), 0)
    assert _status_of(engine) == {plain: "delivered", reader: "clicked", spammer: "delivered", bouncer: "bounced"}
    with engine.connect() as conn:
        listed = set(conn.execute(select(schema.suppressions.c.contact_id, schema.suppressions.c.reason)).all())
    assert listed == {(spammer, "spam_report"), (bouncer, "hard_bounce")}
    assert_outbox_invariants(engine, sandbox)


def _post_twilio(url: str, params: dict[str, str]) -> httpx.Response:
    signature = twilio_signature(DEFAULT_TWILIO_TOKEN, url, params)
    return httpx.post(url, data=params, headers={TWILIO_SIGNATURE_HEADER: signature})


def test_twilio_callbacks_and_stop_replayed_and_out_of_order_move_nothing_back(webhooks):
    engine, crm_rows, sandbox, _web = webhooks
    fine = crm_rows.contact(lifecycle_stage="trial", phone="+14155550101")
    lost_sms = crm_rows.contact(lifecycle_stage="trial", phone="+14155550000")
    stage_run(engine, "texts", "hooks", AS_OF, batch_size=1000)
    send(engine, "hooks")
    sandbox.inbound_sms("+14155550101", "STOP")
    sandbox.flush()
    assert _status_of(engine) == {fine: "delivered", lost_sms: "failed"}

    for hook in reversed(sandbox.webhooks("twilio")):
        _post_twice(lambda hook=hook: _post_twilio(hook["url"], hook["payload"]), engine)
    assert _status_of(engine) == {fine: "delivered", lost_sms: "failed"}
    with engine.connect() as conn:
        stops = conn.execute(
            select(func.count())
            .select_from(schema.consents)
            .where(schema.consents.c.contact_id == fine, schema.consents.c.status == "withdrawn")
        ).scalar_one()
    assert stops == 1
    assert_outbox_invariants(engine, sandbox)


# --- opt-outs between planning and sending --------------------------------------------------------


def test_opt_out_or_bounce_between_planning_and_sending_stops_the_message(webhooks):
    engine, crm_rows, sandbox, web = webhooks
    bouncer = crm_rows.contact(lifecycle_stage="lead", email="gone@bounce.test")
    leaver = crm_rows.contact(lifecycle_stage="lead")
    stayer = crm_rows.contact(lifecycle_stage="lead")
    texter = crm_rows.contact(lifecycle_stage="trial", phone="+14155550199")
    for program in ("beta", "alpha", "texts"):
        stage_run(engine, program, f"gap_{program}", AS_OF, batch_size=1000)
    send(engine, "gap_beta")
    (email,) = sandbox.sendgrid_messages(f"{leaver}@example.com")
    sandbox.sendgrid_event("unsubscribe", sg_message_id=email["sg_message_id"])
    assert post_sendgrid_events(
        sandbox, web.base_url, [h["payload"] for h in sandbox.webhooks("sendgrid")]
    )().is_success
    sandbox.inbound_sms("+14155550199", "STOP")
    sandbox.flush()

    # Alpha and texts were planned before the bounce, the unsubscribe and the STOP came in.
    send(engine, "gap_alpha")
    send(engine, "gap_texts")
    with engine.connect() as conn:
        outcome = {
            (r.program, r.contact_id): (r.status, r.reason)
            for r in conn.execute(
                select(M.c.program, M.c.contact_id, M.c.status, M.c.reason).where(M.c.program != "beta")
            )
        }
    assert outcome == {
        ("alpha", bouncer): ("suppressed", "hard_bounce"),
        ("alpha", leaver): ("suppressed", "unsubscribed"),
        ("alpha", stayer): ("sent", None),
        ("texts", texter): ("suppressed", "sms_stop"),
    }
    assert_outbox_invariants(engine, sandbox)


def test_an_opt_out_holds_for_every_contact_with_that_address(webhooks):
    engine, crm_rows, sandbox, web = webhooks
    older = crm_rows.contact(lifecycle_stage="lead", email="jane.doe@example.com", signed_up_ago=timedelta(days=90))
    twin = crm_rows.contact(lifecycle_stage="lead", email=" Jane.Doe@Example.com ")
    stayer = crm_rows.contact(lifecycle_stage="lead")
    for program in ("beta", "alpha"):
        stage_run(engine, program, f"twins_{program}", AS_OF, batch_size=1000)
    send(engine, "twins_beta")
    with engine.connect() as conn:
        older_message = conn.execute(
            select(M.c.message_id).where(M.c.program == "beta", M.c.contact_id == older)
        ).scalar_one()
    (email,) = (
        e
        for e in sandbox.sendgrid_messages("jane.doe@example.com")
        if e["custom_args"][MESSAGE_ID_PARAM] == str(older_message)
    )
    sandbox.sendgrid_event("unsubscribe", sg_message_id=email["sg_message_id"])
    assert post_sendgrid_events(
        sandbox, web.base_url, [h["payload"] for h in sandbox.webhooks("sendgrid")]
    )().is_success

    # The older row opted out; the twin row is the same inbox, so its message planned before the
    # opt-out is withheld when claimed.
    send(engine, "twins_alpha")
    with engine.connect() as conn:
        outcome = {
            r.contact_id: (r.status, r.reason)
            for r in conn.execute(select(M.c.contact_id, M.c.status, M.c.reason).where(M.c.program == "alpha"))
        }
    assert outcome == {
        older: ("suppressed", "unsubscribed"),
        twin: ("suppressed", "unsubscribed"),
        stayer: ("sent", None),
    }
    assert_outbox_invariants(engine, sandbox)


@pytest.mark.parametrize("withdrawn_after", [timedelta(minutes=1), timedelta(days=10)])
def test_consent_is_checked_as_it_stands_when_the_message_is_claimed(crm, db_url, sandbox, withdrawn_after):
    """A withdrawal the CRM captured a minute after the run's as-of (before the run started), or a
    re-run of an old date for a contact who withdrew since: planning saw consent, sending does not."""
    engine, crm_rows = crm
    leaver = crm_rows.contact(lifecycle_stage="lead")
    stayer = crm_rows.contact(lifecycle_stage="lead")
    stage_run(engine, "alpha", "late_withdrawal", AS_OF, batch_size=1000)
    crm_rows.consent(leaver, "email", "withdrawn", at=AS_OF + withdrawn_after)
    scope, _programs = pipeline.load_scope("alpha", "late_withdrawal", AS_OF)
    pipeline.send(engine, scope, 0, ProviderTransport(), links=links_from_connection())

    assert {contact: outcome[0] for contact, outcome in _outcomes(engine).items()} == {
        leaver: "suppressed",
        stayer: "sent",
    }
    assert _outcomes(engine)[leaver] == ("suppressed", "consent_withdrawn")
    assert [e["personalizations"] for e in sandbox.sendgrid_messages(f"{leaver}@example.com")] == []
    assert_outbox_invariants(engine, sandbox)


def _outcomes(engine: Engine) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        return {
            r.contact_id: (r.status, r.reason) for r in conn.execute(select(M.c.contact_id, M.c.status, M.c.reason))
        }


def test_sms_quiet_hours_are_decided_when_the_text_goes_out(crm, db_url, sandbox, monkeypatch):
    """A run as of noon in New York whose send task executes at 21:27 there: the text waits for
    08:00 there, and the next run sends it."""
    engine, crm_rows = crm
    texter = crm_rows.contact(lifecycle_stage="trial", timezone="America/New_York", phone="+12125550123")
    noon = datetime(2026, 11, 16, 17, 0)
    stage_run(engine, "texts", "noon", noon, batch_size=1000)
    assert _outcomes(engine) == {texter: ("ready", None)}
    monkeypatch.setattr(dispatch, "quiet_hours_clock", lambda: datetime(2026, 11, 17, 2, 27))
    scope, _programs = pipeline.load_scope("texts", "noon", noon)
    pipeline.send(engine, scope, 0, ProviderTransport(), links=links_from_connection())

    assert _outcomes(engine) == {texter: ("deferred", "quiet_hours")}
    with engine.connect() as conn:
        assert conn.execute(select(M.c.send_after)).scalar_one() == datetime(2026, 11, 17, 13, 0)
    assert sandbox.twilio_messages() == []

    monkeypatch.setattr(dispatch, "quiet_hours_clock", lambda: datetime(2026, 11, 17, 14, 0))
    morning = datetime(2026, 11, 17, 14, 0)
    for batch in stage_run(engine, "texts", "morning", morning, batch_size=1000):
        scope, _programs = pipeline.load_scope("texts", "morning", morning)
        pipeline.send(engine, scope, batch, ProviderTransport(), links=links_from_connection())
    with engine.connect() as conn:
        ping = conn.execute(select(M.c.message_id, M.c.status, M.c.send_run_id).where(M.c.step == "ping")).one()
    assert tuple(ping[1:]) == ("sent", "morning")
    assert deliveries(sandbox)[ping.message_id] == 1
    assert_outbox_invariants(engine, sandbox)
