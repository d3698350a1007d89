"""``lifecycle demo`` sends on every channel through the provider sandbox: email, SMS, WhatsApp
(the approved content template), the webhook channel (in-app messages) and sales tasks, with the
channel tour of config/examples/demo_channels/ added after the simulation; its summary prints the
figures per channel, why the choosing step chose each channel, and the tour's ad audience as the
sandbox's ad platform holds it and as the state records it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from lifecycle import config
from lifecycle.devtools import demo
from lifecycle.paths import PROJECT_ROOT


def test_the_channel_tour_programs_load_beside_the_shipped_ones(tmp_path, monkeypatch) -> None:
    root = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", root)
    for program in (demo.CHANNEL_TOUR / "programs").glob("*.yml"):
        shutil.copy(program, root / "programs" / program.name)
    templates = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "include" / "templates", templates)
    shutil.copytree(demo.CHANNEL_TOUR / "templates", templates, dirs_exist_ok=True)
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(root))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(templates))
    programs, errors = config.load_all_programs()
    assert errors == {}
    tour = {pid: programs[pid] for pid in ("thank_you_offer", "in_app_tips", "high_intent_calls")}
    reach = {c for p in tour.values() for s in p.steps for c in s.reach}
    assert reach == {"whatsapp", "sms", "email", "webhook", "sales_task"}
    synced = {pid: p.audience_sync for pid, p in tour.items() if p.audience_sync is not None}
    assert list(synced) == ["thank_you_offer"] and synced["thank_you_offer"].conn_id == "ads_default"
    content = (demo.CHANNEL_TOUR / "templates" / "demo_channels" / "thank_you.whatsapp.json.j2").read_text()
    assert demo.CONTENT_SID in content, "the WhatsApp template names the content the demo approves"


@pytest.mark.slow
@pytest.mark.airflow
def test_the_demo_sends_on_every_channel(tmp_path) -> None:
    env = os.environ | {"LIFECYCLE_DEMO_DIR": str(tmp_path / "demo"), "PYTHONPATH": str(PROJECT_ROOT / "plugins")}
    env.pop("AIRFLOW_HOME", None)
    env = {k: v for k, v in env.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "LIFECYCLE_CONFIG"))}
    env.pop("LIFECYCLE_TEMPLATES_DIR", None)
    args = ["demo", "--contacts", "1000", "--days", "1", "--sim-days", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "lifecycle.devtools.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "0 failed run(s)" in out
    accepted = re.search(r"\[demo\] sandbox accepted (.*)", out)
    assert accepted, out[-3000:]
    counts = {what: int(n) for n, what in re.findall(r"(\d+) ([A-Za-z ]+?)(?:,|$)", accepted.group(1))}
    assert set(counts) == {"emails", "SMS", "WhatsApp messages", "webhook posts", "sales tasks"}
    assert all(n > 0 for n in counts.values()), counts
    table = out[out.index("Messages per channel") :]
    for channel in ("email", "sms", "whatsapp", "webhook", "sales_task"):
        assert re.search(rf"^{channel}\s+\d+\s+[1-9]", table, re.M), (channel, table[:1500])
    assert re.search(r"^  whatsapp\s+order\s+[1-9]", table, re.M)
    assert re.search(r"^  sms\s+fallback: whatsapp unreachable \(no_consent\)\s+[1-9]", table, re.M)
    # The scoring DAG ran before the programs: each score's model is trained and says what it found.
    scores = out[out.index("Predictive scores") :]
    for name in ("churn_risk", "purchase_propensity"):
        assert re.search(rf"^  {name}\s+AUC \S+ vs baseline \S+ .* contacts scored", scores, re.M), scores[:800]
    audience = re.search(
        r"^\[demo\] ad audience (\d+) of thank_you_offer: ([\d,]+) rows in the sandbox, ([\d,]+) recorded as synced; "
        r"last sync added ([\d,]+), removed ([\d,]+)$",
        out,
        re.M,
    )
    assert audience, out[-3000:]
    held, recorded, added, removed = (int(n.replace(",", "")) for n in audience.groups()[1:])
    assert held > 0 and held == recorded, (held, recorded)
    # One run of the program (--days 1): its only sync added every row.
    assert (added, removed) == (held, 0)
