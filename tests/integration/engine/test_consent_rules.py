"""Topics and regions in suppression: an opt-out of one topic stops that topic's programs only, and
the contact's region decides what consent a channel and purpose need, with reasons that name them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from lifecycle.model import schema
from tests.conftest import AS_OF
from tests.support.consent import write_consent_config
from tests.support.journey import messages, run_program


@pytest.fixture
def consent_config(test_config: Path, tmp_path: Path, monkeypatch) -> Path:
    """The test config with topics and regions in the policy; promo is about offers, guide education."""
    folder = write_consent_config(test_config, tmp_path / "config")
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(folder))
    return folder


def opt_out(engine, contact_id: str, topic: str, status: str = "withdrawn", at=AS_OF - timedelta(hours=1)) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.topic_preferences).values(
                contact_id=contact_id, topic=topic, status=status, source="preference_centre", captured_at=at
            )
        )


def outcome(engine, program: str) -> dict[str, tuple[str, str | None]]:
    return {m["contact_id"]: (m["status"], m["reason"]) for m in messages(engine, program)}


def test_a_topic_opt_out_stops_that_topics_programs_on_the_next_run_and_not_the_others(crm, consent_config):
    engine, c = crm
    opted_out, kept, later = (c.contact(lifecycle_stage="customer") for _ in range(3))
    opt_out(engine, opted_out, "offers")
    opt_out(engine, kept, "offers")
    opt_out(engine, kept, "offers", status="granted", at=AS_OF - timedelta(minutes=30))
    opt_out(engine, later, "offers", at=AS_OF + timedelta(hours=1))  # after this run's as-of

    run_program(engine, "promo", AS_OF)
    run_program(engine, "guide", AS_OF)

    promo = outcome(engine, "promo")
    assert promo[opted_out] == ("suppressed", "topic_opt_out: offers")
    assert promo[kept][0] == promo[later][0] == "dry_run"
    assert all(status == "dry_run" for status, _ in outcome(engine, "guide").values())

    run_program(engine, "promo", AS_OF + timedelta(days=1))  # the reminder step, on the next run
    reminders = {m["contact_id"]: m["reason"] for m in messages(engine, "promo") if m["step"] == "reminder"}
    assert reminders == {kept: None, opted_out: "topic_opt_out: offers", later: "topic_opt_out: offers"}


def test_the_same_contact_data_in_the_eu_and_the_us_gets_each_regions_decision(crm, consent_config):
    engine, c = crm
    no_email_consent = {"sms": "granted"}
    eu = c.contact(country="DE", consent=no_email_consent, lifecycle_stage="customer")
    us = c.contact(country="US", consent=no_email_consent, lifecycle_stage="customer")
    unknown = c.contact(country=None, consent=no_email_consent, lifecycle_stage="customer")
    elsewhere = c.contact(country="JP", consent=no_email_consent, lifecycle_stage="customer")
    us_withdrawn = c.contact(country="us ", consent={"email": "withdrawn"}, lifecycle_stage="customer")

    run_program(engine, "promo", AS_OF)

    promo = outcome(engine, "promo")
    assert promo[eu] == ("suppressed", "no_consent: eu")
    assert promo[us] == ("dry_run", None)  # US marketing email is opt-out (implied)
    assert promo[unknown] == ("suppressed", "no_consent: unknown_country")  # the strictest rule
    assert promo[elsewhere] == ("suppressed", "no_consent")  # no region: the policy's legal_basis
    assert promo[us_withdrawn] == ("suppressed", "consent_withdrawn")


def test_us_marketing_texts_need_explicit_consent_where_email_does_not(crm, consent_config):
    engine, c = crm
    us_no_sms = c.contact(country="US", consent={"email": "granted"}, lifecycle_stage="trial")
    us_sms = c.contact(country="US", consent={"sms": "granted"}, lifecycle_stage="trial")

    run_program(engine, "texts", AS_OF.replace(hour=15))

    texts = outcome(engine, "texts")
    assert texts[us_no_sms] == ("suppressed", "no_consent: us")
    assert texts[us_sms][1] is None


def test_a_topic_that_is_not_optional_is_never_opted_out_of(crm, consent_config):
    engine, c = crm
    path = consent_config / "programs" / "promo.yml"
    path.write_text(path.read_text(encoding="utf-8").replace("topic: offers", "topic: account_billing"))
    contact = c.contact(lifecycle_stage="customer")
    opt_out(engine, contact, "account_billing")

    run_program(engine, "promo", AS_OF)

    assert outcome(engine, "promo")[contact] == ("dry_run", None)


def test_a_program_naming_a_topic_the_policy_lacks_is_an_error_naming_the_fix(consent_config):
    from lifecycle import config

    path = consent_config / "programs" / "guide.yml"
    path.write_text(path.read_text(encoding="utf-8").replace("topic: education", "topic: gossip"))

    programs, errors = config.load_all_programs()

    assert "guide" not in programs
    assert "topic: 'gossip' is not a topic of the policy" in str(errors["guide"])
    assert "offers" in str(errors["guide"])


def test_a_topic_opt_out_between_planning_and_sending_is_honoured_when_the_message_is_claimed(crm, consent_config):
    from lifecycle.channels.simulated import SimulatedTransport
    from lifecycle.engine import pipeline
    from tests.support.invariants import stage_run

    engine, c = crm
    opts_out, stays = c.contact(lifecycle_stage="customer"), c.contact(lifecycle_stage="customer")
    batches = stage_run(engine, "promo", "promo-run", AS_OF)
    assert {m["status"] for m in messages(engine, "promo")} == {"ready"}
    opt_out(engine, opts_out, "offers", at=AS_OF)  # the preference centre, after the run planned

    scope, _programs = pipeline.load_scope("promo", "promo-run", AS_OF)
    for batch in batches:
        pipeline.send(
            engine,
            scope,
            batch,
            SimulatedTransport(),
            links=lambda *_: {"unsubscribe": "https://example.invalid/u"},
            simulate=True,
        )

    assert outcome(engine, "promo") == {opts_out: ("suppressed", "topic_opt_out: offers"), stays: ("dry_run", None)}
