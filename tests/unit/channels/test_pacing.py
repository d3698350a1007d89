"""The rate limiter and the senders' rates: evenly spaced slots, never above the limit."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lifecycle.channels.pacing import RateLimiter, limiter_for, started
from lifecycle.channels.twilio import sender_mps


class FakeClock:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now = max(self.now, self.now + seconds)


def test_slots_are_evenly_spaced_at_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock)
    slots = []
    for _ in range(9):
        limiter.acquire(sleep=clock.sleep)
        slots.append(clock.now)

    assert slots == pytest.approx([n * 0.25 for n in range(9)])


def test_a_quiet_limiter_does_not_save_up_a_burst():
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock)
    limiter.acquire(sleep=clock.sleep)
    clock.now = 10.0
    limiter.acquire(sleep=clock.sleep)
    limiter.acquire(sleep=clock.sleep)

    assert clock.now == pytest.approx(10.5)


def test_threads_waiting_at_once_never_exceed_the_rate():
    limiter = RateLimiter(50)
    times: list[float] = []
    lock = threading.Lock()

    def take(_: int) -> None:
        limiter.acquire()
        with lock:
            times.append(time.monotonic())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(take, range(40)))

    times.sort()
    # Wake-ups only come late (a loaded machine), so the first-to-last rate can only fall.
    assert (len(times) - 1) / (times[-1] - times[0]) <= 50 * 1.02


def test_no_limit_never_waits():
    limiter = RateLimiter(None)
    for _ in range(1000):
        limiter.acquire(sleep=lambda seconds: pytest.fail("slept"))


def test_a_rate_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


def test_one_limiter_per_sender_in_a_process():
    first = limiter_for(("twilio", "AC1", "+15005550006"), 1.0)

    assert limiter_for(("twilio", "AC1", "+15005550006"), 1.0) is first
    assert limiter_for(("twilio", "AC1", "+18005550006"), 1.0) is not first
    assert limiter_for(("twilio", "AC1", "+15005550006"), 3.0).rate == 3.0


@pytest.mark.parametrize(
    ("extra", "mps"),
    [
        ({"from_number": "+14155550100"}, 1.0),
        ({"from_number": "+18005550100"}, 3.0),
        ({"from_number": "+18885550100"}, 3.0),
        ({"from_number": "24365"}, 100.0),
        ({"from_number": "+14155550100", "mps": 10}, 10.0),
        ({"messaging_service_sid": "MG0123", "from_number": "+18005550100"}, 1.0),
        ({"messaging_service_sid": "MG0123", "mps": 12}, 12.0),
    ],
)
def test_the_sender_sets_the_messages_per_second(extra, mps):
    assert sender_mps(extra) == mps


def test_started_calls_run_before_their_results_are_read():
    ran = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        results = started(pool, lambda n: (ran.set(), [n * 2])[1], [1, 2, 3])
        assert ran.wait(5)
        assert sorted(results) == [2, 4, 6]
