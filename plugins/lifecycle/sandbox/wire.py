"""What the sandbox receives and answers, independent of the HTTP server that carries it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    """One HTTP request, fully read: header names are lower-cased."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    """A complete HTTP response: status, headers and body bytes."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        """Whether the provider accepted the request (a 2xx status)."""
        return 200 <= self.status < 300


@dataclass(frozen=True)
class Hangup:
    """Close the connection without answering (a dropped or timed-out request)."""


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON response with the given status and extra headers."""
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Reply(status, body, {"Content-Type": "application/json", **(headers or {})})
