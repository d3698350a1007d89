"""Test sends (engine/test_copies.py): which step goes, to whom, and why nothing went."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy import select

from lifecycle.channels.base import SendResult
from lifecycle.engine import pipeline
from lifecycle.engine.test_copies import NothingSent, send_test_copies
from lifecycle.model import schema
from lifecycle.model.ledger import Status
from tests.conftest import AS_OF
from tests.support.journey import run_program

pytestmark = pytest.mark.usefixtures("test_config")
TEST_PAGE = "https://app.test/lifecycle/unsubscribe/test-copy"


class Recording:
    """A transport that accepts every copy and keeps it."""

    name = "recording"

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    def send(self, channel: str, batch: Sequence, still_claimed=None) -> list[SendResult]:
        self.sent += [(channel, m) for m in batch]
        return [SendResult(m.message_id, Status.SENT, f"p-{i}") for i, m in enumerate(batch)]


def _ledger(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(schema.messages).order_by(schema.messages.c.message_id))]


def test_the_next_step_follows_the_last_one_planned_in_the_active_enrollment(crm):
    engine, crm_rows = crm
    enrolled = crm_rows.contact(lifecycle_stage="trial")
    new = crm_rows.contact(lifecycle_stage="trial", first_name="Grace")
    scope, _programs = pipeline.load_scope("texts", "test__1", AS_OF)
    transport = Recording()
    with engine.begin() as conn:
        conn.execute(schema.contacts.update().where(schema.contacts.c.contact_id == new).values(lifecycle_stage="lead"))
    run_program(engine, "texts", AS_OF)  # plans ping for the enrolled contact only
    ledger = _ledger(engine)

    first = send_test_copies(engine, scope, enrolled, ["+14155550111"], transport, unsubscribe_url=TEST_PAGE)
    fresh = send_test_copies(engine, scope, new, ["+14155550111"], transport, unsubscribe_url=TEST_PAGE)
    every = send_test_copies(engine, scope, new, ["+14155550111"], transport, step="all", unsubscribe_url=TEST_PAGE)

    assert first.sent == {"follow_up": 1} and fresh.sent == {"ping": 1}
    assert every.sent == {"ping": 1, "follow_up": 1}
    assert all(m.message_id == 0 and m.body.startswith("[TEST] ") for _channel, m in transport.sent)
    assert _ledger(engine) == ledger


def test_steps_without_a_recipient_on_their_channel_are_reported_and_nothing_sent_fails(crm):
    engine, crm_rows = crm
    contact = crm_rows.contact(lifecycle_stage="customer")
    scope, _programs = pipeline.load_scope("promo", "test__1", AS_OF)
    transport = Recording()

    with pytest.raises(NothingSent, match="step offer is email; no email recipient given"):
        send_test_copies(engine, scope, contact, ["+14155550111"], transport, unsubscribe_url=TEST_PAGE)
    with pytest.raises(NothingSent, match="no test recipient given"):
        send_test_copies(engine, scope, contact, [], transport, unsubscribe_url=TEST_PAGE)
    assert transport.sent == []
