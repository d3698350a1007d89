"""MetaAudienceHook: an ad account's connection and the Custom Audience users API of Meta's
Marketing API, through which the paid-audience sync adds and removes hashed members.

One request per batch: ``POST {base}/{audience_id}/users`` to add, ``DELETE`` to remove, with the
JSON body ``{"payload": {"schema": ["EMAIL_SHA256", "PHONE_SHA256"], "data": [[..., ...], ...]}}``
(at most 10,000 rows) and the access token as a Bearer ``Authorization`` header. 429 and 5xx
answers are retried with backoff (``Retry-After`` honoured), and so is a request whose answer was
lost: adding a member the audience holds, or removing one it does not, changes nothing, so a
repeated batch is harmless. Any other 4xx raises :class:`~lifecycle.channels.retry.Rejected`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Literal

import requests
from airflow.sdk import BaseHook

from lifecycle.channels.retry import Retryable, RetryPolicy, error_for_status

log = logging.getLogger(__name__)

MAX_ROWS = 10_000
"""The rows Meta takes in one request."""


class MetaAudienceHook(BaseHook):
    """Adds and removes hashed rows of one ad account's custom audiences.

    Connection: host = the Graph API's base URL with its version (``https://graph.facebook.com/v21.0``),
    password = the ad account's access token; extra: ``timeout`` (seconds, default 30), ``attempts``
    (tries of one batch through 429, 5xx and lost answers, default 6).

    :param ads_conn_id: Airflow connection id.
    :param retry_policy: backoff for 429, 5xx and lost answers.
    """

    conn_name_attr = "ads_conn_id"
    default_conn_name = "ads_default"
    conn_type = "http"
    hook_name = "Lifecycle ad audience (Meta)"

    def __init__(self, ads_conn_id: str = default_conn_name, *, retry_policy: RetryPolicy | None = None) -> None:
        super().__init__()
        self.ads_conn_id = ads_conn_id
        self._retry_policy = retry_policy

    @cached_property
    def _connection(self) -> Any:
        return self.get_connection(self.ads_conn_id)

    @cached_property
    def base_url(self) -> str:
        """The API's base URL, with its version."""
        host = str(self._connection.host or "").rstrip("/")
        if not host.startswith(("http://", "https://")):
            raise ValueError(
                f"Connection {self.ads_conn_id!r} needs the API's base URL as its host, e.g. "
                "https://graph.facebook.com/v21.0"
            )
        return host

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        """The backoff of one batch: the hook's, else the connection's ``attempts`` (default 6)."""
        if self._retry_policy is not None:
            return self._retry_policy
        return RetryPolicy(attempts=int(self._connection.extra_dejson.get("attempts") or RetryPolicy.attempts))

    @cached_property
    def session(self) -> requests.Session:
        return requests.Session()

    def upload(
        self, audience: str, action: Literal["add", "remove"], schema: Sequence[str], rows: Sequence[Sequence[str]]
    ) -> dict[str, Any]:
        """Add or remove ``rows`` (hashes, in ``schema``'s order) in audience ``audience``; the
        platform's answer (``num_received``, ``num_invalid_entries``...)."""
        if len(rows) > MAX_ROWS:
            raise ValueError(f"a batch holds at most {MAX_ROWS} rows, got {len(rows)}")
        token = self._connection.password
        if not token:
            raise ValueError(f"Connection {self.ads_conn_id!r} needs the ad account's access token as its password")
        url = f"{self.base_url}/{audience}/users"
        method = "POST" if action == "add" else "DELETE"
        body = json.dumps({"payload": {"schema": list(schema), "data": [list(r) for r in rows]}}).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        timeout = float(self._connection.extra_dejson.get("timeout") or 30)

        def attempt() -> dict[str, Any]:
            try:
                response = self.session.request(method, url, data=body, headers=headers, timeout=timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise Retryable(f"ad platform sent no answer ({type(exc).__name__})", may_have_reached=True) from None
            if response.status_code >= 300:
                reason = f"ad platform {response.status_code} {_error_message(response)}".strip()
                raise error_for_status(response.status_code, reason, response.headers)
            answer: dict[str, Any] = response.json()
            return answer

        answer = self.retry_policy.call(attempt)
        invalid = int(answer.get("num_invalid_entries") or 0)
        if invalid:
            log.warning("Audience %s: the platform found %d of %d rows invalid", audience, invalid, len(rows))
        return answer

    def test_connection(self) -> tuple[bool, str]:
        """Whether the connection names the API and an access token."""
        try:
            url = self.base_url
        except ValueError as exc:
            return False, str(exc)
        return bool(self._connection.password), f"API {url}"


def _error_message(response: requests.Response) -> str:
    """The platform's error message (Graph API: ``{"error": {"message": ...}}``), which names no member."""
    try:
        error = response.json().get("error")
    except ValueError:
        return response.reason or ""
    if isinstance(error, dict):
        return str(error.get("message") or "")
    return str(error or response.reason or "")
