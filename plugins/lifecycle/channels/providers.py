"""The ``providers`` transport: each channel's messages through that channel's provider hook
(email through SendGrid, SMS through Twilio).

The transport holds the hooks and the app's public links; every channel makes its sender from
them (:meth:`lifecycle.channels.base.Channel.sender`), so a new channel needs no change here.
Every outcome maps to a ``SendResult``:

- ``sent``: the provider accepted it (the provider id is recorded);
- ``failed``: the provider refused it and would refuse it again, or it certainly never reached
  the provider (rate limited or unreachable until retries ran out);
- ``unknown``: the request went out and no answer came back, or 5xx answers outlasted the
  retries. Such a message is never resent blindly: :meth:`ProviderTransport.reconcile` asks the
  provider where the channel allows it (Twilio for SMS), and SendGrid's events (which carry the
  message id) settle emails.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from typing import Any, TypeVar

from lifecycle.channels import registry
from lifecycle.channels.base import ClaimCheck, Outbound, ReconcilingSender, Sender, SendResult
from lifecycle.messages.links import LIFECYCLE_CONN_ID, LinkBuilder, PublicLinks

H = TypeVar("H")


def links_from_connection(conn_id: str = LIFECYCLE_CONN_ID) -> LinkBuilder:
    """The links dispatch renders into a message, by (message id, contact id, channel):
    ``unsubscribe``, the signed one-click URL."""
    links = PublicLinks.load(conn_id)

    def build(message_id: int, contact_id: str, channel: str) -> Mapping[str, str]:
        return {"unsubscribe": links.unsubscribe_url(message_id, contact_id, channel)}

    return build


class ProviderTransport:
    """Sends each channel's messages through its provider hook (the ``Transport`` protocol).

    :param hooks: provider hooks to send through (e.g. a ``SendGridHook`` and a ``TwilioHook``
        with their own retry policies); a channel whose hook is not given gets one with the
        default connection.
    :param links: public base URL and link secret, for unsubscribe headers an email lacks and for
        the default status callback URL; read from ``lifecycle_default`` when omitted.
    """

    name = "providers"

    def __init__(self, *hooks: Any, links: PublicLinks | None = None) -> None:
        self._hooks = list(hooks)
        self._links = links
        self._senders: dict[str, Sender[Any]] = {}

    def hook(self, kind: type[H]) -> H:
        """The given hook of ``kind``, else one with the default connection (made once)."""
        for hook in self._hooks:
            if isinstance(hook, kind):
                return hook
        made = kind()
        self._hooks.append(made)
        return made

    @cached_property
    def links(self) -> PublicLinks:
        """The app's public base URL and link-signing secret."""
        return self._links or PublicLinks.load()

    def sender(self, channel: str) -> Sender[Any]:
        """The channel's sender, made from this transport's hooks on first use."""
        if channel not in self._senders:
            self._senders[channel] = registry.get(channel).sender(self)
        return self._senders[channel]

    def send(
        self, channel: str, batch: Sequence[Outbound], still_claimed: ClaimCheck | None = None
    ) -> Iterable[SendResult]:
        """Send ``batch`` through the channel's provider, its requests concurrently and at the
        provider's rate; the results as each completes (see :class:`~lifecycle.channels.base.Transport`)."""
        return self.sender(channel).send(batch, still_claimed)

    def reconcile(
        self, channel: str, batch: Sequence[Outbound], since: datetime, exclude: Collection[str] = ()
    ) -> list[SendResult]:
        """Settle messages whose outcome is unknown from what the channel's provider holds (see
        :class:`~lifecycle.channels.base.Reconciler`)."""
        sender = self.sender(channel)
        if not isinstance(sender, ReconcilingSender):
            raise TypeError(f"the {channel} channel's provider cannot be asked about a message")
        return sender.reconcile(batch, since, exclude)
