"""The provider sandbox's HTTP server: a threaded HTTP/1.1 (keep-alive) server in a background thread.

Usage::

    with SandboxServer(sendgrid_webhook_url="http://127.0.0.1:8080/webhooks/sendgrid") as sandbox:
        client = SendGridAPIClient(DEFAULT_SENDGRID_KEY, host=sandbox.url)
        ...
        sandbox.flush()
        assert sandbox.sendgrid_messages()
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

from lifecycle.sandbox.app import SandboxApp
from lifecycle.sandbox.wire import Hangup, Request, json_reply

log = logging.getLogger(__name__)

DEFAULT_SENDGRID_KEY = "SG.sandbox-key"
DEFAULT_TWILIO_SID = "AC0123456789abcdef0123456789abcdef"
DEFAULT_TWILIO_TOKEN = "sandbox-token"
IDLE_CONNECTION_SECONDS = 60


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LifecycleSandbox/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = IDLE_CONNECTION_SECONDS
    server: _HTTPServer

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        split = urlsplit(self.path)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.send_error(411, "A valid Content-Length is required")
            return
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request(self.command, split.path, split.query, headers, body)
        try:
            outcome = self.server.app.handle(request)
        except Exception:
            log.exception("sandbox failed on %s %s", self.command, split.path)
            outcome = json_reply(500, {"error": "sandbox internal error"})
        if isinstance(outcome, Hangup):
            self.close_connection = True
            return
        self.send_response(outcome.status)
        for name, value in outcome.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(outcome.body)))
        self.end_headers()
        self.wfile.write(outcome.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines are not logged: query strings can carry phone numbers and addresses."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = cast("tuple[str, int]", self.server_address[:2])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                continue


class SandboxServer:
    """A local SendGrid + Twilio look-alike that validates, records, injects faults and posts webhooks.

    ``port=0`` picks a free port; :attr:`url` tells which once started. Twilio status callbacks go
    to each request's ``StatusCallback``; SendGrid events to ``sendgrid_webhook_url``; inbound SMS
    (``/_sandbox/twilio/inbound``) to ``twilio_inbound_url``. Without a URL, webhooks are logged
    (``webhooks()``) but not posted.
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
    ) -> None:
        self.host = host
        self.port = port
        self.app = SandboxApp(
            sendgrid_api_key=sendgrid_api_key,
            twilio_account_sid=twilio_account_sid,
            twilio_auth_token=twilio_auth_token,
            sendgrid_webhook_url=sendgrid_webhook_url,
            twilio_inbound_url=twilio_inbound_url,
        )
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SandboxServer:
        """Bind, then serve in a background thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("the sandbox is already running")
        self._httpd = _HTTPServer((self.host, self.port), self.app)
        self.port = self._httpd.server_address[1]
        self.app.start()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and stop posting webhooks."""
        if self._httpd is None:
            return
        self.app.stop()
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd, self._thread = None, None

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
    def public_key(self) -> str:
        """The SendGrid Event Webhook verification key, as SendGrid shows it (base64 DER)."""
        return self.app.signer.public_key

    def sendgrid_messages(self, to: str | None = None) -> list[dict[str, Any]]:
        """Accepted emails, one per recipient, oldest first (optionally only those to one address)."""
        return self.app.recorder.emails(to)

    def twilio_messages(self) -> list[dict[str, Any]]:
        """Accepted SMS, oldest first, with their current status."""
        return self.app.recorder.sms_list()

    def add_fault(
        self, target: str, kind: str, count: int = 1, retry_after: int = 1, delay: float = 2.0
    ) -> dict[str, Any]:
        """Make the next ``count`` send requests to ``target`` (sendgrid, twilio, all) fail with ``kind``."""
        request = {"target": target, "kind": kind, "count": count, "retry_after": retry_after, "delay": delay}
        return self.app.add_fault(request)

    def inbound_sms(self, sender: str, body: str, to: str | None = None) -> dict[str, Any]:
        """Receive an SMS from ``sender`` (``STOP`` opts the number out) and post the inbound webhook."""
        return self.app.inbound_sms(sender, body, to)

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
