"""SendGrid unsubscribe groups (ASM) per topic, through the real SDK, the provider sandbox and the
webhook app: a program's emails carry its topic's group, and SendGrid's group unsubscribe and
resubscribe for that group change that topic only, from the next run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from lifecycle.channels.providers import ProviderTransport, links_from_connection
from lifecycle.devtools.local import WebApp, provider_connections
from lifecycle.engine import pipeline
from lifecycle.model import schema
from lifecycle.model.ledger import WENT_OUT
from lifecycle.sandbox import SandboxServer
from tests.conftest import AS_OF
from tests.support.consent import write_consent_config
from tests.support.local_crm import use_crm

M = schema.messages


@pytest.fixture
def groups(crm, sqlite_url, test_config: Path, tmp_path: Path, monkeypatch):
    """The consent config (promo is about offers, group 101; guide about education, group 102), the
    webhook app on loopback and the sandbox posting signed webhooks to it."""
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(write_consent_config(test_config, tmp_path / "config")))
    use_crm(monkeypatch, sqlite_url)
    web = WebApp().start()
    with SandboxServer(sendgrid_webhook_url=f"{web.base_url}/webhooks/sendgrid") as sandbox:
        for key, value in provider_connections(sandbox, web.base_url, "groups-secret").items():
            monkeypatch.setenv(key, value)
        yield crm[0], crm[1], sandbox
    web.stop()


@pytest.fixture
def crm(sqlite_url):
    from lifecycle.model.db import get_engine, migrate
    from tests.support.crm_builder import CrmBuilder

    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    return engine, CrmBuilder(engine, AS_OF)


def _run(engine, program: str, as_of) -> None:
    scope, programs = pipeline.load_scope(program, f"groups_{program}_{as_of:%Y%m%d%H}", as_of)
    pipeline.run_program(engine, scope, programs, ProviderTransport(), links=links_from_connection())


def _outcomes(engine, program: str, step: str) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(M.c.contact_id, M.c.status, M.c.reason).where(M.c.program == program, M.c.step == step)
        )
        return {r.contact_id: (r.status, r.reason) for r in rows}


def test_emails_carry_their_topics_group_and_a_group_unsubscribe_stops_that_topic_only(groups):
    engine, c, sandbox = groups
    leaver = c.contact(lifecycle_stage="customer", email="leaver@example.com")
    stayer = c.contact(lifecycle_stage="customer", email="stayer@example.com")

    _run(engine, "promo", AS_OF)
    offers = sandbox.sendgrid_messages()
    assert {m["to"]: m["asm"] for m in offers} == {
        "leaver@example.com": {"group_id": 101, "groups_to_display": [101, 102]},
        "stayer@example.com": {"group_id": 101, "groups_to_display": [101, 102]},
    }

    offer = next(m for m in offers if m["to"] == "leaver@example.com")
    (event,) = sandbox.sendgrid_event("group_unsubscribe", sg_message_id=offer["sg_message_id"])
    assert event["asm_group_id"] == 101
    sandbox.flush()

    next_day = AS_OF + timedelta(days=1)
    _run(engine, "promo", next_day)
    _run(engine, "guide", next_day)
    reminders = _outcomes(engine, "promo", "reminder")
    assert reminders[leaver] == ("suppressed", "topic_opt_out: offers")
    assert reminders[stayer][0] in WENT_OUT
    assert {contact: status in WENT_OUT for contact, (status, _) in _outcomes(engine, "guide", "hello").items()} == {
        leaver: True,
        stayer: True,
    }
    guides = [m for m in sandbox.sendgrid_messages() if m["asm"]["group_id"] == 102]
    assert sorted(m["to"] for m in guides) == ["leaver@example.com", "stayer@example.com"]
    assert all(m["asm"]["groups_to_display"] == [102, 101] for m in guides)

    sandbox.sendgrid_event("group_resubscribe", sg_message_id=offer["sg_message_id"])
    sandbox.flush()
    p = schema.topic_preferences
    with engine.connect() as conn:
        history = conn.execute(
            select(p.c.topic, p.c.status, p.c.source).where(p.c.contact_id == leaver).order_by(p.c.preference_id)
        ).all()
    assert [tuple(row) for row in history] == [
        ("offers", "withdrawn", "sendgrid_group_unsubscribe"),
        ("offers", "granted", "sendgrid_group_resubscribe"),
    ]
