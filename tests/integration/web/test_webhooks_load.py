"""The SendGrid Event Webhook endpoint under a sustained burst: nothing lost, nothing twice.

The real app (``lifecycle.devtools.local.WebApp``: FastAPI under uvicorn on loopback) with a SQLite CRM
receives signed batches from a few keep-alive client threads paced to ``TARGET_RATE`` events a
second, ``LIFECYCLE_LOAD_SECONDS`` worth of events (20 s here; set 60 for the full minute). One
request in ten is sent twice, as SendGrid does when it retries. Every event must end in
``lifecycle_provider_events`` exactly once. The achieved rate is a figure, printed, not asserted:
it depends on what else the machine is doing.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import func, insert, select

from lifecycle.devtools.local import WebApp, connection_json
from lifecycle.model import schema
from tests.conftest import AS_OF
from tests.integration.web.test_webhooks import EventSigner

SECONDS = float(os.environ.get("LIFECYCLE_LOAD_SECONDS", "20"))
TARGET_RATE = 1_000
CLIENTS = 4
BATCH = 50
LEDGER = 2_000
KINDS = ("processed", "delivered", "open", "click", "bounce", "unsubscribe")


@dataclass
class Client:
    """One keep-alive client thread's tally."""

    sent: list[str] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    statuses: Counter = field(default_factory=Counter)


@pytest.fixture
def receiver(sqlite_url, monkeypatch):
    """(engine, signer, webhook URL): the web app on loopback, a ledger of sent emails, a signing key."""
    from lifecycle.model.db import get_engine, migrate

    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    rows = [
        {
            "idempotency_key": f"load:{i}",
            "program": "welcome",
            "enrollment_id": i,
            "entry": 1,
            "step": "welcome",
            "step_index": 0,
            "contact_id": f"c{i:05d}",
            "channel": "email",
            "planned_channel": "email",
            "template": "welcome/welcome",
            "status": "sent",
            "due_at": AS_OF,
            "run_id": "load",
            "planned_at": AS_OF,
        }
        for i in range(LEDGER)
    ]
    contacts = [{"contact_id": f"c{i:05d}", "email": f"c{i:05d}@example.com"} for i in range(LEDGER)]
    with engine.begin() as conn:
        conn.execute(insert(schema.contacts), contacts)
        conn.execute(insert(schema.messages), rows)
    signer = EventSigner()
    monkeypatch.setenv("LIFECYCLE_CRM_URL", sqlite_url)
    monkeypatch.setenv(
        "AIRFLOW_CONN_SENDGRID_DEFAULT",
        connection_json("generic", password="SG.load", extra={"webhook_public_key": signer.public_key}),
    )
    web = WebApp().start()
    yield engine, signer, f"{web.base_url}/webhooks/sendgrid"
    web.stop()


def _batch(client: int, sequence: itertools.count, first_message: int) -> list[dict]:
    now = int(time.time())
    events = []
    for _ in range(BATCH):
        n = next(sequence)
        message = (first_message + n) % LEDGER + 1
        events.append(
            {
                "email": f"c{message - 1:05d}@example.com",
                "timestamp": now,
                "event": KINDS[n % len(KINDS)],
                "sg_event_id": f"load-{client}-{n}",
                "sg_message_id": f"x{message}.filter.0",
                "lifecycle_message_id": str(message),
            }
        )
    return events


def _run_client(index: int, url: str, signer: EventSigner, start: float, quota: int, tally: Client) -> None:
    interval = CLIENTS * BATCH / TARGET_RATE
    sequence = itertools.count()
    with httpx.Client(timeout=30) as http:
        due = start + index * interval / CLIENTS
        while tally.requests < quota:
            time.sleep(max(0.0, due - time.monotonic()))
            events = _batch(index, sequence, index * LEDGER // CLIENTS)
            body = json.dumps(events)
            headers = signer.headers(body)
            tries = 2 if tally.requests % 10 == 9 else 1
            for _ in range(tries):
                tally.statuses[http.post(url, content=body, headers=headers).status_code] += 1
            tally.requests += 1
            tally.retries += tries - 1
            tally.sent.extend(e["sg_event_id"] for e in events)
            due += interval


@pytest.mark.timeout(4 * SECONDS + 120)
def test_a_sustained_burst_of_signed_events_loses_nothing(receiver):
    engine, signer, url = receiver
    tallies = [Client() for _ in range(CLIENTS)]
    quota = int(SECONDS * TARGET_RATE / (CLIENTS * BATCH))
    start = time.monotonic()
    threads = [
        threading.Thread(target=_run_client, args=(i, url, signer, start, quota, t), daemon=True)
        for i, t in enumerate(tallies)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(4 * SECONDS + 90)
    elapsed = time.monotonic() - start

    sent = [event_id for t in tallies for event_id in t.sent]
    statuses = sum((t.statuses for t in tallies), Counter())
    rate = len(sent) / elapsed
    print(
        f"\nwebhook load: {len(sent):,} events in {sum(t.requests for t in tallies):,} signed requests "
        f"(+{sum(t.retries for t in tallies)} repeated) over {elapsed:.1f} s = {rate:,.0f} events/s "
        f"(target {TARGET_RATE:,}/s); responses {dict(statuses)}"
    )

    assert not any(thread.is_alive() for thread in threads)
    assert set(statuses) == {200}
    events = schema.provider_events
    with engine.connect() as conn:
        recorded = Counter(
            dict(
                conn.execute(
                    select(events.c.event_id, func.count())
                    .where(events.c.provider == "sendgrid")
                    .group_by(events.c.event_id)
                ).all()
            )
        )
    assert len(sent) == len(set(sent)) == quota * CLIENTS * BATCH
    assert set(recorded) == set(sent)
    assert max(recorded.values()) == 1
