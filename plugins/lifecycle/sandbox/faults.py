"""Fault injection: the next N send requests to a provider fail the way real networks and APIs fail."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Literal

Target = Literal["sendgrid", "twilio", "webhook", "sales_tasks", "crm_activities", "ads"]
TARGETS: tuple[Target, ...] = ("sendgrid", "twilio", "webhook", "sales_tasks", "crm_activities", "ads")
STATUS_FAULTS = {"429": 429, "500": 500, "503": 503}
FAULT_KINDS = (*STATUS_FAULTS, "slow", "drop", "timeout", "drop_after_accept")
DEFAULT_RETRY_AFTER = 1
DEFAULT_DELAY = 2.0


@dataclass(frozen=True)
class Fault:
    """One injected fault.

    ``429``/``500``/``503`` answer with that status and the provider's error body (429 carries
    ``Retry-After: retry_after``); ``slow`` answers correctly after ``delay`` seconds; ``drop``
    reads the request and closes the connection without answering or recording; ``timeout``
    waits ``delay`` seconds and then closes; ``drop_after_accept`` processes (and records) the
    request as usual, then closes the connection instead of answering.
    """

    kind: str
    retry_after: int = DEFAULT_RETRY_AFTER
    delay: float = DEFAULT_DELAY

    @property
    def status(self) -> int | None:
        """The HTTP status this fault answers with, or None when it answers normally or not at all."""
        return STATUS_FAULTS.get(self.kind)


class FaultRequestError(ValueError):
    """A fault request that names an unknown target or kind, or a bad count."""


def parse_fault_request(payload: dict[str, Any]) -> tuple[tuple[Target, ...], Fault, int]:
    """Validate a ``POST /_sandbox/faults`` body into (targets, fault, count)."""
    target = payload.get("target", "all")
    kind = str(payload.get("kind", ""))
    if target not in (*TARGETS, "all"):
        raise FaultRequestError(f"target must be one of {', '.join((*TARGETS, 'all'))}, got {target!r}")
    if kind not in FAULT_KINDS:
        raise FaultRequestError(f"kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
    try:
        count = int(payload.get("count", 1))
        fault = Fault(
            kind,
            retry_after=int(payload.get("retry_after", DEFAULT_RETRY_AFTER)),
            delay=float(payload.get("delay", DEFAULT_DELAY)),
        )
    except (TypeError, ValueError) as error:
        raise FaultRequestError(f"count, retry_after and delay must be numbers: {error}") from None
    if count < 1 or fault.retry_after < 0 or fault.delay < 0:
        raise FaultRequestError("count must be at least 1; retry_after and delay must not be negative")
    targets: tuple[Target, ...] = TARGETS if target == "all" else (target,)
    return targets, fault, count


class FaultPlan:
    """Per-target queues of pending faults, consumed one per matching send request (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Target, deque[Fault]] = {target: deque() for target in TARGETS}

    def add(self, targets: tuple[Target, ...], fault: Fault, count: int) -> None:
        """Queue ``count`` copies of ``fault`` for each target."""
        with self._lock:
            for target in targets:
                self._pending[target].extend([fault] * count)

    def take(self, target: Target) -> Fault | None:
        """The fault the next request to ``target`` gets, if any (removing it from the plan)."""
        with self._lock:
            queue = self._pending[target]
            return queue.popleft() if queue else None

    def pending(self) -> dict[str, list[dict[str, Any]]]:
        """The faults still queued, per target."""
        with self._lock:
            return {target: [asdict(fault) for fault in queue] for target, queue in self._pending.items()}

    def clear(self) -> None:
        """Forget every pending fault."""
        with self._lock:
            for queue in self._pending.values():
                queue.clear()
