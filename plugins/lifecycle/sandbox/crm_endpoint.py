"""The sandbox's CRM: a task API and an activity API shaped like a CRM's (HubSpot's tasks and
engagements, Salesforce's Task), for the ``sales_task`` channel and the activity write-back.

- ``POST /sales/tasks``: a task for a salesperson; ``subject``, ``owner_id``, ``contact_id`` and
  ``due_at`` (ISO 8601) are required (422 otherwise).
- ``POST /sales/activities``: a marketing touch logged on the contact's timeline; ``contact_id``,
  ``channel``, ``program``, ``message_id`` and ``sent_at`` are required.

Both check the ``Lifecycle-Signature`` (the local stack's secret ``sandbox-webhook-secret``) and
keep each ``Idempotency-Key`` once, as the webhook receiver does
(:class:`~lifecycle.sandbox.webhook_endpoint.WebhookEndpoint`); faults target ``sales_tasks`` and
``crm_activities``. ``GET /_sandbox/sales/tasks`` and ``GET /_sandbox/sales/activities`` list what
was recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from lifecycle.sandbox.webhook_endpoint import WebhookEndpoint

TASKS_PATH = "/sales/tasks"
ACTIVITIES_PATH = "/sales/activities"
TASK_FIELDS = ("subject", "owner_id", "contact_id", "due_at")
ACTIVITY_FIELDS = ("contact_id", "channel", "program", "message_id", "sent_at")


def _requires(fields: Sequence[str], times: Sequence[str]) -> Callable[[Any], str | None]:
    def check(payload: Any) -> str | None:
        if not isinstance(payload, dict):
            return "the body must be a JSON object"
        missing = [name for name in fields if payload.get(name) in (None, "")]
        if missing:
            return f"missing required properties: {', '.join(missing)}"
        for name in times:
            try:
                datetime.fromisoformat(str(payload[name]))
            except ValueError:
                return f"{name} must be an ISO 8601 time"
        return None

    return check


def tasks_endpoint() -> WebhookEndpoint:
    """The task API's receiver."""
    return WebhookEndpoint(prefix=TASKS_PATH, id_prefix="task_", check=_requires(TASK_FIELDS, ("due_at",)))


def activities_endpoint() -> WebhookEndpoint:
    """The activity API's receiver."""
    return WebhookEndpoint(prefix=ACTIVITIES_PATH, id_prefix="act_", check=_requires(ACTIVITY_FIELDS, ("sent_at",)))
