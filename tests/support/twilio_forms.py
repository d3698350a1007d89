"""Twilio webhook forms as Twilio sends them: SIDs in Twilio's format and the parameters it includes."""

from __future__ import annotations

import hashlib

from lifecycle.sandbox import DEFAULT_TWILIO_SID

OUR_NUMBER = "+15005550006"


def message_sid(label: str) -> str:
    """A message SID (``SM`` and 32 hex digits), the same for the same label."""
    return "SM" + hashlib.md5(label.encode()).hexdigest()


def inbound_form(sender: str, body: str, label: str | None = None, **extra: str) -> dict[str, str]:
    """An inbound-message webhook from ``sender``; ``label`` names its MessageSid (default: the body)."""
    sid = message_sid(label or f"{sender}:{body}")
    return {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "AccountSid": DEFAULT_TWILIO_SID,
        "From": sender,
        "To": OUR_NUMBER,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    } | extra


def status_form(sid: str, status: str, to: str = "+14155550100", **extra: str) -> dict[str, str]:
    """A status callback for message ``sid``."""
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": DEFAULT_TWILIO_SID,
        "From": OUR_NUMBER,
        "To": to,
        "ApiVersion": "2010-04-01",
    } | extra
