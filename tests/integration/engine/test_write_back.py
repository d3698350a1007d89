"""The activity write-back over the ledger: which messages become activities, each once, and what
an endpoint that refuses or is down leaves for the next run."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from lifecycle.channels.retry import Rejected, Retryable
from lifecycle.engine.write_back import write_back
from lifecycle.model import schema
from lifecycle.model.ledger import Status
from tests.conftest import AS_OF
from tests.support.journey import earlier_messages

WITHIN = timedelta(days=7)


def _ledger(engine, rows: dict[str, tuple[str, str, timedelta]]) -> dict[str, int]:
    """One message of program ``touches`` per name: (status, channel, sent how long before AS_OF)."""
    values = []
    for name, (status, channel, ago) in rows.items():
        row = earlier_messages(name, channel, 1)[0]
        went_out = status not in (Status.SUPPRESSED, Status.HELD_OUT, Status.CAPPED, Status.FAILED)
        row |= {"program": "touches", "status": status, "idempotency_key": f"touches:{name}"}
        row |= {"sent_at": AS_OF - ago if went_out else None, "provider_message_id": f"p-{name}"}
        values.append(row)
    with engine.begin() as conn:
        conn.execute(insert(schema.messages), values)
        found = conn.execute(select(schema.messages.c.contact_id, schema.messages.c.message_id))
        return {r.contact_id: r.message_id for r in found}


class Crm:
    """A CRM activity endpoint: takes posts, or fails them as told."""

    def __init__(self, fail=None) -> None:
        self.posts: list[tuple[dict, str]] = []
        self.fail = fail

    def __call__(self, payload: str, key: str) -> str:
        if self.fail is not None:
            raise self.fail
        self.posts.append((json.loads(payload), key))
        return f"act-{key}"


def _run(engine, crm, channels=("email", "sms")) -> dict[str, int]:
    return write_back(engine, "touches", "Touches", channels, AS_OF, WITHIN, crm)


def test_only_touches_that_went_out_on_the_channels_are_posted_once_each(crm):
    engine, _c = crm
    ids = _ledger(
        engine,
        {
            "sent": (Status.SENT, "email", timedelta(hours=1)),
            "delivered": (Status.DELIVERED, "sms", timedelta(days=1)),
            "bounced": (Status.BOUNCED, "email", timedelta(days=2)),
            "old": (Status.SENT, "email", timedelta(days=8)),
            "webhook": (Status.SENT, "webhook", timedelta(hours=1)),
            "failed": (Status.FAILED, "email", timedelta(0)),
            "unknown": (Status.UNKNOWN, "email", timedelta(hours=1)),
            "suppressed": (Status.SUPPRESSED, "email", timedelta(0)),
            "held_out": (Status.HELD_OUT, "email", timedelta(0)),
            "dry_run": (Status.DRY_RUN, "email", timedelta(hours=1)),
        },
    )
    endpoint = Crm()
    assert _run(engine, endpoint) == {"posted": 3, "not_posted": 0}
    assert sorted(p["contact_id"] for p, _k in endpoint.posts) == ["bounced", "delivered", "sent"]
    assert all(key == p["message_id"] == str(ids[p["contact_id"]]) for p, key in endpoint.posts)
    assert _run(engine, endpoint) == {"posted": 0, "not_posted": 0}  # a re-run posts none again
    assert len(endpoint.posts) == 3
    with engine.connect() as conn:
        w = schema.activity_writebacks
        recorded = {r.message_id: r.activity_id for r in conn.execute(select(w.c.message_id, w.c.activity_id))}
    assert recorded == {ids[n]: f"act-{ids[n]}" for n in ("sent", "delivered", "bounced")}


@pytest.mark.parametrize(
    ("error", "not_posted"),
    [(Rejected("activity 400 Bad Request"), 2), (Retryable("activity 503", may_have_reached=True), 2)],
)
def test_a_refused_or_down_endpoint_raises_nothing_and_the_next_run_posts(crm, error, not_posted):
    engine, _c = crm
    _ledger(engine, {n: (Status.SENT, "email", timedelta(hours=1)) for n in ("a", "b")})
    assert _run(engine, Crm(fail=error)) == {"posted": 0, "not_posted": not_posted}
    endpoint = Crm()
    assert _run(engine, endpoint) == {"posted": 2, "not_posted": 0}
    assert sorted(p["contact_id"] for p, _k in endpoint.posts) == ["a", "b"]
