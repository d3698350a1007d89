"""A program that posts to the webhook channel, and its contacts: ``signals`` takes the contacts
whose ``industry`` is ``signals`` and posts one JSON payload each, with a cap of 1 a week."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import FIXTURES
from tests.support.journey import treatment_contact

POLICY = {
    "control_group": {"percent": 0, "salt": "test-control"},
    "send_batch_size": 50,
    "caps": {"email": {"max": 3, "per": "7d"}, "webhook": {"max": 1, "per": "7d"}, "all": {"max": 3, "per": "7d"}},
}
KPI = {"primary": "conversion", "label": "Conversion", "conversion": {"event": "purchase", "since": "enrollment"}}
PAYLOAD = (
    '{"type": "high_intent", "contact_id": {{ contact.contact_id|tojson }}, '
    '"name": {{ contact.first_name|tojson }}, "program": {{ program|tojson }}}\n'
)


def use_webhook_program(tmp_path: Path, monkeypatch, payload: str = PAYLOAD) -> Path:
    """Write the ``signals`` program, policy and its ``.json.j2`` template under ``tmp_path`` and
    point the config at them."""
    root = tmp_path / "config"
    (root / "programs").mkdir(parents=True)
    (root / "segments.yml").write_text((FIXTURES / "config" / "segments.yml").read_text())
    (root / "policy.yml").write_text(yaml.safe_dump(POLICY))
    body = {
        "owner": "tests",
        "schedule": None,
        "kpi": KPI,
        "name": "Signals",
        "priority": 50,
        "audience": {"segment": {"attribute": "industry", "eq": "signals"}},
        "steps": [{"id": "signal", "template": "simple/signal", "channel": "webhook"}],
        "holdout_percent": 0,
    }
    (root / "programs" / "signals.yml").write_text(yaml.safe_dump(body))
    templates = tmp_path / "templates" / "simple"
    templates.mkdir(parents=True)
    (templates / "signal.json.j2").write_text(payload)
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(root))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(tmp_path / "templates"))
    return root


def webhook_contact(c, consent: dict[str, str] | None = None, **fields) -> str:
    """A treatment contact of ``signals`` with marketing consent for the webhook channel."""
    granted = {"webhook": "granted"} if consent is None else consent
    return treatment_contact(c, "signals", consent=granted, industry="signals", **fields)
