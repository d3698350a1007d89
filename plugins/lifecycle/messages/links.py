"""Signed links back to the Lifecycle app: one-click unsubscribe URLs and the tokens inside them.

A token is ``base64url(payload) "." base64url(HMAC-SHA256(secret, payload))``. An unsubscribe
token's payload names the message, the contact and the channel; it does not expire: an unsubscribe
link must keep working as long as the email sits in an inbox. A confirmation token (double opt-in)
names a pending subscription and its expiry. The secret is the ``lifecycle_default``
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
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

LIFECYCLE_CONN_ID = "lifecycle_default"
UNSUBSCRIBE_PATH = "/unsubscribe"
PREFERENCES_PATH = "/preferences"  # the preference centre's form, signed with the unsubscribe link's token
SUBSCRIBE_PATH = "/subscribe"  # the signup form (GET) and where it posts
CONFIRM_PATH = "/subscribe/confirm"  # a confirmation link: GET shows the button, POST confirms
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


def _sign(secret: str, data: Mapping[str, Any]) -> str:
    payload = json.dumps(data, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def _verified(secret: str, token: str) -> dict[str, Any]:
    """A signed token's payload; raises :class:`InvalidToken` if it is malformed, forged or altered."""
    try:
        payload_part, mac_part = token.split(".")
        payload, mac = _unb64(payload_part), _unb64(mac_part)
    except (ValueError, binascii.Error):
        raise InvalidToken("malformed token") from None
    if (_b64(payload), _b64(mac)) != (payload_part, mac_part):
        raise InvalidToken("token is not in its one valid encoding")
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise InvalidToken("token signature does not match")
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise InvalidToken("token payload is not an object")
    return data


def make_unsubscribe_token(secret: str, message_id: int, contact_id: str, channel: str) -> str:
    """A signed token naming the message, contact and channel an unsubscribe link is for."""
    return _sign(secret, {"m": message_id, "c": contact_id, "ch": channel})


def verify_unsubscribe_token(secret: str, token: str) -> UnsubscribeToken:
    """The token's contents; raises :class:`InvalidToken` if it is malformed, forged, altered or
    not an unsubscribe token (a confirmation link's, say)."""
    data = _verified(secret, token)
    if set(data) != {"m", "c", "ch"}:
        raise InvalidToken("not an unsubscribe token")
    return UnsubscribeToken(message_id=int(data["m"]), contact_id=str(data["c"]), channel=str(data["ch"]))


class ExpiredToken(InvalidToken):
    """A genuine token whose time is over."""


def make_confirmation_token(secret: str, capture_id: int, expires_at: datetime) -> str:
    """A signed token for one pending subscription's confirmation link, valid until ``expires_at``."""
    return _sign(secret, {"confirm": capture_id, "exp": int(expires_at.replace(tzinfo=UTC).timestamp())})


def verify_confirmation_token(secret: str, token: str, now: datetime) -> int:
    """The pending subscription a confirmation token is for; raises :class:`InvalidToken` if it is
    forged, altered or not a confirmation token, :class:`ExpiredToken` once ``now`` (naive UTC) is
    past its expiry."""
    data = _verified(secret, token)
    if set(data) != {"confirm", "exp"} or not isinstance(data["confirm"], int) or not isinstance(data["exp"], int):
        raise InvalidToken("not a confirmation token")
    if now.replace(tzinfo=UTC).timestamp() > data["exp"]:
        raise ExpiredToken("confirmation link expired")
    return data["confirm"]


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

    def confirmation_url(self, capture_id: int, expires_at: datetime) -> str:
        """The signed link that confirms one pending subscription, valid until ``expires_at``."""
        token = make_confirmation_token(self.secret, capture_id, expires_at)
        return f"{self.url(CONFIRM_PATH)}?{urlencode({'token': token})}"

    def unsubscribe_url(self, message_id: int, contact_id: str, channel: str) -> str:
        """The signed one-click unsubscribe URL for one message."""
        return make_unsubscribe_url(self.base_url, self.secret, message_id, contact_id, channel)
