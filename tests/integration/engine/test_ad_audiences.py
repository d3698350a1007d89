"""The audience sync stopped between a request the platform took and its record (the process
killed): the next sync sends that batch again, which the platform treats as a no-op, and the
audience and the state agree again; nothing else is sent twice."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from lifecycle.channels.ad_audience import MetaAudienceHook
from lifecycle.channels.retry import RetryPolicy
from lifecycle.devtools.local import connection_json
from lifecycle.engine import ad_audiences, pipeline
from lifecycle.model import schema
from lifecycle.sandbox import SandboxServer
from tests.conftest import AS_OF
from tests.support.audience import AUDIENCE, row, rows, use_audience_program
from tests.support.journey import run_program, treatment_contact


class Killed(BaseException):
    """What the process dying looks like to the code that was running: nothing after it runs."""


def test_a_sync_killed_after_a_batch_was_taken_replays_only_that_batch(crm, monkeypatch, tmp_path):
    use_audience_program(tmp_path, monkeypatch)
    engine, c = crm
    for i in range(5):
        cid = treatment_contact(c, "retarget", industry="retarget", email=f"k{i}@example.com", phone=None)
        c.consent(cid, "ads", "granted", purpose="ads")
    run_program(engine, "retarget", AS_OF)  # enrolls them (simulated sends)
    scope, _ = pipeline.load_scope("retarget", "killed", AS_OF)
    expected = rows(*(row(f"k{i}@example.com", None) for i in range(5)))

    with SandboxServer() as sandbox:
        monkeypatch.setenv(
            "AIRFLOW_CONN_ADS_DEFAULT", connection_json("http", host=sandbox.ads_url(), password=sandbox.ads_token)
        )
        hook = MetaAudienceHook(retry_policy=RetryPolicy(attempts=1))
        taken = 0

        def killed_after_second(action, names, batch):
            nonlocal taken
            hook.upload(AUDIENCE, action, names, batch)
            taken += 1
            if taken == 2:
                raise Killed

        with pytest.raises(Killed):
            ad_audiences.sync_audience(engine, scope, killed_after_second)
        assert len(sandbox.audience(AUDIENCE)) == 4  # two batches of two taken
        with engine.connect() as conn:
            recorded = conn.execute(select(schema.ad_audience_members.c.email_sha256)).scalars().all()
        assert len(recorded) == 2  # the second batch was never recorded

        done = ad_audiences.sync_audience(engine, scope, lambda a, n, b: hook.upload(AUDIENCE, a, n, b))
        assert done == {"added": 3, "removed": 0, "size": 5, "requests": 2}  # the lost batch again, then the last
        assert sandbox.audience(AUDIENCE) == expected
        assert [r["rows"] for r in sandbox.audience_requests(AUDIENCE)] == [2, 2, 2, 1]
        again = ad_audiences.sync_audience(engine, scope, lambda a, n, b: hook.upload(AUDIENCE, a, n, b))
        assert again == {"added": 0, "removed": 0, "size": 5, "requests": 0}
        assert len(sandbox.audience_requests(AUDIENCE)) == 4
