"""The sales-task channel: a step creates a task for the contact's owner (a salesperson) through a
CRM's task API, delivered like a webhook (:mod:`lifecycle.channels.http_webhook`: signed, with the
ledger's idempotency key, retried on 429/5xx).

The step's ``<template>.json.j2`` renders the task's content as a JSON object (``subject``,
``body``, ``priority``, ``type``...); the channel adds what a CRM task needs and the template must
not decide: ``owner_id`` (``contacts.owner``), ``contact_id`` (the associated contact), ``due_at``
(the moment the task is created plus the step's ``due_within``, 24 hours unset) and
``idempotency_key``. The channel's address is the owner: a contact without one is suppressed
``missing_address`` at planning, never failed at the endpoint.

A task goes to a salesperson, not to the contact, so the contact's consent on a channel is not
checked (no CRM records consent to "be called by your account manager"; the basis of a sales
follow-up is the sales relationship the owner stands for). What still stops it: the program's
rules (holdouts and the global control group, an opted-out topic, a met goal, the policy's
open-ticket, negotiation and recent-purchase rules), a duplicate contact (the survivor gets the
task), a contact who opted out of everything (unsubscribed on every inbox channel:
:func:`lifecycle.engine.suppression.list_reasons`), and the ``unsubscribed`` list on this channel (a
do-not-call for sales tasks); a service program's tasks ignore both, like any marketing
unsubscribe. Caps and priority count it like any channel's message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from lifecycle import config
from lifecycle.channels.base import TEST_MESSAGE_ID, Addressed, OutboundWebhook
from lifecycle.channels.registry import register
from lifecycle.channels.webhook import SUFFIX, WebhookChannel, parsed_payload
from lifecycle.messages.rendering import Rendered, RenderError
from lifecycle.model.addresses import OWNER

DEFAULT_DUE_WITHIN = timedelta(hours=24)
CONN_ID = "sales_tasks_default"


def task_content(step: str, rendered: str) -> dict[str, Any]:
    """The rendered task content as a JSON object; :class:`RenderError` naming the step when it is not one."""
    value = parsed_payload(step, rendered)
    if not isinstance(value, dict):
        raise RenderError(f"step {step}'s .{SUFFIX}", "a sales task must be a JSON object (subject, body, priority...)")
    return value


def task_payload(
    content: Mapping[str, Any], *, owner: str, contact_id: str, due_at: datetime, idempotency_key: str
) -> str:
    """The CRM task as compact JSON: the template's content, then the fields the channel sets."""
    task = {
        "type": "call",
        "priority": "normal",
        "status": "not_started",
        **content,
        "owner_id": owner,
        "contact_id": contact_id,
        "due_at": due_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "idempotency_key": idempotency_key,
    }
    return json.dumps(task, separators=(",", ":"), ensure_ascii=False)


def due_within(program: str, step: str) -> timedelta:
    """The step's ``due_within`` as its program file says now (the default when it says none or
    cannot be read)."""
    path = config.program_files_dir() / f"{program}.yml"
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return DEFAULT_DUE_WITHIN
    return _due_within(str(path), stamp, step)


@lru_cache(maxsize=64)
def _due_within(path: str, stamp: int, step: str) -> timedelta:
    try:
        program = config.load_program(Path(path))
    except (config.ConfigError, OSError):
        return DEFAULT_DUE_WITHIN
    found = next((s.due_within for s in program.steps if s.id == step), None)
    return found if found is not None else DEFAULT_DUE_WITHIN


class SalesTaskChannel(WebhookChannel):
    """A task for the contact's owner, POSTed to the CRM task endpoint of connection ``conn_id``
    (signed, with the idempotency key, as a webhook). No quiet hours, no consent of the contact's
    (it reaches a salesperson); an unknown outcome stays unknown.

    :param name: the channel's name in program files and the ledger.
    :param conn_id: the Airflow connection of the CRM's task endpoint.
    :param clock: the wall clock the due time counts from (the task is created when it is sent).
    """

    address = OWNER
    consent = False
    creates_tasks = True
    test_recipients = "sales task connections (webhook:sales_tasks_default)"

    def __init__(
        self, name: str = "sales_task", conn_id: str = CONN_ID, clock: Callable[[], datetime] | None = None
    ) -> None:
        super().__init__(name, conn_id)
        self.clock = clock or (lambda: datetime.now(UTC))

    def outbound(self, message: Addressed, rendered: Rendered, links: Mapping[str, str]) -> OutboundWebhook:
        owner = str(message.contact.get(OWNER.column) or "").strip()
        if not owner:
            raise RenderError(f"step {message.step}", "the contact has no owner to create the task for")
        content = task_content(message.step, rendered.parts["payload"])
        due_at = self.clock() + due_within(message.program, message.step)
        contact_id = message.contact["contact_id"]
        payload = task_payload(
            content, owner=owner, contact_id=contact_id, due_at=due_at, idempotency_key=message.idempotency_key
        )
        return OutboundWebhook(message.message_id, message.idempotency_key, contact_id, payload)

    def test_copy(self, key: str, contact_id: str, recipient: str, rendered: Rendered, program: str) -> OutboundWebhook:
        content = {**task_content("test copy", rendered.parts["payload"]), "test": True}
        due_at = self.clock() + DEFAULT_DUE_WITHIN
        payload = task_payload(content, owner="test", contact_id=contact_id, due_at=due_at, idempotency_key=key)
        return OutboundWebhook(TEST_MESSAGE_ID, key, contact_id, payload)

    def describe(self, parts: Mapping[str, str]) -> str:
        return f"task for the contact's owner, POST to connection {self.conn_id}\n{parts['payload']}"


SALES_TASK_CHANNEL = register(SalesTaskChannel())
