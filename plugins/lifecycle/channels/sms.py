"""The SMS channel: sent through Twilio (:mod:`lifecycle.channels.twilio`)."""

from __future__ import annotations

from collections.abc import Mapping

from lifecycle.channels.base import TEST_MESSAGE_ID, Addressed, Channel, OutboundSms, Providers, Sender
from lifecycle.channels.registry import register
from lifecycle.messages.rendering import Rendered
from lifecycle.model.addresses import PHONE
from lifecycle.model.channels import TemplatePart
from lifecycle.model.ledger import SuppressionReason as R


def sms_segments(body: str) -> int:
    """Count SMS segments: 160/153 GSM-7 characters, 70/67 UTF-16 code units for UCS-2 bodies (an
    emoji is two units, as carriers and Twilio count them)."""
    try:
        body.encode("ascii")
        single, multi, units = 160, 153, len(body)
    except UnicodeEncodeError:
        single, multi, units = 70, 67, len(body.encode("utf-16-le")) // 2
    if units <= single:
        return 1
    return -(-units // multi)


class SmsChannel(Channel[OutboundSms]):
    """SMS: one line of text to the contact's E.164 phone number. Twilio can be asked what became
    of a message, and a long run of SMS renews each claim before every attempt."""

    name = "sms"
    address = PHONE
    list_reasons = (R.SMS_STOP, R.UNSUBSCRIBED, R.INVALID_ADDRESS, R.DUPLICATE_CONTACT)
    template_parts = (TemplatePart("text", "sms.j2", "line"),)
    quiet_hours = True
    reconcilable = True
    renews_claim = True
    test_recipients = "E.164 numbers (+14155550100)"

    def outbound(self, message: Addressed, rendered: Rendered, links: Mapping[str, str]) -> OutboundSms:
        contact = message.contact
        return OutboundSms(
            message.message_id,
            message.idempotency_key,
            contact["contact_id"],
            contact[self.address.column],
            rendered.text,
        )

    def test_copy(self, key: str, contact_id: str, recipient: str, rendered: Rendered, program: str) -> OutboundSms:
        return OutboundSms(TEST_MESSAGE_ID, key, contact_id, recipient, f"[TEST] {rendered.text}")

    def is_test_recipient(self, recipient: str) -> bool:
        return recipient.strip().startswith("+")

    def describe(self, parts: Mapping[str, str]) -> str:
        return f"SMS ({len(parts['text'])} chars)\n{parts['text']}"

    def segments(self, message: OutboundSms) -> int:
        return sms_segments(message.body)

    def sender(self, providers: Providers) -> Sender[OutboundSms]:
        from lifecycle.channels.twilio import TwilioHook, TwilioSender

        return TwilioSender(providers.hook(TwilioHook), providers)


SMS_CHANNEL = register(SmsChannel())
