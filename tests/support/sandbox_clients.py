"""Test helpers for the provider sandbox: real SDK clients pointed at it, and a webhook receiver."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from sendgrid import SendGridAPIClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from lifecycle.sandbox import DEFAULT_SENDGRID_KEY, DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN, SandboxServer

TWILIO_API = "https://api.twilio.com"


class SandboxTwilioHttpClient(TwilioHttpClient):
    """The Twilio SDK's own HTTP client, sending what it would send to api.twilio.com to the sandbox."""

    def __init__(self, base_url: str, timeout: float | None = None) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        """Rewrite the Twilio API origin to the sandbox's, then send as the SDK does."""
        if url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        return super().request(method, url, *args, **kwargs)


def twilio_client(sandbox: SandboxServer, token: str = DEFAULT_TWILIO_TOKEN, timeout: float | None = 10) -> Client:
    """A real ``twilio.rest.Client`` talking to the sandbox."""
    return Client(DEFAULT_TWILIO_SID, token, http_client=SandboxTwilioHttpClient(sandbox.url, timeout))


def sendgrid_client(sandbox: SandboxServer, api_key: str = DEFAULT_SENDGRID_KEY) -> SendGridAPIClient:
    """A real ``SendGridAPIClient`` talking to the sandbox."""
    return SendGridAPIClient(api_key, host=sandbox.url)


@dataclass(frozen=True)
class Received:
    """One webhook request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode("utf-8")

    @property
    def form(self) -> dict[str, str]:
        """The body as form parameters."""
        return dict(parse_qsl(self.text, keep_blank_values=True))


class WebhookReceiver:
    """A tiny local HTTP server that records every POST; the first ``fail_first`` get a 503."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[Received] = []
        self.answered_503 = 0
        self._fail_first = fail_first
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._changed:
                    failing = receiver.answered_503 < receiver._fail_first
                    if failing:
                        receiver.answered_503 += 1
                    else:
                        receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                    receiver._changed.notify_all()
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    def url(self, path: str) -> str:
        """The full URL of ``path`` on this receiver."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least ``count`` requests arrived; returns them all."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
