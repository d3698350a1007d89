"""A test config with a service program: the small test programs plus ``notices``, which sends
service (transactional) emails to leads at a priority above every marketing program."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import FIXTURES

SERVICE = "notices"
NOTICES: dict[str, Any] = {
    "name": "Notices (service messages to leads)",
    "owner": "tests",
    "priority": 95,
    "schedule": None,
    "classes": ["transactional"],
    "consent_purpose": "transactional",
    "audience": {"segment": {"segment": "leads"}},
    "steps": [{"id": "notice", "channel": "email", "template": "simple/hello"}],
    "holdout_percent": 0,
    "kpi": {"primary": "conversion", "label": "Conversion", "conversion": {"event": "purchase", "since": "enrollment"}},
}


def service_config(tmp_path: Path, monkeypatch, **policy: Any) -> Path:
    """Use a copy of the test config with the ``notices`` service program, and ``policy`` fields
    (``service_caps``, ``legal_basis``...) set in its policy; returns the config folder."""
    root = tmp_path / "service-config"
    shutil.copytree(FIXTURES / "config", root)
    (root / "programs" / f"{SERVICE}.yml").write_text(yaml.safe_dump(NOTICES))
    policy_file = root / "policy.yml"
    policy_file.write_text(yaml.safe_dump(yaml.safe_load(policy_file.read_text()) | policy))
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(root))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(FIXTURES / "templates"))
    return root
