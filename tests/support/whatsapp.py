"""Programs that write on WhatsApp, and the contacts and inbound messages their tests need:
``chats`` has a free-form text and an approved content template, ``notes`` a free-form text only;
each takes the contacts whose ``industry`` is its name, with a cap of 1 WhatsApp message a week."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from sqlalchemy import select

from lifecycle.model import schema
from tests.conftest import FIXTURES
from tests.support.journey import treatment_contact

TEMPLATE_SID = "HX" + "a" * 32
TEMPLATE_TEXT = "Hi {{1}}, news from {{2}} is waiting for you."
POLICY = {
    "control_group": {"percent": 0, "salt": "test-control"},
    "send_batch_size": 50,
    "caps": {"email": {"max": 3, "per": "7d"}, "whatsapp": {"max": 1, "per": "7d"}, "all": {"max": 3, "per": "7d"}},
}
KPI = {"primary": "conversion", "label": "Conversion", "conversion": {"event": "purchase", "since": "enrollment"}}
PROGRAMS = {"chats": ("simple/hello", 20), "notes": ("simple/note", 10)}
FREE_FORM = "{{ brand.name }}: hi {{ contact.first_name }}, thanks for writing to us.\n"
CONTENT = (
    '{"content_sid": "' + TEMPLATE_SID + '", "variables": {"1": {{ contact.first_name|tojson }}, "2": "Lifecycle"}}'
)
OUTSIDE_WINDOW = "outside the WhatsApp 24-hour window and the step has no content template"
_numbers = itertools.count(2000)


def use_whatsapp_programs(tmp_path: Path, monkeypatch) -> Path:
    """Write the programs, policy and templates under ``tmp_path`` and point the config at them."""
    root = tmp_path / "config"
    (root / "programs").mkdir(parents=True)
    (root / "segments.yml").write_text((FIXTURES / "config" / "segments.yml").read_text())
    (root / "policy.yml").write_text(yaml.safe_dump(POLICY))
    for program, (template, priority) in PROGRAMS.items():
        body = {
            "owner": "tests",
            "schedule": None,
            "kpi": KPI,
            "name": program.title(),
            "priority": priority,
            "audience": {"segment": {"attribute": "industry", "eq": program}},
            "steps": [{"id": "hello", "template": template, "channel": "whatsapp"}],
            "holdout_percent": 0,
        }
        (root / "programs" / f"{program}.yml").write_text(yaml.safe_dump(body))
    templates = tmp_path / "templates" / "simple"
    templates.mkdir(parents=True)
    (templates / "hello.whatsapp.j2").write_text(FREE_FORM)
    (templates / "hello.whatsapp.json.j2").write_text(CONTENT)
    (templates / "note.whatsapp.j2").write_text(FREE_FORM)
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(root))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(tmp_path / "templates"))
    return root


def whatsapp_contact(c, program: str = "chats", consent: dict[str, str] | None = None, **fields) -> str:
    """A treatment contact of ``program`` with its own phone number and WhatsApp marketing consent."""
    phone = fields.pop("phone", f"+1415555{next(_numbers):04d}")
    granted = {"whatsapp": "granted"} if consent is None else consent
    return treatment_contact(c, program, consent=granted, phone=phone, industry=program, **fields)


def phone_of(engine, contact_id: str) -> str:
    with engine.connect() as conn:
        return conn.execute(select(schema.contacts.c.phone).where(schema.contacts.c.contact_id == contact_id)).scalar()


def wrote(sandbox, engine, contact_id: str, ago: timedelta) -> None:
    """The contact sent a WhatsApp message ``ago`` before now (the window runs on the wall clock)."""
    sandbox.inbound_sms(f"whatsapp:{phone_of(engine, contact_id)}", "Hi, a question", at=datetime.now(UTC) - ago)


def outbound(sandbox) -> dict[str, dict]:
    """The WhatsApp (and SMS) messages the sandbox accepted, by recipient number without ``whatsapp:``."""
    return {m["to"].removeprefix("whatsapp:"): m for m in sandbox.twilio_messages() if m["direction"] != "inbound"}
