"""Events from the track endpoint's inbox drive programs exactly as the CRM's events do."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from lifecycle.engine.tracking import TrackedEvent, TrackStatus, event_id_for, record
from lifecycle.model import schema
from tests.conftest import AS_OF
from tests.support.journey import enrollments, messages, run_program, treatment_contact

SIGNED_UP = AS_OF - timedelta(hours=2)


def track(engine, contact_id: str, event_type: str, at, message_id: str, **properties) -> list[TrackStatus]:
    with engine.begin() as conn:
        return record(conn, [TrackedEvent(message_id, contact_id, event_type, at, properties)], at)


def journey(engine, contact_id: str) -> tuple[list, list]:
    """The contact's welcome enrollments and messages, without their ids."""
    own = [e for e in enrollments(engine, "welcome") if e["contact_id"] == contact_id]
    sent = [m for m in messages(engine, "welcome") if m["contact_id"] == contact_id]
    drop = {"contact_id", "enrollment_id", "message_id", "idempotency_key", "claim_token", "claimed_at", "sent_at"}
    drop |= {"updated_at", "provider_message_id", "variant"}  # the A/B variant hashes the contact id
    return [{k: v for k, v in e.items() if k not in drop} for e in own], [
        {k: v for k, v in m.items() if k not in drop} for m in sent
    ]


def test_a_tracked_sign_up_enrolls_in_welcome_exactly_like_a_crm_sign_up(crm, shipped_config):
    engine, crm_rows = crm
    from_crm = treatment_contact(crm_rows, "welcome", signed_up_ago=timedelta(hours=2))
    tracked = treatment_contact(crm_rows, "welcome", created_at=SIGNED_UP, last_active_at=SIGNED_UP)
    track(engine, tracked, "signed_up", SIGNED_UP, "msg-signup-1")

    run_program(engine, "welcome", AS_OF)
    track(engine, tracked, "activated", AS_OF + timedelta(hours=20), "msg-activated-1")
    crm_rows.event(from_crm, "activated", AS_OF + timedelta(hours=20))
    run_program(engine, "welcome", AS_OF + timedelta(days=1))

    crm_journey, tracked_journey = journey(engine, from_crm), journey(engine, tracked)
    assert crm_journey == tracked_journey
    [enrollment] = tracked_journey[0]
    assert (enrollment["triggered_at"], enrollment["state"], enrollment["exit_reason"]) == (
        SIGNED_UP,
        "exited",
        "converted",
    )
    assert [m["step"] for m in tracked_journey[1]] == ["welcome"]


def test_an_event_the_crm_and_the_inbox_both_hold_counts_once(crm):
    engine, crm_rows = crm
    contact = crm_rows.contact()
    with engine.begin() as conn:
        conn.execute(
            schema.events.insert(),
            [{"event_id": "shared", "contact_id": contact, "event_type": "purchase", "occurred_at": SIGNED_UP}],
        )
        conn.execute(
            schema.tracked_events.insert(),
            [
                {
                    "event_id": "shared",
                    "message_id": "from-both",
                    "contact_id": contact,
                    "event_type": "purchase",
                    "occurred_at": SIGNED_UP,
                    "received_at": AS_OF,
                }
            ],
        )
    assert track(engine, contact, "purchase", SIGNED_UP, "only-tracked") == [TrackStatus.ACCEPTED]

    ev = schema.all_events("ev", lambda t: (t.c.contact_id == contact,))
    with engine.connect() as conn:
        ids = sorted(conn.execute(select(ev.c.event_id)).scalars())
        assert conn.execute(select(func.count()).select_from(ev)).scalar_one() == 2
    assert ids == sorted(["shared", event_id_for("only-tracked")])
