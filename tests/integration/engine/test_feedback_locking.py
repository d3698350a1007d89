"""A webhook batch and a send task recording the same messages at once, on PostgreSQL.

A delivery can be reported before its send task wrote the outcome (the provider answers, the
sandbox posts the event, the task records a moment later). Both then update the same ledger rows
in one transaction each; taken in different orders, the rows deadlock and PostgreSQL fails one of
them — the send task, seen failing in the e2e scale-out run and sent again only by its retry.
Both lock in message id order, so one waits for the other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import insert, select, text

from lifecycle.channels.base import SendResult
from lifecycle.engine.dispatch import record_results
from lifecycle.engine.feedback import FeedbackEvent, apply_events
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate
from lifecycle.model.ledger import Status
from tests.conftest import AS_OF

pytestmark = pytest.mark.slow
M = schema.messages
WAIT = 10.0


def _waiting_for_locks(engine, count: int) -> bool | None:
    with engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return True if waiting >= count else None


def _until(check: Callable[[], bool | None]) -> None:
    deadline = time.monotonic() + WAIT
    while check() is None:
        assert time.monotonic() < deadline, "timed out waiting for a session to wait on a row lock"
        time.sleep(0.05)


def _in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_a_webhook_batch_and_a_send_task_on_the_same_messages_do_not_deadlock(postgres_url: str) -> None:
    engine = get_engine(postgres_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    row = {
        "program": "welcome",
        "enrollment_id": 1,
        "entry": 1,
        "step_index": 0,
        "contact_id": "c1",
        "channel": "email",
        "planned_channel": "email",
        "template": "simple/hello",
        "status": Status.SENDING,
        "due_at": AS_OF,
        "run_id": "r1",
        "planned_at": AS_OF,
        "claim_token": "token",
        "claimed_at": AS_OF,
    }
    with engine.begin() as conn:
        conn.execute(insert(M), [row | {"message_id": n, "idempotency_key": f"k{n}", "step": f"s{n}"} for n in (1, 2)])
    delivered = [
        FeedbackEvent(
            "sendgrid",
            f"ev{n}",
            "delivered",
            AS_OF + timedelta(minutes=1),
            "email",
            message_id=n,
            status=Status.DELIVERED,
        )
        for n in (2, 1)  # a webhook batch names the messages in any order
    ]
    results = [SendResult(n, Status.SENT, provider_message_id=f"p{n}") for n in (1, 2)]

    # A third session holds message 1, so that the send task waits for it first and the webhook
    # batch comes second: taking message 2 before waiting for 1 would close the cycle.
    with engine.connect() as blocker:
        blocker_tx = blocker.begin()
        blocker.execute(select(M.c.message_id).where(M.c.message_id == 1).with_for_update())
        send, send_errors = _in_thread(
            lambda: record_results(engine, results, simulate=False, tokens={1: "token", 2: "token"})
        )
        _until(lambda: _waiting_for_locks(engine, 1))

        def webhook() -> None:
            with engine.begin() as conn:
                apply_events(conn, delivered, AS_OF + timedelta(minutes=1))

        feedback, feedback_errors = _in_thread(webhook)
        _until(lambda: _waiting_for_locks(engine, 2))
        blocker_tx.commit()
    send.join(WAIT)
    feedback.join(WAIT)

    assert not send.is_alive() and not feedback.is_alive()
    assert send_errors == [] and feedback_errors == []
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(M.c.message_id, M.c.status)).tuples().all())
    assert statuses == {1: Status.DELIVERED, 2: Status.DELIVERED}
