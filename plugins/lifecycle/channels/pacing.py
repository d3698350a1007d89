"""Sending at a provider's pace: a rate limiter per sender, and a bounded pool whose results come
back as each request completes.

A provider's rate limit is honoured, not discovered: every attempt at a request first takes the
next slot of its sender's :class:`RateLimiter` (Twilio: the sender's messages per second; SendGrid:
the configured requests per second), so a 429 is the exception, and still backs off with its
``Retry-After``. Slots are evenly spaced, so the rate is never above the limit over any stretch
of time. One limiter serves every hook of a process that sends as the same sender
(:func:`limiter_for`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class RateLimiter:
    """At most ``rate`` acquisitions a second, evenly spaced (no bursts); ``None`` is no limit.

    :meth:`acquire` blocks until the caller's slot; slots are handed out in order under a lock and
    waited for outside it, so any number of threads can wait at once.
    """

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"a rate limit must be positive, got {rate}")
        self.rate = rate
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0.0

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Wait for the next slot."""
        if self.rate is None:
            return
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + 1.0 / self.rate
        if slot > now:
            sleep(slot - now)


_limiters: dict[tuple[str, ...], RateLimiter] = {}
_limiters_lock = threading.Lock()


def limiter_for(key: tuple[str, ...], rate: float | None) -> RateLimiter:
    """The process's limiter for one sender (``key``, e.g. the provider, account and sender), made
    at ``rate`` on first use; a later different ``rate`` for the same sender replaces it."""
    with _limiters_lock:
        limiter = _limiters.get(key)
        if limiter is None or limiter.rate != rate:
            limiter = _limiters[key] = RateLimiter(rate)
        return limiter


def started(pool: ThreadPoolExecutor, fn: Callable[[T], Iterable[R]], items: Iterable[T]) -> Iterator[R]:
    """Start ``fn(item)`` for every item on ``pool`` now; the results, as each call completes.

    The calls are queued before this returns (the caller may do other work while they run); an
    exception in a call is raised when its results are reached."""
    futures = [pool.submit(_listed, fn, item) for item in items]
    return _as_completed(futures)


def _listed(fn: Callable[[T], Iterable[R]], item: T) -> list[R]:
    return list(fn(item))


def _as_completed(futures: list[Future[list[R]]]) -> Iterator[R]:
    for future in as_completed(futures):
        yield from future.result()
