"""SendGrid Event Webhook events for recorded emails, with the fields SendGrid posts.

Every event carries ``email``, ``timestamp``, ``event``, ``sg_event_id``, ``sg_message_id`` and
``smtp-id``, the email's ``category`` list when it has categories, its ``asm_group_id`` when it
was sent with an unsubscribe group (the group a ``group_unsubscribe`` or ``group_resubscribe``
leaves or rejoins), and its custom args flattened at the top level. The outcome of
an accepted email depends on the recipient's domain, so tests and demos can steer it.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from typing import Any

EVENT_TYPES = (
    "processed", "delivered", "bounce", "dropped", "open", "click", "spamreport", "unsubscribe", "deferred",
    "group_unsubscribe", "group_resubscribe",
)  # fmt: skip
BOUNCE_TYPES = ("bounce", "blocked")
DOMAIN_OUTCOMES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "bounce.test": (("processed", None), ("bounce", "bounce")),
    "blocked.test": (("processed", None), ("bounce", "blocked")),
    "spam.test": (("processed", None), ("delivered", None), ("spamreport", None)),
}
DEFAULT_OUTCOME: tuple[tuple[str, str | None], ...] = (("processed", None), ("delivered", None))

_EVENT_DETAILS: dict[str, dict[str, Any]] = {
    "delivered": {"response": "250 OK", "tls": 1},
    "deferred": {"response": "400 try again later", "attempt": "1"},
    "dropped": {"reason": "Bounced Address", "status": "5.0.0"},
    "open": {"useragent": "Mozilla/5.0 (sandbox)", "ip": "192.0.2.10", "sg_machine_open": False},
    "click": {"useragent": "Mozilla/5.0 (sandbox)", "ip": "192.0.2.10", "url": "https://example.com/"},
}
_BOUNCE_DETAILS: dict[str, dict[str, Any]] = {
    "bounce": {
        "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
        "status": "5.1.1",
        "bounce_classification": "Invalid Address",
    },
    "blocked": {
        "reason": "550 5.7.1 Message rejected by the receiving server's policy.",
        "status": "5.7.1",
        "bounce_classification": "Content",
    },
}


def automatic_outcome(address: str) -> tuple[tuple[str, str | None], ...]:
    """The (event, bounce type) sequence an accepted email to ``address`` produces."""
    return DOMAIN_OUTCOMES.get(address.rpartition("@")[2].lower(), DEFAULT_OUTCOME)


def new_sg_event_id() -> str:
    """A unique event id in SendGrid's style (url-safe base64 of 16 random bytes)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")


def build_event(email: Mapping[str, Any], event: str, timestamp: int, bounce_type: str | None = None) -> dict[str, Any]:
    """The Event Webhook object SendGrid posts for ``event`` on one recorded email."""
    payload: dict[str, Any] = dict(email["custom_args"])
    payload.update(
        {
            "email": email["to"],
            "timestamp": timestamp,
            "event": event,
            "sg_event_id": new_sg_event_id(),
            "sg_message_id": email["sg_message_id"],
            "smtp-id": f"<{email['x_message_id']}@sandbox.ismtpd>",
        }
    )
    if email["categories"]:
        payload["category"] = list(email["categories"])
    if email["asm"] and "group_id" in email["asm"]:
        payload["asm_group_id"] = email["asm"]["group_id"]
    payload.update(_EVENT_DETAILS.get(event, {}))
    if event == "bounce":
        kind = bounce_type or "bounce"
        payload.update({"type": kind, **_BOUNCE_DETAILS[kind]})
    return payload
