"""The realtime programs' trigger, as the triggerer runs it: one long-lived coroutine that yields an
event when a sign-up arrives, nothing for other events, and carries on from the stored watermark
when the triggerer restarts it (a new instance from the same kwargs)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifecycle.airflow.triggers import ProgramEventTrigger
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate, utc_naive

QUIET = 0.6
"""Seconds without an event that count as "it did not fire"."""


@pytest.fixture
def crm(tmp_path: Path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = get_engine(url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    monkeypatch.setenv("LIFECYCLE_CRM_URL", url)
    monkeypatch.delenv("LIFECYCLE_STATE_URL", raising=False)
    return engine


def _event(engine, event_id: str, kind: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            schema.events.insert().values(
                event_id=event_id,
                contact_id="c1",
                event_type=kind,
                occurred_at=utc_naive(datetime.now(UTC)),
                properties={},
            )
        )


def _trigger() -> ProgramEventTrigger:
    classpath, kwargs = ProgramEventTrigger(program_id="welcome", event_types=["signed_up"]).serialize()
    assert classpath == "lifecycle.airflow.triggers.ProgramEventTrigger"
    return ProgramEventTrigger(**(kwargs | {"poll_interval": 0.05}))


class Running:
    """A trigger run as the triggerer runs it: its coroutine in a task, its events in a queue."""

    def __init__(self, trigger: ProgramEventTrigger) -> None:
        self.events: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.create_task(self._drain(trigger))

    async def _drain(self, trigger: ProgramEventTrigger) -> None:
        async for event in trigger.run():
            await self.events.put(event)

    async def next(self, timeout: float):
        try:
            return await asyncio.wait_for(self.events.get(), timeout)
        except TimeoutError:
            return None

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def test_yields_for_a_sign_up_not_for_other_events_and_resumes_after_a_restart(crm):
    async def scenario() -> None:
        running = Running(_trigger())
        assert await running.next(QUIET) is None  # watching from now on
        _event(crm, "e1", "page_viewed")
        assert await running.next(QUIET) is None
        _event(crm, "e2", "signed_up")
        fired = await running.next(5)
        assert fired is not None
        assert fired.payload["program"] == "welcome" and fired.payload["reason"] == "new_events"
        assert fired.payload["arrived"] == 1
        await running.stop()  # the triggerer stops

        _event(crm, "e3", "signed_up")  # while it is down
        restarted = Running(_trigger())
        fired = await restarted.next(5)
        assert fired is not None and fired.payload["arrived"] == 1
        assert await restarted.next(QUIET) is None
        await restarted.stop()

    asyncio.run(scenario())
