"""Which transport a send task uses, and how it builds each message's links."""

from __future__ import annotations

from collections.abc import Mapping

from lifecycle.channels.base import Transport
from lifecycle.channels.dry_run import DryRunTransport
from lifecycle.messages.links import LIFECYCLE_CONN_ID, LinkBuilder


def _dry_run_links(message_id: int, contact_id: str, channel: str) -> Mapping[str, str]:
    return {"unsubscribe": f"https://unsubscribe.invalid/dry-run/{message_id}"}


def transport_for_run(dry_run: bool) -> tuple[Transport, LinkBuilder]:
    """A dry run renders and records but sends nothing; otherwise the provider transport."""
    if dry_run:
        return DryRunTransport(), _dry_run_links
    from lifecycle.channels.providers import ProviderTransport, links_from_connection

    return ProviderTransport(), links_from_connection(LIFECYCLE_CONN_ID)
