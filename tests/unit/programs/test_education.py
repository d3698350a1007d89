"""Customer education on hand-made customers: first report not shared a week after joining
enters; three setup-help emails; exit when the first report is shared."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import AS_OF
from tests.support.journey import enrollments, messages, run_program, treatment_contact
from tests.support.programs import days, render_message, render_step, run_schedule, steps_for

PROGRAM = "education"


def _member(crm, joined_days_ago: int = 10, idle_days: int = 1, **fields) -> str:
    joined = AS_OF - timedelta(days=joined_days_ago)
    defaults = {
        "lifecycle_stage": "customer",
        "plan": "growth",
        "created_at": joined,
        "last_active_at": AS_OF - timedelta(days=idle_days),
    }
    return treatment_contact(crm, PROGRAM, **(defaults | fields))


@pytest.mark.slow
def test_members_without_a_shared_report_after_a_week_enter(shipped_crm):
    engine, crm = shipped_crm
    gap = _member(crm, industry="Education")
    trial = _member(crm, lifecycle_stage="trial")
    too_new = _member(crm, joined_days_ago=3)
    too_old = _member(crm, joined_days_ago=200)
    dormant = _member(crm, idle_days=40)
    lead = _member(crm, lifecycle_stage="lead")
    adopted = _member(crm)
    crm.event(adopted, "milestone_completed", AS_OF - timedelta(days=2), milestone="first_report_shared")
    crm.row("tickets", ticket_id="tk-ed", contact_id=trial, status="open", opened_at=AS_OF - timedelta(days=1))

    run_program(engine, PROGRAM, AS_OF)

    rows = {m["contact_id"]: m for m in messages(engine, PROGRAM)}
    assert {cid: (m["step"], m["status"]) for cid, m in rows.items()} == {
        gap: ("first_report", "dry_run"),
        trial: ("first_report", "dry_run"),
    }
    assert not {too_new, too_old, dormant, lead, adopted} & {e["contact_id"] for e in enrollments(engine, PROGRAM)}
    email = render_message(engine, rows[gap])
    assert email.subject == "Ada, share your first report in three steps"
    assert "there's one made for education teams" in email.text and "/reports/new" in email.html


@pytest.mark.slow
def test_three_emails_over_eight_days_until_the_first_report_is_shared(shipped_crm):
    engine, crm = shipped_crm
    stuck = _member(crm)
    shares = _member(crm)
    invites = _member(crm)
    crm.event(shares, "milestone_completed", AS_OF + timedelta(days=4), milestone="first_report_shared")
    crm.event(invites, "milestone_completed", AS_OF + timedelta(days=1), milestone="teammate_invited")
    schedule = run_schedule(engine, PROGRAM, days(*range(0, 10)))

    assert steps_for(schedule, stuck) == {
        timedelta(days=0): [("first_report", "dry_run")],
        timedelta(days=3): [("template_walkthrough", "dry_run")],
        timedelta(days=8): [("setup_session", "dry_run")],
    }
    assert steps_for(schedule, invites) == steps_for(schedule, stuck)
    assert steps_for(schedule, shares) == {
        timedelta(days=0): [("first_report", "dry_run")],
        timedelta(days=3): [("template_walkthrough", "dry_run")],
    }
    states = {e["contact_id"]: (e["state"], e["exit_reason"]) for e in enrollments(engine, PROGRAM)}
    assert states[shares] == ("exited", "converted") and states[stuck] == ("completed", "completed")


def test_copy_adapts_to_trial_plan_and_industry_with_fallbacks(shipped_config):
    trial = render_step(PROGRAM, "setup_session", {"contact_id": "c1", "lifecycle_stage": "trial"})
    assert "build your first report\nwith you, well before your trial ends." in trial.text
    walkthrough = render_step(
        PROGRAM, "template_walkthrough", {"contact_id": "c1", "plan": "pro"}, account={"industry": "Nonprofit"}
    )
    assert walkthrough.subject == "A ready-made report for nonprofit teams, already filled with your data"
    assert '"Nonprofit overview" template' in walkthrough.text and "included in your Pro plan" in walkthrough.text
    empty = render_step(PROGRAM, "template_walkthrough", {"contact_id": "c1"})
    assert empty.subject == "A ready-made report for your team, already filled with your data"
    assert '"Weekly overview" template' in empty.text and "\nYou can change any chart later" in empty.text
