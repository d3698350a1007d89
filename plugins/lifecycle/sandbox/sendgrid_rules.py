"""What SendGrid's v3 Mail Send accepts: the published request schema plus the live API's own rules.

Errors come back as SendGrid words them (``{"message", "field", "help"}``), one per problem found.
Beyond the schema the live API requires at least one personalization, a non-empty ``to`` in each,
at most 1,000 recipients in all, a subject and content unless a template provides them, unique
recipient addresses, string custom args within 10,000 bytes, no reserved headers, ``send_at`` at
most 72 hours ahead, and not both ``reply_to`` and ``reply_to_list``. The sandbox checks recipient
uniqueness across the whole request (the live API checks within each personalization): a mail
send that names one address twice is a double send the caller did not mean.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lifecycle.sandbox import specs
from lifecycle.sandbox.validation import SchemaValidator, SchemaViolation, json_type_name

MAX_RECIPIENTS = 1000
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_SEND_AT_AHEAD_SECONDS = 72 * 3600
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "x-sg-id", "x-sg-eid", "received", "dkim-signature", "Content-Type",
        "Content-Transfer-Encoding", "To", "From", "Subject", "Reply-To", "CC", "BCC",
    )
)  # fmt: skip
RECIPIENT_KINDS = ("to", "cc", "bcc")

PERSONALIZATIONS_REQUIRED = "The personalizations field is required and must have at least one personalization."
PERSONALIZATIONS_LIMIT = (
    "The personalizations field is limited to 1000 personalizations per API request. You may either "
    "include fewer personalizations in your request or send multiple requests."
)
TO_REQUIRED = (
    "The to array is required for all personalization objects, and must have at least one email "
    "object with a valid email address."
)
FROM_REQUIRED = (
    "The from object must be provided for every email send. It is an object that requires the email "
    'parameter, but may also contain a name parameter.  e.g. {"email" : "example@example.com"}  or '
    '{"email" : "example@example.com", "name" : "Example Recipient"}.'
)
SUBJECT_REQUIRED = (
    "The subject is required. You can get around this requirement if you use a template with a "
    "subject defined or if every personalization has a subject defined."
)
CONTENT_REQUIRED = (
    "Unless a valid template_id is provided, the content parameter is required. There must be at least "
    "one defined content block. We typically suggest both text/plain and text/html blocks are included, "
    "but only one block is required."
)
CONTENT_VALUE = "The content value must be a string at least one character in length."
CONTENT_ORDER = "The text/plain content type must be first, followed by text/html, followed by any other content."
CONTENT_ONCE = "If present, text/plain and text/html may only be provided once."
DUPLICATE_RECIPIENT = (
    "Each email address in the personalization block should be unique between to, cc, and bcc. "
    "We found the first duplicate instance of [{address}] in the {field} field."
)
TOO_MANY_RECIPIENTS = (
    "The total number of recipients must be no more than 1000. This includes all recipients defined "
    "within the to, cc, and bcc parameters, across each object in the personalizations array."
)
INVALID_ADDRESS = "Does not contain a valid address."
CUSTOM_ARGS_TOO_LARGE = "The custom_args may not exceed 10,000 bytes per personalization."
RESERVED_HEADER = "The {name} header is reserved and may not be set in headers."
SEND_AT_TOO_FAR = "The send_at parameter may not be scheduled more than 72 hours in advance."
REPLY_TO_BOTH = "You can use either the reply_to property or reply_to_list property but not both."

_SCHEMA_MESSAGES: dict[tuple[str, str], str] = {
    ("personalizations", "required"): PERSONALIZATIONS_REQUIRED,
    ("personalizations", "maxItems"): PERSONALIZATIONS_LIMIT,
    ("personalizations.*.to", "required"): TO_REQUIRED,
    ("from", "required"): FROM_REQUIRED,
    ("from.email", "required"): FROM_REQUIRED,
    ("from.email", "format"): "The from email does not contain a valid address.",
    ("reply_to.email", "format"): "The reply_to email does not contain a valid address.",
    ("subject", "minLength"): SUBJECT_REQUIRED,
    ("content.*.value", "required"): CONTENT_VALUE,
    ("content.*.value", "minLength"): CONTENT_VALUE,
}

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*\.[A-Za-z]{{2,63}}$")


@dataclass(frozen=True)
class FieldError:
    """One reason SendGrid refuses a request, in its error-object shape."""

    message: str
    field: str | None

    def as_json(self) -> dict[str, Any]:
        """The error object as SendGrid returns it inside ``{"errors": [...]}``."""
        return {"message": self.message, "field": self.field, "help": None}


def is_email(address: str) -> bool:
    """Whether ``address`` is a syntactically valid ASCII email address with a dotted domain."""
    return len(address) <= 254 and _EMAIL.match(address) is not None


def validate_mail_send(body: Any, now: float) -> list[FieldError]:
    """Every reason SendGrid would refuse this decoded request body at unix time ``now``."""
    operation = specs.sendgrid_mail_send()
    validator = SchemaValidator(operation.document, {"email": is_email})
    violations = validator.validate(body, operation.body_schema)
    if violations:
        return [_schema_error(violation) for violation in violations]
    return list(_live_api_rules(body, now))


def _schema_error(violation: SchemaViolation) -> FieldError:
    shape = ".".join("*" if isinstance(part, int) else part for part in violation.path)
    message = _SCHEMA_MESSAGES.get((shape, violation.keyword))
    if message is None and violation.keyword == "format":
        message = INVALID_ADDRESS
    return FieldError(message or violation.message, violation.field or None)


def _live_api_rules(body: Mapping[str, Any], now: float) -> Iterator[FieldError]:
    personalizations: list[dict[str, Any]] = body["personalizations"]
    if not personalizations:
        yield FieldError(PERSONALIZATIONS_REQUIRED, "personalizations")
        return
    yield from _recipient_rules(personalizations)
    for index, personalization in enumerate(personalizations):
        field = f"personalizations.{index}"
        yield from _custom_args_rules(body.get("custom_args", {}), personalization.get("custom_args", {}), field)
        yield from _header_rules(personalization.get("headers", {}), f"{field}.headers")
        yield from _send_at_rules(personalization.get("send_at"), now, f"{field}.send_at")
    yield from _header_rules(body.get("headers", {}), "headers")
    yield from _send_at_rules(body.get("send_at"), now, "send_at")
    if "reply_to" in body and "reply_to_list" in body:
        yield FieldError(REPLY_TO_BOTH, "reply_to_list")
    if not body.get("template_id"):
        if not body.get("subject") and not all(item.get("subject") for item in personalizations):
            yield FieldError(SUBJECT_REQUIRED, "subject")
        yield from _content_rules(body.get("content", []))


def _recipient_rules(personalizations: list[dict[str, Any]]) -> Iterator[FieldError]:
    seen: set[str] = set()
    duplicate_reported = False
    total = 0
    for index, personalization in enumerate(personalizations):
        if not personalization["to"]:
            yield FieldError(TO_REQUIRED, f"personalizations.{index}.to")
        for kind in RECIPIENT_KINDS:
            for recipient in personalization.get(kind, ()):
                total += 1
                address = recipient["email"].lower()
                if address in seen and not duplicate_reported:
                    field = f"personalizations.{index}.{kind}"
                    yield FieldError(DUPLICATE_RECIPIENT.format(address=recipient["email"], field=field), field)
                    duplicate_reported = True
                seen.add(address)
    if total > MAX_RECIPIENTS:
        yield FieldError(TOO_MANY_RECIPIENTS, "personalizations")


def _custom_args_rules(
    message_level: Mapping[str, Any], personalization_level: Mapping[str, Any], field: str
) -> Iterator[FieldError]:
    for name, value in personalization_level.items():
        if not isinstance(value, str):
            yield FieldError(
                f"Invalid type. Expected: string, given: {json_type_name(value)}.",
                f"{field}.custom_args.{name}",
            )
    merged = {**message_level, **personalization_level}
    if len(json.dumps(merged, ensure_ascii=False).encode("utf-8")) > MAX_CUSTOM_ARGS_BYTES:
        yield FieldError(CUSTOM_ARGS_TOO_LARGE, f"{field}.custom_args")


def _header_rules(headers: Mapping[str, Any], field: str) -> Iterator[FieldError]:
    for name, value in headers.items():
        if name.lower() in RESERVED_HEADERS:
            yield FieldError(RESERVED_HEADER.format(name=name), f"{field}.{name}")
        elif not isinstance(value, str):
            yield FieldError(f"Invalid type. Expected: string, given: {json_type_name(value)}.", f"{field}.{name}")


def _send_at_rules(send_at: int | None, now: float, field: str) -> Iterator[FieldError]:
    if send_at is not None and send_at > now + MAX_SEND_AT_AHEAD_SECONDS:
        yield FieldError(SEND_AT_TOO_FAR, field)


def _content_rules(content: list[dict[str, str]]) -> Iterator[FieldError]:
    if not content:
        yield FieldError(CONTENT_REQUIRED, "content")
        return
    types = [block["type"].lower() for block in content]
    if types.count("text/plain") > 1 or types.count("text/html") > 1:
        yield FieldError(CONTENT_ONCE, "content")
        return
    leading = [kind for kind in ("text/plain", "text/html") if kind in types]
    if types[: len(leading)] != leading:
        yield FieldError(CONTENT_ORDER, "content")
