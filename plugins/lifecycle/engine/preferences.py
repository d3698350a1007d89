"""The preference centre's reading and its changes: a contact's topics and channels as they stand,
and the opt-outs and opt-ins a submitted form makes of them.

A topic is subscribed unless the contact's newest preference for it is withdrawn; a channel unless
the contact unsubscribed from its marketing (listed ``unsubscribed``, or its newest marketing consent
withdrawn or denied). Every change is a :class:`FeedbackEvent` applied like a one-click unsubscribe,
so it appends a row with its source and proof and is in force for the next run.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from lifecycle import config
from lifecycle.channels import registry
from lifecycle.engine.feedback import FeedbackEvent, topic_preference, unsubscribe_event
from lifecycle.messages.links import UnsubscribeToken
from lifecycle.model import schema
from lifecycle.model.addresses import CONTACT_ID
from lifecycle.model.ledger import SuppressionReason as R

SOURCE = "preference_centre"
MARKETING = "marketing"


@dataclass(frozen=True)
class Choice:
    """One line of the preference centre: a topic or a channel, and whether the contact gets it."""

    key: str
    label: str
    description: str
    subscribed: bool
    optional: bool = True


@dataclass(frozen=True)
class Preferences:
    """What the preference centre shows one contact: the topic of the message its link came in, the
    policy's topics and the channels it may unsubscribe from."""

    topic: str | None
    topics: tuple[Choice, ...]
    channels: tuple[Choice, ...]


def message_topic(conn: Connection, message_id: int, policy: config.Policy) -> str | None:
    """The topic of the message's program, when it names one of the policy's topics."""
    m = schema.messages
    program_id = conn.execute(select(m.c.program).where(m.c.message_id == message_id)).scalar_one_or_none()
    if program_id is None:
        return None
    try:
        program = config.load_program(config.program_files_dir() / f"{program_id}.yml")
    except config.ConfigError:
        return None
    return program.topic if program.topic in policy.topics else None


def opt_out_channels() -> list[str]:
    """The channels a contact may unsubscribe from: those a marketing unsubscribe stops that reach
    an inbox of the person's own (a channel addressed by contact id, such as a webhook to another
    system, is an integration, not an inbox)."""
    return [
        name
        for name in registry.names()
        if R.UNSUBSCRIBED in registry.get(name).list_reasons
        and registry.get(name).address is not CONTACT_ID
        and registry.get(name).consent
    ]


def _channel_subscribed(conn: Connection, contact_id: str, channel: str) -> bool:
    s, k = schema.suppressions, schema.consents
    listed = conn.execute(
        select(s.c.contact_id).where(s.c.contact_id == contact_id, s.c.channel == channel, s.c.reason == R.UNSUBSCRIBED)
    ).first()
    newest = conn.execute(
        select(k.c.status)
        .where(k.c.contact_id == contact_id, k.c.channel == channel, k.c.purpose == MARKETING)
        .order_by(k.c.captured_at.desc(), k.c.status == "granted")
        .limit(1)
    ).scalar_one_or_none()
    return listed is None and newest not in ("withdrawn", "denied")


def contact_locale(conn: Connection, contact_id: str) -> str | None:
    """The contact's ``locale`` from the CRM (``de-DE``), for the language of its pages; None when
    the contact is not there or has none."""
    c = schema.contacts
    found = conn.execute(select(c.c.locale).where(c.c.contact_id == contact_id).limit(1)).scalar_one_or_none()
    return found if isinstance(found, str) else None


def read_preferences(conn: Connection, token: UnsubscribeToken, policy: config.Policy) -> Preferences:
    """The contact's topics and channels as they stand now."""
    contact = token.contact_id
    topics = tuple(
        Choice(key, t.label, t.description, topic_preference(conn, contact, key) != "withdrawn", t.optional)
        for key, t in policy.topics.items()
    )
    channels = tuple(
        Choice(name, f"Marketing by {name}", "", _channel_subscribed(conn, contact, name))
        for name in opt_out_channels()
    )
    return Preferences(message_topic(conn, token.message_id, policy), topics, channels)


def changes(
    preferences: Preferences,
    token: UnsubscribeToken,
    topics_on: Collection[str],
    channels_on: Collection[str],
    at: datetime,
) -> list[FeedbackEvent]:
    """The events a submitted form makes: each optional topic and channel whose box changed."""
    events = [
        unsubscribe_event(token, at, choice.key, source=SOURCE, granted=choice.key in topics_on)
        for choice in preferences.topics
        if choice.optional and (choice.key in topics_on) != choice.subscribed
    ]
    for choice in preferences.channels:
        if (choice.key in channels_on) != choice.subscribed:
            on_channel = UnsubscribeToken(token.message_id, token.contact_id, choice.key)
            events.append(unsubscribe_event(on_channel, at, source=SOURCE, granted=choice.key in channels_on))
    return events
