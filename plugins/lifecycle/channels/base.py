"""The contract between the engine and a channel: the channel's descriptor and its transport.

A :class:`Channel` describes one channel once: the address it sends to, the suppression lists
that block it, the template parts it renders, whether quiet hours apply, whether a message whose
outcome is unknown can be looked up at the provider and whether its claim is renewed before every
attempt. Its module registers it (:mod:`lifecycle.channels.registry`); the engine reads it there
and names no channel itself.

Dispatch renders messages and hands a transport batches of :class:`OutboundEmail` or
:class:`OutboundSms`; the transport returns one :class:`SendResult` per message, in any order.
A transport never raises for one bad message: it reports ``failed`` (the provider said no, and
will say no again) or ``unknown`` (the request may have reached the provider) for that message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from lifecycle.model.addresses import Address
from lifecycle.model.channels import TemplatePart

SendStatus = Literal["sent", "failed", "unknown"]
NOT_FOUND_AT_PROVIDER = "not found at twilio"  # reconciliation: the provider never took the message


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


@dataclass(frozen=True)
class OutboundSms:
    """One rendered SMS, addressed to one contact."""

    message_id: int
    idempotency_key: str
    contact_id: str
    to_phone: str
    body: str


@dataclass(frozen=True)
class SendResult:
    """What became of one message handed to a transport."""

    message_id: int
    status: SendStatus
    provider_message_id: str | None = None
    reason: str | None = None
    segments: int | None = None


class Transport(Protocol):
    """Sends batches of rendered messages on their channel."""

    name: str

    def send_email(self, batch: Sequence[OutboundEmail]) -> list[SendResult]: ...

    def send_sms(
        self, batch: Sequence[OutboundSms], still_claimed: Callable[[int], bool] | None = None
    ) -> list[SendResult]:
        """Send each SMS. A transport that sends them one request at a time asks
        ``still_claimed(message_id)`` before every attempt and sends nothing when it says no
        (reporting ``unknown`` with :data:`~lifecycle.channels.retry.CLAIM_LOST`); the answer also
        renews the claim, so a long run of SMS is never taken for a dead worker's."""
        ...


class Channel(ABC):
    """One channel's descriptor (see :class:`lifecycle.model.channels.ChannelFacts` for each fact).

    :param name: its name in program files, the policy and the ledger (at most 10 characters).
    :param address: the contact address it sends to (:data:`lifecycle.model.addresses.EMAIL`...).
    :param list_reasons: the suppression lists that block it, in the order they are reported.
    :param template_parts: the template files a message is rendered from.
    :param quiet_hours: whether the policy may give it quiet hours.
    :param reconcilable: whether an unknown outcome can be looked up at the provider.
    :param renews_claim: whether the claim is renewed before every provider attempt.
    """

    name: str
    address: Address
    list_reasons: tuple[str, ...]
    template_parts: tuple[TemplatePart, ...]
    quiet_hours: bool
    reconcilable: bool
    renews_claim: bool

    @abstractmethod
    def describe(self, parts: Mapping[str, str]) -> str:
        """A rendered message's parts as ``lifecycle preview`` prints them."""
