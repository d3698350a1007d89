"""The shared retry policy: what is retried, how long it waits, and what never repeats."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from lifecycle.channels.retry import (
    OutcomeUnknown,
    Rejected,
    Retryable,
    RetryPolicy,
    error_for_status,
    retry_after_seconds,
)

NOW = 1_800_000_000.0


class Flaky:
    """A call that fails with the given errors, then returns "ok"; counts its calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_retryable_failures_are_retried_with_the_provider_wait_honoured():
    slept: list[float] = []
    call = Flaky(
        Retryable("429", 429, may_have_reached=False, retry_after=2),
        Retryable("500", 500, may_have_reached=True),
    )
    policy = RetryPolicy(attempts=3, base_delay=0.1, max_delay=5)

    assert policy.call(call, sleep=slept.append) == "ok"
    assert call.calls == 3
    assert slept[0] == 2
    assert 0.1 <= slept[1] <= 0.2


def test_retry_after_is_capped_at_max_delay():
    slept: list[float] = []
    RetryPolicy(attempts=2, max_delay=0.5).call(
        Flaky(Retryable("429", 429, may_have_reached=False, retry_after=3600)), sleep=slept.append
    )
    assert slept == [0.5]


def test_last_retryable_failure_is_raised_when_attempts_run_out():
    call = Flaky(*[Retryable(f"503 #{n}", 503, may_have_reached=True) for n in range(5)])
    with pytest.raises(Retryable, match="503 #2"):
        RetryPolicy(attempts=3, base_delay=0).call(call, sleep=lambda _: None)
    assert call.calls == 3


@pytest.mark.parametrize("error", [Rejected("sendgrid 400 bad", 400), OutcomeUnknown("no answer")])
def test_rejections_and_unknown_outcomes_are_never_retried(error):
    call = Flaky(error)
    with pytest.raises(type(error)):
        RetryPolicy(attempts=5, base_delay=0).call(call, sleep=lambda _: None)
    assert call.calls == 1


@pytest.mark.parametrize("attempt, expected", [(0, 1.0), (1, 2.0), (2, 4.0), (6, 10.0)])
def test_backoff_doubles_up_to_max_delay(attempt, expected):
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0)
    assert policy.delay(attempt, jitter=1.0) == expected
    assert policy.delay(attempt, jitter=0.0) == expected / 2


def test_policy_needs_at_least_one_attempt():
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)


@pytest.mark.parametrize(
    "status, kind, reached",
    [
        (429, Retryable, False),
        (500, Retryable, True),
        (503, Retryable, True),
        (400, Rejected, None),
        (401, Rejected, None),
        (404, Rejected, None),
    ],
)
def test_status_codes_map_to_the_right_error(status, kind, reached):
    error = error_for_status(status, f"provider {status}", {"Retry-After": "7"})
    assert type(error) is kind
    assert error.status == status
    if kind is Retryable:
        assert error.may_have_reached is reached
        assert error.retry_after == 7


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": format_datetime(datetime.fromtimestamp(NOW + 20, UTC), usegmt=True)}, 20.0),
        ({"X-RateLimit-Reset": str(int(NOW + 42))}, 42.0),
        ({"X-RateLimit-Reset": str(int(NOW - 42))}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_headers(headers, expected):
    assert retry_after_seconds(headers, now=NOW) == expected
