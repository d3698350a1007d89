"""A program synced as a paid audience, its contacts and the hashes the sandbox must hold.

``retarget`` takes the contacts whose ``industry`` is ``retarget``: an email now and another in 30
days (so enrollments stay active between the tests' runs), a 50% holdout, a purchase since
enrollment converts it. Its ``audience_sync`` keeps audience ``AUDIENCE`` in batches of 2 rows. The
policy's global control group is 20%.

The expected rows are computed here from the raw values, apart from the code under test.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from tests.conftest import FIXTURES

AUDIENCE = "23850000000001"
CONTROL = {"percent": 20, "salt": "audience-control"}
POLICY = {
    "control_group": CONTROL,
    "send_batch_size": 50,
    "caps": {"email": {"max": 5, "per": "7d"}, "all": {"max": 9, "per": "7d"}},
}
PURCHASE = {"event": "purchase", "since": "enrollment"}


def program(**sync) -> dict:
    return {
        "name": "Retarget",
        "owner": "tests",
        "schedule": None,
        "priority": 50,
        "audience": {"segment": {"attribute": "industry", "eq": "retarget"}},
        "exit": {"goal": PURCHASE},
        "steps": [
            {"id": "hello", "channel": "email", "template": "simple/hello"},
            {"id": "again", "channel": "email", "template": "simple/hello", "delay": "30d"},
        ],
        "holdout_percent": 50,
        "kpi": {"primary": "conversion", "label": "Conversion", "conversion": PURCHASE},
        "audience_sync": {"audience": AUDIENCE, "batch_size": 2} | sync,
    }


def use_audience_program(tmp_path: Path, monkeypatch, **sync) -> Path:
    """Write ``retarget``, the policy and the templates under ``tmp_path`` and point the config at them."""
    root = tmp_path / "config"
    (root / "programs").mkdir(parents=True)
    (root / "segments.yml").write_text((FIXTURES / "config" / "segments.yml").read_text())
    (root / "policy.yml").write_text(yaml.safe_dump(POLICY))
    (root / "programs" / "retarget.yml").write_text(yaml.safe_dump(program(**sync)))
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "simple").symlink_to(FIXTURES / "templates" / "simple")
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(root))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(templates))
    return root


def control_contact(crm_rows, **fields) -> str:
    """A new contact the global control group takes."""
    from lifecycle.model.db import bucket_of

    for i in range(100_000):
        cid = f"ctl{i:05d}"
        if bucket_of(f"{CONTROL['salt']}:{cid}") < CONTROL["percent"] * 100:
            return crm_rows.contact(cid, **fields)
    raise AssertionError("no control contact id found")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def row(email: str | None, phone_digits: str | None) -> dict[str, str]:
    """The row the sandbox holds for a member: its email as written (already trimmed and
    lowercased by the caller) and its phone's digits with the country code."""
    out = {}
    if email:
        out["EMAIL_SHA256"] = sha(email)
    if phone_digits:
        out["PHONE_SHA256"] = sha(phone_digits)
    return out


def rows(*members: dict[str, str]) -> list[dict[str, str]]:
    """Rows as the sandbox lists them (sorted by their (key, hash) pairs)."""
    return sorted(members, key=lambda m: tuple(sorted(m.items())))
