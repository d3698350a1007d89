"""The sales_task channel: the task a CRM receives, the consent it does not ask, the shipped example."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lifecycle import config
from lifecycle.channels import registry
from lifecycle.channels.base import MARKETING, Subscription
from lifecycle.channels.sales_task import SalesTaskChannel
from lifecycle.engine import preferences
from lifecycle.messages.rendering import Rendered, RenderError, render
from lifecycle.paths import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "config" / "examples" / "sales_tasks"
NOW = datetime(2026, 11, 16, 15, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Message:
    message_id: int = 7
    idempotency_key: str = "calls:1:call"
    program: str = "no_such_program"
    step: str = "call"
    contact: dict[str, Any] = field(default_factory=lambda: {"contact_id": "c1", "owner": " u-42 "})
    subscription: Subscription = MARKETING


def test_the_task_carries_the_owner_contact_due_time_and_key_over_the_template():
    channel = SalesTaskChannel(clock=lambda: NOW)
    rendered = Rendered({"payload": '{"subject": "Call Ada", "owner_id": "someone else", "priority": "high"}'})
    out = channel.outbound(Message(), rendered, {})
    task = json.loads(out.payload)
    assert task == {
        "type": "call",
        "priority": "high",
        "status": "not_started",
        "subject": "Call Ada",
        "owner_id": "u-42",
        "contact_id": "c1",
        "due_at": "2026-11-17T15:00:00Z",  # the default 24 hours: the program file is not found
        "idempotency_key": "calls:1:call",
    }
    assert (out.message_id, out.idempotency_key, out.contact_id) == (7, "calls:1:call", "c1")


@pytest.mark.parametrize("payload", ['["a list"]', "{not json"])
def test_a_task_that_is_not_a_json_object_fails_with_the_step(payload):
    with pytest.raises(RenderError, match="step call"):
        SalesTaskChannel().outbound(Message(), Rendered({"payload": payload}), {})


def test_it_asks_no_consent_and_is_no_channel_a_contact_unsubscribes_from():
    channel = registry.get("sales_task")
    assert channel.consent is False and not channel.quiet_hours
    assert "sales_task" not in preferences.opt_out_channels()
    assert registry.get("webhook").consent is True


def test_due_within_is_for_task_steps_and_positive(tmp_path, monkeypatch):
    step = {"id": "s", "template": "t"}
    assert config.Step(**step, channel="sales_task", due_within="2h").due_within == timedelta(hours=2)
    with pytest.raises(ValueError, match="due_within is only for a step whose channel or fallback creates tasks"):
        config.Step(**step, channel="email", due_within="2h")
    with pytest.raises(ValueError, match="due_within must be positive"):
        config.Step(**step, channel="sales_task", due_within="-1h")


def test_the_shipped_example_loads_and_its_step_sets_the_due_time(monkeypatch):
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(EXAMPLE))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(EXAMPLE / "templates"))
    program = config.load_program(
        EXAMPLE / "programs" / "high_intent_leads.yml", config.load_segments(PROJECT_ROOT / "config" / "segments.yml")
    )
    step = program.steps[0]
    assert (step.channel, step.due_within) == ("sales_task", timedelta(hours=24))
    context = {"contact": {"first_name": "Ada", "role": "CTO"}, "account": {"name": "Initech"}}
    rendered = render(step.template, step.channel, context, EXAMPLE / "templates")
    message = Message(program="high_intent_leads", step=step.id)
    task = json.loads(SalesTaskChannel(clock=lambda: NOW).outbound(message, rendered, {}).payload)
    assert task["subject"] == "High-intent lead: call Ada within 24h" and task["priority"] == "high"
    assert task["body"].startswith("Pricing page and a demo request") and "Initech" in task["body"]
