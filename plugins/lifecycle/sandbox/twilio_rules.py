"""What Twilio's CreateMessage accepts: the published request schema plus the live API's own rules.

Form values are coerced to the types the schema declares (booleans, integers, repeated keys as
arrays), checked against it and against its ``x-twilio.conditional`` groups (``From`` or
``MessagingServiceSid``; ``Body``, ``MediaUrl`` or ``ContentSid``), then against the live rules:
``To`` in E.164, a body of at most 1,600 characters, ``To`` different from ``From``. A WhatsApp
message is addressed ``whatsapp:<E.164>`` (``To``, and ``From`` when given). Like Twilio, only the
first problem is reported, with Twilio's error code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lifecycle.sandbox import specs
from lifecycle.sandbox.validation import SchemaValidator, resolve_ref

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
WHATSAPP = "whatsapp:"
SHORT_CODE = re.compile(r"^\d{5,6}$")
ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
MAX_BODY_CHARS = 1600
PARAMETER_ORDER = ("To", "From", "MessagingServiceSid", "Body", "MediaUrl", "ContentSid", "StatusCallback")
_INTEGER = re.compile(r"^-?\d+$")


@dataclass(frozen=True)
class TwilioError:
    """One reason Twilio refuses a request, with its error code."""

    status: int
    code: int
    message: str

    def as_json(self) -> dict[str, Any]:
        """The error body as Twilio returns it."""
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


TO_REQUIRED = TwilioError(400, 21604, "A 'To' phone number is required.")
INVALID_TO = TwilioError(400, 21211, "Invalid 'To' Phone Number")
INVALID_FROM = TwilioError(400, 21212, "Invalid 'From' Phone Number")
SENDER_REQUIRED = TwilioError(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message.")
INVALID_SERVICE = TwilioError(400, 21705, "The Messaging Service Sid is invalid.")
BODY_REQUIRED = TwilioError(400, 21602, "Message body is required.")
BODY_TOO_LONG = TwilioError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
INVALID_CALLBACK = TwilioError(400, 21609, "Invalid StatusCallback URL")
INVALID_MEDIA = TwilioError(400, 21620, "Invalid media URL(s)")
SAME_TO_FROM = TwilioError(400, 21266, "'To' and 'From' number cannot be the same")
UNSUBSCRIBED = TwilioError(400, 21610, "Attempt to send to unsubscribed recipient")
CHANNEL_MISMATCH = TwilioError(400, 63007, "Twilio could not find a Channel with the specified From address")
INVALID_CONTENT_SID = TwilioError(400, 21655, "The ContentSid is Invalid")
OUTSIDE_WINDOW = TwilioError(
    400,
    63016,
    "Failed to send freeform message because you are outside the allowed window. "
    "If you are using WhatsApp, please use a Message Template.",
)

_PARAMETER_ERRORS: dict[tuple[str, str], TwilioError] = {
    ("To", "required"): TO_REQUIRED,
    ("To", "format"): INVALID_TO,
    ("From", "format"): INVALID_FROM,
    ("StatusCallback", "format"): INVALID_CALLBACK,
}
_PARAMETER_DEFAULTS: dict[str, TwilioError] = {
    "MessagingServiceSid": INVALID_SERVICE,
    "MediaUrl": INVALID_MEDIA,
}
_GROUP_ERRORS: dict[str, TwilioError] = {"From": SENDER_REQUIRED, "Body": BODY_REQUIRED}


def invalid_parameter(name: str) -> TwilioError:
    """The error for a parameter whose value the schema does not allow."""
    return TwilioError(400, 20001, f"Invalid parameter: {name}")


def is_sender(value: str) -> bool:
    """Whether ``value`` is a phone number (``whatsapp:`` one too), short code or alphanumeric
    sender ID Twilio accepts."""
    if value.startswith(WHATSAPP):
        return bool(E164.match(value.removeprefix(WHATSAPP)))
    return bool(E164.match(value) or SHORT_CODE.match(value) or ALPHANUMERIC_SENDER.match(value))


def is_whatsapp(value: Any) -> bool:
    """Whether an address is a WhatsApp one (``whatsapp:+14155550100``)."""
    return isinstance(value, str) and value.startswith(WHATSAPP)


def is_http_url(value: str) -> bool:
    """Whether ``value`` is an absolute http(s) URL with a host."""
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def parse_form(body: bytes) -> dict[str, list[str]]:
    """Decode an ``application/x-www-form-urlencoded`` body; empty values count as absent, as at Twilio."""
    return parse_qs(body.decode("utf-8"), keep_blank_values=False)


def _coerce_one(value: str, kind: str | None) -> Any:
    if kind == "boolean" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if kind == "integer" and _INTEGER.match(value):
        return int(value)
    if kind == "number":
        try:
            return float(value)
        except ValueError:
            return value
    return value


def coerce_form(
    form: Mapping[str, list[str]], schema: Mapping[str, Any], document: Mapping[str, Any]
) -> dict[str, Any]:
    """Turn form values into the JSON types ``schema`` declares; parameters it does not name are dropped."""
    params: dict[str, Any] = {}
    for name, property_schema in schema.get("properties", {}).items():
        if name not in form:
            continue
        resolved = resolve_ref(document, property_schema["$ref"]) if "$ref" in property_schema else property_schema
        if resolved.get("type") == "array":
            item_type = resolved.get("items", {}).get("type")
            params[name] = [_coerce_one(value, item_type) for value in form[name]]
        else:
            params[name] = _coerce_one(form[name][0], resolved.get("type"))
    return params


def _order(name: str) -> int:
    return PARAMETER_ORDER.index(name) if name in PARAMETER_ORDER else len(PARAMETER_ORDER)


def validate_create_message(form: Mapping[str, list[str]]) -> tuple[dict[str, Any], TwilioError | None]:
    """Coerce and check a CreateMessage form: the typed parameters, and the first error if any."""
    operation = specs.twilio_create_message()
    params = coerce_form(form, operation.body_schema, operation.document)
    validator = SchemaValidator(operation.document, {"phone-number": is_sender, "uri": is_http_url})
    found: list[tuple[int, TwilioError]] = []
    for violation in validator.validate(params, operation.body_schema):
        name = str(violation.path[0])
        error = _PARAMETER_ERRORS.get((name, violation.keyword)) or _PARAMETER_DEFAULTS.get(name)
        found.append((_order(name), error or invalid_parameter(name)))
    for group in operation.one_of_groups:
        if not any(name in params for name in group):
            found.append((_order(group[0]), _GROUP_ERRORS.get(group[0]) or invalid_parameter(group[0])))
    if "To" in params and isinstance(params["To"], str) and not E164.match(params["To"].removeprefix(WHATSAPP)):
        found.append((_order("To"), INVALID_TO))
    if found:
        return params, min(found, key=lambda item: item[0])[1]
    if len(params.get("Body", "")) > MAX_BODY_CHARS:
        return params, BODY_TOO_LONG
    if params["To"] == params.get("From"):
        return params, SAME_TO_FROM
    if "From" in params and is_whatsapp(params["To"]) != is_whatsapp(params["From"]):
        return params, CHANNEL_MISMATCH
    return params, None
