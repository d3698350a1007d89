"""The contract between the engine and a channel: the channel's descriptor and its transport.

A :class:`Channel` describes one channel once: the address it sends to, the suppression lists
that block it, the template parts it renders and how a rendered message becomes its outbound
message, whether quiet hours apply, whether a message whose outcome is unknown can be looked up
at the provider and whether its claim is renewed before every attempt, and how its messages go
out through its provider hook. Its module registers it (:mod:`lifecycle.channels.registry`); the
engine reads it there and names no channel itself.

Dispatch renders messages and hands a :class:`Transport` one batch per channel (``send(channel,
batch)``); the transport returns one :class:`SendResult` per message, in any order — a list, or an
iterator that yields each result as its request completes (the provider transport sends a batch's
requests concurrently, all started before ``send`` returns). A transport never raises for one bad
message: it reports ``failed`` (the provider said no, and will say no again) or ``unknown`` (the
request may have reached the provider) for that message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from lifecycle import config
from lifecycle.channels.retry import ClaimLost, OutcomeUnknown, ProviderError, Retryable
from lifecycle.messages.links import PublicLinks
from lifecycle.messages.rendering import Rendered
from lifecycle.model.addresses import Address
from lifecycle.model.channels import TemplatePart
from lifecycle.model.ledger import Status

SendStatus = Literal[Status.SENT, Status.FAILED, Status.UNKNOWN]
REASON_LIMIT = 200
TEST_MESSAGE_ID = 0
"""The message id a test copy carries: none of the ledger's, so its feedback touches no journey."""
ClaimCheck = Callable[[int], bool]
"""``still_claimed(message_id)``: whether this attempt still holds the message's claim (renewing it)."""


class Outbound(Protocol):
    """One rendered message addressed to one contact, in its channel's shape."""

    @property
    def message_id(self) -> int: ...

    @property
    def idempotency_key(self) -> str: ...

    @property
    def contact_id(self) -> str: ...


OutT = TypeVar("OutT", bound=Outbound)
OutT_contra = TypeVar("OutT_contra", bound=Outbound, contravariant=True)
H = TypeVar("H")


@dataclass(frozen=True)
class Subscription:
    """What a message is sent under, as a provider's own unsubscribe handling needs it: whether it
    is marketing, its program's topic's SendGrid unsubscribe group and the groups SendGrid's
    unsubscribe page shows (:meth:`lifecycle.config.Policy.groups_to_display`).

    Marketing email without a topic group carries the connection's group (``asm_group_id``); a
    service message carries a group only when its topic names one."""

    marketing: bool = True
    sendgrid_group: int | None = None
    groups_to_display: tuple[int, ...] = ()

    @classmethod
    def of(cls, policy: config.Policy, program: config.Program) -> Subscription:
        """What ``program``'s messages are sent under."""
        topic = policy.topic_of(program)
        group = topic.sendgrid_group if topic is not None else None
        return cls(not program.is_service, group, policy.groups_to_display(program))


MARKETING = Subscription()
"""Marketing with no topic group: the connection's unsubscribe group, where it names one."""


@dataclass(frozen=True)
class OutboundEmail:
    """One rendered email, addressed to one contact."""

    message_id: int
    idempotency_key: str
    contact_id: str
    to_email: str
    to_name: str | None
    subject: str
    html: str
    text: str
    categories: tuple[str, ...] = ()
    unsubscribe_url: str | None = None
    custom_args: dict[str, str] = field(default_factory=dict)
    subscription: Subscription = MARKETING


@dataclass(frozen=True)
class OutboundSms:
    """One rendered SMS, addressed to one contact."""

    message_id: int
    idempotency_key: str
    contact_id: str
    to_phone: str
    body: str


@dataclass(frozen=True)
class OutboundWhatsApp:
    """One rendered WhatsApp message, addressed to one contact: its free-form ``text`` (sent inside
    the 24-hour window) and the approved content template (``content_sid`` filled with
    ``content_variables``) sent outside it, when the step has one."""

    message_id: int
    idempotency_key: str
    contact_id: str
    to_phone: str
    text: str
    content_sid: str | None = None
    content_variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboundWebhook:
    """One rendered JSON payload about one contact, for a webhook endpoint (compact JSON text)."""

    message_id: int
    idempotency_key: str
    contact_id: str
    payload: str


@dataclass(frozen=True)
class SendResult:
    """What became of one message handed to a transport."""

    message_id: int
    status: SendStatus
    provider_message_id: str | None = None
    reason: str | None = None
    segments: int | None = None


def results_for_error(message_ids: Sequence[int], error: ProviderError) -> list[SendResult]:
    """The results for messages whose request ended in ``error``: ``unknown`` when the request may
    have reached the provider (or the claim was lost before it), else ``failed``."""
    unknown = isinstance(error, OutcomeUnknown | ClaimLost) or (isinstance(error, Retryable) and error.may_have_reached)
    status: SendStatus = Status.UNKNOWN if unknown else Status.FAILED
    return [SendResult(message_id, status, reason=error.reason[:REASON_LIMIT]) for message_id in message_ids]


class Transport(Protocol):
    """Sends batches of rendered messages, one call per channel."""

    name: str

    def send(
        self, channel: str, batch: Sequence[Outbound], still_claimed: ClaimCheck | None = None
    ) -> Iterable[SendResult]:
        """Send ``batch`` (messages of ``channel``); the results, as a list or as they complete.
        Given ``still_claimed``, a transport that sends one request per message asks it before
        every attempt at a message and sends nothing when it
        says no (reporting ``unknown`` with :attr:`~lifecycle.model.ledger.OutcomeReason.CLAIM_LOST`); the
        answer also renews the claim, so a long run of messages is never taken for a dead worker's."""
        ...


@runtime_checkable
class Reconciler(Protocol):
    """A transport that can ask the provider what became of messages whose outcome is unknown."""

    def reconcile(
        self, channel: str, batch: Sequence[Outbound], since: datetime, exclude: Collection[str] = ()
    ) -> list[SendResult]:
        """Settle each message (sent at or after ``since``) from what the provider holds: found,
        ``sent`` (or ``failed``) with its provider id; not found, ``failed`` with
        :attr:`~lifecycle.model.ledger.OutcomeReason.NOT_FOUND_AT_PROVIDER`; the provider cannot be asked,
        ``unknown``. A provider id
        in ``exclude`` belongs to another message and is never matched."""
        ...


class Sender(Protocol[OutT_contra]):
    """How one channel's messages go out through its provider hook (inside the provider transport)."""

    def send(self, batch: Sequence[OutT_contra], still_claimed: ClaimCheck | None) -> Iterable[SendResult]: ...


@runtime_checkable
class ReconcilingSender(Sender[OutT_contra], Protocol[OutT_contra]):
    """A sender whose provider can be asked what became of a message."""

    def reconcile(
        self, batch: Sequence[OutT_contra], since: datetime, exclude: Collection[str]
    ) -> list[SendResult]: ...


class Providers(Protocol):
    """What a channel's sender is made from: the provider transport's hooks and the app's public links."""

    def hook(self, kind: type[H]) -> H:
        """The transport's hook of ``kind`` (one with the default connection unless it was given one)."""
        ...

    @property
    def links(self) -> PublicLinks:
        """The app's public base URL and link secret (read from the connection when first needed)."""
        ...


class Addressed(Protocol):
    """A ledger message being sent: which one, its program and step, its contact's row with the
    normalised addresses, and what it is sent under (its program's :class:`Subscription`)."""

    @property
    def message_id(self) -> int: ...

    @property
    def idempotency_key(self) -> str: ...

    @property
    def program(self) -> str: ...

    @property
    def step(self) -> str: ...

    @property
    def contact(self) -> Mapping[str, Any]: ...

    @property
    def subscription(self) -> Subscription: ...


class Channel(ABC, Generic[OutT]):
    """One channel's descriptor (see :class:`lifecycle.model.channels.ChannelFacts` for each fact).

    :param name: its name in program files, the policy and the ledger (at most 32 characters).
    :param address: the contact address it sends to (:data:`lifecycle.model.addresses.EMAIL`...).
    :param list_reasons: the suppression lists that block it, in the order they are reported.
    :param template_parts: the template files a message is rendered from.
    :param quiet_hours: whether the policy may give it quiet hours.
    :param reconcilable: whether an unknown outcome can be looked up at the provider (its sender
        is then a :class:`ReconcilingSender`).
    :param renews_claim: whether the claim is renewed before every provider attempt.
    :param test_recipients: how its test recipients are written, for the error naming wrong ones.
    :param consent: whether the contact's consent on the channel is checked (False for a channel
        that reaches someone else about the contact, such as a task for its sales owner).
    """

    name: str
    address: Address
    list_reasons: tuple[str, ...]
    template_parts: tuple[TemplatePart, ...]
    quiet_hours: bool
    reconcilable: bool
    renews_claim: bool
    test_recipients: str
    consent: bool = True

    @abstractmethod
    def outbound(self, message: Addressed, rendered: Rendered, links: Mapping[str, str]) -> OutT:
        """The outbound message for a rendered ledger message (its address is ``message.contact``'s)."""

    @abstractmethod
    def test_copy(self, key: str, contact_id: str, recipient: str, rendered: Rendered, program: str) -> OutT:
        """A copy of ``contact_id``'s rendered message for a test recipient, marked as a test."""

    @abstractmethod
    def is_test_recipient(self, recipient: str) -> bool:
        """Whether a test recipient is written as this channel's address."""

    @abstractmethod
    def describe(self, parts: Mapping[str, str]) -> str:
        """A rendered message's parts as ``lifecycle preview`` prints them."""

    def segments(self, message: OutT) -> int | None:
        """How many billable parts the message is (SMS segments), when the channel counts them."""
        return None

    @abstractmethod
    def sender(self, providers: Providers) -> Sender[OutT]:
        """How its messages go out at the provider, made from the provider transport's hooks."""
