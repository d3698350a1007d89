"""TwilioHook: the ``twilio_default`` connection plus the official Twilio client; and
:class:`TwilioSender`, how the SMS channel's messages go out through it and are looked up again.
WhatsApp goes through the same hook (:mod:`lifecycle.channels.whatsapp`): the same Messages API,
``whatsapp:`` addresses."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode, urlsplit

import requests
from airflow.sdk import BaseHook
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageInstance
from urllib3.exceptions import ConnectTimeoutError

from lifecycle.channels.base import (
    REASON_LIMIT,
    ClaimCheck,
    OutboundSms,
    OutboundWhatsApp,
    Providers,
    SendResult,
    results_for_error,
)
from lifecycle.channels.pacing import RateLimiter, limiter_for, started
from lifecycle.channels.retry import (
    ClaimLost,
    OutcomeUnknown,
    ProviderError,
    Retryable,
    RetryPolicy,
    error_for_status,
)
from lifecycle.channels.sms import sms_segments
from lifecycle.messages.links import MESSAGE_ID_PARAM, TWILIO_STATUS_PATH
from lifecycle.model.addresses import to_e164
from lifecycle.model.db import utc_naive
from lifecycle.model.ledger import OutcomeReason, Status
from lifecycle.model.privacy import redact

log = logging.getLogger(__name__)

TWILIO_API_URL = "https://api.twilio.com"
T = TypeVar("T")
Out = TypeVar("Out", OutboundSms, OutboundWhatsApp)
TWILIO_FAILED = frozenset({"failed", "undelivered", "canceled"})
"""Twilio's message statuses that mean it gave up: the message did not and will not go out."""
DEFAULT_CONCURRENCY = 16
"""Requests a sender has in flight at once unless the connection says otherwise: Twilio limits an
account's concurrent requests (100 by default), shared by every send task."""
LONG_CODE_MPS = 1.0
TOLL_FREE_MPS = 3.0
SHORT_CODE_MPS = 100.0
TOLL_FREE_PREFIXES = tuple(f"+1{code}" for code in ("800", "833", "844", "855", "866", "877", "888"))
WHATSAPP = "whatsapp:"
"""The prefix of a WhatsApp address at Twilio: ``whatsapp:+14155550100``."""


def sender_mps(settings: Mapping[str, Any]) -> float:
    """Messages a second the connection's sender may send: extra ``mps`` when set; else by the
    ``from_number``: a toll-free number 3, a short code 100, a long code 1. A messaging service
    pools its senders: its ``mps`` is their sum (one long code, 1, when not set)."""
    if settings.get("mps"):
        return float(settings["mps"])
    number = str(settings.get("from_number") or "") if not settings.get("messaging_service_sid") else ""
    if number.startswith(TOLL_FREE_PREFIXES):
        return TOLL_FREE_MPS
    if number.isdigit() and len(number) <= 6:
        return SHORT_CODE_MPS
    return LONG_CODE_MPS


class BaseUrlHttpClient(TwilioHttpClient):
    """Twilio's HTTP client aimed at another API base URL (the local sandbox, or a proxy).

    The Twilio client always builds ``https://api.twilio.com/...`` URLs; this client swaps that
    base for its own. It keeps the last answer's headers (for ``Retry-After``) and logs requests
    by method and path only: query strings carry phone numbers.
    """

    def __init__(self, base_url: str = TWILIO_API_URL, timeout: float | None = None) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/")
        self.last_headers: Mapping[str, str] = {}

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        """Send the request to ``base_url`` instead of Twilio's public API host."""
        if url.startswith(TWILIO_API_URL):
            url = self.base_url + url[len(TWILIO_API_URL) :]
        self.last_headers = {}
        response = super().request(method, url, *args, **kwargs)
        self.last_headers = response.headers or {}
        return response

    def log_request(self, kwargs: dict[str, Any]) -> None:
        """Log the method and path, never the query string or the body."""
        self.logger.info("Twilio request: %s %s", kwargs["method"], urlsplit(kwargs["url"]).path)


@dataclass(frozen=True)
class SmsReceipt:
    """What Twilio says about one message: its SID, status, segment count and any error."""

    sid: str
    status: str
    segments: int | None
    error_code: int | None
    created_at: datetime | None
    body: str | None

    @classmethod
    def from_instance(cls, message: MessageInstance) -> SmsReceipt:
        """The receipt for a Twilio ``MessageInstance``."""
        segments = int(message.num_segments or 0)
        if not segments and message.body:
            segments = sms_segments(message.body)
        return cls(
            sid=message.sid,
            status=str(message.status),
            segments=segments or None,
            error_code=message.error_code,
            created_at=message.date_created,
            body=message.body,
        )


class TwilioHook(BaseHook):
    """Sends and looks up SMS through Twilio's Messages API.

    Connection: login = Account SID, password = Auth Token, host = API base URL override (the
    local sandbox); extra: ``messaging_service_sid`` or ``from_number``, ``whatsapp_from`` (the
    WhatsApp-enabled sender's E.164 number; else WhatsApp goes through the messaging service),
    ``status_callback_url``, ``mps`` and ``concurrency``. Arguments given to the hook override the
    connection's extras.

    Every thread sends through its own client and keep-alive session (the SDK's
    ``TwilioHttpClient``), and every attempt at creating a message takes the next slot of the
    sender's rate limiter (:func:`sender_mps`), shared by the process's hooks for that sender.

    :param twilio_conn_id: Airflow connection id.
    :param timeout: seconds to wait for Twilio to answer one request.
    :param retry_policy: backoff for 429 and 5xx answers.
    :param mps: messages a second the sender may send (see :func:`sender_mps`).
    :param concurrency: requests in flight at once (extra ``concurrency``; default 16).
    """

    conn_name_attr = "twilio_conn_id"
    default_conn_name = "twilio_default"
    conn_type = "twilio"
    hook_name = "Twilio"

    def __init__(
        self,
        twilio_conn_id: str = default_conn_name,
        *,
        messaging_service_sid: str | None = None,
        from_number: str | None = None,
        whatsapp_from: str | None = None,
        status_callback_url: str | None = None,
        timeout: float = 30.0,
        retry_policy: RetryPolicy | None = None,
        mps: float | None = None,
        concurrency: int | None = None,
    ) -> None:
        super().__init__()
        self.twilio_conn_id = twilio_conn_id
        self._overrides = {
            "messaging_service_sid": messaging_service_sid,
            "from_number": from_number,
            "whatsapp_from": whatsapp_from,
            "status_callback_url": status_callback_url,
            "mps": mps,
            "concurrency": concurrency,
        }
        self.timeout = timeout
        self.retry_policy = retry_policy or RetryPolicy()
        self._local = threading.local()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """How the Airflow UI shows a Twilio connection."""
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {
                "host": "API base URL (optional)",
                "login": "Account SID",
                "password": "Auth Token",
            },
        }

    @cached_property
    def settings(self) -> dict[str, Any]:
        """The connection's extras with the hook's arguments laid over them."""
        extra = dict(self.get_connection(self.twilio_conn_id).extra_dejson)
        extra.update({key: value for key, value in self._overrides.items() if value is not None})
        return extra

    @property
    def status_callback_url(self) -> str | None:
        """Where Twilio should post delivery status callbacks, when configured."""
        return self.settings.get("status_callback_url")

    @cached_property
    def _connection(self) -> Any:
        return self.get_connection(self.twilio_conn_id)

    @property
    def http_client(self) -> BaseUrlHttpClient:
        """This thread's HTTP client (a keep-alive session), aimed at the connection's host."""
        made: BaseUrlHttpClient | None = getattr(self._local, "http_client", None)
        if made is None:
            made = self._local.http_client = BaseUrlHttpClient(
                self._connection.host or TWILIO_API_URL, timeout=self.timeout
            )
        return made

    @property
    def client(self) -> Client:
        """This thread's Twilio REST client, built on first use from the connection."""
        made: Client | None = getattr(self._local, "client", None)
        if made is None:
            conn = self._connection
            if not conn.login or not conn.password:
                raise ValueError(f"Connection {self.twilio_conn_id!r} needs the Account SID and Auth Token")
            made = self._local.client = Client(conn.login, conn.password, http_client=self.http_client)
        return made

    @property
    def concurrency(self) -> int:
        """How many requests this hook's sender has in flight at once."""
        return int(self.settings.get("concurrency") or DEFAULT_CONCURRENCY)

    def ready(self) -> None:
        """Read the connection now, in the calling thread, before requests go out on the sender's
        threads: a task reads connections over Airflow's supervisor channel, which one thread at a
        time may use. (Each thread then builds its own client from what was read.)"""
        _ = (self.settings, self._connection, self.limiter)

    @cached_property
    def limiter(self) -> RateLimiter:
        """The sender's rate limiter in this process, at :func:`sender_mps`."""
        sender = self.settings.get("messaging_service_sid") or self.settings.get("from_number") or ""
        return limiter_for(("twilio", str(self._connection.login), str(sender)), sender_mps(self.settings))

    def send_sms(
        self,
        to: str,
        body: str,
        status_callback: str | None = None,
        before_attempt: Callable[[], bool] | None = None,
    ) -> SmsReceipt:
        """Create one message to ``to`` (E.164) from the messaging service or sender number.

        429 and 5xx answers are retried with backoff. Raises :class:`Rejected` when Twilio
        refuses the message, :class:`Retryable` when retries ran out, :class:`OutcomeUnknown`
        when the request went out and no answer came back. ``before_attempt`` runs before every
        attempt (the first and each retry); when it returns false, :class:`ClaimLost` is raised
        and nothing more is sent.
        """
        sender: dict[str, str] = {}
        if self.settings.get("messaging_service_sid"):
            sender["messaging_service_sid"] = self.settings["messaging_service_sid"]
        elif self.settings.get("from_number"):
            sender["from_"] = self.settings["from_number"]
        else:
            raise ValueError(f"Connection {self.twilio_conn_id!r} needs extra.messaging_service_sid or from_number")
        return self._create_message(dict(to=to, body=body, **sender), status_callback, before_attempt)

    def send_whatsapp(
        self,
        to: str,
        *,
        body: str | None = None,
        content_sid: str | None = None,
        content_variables: Mapping[str, str] | None = None,
        status_callback: str | None = None,
        before_attempt: Callable[[], bool] | None = None,
    ) -> SmsReceipt:
        """Create one WhatsApp message to ``to`` (E.164; sent to ``whatsapp:<to>``): free-form
        ``body``, or the approved content template ``content_sid`` filled with ``content_variables``.
        From extra ``whatsapp_from``, else the messaging service. Retries and errors as :meth:`send_sms`."""
        sender: dict[str, str] = {}
        if self.settings.get("whatsapp_from"):
            sender["from_"] = WHATSAPP + str(self.settings["whatsapp_from"]).removeprefix(WHATSAPP)
        elif self.settings.get("messaging_service_sid"):
            sender["messaging_service_sid"] = self.settings["messaging_service_sid"]
        else:
            raise ValueError(f"Connection {self.twilio_conn_id!r} needs extra.whatsapp_from or messaging_service_sid")
        content: dict[str, str] = {"body": body or ""}
        if content_sid:
            content = {"content_sid": content_sid, "content_variables": json.dumps(dict(content_variables or {}))}
        return self._create_message(dict(to=WHATSAPP + to, **content, **sender), status_callback, before_attempt)

    def _create_message(
        self, params: dict[str, Any], status_callback: str | None, before_attempt: Callable[[], bool] | None
    ) -> SmsReceipt:
        callback = status_callback or self.status_callback_url
        message = self._call(
            lambda: self.client.messages.create(**params, status_callback=callback),
            idempotent=False,
            before_attempt=before_attempt,
            paced=True,
        )
        return SmsReceipt.from_instance(message)

    def last_inbound_whatsapp(self, number: str) -> datetime | None:
        """When the newest WhatsApp message from ``number`` (E.164) reached Twilio (naive UTC), or None."""
        found = self._call(
            lambda: self.client.messages.list(from_=WHATSAPP + number, limit=1, page_size=1), idempotent=True
        )
        return utc_naive(found[0].date_created) if found and found[0].date_created else None

    def fetch_message(self, sid: str) -> SmsReceipt:
        """Twilio's current record of one message."""
        return SmsReceipt.from_instance(self._call(lambda: self.client.messages(sid).fetch(), idempotent=True))

    def recent_messages(self, to: str, limit: int = 20) -> list[SmsReceipt]:
        """The newest messages sent to ``to``, newest first (for reconciling unknown outcomes)."""
        found = self._call(lambda: self.client.messages.list(to=to, limit=limit, page_size=limit), idempotent=True)
        return [SmsReceipt.from_instance(message) for message in found]

    def test_connection(self) -> tuple[bool, str]:
        """Check the Account SID and Auth Token by listing one message."""
        try:
            self._call(lambda: self.client.messages.list(limit=1, page_size=1), idempotent=True)
        except ProviderError as exc:
            return False, exc.reason
        return True, "Twilio accepted the Account SID and Auth Token"

    def _call(
        self,
        fn: Callable[[], T],
        *,
        idempotent: bool,
        before_attempt: Callable[[], bool] | None = None,
        paced: bool = False,
    ) -> T:
        """Run one Twilio call under the retry policy, with errors translated for it.

        A lookup (``idempotent``) is retried when the answer is lost; a send never is. A
        ``paced`` call (a send) waits for the sender's next slot before every attempt, and only
        then runs ``before_attempt``: a claim renewed before a long wait would be stale after it.
        """

        def attempt() -> T:
            if paced:
                self.limiter.acquire()
            if before_attempt is not None and not before_attempt():
                raise ClaimLost
            try:
                return fn()
            except TwilioException as exc:
                raise _translate(exc, self.http_client.last_headers) from None
            except requests.RequestException as exc:
                if _never_connected(exc):
                    raise Retryable(f"twilio unreachable ({type(exc).__name__})", may_have_reached=False) from None
                reason = f"twilio sent no answer ({type(exc).__name__})"
                if idempotent:
                    raise Retryable(reason, may_have_reached=True) from None
                raise OutcomeUnknown(reason) from None

        return self.retry_policy.call(attempt)


def twilio_failure_reason(error_code: int | str | None, status: str) -> str:
    """How a message Twilio failed reads in the ledger: ``twilio 30003 undelivered``."""
    return " ".join(str(part) for part in ("twilio", error_code, status) if part)


def _translate(exc: TwilioException, headers: Mapping[str, str]) -> ProviderError:
    """A Twilio SDK error as a Rejected/Retryable error reading ``twilio <code> <message>``."""
    if isinstance(exc, TwilioRestException):
        status, code, message = exc.status, exc.code, exc.msg
    elif isinstance(exc, TwilioServiceException):
        status, code, message = exc.status, exc.code, exc.detail or exc.title
    else:
        response = exc.args[1] if len(exc.args) > 1 else None
        status, code, message = (
            getattr(response, "status_code", 0),
            None,
            str(exc.args[0] if exc.args else exc),
        )
        try:
            body = json.loads(getattr(response, "text", ""))
            code, message = body.get("code"), body.get("message") or message
        except (AttributeError, TypeError, ValueError):
            pass
    if message.startswith("Unable to") and ": " in message:
        message = message.split(": ", 1)[1]
    return error_for_status(status, f"twilio {code or status} {redact(message)}".strip(), headers)


def _never_connected(exc: requests.RequestException) -> bool:
    """True when the connection never opened, so Twilio cannot have seen the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    cause = exc.args[0] if exc.args else None
    return isinstance(getattr(cause, "reason", None), ConnectTimeoutError)


class TwilioRequests(Generic[Out]):
    """Sends messages through a :class:`TwilioHook`, one request each with a status callback URL
    that names its message id, concurrently at the sender's rate.

    :param hook: the Twilio hook.
    :param providers: where the app's public links come from, for the default status callback URL.
    """

    def __init__(self, hook: TwilioHook, providers: Providers) -> None:
        self.hook = hook
        self.providers = providers

    def _status_callback(self, message_id: int) -> str:
        base = self.hook.status_callback_url or self.providers.links.url(TWILIO_STATUS_PATH)
        separator = "&" if "?" in base else "?"
        return f"{base}{separator}{urlencode({MESSAGE_ID_PARAM: message_id})}"

    @cached_property
    def pool(self) -> ThreadPoolExecutor:
        """The threads that send this sender's requests (as many as the hook's concurrency)."""
        return ThreadPoolExecutor(self.hook.concurrency, thread_name_prefix="twilio")

    def send(self, batch: Sequence[Out], still_claimed: ClaimCheck | None = None) -> Iterator[SendResult]:
        """Send each message, with a status callback URL that names its message id, concurrently at
        the sender's rate (all started before this returns); results come as each completes.

        ``still_claimed(message_id)`` is asked before every attempt at a message (see
        :class:`~lifecycle.channels.base.Transport`); a message no longer claimed is not sent.
        """
        self.hook.ready()
        _ = self.hook.status_callback_url or self.providers.links
        return started(self.pool, lambda message: [self._send_one(message, still_claimed)], batch)

    def _send_one(self, message: Out, still_claimed: ClaimCheck | None = None) -> SendResult:
        if to_e164(message.to_phone) != message.to_phone:
            return SendResult(message.message_id, Status.FAILED, reason=OutcomeReason.PHONE_NOT_E164)
        before = None if still_claimed is None else (lambda: still_claimed(message.message_id))
        try:
            receipt = self._create(message, self._status_callback(message.message_id), before)
        except ProviderError as exc:
            log.warning("Twilio request for message %s ended: %s", message.message_id, exc.reason)
            return results_for_error([message.message_id], exc)[0]
        if receipt is None:
            return SendResult(message.message_id, Status.FAILED, reason=OutcomeReason.OUTSIDE_WHATSAPP_WINDOW)
        return _sms_result(message.message_id, receipt)

    def _create(self, message: Out, callback: str, before: Callable[[], bool] | None) -> SmsReceipt | None:
        """Create ``message`` at Twilio; None when it must not go (WhatsApp: outside the window, no template)."""
        raise NotImplementedError


class TwilioSender(TwilioRequests[OutboundSms]):
    """Sends SMS through a :class:`TwilioHook` and looks up messages whose outcome is unknown.

    :param lookup_limit: how many of a number's newest messages a lookup reads.
    """

    def __init__(self, hook: TwilioHook, providers: Providers, lookup_limit: int = 20) -> None:
        super().__init__(hook, providers)
        self.lookup_limit = lookup_limit

    def _create(self, message: OutboundSms, callback: str, before: Callable[[], bool] | None) -> SmsReceipt:
        return self.hook.send_sms(message.to_phone, message.body, callback, before_attempt=before)

    def reconcile(
        self, batch: Sequence[OutboundSms], since: datetime, exclude: Collection[str] = ()
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
                receipts = self.hook.recent_messages(message.to_phone, limit=self.lookup_limit)
            except ProviderError as exc:
                results.append(SendResult(message.message_id, Status.UNKNOWN, reason=exc.reason[:REASON_LIMIT]))
                continue
            matches = [
                r
                for r in receipts
                if r.sid not in taken and r.body == message.body and r.created_at and utc_naive(r.created_at) >= since
            ]
            if matches:
                receipt = min(matches, key=lambda r: utc_naive(r.created_at) if r.created_at else since)
                taken.add(receipt.sid)
                results.append(_sms_result(message.message_id, receipt))
            else:
                results.append(
                    SendResult(message.message_id, Status.FAILED, reason=OutcomeReason.NOT_FOUND_AT_PROVIDER)
                )
        return results


def _sms_result(message_id: int, receipt: SmsReceipt) -> SendResult:
    """The result Twilio's record of a message calls for."""
    if receipt.status in TWILIO_FAILED:
        reason = twilio_failure_reason(receipt.error_code, receipt.status)
        return SendResult(message_id, Status.FAILED, receipt.sid, reason=reason, segments=receipt.segments)
    return SendResult(message_id, Status.SENT, receipt.sid, segments=receipt.segments)


WHATSAPP_WINDOW = timedelta(hours=24)
"""How long after a contact's last WhatsApp message a business may answer free-form (WhatsApp's
customer service window); outside it only an approved content template may go."""


class WhatsAppSender(TwilioRequests[OutboundWhatsApp]):
    """Sends WhatsApp messages through a :class:`TwilioHook`: the free-form text when the contact's
    last WhatsApp message reached Twilio within :data:`WHATSAPP_WINDOW` of the attempt, else the
    step's approved content template, else nothing (``failed``,
    :attr:`~lifecycle.model.ledger.OutcomeReason.OUTSIDE_WHATSAPP_WINDOW`).

    The window is read from Twilio's own record of the contact's inbound messages at each
    attempt, on the wall clock: it is the record Twilio enforces (error 63016), and a window
    that closed between planning and sending is not taken for open.
    """

    def __init__(self, hook: TwilioHook, providers: Providers, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(hook, providers)
        self.clock = clock or (lambda: datetime.now(UTC).replace(tzinfo=None))

    def in_window(self, number: str) -> bool:
        """Whether ``number``'s last WhatsApp message reached Twilio within the last 24 hours."""
        last = self.hook.last_inbound_whatsapp(number)
        return last is not None and self.clock() - last < WHATSAPP_WINDOW

    def _create(self, message: OutboundWhatsApp, callback: str, before: Callable[[], bool] | None) -> SmsReceipt | None:
        send = self.hook.send_whatsapp
        if message.text.strip() and self.in_window(message.to_phone):
            return send(message.to_phone, body=message.text, status_callback=callback, before_attempt=before)
        if message.content_sid:
            return send(
                message.to_phone,
                content_sid=message.content_sid,
                content_variables=message.content_variables,
                status_callback=callback,
                before_attempt=before,
            )
        return None
