"""Programs for the sales-task channel and the activity write-back, and their contacts.

``calls`` takes the contacts whose ``industry`` is ``calls`` and creates one task each for the
contact's owner, due within 4 hours; ``touches`` emails the contacts whose ``industry`` is
``touches`` (a 50% holdout). The policy writes sent email and SMS back to the CRM as activities.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import FIXTURES

POLICY = {
    "control_group": {"percent": 0, "salt": "test-control"},
    "send_batch_size": 50,
    "caps": {"email": {"max": 3, "per": "7d"}, "all": {"max": 5, "per": "7d"}},
    "write_back": {"connection": "crm_activities_default", "channels": ["email", "sms"]},
}
KPI = {"primary": "conversion", "label": "Conversion", "conversion": {"event": "purchase", "since": "enrollment"}}
TASK = (
    '{"subject": {{ ("High-intent lead: call " ~ contact.first_name ~ " within 4h")|tojson }}, '
    '"body": "Pricing page and a demo request.", "priority": "high", "type": "call"}\n'
)


def _program(name: str, industry: str, step: dict, holdout: int = 0) -> dict:
    return {
        "owner": "tests",
        "schedule": None,
        "kpi": KPI,
        "name": name,
        "priority": 50,
        "audience": {"segment": {"attribute": "industry", "eq": industry}},
        "steps": [step],
        "holdout_percent": holdout,
    }


def use_sales_programs(tmp_path: Path, monkeypatch, policy: dict | None = None) -> Path:
    """Write ``calls``, ``touches``, the policy and their templates under ``tmp_path`` and point the
    config at them."""
    root = tmp_path / "config"
    (root / "programs").mkdir(parents=True)
    (root / "segments.yml").write_text((FIXTURES / "config" / "segments.yml").read_text())
    (root / "policy.yml").write_text(yaml.safe_dump(POLICY if policy is None else policy))
    call = {"id": "call", "template": "sales/call", "channel": "sales_task", "due_within": "4h"}
    hello = {"id": "hello", "template": "simple/hello", "channel": "email"}
    (root / "programs" / "calls.yml").write_text(yaml.safe_dump(_program("Calls", "calls", call)))
    (root / "programs" / "touches.yml").write_text(yaml.safe_dump(_program("Touches", "touches", hello, 50)))
    templates = tmp_path / "templates"
    (templates / "sales").mkdir(parents=True)
    (templates / "sales" / "call.json.j2").write_text(TASK)
    (templates / "simple").symlink_to(FIXTURES / "templates" / "simple")
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(root))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(templates))
    return root
