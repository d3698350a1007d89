"""A send task SIGKILLed mid-batch, and its retry: what the outbox crash tests share.

The child process runs one batch's send task as a worker does (the real SDKs or HTTP client, the
provider sandbox behind them); :func:`kill_mid_batch` kills it once the provider has taken a few
messages, :func:`retry_after_lease` runs the task again as Airflow's retry would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sized
from contextlib import contextmanager
from datetime import timedelta

from lifecycle.channels.providers import ProviderTransport, links_from_connection
from lifecycle.devtools.local import provider_connections
from lifecycle.engine import dispatch, pipeline
from lifecycle.sandbox import SandboxServer
from tests.conftest import AS_OF, ROOT

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


@contextmanager
def crash_sandbox(monkeypatch) -> Iterator[SandboxServer]:
    """A provider sandbox every provider connection points at (links to a closed port)."""
    with SandboxServer() as server:
        for key, value in provider_connections(server, "http://127.0.0.1:9/lifecycle", "crash-test").items():
            monkeypatch.setenv(key, value)
        yield server


def prepare(engine, program: str, run_id: str) -> int:
    """Run ``program``'s stages up to its batches at :data:`AS_OF`; the number of batches."""
    scope, programs = pipeline.load_scope(program, run_id, AS_OF)
    pipeline.evaluate(engine, scope)
    pipeline.enroll_and_exit(engine, scope)
    pipeline.plan(engine, scope)
    pipeline.suppress(engine, scope)
    pipeline.cap(engine, scope, programs)
    return len(dispatch.prepare_batches(engine, program, run_id, batch_size=1000))


def kill_mid_batch(db_url: str, program: str, run_id: str, accepted: Callable[[], Sized]) -> None:
    """Run batch 0's send task in a child process and SIGKILL it once ``accepted()`` (what the
    provider took) holds 6 messages."""
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


def retry_after_lease(engine, program: str, run_id: str, monkeypatch) -> None:
    """Send the batch again as Airflow's retry would, after the claim lease. Here the lease is one
    second, still longer than the sandbox takes to answer a request in flight at the kill."""
    monkeypatch.setattr(dispatch, "CLAIM_LEASE", timedelta(seconds=1))
    time.sleep(1.2)
    scope, _ = pipeline.load_scope(program, run_id, AS_OF)
    pipeline.send(engine, scope, 0, ProviderTransport(), links=links_from_connection())
