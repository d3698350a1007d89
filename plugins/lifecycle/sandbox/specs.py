"""The providers' published OpenAPI descriptions, as request schemas the sandbox validates against.

The JSON documents ship in ``include/provider_specs`` (SendGrid v3 Mail Send from
twilio/sendgrid-oai, Twilio 2010-04-01 Messages from twilio/twilio-oai, both MIT).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from lifecycle.paths import INCLUDE_DIR
from lifecycle.sandbox.validation import resolve_ref

SPEC_DIR = INCLUDE_DIR / "provider_specs"
SENDGRID_SPEC = "sendgrid_mail_v3.openapi.json"
TWILIO_SPEC = "twilio_api_v2010_messages.openapi.json"
MAIL_SEND_PATH = "/v3/mail/send"
MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"


@dataclass(frozen=True)
class Operation:
    """One API operation: its request schemas and the document their ``$ref`` pointers resolve in."""

    document: Mapping[str, Any]
    body_schema: Mapping[str, Any]
    path_parameters: Mapping[str, Mapping[str, Any]]
    query_parameters: Mapping[str, Mapping[str, Any]]
    one_of_groups: tuple[tuple[str, ...], ...]


@cache
def load_document(file_name: str) -> Mapping[str, Any]:
    """Parse one spec file from :data:`SPEC_DIR` (cached: the documents are read-only)."""
    return json.loads((SPEC_DIR / file_name).read_text(encoding="utf-8"))


def _deref(document: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    return resolve_ref(document, node["$ref"]) if "$ref" in node else node


def _pascal(snake: str) -> str:
    return "".join(word.capitalize() for word in snake.split("_"))


def operation(file_name: str, path: str, method: str) -> Operation:
    """Read the request body schema, parameters and conditional requirements of one operation.

    ``one_of_groups`` comes from Twilio's ``x-twilio.conditional`` extension (at least one
    parameter of each group is required), with parameter names in their wire (PascalCase) form.
    """
    document = load_document(file_name)
    spec = document["paths"][path][method]
    body_schema: Mapping[str, Any] = {}
    if "requestBody" in spec:
        content = _deref(document, spec["requestBody"])["content"]
        body_schema = next(iter(content.values()))["schema"]
    parameters = [_deref(document, item) for item in spec.get("parameters", ())]
    by_location: dict[str, dict[str, Mapping[str, Any]]] = {"path": {}, "query": {}}
    for parameter in parameters:
        by_location.setdefault(parameter["in"], {})[parameter["name"]] = parameter["schema"]
    groups = tuple(tuple(_pascal(name) for name in group) for group in spec.get("x-twilio", {}).get("conditional", ()))
    return Operation(document, body_schema, by_location["path"], by_location["query"], groups)


@cache
def sendgrid_mail_send() -> Operation:
    """``POST /v3/mail/send``, with the spec's one known erratum corrected.

    The published document types the message-level ``custom_args`` as a string, while the live
    API, its documentation and the official SDKs send an object of string values (as the same
    document types ``custom_args`` inside a personalization). The sandbox follows the live API.
    """
    base = operation(SENDGRID_SPEC, MAIL_SEND_PATH, "post")
    schema = copy.deepcopy(dict(base.body_schema))
    schema["properties"]["custom_args"] = {"type": "object", "additionalProperties": {"type": "string"}}
    return Operation(base.document, schema, base.path_parameters, base.query_parameters, base.one_of_groups)


@cache
def twilio_create_message() -> Operation:
    """``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (CreateMessage)."""
    return operation(TWILIO_SPEC, MESSAGES_PATH, "post")


@cache
def twilio_list_messages() -> Operation:
    """``GET /2010-04-01/Accounts/{AccountSid}/Messages.json`` (ListMessage)."""
    return operation(TWILIO_SPEC, MESSAGES_PATH, "get")
