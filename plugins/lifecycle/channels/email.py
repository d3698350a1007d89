"""The email channel: sent through SendGrid (:mod:`lifecycle.channels.sendgrid`)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from lifecycle.channels.base import TEST_MESSAGE_ID, Addressed, Channel, OutboundEmail, Providers, Sender
from lifecycle.channels.registry import register
from lifecycle.messages.links import MESSAGE_ID_PARAM
from lifecycle.messages.rendering import Rendered
from lifecycle.model.addresses import EMAIL
from lifecycle.model.channels import TemplatePart
from lifecycle.model.ledger import SuppressionReason as R

MAX_SUBJECT = 255  # characters; RFC 5322 allows 998 per line, and clients show far fewer
MAX_DISPLAY_NAME = 64
_ANGLE_BRACKETED = re.compile(r"<[^>]*>")
# Never in a header's text: control characters (CR, LF...) and line or paragraph separators.
_NOT_IN_HEADERS = frozenset({"Cc", "Zl", "Zp"})


def header_text(text: str, limit: int) -> str:
    """CRM text fit for a mail header: one line, no control characters, at most
    ``limit`` characters (cut with an ellipsis)."""
    kept = "".join(" " if unicodedata.category(c) in _NOT_IN_HEADERS else c for c in text)
    line = " ".join(kept.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "\u2026"


def display_name(contact: Mapping[str, object]) -> str | None:
    """The recipient's display name from the CRM: first and last name as header text, with no
    address in angle brackets, no brackets or quotes (``"Ada <x@evil.example>"`` is ``Ada``)."""
    name = " ".join(str(p) for p in (contact.get("first_name"), contact.get("last_name")) if p)
    cleaned = _ANGLE_BRACKETED.sub(" ", name).translate(str.maketrans("", "", '<>"\\'))
    return header_text(cleaned, MAX_DISPLAY_NAME) or None


class EmailChannel(Channel[OutboundEmail]):
    """Email: a subject, an HTML part and a text part, to the contact's normalised email address,
    categorised by program and step, with its one-click unsubscribe link and its topic's SendGrid
    unsubscribe group. CRM text bound for a
    header (the display name, the subject) is one bounded line (:func:`header_text`)."""

    name = "email"
    address = EMAIL
    list_reasons = (R.UNSUBSCRIBED, R.HARD_BOUNCE, R.SPAM_REPORT, R.INVALID_ADDRESS, R.DUPLICATE_CONTACT)
    template_parts = (
        TemplatePart("subject", "subject.txt", "line"),
        TemplatePart("html", "html.j2", "as_written"),
        TemplatePart("text", "txt.j2", "block"),
    )
    quiet_hours = True
    reconcilable = False
    renews_claim = False
    test_recipients = "email addresses"

    def outbound(self, message: Addressed, rendered: Rendered, links: Mapping[str, str]) -> OutboundEmail:
        contact = message.contact
        return OutboundEmail(
            message_id=message.message_id,
            idempotency_key=message.idempotency_key,
            contact_id=contact["contact_id"],
            to_email=contact[self.address.column],
            to_name=display_name(contact),
            subject=header_text(rendered.subject or "", MAX_SUBJECT),
            html=rendered.html or "",
            text=rendered.text,
            categories=(message.program, message.step),
            unsubscribe_url=links.get("unsubscribe"),
            custom_args={MESSAGE_ID_PARAM: str(message.message_id)},
            subscription=message.subscription,
        )

    def test_copy(self, key: str, contact_id: str, recipient: str, rendered: Rendered, program: str) -> OutboundEmail:
        return OutboundEmail(
            TEST_MESSAGE_ID,
            key,
            contact_id,
            recipient,
            None,
            header_text(f"[TEST] {rendered.subject}", MAX_SUBJECT),
            rendered.html or "",
            rendered.text,
            categories=("lifecycle-test", program),
        )

    def is_test_recipient(self, recipient: str) -> bool:
        return "@" in recipient

    def describe(self, parts: Mapping[str, str]) -> str:
        return f"Subject: {parts['subject']}\n\n--- text ---\n{parts['text']}\n--- html ---\n{parts['html']}"

    def sender(self, providers: Providers) -> Sender[OutboundEmail]:
        from lifecycle.channels.sendgrid import SendGridHook, SendGridSender

        return SendGridSender(providers.hook(SendGridHook), providers)


EMAIL_CHANNEL = register(EmailChannel())
