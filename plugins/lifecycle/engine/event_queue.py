"""Waking realtime programs through a message queue (the policy's ``events_queue``).

Without a queue, a realtime program's watcher (:class:`lifecycle.airflow.triggers.ProgramEventTrigger`)
looks for new trigger events every few seconds: cheap on the embedded databases, a steady query
load on a warehouse. With ``events_queue`` set, the track endpoint publishes a wake-up on the
program's channel once the events it took are committed, and the program's asset has a second
watcher, Airflow's common-messaging ``MessageQueueTrigger`` on that channel, which queues a run as
the wake-up arrives; the watermark watcher keeps looking, every ``poll_seconds``, for what no
wake-up announced (events written straight into the source, a wake-up published while no
triggerer listened: Redis pub/sub keeps nothing for absent subscribers).

The queue only ever says *when* to run. *What* a run takes is read from the events themselves (the
source and the inbox), by the run's own as-of, so a lost, repeated or reordered wake-up can delay a
run by at most ``poll_seconds`` and can never enroll a contact twice or skip one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lifecycle import config
from lifecycle.paths import config_dir

log = logging.getLogger(__name__)


def channel(queue: config.EventsQueue, program_id: str) -> str:
    """The channel a program's wake-ups are published on."""
    return f"{queue.channel_prefix}{program_id}"


def woken(programs: Mapping[str, config.Program], event_types: Iterable[str]) -> list[str]:
    """The realtime programs (ids, sorted) whose trigger events include one of ``event_types``."""
    types = set(event_types)
    return sorted(
        pid for pid, p in programs.items() if p.audience.realtime and types.intersection(p.audience.trigger_event)
    )


@dataclass(frozen=True)
class Wiring:
    """What the track endpoint needs to publish: the queue (None: no queue) and, per event type,
    the realtime programs it wakes."""

    queue: config.EventsQueue | None
    by_event: Mapping[str, tuple[str, ...]]

    def programs(self, event_types: Iterable[str]) -> list[str]:
        return sorted({pid for event_type in set(event_types) for pid in self.by_event.get(event_type, ())})


_cached: tuple[tuple, Wiring] | None = None


def _signature() -> tuple:
    """The config files' names and modification times: a change to any reloads the wiring."""
    files = [config_dir() / "policy.yml", *config.program_files()]
    return tuple((str(path), _mtime(path)) for path in files)


def _mtime(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def wiring() -> Wiring:
    """The current wiring, read again only when the policy or a program file changed."""
    global _cached
    signature = _signature()
    if _cached is not None and _cached[0] == signature:
        return _cached[1]
    queue = config.load_policy().events_queue
    by_event: dict[str, tuple[str, ...]] = {}
    if queue is not None:
        programs, _errors = config.load_all_programs()
        types = {t for p in programs.values() if p.audience.realtime for t in p.audience.trigger_event}
        by_event = {t: tuple(woken(programs, [t])) for t in sorted(types)}
    _cached = (signature, Wiring(queue, by_event))
    return _cached[1]


def publish(queue: config.EventsQueue, counts: Mapping[str, int]) -> int:
    """Publish one wake-up per program in ``counts`` (program id -> events taken for it); the number
    published. A queue that cannot be reached is logged and skipped: the watermark watcher finds
    the events at its next look."""
    if not counts:
        return 0
    from airflow.providers.redis.hooks.redis import RedisHook

    try:
        client = RedisHook(redis_conn_id=queue.conn_id).get_conn()  # type: ignore[no-untyped-call]
        for program_id, events in sorted(counts.items()):
            client.publish(channel(queue, program_id), json.dumps({"program": program_id, "events": events}))
    except Exception as exc:  # any failure of the wake-up leaves the events to the watermark watcher
        log.warning(
            "Could not publish wake-ups on the events queue (connection %s: %s); the realtime watchers "
            "find the events at their next look, within %g s",
            queue.conn_id,
            type(exc).__name__,
            queue.poll_seconds,
        )
        return 0
    return len(counts)
