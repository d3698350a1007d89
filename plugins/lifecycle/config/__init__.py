"""Program, policy and named-segment files: schema, loading, and errors a person can act on.

``config/programs/<id>.yml`` describes one program (one DAG); ``config/policy.yml`` holds the
rules every program shares; ``config/segments.yml`` the named core segments programs reuse.
A wrong file raises :class:`ConfigError` naming the file, the field and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, get_args

import yaml
from babel.numbers import list_currencies
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lifecycle.config import segments
from lifecycle.config.durations import parse_duration
from lifecycle.config.segments import Segment
from lifecycle.model import channels, schema
from lifecycle.model.ledger import (
    UNKNOWN_COUNTRY,
    ChannelReason,
    ChannelRule,
    ExitReason,
    PolicyRule,
    SuppressionReason,
)
from lifecycle.paths import config_dir, templates_dir

if TYPE_CHECKING:
    from pydantic_core import CoreSchema

_Model = TypeVar("_Model", bound=BaseModel)

PROGRAM_ID = re.compile(r"^[a-z][a-z0-9_]{1,62}$")

Purpose = Literal["marketing", "transactional"]
"""A consent purpose (``consents.purpose``): what a program's messages are sent for."""
PURPOSES: tuple[str, ...] = get_args(Purpose)
SERVICE_PURPOSE: Purpose = "transactional"
"""The purpose that makes a program a service program."""

BASES = ("explicit", "implied")
"""The legal bases a purpose may be sent on (policy ``legal_basis``): ``explicit``, the newest
consent row is ``granted``; ``implied``, messaged unless the newest row is ``withdrawn`` or
``denied`` (no row is enough)."""


def _registered_channel(name: str | None) -> str | None:
    """``name`` when it is a registered channel (or left out)."""
    if name is not None and name not in channels.names():
        raise ValueError(f"{name!r} is not a registered channel — fix: use one of {list(channels.names())}")
    return name


def _cap_scope(name: str) -> str:
    """A cap's scope: a registered channel, or ``all`` for every channel together."""
    if name != "all" and name not in channels.names():
        raise ValueError(
            f"{name!r} is not a registered channel or 'all' — fix: use one of {[*channels.names(), 'all']}"
        )
    return name


def _quiet_channel(name: str) -> str:
    """A channel that may have quiet hours."""
    quiet = [c for c in channels.names() if channels.get(c).quiet_hours]
    if name not in quiet:
        raise ValueError(f"{name!r} is not a registered channel with quiet hours — fix: use one of {quiet}")
    return name


def _purpose(name: str) -> str:
    """A consent purpose."""
    if name not in PURPOSES:
        raise ValueError(f"{name!r} is not a consent purpose — fix: use one of {list(PURPOSES)}")
    return name


def _basis(name: str) -> str:
    """A legal basis."""
    if name not in BASES:
        raise ValueError(
            f"{name!r} is not a legal basis — fix: use explicit (a granted consent row is needed) "
            "or implied (sent unless consent is withdrawn or denied)"
        )
    return name


CapScope = Annotated[str, AfterValidator(_cap_scope)]
ConsentPurpose = Annotated[str, AfterValidator(_purpose)]
LegalBasis = Annotated[str, AfterValidator(_basis)]
DEFAULT_LEGAL_BASIS: Mapping[str, str] = {"marketing": "explicit", "transactional": "implied"}
QuietChannel = Annotated[str, AfterValidator(_quiet_channel)]


class ConfigError(ValueError):
    """A configuration file is wrong: the message names the file, the field and the fix."""

    def __init__(self, file: Path | str, problems: list[str]) -> None:
        self.file = str(file)
        self.problems = problems
        super().__init__(f"{file}: " + "; ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Duration(timedelta):
    """A timedelta field that accepts the program-file duration forms."""

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(parse_duration)


class SegmentExpr(BaseModel):
    """A segment expression kept as written, checked by the segment parser."""

    model_config = ConfigDict(frozen=True)
    raw: dict[str, Any]

    @cached_property
    def parsed(self) -> segments.Segment:
        return segments.parse(self.raw)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        def validate(value: Any) -> SegmentExpr:
            if isinstance(value, SegmentExpr):
                return value
            try:
                segments.parse(value)
            except segments.SegmentError as exc:
                raise ValueError(str(exc)) from None
            return cls.model_construct(raw=dict(value))

        return core_schema.no_info_plain_validator_function(validate)


class Step(_Strict):
    """One message of a journey."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    channel: str
    fallback: str | None = None
    # Several channels in order of preference, instead of ``channel`` (and ``fallback``): each
    # contact gets the first one that can reach it, in the order ``choose_by`` gives.
    channels: list[str] | None = None
    # Unset: the order given.
    choose_by: ChannelRule | None = None
    delay: Duration = Field(default_factory=lambda: Duration(0))
    relative_to: Literal["enrollment", "previous", "anchor"] = "previous"
    template: str
    when: SegmentExpr | None = None
    # How long after its moment the step may still go; past it, the step is skipped as late.
    # Unset: the program's ``late_after``.
    late_after: Duration | None = None
    # False: the step goes to the program holdout and the global control group too (a billing-failure
    # notice nobody may miss); lift is then measured on the other steps.
    holdout: bool = True
    # A sales task's due time: this long after it is created (only on a step whose channel or
    # fallback creates tasks, such as ``sales_task``). Unset: the channel's default (24 hours).
    due_within: Duration | None = None

    _registered = field_validator("channel", "fallback")(_registered_channel)

    @model_validator(mode="before")
    @classmethod
    def _channel_from_channels(cls, data: Any) -> Any:
        """A step with ``channels`` plans on its first one: ``channel`` is that, for everything
        that reads a step's channel (previews, the DAG's docs)."""
        if isinstance(data, Mapping) and data.get("channels") and "channel" not in data:
            listed = data["channels"]
            if isinstance(listed, list | tuple):
                return {**data, "channel": listed[0]}
        return data

    @field_validator("channels")
    @classmethod
    def _channels_listed(cls, listed: list[str] | None) -> list[str] | None:
        if listed is None:
            return None
        for name in listed:
            _registered_channel(name)
        if len(listed) < 2:
            raise ValueError(
                f"channels needs two or more channels in order of preference, got {list(listed)} — fix: "
                "add a channel, or use channel: for a single one"
            )
        if len(set(listed)) != len(listed):
            raise ValueError(f"channels lists a channel twice: {list(listed)} — fix: list each channel once")
        return listed

    @model_validator(mode="after")
    def _fallback_differs(self) -> Step:
        if self.fallback == self.channel:
            raise ValueError(f"fallback must be the other channel than {self.channel!r}, or left out")
        return self

    @model_validator(mode="after")
    def _one_way_to_choose(self) -> Step:
        if self.channels is None:
            if self.choose_by is not None:
                raise ValueError(
                    "choose_by is only for a step that lists channels — fix: list them, e.g. "
                    "channels: [whatsapp, sms, email], or remove choose_by"
                )
            return self
        if self.fallback is not None:
            fix = "remove fallback" if self.fallback in self.channels else f"add {self.fallback!r} to channels"
            raise ValueError(f"a step with channels has no fallback: every channel after the first is one — fix: {fix}")
        if self.channel != self.channels[0]:
            raise ValueError(
                f"channel {self.channel!r} and channels {list(self.channels)} disagree — fix: give channels alone"
            )
        return self

    @property
    def reach(self) -> tuple[str, ...]:
        """Every channel the step may send on, in its order: ``channels``, or the channel and its fallback."""
        if self.channels is not None:
            return tuple(self.channels)
        return (self.channel, self.fallback) if self.fallback else (self.channel,)

    @property
    def rule(self) -> ChannelRule:
        """How the step orders its ``channels`` for a contact (``order`` when ``choose_by`` is unset)."""
        return self.choose_by or ChannelReason.ORDER

    @model_validator(mode="after")
    def _due_within_for_tasks(self) -> Step:
        if self.due_within is None:
            return self
        if self.due_within <= timedelta(0):
            raise ValueError("due_within must be positive, e.g. '24h'")
        if not any(getattr(channels.get(c), "creates_tasks", False) for c in self.reach):
            raise ValueError(
                f"due_within is only for a step whose channel or fallback creates tasks (sales_task), not "
                f"{self.channel!r} — fix: remove it or use channel: sales_task"
            )
        return self


class Anchor(_Strict):
    """A date each enrollment remembers, for steps timed around it (e.g. a renewal date)."""

    table: Literal["subscriptions", "contacts"]
    column: str
    pick: Literal["next", "last"] = "next"

    @field_validator("column")
    @classmethod
    def _timestamp_column(cls, column: str, info: ValidationInfo) -> str:
        table = schema.CRM_TABLES.get(info.data.get("table", ""))
        if table is None:
            return column
        dates = sorted(c.name for c in table.columns if c.type.python_type is datetime)
        if column not in table.c:
            raise ValueError(f"unknown column {column!r} of {table.name}; use one of {dates}")
        if column not in dates:
            raise ValueError(f"{column!r} is not a timestamp column of {table.name}; use one of {dates}")
        return column


class Audience(_Strict):
    """Who enters: the entry segment, the trigger event to remember and the anchor date."""

    segment: SegmentExpr
    trigger_event: list[str] = Field(default_factory=list)
    # What steps relative to the enrollment count from: the trigger event (the default when there is
    # one: a cart's reminder an hour after the cart), or the enrollment (the trigger event is then
    # only what the messages talk about, e.g. the last action of a dormant customer).
    timed_from: Literal["trigger_event", "enrollment"] | None = None
    anchor: Anchor | None = None
    # True: a trigger event starts a run within seconds (the program's schedule still runs too), through
    # an Airflow asset watched by the triggerer; False: only the schedule notices new trigger events.
    realtime: bool = False

    @model_validator(mode="after")
    def _realtime_needs_events(self) -> Audience:
        if self.realtime and not self.trigger_event:
            raise ValueError(
                "realtime: true needs the events that start the journey — fix: name them in "
                "audience.trigger_event (e.g. signed_up), or remove realtime"
            )
        return self

    @property
    def trigger_timed(self) -> bool:
        """Whether enrollment-relative steps count from the trigger event's time."""
        return bool(self.trigger_event) and self.timed_from != "enrollment"

    @field_validator("trigger_event", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ReEntry(_Strict):
    allowed: bool = False
    cooldown: Duration = Field(default_factory=lambda: Duration(days=30))


class ExitRule(_Strict):
    """Leave the journey early when ``segment`` holds, recording ``reason``."""

    reason: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")
    segment: SegmentExpr

    @field_validator("reason")
    @classmethod
    def _not_the_engines(cls, reason: str) -> str:
        # ``converted`` counts as a conversion in the funnel and the KPIs: only the exit goal records it.
        if reason in set(ExitReason):
            raise ValueError(
                f"{reason!r} is a reason the engine records itself ({', '.join(ExitReason)}) — fix: name "
                "the rule for why contacts leave (e.g. subscription_ended), and put a conversion in exit.goal"
            )
        return reason


class Exit(_Strict):
    goal: SegmentExpr | None = None
    rules: list[ExitRule] = Field(default_factory=list)
    on_segment_leave: bool = False


class Variant(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_]{1,32}$")
    weight: int = Field(gt=0)


class ABTest(_Strict):
    """One variable tested, variants assigned deterministically per enrollment."""

    name: str
    variable: Literal["subject", "offer", "channel", "content"]
    variants: list[Variant] = Field(min_length=2)
    salt: str = ""


class Kpi(_Strict):
    """The program's primary KPI: a conversion measured over an attribution window."""

    primary: str
    label: str
    conversion: SegmentExpr
    attribution_window: Duration = Field(default_factory=lambda: Duration(days=14))
    value_property: str | None = None


Identifier = Literal["email", "phone"]
IDENTIFIERS: tuple[Identifier, ...] = ("email", "phone")


class AudienceSync(_Strict):
    """The program's members synced as a paid-advertising audience (``audience_sync``): each run
    sends the ad platform the adds and removes since the last sync, as SHA-256 hashes of the
    normalised email and phone, of the contacts with a granted ``ads`` consent (never holdout or
    global-control members); see :mod:`lifecycle.engine.ad_audiences`."""

    # The platform whose API the connection reaches: Meta's Custom Audience users API.
    platform: Literal["meta"] = "meta"
    # The platform's audience id (the custom audience's numeric id on Meta).
    audience: str
    # The Airflow connection: host = the API's base URL with its version, password = the access token.
    conn_id: str = Field(default="ads_default", pattern=r"^[A-Za-z0-9_.-]{1,250}$")
    # enrolled: the contacts in an active treatment enrollment (a conversion or exit removes them);
    # segment: the entry segment's members as of the run, less the holdout and global control group.
    members: Literal["enrolled", "segment"] = "enrolled"
    # The identifiers uploaded, in the schema's order.
    identifiers: list[Identifier] = Field(default_factory=lambda: list(IDENTIFIERS), min_length=1)
    # Rows per request (Meta takes at most 10,000).
    batch_size: int = Field(default=10_000, ge=1, le=10_000)

    @field_validator("audience")
    @classmethod
    def _audience_id(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            raise ValueError(
                f"{value!r} is not an audience id — fix: write the ad platform's id of the audience "
                "(letters, digits, - or _, at most 64; a Meta custom audience's is its number, quoted)"
            )
        return value

    @field_validator("identifiers")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"identifiers {value} name one twice — fix: list email and phone at most once each")
        return value


class Program(_Strict):
    """One lifecycle program: a DAG with a journey."""

    id: str
    name: str
    description: str = ""
    owner: str
    priority: int = Field(ge=0, le=1000)
    schedule: str | None = "@daily"
    tags: list[str] = Field(default_factory=list)
    classes: list[Literal["promotional", "generic_promo", "transactional"]] = Field(default_factory=list)
    consent_purpose: Purpose = "marketing"
    audience: Audience
    re_entry: ReEntry = Field(default_factory=ReEntry)
    exit: Exit = Field(default_factory=Exit)
    steps: list[Step] = Field(min_length=1)
    # A step whose moment passed more than this before a run is skipped (``step_late``), not sent late.
    late_after: Duration = Field(default_factory=lambda: Duration(hours=24))
    holdout_percent: float = Field(default=10.0, ge=0, le=50)
    holdout_salt: str = ""
    ab_test: ABTest | None = None
    kpi: Kpi
    # The subscription topic its messages belong to (a key of the policy's ``topics``): a contact who
    # opted out of it gets none of them, and keeps the other topics. Left out: no topic.
    topic: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,31}$")
    # The program's members synced as a paid-advertising audience (left out: none is).
    audience_sync: AudienceSync | None = None

    @model_validator(mode="after")
    def _steps_consistent(self) -> Program:
        ids = [s.id for s in self.steps]
        if len(set(ids)) != len(ids):
            raise ValueError(f"step ids must be unique; found {ids}")
        if any(s.relative_to == "anchor" for s in self.steps) and self.audience.anchor is None:
            raise ValueError("a step is relative_to: anchor, so set audience.anchor (table and column)")
        if self.late_after < timedelta(0) or any(
            s.late_after is not None and s.late_after < timedelta(0) for s in self.steps
        ):
            raise ValueError("late_after must not be negative")
        return self

    @property
    def salt(self) -> str:
        return self.holdout_salt or self.id

    @property
    def is_service(self) -> bool:
        """A service program (renewal notices, billing fixes): its messages are sent on transactional
        consent, under the policy's ``service_caps`` instead of the marketing caps, and a marketing
        unsubscribe does not stop them."""
        return self.consent_purpose == SERVICE_PURPOSE

    def late_after_for(self, step: Step) -> Duration:
        """How late ``step`` may still go: its own ``late_after``, else the program's."""
        return step.late_after if step.late_after is not None else self.late_after


class Cap(_Strict):
    max: int = Field(ge=0)
    per: Duration


class QuietHours(_Strict):
    """A channel's quiet hours (SMS's, say) in the recipient's local time: messages then wait for ``end``."""

    start: time
    end: time
    default_timezone: str = "UTC"


class ControlGroup(_Strict):
    percent: float = Field(ge=0, le=50)
    salt: str


class SuppressionRule(_Strict):
    applies_to: list[Literal["promotional", "generic_promo", "all"]]
    within: Duration | None = None


class Stakeholder(_Strict):
    name: str
    email: str


class Brand(_Strict):
    """How messages sign off and where their links lead."""

    name: str = "Lifecycle"
    app_url: str = "https://app.example.com"
    support_url: str = "https://app.example.com/support"
    postal_address: str = ""


class TopicWords(_Strict):
    """A topic's label and description in one language, for the preference centre."""

    label: str = Field(min_length=1)
    description: str = ""


class Topic(_Strict):
    """A subscription topic (product news, offers...): what programs' messages are about, which a
    contact may opt out of and keep the rest."""

    label: str
    description: str = ""
    # The SendGrid unsubscribe group (ASM) of the topic: its emails carry it (``asm.group_id``), and
    # SendGrid's group unsubscribe and resubscribe events change the topic. ``asm_group_id`` is
    # accepted as its other name (SendGrid's).
    sendgrid_group: int | None = Field(
        default=None, ge=1, validation_alias=AliasChoices("sendgrid_group", "asm_group_id")
    )
    # False: the topic cannot be opted out of (account and billing notices); shown, not offered.
    optional: bool = True
    # The label and description in other languages, by ISO 639-1 code (de, fr...): a preference
    # centre shown in that language uses them; every other one shows label and description.
    translations: dict[Annotated[str, Field(pattern=r"^[a-z]{2}$")], TopicWords] = Field(default_factory=dict)

    def words(self, language: str) -> tuple[str, str]:
        """The topic's label and description in ``language`` (the description as written when the
        translation has none), else as written."""
        translated = self.translations.get(language)
        if translated is None:
            return self.label, self.description
        return translated.label, translated.description or self.description


class ConsentForm(_Strict):
    """A signup form: the version and the exact consent text it shows, recorded as proof with every
    subscription it captures (and every paper form imported under its id)."""

    version: str = Field(min_length=1, max_length=32)
    consent_text: str = Field(min_length=1)
    label: str = "Subscribe to our emails"


class RateLimit(_Strict):
    """At most ``max`` subscription requests per ``per``."""

    max: int = Field(ge=1)
    per: Duration


class WriteBack(_Strict):
    """Sent touches posted to the CRM as activities on the contact (policy ``write_back``), so sales
    sees marketing's touches: the messages of ``channels`` that went out (the provider accepted
    them) and were sent within ``within`` before a run's as-of time, each posted once to the
    endpoint of Airflow connection ``connection``."""

    connection: str = "crm_activities_default"
    channels: list[str] = Field(min_length=1)
    within: Duration = Field(default_factory=lambda: Duration(days=7))

    @field_validator("channels")
    @classmethod
    def _registered_channels(cls, names: list[str]) -> list[str]:
        for name in names:
            _registered_channel(name)
        return names


class Capture(_Strict):
    """How subscriptions are captured (``POST /lifecycle/subscribe``): the forms, how long a
    confirmation link stays valid, whether the IP address is kept as proof, and the rate limits."""

    forms: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")], ConsentForm] = Field(default_factory=dict)
    confirm_within: Duration = Field(default_factory=lambda: Duration(days=2))
    # Keep the requester's IP address with the proof (off by default: only where you need it).
    record_ip: bool = False
    per_ip: RateLimit = Field(default_factory=lambda: RateLimit(max=10, per=Duration(hours=1)))
    per_address: RateLimit = Field(default_factory=lambda: RateLimit(max=3, per=Duration(hours=1)))


_COUNTRY = re.compile(r"^[A-Z]{2}$")


def _country(code: str) -> str:
    """An ISO 3166 alpha-2 country code, in capitals."""
    code = code.strip().upper()
    if not _COUNTRY.match(code):
        raise ValueError(f"{code!r} is not an ISO 3166 alpha-2 country code — fix: write two letters, e.g. DE")
    return code


Country = Annotated[str, AfterValidator(_country)]


class Region(_Strict):
    """A consent region: its countries and the legal basis each channel and purpose needs there;
    a channel or purpose it leaves out follows the policy's ``legal_basis``."""

    countries: list[Country] = Field(min_length=1)
    legal_basis: dict[str, dict[ConsentPurpose, LegalBasis]]

    _registered = field_validator("legal_basis")(
        lambda value: {_registered_channel(channel) or channel: bases for channel, bases in value.items()}
    )


@dataclass(frozen=True)
class RegionBasis:
    """The legal basis one region's contacts are messaged on for a channel and purpose.
    ``countries`` None: the contacts whose country is unknown."""

    region: str
    countries: tuple[str, ...] | None
    basis: str


STRICTEST = "strictest"
"""``unknown_country``: a contact without a country gets the strictest basis any rule gives."""
DEFAULT_BASIS = "default"
"""``unknown_country``: a contact without a country gets the policy's ``legal_basis``."""
DEFAULT_CURRENCY = "USD"
MAX_SENDGRID_GROUPS = 25
"""The unsubscribe groups one email may show on SendGrid's page (``asm.groups_to_display``)."""


class EventsQueue(_Strict):
    """A message queue that wakes realtime programs (see :mod:`lifecycle.engine.event_queue`): the
    track endpoint publishes on ``<channel_prefix><program>``, Airflow's ``MessageQueueTrigger``
    listens; the watermark watcher still looks every ``poll_seconds`` for what no wake-up announced."""

    scheme: Literal["redis+pubsub"] = "redis+pubsub"
    conn_id: str = Field(default="lifecycle_events_queue", pattern=r"^[A-Za-z0-9_.-]{1,250}$")
    channel_prefix: str = Field(default="lifecycle.events.", pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    poll_seconds: float = Field(default=60.0, ge=3, le=3600)


# Policy suppression keys that were renamed to the reason they record.
RENAMED_SUPPRESSIONS = {
    "open_ticket": SuppressionReason.OPEN_SUPPORT_TICKET,
    "sales_negotiation": SuppressionReason.IN_SALES_NEGOTIATION,
}


class Decision(_Strict):
    """How a capped slot is arbitrated between marketing programs that want the same contact.

    ``priority`` (the default): the program of higher ``priority`` wins. ``next_best_action``: the
    program with the highest expected incremental value wins, its measured lift (treatment vs
    holdout) in the contact's ``score`` band times its ``value`` per conversion, the band's lift
    shrunk toward the program's overall lift; a program with fewer than ``min_evidence`` holdout
    enrollments keeps its place in priority order. Service programs are never out-bid.
    """

    mode: Literal["priority", "next_best_action"] = "priority"
    score: str = Field(default="churn_risk", pattern=r"^[a-z][a-z0-9_]{0,63}$")
    bands: int = Field(default=5, ge=1, le=10, description="score deciles grouped into this many bands")
    min_evidence: int = Field(default=200, ge=1, description="holdout enrollments a program needs to be ranked")
    # Value of one conversion per program id; a program left out is worth 1.
    value: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")], Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict
    )

    @field_validator("score")
    @classmethod
    def _known_score(cls, value: str) -> str:
        if value not in schema.SCORE_NAMES:
            raise ValueError(f"unknown score {value!r} — fix: use one of {list(schema.SCORE_NAMES)}")
        return value

    @property
    def next_best_action(self) -> bool:
        """Whether competing marketing programs are ordered by expected incremental value."""
        return self.mode == "next_best_action"

    def value_of(self, program_id: str) -> float:
        """The value of one conversion of ``program_id`` (1 when the policy names none)."""
        return float(self.value.get(program_id, 1.0))


class Policy(_Strict):
    """Rules every program shares."""

    caps: dict[CapScope, Cap]
    # Caps of service programs' messages (renewal notices...), counted apart from ``caps``; empty: uncapped.
    service_caps: dict[CapScope, Cap] = Field(default_factory=dict)
    # What consent each purpose needs (explicit or implied); a purpose left out keeps its default.
    legal_basis: dict[ConsentPurpose, LegalBasis] = Field(default_factory=lambda: dict(DEFAULT_LEGAL_BASIS))
    quiet_hours: dict[QuietChannel, QuietHours] = Field(default_factory=dict)
    control_group: ControlGroup
    suppressions: dict[PolicyRule, SuppressionRule] = Field(default_factory=dict)
    send_batch_size: int = Field(default=500, ge=1, le=10_000)
    sms_max_segments: int = Field(
        default=10, ge=1, le=100, description="an SMS longer than this many segments fails instead of going out"
    )
    stakeholders: list[Stakeholder] = Field(default_factory=list)
    owners: dict[str, str] = Field(
        default_factory=dict, description="DAG owner -> address that gets its failure alerts"
    )
    brand: Brand = Field(default_factory=Brand)
    # Subscription topics by key; programs name theirs (``topic``).
    topics: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")], Topic] = Field(default_factory=dict)
    # Consent rules by region (countries), overriding ``legal_basis`` for their contacts.
    regions: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")], Region] = Field(default_factory=dict)
    # What a contact without a country is messaged on, when ``regions`` are set: ``strictest`` (the
    # strictest basis of any region or the default), ``default`` (``legal_basis``) or a region's name.
    unknown_country: str = STRICTEST
    # The ISO 4217 currency of the money in the CRM (the events' ``kpi.value_property``, MRR): the
    # page and the digest show revenue in it; nothing is converted.
    currency: str = DEFAULT_CURRENCY

    @field_validator("currency", mode="before")
    @classmethod
    def _iso_4217(cls, value: Any) -> Any:
        code = str(value).strip().upper()
        if code not in list_currencies():
            raise ValueError(f"{value!r} is not an ISO 4217 currency code — fix: write one such as USD, EUR or GBP")
        return code

    # Subscription capture: signup forms, double opt-in and rate limits.
    capture: Capture = Field(default_factory=Capture)
    # A message queue that wakes realtime programs as events are tracked; None: the watchers poll.
    events_queue: EventsQueue | None = None
    # Sent touches posted to the CRM as activities (left out: none are).
    write_back: WriteBack | None = None
    # How a capped slot is arbitrated between marketing programs (README "Next-best-action").
    decision: Decision = Field(default_factory=Decision)

    @model_validator(mode="after")
    def _regions_consistent(self) -> Policy:
        choices = [STRICTEST, DEFAULT_BASIS, *self.regions]
        if self.unknown_country not in choices:
            raise ValueError(
                f"unknown_country: {self.unknown_country!r} is not one of {choices} — fix: use one of them"
            )
        seen: dict[str, str] = {}
        for name, region in self.regions.items():
            for country in region.countries:
                if country in seen:
                    raise ValueError(
                        f"regions: {country} is in both {seen[country]} and {name} — fix: keep it in one region"
                    )
                seen[country] = name
        return self

    @model_validator(mode="after")
    def _topic_groups_distinct(self) -> Policy:
        owner: dict[int, str] = {}
        for name, topic in self.topics.items():
            group = topic.sendgrid_group
            if group is None:
                continue
            if group in owner:
                raise ValueError(
                    f"topics: {name} and {owner[group]} both name SendGrid group {group} — fix: give each topic "
                    "its own unsubscribe group (a group unsubscribe must say which topic it leaves)"
                )
            owner[group] = name
        if len(owner) > MAX_SENDGRID_GROUPS:
            raise ValueError(
                f"topics: {len(owner)} topics name a SendGrid group; an email can show at most "
                f"{MAX_SENDGRID_GROUPS} (asm.groups_to_display) — fix: merge topics or drop some groups"
            )
        return self

    def region_bases(self, channel: str, purpose: str) -> tuple[RegionBasis, ...]:
        """What each region needs for ``channel`` and ``purpose``, then what contacts without a
        country need; empty without regions (every contact follows :meth:`basis_for`)."""
        if not self.regions:
            return ()
        default = self.basis_for(purpose)
        bases = [
            RegionBasis(name, tuple(region.countries), region.legal_basis.get(channel, {}).get(purpose, default))
            for name, region in self.regions.items()
        ]
        if self.unknown_country == STRICTEST:
            unknown = BASES[min(BASES.index(b) for b in [default, *(r.basis for r in bases)])]
        elif self.unknown_country == DEFAULT_BASIS:
            unknown = default
        else:
            unknown = next(r.basis for r in bases if r.region == self.unknown_country)
        return (*bases, RegionBasis(UNKNOWN_COUNTRY, None, unknown))

    def topic_of(self, program: Program) -> Topic | None:
        """The topic ``program``'s messages belong to, if it names one."""
        return self.topics.get(program.topic) if program.topic else None

    def topic_groups(self) -> dict[int, str]:
        """SendGrid unsubscribe group -> the topic it stands for."""
        return {t.sendgrid_group: name for name, t in self.topics.items() if t.sendgrid_group is not None}

    def groups_to_display(self, program: Program) -> tuple[int, ...]:
        """The SendGrid groups ``program``'s emails show on SendGrid's unsubscribe page: its topic's
        group first, then every optional topic's (a contact may leave any of them there)."""
        own = self.topic_of(program)
        groups = [own.sendgrid_group] if own is not None and own.sendgrid_group else []
        groups += [t.sendgrid_group for t in self.topics.values() if t.optional and t.sendgrid_group]
        return tuple(dict.fromkeys(groups))

    @field_validator("legal_basis")
    @classmethod
    def _default_basis(cls, value: dict[str, str]) -> dict[str, str]:
        return {**DEFAULT_LEGAL_BASIS, **value}

    def basis_for(self, purpose: str) -> str:
        """The legal basis ``purpose`` is sent on: ``explicit`` or ``implied``."""
        return self.legal_basis[purpose]

    def applies(self, rule_name: PolicyRule, program: Program) -> bool:
        """Whether the suppression rule ``rule_name`` is set and covers ``program``'s classes."""
        rule = self.suppressions.get(rule_name)
        if rule is None:
            return False
        return "all" in rule.applies_to or bool(set(rule.applies_to) & set(program.classes))

    def caps_for(self, program: Program) -> dict[str, Cap]:
        """The caps ``program``'s messages are under: ``service_caps`` for a service program, else ``caps``."""
        return {str(scope): limit for scope, limit in (self.service_caps if program.is_service else self.caps).items()}

    @field_validator("suppressions", mode="before")
    @classmethod
    def _renamed_keys(cls, value: Any) -> Any:
        old = [key for key in value if key in RENAMED_SUPPRESSIONS] if isinstance(value, Mapping) else []
        if old:
            keys = f"old key{'s' * (len(old) > 1)} {', '.join(old)}"
            fixes = ", ".join(f"{key} to {RENAMED_SUPPRESSIONS[key]}" for key in old)
            raise ValueError(f"{keys} — fix: rename {fixes} (each key is the reason its rule records)")
        return value


class SegmentDef(_Strict):
    axis: Literal["stage", "value", "intent"]
    description: str
    definition: SegmentExpr


class SegmentCatalog(_Strict):
    segments: dict[str, SegmentDef]

    @cached_property
    def parsed(self) -> dict[str, Segment]:
        return {name: d.definition.parsed for name, d in self.segments.items()}


_FIXES = {
    "missing": "add this field",
    "extra_forbidden": "remove it or fix its spelling",
    "literal_error": "use one of the values listed",
    "int_parsing": "write a whole number",
    "float_parsing": "write a number",
    "bool_parsing": "write true or false",
    "string_type": "write text",
    "list_type": "write a list",
    "dict_type": "write a mapping (key: value lines)",
    "time_parsing": "write a time like '21:00'",
    "string_pattern_mismatch": "use lowercase letters, digits and underscores",
    "too_short": "add at least one item",
}


def _describe(error: Mapping[str, Any]) -> str:
    loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in error["loc"]).replace(".[", "[")
    fix = _FIXES.get(error["type"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{loc or '(top level)'}: {message}" + (f" — fix: {fix}" if fix else "")


_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, [f"cannot read the file ({exc.strerror}); check it exists"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"not UTF-8 text (byte {exc.start}); save the file as UTF-8"]) from None
    try:
        # libyaml's parser where PyYAML has it (the same safe constructor, several times faster:
        # the Campaigns page reads every program file per view); a file it refuses is read again
        # by the pure-Python parser, whose error messages the problems below quote.
        return yaml.load(text, Loader=_FAST_LOADER)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise ConfigError(path, [f"not valid YAML at {where}: {getattr(exc, 'problem', exc)}"]) from None


def _validate(model: type[_Model], data: Any, path: Path) -> _Model:
    if not isinstance(data, dict):
        raise ConfigError(path, ["the file must hold a mapping of fields (key: value lines)"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, [_describe(e) for e in exc.errors()]) from None


def load_segments(path: Path | None = None) -> SegmentCatalog:
    """Load the named core segments; a missing file means none."""
    path = path or config_dir() / "segments.yml"
    if not path.exists():
        return SegmentCatalog(segments={})
    catalog: SegmentCatalog = _validate(SegmentCatalog, _read_yaml(path), path)
    problems = []
    for name, definition in catalog.segments.items():
        for ref in segments.references(definition.definition.parsed):
            if ref not in catalog.segments:
                problems.append(f"segments.{name}: uses unknown segment {ref!r} — fix: define it here")
            elif ref == name or name in _closure(catalog, ref):
                problems.append(f"segments.{name}: refers to itself through {ref!r} — fix: break the cycle")
    if problems:
        raise ConfigError(path, problems)
    return catalog


def _closure(catalog: SegmentCatalog, name: str, seen: set[str] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    for ref in segments.references(catalog.segments[name].definition.parsed):
        if ref in catalog.segments and ref not in seen:
            seen.add(ref)
            _closure(catalog, ref, seen)
    return seen


def load_policy(path: Path | None = None) -> Policy:
    path = path or config_dir() / "policy.yml"
    return _validate(Policy, _read_yaml(path), path)


def _program_segments(program: Program) -> list[tuple[str, SegmentExpr]]:
    found = [("audience.segment", program.audience.segment), ("kpi.conversion", program.kpi.conversion)]
    if program.exit.goal:
        found.append(("exit.goal", program.exit.goal))
    found += [(f"exit.rules[{i}].segment", r.segment) for i, r in enumerate(program.exit.rules)]
    found += [(f"steps[{i}].when", s.when) for i, s in enumerate(program.steps) if s.when]
    return found


def load_program(path: Path, catalog: SegmentCatalog | None = None) -> Program:
    """Load and check one program file; its id is the file name."""
    data = _read_yaml(path)
    program_id = path.stem
    if not PROGRAM_ID.match(program_id):
        raise ConfigError(path, [f"file name {program_id!r} is not a valid program id — fix: rename to snake_case"])
    if isinstance(data, dict) and data.setdefault("id", program_id) != program_id:
        raise ConfigError(path, [f"id: {data['id']!r} differs from the file name — fix: use {program_id!r}"])
    program: Program = _validate(Program, data, path)
    catalog = catalog if catalog is not None else load_segments()
    problems = []
    for where, expr in _program_segments(program):
        for ref in segments.references(expr.parsed):
            if ref not in catalog.segments:
                problems.append(
                    f"{where}: unknown named segment {ref!r} — fix: use one of {sorted(catalog.segments)} "
                    "or define it in config/segments.yml"
                )
        journey = where.startswith(("exit.goal", "steps", "kpi"))
        if not journey and segments.uses_journey(expr.parsed, catalog.parsed):
            problems.append(f"{where}: 'since/after/before enrollment' only works in exit.goal, steps and kpi")
    templates = templates_dir()
    for i, step in enumerate(program.steps):
        for part in [part for channel in step.reach for part in _template_parts(channel)]:
            if not (templates / f"{step.template}.{part}").exists():
                problems.append(
                    f"steps[{i}].template: {step.template}.{part} not found in {templates} — fix: create it"
                )
    if problems:
        raise ConfigError(path, problems)
    return program


def _template_parts(channel: str) -> list[str]:
    return [part.suffix for part in channels.get(channel).template_parts if not part.optional]


def program_files_dir() -> Path:
    """Where the program files are."""
    return config_dir() / "programs"


def program_files(directory: Path | None = None) -> list[Path]:
    """Program files in a stable order."""
    return sorted((directory or program_files_dir()).glob("*.yml"))


def topic_problem(program: Program, policy: Policy | None) -> str | None:
    """Why ``program``'s topic is wrong for the policy (it names none the policy has), or None."""
    if program.topic is None or policy is None or program.topic in policy.topics:
        return None
    return (
        f"topic: {program.topic!r} is not a topic of the policy — fix: use one of {sorted(policy.topics)} "
        "or add it to topics in policy.yml"
    )


def shared_audience_problems(programs: Mapping[str, Program]) -> dict[str, str]:
    """Programs whose ``audience_sync`` names an audience another program syncs too (same
    connection and audience id): each sync would remove the other's members, so none of them loads."""
    owners: dict[tuple[str, str, str], list[str]] = {}
    for pid, program in programs.items():
        sync = program.audience_sync
        if sync is not None:
            owners.setdefault((sync.platform, sync.conn_id, sync.audience), []).append(pid)
    problems = {}
    for (_platform, conn_id, audience), pids in owners.items():
        if len(pids) > 1:
            for pid in pids:
                others = ", ".join(p for p in sorted(pids) if p != pid)
                problems[pid] = (
                    f"audience_sync.audience: {audience} (connection {conn_id}) is synced by {others} too — "
                    "fix: give each program an audience of its own (each sync removes what it did not add)"
                )
    return problems


def load_all_programs() -> tuple[dict[str, Program], dict[str, ConfigError]]:
    """Every program that loads, and the error of every one that does not.

    With a source mapping (``config/sources.yml``), a program that reads an entity the mapping
    leaves out or gets wrong is an error too, naming the mapping file: only that program breaks."""
    from lifecycle.config import sources as source_mapping

    catalog = load_segments()
    programs: dict[str, Program] = {}
    errors: dict[str, ConfigError] = {}
    for path in program_files():
        try:
            programs[path.stem] = load_program(path, catalog)
        except ConfigError as exc:
            errors[path.stem] = exc
    try:
        policy: Policy | None = load_policy()
    except ConfigError:
        policy = None
    for pid in list(programs):
        problem = topic_problem(programs[pid], policy)
        if problem:
            errors[pid] = ConfigError(program_files_dir() / f"{pid}.yml", [problem])
            del programs[pid]
    for pid, problem in shared_audience_problems(programs).items():
        errors[pid] = ConfigError(program_files_dir() / f"{pid}.yml", [problem])
        del programs[pid]
    try:
        mapping = source_mapping.load_sources()
    except ConfigError as exc:
        return {}, {pid: exc for pid in programs} | errors
    if mapping is None:
        for pid in list(programs):
            problems = source_mapping.custom_problems(programs[pid], None, catalog)
            if problems:
                errors[pid] = ConfigError(config_dir() / source_mapping.SOURCES_FILE, problems)
                del programs[pid]
    else:
        for pid in list(programs):
            problems = source_mapping.program_problems(programs[pid], mapping, catalog, policy)
            if problems:
                errors[pid] = ConfigError(mapping.file, problems)
                del programs[pid]
    return programs, dict(sorted(errors.items()))
