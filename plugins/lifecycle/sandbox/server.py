"""The provider sandbox's HTTP server: HTTP/1.1 with keep-alive on one asyncio event loop, in a
background thread.

A connection costs a coroutine, not a thread, and a provider request's latency
(:class:`~lifecycle.sandbox.latency.Latency`) is awaited, so hundreds of requests in flight at a
150 ms round trip do not make the sandbox the bottleneck. The application itself (validation,
recording, faults) runs in a small thread pool.

Usage::

    with SandboxServer(sendgrid_webhook_url="http://127.0.0.1:8080/webhooks/sendgrid") as sandbox:
        client = SendGridAPIClient(DEFAULT_SENDGRID_KEY, host=sandbox.url)
        ...
        sandbox.flush()
        assert sandbox.sendgrid_messages()
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from email.utils import formatdate
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from lifecycle.sandbox.ads_endpoint import ADS_VERSION
from lifecycle.sandbox.app import CONTROL_PREFIX, SandboxApp
from lifecycle.sandbox.latency import Latency
from lifecycle.sandbox.wire import Hangup, Reply, Request, json_reply

log = logging.getLogger(__name__)

DEFAULT_SENDGRID_KEY = "SG.sandbox-key"
DEFAULT_TWILIO_SID = "AC0123456789abcdef0123456789abcdef"
DEFAULT_TWILIO_TOKEN = "sandbox-token"
IDLE_CONNECTION_SECONDS = 60
APP_THREADS = 16
MAX_HEADER_BYTES = 64 * 1024
SERVER_NAME = "LifecycleSandbox/1.0"

Handler = Callable[[Request], Reply | Hangup]


class HttpServer:
    """HTTP/1.1 keep-alive server on an asyncio loop in a background thread, answering each request
    with ``handle`` (run in a pool of ``threads``). A request that is not a control request
    (``/_sandbox/...``) first waits a sample of ``latency`` (a :class:`Latency`, or a callable read
    at every request, so that the latency can change while the server runs).

    ``port=0`` picks a free port; :attr:`port` tells which once started.
    """

    def __init__(
        self,
        handle: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: Latency | Callable[[], Latency] | None = None,
        threads: int = APP_THREADS,
    ) -> None:
        self.handle = handle
        self.host = host
        self.port = port
        fixed = latency if isinstance(latency, Latency) else Latency()
        self._latency: Callable[[], Latency] = latency if callable(latency) else lambda: fixed
        self._threads = threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def latency(self) -> Latency:
        """The latency provider requests wait now."""
        return self._latency()

    def start(self) -> HttpServer:
        """Bind, then serve in a background thread; returns self."""
        if self._loop is not None:
            raise RuntimeError("the server is already running")
        loop = asyncio.new_event_loop()
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="sandbox-app")
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, self.host, self.port, backlog=1024, limit=MAX_HEADER_BYTES)
            )
        except BaseException:
            loop.close()
            self._pool.shutdown(wait=False)
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="sandbox-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close every open connection."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._loop, self._thread, self._pool, self._server = None, None, None, None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=5)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read and answer one request; whether the connection stays open for another."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_CONNECTION_SECONDS)
        except (TimeoutError, asyncio.IncompleteReadError):
            return False
        request_line, *lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3:
            await _write(writer, json_reply(400, {"error": "bad request line"}), keep_alive=False)
            return False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0 or "chunked" in headers.get("transfer-encoding", "").lower():
            await _write(writer, json_reply(411, {"error": "A valid Content-Length is required"}), keep_alive=False)
            return False
        body = await reader.readexactly(length) if length else b""
        split = urlsplit(target)
        request = Request(method, split.path, split.query, headers, body)
        if not split.path.startswith(CONTROL_PREFIX) and (wait := self.latency.sample()):
            await asyncio.sleep(wait)
        outcome = await asyncio.get_running_loop().run_in_executor(self._pool, self._answer, request)
        if isinstance(outcome, Hangup):
            return False
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        await _write(writer, outcome, keep_alive)
        return keep_alive

    def _answer(self, request: Request) -> Reply | Hangup:
        try:
            return self.handle(request)
        except Exception:
            log.exception("sandbox failed on %s %s", request.method, request.path)
            return json_reply(500, {"error": "sandbox internal error"})


async def _write(writer: asyncio.StreamWriter, reply: Reply, keep_alive: bool) -> None:
    try:
        phrase = HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = ""
    lines = [f"HTTP/1.1 {reply.status} {phrase}", f"Server: {SERVER_NAME}", f"Date: {formatdate(usegmt=True)}"]
    lines += [f"{name}: {value}" for name, value in reply.headers.items()]
    lines += [f"Content-Length: {len(reply.body)}"]
    if not keep_alive:
        lines.append("Connection: close")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body)
    await writer.drain()


class SandboxServer:
    """A local SendGrid + Twilio look-alike that validates, records, injects faults and posts webhooks.

    ``port=0`` picks a free port; :attr:`url` tells which once started. Twilio status callbacks go
    to each request's ``StatusCallback``; SendGrid events to ``sendgrid_webhook_url``; inbound SMS
    (``/_sandbox/twilio/inbound``) to ``twilio_inbound_url``. Without a URL, webhooks are logged
    (``webhooks()``) but not posted. ``latency`` is how long each provider request takes to answer
    (none by default: loopback speed); :meth:`set_latency` (``POST /_sandbox/latency``) changes it
    while the sandbox runs.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        sendgrid_webhook_url: str | None = None,
        twilio_inbound_url: str | None = None,
        twilio_auth_token: str = DEFAULT_TWILIO_TOKEN,
        twilio_account_sid: str = DEFAULT_TWILIO_SID,
        sendgrid_api_key: str = DEFAULT_SENDGRID_KEY,
        latency: Latency | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.app = SandboxApp(
            sendgrid_api_key=sendgrid_api_key,
            twilio_account_sid=twilio_account_sid,
            twilio_auth_token=twilio_auth_token,
            sendgrid_webhook_url=sendgrid_webhook_url,
            twilio_inbound_url=twilio_inbound_url,
            latency=latency,
        )
        self._http: HttpServer | None = None

    def start(self) -> SandboxServer:
        """Bind, then serve in a background thread; returns self."""
        if self._http is not None:
            raise RuntimeError("the sandbox is already running")
        self._http = HttpServer(self.app.handle, self.host, self.port, lambda: self.app.latency).start()
        self.port = self._http.port
        self.app.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and stop posting webhooks."""
        if self._http is None:
            return
        self.app.stop()
        self._http.stop()
        self._http = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL clients use as the provider host (``http://127.0.0.1:<port>``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def latency(self) -> Latency:
        """How long each provider request waits before it is answered, now."""
        return self.app.latency

    def set_latency(self, latency: Latency) -> None:
        """Make every provider request from now on wait a sample of ``latency``."""
        self.app.latency = latency

    @property
    def public_key(self) -> str:
        """The SendGrid Event Webhook verification key, as SendGrid shows it (base64 DER)."""
        return self.app.signer.public_key

    def sendgrid_messages(self, to: str | None = None) -> list[dict[str, Any]]:
        """Accepted emails, one per recipient, oldest first (optionally only those to one address)."""
        return self.app.recorder.emails(to)

    def twilio_messages(self) -> list[dict[str, Any]]:
        """Accepted SMS and WhatsApp messages (and inbound WhatsApp ones), oldest first, with their
        current status."""
        return self.app.recorder.sms_list()

    def add_fault(
        self, target: str, kind: str, count: int = 1, retry_after: int = 1, delay: float = 2.0
    ) -> dict[str, Any]:
        """Make the next ``count`` send requests to ``target`` (sendgrid, twilio, all) fail with ``kind``."""
        request = {"target": target, "kind": kind, "count": count, "retry_after": retry_after, "delay": delay}
        return self.app.add_fault(request)

    def inbound_sms(self, sender: str, body: str, to: str | None = None, at: datetime | None = None) -> dict[str, Any]:
        """Receive an SMS from ``sender`` (``STOP`` opts the number out) and post the inbound webhook;
        from ``whatsapp:<number>``, a WhatsApp message received ``at`` (default now)."""
        return self.app.inbound_sms(sender, body, to, at)

    def webhook_url(self, path: str = "lifecycle") -> str:
        """The URL of the sandbox's webhook receiver (any ``path``), which checks signatures made
        with ``webhook_secret``."""
        return f"{self.url}/webhook/{path}"

    @property
    def webhook_secret(self) -> str:
        """The secret the webhook receiver checks signatures with."""
        return self.app.webhook.secret

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """The webhook deliveries received, oldest first, one per idempotency key."""
        return self.app.webhook.deliveries()

    def sales_tasks_url(self) -> str:
        """The URL of the sandbox CRM's task API (signatures checked with ``webhook_secret``)."""
        return f"{self.url}/sales/tasks"

    def activities_url(self) -> str:
        """The URL of the sandbox CRM's activity API (signatures checked with ``webhook_secret``)."""
        return f"{self.url}/sales/activities"

    def sales_tasks(self) -> list[dict[str, Any]]:
        """The tasks the CRM received, oldest first, one per idempotency key."""
        return self.app.sales_tasks.deliveries()

    def activities(self) -> list[dict[str, Any]]:
        """The activities the CRM received, oldest first, one per idempotency key."""
        return self.app.crm_activities.deliveries()

    def ads_url(self) -> str:
        """The base URL of the sandbox's ad platform (Meta's Graph API with its version): an ads
        connection's host; its access token is ``ads_token``."""
        return f"{self.url}/{ADS_VERSION}"

    @property
    def ads_token(self) -> str:
        """The access token the ad platform accepts."""
        return self.app.ads.token

    def audience(self, audience_id: str) -> list[dict[str, str]]:
        """The rows custom audience ``audience_id`` holds (``EMAIL_SHA256``/``PHONE_SHA256`` → hash), sorted."""
        return self.app.ads.members(audience_id)

    def audience_requests(self, audience_id: str) -> list[dict[str, Any]]:
        """The add and remove requests the audience took (action, schema, rows), oldest first."""
        return self.app.ads.requests(audience_id)

    def approve_content(self, sid: str, text: str) -> None:
        """Know ``sid`` as an approved WhatsApp content template reading ``text`` (``{{1}}`` placeholders)."""
        self.app.twilio.approve_content(sid, text)

    def sendgrid_event(
        self,
        event: str,
        sg_message_id: str | None = None,
        x_message_id: str | None = None,
        bounce_type: str | None = None,
    ) -> list[dict[str, Any]]:
        """Post one Event Webhook event for a recorded email; returns the events queued."""
        return self.app.sendgrid_event(event, sg_message_id, x_message_id, bounce_type)

    def webhooks(self, provider: str | None = None) -> list[dict[str, Any]]:
        """The webhook log (state, attempts, payload), oldest first, optionally for one provider."""
        return self.app.dispatcher.entries(provider)

    def flush(self, timeout: float = 30.0) -> dict[str, int]:
        """Wait until every queued webhook was delivered or failed; returns the webhook counts."""
        return self.app.dispatcher.flush(timeout)

    def stats(self) -> dict[str, Any]:
        """Request counters per endpoint and webhook counts."""
        return self.app.stats()

    def reset(self) -> None:
        """Forget records, faults, opt-outs, stats and the webhook log."""
        self.app.reset()
