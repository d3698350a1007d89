"""The webhook channel: a step POSTs a rendered JSON payload to an HTTP endpoint (an in-app message
service, a sales tool, Slack), through :mod:`lifecycle.channels.http_webhook`.

The step's template is ``<template>.json.j2``, rendered sandboxed like every part and checked to
be JSON. The endpoint is a connection: ``webhook_default`` for the ``webhook`` channel; another
endpoint is another channel of this class under its own name and connection
(``register(WebhookChannel("sales_tool", "sales_tool"))``), which steps then name. Its address is
the contact id: always present, always valid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lifecycle.channels.base import TEST_MESSAGE_ID, Addressed, Channel, OutboundWebhook, Providers, Sender
from lifecycle.channels.registry import register
from lifecycle.messages.rendering import Rendered, RenderError
from lifecycle.model.addresses import CONTACT_ID
from lifecycle.model.channels import TemplatePart
from lifecycle.model.ledger import OutcomeReason
from lifecycle.model.ledger import SuppressionReason as R

SUFFIX = "json.j2"
TEST_PREFIX = "webhook:"


def parsed_payload(step: str, rendered: str) -> Any:
    """The rendered payload's JSON value; :class:`RenderError` naming the step when it is not JSON."""
    try:
        return json.loads(rendered)
    except json.JSONDecodeError as exc:
        raise RenderError(
            f"step {step}'s .{SUFFIX}",
            f"{OutcomeReason.WEBHOOK_NOT_JSON}: {exc.msg} (line {exc.lineno}) — fix: write values with |tojson",
        ) from None


def payload_json(step: str, rendered: str) -> str:
    """The rendered payload as compact JSON text; :class:`RenderError` naming the step when it is not JSON."""
    return json.dumps(parsed_payload(step, rendered), separators=(",", ":"), ensure_ascii=False)


class WebhookChannel(Channel[OutboundWebhook]):
    """A JSON payload about the contact, POSTed to the endpoint of connection ``conn_id``, signed
    (HMAC-SHA256 over a timestamp and the body) and carrying the ledger's idempotency key, so a
    retried delivery is recognisable. No quiet hours: it reaches a system, not a phone. An
    unknown outcome stays unknown (the endpoint cannot be asked), and each claim is renewed
    before every attempt.

    :param name: the channel's name in program files and the ledger.
    :param conn_id: the Airflow connection of its endpoint.
    """

    address = CONTACT_ID
    list_reasons = (R.UNSUBSCRIBED, R.DUPLICATE_CONTACT)
    template_parts = (TemplatePart("payload", SUFFIX, "as_written"),)
    quiet_hours = False
    reconcilable = False
    renews_claim = True
    test_recipients = "webhook connections (webhook:webhook_default)"

    def __init__(self, name: str = "webhook", conn_id: str = "webhook_default") -> None:
        self.name = name
        self.conn_id = conn_id

    def outbound(self, message: Addressed, rendered: Rendered, links: Mapping[str, str]) -> OutboundWebhook:
        payload = payload_json(message.step, rendered.parts["payload"])
        return OutboundWebhook(message.message_id, message.idempotency_key, message.contact["contact_id"], payload)

    def test_copy(self, key: str, contact_id: str, recipient: str, rendered: Rendered, program: str) -> OutboundWebhook:
        return OutboundWebhook(TEST_MESSAGE_ID, key, contact_id, payload_json("test copy", rendered.parts["payload"]))

    def is_test_recipient(self, recipient: str) -> bool:
        return recipient.strip() == f"{TEST_PREFIX}{self.conn_id}"

    def describe(self, parts: Mapping[str, str]) -> str:
        return f"POST to connection {self.conn_id}\n{parts['payload']}"

    def sender(self, providers: Providers) -> Sender[OutboundWebhook]:
        from lifecycle.channels.http_webhook import WebhookHook, WebhookSender

        return WebhookSender(providers.hook(WebhookHook).for_connection(self.conn_id))


WEBHOOK_CHANNEL = register(WebhookChannel())
