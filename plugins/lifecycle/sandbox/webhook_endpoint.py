"""The sandbox's webhook receiver: what an in-app message service or a sales tool's endpoint does
with Lifecycle's webhook channel, ``POST /webhook/<path>``.

It checks each delivery as a careful receiver would: JSON body; ``Lifecycle-Signature``
(``t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>." + body>``) made with the shared secret and at
most five minutes old; an ``Idempotency-Key``. It records each new delivery once (answering 202
with an ``X-Delivery-Id``); a delivery whose key it already holds is a retry it recognises: it
answers 200 with the first one's id and ``Idempotent-Replayed: true``, and counts the replay.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from lifecycle.sandbox.wire import Reply, Request, json_reply

DEFAULT_WEBHOOK_SECRET = "sandbox-webhook-secret"
WEBHOOK_PREFIX = "/webhook/"
MAX_AGE = 300
"""Seconds a signature's timestamp may be old (or ahead) before the delivery is refused."""


class WebhookEndpoint:
    """Receives signed webhook deliveries, keeps each (by idempotency key) once, counts replays."""

    def __init__(
        self,
        secret: str = DEFAULT_WEBHOOK_SECRET,
        clock: Callable[[], float] = time.time,
        *,
        prefix: str = WEBHOOK_PREFIX,
        id_prefix: str = "wh_",
        check: Callable[[Any], str | None] | None = None,
    ) -> None:
        self.secret = secret
        self.clock = clock
        self.prefix = prefix
        self.id_prefix = id_prefix
        self.check = check
        self._lock = threading.Lock()
        self._deliveries: list[dict[str, Any]] = []
        self._by_key: dict[str, dict[str, Any]] = {}
        self.replays = 0

    def fault_reply(self, status: int, retry_after: int) -> Reply:
        """The response to an injected 429/500/503 fault."""
        headers = {"Retry-After": str(retry_after)} if status == 429 else {}
        return json_reply(status, {"error": f"injected {status}"}, headers)

    def _signature_problem(self, header: str, body: bytes) -> str | None:
        parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        timestamp, given = parts.get("t", ""), parts.get("v1", "")
        if not timestamp.isdigit() or not given:
            return "missing or malformed Lifecycle-Signature"
        if abs(self.clock() - int(timestamp)) > MAX_AGE:
            return "signature timestamp too old"
        expected = hmac.new(self.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        return None if hmac.compare_digest(expected, given) else "signature does not match"

    def receive(self, request: Request) -> Reply:
        """``POST <prefix><path>``: verify, check the payload (422 with ``check``'s problem), then
        record a new delivery or recognise a retried one."""
        if request.method != "POST":
            return json_reply(405, {"error": "method not allowed"})
        problem = self._signature_problem(request.headers.get("lifecycle-signature", ""), request.body)
        if problem is not None:
            return json_reply(401, {"error": problem})
        key = request.headers.get("idempotency-key", "")
        if not key:
            return json_reply(400, {"error": "Idempotency-Key is required"})
        try:
            payload = json.loads(request.body)
        except ValueError:
            return json_reply(400, {"error": "the body is not JSON"})
        if self.check is not None and (invalid := self.check(payload)) is not None:
            return json_reply(422, {"error": invalid})
        with self._lock:
            known = self._by_key.get(key)
            if known is not None:
                self.replays += 1
                return json_reply(
                    200, {"id": known["id"]}, {"X-Delivery-Id": known["id"], "Idempotent-Replayed": "true"}
                )
            delivery = {
                "id": self.id_prefix + uuid.uuid4().hex,
                "path": request.path.removeprefix(self.prefix),
                "idempotency_key": key,
                "payload": payload,
                "received_at": self.clock(),
            }
            self._deliveries.append(delivery)
            self._by_key[key] = delivery
        return json_reply(202, {"id": delivery["id"]}, {"X-Delivery-Id": delivery["id"]})

    def deliveries(self) -> list[dict[str, Any]]:
        """The deliveries received, oldest first, one per idempotency key."""
        with self._lock:
            return [dict(d) for d in self._deliveries]

    def reset(self) -> None:
        """Forget every delivery and the replay count."""
        with self._lock:
            self._deliveries.clear()
            self._by_key.clear()
            self.replays = 0
