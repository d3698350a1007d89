"""Reactivation on hand-made customers: dormant for 30 days enters, consent is honoured (SMS when
email is withdrawn), three steps over twelve days, exit on any return to activity."""

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

PROGRAM = "reactivation"


def _customer(crm, idle_days: int, **fields) -> str:
    last_seen = AS_OF - timedelta(days=idle_days)
    cid = treatment_contact(
        crm, PROGRAM, **({"lifecycle_stage": "customer", "plan": "pro", "last_active_at": last_seen} | fields)
    )
    crm.event(cid, "feature_used", last_seen, feature="api")
    return cid


@pytest.mark.slow
def test_customers_idle_for_a_month_enter_and_hear_what_is_new(shipped_crm):
    engine, crm = shipped_crm
    dormant = _customer(crm, 45)
    active = _customer(crm, 10)
    lapsed = _customer(crm, 400)
    churned = _customer(crm, 45, lifecycle_stage="churned")
    lead = _customer(crm, 45, lifecycle_stage="lead")

    run_program(engine, PROGRAM, AS_OF)

    rows = {m["contact_id"]: m for m in messages(engine, PROGRAM)}
    assert {cid: (m["step"], m["status"]) for cid, m in rows.items()} == {dormant: ("whats_new", "dry_run")}
    assert not {active, lapsed, churned, lead} & {e["contact_id"] for e in enrollments(engine, PROGRAM)}
    email = render_message(engine, rows[dormant])
    assert email.subject == "Ada, here's what's new in Northwind Cloud since your last visit"
    assert "last time you were working with the API" in email.text
    assert "included in your Pro plan" in email.html


@pytest.mark.slow
def test_three_steps_over_twelve_days_and_exit_on_return(shipped_crm):
    engine, crm = shipped_crm
    stays_away = _customer(crm, 40)
    uses_a_feature = _customer(crm, 40)
    logs_in = _customer(crm, 40)
    crm.event(uses_a_feature, "feature_used", AS_OF + timedelta(days=2), feature="reports")
    first = run_schedule(engine, PROGRAM, days(0, 1, 2))
    set_fields(engine, "contacts", logs_in, last_active_at=AS_OF + timedelta(days=2, hours=3))
    rest = run_schedule(engine, PROGRAM, days(*range(3, 14)))

    assert steps_for(first | rest, stays_away) == {
        timedelta(days=0): [("whats_new", "dry_run")],
        timedelta(days=5): [("quick_win", "dry_run")],
        timedelta(days=12): [("check_in", "dry_run")],
    }
    for returner in (uses_a_feature, logs_in):
        assert steps_for(first | rest, returner) == {timedelta(days=0): [("whats_new", "dry_run")]}
    states = {e["contact_id"]: (e["state"], e["exit_reason"]) for e in enrollments(engine, PROGRAM)}
    assert states == {
        stays_away: ("completed", "completed"),
        uses_a_feature: ("exited", "converted"),
        logs_in: ("exited", "converted"),
    }


@pytest.mark.slow
def test_withdrawn_email_consent_is_honoured_and_the_quick_win_goes_by_sms(shipped_crm):
    engine, crm = shipped_crm
    _customer(crm, 50, consent={"email": "withdrawn", "sms": "granted"}, first_name="Noor")
    run_schedule(engine, PROGRAM, days(0, 5))
    rows = {m["step"]: m for m in messages(engine, PROGRAM)}
    assert (rows["whats_new"]["status"], rows["whats_new"]["reason"]) == ("suppressed", "consent_withdrawn")
    assert (rows["quick_win"]["channel"], rows["quick_win"]["status"], rows["quick_win"]["segments"]) == (
        "sms",
        "dry_run",
        1,
    )
    assert render_message(engine, rows["quick_win"]).text == (
        "Northwind Cloud: Noor, a 5-minute win: schedule your weekly report at "
        f"https://app.northwind.example/reports/schedule {STOP}"
    )


def test_last_action_and_plan_fall_back_when_unknown(shipped_config):
    page = render_step(PROGRAM, "quick_win", {"contact_id": "c1"}, trigger={"path": "/pricing"})
    assert page.subject == "Pick up where you left off: comparing plans"
    blog = render_step(PROGRAM, "whats_new", {"contact_id": "c1"}, trigger={"path": "/blog/reduce-churn"})
    assert "; last time you were reading our blog." in blog.text
    unknown = render_step(PROGRAM, "whats_new", {"contact_id": "c1"}, trigger={"path": "/somewhere-new"})
    assert "; last time you were" not in unknown.text and "included in your plan." in unknown.text
    assert unknown.text.startswith("Hi there,")
    check_in = render_step(PROGRAM, "check_in", {"contact_id": "c1"})
    assert "your workspace is ready" in check_in.text and "/settings/notifications" in check_in.html
