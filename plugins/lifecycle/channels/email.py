"""The email channel: sent through SendGrid (:mod:`lifecycle.channels.sendgrid`)."""

from __future__ import annotations

from collections.abc import Mapping

from lifecycle.channels.base import TEST_MESSAGE_ID, Addressed, Channel, OutboundEmail, Providers, Sender
from lifecycle.channels.registry import register
from lifecycle.messages.links import MESSAGE_ID_PARAM
from lifecycle.messages.rendering import Rendered
from lifecycle.model.addresses import EMAIL
from lifecycle.model.channels import TemplatePart
from lifecycle.model.ledger import SuppressionReason as R


class EmailChannel(Channel[OutboundEmail]):
    """Email: a subject, an HTML part and a text part, to the contact's normalised email address,
    categorised by program and step, with its one-click unsubscribe link."""

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
        name = " ".join(p for p in (contact.get("first_name"), contact.get("last_name")) if p) or None
        return OutboundEmail(
            message_id=message.message_id,
            idempotency_key=message.idempotency_key,
            contact_id=contact["contact_id"],
            to_email=contact[self.address.column],
            to_name=name,
            subject=rendered.subject or "",
            html=rendered.html or "",
            text=rendered.text,
            categories=(message.program, message.step),
            unsubscribe_url=links.get("unsubscribe"),
            custom_args={MESSAGE_ID_PARAM: str(message.message_id)},
        )

    def test_copy(self, key: str, contact_id: str, recipient: str, rendered: Rendered, program: str) -> OutboundEmail:
        return OutboundEmail(
            TEST_MESSAGE_ID,
            key,
            contact_id,
            recipient,
            None,
            f"[TEST] {rendered.subject}",
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
