"""The outbox under a crash, for the channels beyond email and SMS: a send task of a WhatsApp, a
webhook or a sales-task program SIGKILLed mid-batch and retried after the claim lease delivers
nothing twice and leaves every ledger row accounted for (through the real SDK or HTTP client and the
provider sandbox). The email and SMS cases are in ``test_dispatch_crash``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from lifecycle.model import schema
from lifecycle.sandbox import SandboxServer
from tests.support.crash import crash_sandbox, kill_mid_batch, prepare, retry_after_lease
from tests.support.journey import treatment_contact
from tests.support.sales import use_sales_programs
from tests.support.webhook import use_webhook_program, webhook_contact
from tests.support.whatsapp import TEMPLATE_SID, TEMPLATE_TEXT, outbound, use_whatsapp_programs, whatsapp_contact

M = schema.messages
CONTACTS = 24


@pytest.fixture
def sandbox(monkeypatch):
    with crash_sandbox(monkeypatch) as server:
        yield server


def _whatsapp(tmp_path, monkeypatch, c, server: SandboxServer) -> tuple[str, Callable[[], list[Any]]]:
    use_whatsapp_programs(tmp_path, monkeypatch)
    server.approve_content(TEMPLATE_SID, TEMPLATE_TEXT)
    for i in range(CONTACTS):
        whatsapp_contact(c, first_name=f"Name{i}")
    # Each accepted message's ledger id rides on its status callback URL.
    return "chats", lambda: [
        m["status_callback"].rsplit("lifecycle_message_id=", 1)[1] for m in outbound(server).values()
    ]


def _webhook(tmp_path, monkeypatch, c, server: SandboxServer) -> tuple[str, Callable[[], list[Any]]]:
    use_webhook_program(tmp_path, monkeypatch)
    for i in range(CONTACTS):
        webhook_contact(c, first_name=f"Name{i}")
    return "signals", lambda: [d["idempotency_key"] for d in server.webhook_deliveries()]


def _sales_task(tmp_path, monkeypatch, c, server: SandboxServer) -> tuple[str, Callable[[], list[Any]]]:
    use_sales_programs(tmp_path, monkeypatch)
    for i in range(CONTACTS):
        treatment_contact(c, "calls", consent={}, industry="calls", owner=f"owner-{i}", first_name=f"Name{i}")
    return "calls", lambda: [t["idempotency_key"] for t in server.sales_tasks()]


CHANNELS = {"whatsapp": _whatsapp, "webhook": _webhook, "sales_task": _sales_task}


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_sigkill_mid_batch_then_retry_delivers_each_message_at_most_once(
    crm, db_url, sandbox, monkeypatch, tmp_path, channel
):
    engine, c = crm
    program, accepted = CHANNELS[channel](tmp_path, monkeypatch, c, sandbox)
    run_id = f"crash_{channel}"
    assert prepare(engine, program, run_id) == 1
    sandbox.add_fault("all", "slow", count=10_000, delay=0.15)
    kill_mid_batch(db_url, program, run_id, accepted)
    with engine.connect() as conn:
        mid = Counter(conn.execute(select(M.c.status).where(M.c.run_id == run_id)).scalars())
    assert mid["sending"] > 0, f"the kill should land mid-batch: {mid}"

    retry_after_lease(engine, program, run_id, monkeypatch)

    with engine.connect() as conn:
        rows = conn.execute(
            select(M.c.message_id, M.c.contact_id, M.c.status, M.c.reason, M.c.idempotency_key).where(
                M.c.run_id == run_id
            )
        ).all()
    final = Counter(r.status for r in rows)
    assert len(rows) == CONTACTS and len({r.contact_id for r in rows}) == CONTACTS
    assert set(final) <= {"sent", "unknown"}, {r.message_id: r.reason for r in rows if r.status != "sent"}
    assert final["unknown"] <= mid["sending"], (mid, final)  # only what was in flight at the kill
    assert all(r.reason for r in rows if r.status == "unknown"), "an unknown outcome says why"
    got = accepted()
    # Nothing reached the provider twice, and every message marked sent did reach it.
    assert len(got) == len(set(got)), Counter(got).most_common(3)
    if channel == "whatsapp":
        # A WhatsApp message in flight at the kill stays unknown: a content template's text is
        # Twilio's, so a lookup by recipient and body cannot match it (WhatsAppChannel).
        assert {str(r.message_id) for r in rows} >= set(got)
        assert {str(r.message_id) for r in rows if r.status == "sent"} <= set(got)
    else:
        # The receivers keep one delivery per idempotency key and count a repeated key: an unknown
        # outcome is left unknown, never posted again.
        receiver = sandbox.app.webhook if channel == "webhook" else sandbox.app.sales_tasks
        assert receiver.replays == 0
        assert {r.idempotency_key for r in rows} >= set(got)
        assert {r.idempotency_key for r in rows if r.status == "sent"} <= set(got)
