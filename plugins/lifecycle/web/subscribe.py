"""Subscription capture with double opt-in.

- ``GET /subscribe?form=<id>``: the signup form (plain HTML, no JavaScript, every field labelled),
  to link to or embed in an iframe.
- ``POST /subscribe`` (form-encoded or JSON: ``email``, ``form``, ``version``, ``consent``): records
  a pending subscription with its proof (form and version, the consent text, the time, the IP
  address where ``capture.record_ip`` allows) and emails a signed confirmation link. The answer is
  the same whether or not the address is known. Rate limited per IP and per address (429).
- ``GET /subscribe/confirm?token=...`` shows a button; ``POST`` with the same token grants the
  consent (a link scanner that only fetches the page confirms nothing). A forged link is refused
  (400), an expired one (410) and a used one (409), each with a page saying so.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from lifecycle import config
from lifecycle.channels.base import Subscription
from lifecycle.channels.retry import ProviderError
from lifecycle.channels.sendgrid import Recipient, SendGridHook
from lifecycle.engine import capture
from lifecycle.messages.links import (
    CONFIRM_PATH,
    SUBSCRIBE_PATH,
    ExpiredToken,
    InvalidToken,
    PublicLinks,
    verify_confirmation_token,
)
from lifecycle.model.db import get_engine, state_url, utc_naive
from lifecycle.web.webhooks import BodyTooLarge, page, read_bounded

log = logging.getLogger(__name__)
router = APIRouter()

SUBSCRIBE_MAX_BODY = 8 * 1024
CONFIRMATION_CATEGORY = "lifecycle-confirm"
_TRUE = {"yes", "on", "true", "1"}
_PENDING_TEXT = (
    "If the address can receive our emails, a message with a confirmation link is on its way. "
    "You are subscribed once you use that link."
)


def _now() -> datetime:
    return utc_naive(datetime.now(UTC))


@dataclass(frozen=True)
class _Request:
    """A subscription request as sent, from a form or JSON."""

    email: str
    form_id: str
    version: str
    consent: bool
    ip: str | None
    wants_json: bool


def _form_page(form_id: str, form: config.ConsentForm, problem: str = "", status_code: int = 200) -> HTMLResponse:
    alert = f'<p role="alert">{html.escape(problem)}</p>' if problem else ""
    body = (
        f'{alert}<form method="post" action="{html.escape(SUBSCRIBE_PATH.lstrip("/"))}">'
        f'<input type="hidden" name="form" value="{html.escape(form_id)}">'
        f'<input type="hidden" name="version" value="{html.escape(form.version)}">'
        '<p><label for="email">Email address</label><br>'
        '<input type="email" id="email" name="email" required autocomplete="email" size="30"></p>'
        '<div class="choice"><input type="checkbox" id="consent" name="consent" value="yes" required>'
        f'<label for="consent">{html.escape(form.consent_text)}</label></div>'
        '<button type="submit">Subscribe</button></form>'
    )
    return page(form.label, body, status_code)


@router.get(SUBSCRIBE_PATH, response_class=HTMLResponse)
def subscribe_form(form: str = "") -> HTMLResponse:
    """The signup form of ``form`` (an id under ``capture.forms`` in the policy)."""
    forms = config.load_policy().capture.forms
    if form not in forms:
        return page("Form not found", "<p>There is no signup form with that name.</p>", 404)
    return _form_page(form, forms[form])


async def _read_request(request: Request) -> _Request | Response:
    try:
        body = await read_bounded(request, SUBSCRIBE_MAX_BODY)
    except BodyTooLarge:
        return JSONResponse({"detail": f"body over {SUBSCRIBE_MAX_BODY} bytes"}, status_code=413)
    ip = request.client.host if request.client else None
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
        try:
            data = json.loads(body)
        except ValueError:
            return JSONResponse({"detail": "body is not JSON"}, status_code=400)
        if not isinstance(data, dict):
            return JSONResponse({"detail": "body is not a JSON object"}, status_code=400)
        consent = data.get("consent") is True or str(data.get("consent", "")).lower() in _TRUE
        fields = {key: str(data.get(key) or "") for key in ("email", "form", "version")}
        return _Request(fields["email"], fields["form"], fields["version"], consent, ip, True)
    form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=20))
    consent = form.get("consent", "").lower() in _TRUE
    return _Request(form.get("email", ""), form.get("form", ""), form.get("version", ""), consent, ip, False)


def _refused(req: _Request, form: config.ConsentForm | None, problem: str, status_code: int) -> Response:
    if req.wants_json:
        return JSONResponse({"detail": problem}, status_code=status_code)
    if form is None:
        return page("Form not found", f"<p>{html.escape(problem)}</p>", status_code)
    return _form_page(req.form_id, form, problem, status_code)


def _send_confirmation(address: str, policy: config.Policy, form: config.ConsentForm, url: str) -> None:
    subject, body, text = capture.confirmation_email(policy.brand, form, url)
    hook = SendGridHook()
    mail = hook.build_mail(
        subject=subject,
        html=body,
        text=text,
        recipients=[Recipient(address)],
        categories=(CONFIRMATION_CATEGORY,),
        subscription=Subscription(marketing=False),
    )
    hook.send(mail)


def _subscribe(req: _Request) -> Response:
    policy = config.load_policy()
    rules = policy.capture
    form = rules.forms.get(req.form_id)
    if form is None:
        return _refused(req, None, "There is no signup form with that name.", 404)
    if req.version != form.version:
        return _refused(req, form, "This form has changed since it was loaded. Please reload it and try again.", 409)
    if not req.consent:
        return _refused(req, form, "Tick the box to agree, or you cannot be subscribed.", 400)
    address = capture.normalise_email(req.email)
    if address is None:
        return _refused(req, form, "Enter a valid email address, such as name@example.com.", 400)
    links = PublicLinks.load()
    now = _now()
    key = capture.ip_key(links.secret, req.ip) if req.ip else None
    proof = capture.Proof(req.form_id, form.version, form.consent_text, now, req.ip if rules.record_ip else None)
    with get_engine(state_url()).begin() as conn:
        if capture.rate_limited(conn, address, key, now, rules):
            log.warning("Subscription refused: rate limit (form %s)", req.form_id)
            return _refused(req, form, "Too many requests. Please try again later.", 429)
        capture_id = capture.record_pending(conn, address, proof, key)
    try:
        _send_confirmation(address, policy, form, links.confirmation_url(capture_id, now + rules.confirm_within))
    except (ProviderError, ValueError) as exc:
        log.error("Subscription %s: the confirmation email was not sent: %s", capture_id, exc)
    log.info("Subscription %s pending confirmation (form %s)", capture_id, req.form_id)
    if req.wants_json:
        return JSONResponse({"status": "pending", "detail": _PENDING_TEXT}, status_code=202)
    return page("Check your inbox", f'<p role="status">{html.escape(_PENDING_TEXT)}</p>')


@router.post(SUBSCRIBE_PATH)
async def subscribe(request: Request) -> Response:
    """Record a pending subscription with its proof and send its confirmation link."""
    req = await _read_request(request)
    if isinstance(req, Response):
        return req
    return await run_in_threadpool(_subscribe, req)


def _verify(token: str) -> int | HTMLResponse:
    try:
        return verify_confirmation_token(PublicLinks.load().secret, token, _now())
    except ExpiredToken:
        return page(
            "Link expired",
            "<p>This confirmation link has expired. Subscribe again to get a new one.</p>",
            410,
        )
    except InvalidToken:
        return page("Link not valid", "<p>This confirmation link is not valid. Use the link from the email.</p>", 400)


@router.get(CONFIRM_PATH, response_class=HTMLResponse)
def confirm_page(token: str = "") -> HTMLResponse:
    """The page a confirmation link opens: one button that confirms (nothing changes until it is pressed)."""
    verified = _verify(token)
    if isinstance(verified, HTMLResponse):
        return verified
    action = f"{CONFIRM_PATH.rsplit('/', 1)[-1]}?{urlencode({'token': token})}"
    body = (
        f'<form method="post" action="{html.escape(action)}"><p>Press the button to confirm your subscription.</p>'
        '<button type="submit">Confirm my subscription</button></form>'
    )
    return page("Confirm your subscription", body)


def _confirm(capture_id: int) -> HTMLResponse:
    with get_engine(state_url()).begin() as conn:
        outcome = capture.confirm(conn, capture_id, _now())
    if outcome is capture.Confirmation.ALREADY_USED:
        log.warning("Subscription %s: confirmation link used again", capture_id)
        return page("Link already used", "<p>This confirmation link has already been used.</p>", 409)
    if outcome is capture.Confirmation.UNKNOWN:
        return page("Link not valid", "<p>This confirmation link is not valid. Use the link from the email.</p>", 400)
    log.info("Subscription %s confirmed", capture_id)
    return page("You are subscribed", '<p role="status">Thank you: your subscription is confirmed.</p>')


@router.post(CONFIRM_PATH, response_class=HTMLResponse)
async def confirm(token: str = "") -> HTMLResponse:
    """Grant the subscription a confirmation link is for, once."""
    verified = _verify(token)
    if isinstance(verified, HTMLResponse):
        return verified
    return await run_in_threadpool(_confirm, verified)
