"""Retry with backoff for provider calls: which failures are worth another try, and how long to wait.

Both channel hooks translate their SDK's errors into the three exceptions below and run their
calls through :meth:`RetryPolicy.call`. The policy only retries what is safe to repeat:

- :class:`Retryable`: the provider did not act on the request (429, 5xx, the connection never
  opened). Retried with exponential backoff, honouring ``Retry-After`` up to ``max_delay``.
- :class:`OutcomeUnknown`: the request went out and no answer came back (read timeout, dropped
  connection). Never retried for a send: the message may already be on its way.
- :class:`Rejected`: the provider refused and will refuse again (4xx other than 429).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from lifecycle.model.ledger import OutcomeReason

T = TypeVar("T")


class ProviderError(Exception):
    """A provider call that did not succeed; ``reason`` is safe to store (it holds no personal data)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Rejected(ProviderError):
    """The provider refused the request and will refuse it again unchanged.

    ``field`` names the part of the request the provider objected to, when it says so.
    """

    def __init__(self, reason: str, status: int | None = None, field: str | None = None) -> None:
        super().__init__(reason, status)
        self.field = field


class Retryable(ProviderError):
    """The provider did not complete the request; the same request may succeed later.

    ``may_have_reached`` is true when the provider saw the request (a 5xx) and false when it
    certainly did not act on it (429, connection refused). ``retry_after`` is the wait the
    provider asked for, in seconds.
    """

    def __init__(
        self,
        reason: str,
        status: int | None = None,
        *,
        may_have_reached: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason, status)
        self.may_have_reached = may_have_reached
        self.retry_after = retry_after


class OutcomeUnknown(ProviderError):
    """The request was sent but no answer came back: the provider may or may not have acted."""


class ClaimLost(ProviderError):
    """Before an attempt, the message turned out to be no longer this worker's to send (another
    attempt settled or took its claim): nothing was sent, and the other attempt records it."""

    def __init__(self) -> None:
        super().__init__(OutcomeReason.CLAIM_LOST)


def error_for_status(
    status: int, reason: str, headers: Mapping[str, str] | None = None, field: str | None = None
) -> ProviderError:
    """The exception an HTTP error status calls for: 429 and 5xx are retryable, other 4xx final."""
    if status == 429:
        return Retryable(reason, status, may_have_reached=False, retry_after=retry_after_seconds(headers))
    if status >= 500:
        return Retryable(reason, status, may_have_reached=True, retry_after=retry_after_seconds(headers))
    return Rejected(reason, status, field)


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds the provider asked us to wait: ``Retry-After`` (seconds or HTTP date), else the
    ``X-RateLimit-Reset`` epoch SendGrid sends with a 429. None when neither header is usable."""
    if not headers:
        return None
    lowered = {str(key).lower(): str(value) for key, value in headers.items()}
    now = time.time() if now is None else now
    value = lowered.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                pass
    reset = lowered.get("x-ratelimit-reset")
    if reset:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``base_delay * 2**n``, at most ``max_delay`` seconds.

    A provider's ``Retry-After`` replaces the computed delay, capped at ``max_delay``.
    ``attempts`` counts the first try.
    """

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None, jitter: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        jitter = random.random() if jitter is None else jitter
        return min(self.max_delay, self.base_delay * 2.0**attempt) * (0.5 + jitter / 2)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}")

    def call(self, fn: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
        """Run ``fn``, retrying :class:`Retryable` failures; the last one is re-raised when attempts
        run out. Every other exception propagates at once."""
        failures = 0
        while True:
            try:
                return fn()
            except Retryable as exc:
                failures += 1
                if failures >= self.attempts:
                    raise
                sleep(self.delay(failures - 1, exc.retry_after))
