"""The Campaigns page's actions: pause or resume a program, send a test, through Airflow's own REST API.

Each action is a plain HTML form posted to the app (no script), so it works inside Airflow's
iframe, whose sandbox allows forms but no new windows or top-level navigation:

- ``POST /campaigns/{program}/pause`` and ``/resume``: ``PATCH /api/v2/dags/{program}`` with
  ``is_paused``;
- ``POST /campaigns/{program}/test-send`` (``contact``, ``recipients``, ``step``):
  ``POST /api/v2/dags/lifecycle_test_send/dagRuns`` with the program as a param (the safe test send:
  nothing recorded, the program's DAG untouched).

The app calls the API with the signed-in user's own token (the session cookie's JWT, or the
bearer token presented), so Airflow's auth manager decides as it would for the user in Airflow's
UI: a user whose role may not edit the DAG or trigger a run sees Airflow's refusal and its reason.
The API is reached at ``[api] base_url`` when set, else at the address the request came to.

Cross-site requests are refused (403) before anything is called: a form post must come from the
page's own origin (``Sec-Fetch-Site: same-origin``, else a matching ``Origin`` or ``Referer``).
Airflow's session cookie is ``SameSite=Lax`` as well, so another site's form carries no session.
A success answers ``303 See Other`` back to the program's card on the page, which says what was
done; a refusal answers with Airflow's status and a page naming its reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import httpx
from airflow.configuration import conf
from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from lifecycle import config, paths
from lifecycle.airflow.factory import BASE_TAGS, TEST_SEND_DAG
from lifecycle.messages.rendering import environment
from lifecycle.model.db import utc_naive
from lifecycle.web.signin import SignedIn, signed_in_page

API_TIMEOUT_SECONDS = 10.0
PROGRAM_ACTION_PATH = "/campaigns/{program_id}/{action}"
TEST_SEND_PATH = "/campaigns/{program_id}/test-send"
PAUSE, RESUME, TEST_SEND = "pause", "resume", "test_send"
DONE = {PAUSE: "paused", RESUME: "resumed", TEST_SEND: "test send queued"}
RUN_ID = re.compile(r"[A-Za-z0-9_.:+\-]{1,250}")
router = APIRouter()


# --- Airflow's REST API with the user's token ----------------------------------------------------


@dataclass(frozen=True)
class ApiAnswer:
    """What Airflow's REST API answered: its status, body, and the reason when it refused."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status < 300

    @property
    def reason(self) -> str:
        """Airflow's ``detail`` as a sentence (validation errors joined), else the status line."""
        detail = self.body.get("detail") if isinstance(self.body, Mapping) else None
        if isinstance(detail, list):
            return "; ".join(str(d.get("msg", d)) if isinstance(d, Mapping) else str(d) for d in detail)
        if detail:
            return str(detail)
        return f"HTTP {self.status}"


def api_base(request: Request) -> str:
    """Where Airflow's REST API answers: ``[api] base_url``, else the origin the request came to."""
    configured = conf.get("api", "base_url", fallback=None)
    if configured:
        return configured.rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}"


class AirflowApi:
    """Airflow's REST API v2 as the signed-in user: their token, their permissions."""

    def __init__(self, base_url: str, token: str, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url
        self.token = token
        self.transport = transport

    async def _call(self, method: str, path: str, **kwargs: Any) -> ApiAnswer:
        async with httpx.AsyncClient(
            base_url=f"{self.base_url}/api/v2",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=API_TIMEOUT_SECONDS,
            transport=self.transport,
        ) as client:
            try:
                response = await client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                return ApiAnswer(status.HTTP_502_BAD_GATEWAY, {"detail": f"Airflow's API did not answer ({exc})"})
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text[:500]}
        return ApiAnswer(response.status_code, body)

    async def set_paused(self, dag_id: str, paused: bool) -> ApiAnswer:
        """Pause or resume a DAG."""
        return await self._call(
            "PATCH", f"/dags/{dag_id}", params={"update_mask": "is_paused"}, json={"is_paused": paused}
        )

    async def trigger(self, dag_id: str, run_conf: Mapping[str, Any], note: str) -> ApiAnswer:
        """Queue a manual run of a DAG with ``run_conf`` as its params."""
        return await self._call(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(run_conf), "note": note}
        )

    async def paused(self) -> dict[str, bool]:
        """Whether each Lifecycle DAG the user may read is paused (empty when the API cannot be
        asked: then the page offers both pause and resume)."""
        answer = await self._call("GET", "/dags", params={"limit": 1000, "tags": BASE_TAGS})
        if not answer.ok or not isinstance(answer.body, Mapping):
            return {}
        return {d["dag_id"]: bool(d["is_paused"]) for d in answer.body.get("dags", [])}


def api_for(request: Request, signed_in: SignedIn) -> AirflowApi:
    """The REST API as the user who made ``request``."""
    return AirflowApi(api_base(request), signed_in.token)


# --- same-origin check --------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def same_origin(request: Request) -> bool:
    """Whether a form post comes from a page of this server (or of ``[api] base_url``)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if not claimed or claimed == "null":
        return False
    ours = {_origin(str(request.url))}
    if configured := conf.get("api", "base_url", fallback=None):
        ours.add(_origin(configured))
    return _origin(claimed) in ours


def require_same_origin(request: Request) -> None:
    """FastAPI dependency of the forms: 403 for a cross-site post (a bearer-token caller is a
    program sending its own credential, not a browser carrying a cookie)."""
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return
    if not same_origin(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Cross-site form posts are refused")


# --- the actions ----------------------------------------------------------------------------------


def _program(program_id: str) -> config.Program:
    programs, _errors = config.load_all_programs()
    if program_id not in programs:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No valid program {program_id!r}")
    return programs[program_id]


def _back(request: Request, program_id: str, action: str, run_id: str | None = None) -> RedirectResponse:
    query = {"done": action, "program": program_id} | ({"run": run_id} if run_id else {})
    page = request.url_for("campaigns").path
    return RedirectResponse(f"{page}?{urlencode(query)}#{program_id}", status_code=status.HTTP_303_SEE_OTHER)


def refused_page(request: Request, program: config.Program, action: str, answer: ApiAnswer) -> HTMLResponse:
    """What Airflow refused and why, with the way back to the program's card."""
    env = environment(str(paths.templates_dir() / "_web"))
    policy = config.load_policy()
    page = env.get_template("refused.html.j2").render(
        {
            "brand": policy.brand.model_dump(),
            "program": {"id": program.id, "name": program.name},
            "action": action,
            "status": answer.status,
            "reason": answer.reason,
            "back": f"{request.url_for('campaigns').path}#{program.id}",
            "rendered_at": utc_naive(datetime.now(UTC)),
        }
    )
    return HTMLResponse(page, status_code=answer.status, headers={"Cache-Control": "no-store"})


Signed = Annotated[SignedIn, Depends(signed_in_page)]


@router.post(TEST_SEND_PATH, response_class=HTMLResponse, dependencies=[Depends(require_same_origin)])
async def test_send(
    request: Request,
    program_id: str,
    signed_in: Signed,
    contact: Annotated[str, Form(min_length=1, max_length=64)],
    recipients: Annotated[str, Form(min_length=1, max_length=2000)],
    step: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Queue ``lifecycle_test_send`` for this program: what ``contact`` would receive, to
    ``recipients`` (addresses or E.164 numbers, separated by commas, spaces or lines)."""
    program = _program(program_id)
    run_conf = {
        "program": program.id,
        "contact": contact.strip(),
        "recipients": [r for r in re.split(r"[\s,;]+", recipients) if r],
        "step": step.strip() or None,
    }
    answer = await api_for(request, signed_in).trigger(
        TEST_SEND_DAG, run_conf, f"Test send of {program.id} from the Campaigns page"
    )
    if not answer.ok:
        return refused_page(request, program, TEST_SEND, answer)
    run_id = answer.body.get("dag_run_id") if isinstance(answer.body, Mapping) else None
    return _back(
        request, program.id, TEST_SEND, run_id if isinstance(run_id, str) and RUN_ID.fullmatch(run_id) else None
    )


@router.post(PROGRAM_ACTION_PATH, response_class=HTMLResponse, dependencies=[Depends(require_same_origin)])
async def pause_or_resume(request: Request, program_id: str, action: str, signed_in: Signed) -> Response:
    """Pause or resume the program's DAG."""
    if action not in (PAUSE, RESUME):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No action {action!r}")
    program = _program(program_id)
    answer = await api_for(request, signed_in).set_paused(program.id, action == PAUSE)
    if not answer.ok:
        return refused_page(request, program, action, answer)
    return _back(request, program.id, action)
