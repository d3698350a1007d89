"""Win-back on hand-made former customers: churned 14-180 days ago enters, the offer answers the
churn reason and prior value, a subject-line A/B test, SMS for the last chance, exit on return."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import AS_OF
from tests.support.journey import enrollments, messages, run_program, treatment_contact
from tests.support.programs import (
    STOP,
    days,
    render_message,
    render_step,
    run_schedule,
    set_fields,
    steps_for,
)

PROGRAM = "winback"


def _churned(crm, churned_days_ago: int = 30, **fields) -> str:
    churned_at = AS_OF - timedelta(days=churned_days_ago)
    defaults = {
        "lifecycle_stage": "churned",
        "plan": "pro",
        "churned_at": churned_at,
        "churn_reason": "price",
        "ltv": 800.0,
        "last_active_at": churned_at,
    }
    return treatment_contact(crm, PROGRAM, **(defaults | fields))


@pytest.mark.slow
def test_customers_churned_two_weeks_to_six_months_ago_enter(shipped_crm):
    engine, crm = shipped_crm
    recent = _churned(crm, 30)
    too_fresh = _churned(crm, 7)
    long_gone = _churned(crm, 200)
    customer = _churned(crm, 30, lifecycle_stage="customer")

    run_program(engine, PROGRAM, AS_OF)

    rows = {m["contact_id"]: m for m in messages(engine, PROGRAM)}
    assert {cid: (m["step"], m["status"]) for cid, m in rows.items()} == {recent: ("offer", "dry_run")}
    assert not {too_fresh, long_gone, customer} & {e["contact_id"] for e in enrollments(engine, PROGRAM)}
    email = render_message(engine, rows[recent])
    assert "come back and get 30% off for three months, on any plan" in email.text
    assert "Claim my discount" in email.html


@pytest.mark.slow
def test_offer_reminder_and_last_chance_a_week_apart_until_they_come_back(shipped_crm):
    engine, crm = shipped_crm
    stays_gone = _churned(crm)
    buys = _churned(crm)
    resubscribes = _churned(crm)
    crm.event(buys, "purchase", AS_OF + timedelta(days=9), order_id="o-wb", product="Pro plan", amount=99.0)
    first = run_schedule(engine, PROGRAM, days(*range(0, 8)))
    set_fields(engine, "contacts", resubscribes, lifecycle_stage="customer")
    rest = run_schedule(engine, PROGRAM, days(*range(8, 16)))

    assert steps_for(first | rest, stays_gone) == {
        timedelta(days=0): [("offer", "dry_run")],
        timedelta(days=7): [("reminder", "dry_run")],
        timedelta(days=14): [("last_chance", "dry_run")],
    }
    for returner in (buys, resubscribes):
        assert steps_for(first | rest, returner) == steps_for(first, stays_gone)
    states = {e["contact_id"]: (e["state"], e["exit_reason"]) for e in enrollments(engine, PROGRAM)}
    assert states == {
        stays_gone: ("completed", "completed"),
        buys: ("exited", "converted"),
        resubscribes: ("exited", "converted"),
    }


@pytest.mark.slow
def test_last_chance_goes_by_sms_when_email_is_impossible(shipped_crm):
    engine, crm = shipped_crm
    _churned(crm, email="not-an-address", first_name="Kai", churn_reason="complexity")
    run_schedule(engine, PROGRAM, days(0, 7, 14))
    rows = {m["step"]: m for m in messages(engine, PROGRAM)}
    assert {rows[s]["reason"] for s in ("offer", "reminder")} == {"invalid_address"}
    sms = rows["last_chance"]
    assert (sms["channel"], sms["status"], sms["segments"]) == ("sms", "dry_run", 1)
    assert render_message(engine, sms).text == (
        f"Northwind Cloud: Kai, last chance to come back with free guided setup: "
        f"https://app.northwind.example/reactivate {STOP}"
    )


@pytest.mark.slow
def test_the_subject_line_is_an_a_b_test(shipped_crm):
    engine, crm = shipped_crm
    for _ in range(12):
        _churned(crm)
    run_program(engine, PROGRAM, AS_OF)
    subjects = {}
    for message in messages(engine, PROGRAM):
        subjects.setdefault(message["variant"], set()).add(render_message(engine, message).subject)
    assert subjects == {
        "A": {"Ada, come back to Northwind Cloud with 30% off for three months"},
        "B": {"Ada, a lot has changed since you left Northwind Cloud"},
    }


@pytest.mark.parametrize(
    ("reason", "ltv", "expected"),
    [
        ("price", 800.0, "come back and get 30% off for three months"),
        ("price", 9_000.0, "come back and get 40% off for six months"),
        ("fit", 800.0, "ready-made journeys, A/B testing on every message"),
        ("complexity", 800.0, "set everything up with you, free."),
        ("complexity", 9_000.0, "free, and stay with you for your first 60 days."),
        ("other", 800.0, "Come back and get a free month"),
        (None, None, "Come back and get a free month"),
        (None, 9_000.0, "Come back and get 20% off for three months"),
    ],
)
def test_the_offer_answers_the_churn_reason_and_prior_value(reason, ltv, expected, shipped_config):
    email = render_step(PROGRAM, "offer", {"contact_id": "c1", "churn_reason": reason, "ltv": ltv}, variant="A")
    assert expected in email.text and expected in email.html
    assert ("one of our most valued customers" in email.text) is bool(ltv and ltv >= 5_000)


def test_empty_fields_fall_back(shipped_config):
    email = render_step(PROGRAM, "reminder", {"contact_id": "c1"}, variant="B")
    assert email.subject == "Still thinking it over?"
    assert "Teams like yours who come back" in email.text and email.text.startswith("Hi there,")
    fit = render_step(PROGRAM, "offer", {"contact_id": "c1", "churn_reason": "fit"}, variant="A")
    assert fit.subject == "Northwind Cloud now does more of what you need"
