"""The transport a send task uses, and how it builds each message's links."""

from __future__ import annotations

from lifecycle.channels.base import Transport
from lifecycle.messages.links import LIFECYCLE_CONN_ID, LinkBuilder


def provider_transport() -> tuple[Transport, LinkBuilder]:
    """The provider transport (SendGrid, Twilio) and the signed links of the ``lifecycle_default`` connection."""
    from lifecycle.channels.providers import ProviderTransport, links_from_connection

    return ProviderTransport(), links_from_connection(LIFECYCLE_CONN_ID)
