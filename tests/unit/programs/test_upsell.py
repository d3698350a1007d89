"""Upsell and cross-sell on hand-made customers: plan limits, heavy use and repeat purchases
enter; open tickets suppress; an offer A/B test (discount or trial); exit on expansion."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import AS_OF
from tests.support.journey import enrollments, messages, run_program, treatment_contact
from tests.support.programs import days, render_message, render_step, run_schedule, steps_for

PROGRAM = "upsell"


def _customer(crm, *, subscription: str = "active", **fields) -> str:
    cid = treatment_contact(crm, PROGRAM, **({"lifecycle_stage": "customer", "plan": "growth"} | fields))
    crm.row(
        "subscriptions",
        subscription_id=f"sub-{cid}",
        contact_id=cid,
        plan="growth",
        status=subscription,
        renews_at=AS_OF + timedelta(days=40),
        billing_status="ok",
        mrr=49.0,
    )
    return cid


def _hits_limit(crm, cid: str, limit: str = "seats", ago: timedelta = timedelta(days=2)) -> str:
    crm.event(cid, "plan_limit_reached", AS_OF - ago, limit=limit)
    return cid


def _uses_features(crm, cid: str, times: int) -> str:
    for i in range(times):
        crm.event(cid, "feature_used", AS_OF - timedelta(days=2 + 5 * i), feature="automations")
    return cid


def _buys(crm, cid: str, *ago_days: int, product: str = "Pro Bundle") -> str:
    for n in ago_days:
        crm.event(cid, "purchase", AS_OF - timedelta(days=n), order_id=f"o-{cid}-{n}", product=product, amount=149.0)
    return cid


@pytest.mark.slow
def test_limits_heavy_use_and_repeat_purchases_enter(shipped_crm):
    engine, crm = shipped_crm
    at_limit = _hits_limit(crm, _customer(crm, account_id="acct-9"))
    crm.row("accounts", account_id="acct-9", name="Cobalt Works", industry="Logistics", tier="smb")
    heavy = _uses_features(crm, _customer(crm), 5)
    repeat = _buys(crm, _customer(crm), 10, 90)
    light = _uses_features(crm, _customer(crm), 4)
    lead = _hits_limit(crm, _customer(crm, lifecycle_stage="lead"))
    lapsed_sub = _hits_limit(crm, _customer(crm, subscription="cancelled"))
    just_bought = _buys(crm, _hits_limit(crm, _customer(crm)), 1, 60)
    old_limit = _hits_limit(crm, _customer(crm), ago=timedelta(days=20))

    run_program(engine, PROGRAM, AS_OF)

    rows = {m["contact_id"]: m for m in messages(engine, PROGRAM)}
    assert {cid: (m["step"], m["status"]) for cid, m in rows.items()} == {
        at_limit: ("offer", "dry_run"),
        heavy: ("offer", "dry_run"),
        repeat: ("offer", "dry_run"),
    }
    entered = {e["contact_id"] for e in enrollments(engine, PROGRAM)}
    assert not {light, lead, lapsed_sub, just_bought, old_limit} & entered
    limit_offer = render_message(engine, rows[at_limit])
    assert limit_offer.subject.startswith("You've reached your seat limit: ")
    assert "Cobalt Works just reached the seat limit of your Growth plan." in limit_offer.text
    assert "With the Pro plan, your limits go up" in limit_offer.text
    cross_sell = render_message(engine, rows[repeat])
    assert cross_sell.subject.startswith("Goes well with your Pro Bundle: ")
    assert "often add Priority Support next" in cross_sell.text and "/add-ons?offer=" in cross_sell.html
    usage = render_message(engine, rows[heavy])
    assert usage.subject.startswith("Ada, you're outgrowing your plan: ")


@pytest.mark.slow
def test_an_open_support_ticket_suppresses_the_offer(shipped_crm):
    engine, crm = shipped_crm
    cid = _hits_limit(crm, _customer(crm))
    crm.row("tickets", ticket_id="tk-1", contact_id=cid, status="open", opened_at=AS_OF - timedelta(days=1))
    run_program(engine, PROGRAM, AS_OF)
    [offer] = messages(engine, PROGRAM)
    assert (offer["status"], offer["reason"]) == ("suppressed", "open_support_ticket")


@pytest.mark.slow
def test_offer_then_reminder_after_four_days_unless_they_expand(shipped_crm):
    engine, crm = shipped_crm
    waits = _hits_limit(crm, _customer(crm))
    buys = _hits_limit(crm, _customer(crm))
    wins_deal = _hits_limit(crm, _customer(crm))
    crm.event(buys, "purchase", AS_OF + timedelta(days=2), order_id="o-up", product="Pro plan", amount=600.0)
    crm.row(
        "opportunities",
        opportunity_id="opp-x",
        contact_id=wins_deal,
        account_id=None,
        stage="closed_won",
        amount=9_000.0,
        updated_at=AS_OF + timedelta(days=1),
    )
    schedule = run_schedule(engine, PROGRAM, days(*range(0, 6)))

    assert steps_for(schedule, waits) == {
        timedelta(days=0): [("offer", "dry_run")],
        timedelta(days=4): [("offer_reminder", "dry_run")],
    }
    states = {e["contact_id"]: (e["state"], e["exit_reason"]) for e in enrollments(engine, PROGRAM)}
    assert states == {
        waits: ("completed", "completed"),
        buys: ("exited", "converted"),
        wins_deal: ("exited", "converted"),
    }


@pytest.mark.slow
def test_the_offer_variant_is_assigned_per_enrollment_and_drives_the_copy(shipped_crm):
    engine, crm = shipped_crm
    for _ in range(12):
        _hits_limit(crm, _customer(crm))
    run_program(engine, PROGRAM, AS_OF)
    variants = {e["contact_id"]: e["variant"] for e in enrollments(engine, PROGRAM)}
    assert set(variants.values()) == {"discount", "trial"}
    for message in messages(engine, PROGRAM):
        assert message["variant"] == variants[message["contact_id"]]
        email = render_message(engine, message)
        if message["variant"] == "trial":
            assert email.subject.endswith("try the Pro plan free for 14 days") and "Start my free trial" in email.html
        else:
            assert email.subject.endswith("20% off the Pro plan for three months") and "Claim 20% off" in email.html


@pytest.mark.parametrize(
    ("plan", "target"),
    [
        ("starter", "the Growth plan"),
        ("pro", "the Enterprise plan"),
        ("enterprise", "extra capacity"),
        (None, "extra capacity"),
    ],
)
def test_the_upgrade_target_follows_the_plan(plan, target, shipped_config):
    email = render_step(
        PROGRAM, "offer_reminder", {"contact_id": "c1", "plan": plan}, trigger={"limit": "storage"}, variant="discount"
    )
    assert f"20% off {target} for your first three months" in email.text


def test_empty_fields_fall_back(shipped_config):
    email = render_step(PROGRAM, "offer", {"contact_id": "c1"}, trigger={}, variant=None)
    assert email.subject == "Hi, you're outgrowing your plan: 20% off extra capacity for three months"
    assert email.text.startswith(
        "Hi there,\n\nYour team has been using Northwind Cloud a lot lately, more than most teams on the same plan."
    )
