"""Renewal reminders on hand-made subscribers: 30, 7 and 1 day before the renewal date, a
billing fix (SMS fallback) when the card is expiring or failed, stale reminders skipped, exit on
renewal, and transactional consent rather than marketing rules."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert

from lifecycle.model import schema
from lifecycle.model.ledger import HeldOutReason, SkipReason, Status
from tests.conftest import AS_OF
from tests.support.journey import (
    enrollments,
    holdout_contact,
    messages,
    messages_already_sent,
    run_program,
    treatment_contact,
)
from tests.support.programs import (
    STOP,
    days,
    render_message,
    render_step,
    run_schedule,
    set_fields,
    steps_for,
)

PROGRAM = "renewal"


def _subscriber(
    crm, renews_in: timedelta, *, billing: str = "ok", status: str = "active", held_out: bool = False, **fields
) -> str:
    make = holdout_contact if held_out else treatment_contact
    cid = make(crm, PROGRAM, **({"lifecycle_stage": "customer", "plan": "growth", "mrr": 490.0} | fields))
    for channel in ("email", "sms"):
        crm.consent(cid, channel, "granted", purpose="transactional")
    crm.row(
        "subscriptions",
        subscription_id=f"sub-{cid}",
        contact_id=cid,
        plan="growth",
        status=status,
        renews_at=AS_OF + renews_in,
        billing_status=billing,
        mrr=490.0,
    )
    return cid


@pytest.mark.slow
def test_active_subscriptions_renewing_within_30_days_enter(shipped_crm):
    engine, crm = shipped_crm
    due = _subscriber(crm, timedelta(days=29, hours=12), account_id="acct-1")
    crm.row("accounts", account_id="acct-1", name="Harbor Labs", industry="Software", tier="mid")
    later = _subscriber(crm, timedelta(days=45))
    cancelled = _subscriber(crm, timedelta(days=20), status="cancelled")
    trialing = _subscriber(crm, timedelta(days=10), status="trialing")
    overdue = _subscriber(crm, timedelta(days=-1))

    run_program(engine, PROGRAM, AS_OF)

    entered = {e["contact_id"]: e for e in enrollments(engine, PROGRAM)}
    assert set(entered) == {due}
    assert not {later, cancelled, trialing, overdue} & set(entered)
    assert entered[due]["anchor_at"] == AS_OF + timedelta(days=29, hours=12)
    [notice] = messages(engine, PROGRAM)
    assert (notice["step"], notice["status"]) == ("notice", "dry_run")
    email = render_message(engine, notice)
    assert email.subject == "Your Northwind Cloud Growth plan renews soon"
    assert "for Harbor Labs renews automatically in the coming weeks, at $490 a month." in email.text


@pytest.mark.slow
def test_reminders_30_7_and_1_days_before_with_billing_fix_and_exit_on_renewal(shipped_crm):
    engine, crm = shipped_crm
    renews_in = timedelta(days=29, hours=12)
    card_ok = _subscriber(crm, renews_in)
    card_expiring = _subscriber(crm, renews_in, billing="card_expiring")
    renews_early = _subscriber(crm, renews_in)
    first = run_schedule(engine, PROGRAM, days(*range(0, 20)))
    set_fields(engine, "subscriptions", renews_early, renews_at=AS_OF + timedelta(days=395))
    rest = run_schedule(engine, PROGRAM, days(*range(20, 31)))
    schedule = first | rest

    assert steps_for(schedule, card_ok) == {
        timedelta(days=0): [("notice", "dry_run")],
        timedelta(days=16): [("billing_fix", "skipped")],
        timedelta(days=23): [("week_reminder", "dry_run")],
        timedelta(days=29): [("final_reminder", "dry_run")],
    }
    assert steps_for(schedule, card_expiring)[timedelta(days=16)] == [("billing_fix", "dry_run")]
    assert steps_for(schedule, renews_early) == {
        timedelta(days=0): [("notice", "dry_run")],
        timedelta(days=16): [("billing_fix", "skipped")],
    }
    states = {e["contact_id"]: (e["state"], e["exit_reason"]) for e in enrollments(engine, PROGRAM)}
    assert states[card_ok] == ("completed", "completed") and states[renews_early] == ("exited", "converted")


@pytest.mark.slow
def test_a_late_entry_skips_reminders_whose_moment_has_passed(shipped_crm):
    engine, crm = shipped_crm
    cid = _subscriber(crm, timedelta(days=5, hours=2))
    schedule = run_schedule(engine, PROGRAM, days(*range(0, 7)))
    # The notice is 25 days late, the billing fix not needed: the weekly reminder follows in the same run.
    assert steps_for(schedule, cid) == {
        timedelta(days=0): [("notice", "skipped"), ("billing_fix", "skipped"), ("week_reminder", "dry_run")],
        timedelta(days=5): [("final_reminder", "dry_run")],
    }
    skipped = {m["step"]: m["reason"] for m in messages(engine, PROGRAM) if m["status"] == "skipped"}
    assert skipped == {"notice": SkipReason.STEP_LATE, "billing_fix": SkipReason.STEP_CONDITION_NOT_MET}


@pytest.mark.slow
def test_the_week_reminder_goes_seven_days_before_after_skipped_steps(shipped_crm):
    engine, crm = shipped_crm
    cid = _subscriber(crm, timedelta(days=6, hours=20))
    schedule = run_schedule(engine, PROGRAM, days(*range(0, 8)))
    assert steps_for(schedule, cid) == {
        timedelta(days=0): [("notice", "skipped"), ("billing_fix", "skipped"), ("week_reminder", "dry_run")],
        timedelta(days=6): [("final_reminder", "dry_run")],
    }


@pytest.mark.slow
def test_the_final_reminder_goes_the_day_before_after_a_late_week_reminder(shipped_crm):
    engine, crm = shipped_crm
    cid = _subscriber(crm, timedelta(days=1, hours=20))
    schedule = run_schedule(engine, PROGRAM, days(0, 1, 2))
    assert steps_for(schedule, cid) == {
        timedelta(days=0): [("notice", "skipped"), ("billing_fix", "skipped"), ("week_reminder", "skipped")],
        timedelta(days=1): [("final_reminder", "dry_run")],
    }
    reasons = [m["reason"] for m in messages(engine, PROGRAM)]
    assert reasons == [SkipReason.STEP_LATE, SkipReason.STEP_CONDITION_NOT_MET, SkipReason.STEP_LATE, None]


@pytest.mark.slow
def test_billing_fix_goes_by_sms_on_transactional_consent_despite_tickets_and_marketing_opt_out(shipped_crm):
    engine, crm = shipped_crm
    cid = _subscriber(
        crm,
        timedelta(days=10),
        billing="failed",
        email=None,
        first_name="Lea",
        consent={"email": "withdrawn", "sms": "withdrawn"},
    )
    crm.row("tickets", ticket_id="tk-1", contact_id=cid, status="open", opened_at=AS_OF - timedelta(days=1))
    run_schedule(engine, PROGRAM, days(0, 1))
    rows = {m["step"]: m for m in messages(engine, PROGRAM)}
    assert (rows["notice"]["status"], rows["notice"]["reason"]) == ("suppressed", "missing_address")
    fix = rows["billing_fix"]
    assert (fix["channel"], fix["status"], fix["segments"]) == ("sms", "dry_run", 1)
    assert render_message(engine, fix).text == (
        "Northwind Cloud: Lea, your card needs updating before your plan renews: "
        f"https://app.northwind.example/settings/billing {STOP}"
    )


def test_plan_price_and_account_fall_back_when_empty(shipped_config):
    email = render_step(PROGRAM, "final_reminder", {"contact_id": "c1"})
    assert email.subject == "Your plan renews within 24 hours"
    assert email.text.startswith("Hi there,\n\nYour subscription renews within the next 24 hours.\n")
    sms = render_step(PROGRAM, "final_reminder", {"contact_id": "c1", "plan": "pro"}, channel="sms")
    assert sms.text == (
        f"Northwind Cloud: Hi, your Pro plan renews within 24 hours. Review it: "
        f"https://app.northwind.example/settings/billing {STOP}"
    )


@pytest.mark.slow
def test_the_billing_fix_reaches_the_holdout_while_the_reminders_stay_held_out(shipped_crm):
    engine, crm = shipped_crm
    held = _subscriber(crm, timedelta(days=29, hours=12), billing="failed", held_out=True)
    schedule = run_schedule(engine, PROGRAM, days(0, 16, 23))
    assert steps_for(schedule, held) == {
        timedelta(days=0): [("notice", "held_out")],
        timedelta(days=16): [("billing_fix", "dry_run")],
        timedelta(days=23): [("week_reminder", "held_out")],
    }
    reasons = {m["step"]: m["reason"] for m in messages(engine, PROGRAM)}
    assert reasons["notice"] == reasons["week_reminder"] == HeldOutReason.PROGRAM_HOLDOUT
    assert {e["group"] for e in enrollments(engine, PROGRAM)} == {"holdout"}


@pytest.mark.slow
def test_service_messages_pass_a_marketing_unsubscribe_and_the_marketing_caps(shipped_crm):
    engine, crm = shipped_crm
    unsubscribed = _subscriber(crm, timedelta(days=29, hours=12))
    with engine.begin() as conn:
        conn.execute(
            insert(schema.suppressions).values(
                contact_id=unsubscribed, channel="email", reason="unsubscribed", source="test", created_at=AS_OF
            )
        )
    at_the_cap = _subscriber(crm, timedelta(days=29, hours=12))
    messages_already_sent(engine, at_the_cap, count=5)
    no_consent_row = treatment_contact(crm, PROGRAM, lifecycle_stage="customer", consent={})
    crm.row(
        "subscriptions",
        subscription_id="sub-no-row",
        contact_id=no_consent_row,
        plan="growth",
        status="active",
        renews_at=AS_OF + timedelta(days=29, hours=12),
        billing_status="ok",
        mrr=490.0,
    )
    withdrawn = _subscriber(crm, timedelta(days=29, hours=12))
    crm.consent(withdrawn, "email", "withdrawn", at=AS_OF - timedelta(days=1), purpose="transactional")

    run_program(engine, PROGRAM, AS_OF)

    got = {m["contact_id"]: (m["status"], m["reason"]) for m in messages(engine, PROGRAM)}
    assert got == {
        unsubscribed: (Status.DRY_RUN, None),
        at_the_cap: (Status.DRY_RUN, None),
        no_consent_row: (Status.DRY_RUN, None),
        withdrawn: (Status.SUPPRESSED, "consent_withdrawn"),
    }
