"""A channel that exists only in tests: pages to a contact's phone, registered by the test that
uses it (``with registered(): ...``) and gone afterwards. It is what a new channel is: one
module, here with its stand-in provider."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from lifecycle.channels import registry
from lifecycle.channels.base import Channel
from lifecycle.model.addresses import PHONE
from lifecycle.model.channels import TemplatePart

NAME = "pager"


class PagerChannel(Channel):
    """Pages: one line of text to the contact's phone; its own opt-out list, no quiet hours."""

    name = NAME
    address = PHONE
    list_reasons = ("pager_stop", "unsubscribed", "invalid_address", "duplicate_contact")
    template_parts = (TemplatePart("text", "pager.j2", "line"),)
    quiet_hours = False
    reconcilable = True
    renews_claim = True

    def describe(self, parts: Mapping[str, str]) -> str:
        return f"PAGE {parts['text']}"


@contextmanager
def registered(channel: Channel | None = None) -> Iterator[Channel]:
    """Register the pager channel (or ``channel``) for the duration of the block."""
    channel = registry.register(channel or PagerChannel())
    try:
        yield channel
    finally:
        registry.unregister(channel.name)
