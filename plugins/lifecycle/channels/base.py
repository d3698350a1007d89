"""The transport contract between dispatch and a channel.

Dispatch renders messages and hands a transport batches of :class:`OutboundEmail` or
:class:`OutboundSms`; the transport returns one :class:`SendResult` per message, in any order.
A transport never raises for one bad message: it reports ``failed`` (the provider said no, and
will say no again) or ``unknown`` (the request may have reached the provider) for that message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from lifecycle.model.ledger import Status

SendStatus = Literal[Status.SENT, Status.FAILED, Status.UNKNOWN]


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
        (reporting ``unknown`` with :attr:`~lifecycle.model.ledger.OutcomeReason.CLAIM_LOST`); the answer also
        renews the claim, so a long run of SMS is never taken for a dead worker's."""
        ...
