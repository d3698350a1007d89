"""The outbox under a crash, for the channels beyond email and SMS: a send task of a WhatsApp, a
webhook or a sales-task program SIGKILLed mid-batch and retried after the claim lease delivers
nothing twice and leaves every ledger row accounted for (through the real SDK or HTTP client and the
provider sandbox). The email and SMS cases are in ``test_dispatch_crash``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from lifecycle.channels.providers import ProviderTransport, links_from_connection
from lifecycle.devtools.local import provider_connections
from lifecycle.engine import dispatch, pipeline
from lifecycle.model import schema
from lifecycle.sandbox import SandboxServer
from tests.conftest import AS_OF, ROOT
from tests.support.journey import treatment_contact
from tests.support.sales import use_sales_programs
from tests.support.webhook import use_webhook_program, webhook_contact
from tests.support.whatsapp import TEMPLATE_SID, TEMPLATE_TEXT, outbound, use_whatsapp_programs, whatsapp_contact

M = schema.messages
CONTACTS = 24
CHILD = textwrap.dedent(
    """
    import sys
    from datetime import datetime
    from lifecycle.engine import dispatch, pipeline
    from lifecycle.channels.providers import ProviderTransport, links_from_connection
    from lifecycle.model.db import get_engine
    url, program, run_id, as_of = sys.argv[1:5]
    scope, _ = pipeline.load_scope(program, run_id, datetime.fromisoformat(as_of))
    dispatch.send_batch(get_engine(url), run_id, 0, ProviderTransport(), links=links_from_connection(),
                        brand=scope.policy.brand.model_dump(), claim_size=4)
    """
)


@pytest.fixture
def sandbox(monkeypatch):
    with SandboxServer() as server:
        for key, value in provider_connections(server, "http://127.0.0.1:9/lifecycle", "crash-test").items():
            monkeypatch.setenv(key, value)
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
    scope, programs = pipeline.load_scope(program, run_id, AS_OF)
    pipeline.evaluate(engine, scope)
    pipeline.enroll_and_exit(engine, scope)
    pipeline.plan(engine, scope)
    pipeline.suppress(engine, scope)
    pipeline.cap(engine, scope, programs)
    assert len(dispatch.prepare_batches(engine, program, run_id, batch_size=1000)) == 1
    sandbox.add_fault("all", "slow", count=10_000, delay=0.15)

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, db_url, program, run_id, AS_OF.isoformat()],
        env=os.environ | {"PYTHONPATH": str(ROOT / "plugins")},
    )
    deadline = time.monotonic() + 60
    while len(accepted()) < 6:
        assert child.poll() is None, "the send task finished before it could be killed"
        assert time.monotonic() < deadline, "the send task never got going"
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with engine.connect() as conn:
        mid = Counter(conn.execute(select(M.c.status).where(M.c.run_id == run_id)).scalars())
    assert mid["sending"] > 0, f"the kill should land mid-batch: {mid}"

    # Airflow retries after the claim lease; here it is one second, longer than the sandbox takes
    # to answer a request that was in flight at the kill.
    monkeypatch.setattr(dispatch, "CLAIM_LEASE", timedelta(seconds=1))
    time.sleep(1.2)
    scope, _ = pipeline.load_scope(program, run_id, AS_OF)
    pipeline.send(engine, scope, 0, ProviderTransport(), links=links_from_connection())

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
