"""The track endpoint: events sent to Lifecycle the way Segment and Customer.io take track calls.

- ``POST /track``: one call, ``{"userId", "event", "messageId", "timestamp"?, "properties"?}``.
- ``POST /batch``: ``{"batch": [call, ...]}``, at most :data:`BATCH_MAX_CALLS` calls.

Authenticated with the write key, the password of the ``lifecycle_track`` connection, sent as
HTTP Basic user name (Segment's way: ``<key>:``) or as a Bearer token, and compared in constant
time; without that connection the routes answer 503 and name it. A body is bounded before it is
read (:data:`TRACK_MAX_BODY`, :data:`BATCH_MAX_BODY`: 413). Taken calls are written into the
engine's inbox in one transaction (:mod:`lifecycle.engine.tracking`) and answered 202; a call
whose ``messageId`` was seen before is a duplicate and changes nothing. A single call that cannot
be taken gets 400 naming the field and the fix; a batch answers 202 with each call's outcome.
Logs carry counts and field names, never the calls' values.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from lifecycle.config import ConfigError
from lifecycle.engine import event_queue
from lifecycle.engine.tracking import Rejected, TrackedEvent, TrackStatus, parse_call, record
from lifecycle.model.db import get_engine, state_url, utc_naive
from lifecycle.web import guards
from lifecycle.web.guards import BodyTooLarge, read_bounded

log = logging.getLogger(__name__)
router = APIRouter()

TRACK_PATH = "/track"
BATCH_PATH = "/batch"
TRACK_CONN_ID = "lifecycle_track"
TRACK_MAX_BODY = 32 * 1024  # Segment's limit for one call
BATCH_MAX_BODY = 512 * 1024  # Segment's limit for a batch
BATCH_MAX_CALLS = 500
ROUTE = "Track endpoint"
CREATE_CONNECTION = (
    f"create it with the write key as its password, e.g. "
    f"airflow connections add {TRACK_CONN_ID} --conn-type generic --conn-password <write key>"
)


def _write_key(request: Request) -> str | None:
    """The key the request presents: a Bearer token, or the HTTP Basic user name (the password
    when the user name is empty)."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user or password or None


def _unauthorized(why: str) -> JSONResponse:
    log.warning("Rejected track call: %s", why)
    return JSONResponse(
        {"detail": f"{why}: send the write key as HTTP Basic user name or as a Bearer token"},
        status_code=401,
        headers={"WWW-Authenticate": 'Basic realm="lifecycle"'},
    )


def _refused(presented: str | None) -> Response | None:
    """None when the request presents the write key, else the answer that refuses it."""
    connection = guards.connection(TRACK_CONN_ID)
    if connection is None:
        return guards.not_configured(TRACK_CONN_ID, ROUTE, fix=CREATE_CONNECTION)
    key = connection.password or ""
    if not key:
        return guards.not_configured(TRACK_CONN_ID, ROUTE, "has no password (the write key)", CREATE_CONNECTION)
    if presented is None:
        return _unauthorized("write key missing")
    if not hmac.compare_digest(presented.encode(), key.encode()):
        return _unauthorized("write key does not match")
    return None


async def _body(request: Request, limit: int) -> Any | Response:
    """The authorised request's JSON body, or the answer that refuses the request."""
    refused = await run_in_threadpool(_refused, _write_key(request))
    if refused is not None:
        return refused
    try:
        body = await read_bounded(request, limit)
    except BodyTooLarge:
        return guards.too_large(limit, "track call")
    try:
        return json.loads(body)
    except ValueError:
        return _bad_request("body", "body is not JSON")


def _bad_request(field: str, problem: str) -> JSONResponse:
    return JSONResponse({"detail": problem, "field": field}, status_code=400)


def _take(calls: list[Any]) -> list[tuple[Any, TrackStatus, Rejected | None]]:
    """Each call with its outcome; the taken ones written in one transaction."""
    received_at = utc_naive(datetime.now(UTC))
    parsed = [parse_call(call, received_at) for call in calls]
    events = [p for p in parsed if isinstance(p, TrackedEvent)]
    written: list[TrackStatus] = []
    if events:
        with get_engine(state_url()).begin() as conn:
            written = record(conn, events, received_at)
    statuses = iter(written)
    outcomes: list[tuple[Any, TrackStatus, Rejected | None]] = [
        (call, TrackStatus.REJECTED, p) if isinstance(p, Rejected) else (call, next(statuses), None)
        for call, p in zip(calls, parsed, strict=True)
    ]
    _wake([e for e, status in zip(events, written, strict=True) if status == TrackStatus.ACCEPTED])
    counts = Counter(status for _, status, _ in outcomes)
    rejected = Counter(r.field for _, _, r in outcomes if r is not None)
    log.info(
        "Track: %d calls, %d accepted, %d duplicate, %d rejected %s",
        len(calls),
        counts[TrackStatus.ACCEPTED],
        counts[TrackStatus.DUPLICATE],
        counts[TrackStatus.REJECTED],
        dict(rejected) if rejected else "",
    )
    return outcomes


def _wake(taken: list[TrackedEvent]) -> None:
    """With an events queue, one wake-up per realtime program the committed events trigger."""
    if not taken:
        return
    try:
        wiring = event_queue.wiring()
    except ConfigError as exc:  # the events are taken; the watchers find them at their next look
        log.warning("Track: no wake-ups published, the configuration does not load: %s", exc)
        return
    if wiring.queue is None:
        return
    counts = Counter(pid for event in taken for pid in wiring.programs([event.event_type]))
    event_queue.publish(wiring.queue, counts)


def _message_id(call: Any) -> Any:
    return call.get("messageId") if isinstance(call, dict) else None


@router.post(TRACK_PATH)
async def track(request: Request) -> Response:
    """One track call: 202 when taken (or a duplicate), 400 naming the field and the fix."""
    call = await _body(request, TRACK_MAX_BODY)
    if isinstance(call, Response):
        return call
    [(_, status, rejected)] = await run_in_threadpool(_take, [call])
    if rejected is not None:
        return _bad_request(rejected.field, rejected.problem)
    return JSONResponse({"status": status, "messageId": _message_id(call)}, status_code=202)


@router.post(BATCH_PATH)
async def batch(request: Request) -> Response:
    """Up to :data:`BATCH_MAX_CALLS` track calls: 202 with each call's outcome, in order."""
    body = await _body(request, BATCH_MAX_BODY)
    if isinstance(body, Response):
        return body
    calls = body.get("batch") if isinstance(body, dict) else None
    if not isinstance(calls, list):
        return _bad_request("batch", 'a batch is {"batch": [call, ...]}')
    if len(calls) > BATCH_MAX_CALLS:
        return JSONResponse(
            {"detail": f"batch holds {len(calls)} calls; send at most {BATCH_MAX_CALLS} per request"},
            status_code=413,
        )
    outcomes = await run_in_threadpool(_take, calls)
    counts = Counter(status for _, status, _ in outcomes)
    results = [
        {"messageId": _message_id(call), "status": status}
        | ({"field": rejected.field, "error": rejected.problem} if rejected else {})
        for call, status, rejected in outcomes
    ]
    return JSONResponse({**{s.value: counts[s] for s in TrackStatus}, "results": results}, status_code=202)
