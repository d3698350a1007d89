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

The pages and the confirmation email are in the browser's language (``Accept-Language``, or
``?lang=``; :mod:`lifecycle.messages.i18n`): the form carries the language it was shown in, the
email is written in it and its link carries it to the confirmation pages.
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
from lifecycle.messages import i18n
from lifecycle.messages.links import (
    CONFIRM_PATH,
    SUBSCRIBE_PATH,
    ExpiredToken,
    InvalidToken,
    PublicLinks,
    verify_confirmation_token,
)
from lifecycle.model.db import get_engine, state_url, utc_naive
from lifecycle.web.webhooks import BodyTooLarge, page, read_bounded, request_language, text_page

log = logging.getLogger(__name__)
router = APIRouter()

SUBSCRIBE_MAX_BODY = 8 * 1024
CONFIRMATION_CATEGORY = "lifecycle-confirm"
_TRUE = {"yes", "on", "true", "1"}


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
    language: str = i18n.DEFAULT


def _form_page(
    form_id: str, form: config.ConsentForm, language: str, problem: str = "", status_code: int = 200
) -> HTMLResponse:
    """The signup form in ``language``, which it sends back (``lang``) for the confirmation email;
    ``problem`` is a catalogue key, said in an alert above the form."""
    alert = f'<p role="alert">{html.escape(i18n.text(language, problem))}</p>' if problem else ""
    body = (
        f'{alert}<form method="post" action="{html.escape(SUBSCRIBE_PATH.lstrip("/"))}">'
        f'<input type="hidden" name="form" value="{html.escape(form_id)}">'
        f'<input type="hidden" name="version" value="{html.escape(form.version)}">'
        f'<input type="hidden" name="lang" value="{html.escape(language)}">'
        f'<p><label for="email">{html.escape(i18n.text(language, "email_label"))}</label><br>'
        '<input type="email" id="email" name="email" required autocomplete="email" size="30"></p>'
        '<div class="choice"><input type="checkbox" id="consent" name="consent" value="yes" required>'
        f'<label for="consent">{html.escape(form.consent_text)}</label></div>'
        f'<button type="submit">{html.escape(i18n.text(language, "subscribe_button"))}</button></form>'
    )
    return page(form.label, body, status_code, language)


@router.get(SUBSCRIBE_PATH, response_class=HTMLResponse)
def subscribe_form(request: Request, form: str = "", lang: str = "") -> HTMLResponse:
    """The signup form of ``form`` (an id under ``capture.forms`` in the policy)."""
    language = request_language(request, lang)
    forms = config.load_policy().capture.forms
    if form not in forms:
        return text_page(language, "form_not_found_title", "form_not_found", 404)
    return _form_page(form, forms[form], language)


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
        fields = {key: str(data.get(key) or "") for key in ("email", "form", "version", "lang")}
        language = _language(request, fields["lang"])
        return _Request(fields["email"], fields["form"], fields["version"], consent, ip, True, language)
    form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=20))
    consent = form.get("consent", "").lower() in _TRUE
    language = _language(request, form.get("lang", ""))
    return _Request(form.get("email", ""), form.get("form", ""), form.get("version", ""), consent, ip, False, language)


def _language(request: Request, sent: str) -> str:
    """The language of a subscription request: the one its form was shown in (``lang``), else the
    request's ``?lang=`` or ``Accept-Language``."""
    return i18n.language_of(sent) or request_language(request, request.query_params.get("lang", ""))


def _refused(req: _Request, form: config.ConsentForm | None, problem: str, status_code: int) -> Response:
    """The answer that refuses a request; ``problem`` is a catalogue key."""
    if req.wants_json:
        return JSONResponse({"detail": i18n.text(req.language, problem)}, status_code=status_code)
    if form is None:
        return text_page(req.language, "form_not_found_title", problem, status_code)
    return _form_page(req.form_id, form, req.language, problem, status_code)


def _confirmation_url(links: PublicLinks, capture_id: int, expires_at: datetime, language: str) -> str:
    """The signed confirmation link, carrying the form's language (``lang``) to its pages."""
    url = links.confirmation_url(capture_id, expires_at)
    return url if language == i18n.DEFAULT else f"{url}&{urlencode({'lang': language})}"


def _send_confirmation(address: str, policy: config.Policy, form: config.ConsentForm, url: str, language: str) -> None:
    subject, body, text = capture.confirmation_email(policy.brand, form, url, language)
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
        return _refused(req, None, "form_not_found", 404)
    if req.version != form.version:
        return _refused(req, form, "form_changed", 409)
    if not req.consent:
        return _refused(req, form, "consent_required", 400)
    address = capture.normalise_email(req.email)
    if address is None:
        return _refused(req, form, "email_invalid", 400)
    links = PublicLinks.load()
    now = _now()
    key = capture.ip_key(links.secret, req.ip) if req.ip else None
    proof = capture.Proof(req.form_id, form.version, form.consent_text, now, req.ip if rules.record_ip else None)
    with get_engine(state_url()).begin() as conn:
        if capture.rate_limited(conn, address, key, now, rules):
            log.warning("Subscription refused: rate limit (form %s)", req.form_id)
            return _refused(req, form, "rate_limited", 429)
        capture_id = capture.record_pending(conn, address, proof, key)
    try:
        url = _confirmation_url(links, capture_id, now + rules.confirm_within, req.language)
        _send_confirmation(address, policy, form, url, req.language)
    except (ProviderError, ValueError) as exc:
        log.error("Subscription %s: the confirmation email was not sent: %s", capture_id, exc)
    log.info("Subscription %s pending confirmation (form %s, %s)", capture_id, req.form_id, req.language)
    if req.wants_json:
        return JSONResponse({"status": "pending", "detail": i18n.text(req.language, "pending")}, status_code=202)
    return text_page(req.language, "pending_title", "pending", role="status")


@router.post(SUBSCRIBE_PATH)
async def subscribe(request: Request) -> Response:
    """Record a pending subscription with its proof and send its confirmation link."""
    req = await _read_request(request)
    if isinstance(req, Response):
        return req
    return await run_in_threadpool(_subscribe, req)


def _verify(token: str, language: str) -> int | HTMLResponse:
    try:
        return verify_confirmation_token(PublicLinks.load().secret, token, _now())
    except ExpiredToken:
        return text_page(language, "link_expired_title", "link_expired", 410)
    except InvalidToken:
        return text_page(language, "link_invalid_title", "confirm_link_invalid", 400)


@router.get(CONFIRM_PATH, response_class=HTMLResponse)
def confirm_page(request: Request, token: str = "", lang: str = "") -> HTMLResponse:
    """The page a confirmation link opens: one button that confirms (nothing changes until it is
    pressed). In the link's language (``lang``, the form's), else the browser's."""
    language = request_language(request, lang)
    verified = _verify(token, language)
    if isinstance(verified, HTMLResponse):
        return verified
    query = {"token": token} | ({"lang": language} if i18n.language_of(lang) else {})
    action = f"{CONFIRM_PATH.rsplit('/', 1)[-1]}?{urlencode(query)}"
    body = (
        f'<form method="post" action="{html.escape(action)}">'
        f"<p>{html.escape(i18n.text(language, 'confirm_prompt'))}</p>"
        f'<button type="submit">{html.escape(i18n.text(language, "confirm_button"))}</button></form>'
    )
    return page(i18n.text(language, "confirm_title"), body, language=language)


def _confirm(capture_id: int, language: str) -> HTMLResponse:
    with get_engine(state_url()).begin() as conn:
        outcome = capture.confirm(conn, capture_id, _now())
    if outcome is capture.Confirmation.ALREADY_USED:
        log.warning("Subscription %s: confirmation link used again", capture_id)
        return text_page(language, "link_used_title", "link_used", 409)
    if outcome is capture.Confirmation.UNKNOWN:
        return text_page(language, "link_invalid_title", "confirm_link_invalid", 400)
    log.info("Subscription %s confirmed", capture_id)
    return text_page(language, "confirmed_title", "confirmed", role="status")


@router.post(CONFIRM_PATH, response_class=HTMLResponse)
async def confirm(request: Request, token: str = "", lang: str = "") -> HTMLResponse:
    """Grant the subscription a confirmation link is for, once."""
    language = request_language(request, lang)
    verified = _verify(token, language)
    if isinstance(verified, HTMLResponse):
        return verified
    return await run_in_threadpool(_confirm, verified, language)
