"""The SMS channel: sent through Twilio (:mod:`lifecycle.channels.twilio`)."""

from __future__ import annotations

from collections.abc import Mapping

from lifecycle.channels.base import Channel
from lifecycle.channels.registry import register
from lifecycle.model.addresses import PHONE
from lifecycle.model.channels import TemplatePart


class SmsChannel(Channel):
    """SMS: one line of text to the contact's E.164 phone number. Twilio can be asked what became
    of a message, and a long run of SMS renews each claim before every attempt."""

    name = "sms"
    address = PHONE
    list_reasons = ("sms_stop", "unsubscribed", "invalid_address", "duplicate_contact")
    template_parts = (TemplatePart("text", "sms.j2", "line"),)
    quiet_hours = True
    reconcilable = True
    renews_claim = True

    def describe(self, parts: Mapping[str, str]) -> str:
        return f"SMS ({len(parts['text'])} chars)\n{parts['text']}"


SMS_CHANNEL = register(SmsChannel())
