"""Provider latency in the sandbox: a lognormal round trip on provider requests, served without a
thread per request, so hundreds in flight take about one round trip."""

from __future__ import annotations

import asyncio
import base64
import math
import random
import statistics
import time
from urllib.parse import urlencode

import pytest
import requests

from lifecycle.sandbox import DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN, SandboxServer
from lifecycle.sandbox.latency import Latency


def test_samples_follow_the_median_and_tail() -> None:
    latency = Latency(150, sigma=0.4)
    rng = random.Random(3)
    samples = sorted(latency.sample(rng) for _ in range(20_000))

    assert statistics.median(samples) == pytest.approx(0.150, rel=0.03)
    assert samples[int(0.99 * len(samples))] == pytest.approx(latency.quantile(0.99), rel=0.08)
    assert latency.describe() == "median 150 ms, p99 380 ms (lognormal)"
    assert Latency().sample() == 0.0


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        Latency(-1)


async def _create_message(port: int, number: int) -> tuple[int, float]:
    """One Twilio create over its own connection, written by hand: the least client work per request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = urlencode({"To": f"+1555{number:07d}", "From": "+15017122661", "Body": "Hi"}).encode()
    auth = base64.b64encode(f"{DEFAULT_TWILIO_SID}:{DEFAULT_TWILIO_TOKEN}".encode()).decode()
    started = time.monotonic()
    writer.write(
        f"POST /2010-04-01/Accounts/{DEFAULT_TWILIO_SID}/Messages.json HTTP/1.1\r\nHost: sandbox\r\n"
        f"Authorization: Basic {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    seconds = time.monotonic() - started
    writer.close()
    return int(head.split(b" ", 2)[1]), seconds


@pytest.mark.slow
def test_four_hundred_requests_in_flight_take_about_one_round_trip() -> None:
    async def send_all(port: int) -> list[tuple[int, float]]:
        return await asyncio.gather(*(_create_message(port, number) for number in range(400)))

    with SandboxServer(latency=Latency(150, sigma=0.2)) as sandbox:
        health_started = time.monotonic()
        requests.get(f"{sandbox.url}/_sandbox/health", timeout=5)
        control_seconds = time.monotonic() - health_started
        started = time.monotonic()
        done = asyncio.run(send_all(sandbox.port))
        elapsed = time.monotonic() - started
        recorded = len(sandbox.twilio_messages())

    assert {status for status, _ in done} == {201} and recorded == 400
    # Lognormal around 150 ms: below e^(-5 sigma) x 150 ms (55 ms) one request in 3.5 million would be.
    floor = 0.150 * math.exp(-5 * 0.2)
    assert min(seconds for _, seconds in done) >= floor, "every provider request waits its latency"
    assert control_seconds < 0.1, "control requests are not delayed"
    # One thread per request, or a pool that sleeps, would take many round trips for 400 requests.
    assert elapsed < 1.5, f"400 concurrent requests at 150 ms took {elapsed:.2f} s"


def _timed_create(sandbox: SandboxServer, session: requests.Session) -> float:
    started = time.monotonic()
    response = session.post(
        f"{sandbox.url}/2010-04-01/Accounts/{DEFAULT_TWILIO_SID}/Messages.json",
        data={"To": "+15555550100", "From": "+15017122661", "Body": "Hi"},
        auth=(DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN),
        timeout=5,
    )
    assert response.status_code == 201, response.text
    return time.monotonic() - started


def test_the_latency_is_set_through_the_control_api_while_the_sandbox_runs() -> None:
    with SandboxServer() as sandbox, requests.Session() as session:
        control = f"{sandbox.url}/_sandbox/latency"
        assert session.get(control, timeout=5).json() == {"median_ms": 0.0, "sigma": 0.4, "description": "none"}
        fast = _timed_create(sandbox, session)

        answer = session.post(control, json={"median_ms": 300, "sigma": 0.1}, timeout=5).json()
        assert answer == {"median_ms": 300.0, "sigma": 0.1, "description": "median 300 ms, p99 379 ms (lognormal)"}
        assert sandbox.latency == Latency(300, 0.1)
        slow = _timed_create(sandbox, session)
        # Lognormal around 300 ms with sigma 0.1: below e^(-5 sigma) x 300 ms one request in 3.5 million.
        assert slow >= 0.3 * math.exp(-0.5) > fast

        sandbox.reset()
        assert sandbox.latency == Latency(300, 0.1), "a reset forgets records, not the latency"
        session.post(control, json={"median_ms": 0}, timeout=5).raise_for_status()
        assert _timed_create(sandbox, session) < 0.1


@pytest.mark.parametrize(
    "body", [{"median_ms": -1}, {"median_ms": "slow"}, {"median_ms": 100, "sigma": -0.1}, {"median_ms": "nan"}]
)
def test_a_bad_latency_is_refused_and_changes_nothing(body: dict) -> None:
    with SandboxServer(latency=Latency(50)) as sandbox:
        response = requests.post(f"{sandbox.url}/_sandbox/latency", json=body, timeout=5)
        assert response.status_code == 400
        assert "median_ms and sigma must be non-negative numbers" in response.json()["error"]
        assert sandbox.latency == Latency(50)
