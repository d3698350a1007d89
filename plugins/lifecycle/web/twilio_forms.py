"""What a Twilio webhook form may hold: the parameter names Twilio documents, each value's format.

Twilio signs a webhook as the URL followed by every parameter's name and value, sorted, with no
separator: moving characters from one name or value into its neighbour keeps the signature. A
captured request re-cut that way (``NumMedia=0`` folded into the ``MessageSid`` value, say) is
still "signed", so a form is read only when every name is one Twilio sends, each value has the
form Twilio gives it, and the parameters that must be there are.

Names: Twilio's documented inbound-message and status-callback parameters (the sandbox sends a
subset, :mod:`lifecycle.sandbox.twilio_api`). SIDs are a two-letter prefix and 32 hex digits:
``SM`` (``MM`` for a message with media), ``AC``, ``MG``. A WhatsApp party is ``whatsapp:`` and its
number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

FormKind = Literal["inbound", "status"]

MAX_FIELDS = 100
MAX_VALUE = 1_600  # Twilio's longest message body; no other value comes near it

_SID = re.compile(r"(?:SM|MM)[0-9a-f]{32}")
_E164 = re.compile(r"(?:whatsapp:)?\+[1-9][0-9]{1,14}")
_SENDER = re.compile(r"(?:whatsapp:)?\+[1-9][0-9]{1,14}|[0-9]{5,6}|(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_COUNT = re.compile(r"[0-9]{1,3}")
_STATUSES = (
    "accepted|scheduled|canceled|queued|sending|sent|failed|delivered|undelivered|receiving|received|read"
    "|partially_delivered"
)

_FORMATS: dict[str, re.Pattern[str] | None] = {
    "MessageSid": _SID,
    "SmsSid": _SID,
    "SmsMessageSid": _SID,
    "AccountSid": re.compile(r"AC[0-9a-f]{32}"),
    "MessagingServiceSid": re.compile(r"MG[0-9a-f]{32}"),
    "ApiVersion": re.compile(r"2010-04-01"),
    "MessageStatus": re.compile(_STATUSES),
    "SmsStatus": re.compile(_STATUSES),
    "ErrorCode": re.compile(r"[0-9]{1,6}"),
    "NumMedia": _COUNT,
    "NumSegments": _COUNT,
    "ReferralNumMedia": _COUNT,
    "OptOutType": re.compile(r"STOP|START|HELP"),
    "RawDlrDoneDate": re.compile(r"[0-9]{10,12}"),
    # Free text, bounded by MAX_VALUE.
    **dict.fromkeys(
        (
            "Body",
            "ErrorMessage",
            "FromCity",
            "FromState",
            "FromZip",
            "FromCountry",
            "ToCity",
            "ToState",
            "ToZip",
            "ToCountry",
            "ProfileName",
            "WaId",
            "ButtonText",
            "ButtonPayload",
            "Forwarded",
            "FrequentlyForwarded",
            "Latitude",
            "Longitude",
            "Address",
            "Label",
            "AddOns",
            "ChannelToAddress",
            "ChannelPrefix",
            "ChannelInstallSid",
            "ChannelStatusMessage",
            "MessageType",
        )
    ),
}
_MEDIA = re.compile(r"(MediaUrl|MediaContentType)[0-9]")
_PARTIES: dict[FormKind, dict[str, re.Pattern[str]]] = {
    "inbound": {"From": _E164, "To": _SENDER},
    "status": {"From": _SENDER, "To": _E164},
}
_REQUIRED: dict[FormKind, tuple[str, ...]] = {
    "inbound": ("MessageSid", "AccountSid", "From", "To", "Body"),
    "status": ("MessageSid", "MessageStatus", "AccountSid", "To"),
}
_SAME_SID = ("SmsSid", "SmsMessageSid")


def form_problem(kind: FormKind, params: Mapping[str, str]) -> str | None:
    """Why a verified Twilio form cannot be as Twilio sent it (names no value), or None."""
    missing = [name for name in _REQUIRED[kind] if name not in params]
    if missing:
        return f"missing {', '.join(missing)}"
    for name, value in params.items():
        pattern = _PARTIES[kind].get(name) or _FORMATS.get(name)
        if name not in _PARTIES[kind] and name not in _FORMATS and not _MEDIA.fullmatch(name):
            return f"unexpected parameter {name[:40]!r}"
        if len(value) > MAX_VALUE or (pattern is not None and not pattern.fullmatch(value)):
            return f"{name} is not in Twilio's format"
    if any(params.get(name, params["MessageSid"]) != params["MessageSid"] for name in _SAME_SID):
        return "SmsSid is not the MessageSid"
    return None
