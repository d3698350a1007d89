"""SendGridHook: the ``sendgrid_default`` connection plus the official SendGrid client; and
:class:`SendGridSender`, how the email channel's messages go out through it."""

from __future__ import annotations

import http.client
import json
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import Message
from functools import cached_property
from itertools import chain
from typing import Any, cast
from urllib.error import URLError
from urllib.request import Request

import python_http_client
import urllib3
from airflow.sdk import BaseHook
from python_http_client.exceptions import HTTPError, err_dict
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Asm,
    Category,
    CustomArg,
    From,
    GroupsToDisplay,
    Header,
    HtmlContent,
    Mail,
    MailSettings,
    Personalization,
    PlainTextContent,
    ReplyTo,
    SandBoxMode,
    To,
)

from lifecycle.channels.base import (
    MARKETING,
    TEST_MESSAGE_ID,
    ClaimCheck,
    OutboundEmail,
    Providers,
    SendResult,
    Subscription,
    results_for_error,
)
from lifecycle.channels.pacing import RateLimiter, limiter_for, started
from lifecycle.channels.retry import (
    OutcomeUnknown,
    ProviderError,
    Rejected,
    Retryable,
    RetryPolicy,
    error_for_status,
)
from lifecycle.messages.links import MESSAGE_ID_PARAM, TEST_COPY_UNSUBSCRIBE_PATH
from lifecycle.model.ledger import OutcomeReason, Status
from lifecycle.model.privacy import redact

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.sendgrid.com"
MAX_PERSONALIZATIONS = 1000
DEFAULT_CONCURRENCY = 64
"""Mail Send requests a sender has in flight at once unless the connection says otherwise (SendGrid
limits the rate, not concurrency)."""


class _PooledResponse:
    """A urllib3 answer in the shape python_http_client's ``Response`` reads."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def getcode(self) -> int:
        return self._response.status

    def read(self) -> bytes:
        return self._response.data

    def info(self) -> Mapping[str, str]:
        return self._response.headers


class PooledHttpClient(python_http_client.Client):
    """The SendGrid SDK's HTTP client over a shared keep-alive connection pool.

    python_http_client opens a new connection per request (``urllib.build_opener``); this client
    keeps its request building and its error types (``python_http_client.exceptions``) and sends
    through ``pool`` instead. Network failures come out as urllib's would: a connection that never
    opened as ``URLError``, a lost answer as ``TimeoutError`` or ``ConnectionError``.
    """

    def __init__(self, pool: urllib3.PoolManager, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool = pool

    def _build_client(self, name: str | None = None) -> PooledHttpClient:
        return PooledHttpClient(
            self.pool,
            host=self.host,
            version=self._version,
            request_headers=self.request_headers,
            url_path=[*cast("list[str]", self._url_path), *([name] if name else [])],
            append_slash=self.append_slash,
            timeout=self.timeout,
        )

    def _make_request(self, opener: Any, request: Request, timeout: float | None = None) -> _PooledResponse:
        try:
            response = self.pool.request(
                request.get_method(),
                request.full_url,
                body=request.data,  # type: ignore[arg-type]
                headers=dict(request.header_items()),
                timeout=timeout or self.timeout,
                retries=False,
                redirect=False,
            )
        except urllib3.exceptions.ConnectTimeoutError as exc:  # also a refused or unresolvable connection
            raise URLError(type(exc).__name__) from None
        except urllib3.exceptions.ReadTimeoutError:
            raise TimeoutError("no answer within the timeout") from None
        except urllib3.exceptions.HTTPError as exc:
            raise ConnectionError(type(exc).__name__) from None
        if response.status >= 400:
            headers = Message()
            for name, value in response.headers.items():
                headers[name] = value
            error = err_dict.get(response.status, HTTPError)
            raise error(response.status, response.reason or "", response.data, headers)
        return _PooledResponse(response)


@dataclass(frozen=True)
class Recipient:
    """One personalization of a Mail Send request: who receives it, with its own args and headers."""

    email: str
    name: str | None = None
    custom_args: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


class SendGridHook(BaseHook):
    """Sends email through SendGrid's v3 Mail Send API.

    Connection: password = API key; host = API base URL override (the local sandbox); extra:
    ``from_email``, ``from_name``, ``reply_to``, ``asm_group_id`` (unsubscribe group),
    ``categories`` and ``webhook_public_key`` (for the Event Webhook receiver). Arguments given
    to the hook override the connection's extras.

    :param sendgrid_conn_id: Airflow connection id.
    :param timeout: seconds to wait for SendGrid to answer one request.
    :param retry_policy: backoff for 429 and 5xx answers.
    :param concurrency: requests in flight at once (extra ``concurrency``; default 64), over as
        many pooled keep-alive connections.
    :param requests_per_second: SendGrid requests a second at most, for this connection in this
        process (extra ``requests_per_second``; default: no limit).
    """

    conn_name_attr = "sendgrid_conn_id"
    default_conn_name = "sendgrid_default"
    conn_type = "sendgrid"
    hook_name = "SendGrid"

    def __init__(
        self,
        sendgrid_conn_id: str = default_conn_name,
        *,
        from_email: str | None = None,
        from_name: str | None = None,
        reply_to: str | None = None,
        asm_group_id: int | None = None,
        categories: Sequence[str] | None = None,
        timeout: float = 30.0,
        retry_policy: RetryPolicy | None = None,
        concurrency: int | None = None,
        requests_per_second: float | None = None,
    ) -> None:
        super().__init__()
        self.sendgrid_conn_id = sendgrid_conn_id
        self._overrides = {
            "from_email": from_email,
            "from_name": from_name,
            "reply_to": reply_to,
            "asm_group_id": asm_group_id,
            "categories": list(categories) if categories is not None else None,
            "concurrency": concurrency,
            "requests_per_second": requests_per_second,
        }
        self.timeout = timeout
        self.retry_policy = retry_policy or RetryPolicy()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """How the Airflow UI shows a SendGrid connection."""
        return {
            "hidden_fields": ["schema", "port", "login"],
            "relabeling": {"host": "API base URL (optional)", "password": "API key"},
        }

    @cached_property
    def settings(self) -> dict[str, Any]:
        """The connection's extras with the hook's arguments laid over them."""
        extra = dict(self.get_connection(self.sendgrid_conn_id).extra_dejson)
        extra.update({key: value for key, value in self._overrides.items() if value is not None})
        return extra

    @cached_property
    def client(self) -> SendGridAPIClient:
        """The SendGrid API client, built on first use from the connection."""
        conn = self.get_connection(self.sendgrid_conn_id)
        if not conn.password:
            raise ValueError(f"Connection {self.sendgrid_conn_id!r} has no API key in its password field")
        client = SendGridAPIClient(api_key=conn.password, host=(conn.host or DEFAULT_API_URL).rstrip("/"))
        sdk = client.client
        pool = urllib3.PoolManager(num_pools=2, maxsize=self.concurrency, block=False)
        client.client = PooledHttpClient(
            pool, host=sdk.host, request_headers=sdk.request_headers, version=sdk._version, timeout=self.timeout
        )
        return client

    @property
    def concurrency(self) -> int:
        """How many requests this hook's sender has in flight at once."""
        return int(self.settings.get("concurrency") or DEFAULT_CONCURRENCY)

    def ready(self) -> None:
        """Read the connection now, in the calling thread, before requests go out on the sender's
        threads: a task reads connections over Airflow's supervisor channel, which one thread at a
        time may use."""
        _ = (self.settings, self.client, self.limiter)

    @cached_property
    def limiter(self) -> RateLimiter:
        """The connection's request-rate limiter in this process (shared by its hooks)."""
        rate = self.settings.get("requests_per_second")
        return limiter_for(("sendgrid", self.sendgrid_conn_id), float(rate) if rate else None)

    def build_mail(
        self,
        *,
        subject: str,
        html: str,
        text: str,
        recipients: Sequence[Recipient],
        categories: Sequence[str] = (),
        subscription: Subscription = MARKETING,
    ) -> Mail:
        """One Mail Send request: the same content to every recipient, one personalization each.

        Sender, reply-to and default categories come from the connection. The unsubscribe group
        (``asm``) is the ``subscription``'s topic group, shown with the policy's other groups; else,
        for marketing, the connection's ``asm_group_id``; a service email without a topic group
        carries none.
        """
        if not 1 <= len(recipients) <= MAX_PERSONALIZATIONS:
            raise ValueError(f"A Mail Send request takes 1 to {MAX_PERSONALIZATIONS} recipients")
        settings = self.settings
        if not settings.get("from_email"):
            raise ValueError(f"Connection {self.sendgrid_conn_id!r} needs extra.from_email")
        mail = Mail(
            from_email=From(settings["from_email"], settings.get("from_name")),
            subject=subject,
            plain_text_content=PlainTextContent(text),
            html_content=HtmlContent(html),
        )
        if settings.get("reply_to"):
            mail.reply_to = ReplyTo(settings["reply_to"])
        group = subscription.sendgrid_group
        if group is None and subscription.marketing and settings.get("asm_group_id"):
            group = int(settings["asm_group_id"])
        if group is not None:
            shown = (
                list(dict.fromkeys([group, *subscription.groups_to_display]))
                if subscription.groups_to_display
                else None
            )
            mail.asm = Asm(group, GroupsToDisplay(shown) if shown else None)
        all_categories = dict.fromkeys([*settings.get("categories", []), *categories])
        if all_categories:
            mail.category = [Category(name) for name in all_categories]
        for recipient in recipients:
            personalization = Personalization()
            personalization.add_to(To(recipient.email, recipient.name))
            for key, value in recipient.custom_args.items():
                personalization.add_custom_arg(CustomArg(key, value))
            for key, value in recipient.headers.items():
                personalization.add_header(Header(key, value))
            mail.add_personalization(personalization, index=len(mail.personalizations))
        return mail

    def send(self, mail: Mail) -> str | None:
        """Send one Mail Send request and return SendGrid's ``X-Message-Id``.

        429 and 5xx answers are retried with backoff. Raises :class:`Rejected` when SendGrid
        refuses the request, :class:`Retryable` when retries ran out, :class:`OutcomeUnknown`
        when the request went out and no answer came back.
        """
        body = mail.get()
        response = self.retry_policy.call(lambda: self._post(body))
        message_id: str | None = response.headers.get("X-Message-Id")
        return message_id

    def _post(self, body: dict[str, Any]) -> Any:
        self.limiter.acquire()
        try:
            return self.client.send(body)
        except HTTPError as exc:
            raise _error_from_response(exc) from None
        except URLError as exc:
            raise Retryable(f"sendgrid unreachable: {exc.reason}", may_have_reached=False) from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise OutcomeUnknown(f"sendgrid sent no answer ({type(exc).__name__})") from None

    def test_connection(self) -> tuple[bool, str]:
        """Check the API key and sender with a sandbox-mode Mail Send (SendGrid sends nothing)."""
        mail = self.build_mail(
            subject="Lifecycle connection test",
            html="<p>Connection test</p>",
            text="Connection test",
            recipients=[Recipient(self.settings.get("from_email", ""))],
        )
        mail.mail_settings = MailSettings(sandbox_mode=SandBoxMode(True))
        try:
            self.send(mail)
        except ProviderError as exc:
            return False, exc.reason
        return True, "SendGrid accepted the API key and sender"


def _error_from_response(exc: HTTPError) -> ProviderError:
    """A SendGrid error answer as a Rejected/Retryable error, naming SendGrid's first complaint."""
    message, field_name = "", None
    try:
        first = json.loads(exc.body or b"{}").get("errors", [{}])[0]
        message, field_name = first.get("message") or "", first.get("field")
    except (ValueError, AttributeError, IndexError, TypeError):
        pass
    reason = f"sendgrid {exc.status_code} {redact(message or str(exc.reason))}".strip()
    return error_for_status(exc.status_code, reason, dict(exc.headers or {}), field_name)


def _valid_email(address: str) -> bool:
    """Whether SendGrid could take the address: syntax only (``.test`` domains pass, as at SendGrid)."""
    # Imported here: the DAG files import this hook (failure alerts), and parsing them must stay quick.
    from email_validator import EmailNotValidError, validate_email

    try:
        validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return False
    return True


class SendGridSender:
    """Sends emails through a :class:`SendGridHook`, identical content batched into Mail Send
    requests of up to 1,000 personalizations, each carrying its message id in ``custom_args`` and
    its own List-Unsubscribe headers.

    :param hook: the SendGrid hook.
    :param providers: where the app's public links come from, for an email without its own
        unsubscribe URL.
    """

    def __init__(self, hook: SendGridHook, providers: Providers) -> None:
        self.hook = hook
        self.providers = providers

    @cached_property
    def pool(self) -> ThreadPoolExecutor:
        """The threads that send this sender's requests (as many as the hook's concurrency)."""
        return ThreadPoolExecutor(self.hook.concurrency, thread_name_prefix="sendgrid")

    def send(self, batch: Sequence[OutboundEmail], still_claimed: ClaimCheck | None = None) -> Iterator[SendResult]:
        """Send emails, batching identical content into Mail Send requests of up to 1,000, the
        requests concurrently (all started before this returns); results come as each completes.

        SendGrid refuses a request naming one address twice, so a repeated address goes in a
        later request.
        """
        results = []
        groups: dict[tuple, list[OutboundEmail]] = {}
        repeats: Counter[tuple] = Counter()
        for message in batch:
            if not _valid_email(message.to_email):
                results.append(SendResult(message.message_id, Status.FAILED, reason=OutcomeReason.INVALID_EMAIL))
                continue
            content = (message.subject, message.html, message.text, message.categories, message.subscription)
            address = (content, message.to_email.lower())
            repeats[address] += 1
            groups.setdefault((content, repeats[address]), []).append(message)
        requests = [
            group[start : start + MAX_PERSONALIZATIONS]
            for group in groups.values()
            for start in range(0, len(group), MAX_PERSONALIZATIONS)
        ]
        self.hook.ready()
        _ = self.providers.links
        sending = started(self.pool, self._send_mail, requests)
        return chain(results, sending)

    def _recipient(self, message: OutboundEmail) -> Recipient:
        links = self.providers.links
        if message.message_id == TEST_MESSAGE_ID:
            # A test copy is about a real contact: its one-click link must unsubscribe no one.
            url = links.url(TEST_COPY_UNSUBSCRIBE_PATH)
        else:
            url = message.unsubscribe_url or links.unsubscribe_url(message.message_id, message.contact_id, "email")
        return Recipient(
            email=message.to_email,
            name=message.to_name,
            custom_args={**message.custom_args, MESSAGE_ID_PARAM: str(message.message_id)},
            headers={"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        )

    def _send_mail(self, group: Sequence[OutboundEmail]) -> list[SendResult]:
        """One Mail Send request; a refusal that names one personalization is narrowed by halving."""
        first = group[0]
        mail = self.hook.build_mail(
            subject=first.subject,
            html=first.html,
            text=first.text,
            recipients=[self._recipient(m) for m in group],
            categories=first.categories,
            subscription=first.subscription,
        )
        ids = [m.message_id for m in group]
        try:
            provider_id = self.hook.send(mail)
        except ProviderError as exc:
            if isinstance(exc, Rejected) and len(group) > 1 and (exc.field or "").startswith("personalizations"):
                middle = len(group) // 2
                return self._send_mail(group[:middle]) + self._send_mail(group[middle:])
            log.warning("SendGrid request for messages %s..%s ended: %s", ids[0], ids[-1], exc.reason)
            return results_for_error(ids, exc)
        return [SendResult(message_id, Status.SENT, provider_id) for message_id in ids]
