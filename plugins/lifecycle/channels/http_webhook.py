"""WebhookHook: an HTTP endpoint's connection plus a signing ``requests`` session; and
:class:`WebhookSender`, how the webhook channel's payloads go out through it.

Every delivery is a ``POST`` of the JSON payload with:

- ``Lifecycle-Signature: t=<unix seconds>,v1=<hex>``: HMAC-SHA256, keyed with the connection's
  password, over ``<t>.`` followed by the body (the receiver recomputes it, compares in constant
  time and refuses an old ``t``: a captured request cannot be replayed later);
- ``Idempotency-Key``: the ledger's idempotency key, the same on every attempt at a message, so a
  retried delivery is recognisable as the one before it.

429 and 5xx answers are retried with backoff (``Retry-After`` honoured), and so is a request whose
answer was lost: the idempotency key makes the repeat safe at a receiver that honours it. Any
other 4xx fails the message; retries run out: ``failed`` when the endpoint never acted (429,
unreachable), ``unknown`` when it may have.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

import requests
from airflow.sdk import BaseHook
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from lifecycle.channels.base import ClaimCheck, OutboundWebhook, SendResult, results_for_error
from lifecycle.channels.pacing import started
from lifecycle.channels.retry import ClaimLost, ProviderError, Retryable, RetryPolicy, error_for_status
from lifecycle.model.ledger import Status

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Lifecycle-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DELIVERY_ID_HEADER = "X-Delivery-Id"
DEFAULT_CONCURRENCY = 8


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Lifecycle-Signature`` header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class WebhookHook(BaseHook):
    """Delivers signed JSON payloads to one HTTP endpoint.

    Connection: host = the endpoint's URL (``https://tasks.example/hooks/lifecycle``; or host,
    port and schema as the path), password = the signing secret; extra: ``timeout`` (seconds,
    default 10), ``concurrency`` (requests in flight, default 8), ``headers`` (added to every
    request, e.g. an ``Authorization``). Arguments given to the hook override the extras.

    :param webhook_conn_id: Airflow connection id.
    :param timeout: seconds to wait for the endpoint to answer one request.
    :param retry_policy: backoff for 429, 5xx and lost answers.
    """

    conn_name_attr = "webhook_conn_id"
    default_conn_name = "webhook_default"
    conn_type = "http"
    hook_name = "Lifecycle webhook"

    def __init__(
        self,
        webhook_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        retry_policy: RetryPolicy | None = None,
        clock: Any = time.time,
    ) -> None:
        super().__init__()
        self.webhook_conn_id = webhook_conn_id
        self._timeout = timeout
        self.retry_policy = retry_policy or RetryPolicy()
        self.clock = clock
        self._local = threading.local()

    def for_connection(self, conn_id: str) -> WebhookHook:
        """This hook, or one like it (same timeout, retries and clock) for connection ``conn_id``."""
        if conn_id == self.webhook_conn_id:
            return self
        return WebhookHook(conn_id, timeout=self._timeout, retry_policy=self.retry_policy, clock=self.clock)

    @cached_property
    def _connection(self) -> Any:
        return self.get_connection(self.webhook_conn_id)

    @cached_property
    def url(self) -> str:
        """The endpoint's URL."""
        conn = self._connection
        host = str(conn.host or "")
        if host.startswith(("http://", "https://")):
            return host
        if not host:
            raise ValueError(f"Connection {self.webhook_conn_id!r} needs the endpoint's URL as its host")
        port = f":{conn.port}" if conn.port else ""
        scheme = conn.conn_type if conn.conn_type in ("http", "https") else "https"
        return f"{scheme}://{host}{port}/{str(conn.schema or '').lstrip('/')}"

    @property
    def timeout(self) -> float:
        """Seconds to wait for the endpoint to answer."""
        return float(self._timeout or self._connection.extra_dejson.get("timeout") or 10)

    @property
    def concurrency(self) -> int:
        """How many requests are in flight at once."""
        return int(self._connection.extra_dejson.get("concurrency") or DEFAULT_CONCURRENCY)

    @property
    def session(self) -> requests.Session:
        """This thread's keep-alive session."""
        made: requests.Session | None = getattr(self._local, "session", None)
        if made is None:
            made = self._local.session = requests.Session()
        return made

    def deliver(self, payload: str, idempotency_key: str, before_attempt: Any = None) -> str | None:
        """POST ``payload`` (JSON text), signed afresh on every attempt, with ``idempotency_key``;
        returns the endpoint's delivery id (``X-Delivery-Id``), if it gives one.

        Raises :class:`~lifecycle.channels.retry.Rejected` for a 4xx other than 429,
        :class:`~lifecycle.channels.retry.Retryable` when retries ran out, and
        :class:`~lifecycle.channels.retry.ClaimLost` when ``before_attempt`` says no.
        """
        conn = self._connection
        if not conn.password:
            raise ValueError(f"Connection {self.webhook_conn_id!r} needs the signing secret as its password")
        body = payload.encode()
        extra_headers = dict(conn.extra_dejson.get("headers") or {})

        def attempt() -> str | None:
            if before_attempt is not None and not before_attempt():
                raise ClaimLost
            headers = {
                **extra_headers,
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature(conn.password, int(self.clock()), body),
                IDEMPOTENCY_HEADER: idempotency_key,
            }
            try:
                response = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                reason = f"webhook sent no answer ({type(exc).__name__})"
                raise Retryable(reason, may_have_reached=not _never_connected(exc)) from None
            if response.status_code >= 300:
                reason = f"webhook {response.status_code} {response.reason or ''}".strip()
                raise error_for_status(response.status_code, reason, response.headers)
            return response.headers.get(DELIVERY_ID_HEADER)

        return self.retry_policy.call(attempt)

    def test_connection(self) -> tuple[bool, str]:
        """Whether the connection names an endpoint and a signing secret."""
        try:
            url = self.url
        except ValueError as exc:
            return False, str(exc)
        return bool(self._connection.password), f"endpoint {url}"


class WebhookSender:
    """Delivers webhook payloads through a :class:`WebhookHook`, concurrently, asking
    ``still_claimed`` before every attempt."""

    def __init__(self, hook: WebhookHook) -> None:
        self.hook = hook

    @cached_property
    def pool(self) -> ThreadPoolExecutor:
        """The threads that send this sender's requests."""
        return ThreadPoolExecutor(self.hook.concurrency, thread_name_prefix="webhook")

    def send(self, batch: Sequence[OutboundWebhook], still_claimed: ClaimCheck | None = None) -> Iterator[SendResult]:
        """Deliver each payload; the results as each completes."""
        return started(self.pool, lambda message: [self._send_one(message, still_claimed)], batch)

    def _send_one(self, message: OutboundWebhook, still_claimed: ClaimCheck | None) -> SendResult:
        before = None if still_claimed is None else (lambda: still_claimed(message.message_id))
        try:
            delivery_id = self.hook.deliver(message.payload, message.idempotency_key, before_attempt=before)
        except ProviderError as exc:
            log.warning("Webhook delivery of message %s ended: %s", message.message_id, exc.reason)
            return results_for_error([message.message_id], exc)[0]
        return SendResult(message.message_id, Status.SENT, delivery_id)


def _never_connected(exc: requests.RequestException) -> bool:
    """True when the connection never opened, so the endpoint cannot have seen the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    cause = exc.args[0] if exc.args else None
    return isinstance(getattr(cause, "reason", None), NewConnectionError | ConnectTimeoutError)
