"""The ledger vocabulary: message statuses, their groups, and the reason names, defined once.

Every value here is stored: ``lifecycle_messages.status`` and ``reason``,
``lifecycle_enrollments.state`` and ``exit_reason``, ``lifecycle_suppressions.reason``, and the
funnel metrics named after them. The values are a fixed contract (tests, docs, dashboards and
users read them): add a name, never change a value.

The names are :class:`enum.StrEnum` members, so each *is* its value: it binds as text on SQLite
and PostgreSQL, equals the plain string read back from the database, and serialises as the value
to JSON and Airflow XCom. Its ``repr`` is the value's too, so logged counts and config errors read
``'sent'``, as they did when these were bare strings.

Reasons that quote something else — a provider's error (``sendgrid 400 …``, ``twilio 30003
undelivered``), a template's error, the cap that was reached — are formatted where they arise;
this module names the fixed reasons and the prefixes of the formatted ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Literal, get_args


class _Vocabulary(StrEnum):
    """A stored value with a name: compares, hashes, formats and reprs as its value."""

    def __repr__(self) -> str:
        return repr(self.value)


class Status(_Vocabulary):
    """``lifecycle_messages.status``, in the order a message meets them."""

    PLANNED = "planned"  # written by planning; suppression and capping decide what becomes of it
    SKIPPED = "skipped"  # the step's condition did not hold (reason: SkipReason)
    HELD_OUT = "held_out"  # the contact is in the program holdout or the global control group (HeldOutReason)
    SUPPRESSED = "suppressed"  # must not go (SuppressionReason)
    CAPPED = "capped"  # a frequency cap is full (CapReason.FREQUENCY_CAP)
    DEFERRED = "deferred"  # waits for the end of quiet hours (CapReason.QUIET_HOURS), then is planned again
    READY = "ready"  # passed every check; waits for a send batch
    SENDING = "sending"  # claimed by a send attempt, before the provider call
    SENT = "sent"  # the provider accepted it
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    FAILED = "failed"  # certainly not sent (OutcomeReason, or the provider's reason)
    UNKNOWN = "unknown"  # may or may not have reached the provider; never resent blindly
    # Rendered and recorded by the developer tools' simulation (simulation, benchmark); nothing left
    # the machine. The stored value keeps its historical name; no DAG records it.
    DRY_RUN = "dry_run"


class EnrollmentState(_Vocabulary):
    """``lifecycle_enrollments.state``."""

    ACTIVE = "active"
    COMPLETED = "completed"  # the journey's last step was planned
    EXITED = "exited"  # left early, with an ExitReason or a program's exit rule reason


# --- reasons --------------------------------------------------------------------------------------


class ExitReason(_Vocabulary):
    """``lifecycle_enrollments.exit_reason`` the engine writes; a program's exit rules add their own."""

    CONVERTED = "converted"  # met the program's exit goal
    LEFT_SEGMENT = "left_segment"  # no longer in the entry segment (exit.on_segment_leave)
    COMPLETED = "completed"  # the journey's last step was planned


class SuppressionReason(_Vocabulary):
    """Why a message is ``suppressed``. Those a contact is listed for (opt-outs, bounces, bad or
    duplicate addresses) are also ``lifecycle_suppressions.reason``, added by webhooks and data hygiene."""

    ALREADY_CONVERTED = "already_converted"
    OPEN_SUPPORT_TICKET = "open_support_ticket"
    IN_SALES_NEGOTIATION = "in_sales_negotiation"
    RECENT_PURCHASE = "recent_purchase"
    MISSING_ADDRESS = "missing_address"
    INVALID_ADDRESS = "invalid_address"
    UNSUBSCRIBED = "unsubscribed"
    HARD_BOUNCE = "hard_bounce"
    SPAM_REPORT = "spam_report"
    SMS_STOP = "sms_stop"
    WHATSAPP_STOP = "whatsapp_stop"
    DUPLICATE_CONTACT = "duplicate_contact"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    NO_CONSENT = "no_consent"  # also a prefix: ``no_consent: <region>`` when a region's rule decided
    TOPIC_OPT_OUT = "topic_opt_out"  # a prefix: recorded as ``topic_opt_out: <topic>``


UNKNOWN_COUNTRY: Final = "unknown_country"
"""The region a contact without a country is in, as a ``no_consent: <region>`` reason names it."""


def topic_opt_out(topic: str) -> str:
    """The reason a message is suppressed for: its contact opted out of its program's topic."""
    return f"{SuppressionReason.TOPIC_OPT_OUT}: {topic}"


def regional_no_consent(region: str) -> str:
    """The reason a message is suppressed for: the contact's region's rule needs a consent it lacks."""
    return f"{SuppressionReason.NO_CONSENT}: {region}"


ADDRESS_LISTS: Final[tuple[SuppressionReason, ...]] = (
    SuppressionReason.UNSUBSCRIBED,
    SuppressionReason.HARD_BOUNCE,
    SuppressionReason.SPAM_REPORT,
    SuppressionReason.SMS_STOP,
    SuppressionReason.WHATSAPP_STOP,
)
"""The lists an address is on, not only a contact row: an opt-out, bounce or spam report holds for
every contact with the same normalised address (feedback records it; suppression checks it)."""

MARKETING_ONLY: Final[frozenset[SuppressionReason]] = frozenset({SuppressionReason.UNSUBSCRIBED})
"""Suppression lists that stop marketing only: a service (transactional) message still goes to a
contact on them. Bounces, spam reports, SMS STOP, bad or duplicate addresses stop every message."""

PolicyRule = Literal[
    SuppressionReason.OPEN_SUPPORT_TICKET, SuppressionReason.IN_SALES_NEGOTIATION, SuppressionReason.RECENT_PURCHASE
]
"""The suppressions ``config/policy.yml`` turns on by program class: each policy key is the reason it records."""

POLICY_RULES: Final[tuple[SuppressionReason, ...]] = get_args(PolicyRule)


class HeldOutReason(_Vocabulary):
    """Why a message is ``held_out``."""

    GLOBAL_CONTROL = "global_control"
    PROGRAM_HOLDOUT = "program_holdout"


class SkipReason(_Vocabulary):
    """Why a message is ``skipped``."""

    STEP_CONDITION_NOT_MET = "step_condition_not_met"
    STEP_LATE = "step_late"  # its moment passed more than the program's ``late_after`` before the run


class CapReason(_Vocabulary):
    """Why capping kept a message back: ``capped`` by a frequency cap, ``deferred`` by quiet hours."""

    FREQUENCY_CAP = "frequency_cap"  # a prefix: recorded as ``frequency_cap_<scope>: <max> per <period>``
    QUIET_HOURS = "quiet_hours"


NEXT_BEST_ACTION_DETAIL: Final = "; next-best-action: "
"""Joins a capped message's cap reason and, under next-best-action, why the slot went to another
program (``frequency_cap_email: 3 per 7d; next-best-action: winback (EV 0.03) over upsell ...``)."""


def reason_kind(reason: str | None) -> str | None:
    """A recorded reason without next-best-action's detail: what the funnel figures group by."""
    return None if reason is None else reason.split(NEXT_BEST_ACTION_DETAIL, 1)[0]


class OutcomeReason(_Vocabulary):
    """Why a claimed message is ``failed``, ``bounced`` or ``unknown`` rather than sent, when the
    engine names it (the rest are the provider's or the template's own words)."""

    CONTACT_GONE = "contact no longer in the CRM"
    AMBIGUOUS_CONTACT = "ambiguous CRM data: the contact id is on more than one row of contacts"
    UNREADABLE_CRM_DATA = "unreadable CRM data"  # a prefix: ``unreadable CRM data: <what could not be read>``
    INVALID_EMAIL = "invalid email address"  # the provider transport's own check, before SendGrid
    PHONE_NOT_E164 = "phone number is not in E.164 form"  # the same, before Twilio
    # WhatsApp: free-form only within 24 hours of the contact's last message, else an approved template
    WEBHOOK_NOT_JSON = "the webhook payload is not JSON"  # a prefix: ``...: <why>``
    OUTSIDE_WHATSAPP_WINDOW = "outside the WhatsApp 24-hour window and the step has no content template"
    HARD_BOUNCE = "hard bounce"  # ``bounced``: the address does not exist (it also gets a hard_bounce suppression)
    BLOCKED = "blocked"  # ``bounced``: the receiving server refused it this time
    DROPPED = "dropped"  # a prefix: ``dropped: <SendGrid's reason>``
    # a prefix: ``too many segments: <n> over the policy's <channel>_max_segments of <limit>``
    TOO_MANY_SEGMENTS = "too many segments"
    # ``unknown``: found ``sending`` after the attempt that claimed it stopped
    STALE_CLAIM = "outcome unknown: a previous attempt stopped while sending; not resent"
    # Never stored: they travel from a transport to dispatch.
    NOT_FOUND_AT_PROVIDER = "not found at twilio"  # reconciliation: the provider never took the message
    CLAIM_LOST = "claim passed to another attempt; not sent by this one"  # that attempt records the outcome


class ChannelReason(_Vocabulary):
    """``lifecycle_messages.channel_reason``: why a message went on its channel. A step that lists
    ``channels`` records the rule that put the channel first (``choose_by``), or ``fallback: ...``
    when the channels before it could not reach the contact; a step with a ``fallback`` records the
    fallback when it moves a message. NULL: the step's one channel, nothing to choose."""

    PREFERRED_CHANNEL = "preferred_channel"  # the contact's ``preferred_channel`` custom attribute
    LAST_ENGAGED = "last_engaged"  # the channel of the contact's latest open, click, read or reply
    ORDER = "order"  # the step's own order (the rule, or the contact has no data for it)
    # a prefix: ``fallback: <channel> unreachable (<reason>)``, one clause per channel passed over
    FALLBACK = "fallback"


ChannelRule = Literal[ChannelReason.PREFERRED_CHANNEL, ChannelReason.LAST_ENGAGED, ChannelReason.ORDER]
"""The rules a step's ``choose_by`` names: which of its ``channels`` comes first for a contact."""


# --- status groups ------------------------------------------------------------------------------


def _in_order(members: Iterable[Status]) -> tuple[Status, ...]:
    """A group as a tuple in declaration order (stable SQL and output, whatever the hash seed)."""
    chosen = set(members)
    return tuple(status for status in Status if status in chosen)


PROGRESSION: Final = (Status.SENT, Status.DELIVERED, Status.OPENED, Status.CLICKED)
"""The path of a message that went out, in order, as provider events arrive (feedback moves it forward only)."""

FINAL: Final = (Status.BOUNCED, Status.FAILED)
"""A provider's last word: no later event moves a message on from these (feedback)."""

WENT_OUT: Final = _in_order({*PROGRESSION, Status.BOUNCED})
"""Reached a provider, which did not refuse it: the funnel's ``sent``, deliverability's denominator,
hygiene's bounce rate. (A message the provider took and then failed, such as Twilio's ``undelivered``,
is ``failed``.)"""

DELIVERED_OR_LATER: Final = PROGRESSION[PROGRESSION.index(Status.DELIVERED) :]
"""Delivered, whatever engagement followed: deliverability's delivered rate."""

OPENED_OR_LATER: Final = PROGRESSION[PROGRESSION.index(Status.OPENED) :]
"""Opened, or clicked: deliverability's (directional) open rate."""

MESSAGED: Final = _in_order({*WENT_OUT, Status.DRY_RUN})
"""The contact counts as messaged (a simulated send is otherwise a real run): measurement's exposure, the simulation."""

IN_FLIGHT: Final = (Status.READY, Status.SENDING, Status.UNKNOWN)
"""Chosen to go, with no settled outcome: it may still go out, or may already have."""

SLOT_HOLDING: Final = _in_order({*MESSAGED, *IN_FLIGHT, Status.DEFERRED})
"""Counts against a frequency cap across programs (sent, on its way or deferred, simulated sends too): capping."""

STILL_CLAIMED: Final[Mapping[Status, str | None]] = MappingProxyType(
    {Status.SENDING: None, Status.UNKNOWN: OutcomeReason.STALE_CLAIM}
)
"""A claimed message whose claimer may still record its outcome: status -> the reason it must
also carry (None: any). Dispatch writes outcomes and renews claims only on these."""

WITHHELD: Final = (Status.SKIPPED, Status.HELD_OUT, Status.SUPPRESSED, Status.CAPPED, Status.DEFERRED)
"""Kept back before sending, each with its reason: the funnel counts them by reason."""

NOT_GONE_OUT: Final = _in_order({*WITHHELD, Status.FAILED})
"""Did not go out, or did not get through (``failed``), so the ledger says why in ``reason`` (the
README's contract)."""

FEEDBACK_RANK: Final[Mapping[Status, int]] = MappingProxyType(
    {Status.SENDING: 0, Status.UNKNOWN: 0}
    | {status: rank for rank, status in enumerate(PROGRESSION, start=1)}
    | dict.fromkeys(FINAL, len(PROGRESSION) + 1)
)
"""How far a message has come, for provider events: feedback moves a message only to a higher
rank, so a late event never moves it back. A status without a rank is never moved by an event."""
