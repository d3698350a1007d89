"""Service messages (a program whose consent purpose is transactional) on SQLite and PostgreSQL:
a marketing unsubscribe does not stop them, at planning or at claim time, while bounces, spam
reports and a withdrawn transactional consent do; they go on implied consent; they are neither
stopped nor counted by the marketing caps, take no marketing slot by priority, and meet the
policy's service caps instead."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert

from lifecycle.channels.simulated import SimulatedTransport
from lifecycle.engine import pipeline
from lifecycle.model import schema
from lifecycle.model.ledger import Status
from lifecycle.model.ledger import SuppressionReason as R
from tests.conftest import AS_OF
from tests.support.invariants import stage_run
from tests.support.journey import earlier_messages, messages, messages_already_sent, run_program
from tests.support.service import SERVICE, service_config

MARKETING = "beta"  # leads, priority 90 (the highest marketing program for them), marketing email
EMAIL_CAP = "frequency_cap_email: 3 per 7d"


@pytest.fixture
def service(tmp_path, monkeypatch):
    service_config(tmp_path, monkeypatch)


def _links(message_id: int, contact_id: str, channel: str) -> dict[str, str]:
    return {"unsubscribe": f"https://example.invalid/unsubscribe/{message_id}"}


def _listed(engine, contact_id: str, reason: str, channel: str = "email") -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.suppressions).values(
                contact_id=contact_id, channel=channel, reason=reason, source="test", created_at=AS_OF
            )
        )


def _outcomes(engine, program: str) -> dict[str, tuple[str, str | None]]:
    return {m["contact_id"]: (m["status"], m["reason"]) for m in messages(engine, program)}


def _both_consents(c) -> str:
    """A lead with marketing and transactional email consent granted."""
    cid = c.contact()
    c.consent(cid, "email", "granted", purpose="transactional")
    return cid


def _run_both(engine, order=(SERVICE, MARKETING)) -> tuple[dict, dict]:
    for program in order:
        run_program(engine, program, AS_OF)
    return _outcomes(engine, SERVICE), _outcomes(engine, MARKETING)


@pytest.mark.usefixtures("service")
def test_a_marketing_unsubscribe_stops_marketing_only_and_the_other_lists_stop_both(crm):
    engine, c = crm
    unsubscribed = c.contact()
    _listed(engine, unsubscribed, R.UNSUBSCRIBED)
    blocked = {reason: c.contact() for reason in (R.HARD_BOUNCE, R.SPAM_REPORT, R.DUPLICATE_CONTACT)}
    for reason, cid in blocked.items():
        _listed(engine, cid, reason)
    withdrawn = c.contact()
    c.consent(withdrawn, "email", "withdrawn", purpose="transactional", at=AS_OF - timedelta(days=1))

    service, marketing = _run_both(engine)

    assert service[unsubscribed] == (Status.DRY_RUN, None)
    assert marketing[unsubscribed] == (Status.SUPPRESSED, R.UNSUBSCRIBED)
    for reason, cid in blocked.items():
        assert service[cid] == marketing[cid] == (Status.SUPPRESSED, reason)
    assert service[withdrawn] == (Status.SUPPRESSED, R.CONSENT_WITHDRAWN)
    assert marketing[withdrawn] == (Status.DRY_RUN, None)  # marketing consent is still granted


@pytest.mark.usefixtures("service")
def test_service_messages_go_on_implied_consent_and_marketing_needs_it_explicit(crm):
    engine, c = crm
    no_rows = c.contact(consent={})
    denied = c.contact(consent={})
    c.consent(denied, "email", "denied", purpose="transactional")
    regranted = c.contact(consent={})
    c.consent(regranted, "email", "withdrawn", purpose="transactional", at=AS_OF - timedelta(days=9))
    c.consent(regranted, "email", "granted", purpose="transactional", at=AS_OF - timedelta(days=2))

    service, marketing = _run_both(engine)

    assert service == {
        no_rows: (Status.DRY_RUN, None),
        denied: (Status.SUPPRESSED, R.NO_CONSENT),
        regranted: (Status.DRY_RUN, None),
    }
    assert set(marketing.values()) == {(Status.SUPPRESSED, R.NO_CONSENT)}


def test_an_explicit_basis_for_transactional_needs_a_granted_row(crm, tmp_path, monkeypatch):
    service_config(tmp_path, monkeypatch, legal_basis={"transactional": "explicit"})
    engine, c = crm
    no_rows = c.contact()
    granted = c.contact()
    c.consent(granted, "email", "granted", purpose="transactional")
    run_program(engine, SERVICE, AS_OF)
    assert _outcomes(engine, SERVICE) == {
        no_rows: (Status.SUPPRESSED, R.NO_CONSENT),
        granted: (Status.DRY_RUN, None),
    }


@pytest.mark.usefixtures("service")
@pytest.mark.parametrize("order", [(SERVICE, MARKETING), (MARKETING, SERVICE)])
def test_the_marketing_caps_neither_stop_nor_count_service_messages(crm, order):
    engine, c = crm
    at_the_cap = _both_consents(c)
    messages_already_sent(engine, at_the_cap, count=3)
    one_slot_left = _both_consents(c)
    messages_already_sent(engine, one_slot_left, count=2)

    service, marketing = _run_both(engine, order)

    # The service message goes at the cap, and takes no marketing slot: by being sent, or by the
    # service program's higher priority reserving the last one.
    assert service == {at_the_cap: (Status.DRY_RUN, None), one_slot_left: (Status.DRY_RUN, None)}
    assert marketing == {at_the_cap: (Status.CAPPED, EMAIL_CAP), one_slot_left: (Status.DRY_RUN, None)}


def test_service_caps_count_service_messages_only(crm, tmp_path, monkeypatch):
    service_config(tmp_path, monkeypatch, service_caps={"email": {"max": 1, "per": "7d"}})
    engine, c = crm
    had_a_notice = c.contact()
    earlier_notice = earlier_messages(had_a_notice, count=1)[0] | {"program": SERVICE, "idempotency_key": "n:1"}
    with engine.begin() as conn:
        conn.execute(insert(schema.messages), [earlier_notice])
    had_marketing = c.contact()
    messages_already_sent(engine, had_marketing, count=3)

    run_program(engine, SERVICE, AS_OF)

    assert _outcomes(engine, SERVICE) == {
        had_a_notice: (Status.CAPPED, "frequency_cap_email: 1 per 7d (service)"),
        had_marketing: (Status.DRY_RUN, None),
    }


@pytest.mark.usefixtures("service")
def test_the_claim_time_check_stops_service_messages_only_for_lists_that_stop_them(crm):
    engine, c = crm
    unsubscribes, bounces = _both_consents(c), _both_consents(c)
    batches = {program: stage_run(engine, program, f"{program}-run", AS_OF) for program in (SERVICE, MARKETING)}
    assert {m["status"] for p in (SERVICE, MARKETING) for m in messages(engine, p)} == {Status.READY}
    # Between planning and sending: one contact unsubscribes from marketing email, one bounces.
    _listed(engine, unsubscribes, R.UNSUBSCRIBED)
    _listed(engine, bounces, R.HARD_BOUNCE)
    for program, numbers in batches.items():
        scope, _programs = pipeline.load_scope(program, f"{program}-run", AS_OF)
        for batch in numbers:
            pipeline.send(engine, scope, batch, SimulatedTransport(), links=_links, simulate=True)

    assert _outcomes(engine, SERVICE) == {
        unsubscribes: (Status.DRY_RUN, None),
        bounces: (Status.SUPPRESSED, R.HARD_BOUNCE),
    }
    assert _outcomes(engine, MARKETING) == {
        unsubscribes: (Status.SUPPRESSED, R.UNSUBSCRIBED),
        bounces: (Status.SUPPRESSED, R.HARD_BOUNCE),
    }


@pytest.mark.usefixtures("service")
def test_two_programs_runs_with_one_airflow_run_id_each_send_only_their_own_messages(crm):
    """Airflow's scheduled run id names only the logical date, so a service program and a marketing
    program scheduled at the same time run under one run id: each run's batches, claims and rules
    are still its program's (a marketing unsubscribe stops only the marketing program's message)."""
    engine, c = crm
    unsubscribed = c.contact()
    shared = "scheduled__2026-11-16T09:00:00+00:00"
    runs = {program: pipeline.load_scope(program, shared, AS_OF) for program in (SERVICE, MARKETING)}
    for run, programs in runs.values():
        with engine.begin() as conn:
            pipeline.decide(conn, run, programs)
    batches = {program: pipeline.prepare(engine, run) for program, (run, _) in runs.items()}
    assert batches[SERVICE] == batches[MARKETING] == [0]
    # Listed after planning: only the claim-time check can stop a message now.
    _listed(engine, unsubscribed, R.UNSUBSCRIBED)

    marketing_run = runs[MARKETING][0]
    pipeline.send(engine, marketing_run, 0, SimulatedTransport(), links=_links, simulate=True)
    assert {m["status"] for m in messages(engine, SERVICE)} == {Status.READY}
    assert _outcomes(engine, MARKETING)[unsubscribed] == (Status.SUPPRESSED, R.UNSUBSCRIBED)

    service_run = runs[SERVICE][0]
    pipeline.send(engine, service_run, 0, SimulatedTransport(), links=_links, simulate=True)
    assert _outcomes(engine, SERVICE)[unsubscribed] == (Status.DRY_RUN, None)
