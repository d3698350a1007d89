"""The sandbox's Twilio 2010-04-01 Messages API: create, fetch and list messages, status callbacks, STOP.

An accepted message is answered ``queued`` and then progresses at once to ``sent`` and to
``delivered`` (a ``To`` number ending in ``0000`` ends ``undelivered`` with error 30003); each
step is posted to the request's ``StatusCallback`` URL, signed with the Auth Token. Inbound
messages posted through the control API apply Twilio's default opt-out keywords and reach the
configured inbound URL as Twilio's signed inbound-message webhook.

WhatsApp (``whatsapp:`` addresses) follows WhatsApp's rules as Twilio enforces them: free-form
text only within 24 hours of the contact's last inbound WhatsApp message (else error 63016), any
time from an approved content template (``ContentSid`` of one the sandbox knows, else error 21655;
``ContentVariables`` fill its ``{{1}}``... placeholders). Inbound WhatsApp messages are kept in
the message list (``direction`` ``inbound``), as Twilio lists them; an inbound one posted with an
``at`` time stands for one received then.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from lifecycle.sandbox import specs
from lifecycle.sandbox.records import Recorder
from lifecycle.sandbox.sms_segments import count_segments
from lifecycle.sandbox.twilio_rules import (
    E164,
    INVALID_CONTENT_SID,
    OUTSIDE_WINDOW,
    UNSUBSCRIBED,
    WHATSAPP,
    TwilioError,
    invalid_parameter,
    is_whatsapp,
    parse_form,
    validate_create_message,
)
from lifecycle.sandbox.validation import SchemaValidator
from lifecycle.sandbox.webhooks import WebhookDispatcher
from lifecycle.sandbox.wire import Reply, json_reply

API_VERSION = "2010-04-01"
SANDBOX_SENDER = "+15005550006"
UNDELIVERED_SUFFIX = "0000"
UNDELIVERED_CODE = 30003
UNDELIVERED_MESSAGE = "Unreachable destination handset"
OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})
DEFAULT_PAGE_SIZE = 50
SANDBOX_ONLY_FIELDS = ("status_callback", "media_url")
WHATSAPP_WINDOW = timedelta(hours=24)
DEFAULT_CONTENT_TEMPLATES = {
    "HX" + "0" * 31 + "1": "Hi {{1}}, there is news for you at {{2}}. Reply to hear more.",
}
"""The approved content templates the sandbox knows by SID (their text, with ``{{n}}`` placeholders)."""
INVALID_CONTENT_VARIABLES = TwilioError(400, 21656, "The ContentVariables Parameter is invalid")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")

AUTHENTICATE = TwilioError(401, 20003, "Authenticate")
_FAULT_ERRORS = {
    429: TwilioError(429, 20429, "Too Many Requests"),
    500: TwilioError(500, 20500, "Internal Server Error"),
    503: TwilioError(503, 20503, "Service Unavailable"),
}


def new_sid(prefix: str) -> str:
    """A Twilio resource SID: a two-letter prefix and 32 hex digits."""
    return prefix + uuid.uuid4().hex


def error_reply(error: TwilioError, headers: dict[str, str] | None = None) -> Reply:
    """A Twilio error response."""
    return json_reply(error.status, error.as_json(), headers)


def _not_found(path: str) -> Reply:
    return error_reply(TwilioError(404, 20404, f"The requested resource {path} was not found"))


def _parse_date_filter(value: str) -> datetime | date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = parsedate_to_datetime(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _public(message: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in message.items() if key not in SANDBOX_ONLY_FIELDS}


class TwilioApi:
    """Serves the Messages endpoints for one account and keeps what they accepted in a :class:`Recorder`."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        recorder: Recorder,
        dispatcher: WebhookDispatcher,
        inbound_url: str | None,
    ) -> None:
        operation = specs.twilio_create_message()
        sid_schema = operation.path_parameters["AccountSid"]
        if SchemaValidator(operation.document).validate(account_sid, sid_schema):
            raise ValueError(f"the Twilio account SID must match {sid_schema['pattern']}")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.recorder = recorder
        self.dispatcher = dispatcher
        self.inbound_url = inbound_url
        self.content_templates = dict(DEFAULT_CONTENT_TEMPLATES)

    def approve_content(self, sid: str, text: str) -> None:
        """Know ``sid`` as an approved content template reading ``text`` (``{{1}}`` placeholders)."""
        self.content_templates[sid] = text

    def fault_reply(self, status: int, retry_after: int) -> Reply:
        """The response to an injected 429/500/503 fault."""
        headers = {"Retry-After": str(retry_after)} if status == 429 else {}
        return error_reply(_FAULT_ERRORS[status], headers)

    def authenticate(self, headers: Mapping[str, str], path: str, path_sid: str) -> Reply | None:
        """The error response when the Basic credentials or the path's account do not match, else None."""
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, password = "", ""
        valid = (
            scheme.lower() == "basic"
            and hmac.compare_digest(user, self.account_sid)
            and hmac.compare_digest(password, self.auth_token)
        )
        if not valid:
            return error_reply(AUTHENTICATE, {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if path_sid != self.account_sid:
            return _not_found(path)
        return None

    def create_message(self, body: bytes) -> Reply:
        """``POST .../Messages.json``: validate, record, answer 201 ``queued`` and progress the message."""
        params, error = validate_create_message(parse_form(body))
        if error is None and self.recorder.is_stopped(params["To"]):
            error = UNSUBSCRIBED
        now = datetime.now(UTC)
        if error is None and is_whatsapp(params["To"]):
            params, error = self._whatsapp(params, now)
        if error is not None:
            return error_reply(error)
        sid = new_sid("SM")
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json"
        media = params.get("MediaUrl", [])
        message: dict[str, Any] = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": params.get("Body", ""),
            "date_created": format_datetime(now),
            "date_sent": None,
            "date_updated": format_datetime(now),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": params.get("From"),
            "messaging_service_sid": params.get("MessagingServiceSid"),
            "num_media": str(len(media)),
            "num_segments": str(count_segments(params.get("Body", ""))),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": params["To"],
            "uri": uri,
            "status_callback": params.get("StatusCallback"),
            "media_url": media,
        }
        self.recorder.add_sms(message)
        reply = json_reply(201, _public(message))
        self._progress(message)
        return reply

    def _whatsapp(self, params: dict[str, Any], now: datetime) -> tuple[dict[str, Any], TwilioError | None]:
        """A WhatsApp message's parameters (a template's filled in as its body), or why Twilio refuses it."""
        sid = params.get("ContentSid")
        if sid is None:
            last = self._last_inbound(params["To"])
            return params, None if last is not None and now - last < WHATSAPP_WINDOW else OUTSIDE_WINDOW
        if sid not in self.content_templates:
            return params, INVALID_CONTENT_SID
        try:
            variables = json.loads(params.get("ContentVariables") or "{}")
        except ValueError:
            variables = None
        if not isinstance(variables, dict):
            return params, INVALID_CONTENT_VARIABLES
        text = _PLACEHOLDER.sub(lambda m: str(variables.get(m.group(1), m.group(0))), self.content_templates[sid])
        return {**params, "Body": text}, None

    def _last_inbound(self, number: str) -> datetime | None:
        for message in reversed(self.recorder.sms_list()):
            if message["direction"] == "inbound" and message["from"] == number:
                return parsedate_to_datetime(message["date_created"])
        return None

    def _progress(self, message: dict[str, Any]) -> None:
        now = format_datetime(datetime.now(UTC))
        sender = message["from"] or SANDBOX_SENDER
        final: dict[str, Any] = {"status": "delivered"}
        if message["to"].endswith(UNDELIVERED_SUFFIX):
            final = {
                "status": "undelivered",
                "error_code": UNDELIVERED_CODE,
                "error_message": UNDELIVERED_MESSAGE,
            }
        for step in ({"status": "sent", "date_sent": now}, final):
            self.recorder.update_sms(message["sid"], **step, **{"from": sender, "date_updated": now})
            message = {**message, **step, "from": sender}
            self.dispatcher.enqueue("twilio", "status", message["status_callback"], self._callback_params(message))

    def _callback_params(self, message: Mapping[str, Any]) -> dict[str, str]:
        params = {
            "MessageSid": message["sid"],
            "SmsSid": message["sid"],
            "MessageStatus": message["status"],
            "SmsStatus": message["status"],
            "AccountSid": self.account_sid,
            "From": message["from"],
            "To": message["to"],
            "ApiVersion": API_VERSION,
        }
        if message["messaging_service_sid"]:
            params["MessagingServiceSid"] = message["messaging_service_sid"]
        if message["error_code"]:
            params["ErrorCode"] = str(message["error_code"])
        return params

    def fetch_message(self, path: str, sid: str) -> Reply:
        """``GET .../Messages/{Sid}.json``: the message resource, or 404 (code 20404)."""
        message = self.recorder.sms(sid)
        return json_reply(200, _public(message)) if message is not None else _not_found(path)

    def list_messages(self, path: str, query: str) -> Reply:
        """``GET .../Messages.json``: newest first, filtered by ``To``, ``From``, ``DateSent[<>]``; paged."""
        operation = specs.twilio_list_messages()
        raw = {name: values[0] for name, values in parse_qs(query).items()}
        paging = {
            name: int(raw[name]) if raw[name].isdigit() else raw[name] for name in ("PageSize", "Page") if name in raw
        }
        validator = SchemaValidator(operation.document)
        for name, value in paging.items():
            if validator.validate(value, operation.query_parameters[name]):
                return error_reply(invalid_parameter(name))
        try:
            bounds: dict[str, datetime | date] = {
                name: _parse_date_filter(raw[name]) for name in ("DateSent", "DateSent<", "DateSent>") if name in raw
            }
        except (TypeError, ValueError):
            return error_reply(invalid_parameter("DateSent"))
        matches = [
            _public(message)
            for message in reversed(self.recorder.sms_list())
            if raw.get("To", message["to"]) == message["to"]
            and raw.get("From", message["from"]) == message["from"]
            and _sent_within(message["date_sent"], bounds)
        ]
        size, page = int(paging.get("PageSize", DEFAULT_PAGE_SIZE)), int(paging.get("Page", 0))
        start = page * size
        filters: dict[str, str | int] = {
            name: raw[name] for name in ("To", "From", "DateSent", "DateSent<", "DateSent>") if name in raw
        }

        def page_uri(number: int) -> str:
            return f"{path}?{urlencode({**filters, 'PageSize': size, 'Page': number})}"

        has_next = start + size < len(matches)
        return json_reply(
            200,
            {
                "messages": matches[start : start + size],
                "end": max(start, min(start + size, len(matches)) - 1),
                "first_page_uri": page_uri(0),
                "next_page_uri": page_uri(page + 1) if has_next else None,
                "page": page,
                "page_size": size,
                "previous_page_uri": page_uri(page - 1) if page > 0 else None,
                "start": start,
                "uri": page_uri(page),
            },
        )

    def inbound(self, sender: str, body: str, to: str | None = None, at: datetime | None = None) -> dict[str, Any]:
        """Receive an SMS (or, from ``whatsapp:<number>``, a WhatsApp message, kept in the message
        list as received ``at``, by default now) from ``sender``: apply opt-out keywords and post
        the inbound-message webhook."""
        if not E164.match(sender.removeprefix(WHATSAPP)):
            raise ValueError("'from' must be an E.164 phone number, or whatsapp: and one")
        keyword = " ".join(body.split()).upper()
        opt_out_type = None
        if keyword in OPT_OUT_KEYWORDS:
            opt_out_type = "STOP"
            self.recorder.set_stopped(sender, True)
        elif keyword in OPT_IN_KEYWORDS:
            opt_out_type = "START"
            self.recorder.set_stopped(sender, False)
        elif keyword in HELP_KEYWORDS:
            opt_out_type = "HELP"
        recipient = to or self._last_sender_to(sender)
        if is_whatsapp(sender) and not is_whatsapp(recipient):
            recipient = WHATSAPP + recipient
        sid = new_sid("SM")
        if is_whatsapp(sender):
            self._keep_inbound(sid, sender, recipient, body, at or datetime.now(UTC))
        params = {
            "MessageSid": sid,
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "AccountSid": self.account_sid,
            "From": sender,
            "To": recipient,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": str(count_segments(body)),
            "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        }
        if opt_out_type is not None:
            params["OptOutType"] = opt_out_type
        self.dispatcher.enqueue("twilio", "inbound", self.inbound_url, params)
        return {"message_sid": sid, "opt_out_type": opt_out_type, "stopped": self.recorder.is_stopped(sender)}

    def _keep_inbound(self, sid: str, sender: str, recipient: str, body: str, at: datetime) -> None:
        received = format_datetime(at if at.tzinfo else at.replace(tzinfo=UTC))
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json"
        self.recorder.add_sms(
            {
                "account_sid": self.account_sid,
                "api_version": API_VERSION,
                "body": body,
                "date_created": received,
                "date_sent": received,
                "date_updated": received,
                "direction": "inbound",
                "error_code": None,
                "error_message": None,
                "from": sender,
                "messaging_service_sid": None,
                "num_media": "0",
                "num_segments": "1",
                "price": None,
                "price_unit": "USD",
                "sid": sid,
                "status": "received",
                "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
                "to": recipient,
                "uri": uri,
                "status_callback": None,
                "media_url": [],
            }
        )

    def _last_sender_to(self, number: str) -> str:
        for message in reversed(self.recorder.sms_list()):
            if message["to"] == number and message["from"]:
                return message["from"]
        return SANDBOX_SENDER


def _sent_within(date_sent: str | None, bounds: Mapping[str, datetime | date]) -> bool:
    if not bounds:
        return True
    if date_sent is None:
        return False
    sent = parsedate_to_datetime(date_sent)
    for name, bound in bounds.items():
        value: datetime | date = sent if isinstance(bound, datetime) else sent.date()
        if (name == "DateSent" and value != bound) or (name == "DateSent<" and value > bound):
            return False
        if name == "DateSent>" and value < bound:
            return False
    return True
