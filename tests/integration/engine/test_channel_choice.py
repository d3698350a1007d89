"""A step that lists channels sends each contact on the first one that reaches it and has room under
the caps, in the order its rule gives (the contact's preferred channel, the channel it last engaged
on, or the listed order), and the ledger records why; a higher-priority program's demand counts on
the channel its choice will take."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert

from lifecycle.model import schema
from lifecycle.model.ledger import Status
from tests.conftest import AS_OF
from tests.support.channel_choice import choice_contact, engaged, prefers, use_choice_programs
from tests.support.journey import messages, messages_already_sent, run_program

DAY = timedelta(days=1)


@pytest.fixture
def choosing(crm, tmp_path, monkeypatch):
    use_choice_programs(tmp_path, monkeypatch)
    return crm


def _ledger(engine, program: str) -> dict[str, tuple[str, str, str | None, str | None]]:
    return {
        m["contact_id"]: (m["channel"], m["status"], m["channel_reason"], m["reason"])
        for m in messages(engine, program)
    }


def test_preferred_channel_first_then_the_listed_order_past_what_cannot_reach(choosing):
    engine, c = choosing
    program = "by_preference"
    email = choice_contact(c, program)
    prefers(engine, email, "email")
    shouting = choice_contact(c, program)
    prefers(engine, shouting, " SMS ")
    no_whatsapp_consent = choice_contact(c, program, consent={"sms": "granted", "email": "granted"})
    prefers(engine, no_whatsapp_consent, "whatsapp")
    no_phone = choice_contact(c, program, phone=None)
    prefers(engine, no_phone, "sms")
    none = choice_contact(c, program)
    unknown = choice_contact(c, program)
    prefers(engine, unknown, "fax")
    unreachable = choice_contact(c, program, consent={})
    prefers(engine, unreachable, "sms")
    stopped = choice_contact(c, program)
    prefers(engine, stopped, "whatsapp")
    with engine.begin() as conn:
        conn.execute(
            insert(schema.suppressions).values(
                contact_id=stopped, channel="whatsapp", reason="whatsapp_stop", source="test", created_at=AS_OF - DAY
            )
        )

    run_program(engine, program, AS_OF)

    assert _ledger(engine, program) == {
        email: ("email", Status.DRY_RUN, "preferred_channel", None),
        shouting: ("sms", Status.DRY_RUN, "preferred_channel", None),
        no_whatsapp_consent: ("sms", Status.DRY_RUN, "fallback: whatsapp unreachable (no_consent)", None),
        no_phone: (
            "email",
            Status.DRY_RUN,
            "fallback: sms unreachable (missing_address), whatsapp unreachable (missing_address)",
            None,
        ),
        none: ("whatsapp", Status.DRY_RUN, "order", None),
        unknown: ("whatsapp", Status.DRY_RUN, "order", None),
        # No channel reaches it: suppressed on the step's first channel, with that channel's reason.
        unreachable: ("whatsapp", Status.SUPPRESSED, None, "no_consent"),
        stopped: ("sms", Status.DRY_RUN, "fallback: whatsapp unreachable (whatsapp_stop)", None),
    }
    assert {m["planned_channel"] for m in messages(engine, program)} == {"whatsapp"}


def test_last_engaged_channel_is_the_latest_open_click_read_or_reply(choosing):
    engine, c = choosing
    program = "by_engagement"
    opened_email = choice_contact(c, program)
    engaged(engine, opened_email, "sms", "click", AS_OF - 5 * DAY)
    engaged(engine, opened_email, "email", "open", AS_OF - 2 * DAY)
    replied_sms = choice_contact(c, program)
    engaged(engine, replied_sms, "email", "click", AS_OF - 3 * DAY)
    engaged(engine, replied_sms, "sms", "inbound_message", AS_OF - DAY)
    read_whatsapp = choice_contact(c, program)
    engaged(engine, read_whatsapp, "whatsapp", "status_read", AS_OF - DAY)
    # A STOP is no engagement, a delivery receipt neither, nor an event after the run's as-of.
    stop_only = choice_contact(c, program)
    engaged(engine, stop_only, "email", "open", AS_OF - 4 * DAY)
    engaged(engine, stop_only, "sms", "inbound_stop", AS_OF - DAY)
    delivered = choice_contact(c, program)
    engaged(engine, delivered, "email", "click", AS_OF - 4 * DAY)
    engaged(engine, delivered, "sms", "status_delivered", AS_OF - DAY)
    future = choice_contact(c, program)
    engaged(engine, future, "email", "open", AS_OF + DAY)
    never = choice_contact(c, program)
    # Engaged on email, but its email is gone since: the listed order past the first channel.
    bounced = choice_contact(c, program, email=None)
    engaged(engine, bounced, "email", "open", AS_OF - DAY)

    run_program(engine, program, AS_OF)

    assert _ledger(engine, program) == {
        opened_email: ("email", Status.DRY_RUN, "last_engaged", None),
        replied_sms: ("sms", Status.DRY_RUN, "last_engaged", None),
        read_whatsapp: ("whatsapp", Status.DRY_RUN, "last_engaged", None),
        stop_only: ("email", Status.DRY_RUN, "last_engaged", None),
        delivered: ("email", Status.DRY_RUN, "last_engaged", None),
        future: ("whatsapp", Status.DRY_RUN, "order", None),
        never: ("whatsapp", Status.DRY_RUN, "order", None),
        bounced: ("whatsapp", Status.DRY_RUN, "fallback: email unreachable (missing_address)", None),
    }


def test_the_listed_order_and_a_full_cap_moves_the_message_to_the_next_channel_with_room(choosing):
    engine, c = choosing
    program = "by_order"
    first = choice_contact(c, program)
    second = choice_contact(c, program, consent={"sms": "granted", "email": "granted"})
    # Its SMS cap (2 a week) is full: on to email, the next channel that reaches it.
    sms_full = choice_contact(c, program, consent={"sms": "granted", "email": "granted"})
    messages_already_sent(engine, sms_full, 2, channel="sms")
    # WhatsApp is uncapped in the test policy, so a full SMS cap does not touch it.
    whatsapp_open = choice_contact(c, program)
    messages_already_sent(engine, whatsapp_open, 2, channel="sms")
    # Two texts and three emails: the all-channels cap (5) is full, so every channel is: capped where it was.
    all_full = choice_contact(c, program, consent={"sms": "granted", "email": "granted"})
    messages_already_sent(engine, all_full, 2, channel="sms")
    messages_already_sent(engine, all_full, 3, channel="email")

    run_program(engine, program, AS_OF)
    run_program(engine, program, AS_OF)  # the same as-of again: nothing new, nothing moved

    no_whatsapp = "fallback: whatsapp unreachable (no_consent)"
    assert _ledger(engine, program) == {
        first: ("whatsapp", Status.DRY_RUN, "order", None),
        second: ("sms", Status.DRY_RUN, no_whatsapp, None),
        sms_full: ("email", Status.DRY_RUN, f"{no_whatsapp}, sms capped (frequency_cap_sms: 2 per 7d)", None),
        whatsapp_open: ("whatsapp", Status.DRY_RUN, "order", None),
        all_full: ("sms", Status.CAPPED, no_whatsapp, "frequency_cap_sms: 2 per 7d"),
    }


def test_a_higher_priority_choice_step_reserves_the_slot_on_the_channel_it_will_choose(choosing):
    """``by_order`` (priority 12) outranks ``by_preference`` (10): its planned message for a shared
        contact lands on SMS (no WhatsApp consent), so it takes the contact's last SMS slot first and
    ``by_preference``'s message goes by email."""
    engine, c = choosing
    shared = choice_contact(c, "by_preference", consent={"sms": "granted", "email": "granted"})
    prefers(engine, shared, "sms")
    messages_already_sent(engine, shared, 1, channel="sms")
    # by_order plans a message for the shared contact (its entry segment is by industry: give it one).
    with engine.begin() as conn:
        conn.execute(
            insert(schema.messages).values(
                idempotency_key=f"by_order:{shared}:1:hello",
                program="by_order",
                priority=12,
                enrollment_id=0,
                entry=1,
                step="hello",
                step_index=0,
                contact_id=shared,
                channel="whatsapp",
                planned_channel="whatsapp",
                template="simple/hello",
                group="treatment",
                status="planned",
                due_at=AS_OF,
                run_id="other",
                planned_at=AS_OF,
            )
        )
    run_program(engine, "by_preference", AS_OF)
    [mine] = messages(engine, "by_preference")
    # Its preferred SMS has no room left after by_order's message: on to email, the next with room.
    assert (mine["channel"], mine["status"], mine["channel_reason"]) == (
        "email",
        Status.DRY_RUN,
        "fallback: sms capped (frequency_cap_sms: 2 per 7d)",
    )
