"""Provider feedback into the ledger: delivery events, opt-outs and unsubscribes.

Parsers turn a provider's payload into :class:`FeedbackEvent` values that say what the event
means (a ledger status, a suppression, a consent change); :func:`apply_events` writes them on a
SQLAlchemy connection, inside the caller's transaction:

- the event is recorded once in ``lifecycle_provider_events`` (unique provider + event id);
  a duplicate changes nothing;
- the message's status only moves forward (sent < delivered < opened < clicked; bounced and
  failed are final), so an older event arriving late never moves it back;
- bounces, spam reports, unsubscribes and SMS STOP add ``lifecycle_suppressions`` rows, and
  the opt-outs append a withdrawn ``consents`` row with the event as proof, so the very next
  program run honours them.

Nothing here stores an email address, a phone number or an SMS body.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Table, bindparam, case, delete, func, select, update

from lifecycle.channels import registry
from lifecycle.channels.twilio import twilio_failure_reason
from lifecycle.messages.links import MESSAGE_ID_PARAM, UnsubscribeToken
from lifecycle.model.addresses import to_e164
from lifecycle.model.db import Record, insert_ignore, utc_naive
from lifecycle.model.ledger import ADDRESS_LISTS, FEEDBACK_RANK, OutcomeReason, Status
from lifecycle.model.ledger import SuppressionReason as R
from lifecycle.model.privacy import redact
from lifecycle.model.schema import consents, contacts, messages, provider_events, suppressions

STOP_KEYWORDS = frozenset({"STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
START_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
CONSENT_PURPOSE = "marketing"

_SENDGRID_KEPT = (
    "event",
    "type",
    "status",
    "reason",
    "sg_event_id",
    "sg_message_id",
    "category",
    "url",
    "asm_group_id",
    MESSAGE_ID_PARAM,
)
# Provider event or status (keys: the provider's words) -> the ledger status it moves a message to.
_SENDGRID_STATUS = {
    "processed": Status.SENT,
    "delivered": Status.DELIVERED,
    "open": Status.OPENED,
    "click": Status.CLICKED,
}
_TWILIO_STATUS = {
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "read": Status.OPENED,
    "undelivered": Status.FAILED,
    "failed": Status.FAILED,
}


@dataclass(frozen=True)
class FeedbackEvent:
    """One provider event and what it means for the ledger, the suppression list and consent.

    ``message_id`` / ``provider_message_id`` find the ledger message; ``contact_id``, ``email``
    and ``phone`` find the contact when no message does. ``status`` is the ledger status the
    event moves the message to; ``suppress`` / ``unsuppress`` name a suppression reason to add
    or lift on ``channel``; ``consent`` is the consent status to append, with ``source``.
    """

    provider: str
    event_id: str
    event_type: str
    occurred_at: datetime
    channel: str
    message_id: int | None = None
    provider_message_id: str | None = None
    contact_id: str | None = None
    email: str | None = None
    phone: str | None = None
    status: Status | None = None
    reason: str | None = None
    suppress: str | None = None
    unsuppress: str | None = None
    consent: str | None = None
    source: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def sendgrid_events(batch: Iterable[Mapping[str, Any]]) -> list[FeedbackEvent]:
    """Parse a SendGrid Event Webhook batch (custom args sit at the top level of each event)."""
    parsed = []
    for event in batch:
        kind = str(event.get("event", ""))
        event_id = (
            event.get("sg_event_id")
            or hashlib.sha256(json.dumps(event, sort_keys=True, default=str).encode()).hexdigest()
        )
        effects: dict[str, Any] = {"status": _SENDGRID_STATUS.get(kind)}
        if kind == "bounce":
            hard = event.get("type") != "blocked"
            effects = {
                "status": Status.BOUNCED,
                "reason": OutcomeReason.HARD_BOUNCE if hard else OutcomeReason.BLOCKED,
                "suppress": R.HARD_BOUNCE if hard else None,
            }
        elif kind == "dropped":
            effects = {"status": Status.FAILED, "reason": redact(f"{OutcomeReason.DROPPED}: {event.get('reason', '')}")}
        elif kind == "spamreport":
            effects = {"suppress": R.SPAM_REPORT, "consent": "withdrawn", "source": "sendgrid_spamreport"}
        elif kind in {"unsubscribe", "group_unsubscribe"}:
            effects = {"suppress": R.UNSUBSCRIBED, "consent": "withdrawn", "source": "sendgrid_unsubscribe"}
        elif kind == "group_resubscribe":
            effects = {"unsuppress": R.UNSUBSCRIBED, "consent": "granted", "source": "sendgrid_resubscribe"}
        payload = {key: event[key] for key in _SENDGRID_KEPT if key in event}
        if "reason" in payload:
            payload["reason"] = redact(str(payload["reason"]))
        parsed.append(
            FeedbackEvent(
                provider="sendgrid",
                event_id=str(event_id),
                event_type=kind,
                occurred_at=datetime.fromtimestamp(int(event.get("timestamp", 0)), UTC).replace(tzinfo=None),
                channel="email",
                message_id=_int_or_none(event.get(MESSAGE_ID_PARAM)),
                provider_message_id=str(event.get("sg_message_id") or "").split(".")[0] or None,
                email=event.get("email"),
                payload=payload,
                **effects,
            )
        )
    return parsed


def twilio_status_event(
    params: Mapping[str, str], received_at: datetime, message_id: int | None = None
) -> FeedbackEvent:
    """Parse a Twilio status callback; ``message_id`` comes from the callback URL when set."""
    sid, status = params.get("MessageSid", ""), params.get("MessageStatus", "")
    ledger_status = _TWILIO_STATUS.get(status)
    error = params.get("ErrorCode")
    return FeedbackEvent(
        provider="twilio",
        event_id=f"{sid}:{status}",
        event_type=f"status_{status}",
        occurred_at=utc_naive(received_at),
        channel="sms",
        message_id=message_id,
        provider_message_id=sid or None,
        status=ledger_status,
        reason=twilio_failure_reason(error, status) if ledger_status == Status.FAILED else None,
        payload={key: params[key] for key in ("MessageSid", "MessageStatus", "ErrorCode") if params.get(key)},
    )


def sms_keyword(body: str | None, opt_out_type: str | None = None) -> str | None:
    """``STOP`` or ``START`` when an inbound SMS is an opt-out or opt-in keyword, else None."""
    if opt_out_type and opt_out_type.upper() in {"STOP", "START"}:
        return opt_out_type.upper()
    word = re.sub(r"\s+", " ", (body or "").strip().upper())
    if word in STOP_KEYWORDS:
        return "STOP"
    if word in START_KEYWORDS:
        return "START"
    return None


def twilio_inbound_event(params: Mapping[str, str], received_at: datetime) -> FeedbackEvent:
    """Parse a Twilio inbound message: STOP keywords opt the sender out, START opts them back in."""
    keyword = sms_keyword(params.get("Body"), params.get("OptOutType"))
    effects: dict[str, Any] = {}
    if keyword == "STOP":
        effects = {"suppress": R.SMS_STOP, "consent": "withdrawn", "source": "twilio_stop"}
    elif keyword == "START":
        effects = {"unsuppress": R.SMS_STOP, "consent": "granted", "source": "twilio_start"}
    return FeedbackEvent(
        provider="twilio",
        event_id=params.get("MessageSid", ""),
        event_type=f"inbound_{(keyword or 'message').lower()}",
        occurred_at=utc_naive(received_at),
        channel="sms",
        phone=to_e164(params.get("From")),
        payload={"MessageSid": params.get("MessageSid"), "keyword": keyword},
        **effects,
    )


def unsubscribe_event(token: UnsubscribeToken, received_at: datetime) -> FeedbackEvent:
    """A one-click unsubscribe from a signed link (the unsubscribe page or a List-Unsubscribe POST)."""
    return FeedbackEvent(
        provider="lifecycle",
        event_id=f"unsubscribe:{token.message_id}:{token.contact_id}:{token.channel}",
        event_type="unsubscribe",
        occurred_at=utc_naive(received_at),
        channel=token.channel,
        message_id=token.message_id,
        contact_id=token.contact_id,
        suppress=R.UNSUBSCRIBED,
        consent="withdrawn",
        source="one_click_unsubscribe",
        payload={"message_id": token.message_id},
    )


# The statements every event runs are built once, with bound parameters: building and hashing a
# statement per event cost more than running it, and kept a busy webhook below 500 events a second.
_MESSAGE = (messages.c.message_id, messages.c.contact_id)
_MESSAGE_BY_ID = select(*_MESSAGE).where(messages.c.message_id == bindparam("b_message_id"))
_MESSAGE_BY_PROVIDER_ID = (
    select(*_MESSAGE).where(messages.c.provider_message_id == bindparam("b_provider_message_id")).limit(2)
)
_CONTACTS_BY_EMAIL = select(contacts.c.contact_id).where(func.lower(contacts.c.email) == bindparam("b_email"))
_current_rank = case(
    *((messages.c.status == status, rank) for status, rank in FEEDBACK_RANK.items()),
    else_=max(FEEDBACK_RANK.values()) + 1,
)
_ADVANCE = (
    update(messages)
    .where(messages.c.message_id == bindparam("b_message_id"), _current_rank < bindparam("b_rank"))
    .values(
        status=bindparam("b_status"),
        updated_at=bindparam("b_received_at", type_=DateTime()),
        provider_message_id=func.coalesce(messages.c.provider_message_id, bindparam("b_provider_message_id")),
        # The event's own reason (a bounce's, a failure's) or none: a reason the message carried
        # before ("no answer from the provider" on an ``unknown``) no longer holds once it moves on.
        reason=bindparam("b_reason"),
        sent_at=func.coalesce(messages.c.sent_at, bindparam("b_sent_at", type_=DateTime())),
    )
)
_UNSUPPRESS = delete(suppressions).where(
    suppressions.c.contact_id == bindparam("b_contact_id"),
    suppressions.c.channel == bindparam("b_channel"),
    suppressions.c.reason == bindparam("b_reason"),
)
_INSERT_CONSENT = consents.insert()
_INSERT_IGNORING: dict[tuple[str, str], Any] = {}


def _insert_ignoring(conn: Connection, table: Table) -> Any:
    """The table's INSERT ... ON CONFLICT DO NOTHING for this connection's dialect, built once."""
    key = (conn.dialect.name, table.name)
    if key not in _INSERT_IGNORING:
        _INSERT_IGNORING[key] = insert_ignore(conn, table)
    return _INSERT_IGNORING[key]


def _find_message(conn: Connection, event: FeedbackEvent) -> Record | None:
    """The ledger message an event is about: by our id, else by a provider id naming one message."""
    if event.message_id is not None:
        return conn.execute(_MESSAGE_BY_ID, {"b_message_id": event.message_id}).mappings().first()
    if event.provider_message_id:
        found = conn.execute(_MESSAGE_BY_PROVIDER_ID, {"b_provider_message_id": event.provider_message_id})
        rows = found.mappings().all()
        return rows[0] if len(rows) == 1 else None
    return None


def contacts_for_phone(conn: Connection, phone: str) -> list[str]:
    """Contacts whose phone, read in their own country, is this E.164 number."""
    digits = re.sub(r"\D", "", phone)[-4:]
    pattern = "%" + "%".join(digits) + "%"
    rows = conn.execute(
        select(contacts.c.contact_id, contacts.c.phone, contacts.c.country).where(contacts.c.phone.like(pattern))
    )
    return [contact_id for contact_id, raw, country in rows if to_e164(raw, country) == phone]


def _contacts_for(conn: Connection, event: FeedbackEvent, message: Record | None) -> list[str]:
    if event.contact_id:
        return [event.contact_id]
    if message is not None:
        return [message["contact_id"]]
    if event.email:
        return list(conn.execute(_CONTACTS_BY_EMAIL, {"b_email": event.email.strip().lower()}).scalars())
    if event.phone:
        return contacts_for_phone(conn, event.phone)
    return []


def _advance_status(
    conn: Connection, event: FeedbackEvent, status: Status, message_id: int, received_at: datetime
) -> None:
    """Move one message to the event's status if that is a step forward."""
    conn.execute(
        _ADVANCE,
        {
            "b_message_id": message_id,
            "b_rank": FEEDBACK_RANK[status],
            "b_status": status,
            "b_received_at": received_at,
            "b_provider_message_id": event.provider_message_id,
            "b_reason": event.reason or None,
            "b_sent_at": None if event.status == Status.FAILED else event.occurred_at,
        },
    )


def _listed_address(conn: Connection, event: FeedbackEvent, contact_id: str) -> str | None:
    """The normalised address an opt-out is about: the one the provider named (where the bounce or the
    STOP came from), else the contact's as sending reads it (where its messages go)."""
    named = event.email.strip().lower() if event.email else event.phone
    if named:
        return named
    address = registry.get(event.channel).address
    found: str | None = (
        conn.execute(select(address.of(contacts)).where(contacts.c.contact_id == contact_id)).scalars().first()
    )
    return found


def _apply_opt_out(conn: Connection, event: FeedbackEvent, contact_ids: list[str]) -> None:
    """Suppression and consent rows for an opt-out, opt-in or bounce."""
    proof = f"{event.provider}:{event.event_id}"
    source = event.source or event.provider
    for contact_id in contact_ids:
        if event.suppress:
            conn.execute(
                _insert_ignoring(conn, suppressions),
                {
                    "contact_id": contact_id,
                    "channel": event.channel,
                    "reason": event.suppress,
                    "source": source,
                    "proof": proof,
                    "created_at": event.occurred_at,
                    "address": _listed_address(conn, event, contact_id) if event.suppress in ADDRESS_LISTS else None,
                },
            )
        if event.unsuppress:
            conn.execute(
                _UNSUPPRESS, {"b_contact_id": contact_id, "b_channel": event.channel, "b_reason": event.unsuppress}
            )
        if event.consent:
            conn.execute(
                _INSERT_CONSENT,
                {
                    "contact_id": contact_id,
                    "channel": event.channel,
                    "purpose": CONSENT_PURPOSE,
                    "status": event.consent,
                    "source": source,
                    "captured_at": event.occurred_at,
                    "proof": proof,
                },
            )


def apply_event(conn: Connection, event: FeedbackEvent, received_at: datetime) -> bool:
    """Record one event and apply its effects; False (and nothing changed) for a duplicate."""
    received_at = utc_naive(received_at)
    message = _find_message(conn, event)
    contact_ids = _contacts_for(conn, event, message)
    recorded = conn.execute(
        _insert_ignoring(conn, provider_events),
        {
            "provider": event.provider,
            "event_id": event.event_id,
            "event_type": event.event_type,
            "message_id": message["message_id"] if message else None,
            "provider_message_id": event.provider_message_id,
            "contact_id": contact_ids[0] if contact_ids else None,
            "occurred_at": event.occurred_at,
            "received_at": received_at,
            "payload": event.payload,
        },
    )
    if recorded.rowcount == 0:
        return False
    if event.status and message is not None:
        _advance_status(conn, event, event.status, message["message_id"], received_at)
    _apply_opt_out(conn, event, contact_ids)
    return True


def apply_events(conn: Connection, events: Iterable[FeedbackEvent], received_at: datetime) -> int:
    """Apply a batch of events on one connection (one transaction); returns how many were new."""
    return sum(apply_event(conn, event, received_at) for event in events)
