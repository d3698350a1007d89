"""The ``providers`` transport: email through SendGrid, SMS through Twilio.

Emails with the same subject, HTML, text and categories go out together, one personalization
per recipient and at most 1,000 per request, each personalization carrying its message id in
``custom_args`` and its own List-Unsubscribe headers. Every outcome maps to a ``SendResult``:

- ``sent``: the provider accepted it (the provider id is recorded);
- ``failed``: the provider refused it and would refuse it again, or it certainly never reached
  the provider (rate limited or unreachable until retries ran out);
- ``unknown``: the request went out and no answer came back, or 5xx answers outlasted the
  retries. Such a message is never resent blindly: :meth:`ProviderTransport.reconcile_sms`
  asks Twilio, and SendGrid's events (which carry the message id) settle emails.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from urllib.parse import urlencode

from email_validator import EmailNotValidError, validate_email

from lifecycle.channels.base import NOT_FOUND_AT_PROVIDER, OutboundEmail, OutboundSms, SendResult
from lifecycle.channels.retry import ClaimLost, OutcomeUnknown, ProviderError, Rejected, Retryable
from lifecycle.channels.sendgrid import MAX_PERSONALIZATIONS, Recipient, SendGridHook
from lifecycle.channels.twilio import SmsReceipt, TwilioHook, twilio_failure_reason
from lifecycle.messages.links import LIFECYCLE_CONN_ID, MESSAGE_ID_PARAM, TWILIO_STATUS_PATH, PublicLinks
from lifecycle.model.addresses import to_e164
from lifecycle.model.db import utc_naive

log = logging.getLogger(__name__)

REASON_LIMIT = 200
_TWILIO_FAILED = {"failed", "undelivered", "canceled"}


def _outcome(message_ids: Sequence[int], error: ProviderError) -> list[SendResult]:
    """The results for messages whose request ended in ``error``."""
    unknown = isinstance(error, OutcomeUnknown | ClaimLost) or (isinstance(error, Retryable) and error.may_have_reached)
    status = "unknown" if unknown else "failed"
    return [SendResult(message_id, status, reason=error.reason[:REASON_LIMIT]) for message_id in message_ids]


def links_from_connection(conn_id: str = LIFECYCLE_CONN_ID) -> Callable[[int, str, str], Mapping[str, str]]:
    """The links dispatch renders into a message, by (message id, contact id, channel):
    ``unsubscribe``, the signed one-click URL."""
    links = PublicLinks.load(conn_id)

    def build(message_id: int, contact_id: str, channel: str) -> Mapping[str, str]:
        return {"unsubscribe": links.unsubscribe_url(message_id, contact_id, channel)}

    return build


def _valid_email(address: str) -> bool:
    """Whether SendGrid could take the address: syntax only (``.test`` domains pass, as at SendGrid)."""
    try:
        validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return False
    return True


class ProviderTransport:
    """Sends through the SendGrid and Twilio hooks (the ``Transport`` protocol).

    :param sendgrid: the email hook; a default ``SendGridHook()`` when omitted.
    :param twilio: the SMS hook; a default ``TwilioHook()`` when omitted.
    :param links: public base URL and link secret, for unsubscribe headers an email lacks and for
        the default status callback URL; read from ``lifecycle_default`` when omitted.
    """

    name = "providers"

    def __init__(
        self,
        sendgrid: SendGridHook | None = None,
        twilio: TwilioHook | None = None,
        links: PublicLinks | None = None,
    ) -> None:
        self._sendgrid = sendgrid
        self._twilio = twilio
        self._links = links

    @cached_property
    def sendgrid(self) -> SendGridHook:
        """The email hook."""
        return self._sendgrid or SendGridHook()

    @cached_property
    def twilio(self) -> TwilioHook:
        """The SMS hook."""
        return self._twilio or TwilioHook()

    @cached_property
    def links(self) -> PublicLinks:
        """The app's public base URL and link-signing secret."""
        return self._links or PublicLinks.load()

    def send_email(self, batch: Sequence[OutboundEmail]) -> list[SendResult]:
        """Send emails, batching identical content into Mail Send requests of up to 1,000.

        SendGrid refuses a request naming one address twice, so a repeated address goes in a
        later request.
        """
        results = []
        groups: dict[tuple, list[OutboundEmail]] = {}
        repeats: Counter[tuple] = Counter()
        for message in batch:
            if not _valid_email(message.to_email):
                results.append(SendResult(message.message_id, "failed", reason="invalid email address"))
                continue
            content = (message.subject, message.html, message.text, message.categories)
            address = (content, message.to_email.lower())
            repeats[address] += 1
            groups.setdefault((content, repeats[address]), []).append(message)
        for group in groups.values():
            for start in range(0, len(group), MAX_PERSONALIZATIONS):
                results.extend(self._send_mail(group[start : start + MAX_PERSONALIZATIONS]))
        return results

    def _recipient(self, message: OutboundEmail) -> Recipient:
        url = message.unsubscribe_url or self.links.unsubscribe_url(message.message_id, message.contact_id, "email")
        return Recipient(
            email=message.to_email,
            name=message.to_name,
            custom_args={**message.custom_args, MESSAGE_ID_PARAM: str(message.message_id)},
            headers={"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        )

    def _send_mail(self, group: Sequence[OutboundEmail]) -> list[SendResult]:
        """One Mail Send request; a refusal that names one personalization is narrowed by halving."""
        first = group[0]
        mail = self.sendgrid.build_mail(
            subject=first.subject,
            html=first.html,
            text=first.text,
            recipients=[self._recipient(m) for m in group],
            categories=first.categories,
        )
        ids = [m.message_id for m in group]
        try:
            provider_id = self.sendgrid.send(mail)
        except ProviderError as exc:
            if isinstance(exc, Rejected) and len(group) > 1 and (exc.field or "").startswith("personalizations"):
                middle = len(group) // 2
                return self._send_mail(group[:middle]) + self._send_mail(group[middle:])
            log.warning("SendGrid request for messages %s..%s ended: %s", ids[0], ids[-1], exc.reason)
            return _outcome(ids, exc)
        return [SendResult(message_id, "sent", provider_id) for message_id in ids]

    def _status_callback(self, message_id: int) -> str:
        base = self.twilio.status_callback_url or self.links.url(TWILIO_STATUS_PATH)
        separator = "&" if "?" in base else "?"
        return f"{base}{separator}{urlencode({MESSAGE_ID_PARAM: message_id})}"

    def send_sms(
        self, batch: Sequence[OutboundSms], still_claimed: Callable[[int], bool] | None = None
    ) -> list[SendResult]:
        """Send each SMS, with a status callback URL that names its message id.

        ``still_claimed(message_id)`` is asked before every attempt at a message (see
        :class:`~lifecycle.channels.base.Transport`); a message no longer claimed is not sent.
        """
        return [self._send_one_sms(message, still_claimed) for message in batch]

    def _send_one_sms(self, message: OutboundSms, still_claimed: Callable[[int], bool] | None = None) -> SendResult:
        if to_e164(message.to_phone) != message.to_phone:
            return SendResult(message.message_id, "failed", reason="phone number is not in E.164 form")
        before = None if still_claimed is None else (lambda: still_claimed(message.message_id))
        try:
            receipt = self.twilio.send_sms(
                message.to_phone, message.body, self._status_callback(message.message_id), before_attempt=before
            )
        except ProviderError as exc:
            log.warning("Twilio request for message %s ended: %s", message.message_id, exc.reason)
            return _outcome([message.message_id], exc)[0]
        return _sms_result(message.message_id, receipt)

    def reconcile_sms(
        self, batch: Sequence[OutboundSms], since: datetime, lookup_limit: int = 20, exclude: Collection[str] = ()
    ) -> list[SendResult]:
        """Settle SMS whose outcome is unknown by asking Twilio what it holds.

        A message is matched by recipient and body among the newest ``lookup_limit`` messages
        to that number created at or after ``since`` (naive UTC or aware). Found: ``sent`` (or
        ``failed`` if Twilio failed it) with its SID. Not found: ``failed`` with reason
        ``not found at twilio``, meaning Twilio never took it, so sending again is safe.
        When Twilio cannot be asked, the result stays ``unknown``. A SID in ``exclude`` (known to
        be another message's) or already matched in this call is never matched again: the same
        text can go to one number twice.
        """
        since = utc_naive(since).replace(microsecond=0)
        taken = set(exclude)
        results = []
        for message in batch:
            try:
                receipts = self.twilio.recent_messages(message.to_phone, limit=lookup_limit)
            except ProviderError as exc:
                results.append(SendResult(message.message_id, "unknown", reason=exc.reason[:REASON_LIMIT]))
                continue
            matches = [
                r
                for r in receipts
                if r.sid not in taken and r.body == message.body and r.created_at and utc_naive(r.created_at) >= since
            ]
            if matches:
                receipt = min(matches, key=lambda r: r.created_at)
                taken.add(receipt.sid)
                results.append(_sms_result(message.message_id, receipt))
            else:
                results.append(SendResult(message.message_id, "failed", reason=NOT_FOUND_AT_PROVIDER))
        return results


def _sms_result(message_id: int, receipt: SmsReceipt) -> SendResult:
    """The result Twilio's record of a message calls for."""
    if receipt.status in _TWILIO_FAILED:
        reason = twilio_failure_reason(receipt.error_code, receipt.status)
        return SendResult(message_id, "failed", receipt.sid, reason=reason, segments=receipt.segments)
    return SendResult(message_id, "sent", receipt.sid, segments=receipt.segments)
