"""Property-based: over random consent histories — CRM consent rows, topic opt-outs and opt-ins,
pending and confirmed double opt-ins, paper forms, before and after the run — in the EU, the US, an
unlisted country and without a country, no message goes out without the consent its region,
channel, purpose and topic require, as they stood at the run's as-of."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from lifecycle import config
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate
from tests.conftest import AS_OF
from tests.support.consent import write_consent_config
from tests.support.crm_builder import CrmBuilder
from tests.support.journey import messages, run_program

COUNTRIES = ("DE", "US", "JP", None)
STATUSES = ("granted", "withdrawn", "denied")
MOMENTS = st.integers(min_value=-72, max_value=24).map(lambda hours: AS_OF + timedelta(hours=hours))

crm_row = st.tuples(st.just("crm"), st.sampled_from(("email", "sms")), st.sampled_from(STATUSES), MOMENTS)
topic_row = st.tuples(st.just("topic"), st.just("offers"), st.sampled_from(("granted", "withdrawn")), MOMENTS)
capture_row = st.tuples(st.just("capture"), st.just("email"), st.sampled_from(("pending", "granted")), MOMENTS)
person = st.tuples(st.sampled_from(COUNTRIES), st.lists(st.one_of(crm_row, topic_row, capture_row), max_size=5))


@pytest.fixture(scope="module")
def consent_config(tmp_path_factory) -> Path:
    from tests.conftest import FIXTURES

    return write_consent_config(FIXTURES / "config", tmp_path_factory.mktemp("props") / "config")


def _write(engine, builder: CrmBuilder, people) -> dict[str, tuple]:
    written = {}
    contacts = [
        builder.contact(
            f"p{n}", email=f"p{n}@example.com", phone=f"+1415555{n:04d}", country=country, consent={},
            lifecycle_stage="customer",
        )
        for n, (country, _history) in enumerate(people)
    ]  # fmt: skip
    with engine.begin() as conn:
        for n, (contact, (country, history)) in enumerate(zip(contacts, people, strict=True)):
            for kind, what, status, at in history:
                if kind == "crm":
                    row = {"contact_id": contact, "channel": what, "purpose": "marketing", "status": status}
                    conn.execute(insert(schema.consents).values(**row, source="crm", captured_at=at))
                elif kind == "topic":
                    conn.execute(
                        insert(schema.topic_preferences).values(
                            contact_id=contact, topic=what, status=status, source="test", captured_at=at
                        )
                    )
                else:
                    conn.execute(
                        insert(schema.consent_captures).values(
                            address=f"p{n}@example.com", channel=what, purpose="marketing", status=status,
                            source="web_form", form_id="f", form_version="1", consent_text="yes", captured_at=at,
                            confirmed_at=at if status == "granted" else None,
                        )
                    )  # fmt: skip
            written[contact] = (country, history)
    return written


def _allowed(policy: config.Policy, country: str | None, history, channel: str, at: datetime) -> bool:
    """The oracle: what the policy requires for a marketing message on ``channel`` about offers."""
    topic = [(t, s != "granted", s) for kind, what, s, t in history if kind == "topic" and t <= at]
    if topic and max(topic)[2] == "withdrawn":
        return False
    rows = [(t, s != "granted", s) for kind, what, s, t in history if kind == "crm" and what == channel and t <= at]
    confirmed = [t for kind, what, s, t in history if kind == "capture" and s == "granted" and what == channel]
    rows += [(t, False, "granted") for t in confirmed if t <= at]
    status = max(rows)[2] if rows else None
    if status == "withdrawn":
        return False
    bases = {rule.region: rule for rule in policy.region_bases(channel, "marketing")}
    if country is None:
        basis = bases["unknown_country"].basis
    else:
        basis = next((r.basis for r in bases.values() if r.countries and country in r.countries), None)
        basis = basis or policy.basis_for("marketing")
    return status == "granted" if basis == "explicit" else status != "denied"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=st.lists(person, min_size=1, max_size=4))
def test_no_message_goes_out_without_the_consent_its_region_channel_purpose_and_topic_require(
    people, consent_config, monkeypatch
):
    from tests.conftest import FIXTURES

    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(consent_config))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(FIXTURES / "templates"))
    policy = config.load_policy()
    with tempfile.TemporaryDirectory() as folder:
        engine = get_engine(f"sqlite:///{folder}/crm.db")
        schema.crm_metadata.create_all(engine)
        migrate(engine)
        written = _write(engine, CrmBuilder(engine, AS_OF), people)
        run_program(engine, "promo", AS_OF)
        for message in messages(engine, "promo"):
            country, history = written[message["contact_id"]]
            if message["status"] == "dry_run":
                assert _allowed(policy, country, history, message["channel"], AS_OF), (message, country, history)
        engine.dispose()
