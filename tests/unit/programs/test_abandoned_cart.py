"""Abandoned cart and quote follow-up on hand-made shoppers: hourly entry, the 1h / 24h / 72h
cadence, exit on purchase or acceptance, SMS fallback and re-entry for a later cart."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lifecycle.model.ledger import SkipReason
from tests.conftest import AS_OF
from tests.support.journey import enrollments, messages, run_program, treatment_contact
from tests.support.programs import STOP, render_message, render_step, run_schedule, steps_for

PROGRAM = "abandoned_cart"
HOUR = timedelta(hours=1)


def _shopper(crm, *, product: str = "Template Pack", value: float = 87.0, ago: timedelta = 0.5 * HOUR, **fields) -> str:
    cid = treatment_contact(crm, PROGRAM, **fields)
    crm.event(cid, "cart_abandoned", AS_OF - ago, cart_id=f"cart-{cid}", product=product, value=value)
    return cid


@pytest.mark.slow
def test_fresh_carts_and_quotes_enter_recovered_and_old_ones_do_not(shipped_crm):
    engine, crm = shipped_crm
    cart = _shopper(crm)
    quote = treatment_contact(crm, PROGRAM, account_id="acct-1")
    crm.event(quote, "quote_sent", AS_OF - 2 * HOUR, quote_id="q-77", product="Pro plan (annual)", value=15_000.0)
    old = _shopper(crm, ago=timedelta(days=2))
    bought = _shopper(crm, ago=5 * HOUR)
    crm.event(bought, "purchase", AS_OF - 2 * HOUR, order_id="o-1", product="Template Pack", amount=87.0)
    churned = _shopper(crm, lifecycle_stage="churned")

    run_program(engine, PROGRAM, AS_OF)
    assert {e["contact_id"] for e in enrollments(engine, PROGRAM)} == {cart, quote}
    assert not {old, bought, churned} & {e["contact_id"] for e in enrollments(engine, PROGRAM)}
    # The quote went out two hours before the run: its +1h reminder is due at once; the cart's in an hour.
    assert [(m["contact_id"], m["step"]) for m in messages(engine, PROGRAM)] == [(quote, "reminder")]
    run_program(engine, PROGRAM, AS_OF + HOUR)

    rows = {m["contact_id"]: m for m in messages(engine, PROGRAM)}
    assert {cid: (m["step"], m["status"]) for cid, m in rows.items()} == {
        cart: ("reminder", "dry_run"),
        quote: ("reminder", "dry_run"),
    }
    cart_email = render_message(engine, rows[cart])
    assert cart_email.subject == "Ada, you left Template Pack in your cart"
    assert "<strong>Template Pack</strong> ($87) in" in cart_email.html and "/cart" in cart_email.html
    quote_email = render_message(engine, rows[quote])
    assert quote_email.subject == "Your quote for Pro plan (annual) is ready when you are"
    assert "($15,000)" in quote_email.text and "/quotes/q-77" in quote_email.text


@pytest.mark.slow
def test_reminders_after_one_hour_one_day_and_three_days_until_purchase(shipped_crm):
    engine, crm = shipped_crm
    waits = _shopper(crm)
    buys = _shopper(crm)
    accepts = treatment_contact(crm, PROGRAM)
    crm.event(accepts, "quote_sent", AS_OF - HOUR, quote_id="q-9", product="Onboarding package", value=2_500.0)
    crm.event(buys, "purchase", AS_OF + 3 * HOUR, order_id="o-2", product="Template Pack", amount=87.0)
    crm.event(accepts, "quote_accepted", AS_OF + 30 * HOUR, quote_id="q-9")
    hours = [h * HOUR for h in (0, 1, 2, 3, 12, 23, 24, 25, 48, 71, 72, 73)]
    schedule = run_schedule(engine, PROGRAM, hours)

    assert steps_for(schedule, waits) == {
        HOUR: [("reminder", "dry_run")],
        24 * HOUR: [("second_reminder", "dry_run")],
        72 * HOUR: [("last_call", "dry_run")],
    }
    assert steps_for(schedule, buys) == {HOUR: [("reminder", "dry_run")]}
    # Timed from the quote (an hour before the first run), not from the run that noticed it.
    assert steps_for(schedule, accepts) == {
        0 * HOUR: [("reminder", "dry_run")],
        23 * HOUR: [("second_reminder", "dry_run")],
    }
    states = {e["contact_id"]: (e["state"], e["exit_reason"]) for e in enrollments(engine, PROGRAM)}
    assert states == {
        waits: ("completed", "completed"),
        buys: ("exited", "converted"),
        accepts: ("exited", "converted"),
    }


@pytest.mark.slow
def test_steps_are_timed_from_the_cart_not_from_the_run_that_noticed_it(shipped_crm):
    engine, crm = shipped_crm
    cid = _shopper(crm, ago=3 * HOUR)
    schedule = run_schedule(engine, PROGRAM, [h * HOUR for h in (0, 1, 20, 21, 68, 69)])
    assert steps_for(schedule, cid) == {
        0 * HOUR: [("reminder", "dry_run")],
        21 * HOUR: [("second_reminder", "dry_run")],
        69 * HOUR: [("last_call", "dry_run")],
    }
    [entry] = enrollments(engine, PROGRAM)
    assert (entry["enrolled_at"], entry["triggered_at"]) == (AS_OF, AS_OF - 3 * HOUR)


@pytest.mark.slow
def test_after_an_outage_late_reminders_are_skipped_and_the_next_goes_when_due(shipped_crm):
    engine, crm = shipped_crm
    cid = _shopper(crm)
    # Entered at AS_OF, then no run for three days.
    schedule = run_schedule(engine, PROGRAM, [h * HOUR for h in (0, 71, 72, 73)])
    assert steps_for(schedule, cid) == {
        71 * HOUR: [("reminder", "skipped"), ("second_reminder", "skipped")],
        72 * HOUR: [("last_call", "dry_run")],
    }
    assert {m["reason"] for m in messages(engine, PROGRAM) if m["status"] == "skipped"} == {SkipReason.STEP_LATE}
    [entry] = enrollments(engine, PROGRAM)
    assert (entry["state"], entry["exit_reason"]) == ("completed", "completed")


@pytest.mark.slow
def test_a_late_step_within_late_after_still_goes(shipped_crm):
    engine, crm = shipped_crm
    cid = _shopper(crm)
    # The +1h reminder is 23 hours late at the second run: within the default late_after of 24h.
    schedule = run_schedule(engine, PROGRAM, [0 * HOUR, 24 * HOUR, 25 * HOUR])
    assert steps_for(schedule, cid) == {
        24 * HOUR: [("reminder", "dry_run")],
        25 * HOUR: [("second_reminder", "dry_run")],
    }


@pytest.mark.slow
def test_second_reminder_goes_by_sms_naming_product_and_value_when_email_is_impossible(shipped_crm):
    engine, crm = shipped_crm
    cid = _shopper(crm, product="Pro Bundle", value=298.0, email=None, first_name="Sam")
    run_schedule(engine, PROGRAM, [HOUR * 0, HOUR, 24 * HOUR])
    rows = {m["step"]: m for m in messages(engine, PROGRAM) if m["contact_id"] == cid}
    assert (rows["reminder"]["status"], rows["reminder"]["reason"]) == ("suppressed", "missing_address")
    sms = rows["second_reminder"]
    assert (sms["channel"], sms["planned_channel"], sms["status"], sms["segments"]) == ("sms", "email", "dry_run", 1)
    text = render_message(engine, sms).text
    assert text == (
        "Northwind Cloud: Sam, the Pro Bundle ($298) in your cart is still saved: "
        f"https://app.northwind.example/cart {STOP}"
    )


@pytest.mark.slow
def test_a_later_cart_starts_the_journey_again_after_the_cooldown(shipped_crm):
    engine, crm = shipped_crm
    cid = _shopper(crm)
    run_schedule(engine, PROGRAM, [HOUR * 0, HOUR, 24 * HOUR, 72 * HOUR])
    crm.event(cid, "cart_abandoned", AS_OF + 100 * HOUR, cart_id="cart-2", product="Extra Storage", value=19.0)
    run_program(engine, PROGRAM, AS_OF + 101 * HOUR)
    assert [e["entry"] for e in enrollments(engine, PROGRAM)] == [1]
    crm.event(cid, "cart_abandoned", AS_OF + 150 * HOUR, cart_id="cart-3", product="Analytics Add-on", value=79.0)
    run_schedule(engine, PROGRAM, [151 * HOUR, 152 * HOUR])

    second = enrollments(engine, PROGRAM)[-1]
    assert (second["entry"], second["state"], second["trigger"]["product"]) == (2, "active", "Analytics Add-on")
    latest = messages(engine, PROGRAM)[-1]
    assert (latest["entry"], latest["step"]) == (2, "reminder")
    assert render_message(engine, latest).subject == "Ada, you left Analytics Add-on in your cart"


def test_empty_trigger_fields_fall_back(shipped_config):
    email = render_step(PROGRAM, "last_call", {"contact_id": "c1"}, trigger={})
    assert email.subject == "Last reminder about your cart"
    assert "This is the last reminder we'll send about your cart." in email.text
    assert "Complete your order: https://app.northwind.example/cart" in email.text
    sms = render_step(PROGRAM, "second_reminder", {"contact_id": "c1"}, channel="sms", trigger={"quote_id": "q 1"})
    assert sms.text == f"Northwind Cloud: Hi, your quote is ready: https://app.northwind.example/quotes/q%201 {STOP}"
