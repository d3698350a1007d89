"""The sandbox's ad platform: Meta's Custom Audience users API, ``/{version}/{audience_id}/users``.

- ``POST`` adds rows, ``DELETE`` removes them; the body is ``{"payload": {"schema": [...], "data":
  [[...], ...]}}`` (``payload`` may also be the JSON text of that object, as a form parameter is).
- The access token comes as ``Authorization: Bearer <token>`` (or ``?access_token=``); the local
  stack's is ``sandbox-ads-token``. A wrong one answers 401 with Graph API's error body.
- It checks what Meta checks of a pre-hashed upload: ``schema`` names known keys
  (``EMAIL_SHA256``, ``PHONE_SHA256``), once each; ``data`` holds 1 to 10,000 rows of one value
  per key; every value is a SHA-256 hash in lowercase hex (64 characters) or empty, and a row is
  not all empty. Anything else answers 400 (``code`` 100) naming the first problem, and records
  nothing: a normalising or hashing bug cannot pass unnoticed.
- An audience is a set of rows (key → hash): adding a row it holds, or removing one it does not,
  changes nothing (as on Meta, where a repeated batch is harmless).

``GET /_sandbox/audiences`` lists each audience's rows and the requests it took (``?id=`` for one).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any
from urllib.parse import parse_qs

from lifecycle.sandbox.wire import Reply, Request, json_reply

DEFAULT_ADS_TOKEN = "sandbox-ads-token"
ADS_VERSION = "v21.0"
USERS_PATH = re.compile(r"^/(v\d+\.\d+)/([A-Za-z0-9_-]{1,64})/users$")
KEYS = ("EMAIL_SHA256", "PHONE_SHA256")
MAX_ROWS = 10_000
HASH = re.compile(r"^[0-9a-f]{64}$")

Member = tuple[tuple[str, str], ...]
"""One audience row: (key, hash) pairs in ``KEYS`` order, empty values left out."""


class AdsError(ValueError):
    """A request the platform refuses; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400, code: int = 100) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def error_reply(status: int, message: str, code: int = 100) -> Reply:
    """Graph API's error body."""
    return json_reply(
        status, {"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "sandbox"}}
    )


def parse_upload(body: bytes) -> tuple[list[str], list[Member]]:
    """The schema and rows of an upload; raises :class:`AdsError` naming the first problem."""
    try:
        document = json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AdsError("(#100) the body must be JSON") from None
    payload = document.get("payload") if isinstance(document, dict) else None
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError:
            raise AdsError("(#100) payload must be a JSON object") from None
    if not isinstance(payload, dict):
        raise AdsError("(#100) The parameter payload is required")
    schema = payload.get("schema")
    if isinstance(schema, str):
        schema = [schema]
    if not isinstance(schema, list) or not schema or not all(isinstance(k, str) for k in schema):
        raise AdsError("(#100) payload.schema must be a non-empty list of keys")
    unknown = [k for k in schema if k not in KEYS]
    if unknown:
        raise AdsError(f"(#100) Invalid schema key {unknown[0]!r}: use {', '.join(KEYS)}")
    if len(set(schema)) != len(schema):
        raise AdsError("(#100) payload.schema names a key twice")
    data = payload.get("data")
    if not isinstance(data, list) or not data:
        raise AdsError("(#100) payload.data must be a non-empty list of rows")
    if len(data) > MAX_ROWS:
        raise AdsError(f"(#100) payload.data holds {len(data)} rows; at most {MAX_ROWS} a request")
    members = []
    for index, row in enumerate(data):
        values = [row] if isinstance(row, str) and len(schema) == 1 else row
        if not isinstance(values, list) or len(values) != len(schema):
            raise AdsError(f"(#100) payload.data[{index}] must hold {len(schema)} values, one per schema key")
        if not all(isinstance(v, str) and (v == "" or HASH.match(v)) for v in values):
            raise AdsError(
                f"(#100) payload.data[{index}] holds a value that is not a SHA-256 hash in lowercase hex "
                "(normalise, then hash; send '' for an unknown key)"
            )
        pairs = dict(zip(schema, values, strict=True))
        member = tuple((key, pairs[key]) for key in KEYS if pairs.get(key))
        if not member:
            raise AdsError(f"(#100) payload.data[{index}] is empty")
        members.append(member)
    return list(schema), members


class AdsEndpoint:
    """Custom audiences as sets of hashed rows, changed by add and remove requests."""

    def __init__(self, token: str = DEFAULT_ADS_TOKEN) -> None:
        self.token = token
        self._lock = threading.Lock()
        self._audiences: dict[str, set[Member]] = {}
        self._requests: dict[str, list[dict[str, Any]]] = {}
        self._sessions = 0

    def fault_reply(self, status: int, retry_after: int) -> Reply:
        """The response to an injected 429/500/503 fault (Graph API's throttling and transient errors)."""
        if status == 429:
            reply = error_reply(429, "(#80003) There have been too many calls to this ad account", 80003)
            reply.headers["Retry-After"] = str(retry_after)
            return reply
        return error_reply(status, "An unexpected error has occurred. Please retry your request later.", 2)

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if not given:
            given = (parse_qs(request.query).get("access_token") or [""])[0]
        return bool(given) and given == self.token

    def receive(self, request: Request) -> Reply:
        """``POST|DELETE /{version}/{audience_id}/users``."""
        match = USERS_PATH.match(request.path)
        if match is None:
            return error_reply(404, f"Unknown path components: {request.path}", 2500)
        if request.method not in ("POST", "DELETE"):
            return error_reply(405, "Unsupported method: use POST to add and DELETE to remove", 100)
        if not self._authorised(request):
            return error_reply(401, "Invalid OAuth access token - Cannot parse access token", 190)
        try:
            schema, members = parse_upload(request.body)
        except AdsError as error:
            return error_reply(error.status, str(error), error.code)
        audience = match[2]
        action = "add" if request.method == "POST" else "remove"
        with self._lock:
            held = self._audiences.setdefault(audience, set())
            if action == "add":
                held.update(members)
            else:
                held.difference_update(members)
            self._sessions += 1
            session = self._sessions
            self._requests.setdefault(audience, []).append({"action": action, "schema": schema, "rows": len(members)})
        return json_reply(
            200,
            {
                "audience_id": audience,
                "session_id": str(session),
                "num_received": len(members),
                "num_invalid_entries": 0,
                "invalid_entry_samples": {},
            },
        )

    def members(self, audience: str) -> list[dict[str, str]]:
        """The rows audience ``audience`` holds (key → hash), sorted."""
        with self._lock:
            return [dict(member) for member in sorted(self._audiences.get(audience, set()))]

    def requests(self, audience: str) -> list[dict[str, Any]]:
        """The add and remove requests audience ``audience`` took, oldest first."""
        with self._lock:
            return [dict(r) for r in self._requests.get(audience, [])]

    def describe(self, audience: str | None = None) -> dict[str, Any]:
        """Every audience (or one) with its rows and requests, for the control API."""
        with self._lock:
            names = sorted(self._audiences) if audience is None else [audience]
        return {name: {"members": self.members(name), "requests": self.requests(name)} for name in names}

    def reset(self) -> None:
        """Forget every audience."""
        with self._lock:
            self._audiences.clear()
            self._requests.clear()
