"""Signed links back to the Lifecycle app: one-click unsubscribe URLs and the tokens inside them.

A token is ``base64url(payload) "." base64url(HMAC-SHA256(secret, payload))`` where the payload
names the message, the contact and the channel. Tokens do not expire: an unsubscribe link must
keep working as long as the email sits in an inbox. The secret is the ``lifecycle_default``
connection's password; the public base URL is its host.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

LIFECYCLE_CONN_ID = "lifecycle_default"
UNSUBSCRIBE_PATH = "/unsubscribe"
PREFERENCES_PATH = "/preferences"  # the preference centre's form, signed with the unsubscribe link's token
TEST_COPY_UNSUBSCRIBE_PATH = "/unsubscribe/test-copy"  # inert: a test copy's link unsubscribes no one
SENDGRID_EVENTS_PATH = "/webhooks/sendgrid"
TWILIO_STATUS_PATH = "/webhooks/twilio/status"
TWILIO_INBOUND_PATH = "/webhooks/twilio/inbound"
MESSAGE_ID_PARAM = "lifecycle_message_id"
"""The custom arg (SendGrid) and status-callback query parameter (Twilio) naming a ledger message."""

LinkBuilder = Callable[[int, str, str], Mapping[str, str]]
"""The links rendered into one message, by (message id, contact id, channel): ``unsubscribe``..."""


class InvalidToken(ValueError):
    """The token was not made with our secret, or was altered after it was made."""


@dataclass(frozen=True)
class UnsubscribeToken:
    """Whom an unsubscribe link is for: the message it came in, the contact and the channel."""

    message_id: int
    contact_id: str
    channel: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: bytes) -> bytes:
    if not secret:
        raise ValueError(f"The link-signing secret is empty: set the password of connection {LIFECYCLE_CONN_ID!r}")
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()


def make_unsubscribe_token(secret: str, message_id: int, contact_id: str, channel: str) -> str:
    """A signed token naming the message, contact and channel an unsubscribe link is for."""
    payload = json.dumps({"m": message_id, "c": contact_id, "ch": channel}, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def verify_unsubscribe_token(secret: str, token: str) -> UnsubscribeToken:
    """The token's contents; raises :class:`InvalidToken` if it is malformed, forged or altered."""
    try:
        payload_part, mac_part = token.split(".")
        payload, mac = _unb64(payload_part), _unb64(mac_part)
    except (ValueError, binascii.Error):
        raise InvalidToken("malformed unsubscribe token") from None
    if (_b64(payload), _b64(mac)) != (payload_part, mac_part):
        raise InvalidToken("unsubscribe token is not in its one valid encoding")
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise InvalidToken("unsubscribe token signature does not match")
    data: Any = json.loads(payload)
    return UnsubscribeToken(message_id=int(data["m"]), contact_id=str(data["c"]), channel=str(data["ch"]))


def make_unsubscribe_url(base_url: str, secret: str, message_id: int, contact_id: str, channel: str) -> str:
    """The one-click unsubscribe URL for a message (for the footer and the List-Unsubscribe header)."""
    token = make_unsubscribe_token(secret, message_id, contact_id, channel)
    return f"{base_url.rstrip('/')}{UNSUBSCRIBE_PATH}?{urlencode({'token': token})}"


@dataclass(frozen=True)
class PublicLinks:
    """The app's public base URL and link-signing secret, as the ``lifecycle_default`` connection
    holds them (host and password)."""

    base_url: str
    secret: str

    @classmethod
    def from_connection(cls, conn: Any) -> PublicLinks:
        """Read the base URL and secret from an Airflow connection object."""
        if not conn.host or not conn.password:
            raise ValueError(
                f"Connection {conn.conn_id!r} needs host (the app's public base URL) and password "
                "(the link-signing secret)"
            )
        return cls(base_url=conn.host.rstrip("/"), secret=conn.password)

    @classmethod
    def load(cls, conn_id: str = LIFECYCLE_CONN_ID) -> PublicLinks:
        """Read the base URL and secret from the Airflow connection (``lifecycle_default``)."""
        from airflow.sdk import BaseHook

        return cls.from_connection(BaseHook.get_connection(conn_id))

    def url(self, path: str) -> str:
        """The public URL of one of the app's paths."""
        return f"{self.base_url}{path}"

    def unsubscribe_url(self, message_id: int, contact_id: str, channel: str) -> str:
        """The signed one-click unsubscribe URL for one message."""
        return make_unsubscribe_url(self.base_url, self.secret, message_id, contact_id, channel)
