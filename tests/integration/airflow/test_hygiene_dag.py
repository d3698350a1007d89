"""The data_hygiene DAG through real Airflow on SQLite and PostgreSQL: its figures match the dirty
data the synthetic generator planted, re-runs change nothing, and program runs skip duplicates."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from lifecycle.devtools import seed
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate
from tests.conftest import AS_OF
from tests.support.dagrun import run_dag

pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("airflow_db", "test_config")]
Q = schema.contact_quality
S = schema.suppressions
DQ = schema.data_quality
EMAIL_GRANTED = seed.CONSENT_MIX[("email", "marketing")]["granted"]


def _figures(engine) -> dict[str, float]:
    with engine.connect() as conn:
        return dict(conn.execute(select(DQ.c.metric, DQ.c.value).where(DQ.c.as_of == AS_OF)).all())


def _engine_tables(engine) -> dict[str, set[tuple]]:
    """Hygiene's results without the run ids (each DAG run has its own)."""
    tables = {"quality": Q, "suppressions": S, "figures": DQ}
    with engine.connect() as conn:
        return {
            name: set(map(tuple, conn.execute(select(*(col for col in t.c if col.name != "run_id")))))
            for name, t in tables.items()
        }


@pytest.fixture
def seeded(db_url):
    """A 3,000-contact synthetic CRM with the engine tables; returns (engine, SeedReport)."""
    report = seed.seed_crm(db_url, 3_000, AS_OF)
    engine = get_engine(db_url)
    migrate(engine)
    return engine, report


def test_figures_match_the_planted_dirty_data(seeded, db_url, monkeypatch):
    engine, report = seeded
    planted, contacts = report.planted, report.contacts
    assert run_dag(monkeypatch, db_url, "data_hygiene", AS_OF) == "success"
    figures = _figures(engine)
    assert figures["contacts"] == contacts
    for figure, key in [
        ("duplicate_contacts", "duplicate_contacts"),
        ("duplicate_groups", "duplicate_contacts"),
        ("invalid_email", "invalid_email"),
        ("invalid_phone", "invalid_phone"),
        ("missing_email", "missing_email"),
        ("missing_phone", "missing_phone"),
        ("missing_country", "missing_country"),
        ("missing_timezone", "missing_timezone"),
        ("consent_granted_email", "email_marketing_granted"),
        ("consent_granted_sms", "sms_marketing_granted"),
    ]:
        assert figures[figure] == planted[key], figure
    for rate, count, constant in [
        ("duplicate_rate", "duplicate_contacts", seed.DUPLICATE_RATE),
        ("invalid_email_rate", "invalid_email", seed.INVALID_EMAIL_RATE),
        ("invalid_phone_rate", "invalid_phone", seed.INVALID_PHONE_RATE),
        ("consent_coverage_email", "consent_granted_email", EMAIL_GRANTED),
        ("consent_coverage_sms", "consent_granted_sms", None),
    ]:
        assert figures[rate] == figures[count] / contacts
        if constant is not None:
            assert figures[rate] == pytest.approx(constant, abs=1 / contacts)
    assert figures["bounce_rate"] == figures["messages_out"] == 0

    c = schema.contacts
    complete = (
        c.c.country.is_not(None)
        & c.c.timezone.is_not(None)
        & c.c.lifecycle_stage.is_not(None)
        & c.c.created_at.is_not(None)
        & (c.c.email.is_not(None) | c.c.phone.is_not(None))
    )
    with engine.connect() as conn:
        filled = conn.execute(select(func.count()).where(complete)).scalar()
        by_email = conn.execute(
            select(func.count()).where(Q.c.survivor_id.is_not(None), Q.c.duplicate_key.like("email:%"))
        ).scalar()
        flags = dict(
            conn.execute(select(S.c.reason + ":" + S.c.channel, func.count()).group_by(S.c.reason, S.c.channel)).all()
        )
    assert figures["required_fields_filled"] == filled
    assert by_email == planted["duplicate_email_variants"]
    assert flags == {
        "invalid_address:email": planted["invalid_email"],
        "invalid_address:sms": planted["invalid_phone"],
        "invalid_address:whatsapp": planted["invalid_phone"],
        "duplicate_contact:email": planted["duplicate_contacts"],
        "duplicate_contact:sms": planted["duplicate_contacts"],
        "duplicate_contact:whatsapp": planted["duplicate_contacts"],
        "duplicate_contact:webhook": planted["duplicate_contacts"],
        "duplicate_contact:sales_task": planted["duplicate_contacts"],
    }


def test_rerunning_the_dag_changes_nothing(crm, db_url, monkeypatch):
    engine, c = crm
    c.contact("k1", email="ada@example.com", phone="+14155552671")
    c.contact("k2", email="ADA@example.com ", phone="not a number", country=None)
    c.contact("k3", email=None, phone="(415) 555-2672")
    assert run_dag(monkeypatch, db_url, "data_hygiene", AS_OF) == "success"
    first = _engine_tables(engine)
    # k2: an invalid phone (SMS, WhatsApp) and a duplicate (email, SMS, WhatsApp, webhook, sales task)
    assert len(first["quality"]) == 3 and len(first["suppressions"]) == 7
    assert run_dag(monkeypatch, db_url, "data_hygiene", AS_OF) == "success"
    assert _engine_tables(engine) == first


def test_a_program_run_skips_the_duplicate(crm, db_url, monkeypatch, sandbox):
    engine, c = crm
    survivor = c.contact("k1", email="ada@example.com", phone=None)
    duplicate = c.contact("k2", email="ADA@EXAMPLE.COM", phone=None, last_active_at=AS_OF.replace(year=2025))
    assert run_dag(monkeypatch, db_url, "data_hygiene", AS_OF) == "success"
    assert run_dag(monkeypatch, db_url, "alpha", AS_OF) == "success"
    m = schema.messages
    with engine.connect() as conn:
        rows = conn.execute(select(m.c.contact_id, m.c.status, m.c.reason).where(m.c.program == "alpha"))
        outcome = {contact_id: (status, reason) for contact_id, status, reason in rows}
    assert outcome == {survivor: ("sent", None), duplicate: ("suppressed", "duplicate_contact")}
