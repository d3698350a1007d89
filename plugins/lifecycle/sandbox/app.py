"""The sandbox application: provider endpoints (with injected faults) and the ``/_sandbox/`` control API.

Provider endpoints:

- ``POST /v3/mail/send`` (SendGrid, Bearer API key)
- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (Twilio create, Basic SID/token)
- ``GET /2010-04-01/Accounts/{AccountSid}/Messages.json`` (list: ``To``, ``From``, ``DateSent[<>]``)
- ``GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`` (fetch)
- ``POST /webhook/{path}`` (the webhook channel's receiver: :mod:`lifecycle.sandbox.webhook_endpoint`)
- ``POST /sales/tasks`` and ``POST /sales/activities`` (the CRM's task and activity APIs:
  :mod:`lifecycle.sandbox.crm_endpoint`)
- ``POST|DELETE /{version}/{audience_id}/users`` (Meta's Custom Audience users API, Bearer access
  token: :mod:`lifecycle.sandbox.ads_endpoint`)

Control endpoints (JSON, no auth): ``GET /_sandbox/health``, ``GET /_sandbox/sendgrid/messages``
and ``GET /_sandbox/twilio/messages`` (optional ``?to=``), ``GET /_sandbox/sendgrid/public_key``,
``POST /_sandbox/sendgrid/events``, ``POST /_sandbox/twilio/inbound``, ``GET|POST /_sandbox/faults``,
``GET /_sandbox/stats``, ``GET /_sandbox/webhooks`` (optional ``?provider=``), ``GET
/_sandbox/sales/tasks``, ``GET /_sandbox/sales/activities``, ``GET /_sandbox/audiences`` (optional
``?id=``), ``POST /_sandbox/flush``, ``POST
/_sandbox/reset`` and ``GET|POST /_sandbox/latency`` (``{"median_ms": 150, "sigma": 0.4}``: the
provider latency from now on; ``median_ms`` 0 is none; a reset leaves it as it is). Faults apply to
the send endpoints only (targets ``sendgrid``, ``twilio``, ``webhook``, ``sales_tasks``,
``crm_activities``, ``ads``).
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from lifecycle.sandbox.ads_endpoint import USERS_PATH, AdsEndpoint
from lifecycle.sandbox.crm_endpoint import ACTIVITIES_PATH, TASKS_PATH, activities_endpoint, tasks_endpoint
from lifecycle.sandbox.faults import FaultPlan, FaultRequestError, Target, parse_fault_request
from lifecycle.sandbox.latency import DEFAULT_SIGMA, Latency
from lifecycle.sandbox.records import Recorder
from lifecycle.sandbox.sendgrid_api import SendGridApi, errors_reply
from lifecycle.sandbox.sendgrid_events import BOUNCE_TYPES, EVENT_TYPES
from lifecycle.sandbox.sendgrid_rules import FieldError
from lifecycle.sandbox.signing import EventWebhookSigner
from lifecycle.sandbox.twilio_api import TwilioApi
from lifecycle.sandbox.twilio_api import error_reply as twilio_error_reply
from lifecycle.sandbox.twilio_rules import TwilioError
from lifecycle.sandbox.webhook_endpoint import WEBHOOK_PREFIX, WebhookEndpoint
from lifecycle.sandbox.webhooks import WebhookDispatcher
from lifecycle.sandbox.wire import Hangup, Reply, Request, json_reply

MAIL_SEND = "/v3/mail/send"
TWILIO_MESSAGES = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
TWILIO_MESSAGE = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages/([^/]+)\.json$")
CONTROL_PREFIX = "/_sandbox/"
DEFAULT_FLUSH_TIMEOUT = 30.0


class ControlError(ValueError):
    """A control API request the sandbox cannot act on; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class SandboxApp:
    """Everything behind the HTTP server: both providers, the fault plan, records and webhooks."""

    def __init__(
        self,
        *,
        sendgrid_api_key: str,
        twilio_account_sid: str,
        twilio_auth_token: str,
        sendgrid_webhook_url: str | None,
        twilio_inbound_url: str | None,
        latency: Latency | None = None,
    ) -> None:
        self.latency = latency or Latency()
        self.recorder = Recorder()
        self.faults = FaultPlan()
        self.signer = EventWebhookSigner()
        self.dispatcher = WebhookDispatcher(self.signer, twilio_auth_token)
        self.sendgrid = SendGridApi(sendgrid_api_key, self.recorder, self.dispatcher, sendgrid_webhook_url)
        self.twilio = TwilioApi(
            twilio_account_sid, twilio_auth_token, self.recorder, self.dispatcher, twilio_inbound_url
        )
        self.webhook = WebhookEndpoint()
        self.sales_tasks = tasks_endpoint()
        self.crm_activities = activities_endpoint()
        self.ads = AdsEndpoint()
        self._stopping = threading.Event()
        self._control_routes: dict[tuple[str, str], Callable[[Request], Any]] = {
            ("GET", "health"): lambda request: {"status": "ok"},
            ("GET", "sendgrid/messages"): lambda request: {"messages": self.recorder.emails(_query(request, "to"))},
            ("GET", "sendgrid/public_key"): lambda request: {"public_key": self.signer.public_key},
            ("POST", "sendgrid/events"): self._post_sendgrid_event,
            ("GET", "twilio/messages"): self._twilio_messages,
            ("POST", "twilio/inbound"): self._post_inbound,
            ("GET", "faults"): lambda request: {"pending": self.faults.pending()},
            ("POST", "faults"): lambda request: self.add_fault(_json_body(request)),
            ("GET", "stats"): lambda request: self.stats(),
            ("GET", "webhooks"): lambda request: {"webhooks": self.dispatcher.entries(_query(request, "provider"))},
            ("GET", "sales/tasks"): lambda request: {"tasks": self.sales_tasks.deliveries()},
            ("GET", "sales/activities"): lambda request: {"activities": self.crm_activities.deliveries()},
            ("GET", "audiences"): lambda request: {"audiences": self.ads.describe(_query(request, "id"))},
            ("POST", "flush"): self._post_flush,
            ("POST", "reset"): lambda request: self.reset(),
            ("GET", "latency"): lambda request: _describe_latency(self.latency),
            ("POST", "latency"): self._post_latency,
        }

    def start(self) -> None:
        """Start posting webhooks."""
        self._stopping.clear()
        self.dispatcher.start()

    def stop(self) -> None:
        """Interrupt delayed requests and stop posting webhooks."""
        self._stopping.set()
        self.dispatcher.stop()

    def handle(self, request: Request) -> Reply | Hangup:
        """Answer one request, or tell the server to hang up."""
        if request.path.startswith(CONTROL_PREFIX):
            return self._control(request)
        if request.path == MAIL_SEND:
            if request.method != "POST":
                return errors_reply(405, [FieldError("method not allowed", None)])
            return self._send("sendgrid", "sendgrid.mail_send", request, self._mail_send)
        if (route := _twilio_route(request.path)) is not None:
            return self._twilio(request, *route)
        if request.path.startswith(WEBHOOK_PREFIX):
            return self._send("webhook", "webhook.deliver", request, self.webhook.receive)
        if request.path == TASKS_PATH:
            return self._send("sales_tasks", "sales.create_task", request, self.sales_tasks.receive)
        if request.path == ACTIVITIES_PATH:
            return self._send("crm_activities", "sales.create_activity", request, self.crm_activities.receive)
        if USERS_PATH.match(request.path):
            return self._send("ads", "ads.audience_users", request, self.ads.receive)
        return json_reply(404, {"error": f"no sandbox endpoint for {request.method} {request.path}"})

    def _twilio(self, request: Request, account_sid: str, message_sid: str | None) -> Reply | Hangup:
        if message_sid is None and request.method == "POST":
            create = functools.partial(self._create_message, account_sid=account_sid)
            return self._send("twilio", "twilio.create_message", request, create)
        if request.method != "GET":
            return twilio_error_reply(TwilioError(405, 20004, "Method not allowed"))
        denied = self.twilio.authenticate(request.headers, request.path, account_sid)
        if message_sid is None:
            return self._count("twilio.list_messages", denied or self.twilio.list_messages(request.path, request.query))
        return self._count("twilio.fetch_message", denied or self.twilio.fetch_message(request.path, message_sid))

    def _create_message(self, request: Request, account_sid: str) -> Reply:
        denied = self.twilio.authenticate(request.headers, request.path, account_sid)
        return denied or self.twilio.create_message(request.body)

    def _mail_send(self, request: Request) -> Reply:
        return self.sendgrid.authenticate(request.headers) or self.sendgrid.mail_send(request.headers, request.body)

    def _count(self, endpoint: str, reply: Reply) -> Reply:
        self.recorder.count(endpoint, "requests")
        self.recorder.count(endpoint, f"responses.{reply.status}")
        return reply

    def _send(
        self, target: Target, endpoint: str, request: Request, process: Callable[[Request], Reply]
    ) -> Reply | Hangup:
        fault = self.faults.take(target)
        if fault is None:
            return self._count(endpoint, process(request))
        self.recorder.count(endpoint, f"faults.{fault.kind}")
        apis: dict[Target, SendGridApi | TwilioApi | WebhookEndpoint | AdsEndpoint] = {
            "sendgrid": self.sendgrid,
            "twilio": self.twilio,
            "webhook": self.webhook,
            "sales_tasks": self.sales_tasks,
            "crm_activities": self.crm_activities,
            "ads": self.ads,
        }
        api = apis[target]
        if fault.status is not None:
            return self._count(endpoint, api.fault_reply(fault.status, fault.retry_after))
        if fault.kind in ("slow", "timeout"):
            self._stopping.wait(fault.delay)
        if fault.kind in ("drop", "timeout"):
            self.recorder.count(endpoint, "requests")
            return Hangup()
        reply = self._count(endpoint, process(request))
        return Hangup() if fault.kind == "drop_after_accept" and reply.accepted else reply

    def _control(self, request: Request) -> Reply:
        route = self._control_routes.get((request.method, request.path.removeprefix(CONTROL_PREFIX).strip("/")))
        if route is None:
            return json_reply(404, {"error": f"no control endpoint {request.method} {request.path}"})
        try:
            return json_reply(200, route(request))
        except ControlError as error:
            return json_reply(error.status, {"error": str(error)})

    def stats(self) -> dict[str, Any]:
        """Request counters per endpoint (responses by status, faults by kind) and webhook counts."""
        return {"endpoints": self.recorder.stats(), "webhooks": self.dispatcher.counts()}

    def reset(self) -> dict[str, bool]:
        """Forget records, pending faults, opt-outs, stats and the webhook log."""
        self.recorder.reset()
        self.webhook.reset()
        self.sales_tasks.reset()
        self.crm_activities.reset()
        self.ads.reset()
        self.faults.clear()
        self.dispatcher.clear_log()
        return {"reset": True}

    def sendgrid_event(
        self,
        event: str,
        sg_message_id: str | None = None,
        x_message_id: str | None = None,
        bounce_type: str | None = None,
    ) -> list[dict[str, Any]]:
        """Emit one Event Webhook event for a recorded email (or every email of one ``x_message_id``)."""
        if event not in EVENT_TYPES:
            raise ControlError(f"event must be one of {', '.join(EVENT_TYPES)}")
        if bounce_type not in (None, *BOUNCE_TYPES):
            raise ControlError(f"type must be one of {', '.join(BOUNCE_TYPES)}")
        if not (sg_message_id or x_message_id):
            raise ControlError("give sg_message_id or x_message_id")
        emails = self.recorder.find_emails(sg_message_id=sg_message_id, x_message_id=x_message_id)
        if not emails:
            raise ControlError("no recorded email has that id", 404)
        return [payload for email in emails for payload in self.sendgrid.emit(email, ((event, bounce_type),))]

    def _post_sendgrid_event(self, request: Request) -> dict[str, Any]:
        payload = _json_body(request)
        events = self.sendgrid_event(
            str(payload.get("event", "")),
            sg_message_id=payload.get("sg_message_id"),
            x_message_id=payload.get("x_message_id"),
            bounce_type=payload.get("type"),
        )
        return {"events": events}

    def _twilio_messages(self, request: Request) -> dict[str, Any]:
        to = _query(request, "to")
        return {"messages": [message for message in self.recorder.sms_list() if to in (None, message["to"])]}

    def inbound_sms(self, sender: str, body: str, to: str | None = None, at: datetime | None = None) -> dict[str, Any]:
        """Receive an SMS (a WhatsApp message from ``whatsapp:<number>``, received ``at``) from
        ``sender`` (STOP and its synonyms opt the number out, START back in)."""
        try:
            return self.twilio.inbound(sender, body, to, at)
        except ValueError as error:
            raise ControlError(str(error)) from None

    def _post_inbound(self, request: Request) -> dict[str, Any]:
        payload = _json_body(request)
        try:
            at = datetime.fromisoformat(payload["at"]) if payload.get("at") else None
        except (TypeError, ValueError):
            raise ControlError("'at' must be an ISO 8601 time") from None
        return self.inbound_sms(str(payload.get("from", "")), str(payload.get("body", "")), payload.get("to"), at)

    def add_fault(self, request: dict[str, Any]) -> dict[str, Any]:
        """Queue the fault a ``POST /_sandbox/faults`` body describes; returns the pending faults."""
        try:
            targets, fault, count = parse_fault_request(request)
        except FaultRequestError as error:
            raise ControlError(str(error)) from None
        self.faults.add(targets, fault, count)
        return {"pending": self.faults.pending()}

    def _post_latency(self, request: Request) -> dict[str, Any]:
        payload = _json_body(request)
        try:
            median_ms, sigma = float(payload.get("median_ms", 0)), float(payload.get("sigma", DEFAULT_SIGMA))
            if not (math.isfinite(median_ms) and math.isfinite(sigma)):
                raise ValueError("not a finite number")
            latency = Latency(median_ms, sigma)
        except (TypeError, ValueError) as error:
            raise ControlError(f"median_ms and sigma must be non-negative numbers: {error}") from None
        self.latency = latency
        return _describe_latency(latency)

    def _post_flush(self, request: Request) -> dict[str, int]:
        timeout = _json_body(request).get("timeout", DEFAULT_FLUSH_TIMEOUT)
        return self.dispatcher.flush(float(timeout))


def _describe_latency(latency: Latency) -> dict[str, Any]:
    return {"median_ms": latency.median_ms, "sigma": latency.sigma, "description": latency.describe()}


def _twilio_route(path: str) -> tuple[str, str | None] | None:
    """The (account SID, message SID or None) a Twilio Messages path names, or None for other paths."""
    if match := TWILIO_MESSAGES.match(path):
        return match[1], None
    if match := TWILIO_MESSAGE.match(path):
        return match[1], match[2]
    return None


def _query(request: Request, name: str) -> str | None:
    values = parse_qs(request.query).get(name)
    return values[0] if values else None


def _json_body(request: Request) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    try:
        payload = json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError("the body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise ControlError("the body must be a JSON object")
    return payload
