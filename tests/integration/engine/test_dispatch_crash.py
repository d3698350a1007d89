"""The outbox under a crash: a send task SIGKILLed mid-batch and retried sends nothing twice and
leaves every ledger row accounted for — through the real SDKs and the provider sandbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from lifecycle.channels.providers import ProviderTransport, links_from_connection
from lifecycle.devtools.local import provider_connections
from lifecycle.engine import dispatch, pipeline
from lifecycle.model import schema
from lifecycle.sandbox import SandboxServer
from tests.conftest import AS_OF, ROOT

pytestmark = pytest.mark.usefixtures("test_config")
M = schema.messages
CHILD = textwrap.dedent(
    """
    import sys
    from lifecycle.engine import dispatch, pipeline
    from lifecycle.channels.providers import ProviderTransport, links_from_connection
    from lifecycle.model.db import get_engine
    url, program, run_id, as_of = sys.argv[1:5]
    from datetime import datetime
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


def _prepare(engine, program: str, run_id: str) -> int:
    scope, programs = pipeline.load_scope(program, run_id, AS_OF)
    pipeline.evaluate(engine, scope)
    pipeline.enroll_and_exit(engine, scope)
    pipeline.plan(engine, scope)
    pipeline.suppress(engine, scope)
    pipeline.cap(engine, scope, programs)
    return len(dispatch.prepare_batches(engine, program, run_id, batch_size=1000))


def _kill_mid_batch(db_url: str, program: str, run_id: str, sandbox: SandboxServer, accepted) -> None:
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


@pytest.mark.parametrize(("program", "stage"), [("texts", "trial"), ("alpha", "lead")])
def test_sigkill_mid_batch_then_retry_sends_each_message_at_most_once(
    crm, db_url, sandbox, monkeypatch, program, stage
):
    engine, crm_rows = crm
    # Numbers from +14155550001: the sandbox fails a number ending in 0000 as undeliverable, which
    # reconciliation would then rightly record as ``failed``.
    for i in range(24):
        crm_rows.contact(lifecycle_stage=stage, first_name=f"Name{i}", phone=f"+1415555{i + 1:04d}")
    run_id = f"crash_{program}"
    assert _prepare(engine, program, run_id) == 1
    sandbox.add_fault("all", "slow", count=10_000, delay=0.15)
    channel_records = sandbox.twilio_messages if program == "texts" else sandbox.sendgrid_messages
    _kill_mid_batch(db_url, program, run_id, sandbox, channel_records)
    with engine.connect() as conn:
        mid = Counter(conn.execute(select(M.c.status).where(M.c.run_id == run_id)).scalars())
    assert mid["sending"] > 0, f"the kill should land mid-batch: {mid}"

    # Airflow retries after the claim lease; here the lease is shortened to one second, still
    # longer than the sandbox takes to answer a request that was in flight at the kill.
    monkeypatch.setattr(dispatch, "CLAIM_LEASE", timedelta(seconds=1))
    time.sleep(1.2)
    scope, _ = pipeline.load_scope(program, run_id, AS_OF)
    pipeline.send(engine, scope, 0, ProviderTransport(), links=links_from_connection())

    with engine.connect() as conn:
        rows = conn.execute(select(M.c.message_id, M.c.status, M.c.reason).where(M.c.run_id == run_id)).all()
    final = Counter(r.status for r in rows)
    assert len(rows) == 24 and final["sending"] == 0 and final["ready"] == 0
    assert set(final) <= {"sent", "unknown"}, {r.message_id: r.reason for r in rows if r.status != "sent"}
    assert all(r.reason for r in rows if r.status == "unknown")
    if program == "texts":
        # Twilio can be asked: every SMS is settled, none stays unknown.
        assert final == {"sent": 24}
    # Nothing reached the provider twice, and every message marked sent did reach it.
    accepted = [_message_id(m, program) for m in channel_records()]
    assert len(accepted) == len(set(accepted))
    assert {r.message_id for r in rows if r.status == "sent"} <= set(accepted)


def _message_id(record: dict, program: str) -> int:
    if program == "alpha":
        return int(record["custom_args"]["lifecycle_message_id"])
    return int(record["status_callback"].rsplit("lifecycle_message_id=", 1)[1])
