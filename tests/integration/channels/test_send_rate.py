"""Sending under provider latency and rate limits, through the real SDKs to the sandbox: a batch's
requests go out concurrently over kept-alive connections, and SMS leave at the sender's messages
per second, within 5% of it and never above it."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from lifecycle.channels.base import OutboundEmail, OutboundSms
from lifecycle.channels.providers import ProviderTransport
from lifecycle.channels.retry import RetryPolicy
from lifecycle.channels.sendgrid import SendGridHook
from lifecycle.channels.twilio import TwilioHook
from lifecycle.sandbox import SandboxServer
from lifecycle.sandbox.latency import Latency
from lifecycle.sandbox.wire import Request
from tests.unit.channels.test_hooks import connect_to_sandbox

pytestmark = pytest.mark.slow
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


class Arrivals:
    """When the sandbox received each provider request (before answering it)."""

    def __init__(self, sandbox: SandboxServer) -> None:
        self.times: dict[str, list[float]] = {"sms": [], "email": []}
        self._lock = threading.Lock()
        handle = sandbox.app.handle

        def timed(request: Request):
            kind = "email" if request.path.endswith("/mail/send") else "sms"
            if request.method == "POST":
                with self._lock:
                    self.times[kind].append(time.monotonic())
            return handle(request)

        sandbox.app.handle = timed  # type: ignore[method-assign]


@pytest.fixture
def sandbox(request, monkeypatch) -> Iterator[SandboxServer]:
    """The sandbox, with the latency a test's ``latency_ms`` mark names (none by default: then
    a request's arrival is the moment it left, give or take loopback jitter)."""
    mark = request.node.get_closest_marker("latency_ms")
    server = SandboxServer(latency=Latency(mark.args[0], sigma=0.3) if mark else None)
    server.arrivals = Arrivals(server)  # type: ignore[attr-defined]
    with server:
        connect_to_sandbox(monkeypatch, server, public_base_url="http://lifecycle.test/lifecycle")
        yield server


def emails(n: int) -> list[OutboundEmail]:
    return [
        OutboundEmail(i, f"k{i}", f"c{i}", f"user{i}@example.com", None, "Hi", f"<p>{i}</p>", f"{i}") for i in range(n)
    ]


@pytest.mark.latency_ms(40)
def test_a_batch_of_emails_goes_out_concurrently_over_kept_alive_connections(sandbox):
    transport = ProviderTransport(SendGridHook(retry_policy=FAST, concurrency=16))
    started = time.monotonic()
    results = list(transport.send("email", emails(160)))
    elapsed = time.monotonic() - started

    assert Counter(r.status for r in results) == {"sent": 160}
    assert len(sandbox.sendgrid_messages()) == 160
    # One at a time, 160 round trips of about 40 ms would take over 6 s.
    assert elapsed < 2.5, f"160 emails at 40 ms took {elapsed:.2f} s"


@pytest.mark.parametrize("mps", [5.0, 20.0])
def test_sms_leave_at_the_senders_rate_within_five_percent_and_never_above(sandbox, mps):
    transport = ProviderTransport(TwilioHook(retry_policy=FAST, mps=mps, concurrency=8))
    count = int(mps * 3) + 1
    batch = [OutboundSms(i, f"k{i}", f"c{i}", f"+1415555{i:04d}", f"Hello {i}") for i in range(count)]
    results = list(transport.send("sms", batch))

    assert Counter(r.status for r in results) == {"sent": count}
    times = sorted(sandbox.arrivals.times["sms"])
    rate = (len(times) - 1) / (times[-1] - times[0])
    # Slots are spaced exactly 1/mps apart when they leave (tests/unit/channels/test_pacing.py); the
    # sandbox sees them after loopback and its own scheduling, milliseconds to tens of them late on
    # a loaded machine, hence the upper bound's slack.
    assert mps * 0.95 <= rate <= mps * 1.03, f"sent at {rate:.2f}/s for {mps}/s"
    # In any second less one slot (the same slack), at most mps arrivals: no burst.
    window = 1.0 - 1.0 / mps
    busiest = max(sum(1 for t in times if start <= t < start + window) for start in times)
    assert busiest <= mps, f"{busiest} SMS within one second at {mps}/s"


def test_sendgrid_keeps_to_its_configured_request_rate(sandbox):
    transport = ProviderTransport(SendGridHook(retry_policy=FAST, requests_per_second=25, concurrency=8))
    results = list(transport.send("email", emails(51)))

    assert Counter(r.status for r in results) == {"sent": 51}
    times = sorted(sandbox.arrivals.times["email"])
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 25 * 0.95 <= rate <= 25 * 1.03


def test_a_429_storm_still_backs_off_and_sends_each_sms_once(sandbox):
    transport = ProviderTransport(TwilioHook(retry_policy=FAST, mps=50, concurrency=8))
    sandbox.add_fault("twilio", "429", count=6, retry_after=0)
    batch = [OutboundSms(i, f"k{i}", f"c{i}", f"+1415555{i:04d}", f"Hello {i}") for i in range(10)]
    results = list(transport.send("sms", batch))

    statuses = Counter(r.status for r in results)
    assert statuses["sent"] + statuses["failed"] == 10
    recorded = Counter(m["to"] for m in sandbox.twilio_messages())
    assert all(n == 1 for n in recorded.values()) and len(recorded) == statuses["sent"]
