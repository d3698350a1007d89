"""The email channel: sent through SendGrid (:mod:`lifecycle.channels.sendgrid`)."""

from __future__ import annotations

from collections.abc import Mapping

from lifecycle.channels.base import Channel
from lifecycle.channels.registry import register
from lifecycle.model.addresses import EMAIL
from lifecycle.model.channels import TemplatePart


class EmailChannel(Channel):
    """Email: a subject, an HTML part and a text part, to the contact's normalised email address."""

    name = "email"
    address = EMAIL
    list_reasons = ("unsubscribed", "hard_bounce", "spam_report", "invalid_address", "duplicate_contact")
    template_parts = (
        TemplatePart("subject", "subject.txt", "line"),
        TemplatePart("html", "html.j2", "as_written"),
        TemplatePart("text", "txt.j2", "block"),
    )
    quiet_hours = True
    reconcilable = False
    renews_claim = False

    def describe(self, parts: Mapping[str, str]) -> str:
        return f"Subject: {parts['subject']}\n\n--- text ---\n{parts['text']}\n--- html ---\n{parts['html']}"


EMAIL_CHANNEL = register(EmailChannel())
