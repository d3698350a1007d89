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
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection, DateTime, Table, bindparam, case, delete, func, select, update

from lifecycle.channels import registry
from lifecycle.channels.twilio import TWILIO_FAILED, WHATSAPP, twilio_failure_reason
from lifecycle.messages.links import MESSAGE_ID_PARAM, UnsubscribeToken
from lifecycle.model.addresses import email_address, to_e164
from lifecycle.model.db import Record, insert_ignore, utc_naive
from lifecycle.model.ledger import ADDRESS_LISTS, FEEDBACK_RANK, OutcomeReason, Status
from lifecycle.model.ledger import SuppressionReason as R
from lifecycle.model.privacy import redact
from lifecycle.model.schema import (
    consents,
    contact_quality,
    contacts,
    messages,
    provider_events,
    suppressions,
    topic_preferences,
)

log = logging.getLogger(__name__)
Q = contact_quality

# Opt-out words, as a whole message once courtesy words are set aside ("stop please", "END.").
STOP_KEYWORDS = frozenset(
    {"stop", "stopall", "unsubscribe", "unsub", "cancel", "end", "quit", "optout", "revoke", "arret"}
)
# The opt-out words that say nothing else: first or last word of a longer message ("STOP!!! who is
# this", "please stop"). "cancel", "end" and "quit" start and end ordinary sentences too.
_STOP_WORDS_ANYWHERE_AT_EDGES = frozenset({"stop", "stopall", "unsubscribe", "unsub", "optout", "revoke", "arret"})
_COURTESY = frozenset({"please", "pls", "plz", "now", "thanks", "thank", "you", "thx", "ty", "ok", "okay", "all"})
_STOP_PHRASES = re.compile(
    r"\b(?:stop|quit|cease|no more)(?: \w+)? (?:text|texts|texting|txt|txts|txting|message|messages|messaging|"
    r"sms|sending|contacting|spamming)\b"
    r"|\b(?:do not|dont|never) (?:\w+ )?(?:text|txt|message|sms|contact)\b"
    r"|\bremove me\b|\btake me off\b|\bleave me alone\b|\bunsubscribe\b|\bopt ?out\b"
)
START_KEYWORDS = frozenset({"start", "yes", "unstop"})
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
} | dict.fromkeys(TWILIO_FAILED, Status.FAILED)


@dataclass(frozen=True)
class FeedbackEvent:
    """One provider event and what it means for the ledger, the suppression list and consent.

    ``message_id`` / ``provider_message_id`` find the ledger message; ``contact_id``, ``email``
    and ``phone`` find the contact when no message does. ``status`` is the ledger status the
    event moves the message to; ``suppress`` / ``unsuppress`` name a suppression reason to add
    or lift on ``channel``; ``consent`` is the consent status to append, with ``source``.

    ``restores`` names the source of the withdrawal an opt-in undoes (START undoes a STOP): the
    opt-in changes consent only while that withdrawal is in force, and then gives back what was
    in force before it, never more. With ``topic``, ``consent`` is the contact's preference for that
    subscription topic instead (no suppression, no channel consent). A ``repeatable`` opt-out (a
    one-click unsubscribe: the same link may be pressed again after a resubscribe) is applied
    whenever it is not already in force. ``check_provider_id``: the message named must carry this
    provider id (or none, and no other message does).
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
    restores: str | None = None
    topic: str | None = None
    repeatable: bool = False
    check_provider_id: bool = False
    payload: dict[str, Any] = field(default_factory=dict)


class InvalidEvent(ValueError):
    """A provider event that cannot be read; its message says why, and names no address."""


_DIGITS = re.compile(r"[0-9]{1,12}")


def _sendgrid_time(value: Any) -> datetime:
    """An event's ``timestamp``: whole seconds since the epoch, as a number or digits."""
    if isinstance(value, bool) or not isinstance(value, int | str) or not _DIGITS.fullmatch(str(value)):
        raise InvalidEvent(f"timestamp is not whole seconds since the epoch ({type(value).__name__})")
    try:
        return datetime.fromtimestamp(int(value), UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        raise InvalidEvent("timestamp is out of range") from None


def _sendgrid_text(event: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = event.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{key} is not text ({type(value).__name__})")
    return value


def _sendgrid_id(event: Mapping[str, Any], key: str) -> int | None:
    value = event.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or not _DIGITS.fullmatch(str(value)):
        raise InvalidEvent(f"{key} is not a number ({type(value).__name__})")
    return int(value)


def sendgrid_event(
    event: Any, our_group: int | None = None, topic_groups: Mapping[int, str] = MappingProxyType({})
) -> FeedbackEvent:
    """Parse one SendGrid Event Webhook event (custom args sit at its top level); raises
    :class:`InvalidEvent` for one that cannot be read. ``our_group`` is our unsubscribe group
    (``sendgrid_default`` extra ``asm_group_id``): only a resubscribe to it lifts an unsubscribe.
    ``topic_groups`` (the policy's topics' groups): a group unsubscribe or resubscribe of one of them
    changes that topic only."""
    if not isinstance(event, Mapping):
        raise InvalidEvent(f"an event is not an object ({type(event).__name__})")
    kind = _sendgrid_text(event, "event", required=True) or ""
    email = _sendgrid_text(event, "email", required=True)
    occurred_at = _sendgrid_time(event.get("timestamp"))
    message_id = _sendgrid_id(event, MESSAGE_ID_PARAM)
    group = _sendgrid_id(event, "asm_group_id")
    event_id = (
        _sendgrid_text(event, "sg_event_id")
        or hashlib.sha256(json.dumps(event, sort_keys=True, default=str).encode()).hexdigest()
    )
    sg_message_id = _sendgrid_text(event, "sg_message_id")
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
    elif kind in {"group_unsubscribe", "group_resubscribe"} and group is not None and group in topic_groups:
        withdrawn = kind == "group_unsubscribe"
        effects = {
            "topic": topic_groups[group],
            "consent": "withdrawn" if withdrawn else "granted",
            "source": f"sendgrid_{kind}",
        }
    elif kind in {"unsubscribe", "group_unsubscribe"}:
        effects = {"suppress": R.UNSUBSCRIBED, "consent": "withdrawn", "source": "sendgrid_unsubscribe"}
    elif kind == "group_resubscribe":
        ours = our_group is not None and group == our_group
        effects = {"unsuppress": R.UNSUBSCRIBED, "consent": "granted", "source": "sendgrid_resubscribe"} if ours else {}
    payload = {key: event[key] for key in _SENDGRID_KEPT if key in event}
    if "reason" in payload:
        payload["reason"] = redact(str(payload["reason"]))
    return FeedbackEvent(
        provider="sendgrid",
        event_id=event_id[:200],
        event_type=kind[:40],
        occurred_at=occurred_at,
        channel="email",
        message_id=message_id,
        provider_message_id=(sg_message_id or "").split(".")[0] or None,
        email=email,
        payload=payload,
        **effects,
    )


def sendgrid_events(
    batch: Iterable[Any], our_group: int | None = None, topic_groups: Mapping[int, str] = MappingProxyType({})
) -> tuple[list[FeedbackEvent], list[str]]:
    """Parse a SendGrid Event Webhook batch: the events that can be read, and why each other one
    cannot (``event <n>: <why>``, no address), so one bad event never costs the batch its others."""
    parsed, problems = [], []
    for n, event in enumerate(batch):
        try:
            parsed.append(sendgrid_event(event, our_group, topic_groups))
        except InvalidEvent as exc:
            problems.append(f"event {n}: {exc}")
    return parsed, problems


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
        channel="whatsapp" if params.get("To", "").startswith(WHATSAPP) else "sms",
        message_id=message_id,
        provider_message_id=sid or None,
        status=ledger_status,
        reason=twilio_failure_reason(error, status) if ledger_status == Status.FAILED else None,
        check_provider_id=True,
        payload={key: params[key] for key in ("MessageSid", "MessageStatus", "ErrorCode") if params.get(key)},
    )


def sms_words(body: str) -> list[str]:
    """An SMS as the words a person wrote: compatibility forms folded (full-width ``ＳＴＯＰ``), accents,
    zero-width and other format characters dropped, case-folded, split on punctuation."""
    folded = unicodedata.normalize("NFKD", body)
    kept = "".join(c for c in folded if not unicodedata.combining(c) and unicodedata.category(c) != "Cf")
    return re.findall(r"[^\W_]+", kept.replace("'", "").replace("\u2019", "").casefold())


def sms_keyword(body: str | None, opt_out_type: str | None = None) -> str | None:
    """``STOP`` when an inbound SMS revokes consent, ``START`` when it is an opt-in keyword, else None.

    Revocation by any reasonable means (the FCC's 2024 rule) leans toward honouring: a message is
    an opt-out when, once normalised (:func:`sms_words`) and without courtesy words, it is an
    opt-out keyword (``STOP``, ``Stop.``, ``opt-out``, ``stop please``, ``ARRÊT``...); when it
    starts or ends with an unambiguous one (``stop texting me``, ``please stop``); or when it holds
    an opt-out phrase anywhere (``remove me``, ``don't text me``, ``no more messages``,
    ``unsubscribe``). A sentence that only uses "stop", "end" or "cancel" for something else ("I
    can't stop smiling", "when does the sale end?") is not one. Opt-ins stay exact keywords:
    ``START``, ``YES``, ``UNSTOP``, whole message."""
    if opt_out_type and opt_out_type.upper() in {"STOP", "START"}:
        return opt_out_type.upper()
    words = sms_words(body or "")
    if not words:
        return None
    core = "".join(word for word in words if word not in _COURTESY) or "".join(words)
    if (
        core in STOP_KEYWORDS
        or "".join(words) in STOP_KEYWORDS
        or {words[0], words[-1]} & _STOP_WORDS_ANYWHERE_AT_EDGES
        or _STOP_PHRASES.search(" ".join(words))
    ):
        return "STOP"
    if "".join(words) in START_KEYWORDS:
        return "START"
    return None


def twilio_inbound_event(params: Mapping[str, str], received_at: datetime) -> FeedbackEvent:
    """Parse a Twilio inbound message, SMS or WhatsApp (from ``whatsapp:<number>``): STOP keywords
    opt the sender out of that channel, START opts them back in. Every inbound WhatsApp message is
    recorded (``whatsapp_inbound_<keyword or message>``): each one opens the contact's 24-hour window."""
    sender = params.get("From", "")
    whatsapp = sender.startswith(WHATSAPP)
    channel, stop, prefix = ("whatsapp", R.WHATSAPP_STOP, "whatsapp_") if whatsapp else ("sms", R.SMS_STOP, "")
    keyword = sms_keyword(params.get("Body"), params.get("OptOutType"))
    effects: dict[str, Any] = {}
    if keyword == "STOP":
        effects = {"suppress": stop, "consent": "withdrawn", "source": f"twilio_{prefix}stop"}
    elif keyword == "START":
        effects = {
            "unsuppress": stop,
            "consent": "granted",
            "source": f"twilio_{prefix}start",
            "restores": f"twilio_{prefix}stop",
        }
    return FeedbackEvent(
        provider="twilio",
        event_id=params.get("MessageSid", ""),
        event_type=f"{prefix}inbound_{(keyword or 'message').lower()}",
        occurred_at=utc_naive(received_at),
        channel=channel,
        phone=to_e164(sender.removeprefix(WHATSAPP)),
        payload={"MessageSid": params.get("MessageSid"), "keyword": keyword},
        **effects,
    )


def unsubscribe_event(
    token: UnsubscribeToken,
    received_at: datetime,
    topic: str | None = None,
    *,
    source: str = "one_click_unsubscribe",
    granted: bool = False,
) -> FeedbackEvent:
    """A one-click unsubscribe from a signed link (the unsubscribe page or a List-Unsubscribe POST):
    from the message's ``topic`` when it has one, else from the channel's marketing. Every press
    counts: one pressed while the unsubscribe is in force changes nothing, one pressed after a
    resubscribe unsubscribes again. The preference centre records its changes the same way, under
    its own ``source``; ``granted`` is an opt back in (to the topic, or the channel)."""
    at = utc_naive(received_at)
    what = f"topic={topic}" if topic else token.channel
    effects: dict[str, Any] = {"topic": topic} if topic else {}
    if not topic:
        effects = {"unsuppress": R.UNSUBSCRIBED} if granted else {"suppress": R.UNSUBSCRIBED}
    return FeedbackEvent(
        provider="lifecycle",
        event_id=f"{source}:{token.message_id}:{token.contact_id}:{what}:{'in' if granted else 'out'}:{at.isoformat()}",
        event_type="resubscribe" if granted else "unsubscribe",
        occurred_at=at,
        channel=token.channel,
        message_id=token.message_id,
        contact_id=token.contact_id,
        consent="granted" if granted else "withdrawn",
        source=source,
        repeatable=True,
        payload={"message_id": token.message_id} | ({"topic": topic} if topic else {}),
        **effects,
    )


# The statements every event runs are built once, with bound parameters: building and hashing a
# statement per event cost more than running it, and kept a busy webhook below 500 events a second.
_CONTACT = contacts.alias("contact")
_MESSAGE = (
    messages.c.message_id,
    messages.c.contact_id,
    messages.c.provider_message_id,
    select(email_address(_CONTACT))
    .where(_CONTACT.c.contact_id == messages.c.contact_id)
    .limit(1)
    .scalar_subquery()
    .label("email"),
)
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
_CONSENTS_IN_ORDER = (
    select(consents.c.status, consents.c.source)
    .where(
        consents.c.contact_id == bindparam("b_contact_id"),
        consents.c.channel == bindparam("b_channel"),
        consents.c.purpose == CONSENT_PURPOSE,
    )
    .order_by(consents.c.captured_at.desc())
    .limit(2)
)
_SUPPRESSED = select(suppressions.c.contact_id).where(
    suppressions.c.contact_id == bindparam("b_contact_id"),
    suppressions.c.channel == bindparam("b_channel"),
    suppressions.c.reason == bindparam("b_reason"),
)
_INSERT_TOPIC_PREFERENCE = topic_preferences.insert()
_TOPIC_PREFERENCE = (
    select(topic_preferences.c.status)
    .where(
        topic_preferences.c.contact_id == bindparam("b_contact_id"),
        topic_preferences.c.topic == bindparam("b_topic"),
    )
    .order_by(topic_preferences.c.captured_at.desc(), topic_preferences.c.preference_id.desc())
    .limit(1)
)
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


def _digit_pattern(phone: str, zero: str) -> str:
    """A LIKE pattern for a number's last four digits in order, written from ``zero`` on
    (``"0"``, or ``"０"`` for full-width digits), whatever lies between them."""
    digits = re.sub(r"\D", "", phone)[-4:]
    return "%" + "%".join(chr(ord(zero) + int(d)) for d in digits) + "%"


def contacts_for_phone(conn: Connection, phone: str) -> list[str]:
    """Every contact texted at this E.164 number, or whose phone reads as it (:func:`to_e164`, the
    reading data hygiene and sending share): data hygiene's normalised number, else the CRM
    phone read in the contact's own country."""
    checked = select(Q.c.contact_id).where(Q.c.phone_e164 == phone, Q.c.phone_valid.is_(True))
    rows = conn.execute(
        select(contacts.c.contact_id, contacts.c.phone, contacts.c.country).where(
            contacts.c.contact_id.in_(checked)
            | contacts.c.phone.like(_digit_pattern(phone, "0"))
            | contacts.c.phone.like(_digit_pattern(phone, "\uff10"))
        )
    )
    known = set(conn.execute(checked).scalars())
    found = [contact_id for contact_id, raw, country in rows if contact_id in known or to_e164(raw, country) == phone]
    return list(dict.fromkeys(found))


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


def _consent_to_restore(conn: Connection, event: FeedbackEvent, contact_id: str) -> str | None:
    """What an opt-in gives back: the consent in force before the withdrawal it undoes, when that
    withdrawal (from ``event.restores``) is still the consent in force; else nothing."""
    newest = conn.execute(_CONSENTS_IN_ORDER, {"b_contact_id": contact_id, "b_channel": event.channel}).all()
    if not newest or (newest[0].status, newest[0].source) != ("withdrawn", event.restores):
        return None
    before = newest[1].status if len(newest) > 1 else None
    return event.consent if before == event.consent else None


def topic_preference(conn: Connection, contact_id: str, topic: str) -> str | None:
    """The contact's preference in force for ``topic`` (``granted``, ``withdrawn``), None when it never set one."""
    found: str | None = conn.execute(
        _TOPIC_PREFERENCE, {"b_contact_id": contact_id, "b_topic": topic}
    ).scalar_one_or_none()
    return found


def _in_force(conn: Connection, event: FeedbackEvent, contact_id: str) -> bool:
    """Whether an opt-out (or opt-in) already holds for the contact: listed, and its consent as the
    event would make it; for a topic, its preference."""
    if event.topic:
        return topic_preference(conn, contact_id, event.topic) == event.consent
    if event.unsuppress:
        listed = conn.execute(
            _SUPPRESSED, {"b_contact_id": contact_id, "b_channel": event.channel, "b_reason": event.unsuppress}
        ).first()
        newest = conn.execute(_CONSENTS_IN_ORDER, {"b_contact_id": contact_id, "b_channel": event.channel}).first()
        return listed is None and newest is not None and newest.status == event.consent
    listed = conn.execute(
        _SUPPRESSED, {"b_contact_id": contact_id, "b_channel": event.channel, "b_reason": event.suppress}
    ).first()
    newest = conn.execute(_CONSENTS_IN_ORDER, {"b_contact_id": contact_id, "b_channel": event.channel}).first()
    return listed is not None and newest is not None and newest.status == event.consent


def _apply_opt_out(conn: Connection, event: FeedbackEvent, contact_ids: list[str]) -> None:
    """Suppression and consent rows for an opt-out, opt-in or bounce."""
    proof = f"{event.provider}:{event.event_id}"
    source = event.source or event.provider
    for contact_id in contact_ids:
        if event.topic:
            conn.execute(
                _INSERT_TOPIC_PREFERENCE,
                {
                    "contact_id": contact_id,
                    "topic": event.topic,
                    "status": event.consent,
                    "source": source,
                    "captured_at": event.occurred_at,
                    "proof": proof,
                },
            )
            continue
        consent = event.consent if event.restores is None else _consent_to_restore(conn, event, contact_id)
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
        if consent:
            conn.execute(
                _INSERT_CONSENT,
                {
                    "contact_id": contact_id,
                    "channel": event.channel,
                    "purpose": CONSENT_PURPOSE,
                    "status": consent,
                    "source": source,
                    "captured_at": event.occurred_at,
                    "proof": proof,
                },
            )


def _mismatch(conn: Connection, event: FeedbackEvent, message: Record) -> str | None:
    """Why an event cannot be about the message it names, or None when it can."""
    if event.email is not None and event.email.strip().lower() != (message["email"] or ""):
        return "its address is not the address of the message's contact"
    if event.check_provider_id:
        held = message["provider_message_id"]
        if held is not None and held != event.provider_message_id:
            return "its provider id is not the message's"
        if held is None and event.provider_message_id:
            others = conn.execute(_MESSAGE_BY_PROVIDER_ID, {"b_provider_message_id": event.provider_message_id})
            if any(row.message_id != message["message_id"] for row in others):
                return "its provider id is another message's"
    return None


def apply_event(conn: Connection, event: FeedbackEvent, received_at: datetime) -> bool:
    """Record one event and apply its effects; False (and nothing changed) for a duplicate, for a
    repeatable opt-out already in force, and for an event that cannot be about the message it
    names (logged with both ids)."""
    received_at = utc_naive(received_at)
    message = _find_message(conn, event)
    if message is not None and (why := _mismatch(conn, event, message)):
        log.warning(
            "Ignored %s event %s about message %s: %s", event.provider, event.event_id, message["message_id"], why
        )
        return False
    contact_ids = _contacts_for(conn, event, message)
    if event.repeatable and contact_ids and all(_in_force(conn, event, c) for c in contact_ids):
        return False
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
    """Apply a batch of events on one connection (one transaction); returns how many were new.

    The ledger messages the events name are locked first, in message id order, the order a send
    task writes its outcomes in: a webhook batch and a send task recording some of the same
    messages (a delivery reported before its send was recorded) then wait for each other on
    PostgreSQL instead of deadlocking, which failed the send task until its retry."""
    events = list(events)
    if named := sorted({event.message_id for event in events if event.message_id is not None}):
        locked = select(messages.c.message_id).where(messages.c.message_id.in_(named))
        conn.execute(locked.order_by(messages.c.message_id).with_for_update())
    return sum(apply_event(conn, event, received_at) for event in events)
