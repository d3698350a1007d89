"""A channel that exists only in tests: pages to a contact's phone, registered by the test that
uses it (``with registered(): ...``) and gone afterwards. It is what a new channel is: one
descriptor plus its hook, here a stand-in provider that records what it was handed."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from lifecycle.channels import registry
from lifecycle.channels.base import (
    TEST_MESSAGE_ID,
    Addressed,
    Channel,
    ClaimCheck,
    Providers,
    SendResult,
)
from lifecycle.messages.rendering import Rendered
from lifecycle.model.addresses import PHONE
from lifecycle.model.channels import TemplatePart
from lifecycle.model.ledger import OutcomeReason, Status
from tests.support.invariants import WorkerDied

NAME = "pager"


@dataclass(frozen=True)
class Page:
    """One rendered page, addressed to one contact's phone."""

    message_id: int
    idempotency_key: str
    contact_id: str
    number: str
    text: str


@dataclass
class PagerHook:
    """The pager provider's stand-in: keeps every page it accepted (and what ``observe`` saw at
    that moment), can be looked up by number and text, and can let the worker die right after it
    accepted its ``die_after``-th page."""

    accepted: list[tuple[str, Page]] = field(default_factory=list)
    claim_checks: list[int] = field(default_factory=list)
    observed: list[object] = field(default_factory=list)
    observe: Callable[[Page], object] | None = None
    die_after: int | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def page(self, message: Page) -> str:
        if self.observe is not None:
            self.observed.append(self.observe(message))
        provider_id = f"PG{next(self._ids):04d}"
        self.accepted.append((provider_id, message))
        if self.die_after is not None and len(self.accepted) >= self.die_after:
            raise WorkerDied
        return provider_id

    def pages_for(self, message_id: int) -> list[Page]:
        return [page for _pid, page in self.accepted if page.message_id == message_id]


class PagerSender:
    """Pages one at a time, asking ``still_claimed`` before each; finds pages again by number and text."""

    def __init__(self, hook: PagerHook) -> None:
        self.hook = hook

    def send(self, batch: Sequence[Page], still_claimed: ClaimCheck | None) -> list[SendResult]:
        results = []
        for message in batch:
            if still_claimed is not None:
                self.hook.claim_checks.append(message.message_id)
                if not still_claimed(message.message_id):
                    results.append(SendResult(message.message_id, Status.UNKNOWN, reason=OutcomeReason.CLAIM_LOST))
                    continue
            results.append(SendResult(message.message_id, "sent", self.hook.page(message)))
        return results

    def reconcile(self, batch: Sequence[Page], since: datetime, exclude: Collection[str]) -> list[SendResult]:
        results = []
        for message in batch:
            found = [
                pid
                for pid, page in self.hook.accepted
                if pid not in exclude and (page.number, page.text) == (message.number, message.text)
            ]
            status = SendResult(message.message_id, "sent", found[0]) if found else None
            results.append(
                status or SendResult(message.message_id, Status.FAILED, reason=OutcomeReason.NOT_FOUND_AT_PROVIDER)
            )
        return results


class PagerChannel(Channel[Page]):
    """Pages: one line of text to the contact's phone; its own opt-out list, no quiet hours; the
    provider can be asked about a page, and each claim is renewed before every attempt."""

    name = NAME
    address = PHONE
    list_reasons = ("pager_stop", "unsubscribed", "invalid_address", "duplicate_contact")
    template_parts = (TemplatePart("text", "pager.j2", "line"),)
    quiet_hours = False
    reconcilable = True
    renews_claim = True
    test_recipients = "pager numbers (pager:+14155550100)"

    def outbound(self, message: Addressed, rendered: Rendered, links: Mapping[str, str]) -> Page:
        contact = message.contact
        return Page(
            message.message_id,
            message.idempotency_key,
            contact["contact_id"],
            contact[self.address.column],
            rendered.text,
        )

    def test_copy(self, key: str, contact_id: str, recipient: str, rendered: Rendered, program: str) -> Page:
        return Page(TEST_MESSAGE_ID, key, contact_id, recipient.removeprefix("pager:"), f"[TEST] {rendered.text}")

    def is_test_recipient(self, recipient: str) -> bool:
        return recipient.strip().startswith("pager:")

    def describe(self, parts: Mapping[str, str]) -> str:
        return f"PAGE {parts['text']}"

    def sender(self, providers: Providers) -> PagerSender:
        return PagerSender(providers.hook(PagerHook))


@contextmanager
def registered(channel: Channel | None = None) -> Iterator[Channel]:
    """Register the pager channel (or ``channel``) for the duration of the block."""
    channel = registry.register(channel or PagerChannel())
    try:
        yield channel
    finally:
        registry.unregister(channel.name)
