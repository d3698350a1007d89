"""Programs whose one step chooses among WhatsApp, SMS and email, one per ``choose_by`` rule, and
the data the rules read: ``by_preference`` (the contact's ``preferred_channel`` attribute),
``by_engagement`` (the channel it last engaged on) and ``by_order``; each takes the contacts whose
``industry`` is its name. Written under a temporary folder the config is pointed at."""

from __future__ import annotations

import itertools
import shutil
from datetime import datetime
from pathlib import Path

import yaml
from sqlalchemy import insert

from lifecycle.model import schema
from lifecycle.paths import PROJECT_ROOT
from tests.conftest import FIXTURES
from tests.support.journey import treatment_contact
from tests.support.whatsapp import CONTENT

CHANNELS = ["whatsapp", "sms", "email"]
RULES = {"by_preference": "preferred_channel", "by_engagement": "last_engaged", "by_order": None}
KPI = {"primary": "conversion", "label": "Conversion", "conversion": {"event": "purchase", "since": "enrollment"}}
ALL_GRANTED = {"whatsapp": "granted", "sms": "granted", "email": "granted"}
_numbers = itertools.count(3000)


def use_choice_programs(tmp_path: Path, monkeypatch, policy: dict | None = None) -> Path:
    """Write the programs (and the test policy, or ``policy``) and point the config at them."""
    root = tmp_path / "config"
    (root / "programs").mkdir(parents=True)
    shutil.copy(FIXTURES / "config" / "segments.yml", root / "segments.yml")
    if policy is None:
        shutil.copy(FIXTURES / "config" / "policy.yml", root / "policy.yml")
    else:
        (root / "policy.yml").write_text(yaml.safe_dump(policy))
    for priority, (program, rule) in enumerate(RULES.items(), start=10):
        step = {"id": "hello", "template": "simple/hello", "channels": CHANNELS}
        if rule:
            step["choose_by"] = rule
        body = {
            "owner": "tests",
            "schedule": None,
            "kpi": KPI,
            "name": program.replace("_", " ").title(),
            "priority": priority,
            "audience": {"segment": {"attribute": "industry", "eq": program}},
            "steps": [step],
            "holdout_percent": 0,
        }
        (root / "programs" / f"{program}.yml").write_text(yaml.safe_dump(body))
    templates = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "include" / "templates" / "_web", templates / "_web")  # the pages'
    shutil.copytree(FIXTURES / "templates", templates, dirs_exist_ok=True)
    (templates / "simple" / "hello.whatsapp.j2").write_text("Hi {{ contact.first_name }}, news from us.\n")
    (templates / "simple" / "hello.whatsapp.json.j2").write_text(CONTENT)
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(root))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(templates))
    return root


def choice_contact(c, program: str, consent: dict[str, str] | None = None, **fields) -> str:
    """A treatment contact of ``program`` with its own phone number and (by default) consent on every channel."""
    phone = fields.pop("phone", f"+1415555{next(_numbers):04d}")
    return treatment_contact(
        c, program, consent=ALL_GRANTED if consent is None else consent, phone=phone, industry=program, **fields
    )


def prefers(engine, contact_id: str, channel: str) -> None:
    """The contact's ``preferred_channel`` custom attribute (as a source sync writes it)."""
    with engine.begin() as conn:
        conn.execute(
            insert(schema.contact_attributes).values(contact_id=contact_id, attributes={"preferred_channel": channel})
        )


_events = itertools.count(1)


def engaged(engine, contact_id: str, channel: str, event_type: str, at: datetime) -> None:
    """A provider event of the contact at ``at``: an open, click or read of an earlier message on
    ``channel`` (a ledger row of another program), or an inbound reply (``inbound_message`` for SMS,
    ``whatsapp_inbound_message``) that names no message."""
    n = next(_events)
    message_id = None
    with engine.begin() as conn:
        if "inbound" not in event_type:
            message_id = conn.execute(
                insert(schema.messages).values(
                    idempotency_key=f"earlier:{contact_id}:{n}",
                    program="earlier",
                    priority=0,
                    enrollment_id=0,
                    entry=1,
                    step="s",
                    step_index=0,
                    contact_id=contact_id,
                    channel=channel,
                    planned_channel=channel,
                    template="t",
                    group="treatment",
                    status="opened",
                    due_at=at,
                    run_id="earlier",
                    planned_at=at,
                )
            ).inserted_primary_key[0]
        conn.execute(
            insert(schema.provider_events).values(
                provider="sendgrid" if channel == "email" else "twilio",
                event_id=f"ev-{n}",
                event_type=event_type,
                message_id=message_id,
                contact_id=contact_id,
                occurred_at=at,
                received_at=at,
            )
        )
