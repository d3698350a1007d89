"""The provider sandbox: a local SendGrid v3 Mail Send + Twilio 2010-04-01 Messages server.

It validates requests against the providers' published OpenAPI specs and their live rules,
records what it accepts, injects faults on request and posts signed webhooks back. See
:class:`SandboxServer` for the Python API and :mod:`lifecycle.sandbox.app` for the endpoints.
"""

from __future__ import annotations

from lifecycle.sandbox.cli import main
from lifecycle.sandbox.server import (
    DEFAULT_SENDGRID_KEY,
    DEFAULT_TWILIO_SID,
    DEFAULT_TWILIO_TOKEN,
    SandboxServer,
)

__all__ = ["DEFAULT_SENDGRID_KEY", "DEFAULT_TWILIO_SID", "DEFAULT_TWILIO_TOKEN", "SandboxServer", "main"]
