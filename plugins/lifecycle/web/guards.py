"""What every route of the web app checks before it does any work: a body read only within its
limit, and the Airflow connection the route needs (503 naming it when it is not configured).

The app runs inside Airflow's api-server, beside its UI and APIs, so nothing is read or parsed
unbounded."""

from __future__ import annotations

import logging

from airflow.sdk import BaseHook, Connection
from airflow.sdk.exceptions import AirflowNotFoundException
from fastapi import Request
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    """A request body over its route's limit."""


async def read_bounded(request: Request, limit: int) -> bytes:
    """The request body, read only while it stays within ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int, route: str) -> JSONResponse:
    """413 for a body over ``limit`` bytes, logged under the route's name."""
    log.warning("Rejected %s: body over %d bytes", route, limit)
    return JSONResponse({"detail": f"body over {limit} bytes"}, status_code=413)


def connection(conn_id: str) -> Connection | None:
    """The connection, or None when it is not configured (an alert, not a server error)."""
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def not_configured(conn_id: str, route: str, what: str = "is not configured", fix: str = "") -> JSONResponse:
    """503 for a route whose connection is missing (the caller retries later), logged with its name."""
    log.error("%s refused with 503: the Airflow connection %s %s", route, conn_id, what)
    detail = f"connection {conn_id} {what}" + (f": {fix}" if fix else "")
    return JSONResponse({"detail": detail}, status_code=503)
