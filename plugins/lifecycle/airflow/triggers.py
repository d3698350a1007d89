"""The event trigger of realtime programs: the triggerer watches a program's trigger events.

A program with ``audience.realtime: true`` is scheduled on its cron **or** on an asset
(``lifecycle://events/<program>``) whose watcher is :class:`ProgramEventTrigger`. The triggerer runs
the trigger as one long-lived coroutine; every few seconds it polls
:class:`lifecycle.engine.watch.EventWatch` off the event loop, and yields a ``TriggerEvent`` when a
run is needed. Airflow records it as an asset event and queues the DAG: events that arrive while a
run is queued or active (the DAG has ``max_active_runs=1``) collapse into one next run.

Its kwargs are static (program, event types, poll interval, connection ids): the watermarks live in
the state database (``lifecycle_event_watch``), so a restarted triggerer carries on where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from sqlalchemy.exc import SQLAlchemyError

from lifecycle.config import ConfigError
from lifecycle.model.db import CRM_CONN_ID, STATE_CONN_ID, aurls, get_engine, source_engine, utc_naive

if TYPE_CHECKING:
    from lifecycle.engine.watch import EventWatch

log = logging.getLogger(__name__)
POLL_SECONDS = 3.0
"""How often the trigger looks for new trigger events."""
QUEUE_POLL_SECONDS = 0.5
"""How often the events queue's watcher asks its subscription for a wake-up (``events_queue``)."""
RETRY_SECONDS = 30.0
"""How long it waits after a failed look (the database or the mapping) before the next."""


class ProgramEventTrigger(BaseEventTrigger):
    """Fires when a realtime program's trigger events need a run (see :mod:`lifecycle.engine.watch`).

    :param program_id: the program (its DAG id).
    :param event_types: the program's ``audience.trigger_event`` types.
    :param poll_interval: seconds between looks.
    :param crm_conn_id: the source CRM's connection (read only).
    :param state_conn_id: the state database's connection (the watch's row, the inbox).
    :param announced: the track endpoint announces inbox events through the events queue (a second
        watcher runs the program on them), so new inbox rows alone do not fire here.
    """

    def __init__(
        self,
        *,
        program_id: str,
        event_types: Sequence[str],
        poll_interval: float = POLL_SECONDS,
        crm_conn_id: str = CRM_CONN_ID,
        state_conn_id: str = STATE_CONN_ID,
        announced: bool = False,
    ) -> None:
        super().__init__()
        self.announced = announced
        self.program_id = program_id
        self.event_types = sorted(event_types)
        self.poll_interval = poll_interval
        self.crm_conn_id = crm_conn_id
        self.state_conn_id = state_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "program_id": self.program_id,
                "event_types": self.event_types,
                "poll_interval": self.poll_interval,
                "crm_conn_id": self.crm_conn_id,
                "state_conn_id": self.state_conn_id,
                "announced": self.announced,
            },
        )

    async def _watch(self) -> EventWatch:
        crm, state = await aurls(self.crm_conn_id, self.state_conn_id)
        # Importing the engine, reading the mapping file and creating engines stay off the event loop.
        return await asyncio.to_thread(self._open, crm, state)

    def _open(self, crm: str, state: str) -> EventWatch:
        from lifecycle.config.sources import load_sources
        from lifecycle.engine.sync import same_database
        from lifecycle.engine.watch import EventWatch

        state_engine = get_engine(state)
        # One database for both: the canonical events are read where every stage reads them.
        source = state_engine if same_database(crm, state) else source_engine(crm)
        return EventWatch(
            self.program_id, self.event_types, source, state_engine, load_sources(), announced=self.announced
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        watch: EventWatch | None = None
        while True:
            try:
                if watch is None:
                    watch = await self._watch()
                poll = await asyncio.to_thread(watch.poll, utc_naive(datetime.now(UTC)))
            except (SQLAlchemyError, ConfigError, OSError) as exc:
                log.warning("%s: cannot look for trigger events (%s); trying again", self.program_id, exc)
                watch = None
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if poll.fire:
                log.info("%s: %s (%d new, %d waiting)", self.program_id, poll.reason, poll.arrived, poll.waiting)
                yield TriggerEvent({"program": self.program_id, **poll.payload()})
            await asyncio.sleep(self.poll_interval)
