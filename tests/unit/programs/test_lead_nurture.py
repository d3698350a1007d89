"""Lead nurture on hand-made leads: entry on content engagement, weekly emails by industry and
role, exit on a qualified opportunity, and nothing for anyone in sales negotiation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import AS_OF
from tests.support.journey import enrollments, messages, run_program, treatment_contact
from tests.support.programs import (
    days,
    render_message,
    render_step,
    run_schedule,
    set_fields,
    steps_for,
)

PROGRAM = "lead_nurture"


def _engaged_lead(crm, topic: str = "automation", ago: timedelta = timedelta(days=3), **fields) -> str:
    cid = treatment_contact(crm, PROGRAM, **fields)
    crm.event(cid, "content_engaged", AS_OF - ago, topic=topic)
    return cid


def _opportunity(crm, contact_id: str | None, stage: str, account_id: str | None = None) -> None:
    crm.row(
        "opportunities",
        opportunity_id=f"opp-{contact_id}-{stage}",
        contact_id=contact_id,
        account_id=account_id,
        stage=stage,
        amount=12_000.0,
        updated_at=AS_OF - timedelta(hours=1),
    )


@pytest.mark.slow
def test_engaged_leads_enter_but_not_sales_owned_or_stale_ones(shipped_crm):
    engine, crm = shipped_crm
    engaged = _engaged_lead(crm, topic="security", industry="Healthcare", role="CTO")
    stale = _engaged_lead(crm, ago=timedelta(days=20))
    silent = treatment_contact(crm, PROGRAM)
    customer = _engaged_lead(crm, lifecycle_stage="customer")
    qualified = _engaged_lead(crm)
    _opportunity(crm, qualified, "proposal")
    negotiating = _engaged_lead(crm)
    _opportunity(crm, negotiating, "negotiation")
    colleague = _engaged_lead(crm, account_id="acct-acme")
    _opportunity(crm, "boss-at-acme", "negotiation", account_id="acct-acme")

    run_program(engine, PROGRAM, AS_OF)

    rows = {m["contact_id"]: m for m in messages(engine, PROGRAM)}
    assert set(rows) == {engaged, colleague}
    assert not {stale, silent, customer, qualified, negotiating} & set(rows)
    assert (rows[engaged]["step"], rows[engaged]["status"]) == ("topic_guide", "dry_run")
    assert (rows[colleague]["status"], rows[colleague]["reason"]) == ("suppressed", "in_sales_negotiation")
    email = render_message(engine, rows[engaged])
    assert email.subject == "Security and compliance: a five-minute guide for healthcare teams"
    assert "Thanks for reading about security." in email.text and "/guides/security" in email.html
    assert "documented data model" in email.text


@pytest.mark.slow
def test_one_email_a_week_until_an_opportunity_is_qualified(shipped_crm):
    engine, crm = shipped_crm
    steady = _engaged_lead(crm)
    qualifies = _engaged_lead(crm)
    negotiates = _engaged_lead(crm)
    becomes_trial = _engaged_lead(crm)
    first = run_schedule(engine, PROGRAM, days(0, 1, 2))
    _opportunity(crm, qualifies, "qualification")
    _opportunity(crm, negotiates, "negotiation")
    set_fields(engine, "contacts", becomes_trial, lifecycle_stage="trial")
    rest = run_schedule(engine, PROGRAM, days(*range(3, 16)))

    assert steps_for(first | rest, steady) == {
        timedelta(days=0): [("topic_guide", "dry_run")],
        timedelta(days=7): [("customer_story", "dry_run")],
        timedelta(days=14): [("talk_to_us", "dry_run")],
    }
    for leaver in (qualifies, negotiates, becomes_trial):
        assert steps_for(first | rest, leaver) == {timedelta(days=0): [("topic_guide", "dry_run")]}
    states = {e["contact_id"]: (e["state"], e["exit_reason"]) for e in enrollments(engine, PROGRAM)}
    assert states == {
        steady: ("completed", "completed"),
        qualifies: ("exited", "converted"),
        negotiates: ("exited", "in_sales_negotiation"),
        becomes_trial: ("exited", "no_longer_lead"),
    }


@pytest.mark.parametrize(
    ("role", "angle"),
    [
        ("Head of Marketing", "see which messages actually move revenue"),
        ("Sales Director", "one shared view of every customer"),
        ("Founder & CEO", "revenue impact of every program"),
        ("Software Engineer", "documented data model"),
        (None, "less time on manual reporting"),
    ],
)
def test_copy_follows_the_role(role, angle, shipped_config):
    email = render_step(PROGRAM, "customer_story", {"contact_id": "c1", "first_name": "Ada", "role": role})
    assert angle in email.html and angle in email.text
    assert ("In a role like yours" in email.text) is (role is not None)


@pytest.mark.parametrize(
    ("industry", "story", "subject"),
    [
        ("Healthcare", "regional clinic network", "How healthcare teams put"),
        ("Retail & Ecommerce", "online retailer", "How retail & ecommerce teams put"),
        (None, "a team much like yours", "How teams like yours put"),
    ],
)
def test_story_follows_the_industry(industry, story, subject, shipped_config):
    email = render_step(PROGRAM, "customer_story", {"contact_id": "c1", "industry": industry})
    assert story in email.html and story in email.text
    assert email.subject.startswith(subject)


def test_account_industry_stands_in_and_empty_fields_fall_back(shipped_config):
    stories = render_step(PROGRAM, "topic_guide", {"contact_id": "c1"}, trigger={"topic": "case_study"})
    assert "Thanks for reading about customer stories." in stories.text
    guide = render_step(PROGRAM, "topic_guide", {"contact_id": "c1"}, trigger={}, account={"industry": "Logistics"})
    assert guide.subject == "The lifecycle marketing playbook: a five-minute guide for logistics teams"
    assert guide.text.startswith("Hi there,") and "our recent articles" in guide.text
    assert "/guides/lifecycle-playbook" in guide.html
    invite = render_step(PROGRAM, "talk_to_us", {"contact_id": "c1"}, account={"name": "Acme & Sons"})
    assert invite.subject == "Hi, want to see it with Acme & Sons's data?"
    assert "Acme &amp; Sons" in invite.html and "/demo" in invite.html
