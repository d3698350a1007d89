"""Asynchronous, signed, retried delivery of provider webhooks back to the application.

API handlers only enqueue; one worker thread posts in order. Consecutive SendGrid events for the
same URL go out as one JSON array (SendGrid batches its Event Webhook the same way); each Twilio
callback is its own form POST. A post is retried with exponential backoff on connection errors,
429 and 5xx answers; other answers are final. Items with no URL configured are logged as
``unposted`` and never sent.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import requests

from lifecycle.sandbox.signing import TWILIO_SIGNATURE_HEADER, EventWebhookSigner, twilio_signature

log = logging.getLogger(__name__)

Provider = Literal["sendgrid", "twilio"]
MAX_ATTEMPTS = 4
BACKOFF_SECONDS = 0.2
POST_TIMEOUT_SECONDS = 5.0
MAX_BATCH = 1000
LOG_SIZE = 100_000


@dataclass
class Webhook:
    """One webhook item (a SendGrid event, or a Twilio status callback / inbound message) and its fate."""

    id: int
    provider: Provider
    kind: str
    url: str | None
    payload: dict[str, Any]
    state: str = "pending"
    attempts: int = 0
    response_status: int | None = None
    error: str | None = None


class WebhookDispatcher:
    """Queues webhooks and posts them from a background worker thread."""

    def __init__(self, signer: EventWebhookSigner, twilio_auth_token: str) -> None:
        self.signer = signer
        self.twilio_auth_token = twilio_auth_token
        self._queue: queue.SimpleQueue[Webhook | None] = queue.SimpleQueue()
        self._ids = itertools.count(1)
        self._log: deque[Webhook] = deque(maxlen=LOG_SIZE)
        self._counts: Counter[str] = Counter()
        self._pending = 0
        self._idle = threading.Condition()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._session = requests.Session()

    def start(self) -> None:
        """Start the worker thread."""
        self._stopping.clear()
        self._worker = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker (after the post in flight, if any) and wait for it."""
        self._stopping.set()
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout)
        self._session.close()

    def enqueue(self, provider: Provider, kind: str, url: str | None, payload: dict[str, Any]) -> Webhook:
        """Log one webhook and queue it for posting (or mark it ``unposted`` when ``url`` is None)."""
        item = Webhook(next(self._ids), provider, kind, url, payload)
        with self._idle:
            self._log.append(item)
            self._counts["queued"] += 1
            if url is None:
                item.state = "unposted"
                self._counts["unposted"] += 1
                return item
            self._pending += 1
        self._queue.put(item)
        return item

    def flush(self, timeout: float = 30.0) -> dict[str, int]:
        """Block until no webhook is pending (or ``timeout`` passes) and return the counts."""
        deadline = time.monotonic() + timeout
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0, max(0.0, deadline - time.monotonic()))
        return self.counts()

    def counts(self) -> dict[str, int]:
        """How many webhooks were queued, delivered, failed, left unposted, and are still pending."""
        with self._idle:
            counts = {name: self._counts[name] for name in ("queued", "delivered", "failed", "unposted")}
            return {**counts, "posts": self._counts["posts"], "pending": self._pending}

    def entries(self, provider: str | None = None) -> list[dict[str, Any]]:
        """A snapshot of the logged webhooks (most recent :data:`LOG_SIZE`), oldest first."""
        with self._idle:
            return [asdict(item) for item in self._log if provider in (None, item.provider)]

    def clear_log(self) -> None:
        """Forget the log and the counts (webhooks still pending are posted all the same)."""
        with self._idle:
            self._log.clear()
            self._counts.clear()

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for group in _groups([item for item in batch if item is not None]):
                self._deliver(group)

    def _deliver(self, group: list[Webhook]) -> None:
        url = str(group[0].url)
        status: int | None = None
        error: str | None = None
        attempts = 0
        while attempts < MAX_ATTEMPTS and not self._stopping.is_set():
            if attempts:
                self._stopping.wait(BACKOFF_SECONDS * 2 ** (attempts - 1))
            attempts += 1
            body, headers = self._encode(group)
            try:
                response = self._session.post(url, data=body, headers=headers, timeout=POST_TIMEOUT_SECONDS)
            except requests.RequestException as exc:
                status, error = None, type(exc).__name__
                continue
            status, error = response.status_code, None
            if status != 429 and status < 500:
                break
        delivered = status is not None and 200 <= status < 300
        if not delivered:
            log.warning("webhook post to %s failed after %d attempts (status %s, %s)", url, attempts, status, error)
        with self._idle:
            self._counts["posts"] += attempts
            self._counts["delivered" if delivered else "failed"] += len(group)
            for item in group:
                item.state = "delivered" if delivered else "failed"
                item.attempts, item.response_status, item.error = attempts, status, error
            self._pending -= len(group)
            self._idle.notify_all()

    def _encode(self, group: list[Webhook]) -> tuple[bytes, dict[str, str]]:
        first = group[0]
        if first.provider == "sendgrid":
            body = json.dumps([item.payload for item in group], separators=(",", ":")).encode("utf-8")
            headers = {"Content-Type": "application/json", "User-Agent": "SendGrid Event API"}
            return body, {**headers, **self.signer.headers(str(int(time.time())), body)}
        params: Mapping[str, str] = first.payload
        signature = twilio_signature(self.twilio_auth_token, str(first.url), params)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            TWILIO_SIGNATURE_HEADER: signature,
        }
        return urlencode(params).encode("ascii"), headers


def _groups(batch: list[Webhook]) -> Iterator[list[Webhook]]:
    """Split a drained batch, in order, into posts: runs of SendGrid events per URL, single Twilio items."""
    for (provider, _url), items in itertools.groupby(batch, key=lambda item: (item.provider, item.url)):
        if provider == "sendgrid":
            yield list(items)
        else:
            yield from ([item] for item in items)
