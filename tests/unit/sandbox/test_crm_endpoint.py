"""The sandbox CRM's task and activity APIs: signed requests only, required properties, each
idempotency key kept once, listed through the control API."""

from __future__ import annotations

import json
import time

import pytest
import requests

from lifecycle.channels.http_webhook import signature
from lifecycle.sandbox import SandboxServer

TASK = {"subject": "Call Ada", "owner_id": "u-1", "contact_id": "c1", "due_at": "2026-11-17T15:00:00Z"}


@pytest.fixture(scope="module")
def sandbox():
    with SandboxServer() as server:
        yield server


def _post(url: str, secret: str, payload: dict, key: str = "k1") -> requests.Response:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "Lifecycle-Signature": signature(secret, int(time.time()), body),
        "Idempotency-Key": key,
    }
    return requests.post(url, data=body, headers=headers, timeout=10)


def test_a_task_is_kept_once_per_key_and_listed(sandbox):
    sandbox.reset()
    first = _post(sandbox.sales_tasks_url(), sandbox.webhook_secret, TASK)
    again = _post(sandbox.sales_tasks_url(), sandbox.webhook_secret, TASK)
    assert first.status_code == 202 and first.headers["X-Delivery-Id"].startswith("task_")
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    listed = requests.get(f"{sandbox.url}/_sandbox/sales/tasks", timeout=10).json()["tasks"]
    assert [t["payload"] for t in listed] == [TASK] == [t["payload"] for t in sandbox.sales_tasks()]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({**TASK, "owner_id": None}, "missing required properties: owner_id"),
        ({**TASK, "due_at": "tomorrow"}, "due_at must be an ISO 8601 time"),
        (["not", "an", "object"], "the body must be a JSON object"),
    ],
)
def test_a_task_without_what_a_crm_requires_is_refused(sandbox, payload, problem):
    answer = _post(sandbox.sales_tasks_url(), sandbox.webhook_secret, payload, key=problem)
    assert (answer.status_code, answer.json()["error"]) == (422, problem)


def test_an_activity_needs_a_good_signature_and_its_properties(sandbox):
    sandbox.reset()
    activity = {
        "contact_id": "c1",
        "channel": "email",
        "program": "p",
        "message_id": "7",
        "sent_at": "2026-11-16T15:00:00Z",
    }
    assert _post(sandbox.activities_url(), "wrong-secret", activity).status_code == 401
    assert _post(sandbox.activities_url(), sandbox.webhook_secret, {**activity, "channel": ""}).status_code == 422
    assert _post(sandbox.activities_url(), sandbox.webhook_secret, activity, key="7").status_code == 202
    assert [a["idempotency_key"] for a in sandbox.activities()] == ["7"]
