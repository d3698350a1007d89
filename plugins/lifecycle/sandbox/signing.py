"""Webhook signatures exactly as the providers compute them.

SendGrid signs its Event Webhook with ECDSA P-256 over ``timestamp + raw body`` (SHA-256); the
signature is base64 DER in ``X-Twilio-Email-Event-Webhook-Signature`` and the receiver verifies it
with the public key SendGrid shows (base64 of the DER SubjectPublicKeyInfo). Twilio signs status
callbacks and inbound-message webhooks with HMAC-SHA1 (key: the Auth Token) over the full URL
followed by every POST parameter name and value, sorted by name, in ``X-Twilio-Signature``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"


class EventWebhookSigner:
    """An ECDSA P-256 key pair that signs SendGrid Event Webhook posts (one per sandbox)."""

    def __init__(self) -> None:
        self._private_key = ec.generate_private_key(ec.SECP256R1())
        der = self._private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode("ascii")

    def sign(self, timestamp: str, payload: bytes) -> str:
        """The base64 DER signature of ``timestamp + payload``."""
        signature = self._private_key.sign(timestamp.encode("utf-8") + payload, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode("ascii")

    def headers(self, timestamp: str, payload: bytes) -> dict[str, str]:
        """The two signature headers SendGrid sends with ``payload``."""
        return {
            SENDGRID_SIGNATURE_HEADER: self.sign(timestamp, payload),
            SENDGRID_TIMESTAMP_HEADER: timestamp,
        }


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Twilio-Signature`` of a form POST of ``params`` to ``url``."""
    signed = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode("utf-8"), signed.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")
