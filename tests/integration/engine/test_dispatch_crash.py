"""The outbox under a crash: a send task SIGKILLed mid-batch and retried sends nothing twice and
leaves every ledger row accounted for — through the real SDKs and the provider sandbox."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from lifecycle.model import schema
from tests.support.crash import crash_sandbox, kill_mid_batch, prepare, retry_after_lease

pytestmark = pytest.mark.usefixtures("test_config")
M = schema.messages


@pytest.fixture
def sandbox(monkeypatch):
    with crash_sandbox(monkeypatch) as server:
        yield server


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
    assert prepare(engine, program, run_id) == 1
    sandbox.add_fault("all", "slow", count=10_000, delay=0.15)
    channel_records = sandbox.twilio_messages if program == "texts" else sandbox.sendgrid_messages
    kill_mid_batch(db_url, program, run_id, channel_records)
    with engine.connect() as conn:
        mid = Counter(conn.execute(select(M.c.status).where(M.c.run_id == run_id)).scalars())
    assert mid["sending"] > 0, f"the kill should land mid-batch: {mid}"

    retry_after_lease(engine, program, run_id, monkeypatch)

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
