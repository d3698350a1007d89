"""Tracked events: the track endpoint's calls checked and written into the engine's inbox.

A call has the shape of Segment's and Customer.io's track calls (``userId``, ``event``,
``timestamp``, ``properties``, ``messageId``). :func:`parse_call` checks one and says, for a call
that cannot be taken, which field is wrong and how to fix it; :func:`record` writes the taken ones
into ``lifecycle_tracked_events`` in the caller's transaction, once per ``messageId``: a repeated
message id is a duplicate, whatever it carries, and the first one stays. Every stage reads the
inbox beside the CRM's events (:func:`lifecycle.model.schema.all_events`).

Nothing here logs or keeps anything but the event itself: a ``userId`` is the CRM's contact id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection

from lifecycle.model import schema
from lifecycle.model.db import insert_ignore, utc_naive

EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*")
MAX_EVENT_NAME, MAX_USER_ID, MAX_MESSAGE_ID = 50, 64, 200  # the widths of the inbox's columns
MAX_PROPERTIES = 16 * 1024
"""Bytes of a call's ``properties`` as JSON."""
MESSAGE_ID_FIX = (
    "a unique id per event, so that a retried call counts once (Segment's libraries send one; otherwise send a UUID)"
)
FUTURE_SKEW = timedelta(minutes=5)
"""How far past the time it is received a call's ``timestamp`` may be (the sender's clock drifts)."""


class TrackStatus(StrEnum):
    """What became of one call."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Rejected:
    """A call that cannot be taken: the field at fault and what to send instead."""

    field: str
    problem: str


@dataclass(frozen=True)
class TrackedEvent:
    """One call as the inbox keeps it (naive UTC times)."""

    message_id: str
    contact_id: str
    event_type: str
    occurred_at: datetime
    properties: dict[str, Any]

    @property
    def event_id(self) -> str:
        """The event's id, the same for every call with this ``messageId``."""
        return event_id_for(self.message_id)


def event_id_for(message_id: str) -> str:
    """``trk_`` and the first 40 hex digits of the SHA-256 of the message id."""
    return "trk_" + hashlib.sha256(message_id.encode()).hexdigest()[:40]


def _text(call: dict[str, Any], name: str, limit: int, what: str) -> str | Rejected:
    value = call.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None or value == "":
        return Rejected(name, f"{name} is required: {what}")
    if not isinstance(value, str):
        return Rejected(name, f"{name} must be a string: {what}")
    if len(value) > limit:
        return Rejected(name, f"{name} is {len(value)} characters; at most {limit}")
    if any(not ch.isprintable() for ch in value):
        return Rejected(name, f"{name} holds control characters; send printable text")
    return value


def _event_type(call: dict[str, Any]) -> str | Rejected:
    name = _text(call, "event", MAX_EVENT_NAME, "the event's name, such as signed_up")
    if isinstance(name, Rejected) or EVENT_NAME.fullmatch(name):
        return name
    suggestion = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    fix = f", such as {suggestion}" if EVENT_NAME.fullmatch(suggestion) else ""
    return Rejected("event", f"event must be lower snake_case, the way programs name events{fix}")


def _occurred_at(call: dict[str, Any], received_at: datetime) -> datetime | Rejected:
    value = call.get("timestamp")
    if value is None:
        return received_at
    fix = "send ISO 8601 with its offset, such as 2026-11-16T15:00:00Z, or leave it out for the time received"
    if not isinstance(value, str):
        return Rejected("timestamp", f"timestamp must be a string: {fix}")
    try:
        occurred_at = utc_naive(datetime.fromisoformat(value))
    except ValueError:
        return Rejected("timestamp", f"timestamp is not ISO 8601: {fix}")
    if occurred_at > received_at + FUTURE_SKEW:
        return Rejected(
            "timestamp", f"timestamp is more than {FUTURE_SKEW} ahead of the time received; check the sender's clock"
        )
    return occurred_at


def _properties(call: dict[str, Any]) -> dict[str, Any] | Rejected:
    value = call.get("properties")
    if value is None:
        return {}
    if not isinstance(value, dict):
        return Rejected("properties", 'properties must be a JSON object, such as {"plan": "pro"}')
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > MAX_PROPERTIES:
        return Rejected("properties", f"properties are {size} bytes as JSON; at most {MAX_PROPERTIES}")
    return value


def parse_call(call: object, received_at: datetime) -> TrackedEvent | Rejected:
    """One track call as the inbox keeps it, or why it cannot be taken. ``received_at`` is naive
    UTC; a call without a ``timestamp`` happened then."""
    if not isinstance(call, dict):
        return Rejected("body", "a track call is a JSON object with userId, event and messageId")
    if call.get("type", "track") != "track":
        return Rejected("type", 'only track calls are taken here; leave type out or send "track"')
    message_id = _text(call, "messageId", MAX_MESSAGE_ID, MESSAGE_ID_FIX)
    if isinstance(message_id, Rejected):
        return message_id
    contact_id = _text(call, "userId", MAX_USER_ID, "the contact's id in the CRM")
    if isinstance(contact_id, Rejected):
        return contact_id
    event_type = _event_type(call)
    if isinstance(event_type, Rejected):
        return event_type
    occurred_at = _occurred_at(call, received_at)
    if isinstance(occurred_at, Rejected):
        return occurred_at
    properties = _properties(call)
    if isinstance(properties, Rejected):
        return properties
    return TrackedEvent(message_id, contact_id, event_type, occurred_at, properties)


def record(conn: Connection, events: Sequence[TrackedEvent], received_at: datetime) -> list[TrackStatus]:
    """Write ``events`` in the caller's transaction, each message id once; per event, whether it
    was taken (``accepted``) or its message id was already in the inbox or earlier in ``events``
    (``duplicate``: the first one stays)."""
    first: dict[str, TrackedEvent] = {}
    for event in events:
        first.setdefault(event.message_id, event)
    written: set[str] = set()
    if first:
        rows = [
            {
                "event_id": e.event_id,
                "message_id": e.message_id,
                "contact_id": e.contact_id,
                "event_type": e.event_type,
                "occurred_at": e.occurred_at,
                "received_at": received_at,
                "properties": e.properties,
            }
            for e in first.values()
        ]
        table = schema.tracked_events
        statement = insert_ignore(conn, table).values(rows).returning(table.c.message_id)
        written = set(conn.execute(statement).scalars())
    statuses = []
    for event in events:
        taken = event.message_id in written and first[event.message_id] is event
        statuses.append(TrackStatus.ACCEPTED if taken else TrackStatus.DUPLICATE)
    return statuses
