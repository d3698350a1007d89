"""The sandbox's SendGrid v3 Mail Send: authenticate, validate, record one email per recipient, emit events.

An accepted request is answered ``202`` with an ``X-Message-Id``; each recipient becomes one
recorded email whose ``sg_message_id`` is the message id plus a per-recipient suffix, as in
SendGrid's events. Its Event Webhook events (see :mod:`lifecycle.sandbox.sendgrid_events`) are
queued for the configured webhook URL. A request in sandbox mode (``mail_settings.sandbox_mode``)
is validated and answered ``200`` without being recorded, as SendGrid does.
"""

from __future__ import annotations

import base64
import gzip
import hmac
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from lifecycle.sandbox.records import Recorder
from lifecycle.sandbox.sendgrid_events import automatic_outcome, build_event
from lifecycle.sandbox.sendgrid_rules import RECIPIENT_KINDS, FieldError, validate_mail_send
from lifecycle.sandbox.webhooks import WebhookDispatcher
from lifecycle.sandbox.wire import Reply, json_reply

MAX_BODY_BYTES = 30 * 1024 * 1024
RATE_LIMIT = 600
_FAULT_MESSAGES = {429: "too many requests", 500: "internal server error", 503: "service unavailable"}


def errors_reply(status: int, errors: list[FieldError], headers: dict[str, str] | None = None) -> Reply:
    """A SendGrid error response: ``{"errors": [{"message", "field", "help"}, ...]}``."""
    return json_reply(status, {"errors": [error.as_json() for error in errors]}, headers)


def new_message_id() -> str:
    """An ``X-Message-Id`` in SendGrid's style (url-safe base64 of 16 random bytes)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")


def recipient_emails(body: Mapping[str, Any], x_message_id: str, received_at: str) -> Iterator[dict[str, Any]]:
    """One record per recipient of an accepted request, with its personalization applied."""
    content = {block["type"].lower(): block["value"] for block in body.get("content", [])}
    index = 0
    for personalization in body["personalizations"]:
        sender = personalization.get("from", body["from"])
        for kind in RECIPIENT_KINDS:
            for recipient in personalization.get(kind, ()):
                yield {
                    "x_message_id": x_message_id,
                    "sg_message_id": f"{x_message_id}.filterdrecv-sandbox.{index}",
                    "to": recipient["email"],
                    "to_name": recipient.get("name"),
                    "kind": kind,
                    "subject": personalization.get("subject", body.get("subject")),
                    "from": sender["email"],
                    "from_name": sender.get("name"),
                    "reply_to": body.get("reply_to", {}).get("email"),
                    "categories": list(body.get("categories", [])),
                    "custom_args": {**body.get("custom_args", {}), **personalization.get("custom_args", {})},
                    "headers": {**body.get("headers", {}), **personalization.get("headers", {})},
                    "html": content.get("text/html"),
                    "text": content.get("text/plain"),
                    "asm": body.get("asm"),
                    "template_id": body.get("template_id"),
                    "send_at": personalization.get("send_at", body.get("send_at")),
                    "received_at": received_at,
                    "events": [],
                }
                index += 1


class SendGridApi:
    """Serves ``POST /v3/mail/send`` for one API key and keeps what it accepted in a :class:`Recorder`."""

    def __init__(
        self, api_key: str, recorder: Recorder, dispatcher: WebhookDispatcher, webhook_url: str | None
    ) -> None:
        self.api_key = api_key
        self.recorder = recorder
        self.dispatcher = dispatcher
        self.webhook_url = webhook_url

    def fault_reply(self, status: int, retry_after: int) -> Reply:
        """The response to an injected 429/500/503 fault (429 with Retry-After and rate-limit headers)."""
        headers: dict[str, str] = {}
        if status == 429:
            headers = {
                "Retry-After": str(retry_after),
                "X-RateLimit-Limit": str(RATE_LIMIT),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time()) + retry_after),
            }
        return errors_reply(status, [FieldError(_FAULT_MESSAGES[status], None)], headers)

    def authenticate(self, headers: Mapping[str, str]) -> Reply | None:
        """The 401 response when the ``Authorization: Bearer`` key is missing or wrong, else None."""
        scheme, _, key = headers.get("authorization", "").partition(" ")
        if not key:
            return errors_reply(401, [FieldError("authorization required", None)])
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip(), self.api_key):
            message = "The provided authorization grant is invalid, expired, or revoked"
            return errors_reply(401, [FieldError(message, None)])
        return None

    def mail_send(self, headers: Mapping[str, str], raw: bytes) -> Reply:
        """Validate and accept one mail send request (already authenticated)."""
        if len(raw) > MAX_BODY_BYTES:
            return errors_reply(413, [FieldError("content too large", None)])
        try:
            if headers.get("content-encoding", "").lower() == "gzip":
                raw = gzip.decompress(raw)
            body = json.loads(raw)
        except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError):
            return errors_reply(400, [FieldError("Bad Request", None)])
        errors = validate_mail_send(body, time.time())
        if errors:
            return errors_reply(400, errors)
        if body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable"):
            return Reply(200)
        x_message_id = new_message_id()
        emails = list(recipient_emails(body, x_message_id, datetime.now(UTC).isoformat()))
        self.recorder.add_emails(emails)
        for email in emails:
            self.emit(email, automatic_outcome(email["to"]))
        return Reply(202, headers={"X-Message-Id": x_message_id})

    def emit(self, email: Mapping[str, Any], events: tuple[tuple[str, str | None], ...]) -> list[dict[str, Any]]:
        """Record and queue Event Webhook events, given as (event, bounce type) pairs, for one email."""
        timestamp = int(time.time())
        payloads = [build_event(email, event, timestamp, bounce_type) for event, bounce_type in events]
        for payload in payloads:
            self.recorder.add_email_event(email["sg_message_id"], payload["event"])
            self.dispatcher.enqueue("sendgrid", "event", self.webhook_url, payload)
        return payloads
