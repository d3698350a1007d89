"""The WhatsApp channel: sent through Twilio's Messages API to ``whatsapp:`` addresses
(:class:`lifecycle.channels.twilio.WhatsAppSender`).

WhatsApp lets a business write free-form only within 24 hours of the contact's last message to
it; any other message must be a template WhatsApp approved (a Twilio Content API template, sent
by its ``ContentSid`` with ``ContentVariables``). A step's template therefore has two parts:

- ``<template>.whatsapp.j2``: the free-form text, sent inside the window;
- ``<template>.whatsapp.json.j2`` (optional): the approved content template, rendered (sandboxed,
  like every part) to a JSON object ``{"content_sid": "HX...", "variables": {"1": "..."}}``;
  sent outside the window. Without it, a message outside the window fails with its reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from lifecycle.channels.base import TEST_MESSAGE_ID, Addressed, Channel, OutboundWhatsApp, Providers, Sender
from lifecycle.channels.registry import register
from lifecycle.messages.rendering import Rendered, RenderError
from lifecycle.model.addresses import PHONE
from lifecycle.model.channels import TemplatePart
from lifecycle.model.ledger import SuppressionReason as R

CONTENT_SUFFIX = "whatsapp.json.j2"
CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")


def content_template(step: str, rendered: str | None) -> tuple[str | None, dict[str, str]]:
    """The content SID and variables a rendered ``.whatsapp.json.j2`` part names (``None, {}``
    without one); :class:`RenderError` naming the template when it is not such an object."""
    if rendered is None:
        return None, {}
    name = f"step {step}'s .{CONTENT_SUFFIX}"
    try:
        value = json.loads(rendered)
    except json.JSONDecodeError as exc:
        raise RenderError(name, f"not JSON ({exc.msg}, line {exc.lineno}) — fix: quote values with |tojson") from None
    sid = value.get("content_sid") if isinstance(value, dict) else None
    variables = value.get("variables", {}) if isinstance(value, dict) else None
    if not isinstance(sid, str) or not CONTENT_SID.fullmatch(sid) or not isinstance(variables, dict):
        raise RenderError(
            name, 'must be {"content_sid": "HX<32 hex digits>", "variables": {"1": "..."}} — fix the template'
        )
    return sid, {str(key): str(val) for key, val in variables.items()}


class WhatsAppChannel(Channel[OutboundWhatsApp]):
    """WhatsApp: free-form text inside the contact's 24-hour window, else the step's approved
    content template, to the contact's E.164 phone number as ``whatsapp:<number>``. Its own opt-out
    list (an inbound STOP on WhatsApp); quiet hours when the policy gives it some.
    An unknown outcome stays unknown (a template's text is Twilio's, so a lookup cannot match it),
    and each claim is renewed before every attempt."""

    name = "whatsapp"
    address = PHONE
    list_reasons = (R.WHATSAPP_STOP, R.UNSUBSCRIBED, R.INVALID_ADDRESS, R.DUPLICATE_CONTACT)
    template_parts = (
        TemplatePart("text", "whatsapp.j2", "block"),
        TemplatePart("content", CONTENT_SUFFIX, "as_written", optional=True),
    )
    quiet_hours = True
    reconcilable = False
    renews_claim = True
    test_recipients = "WhatsApp numbers (whatsapp:+14155550100)"

    def outbound(self, message: Addressed, rendered: Rendered, links: Mapping[str, str]) -> OutboundWhatsApp:
        contact = message.contact
        sid, variables = content_template(message.step, rendered.parts.get("content"))
        return OutboundWhatsApp(
            message.message_id,
            message.idempotency_key,
            contact["contact_id"],
            contact[self.address.column],
            rendered.text.strip(),
            sid,
            variables,
        )

    def test_copy(
        self, key: str, contact_id: str, recipient: str, rendered: Rendered, program: str
    ) -> OutboundWhatsApp:
        sid, variables = content_template("test copy", rendered.parts.get("content"))
        number = recipient.strip().removeprefix("whatsapp:")
        text = f"[TEST] {rendered.text.strip()}"
        return OutboundWhatsApp(TEST_MESSAGE_ID, key, contact_id, number, text, sid, variables)

    def is_test_recipient(self, recipient: str) -> bool:
        return recipient.strip().startswith("whatsapp:+")

    def describe(self, parts: Mapping[str, str]) -> str:
        template = parts.get("content", "").strip() or "none: outside the 24-hour window it fails"
        return f"WhatsApp\n--- inside the 24-hour window ---\n{parts['text']}--- content template ---\n{template}"

    def sender(self, providers: Providers) -> Sender[OutboundWhatsApp]:
        from lifecycle.channels.twilio import TwilioHook, WhatsAppSender

        return WhatsAppSender(providers.hook(TwilioHook), providers)


WHATSAPP_CHANNEL = register(WhatsAppChannel())
