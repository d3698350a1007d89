"""The welcome program on hand-made contacts: entry, exit on activation, step timing, fallback."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import AS_OF
from tests.support.journey import enrollments, messages, run_program, treatment_contact


@pytest.fixture
def sqlite_crm(sqlite_url, monkeypatch):
    from lifecycle.model import schema
    from lifecycle.model.db import get_engine, migrate
    from tests.support.crm_builder import CrmBuilder

    monkeypatch.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    return engine, CrmBuilder(engine, AS_OF)


@pytest.mark.slow
def test_welcome_sends_at_once_nudges_after_two_days_and_exits_on_activation(sqlite_crm):
    engine, crm_rows = sqlite_crm
    fresh = treatment_contact(crm_rows, "welcome", signed_up_ago=timedelta(hours=2))
    activates = treatment_contact(crm_rows, "welcome", signed_up_ago=timedelta(hours=2))
    old = crm_rows.contact("old", signed_up_ago=timedelta(days=10))
    run_program(engine, "welcome", AS_OF)
    first = {m["contact_id"]: m for m in messages(engine, "welcome")}
    assert set(first) == {fresh, activates}
    assert {m["step"] for m in first.values()} == {"welcome"} and {m["status"] for m in first.values()} == {"dry_run"}
    assert old not in first
    crm_rows.event(activates, "activated", AS_OF + timedelta(days=1))
    run_program(engine, "welcome", AS_OF + timedelta(days=1))
    assert len(messages(engine, "welcome")) == 2  # nothing due yet
    run_program(engine, "welcome", AS_OF + timedelta(days=2))
    by_step = {(m["contact_id"], m["step"]) for m in messages(engine, "welcome")}
    assert (fresh, "activation_nudge") in by_step and (activates, "activation_nudge") not in by_step
    states = {e["contact_id"]: (e["state"], e["exit_reason"]) for e in enrollments(engine, "welcome")}
    assert states[activates] == ("exited", "converted")


@pytest.mark.slow
def test_nudge_falls_back_to_sms_when_email_is_impossible(sqlite_crm):
    engine, crm_rows = sqlite_crm
    cid = treatment_contact(crm_rows, "welcome", signed_up_ago=timedelta(hours=2), email=None)
    run_program(engine, "welcome", AS_OF)
    run_program(engine, "welcome", AS_OF + timedelta(days=2))
    rows = {m["step"]: m for m in messages(engine, "welcome") if m["contact_id"] == cid}
    assert rows["welcome"]["status"] == "suppressed" and rows["welcome"]["reason"] == "missing_address"
    assert rows["activation_nudge"]["channel"] == "sms" and rows["activation_nudge"]["planned_channel"] == "email"
    assert rows["activation_nudge"]["status"] == "dry_run"
