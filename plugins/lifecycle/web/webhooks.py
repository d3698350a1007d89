"""Provider webhooks and the unsubscribe page.

- ``POST /webhooks/sendgrid``: SendGrid Event Webhook batches, ECDSA-verified with the public key
  in ``sendgrid_default`` extra ``webhook_public_key``; signatures older than ten minutes are stale.
- ``POST /webhooks/twilio/status`` and ``/webhooks/twilio/inbound``: Twilio status callbacks and
  inbound messages, verified with the ``twilio_default`` Auth Token against the public URL
  (``lifecycle_default`` host + path, else the URL the request arrived on).
- ``GET /unsubscribe?token=...`` opens the preference centre (the contact's topics and channels, a
  plain form posted to ``/preferences?token=...``); ``POST`` is the RFC 8058 one-click, from the
  message's topic when its program has one, else from the channel's marketing. These pages speak the
  contact's language (``contacts.locale``; :mod:`lifecycle.messages.i18n`), ``?lang=`` overriding it.

A request that fails verification gets 403 and changes nothing; a route whose provider
connection is not configured answers 503 (the provider retries later) and logs the connection's
name. Every accepted event goes through :mod:`lifecycle.engine.feedback` in one transaction per
request.

This app runs inside Airflow's api-server, beside its UI and APIs, so a body is bounded before it
is read: a request without its signature header is refused (403) unread, and a body over its
route's limit (:data:`TWILIO_MAX_BODY`, :data:`SENDGRID_MAX_BODY`) gets 413, whether its
Content-Length says so or it streams past the limit. A Twilio form must be one Twilio could have
sent (:mod:`lifecycle.web.twilio_forms`); a SendGrid event that cannot be read is logged and
skipped, and the rest of its batch recorded.
"""

from __future__ import annotations

import binascii
import html
import json
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode

from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowNotFoundException
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from lifecycle import config
from lifecycle.channels.sendgrid import SendGridHook
from lifecycle.channels.twilio import TwilioHook
from lifecycle.engine import preferences
from lifecycle.engine.feedback import (
    FeedbackEvent,
    apply_events,
    sendgrid_events,
    twilio_inbound_event,
    twilio_status_event,
    unsubscribe_event,
)
from lifecycle.messages import i18n
from lifecycle.messages.links import (
    MESSAGE_ID_PARAM,
    PREFERENCES_PATH,
    SENDGRID_EVENTS_PATH,
    TEST_COPY_UNSUBSCRIBE_PATH,
    TWILIO_INBOUND_PATH,
    TWILIO_STATUS_PATH,
    UNSUBSCRIBE_PATH,
    InvalidToken,
    PublicLinks,
    UnsubscribeToken,
    verify_unsubscribe_token,
)
from lifecycle.model.db import get_engine, state_url
from lifecycle.web import guards
from lifecycle.web.guards import BodyTooLarge, read_bounded
from lifecycle.web.twilio_forms import MAX_FIELDS, FormKind, form_problem

log = logging.getLogger(__name__)
router = APIRouter()

SIGNATURE_MAX_AGE = timedelta(minutes=10)
TWILIO_MAX_BODY = 1024 * 1024  # a form of at most 1,600 characters of text, media URLs and metadata
SENDGRID_MAX_BODY = 5 * 1024 * 1024  # SendGrid posts batches of up to a few MiB
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
PREFERENCES_MAX_BODY = 16 * 1024  # a few checkboxes


def _too_large(limit: int) -> JSONResponse:
    return guards.too_large(limit, "webhook")


def _forbidden(why: str) -> JSONResponse:
    log.warning("Rejected webhook: %s", why)
    return JSONResponse({"detail": why}, status_code=403)


def _not_configured(conn_id: str, what: str = "is not configured") -> JSONResponse:
    return guards.not_configured(conn_id, "Webhook", what)


def _record(events: list[FeedbackEvent], received_at: datetime) -> int:
    with get_engine(state_url()).begin() as conn:
        return apply_events(conn, events, received_at)


def _receive_sendgrid(body: str, signature: str, timestamp: str) -> Response:
    now = datetime.now(UTC)
    try:
        signed_at = datetime.fromtimestamp(int(timestamp), UTC)
    except (ValueError, OverflowError):
        return _forbidden("sendgrid timestamp malformed")
    if abs(now - signed_at) > SIGNATURE_MAX_AGE:
        return _forbidden("sendgrid signature is stale")
    connection = guards.connection(SendGridHook.default_conn_name)
    if connection is None:
        return _not_configured(SendGridHook.default_conn_name)
    public_key = connection.extra_dejson.get("webhook_public_key")
    if not public_key:
        return _not_configured(SendGridHook.default_conn_name, "has no webhook_public_key")
    try:
        valid = EventWebhook(public_key).verify_signature(body, signature, timestamp)
    except (ValueError, binascii.Error):
        valid = False
    if not valid:
        return _forbidden("sendgrid signature does not match")
    try:
        batch = json.loads(body)
    except ValueError:
        return JSONResponse({"detail": "body is not JSON"}, status_code=400)
    if not isinstance(batch, list):
        return JSONResponse({"detail": "body is not a list of events"}, status_code=400)
    events, problems = sendgrid_events(batch, _our_group(connection), _topic_groups())
    for problem in problems:
        log.warning("SendGrid webhook: skipped %s", problem)
    new = _record(events, now)
    log.info("SendGrid webhook: %d events, %d new, %d unreadable", len(batch), new, len(problems))
    return JSONResponse({"received": len(batch), "new": new, "unreadable": len(problems)})


def _topic_groups() -> dict[int, str]:
    """The policy's topics by SendGrid unsubscribe group (none when the policy cannot be read)."""
    try:
        return config.load_policy().topic_groups()
    except config.ConfigError as exc:
        log.error("SendGrid webhook: topic groups unknown, the policy cannot be read: %s", exc)
        return {}


def _our_group(connection: Connection) -> int | None:
    """Our unsubscribe group (``asm_group_id`` in the connection's extra), if it names one."""
    group = str(connection.extra_dejson.get("asm_group_id") or "")
    return int(group) if group.isdigit() else None


@router.post(SENDGRID_EVENTS_PATH)
async def sendgrid_webhook(request: Request) -> Response:
    """SendGrid Event Webhook: verify the signature, then record the batch."""
    signature = request.headers.get(EventWebhookHeader.SIGNATURE)
    timestamp = request.headers.get(EventWebhookHeader.TIMESTAMP)
    if not signature or not timestamp:
        return _forbidden("sendgrid signature headers missing")
    try:
        body = (await read_bounded(request, SENDGRID_MAX_BODY)).decode("utf-8", errors="replace")
    except BodyTooLarge:
        return _too_large(SENDGRID_MAX_BODY)
    return await run_in_threadpool(_receive_sendgrid, body, signature, timestamp)


def _public_url(path: str, query: str, request_url: str) -> str:
    """The URL Twilio signed: the app's public base URL + path, else the URL as received."""
    try:
        links = PublicLinks.load()
    except (AirflowNotFoundException, ValueError):
        return request_url
    return links.url(path) + (f"?{query}" if query else "")


def _twilio_verified(
    token: str, path: str, request_url: str, query: str, params: dict[str, str], signature: str
) -> bool:
    url = _public_url(path, query, request_url)
    return bool(signature and token) and RequestValidator(token).validate(url, params, signature)


@dataclass(frozen=True)
class _TwilioRequest:
    """A Twilio webhook as received: its URL, query, form parameters and signature."""

    url: str
    query: str
    params: dict[str, str]
    signature: str


async def _twilio_request(request: Request) -> _TwilioRequest | Response:
    """The signed form, or the answer for a request refused before it is read or parsed."""
    signature = request.headers.get(TWILIO_SIGNATURE_HEADER, "")
    if not signature:
        return _forbidden("twilio signature header missing")
    try:
        body = (await read_bounded(request, TWILIO_MAX_BODY)).decode("utf-8", errors="replace")
    except BodyTooLarge:
        return _too_large(TWILIO_MAX_BODY)
    try:
        pairs = parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        return _forbidden(f"twilio form has more than {MAX_FIELDS} fields")
    params = dict(pairs)
    if len(params) != len(pairs):
        return _forbidden("twilio form repeats a parameter")
    return _TwilioRequest(str(request.url), request.url.query, params, signature)


def _verified_form(kind: FormKind, path: str, twilio: _TwilioRequest) -> Response | None:
    """None when the request is Twilio's own, else the answer that refuses it."""
    connection = guards.connection(TwilioHook.default_conn_name)
    if connection is None:
        return _not_configured(TwilioHook.default_conn_name)
    token = connection.password or ""
    if not _twilio_verified(token, path, twilio.url, twilio.query, twilio.params, twilio.signature):
        return _forbidden("twilio signature does not match")
    problem = form_problem(kind, twilio.params)
    if problem:
        return _forbidden(f"twilio form is not one twilio sends: {problem}")
    return None


def _receive_twilio_status(twilio: _TwilioRequest) -> Response:
    now = datetime.now(UTC)
    refused = _verified_form("status", TWILIO_STATUS_PATH, twilio)
    if refused is not None:
        return refused
    message_id = dict(parse_qsl(twilio.query)).get(MESSAGE_ID_PARAM)
    event = twilio_status_event(twilio.params, now, int(message_id) if message_id and message_id.isdigit() else None)
    _record([event], now)
    return Response(status_code=204)


@router.post(TWILIO_STATUS_PATH)
async def twilio_status(request: Request) -> Response:
    """Twilio status callback: verify the signature, then move the message's status forward."""
    twilio = await _twilio_request(request)
    if isinstance(twilio, Response):
        return twilio
    return await run_in_threadpool(_receive_twilio_status, twilio)


def _receive_twilio_inbound(twilio: _TwilioRequest) -> Response:
    now = datetime.now(UTC)
    refused = _verified_form("inbound", TWILIO_INBOUND_PATH, twilio)
    if refused is not None:
        return refused
    event = twilio_inbound_event(twilio.params, now)
    _record([event], now)
    log.info("Twilio inbound message %s: %s", event.event_id, event.event_type)
    return Response(str(MessagingResponse()), media_type="application/xml")


@router.post(TWILIO_INBOUND_PATH)
async def twilio_inbound(request: Request) -> Response:
    """Twilio inbound message: an opt-out opts the sender out of SMS, START back in."""
    twilio = await _twilio_request(request)
    if isinstance(twilio, Response):
        return twilio
    return await run_in_threadpool(_receive_twilio_inbound, twilio)


_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title><style>
body{{font-family:sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#1a1a1a}}
fieldset{{border:1px solid #767676;border-radius:6px;margin:1rem 0;padding:.5rem 1rem 1rem}}
legend{{font-weight:bold;padding:0 .25rem}}
.choice{{display:flex;gap:.6rem;align-items:flex-start;margin:.6rem 0}}
.choice input{{width:1.3rem;height:1.3rem;margin-top:.15rem}}
.hint{{display:block;color:#4a4a4a;font-size:.9rem}}
button{{font-size:1rem;padding:.5rem 1.1rem;border-radius:6px;border:2px solid #1f4fa3;background:#1f4fa3;color:#fff}}
button.secondary{{background:#fff;color:#1f4fa3}}
:focus-visible{{outline:3px solid #c2410c;outline-offset:2px}}
[role=status]{{background:#e7f5ec;border-left:4px solid #15803d;padding:.5rem 1rem}}
</style></head>
<body><main><h1>{title}</h1>{body}</main></body></html>"""


def page(title: str, body_html: str, status_code: int = 200, language: str = i18n.DEFAULT) -> HTMLResponse:
    """One of the app's plain, accessible pages (the preference centre's, subscription capture's), in
    ``language`` (its ``<html lang>``)."""
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body_html, lang=html.escape(language)),
        status_code=status_code,
        headers={"Content-Language": language, "Vary": "Accept-Language"},
    )


def text_page(language: str, title_key: str, text_key: str, status_code: int = 200, role: str = "") -> HTMLResponse:
    """A page of one paragraph, both from the catalogue; ``role`` (``status``, ``alert``) announces it."""
    attribute = f' role="{role}"' if role else ""
    paragraph = f"<p{attribute}>{html.escape(i18n.text(language, text_key))}</p>"
    return page(i18n.text(language, title_key), paragraph, status_code, language)


def request_language(request: Request, lang: str = "") -> str:
    """The language of a page that does not know the person: ``?lang=``, else ``Accept-Language``."""
    return i18n.negotiate(override=lang, accept_language=request.headers.get("accept-language"))


def _verify_token(token: str, language: str) -> UnsubscribeToken | HTMLResponse:
    """The token's contents, or the error page for a link that is not ours."""
    secret = PublicLinks.load().secret
    try:
        return verify_unsubscribe_token(secret, token)
    except InvalidToken:
        return text_page(language, "link_invalid_title", "unsubscribe_link_invalid", 400)


_TEST_COPY_PAGE = (
    "<p>This was a test copy of a Lifecycle message, sent to a test recipient. Its unsubscribe link "
    "does nothing: no one has been unsubscribed.</p>"
)


@router.get(TEST_COPY_UNSUBSCRIBE_PATH, response_class=HTMLResponse)
@router.post(TEST_COPY_UNSUBSCRIBE_PATH, response_class=HTMLResponse)
def unsubscribe_from_test_copy() -> HTMLResponse:
    """Where a test copy's unsubscribe link leads: it says so and changes nothing."""
    return page("Test copy", _TEST_COPY_PAGE)


def _choice_html(kind: str, choice: preferences.Choice, language: str) -> str:
    """One checkbox with its label (and its description, read out with it); a topic that cannot be
    opted out of is shown checked and disabled, saying why. A channel's label is in ``language``; a
    topic's is the policy's (:func:`_in_language`)."""
    key = html.escape(choice.key)
    label = choice.label
    if kind == "channel":
        label = i18n.text(language, "channel_choice", channel=i18n.channel_name(language, choice.key))
    always = i18n.text(language, "always_sent")
    hint = choice.description if choice.optional else f"{choice.description} {always}".strip()
    described = f' aria-describedby="{kind}-{key}-hint"' if hint else ""
    state = (" checked" if choice.subscribed or not choice.optional else "") + ("" if choice.optional else " disabled")
    return (
        f'<div class="choice"><input type="checkbox" id="{kind}-{key}" name="{kind}" value="{key}"{state}{described}>'
        f'<label for="{kind}-{key}">{html.escape(label)}'
        + (f'<span class="hint" id="{kind}-{key}-hint">{html.escape(hint)}</span>' if hint else "")
        + "</label></div>"
    )


@dataclass(frozen=True)
class _Visit:
    """How a preference-centre request asked for its page: the link's token, its ``?lang=`` (empty:
    none) and the browser's ``Accept-Language``."""

    token: str
    lang: str
    accept_language: str | None

    @classmethod
    def of(cls, request: Request, token: str, lang: str) -> _Visit:
        return cls(token, lang, request.headers.get("accept-language"))

    @property
    def fallback(self) -> str:
        """The language before the contact is known (a link that is not valid)."""
        return i18n.negotiate(override=self.lang, accept_language=self.accept_language)

    def language(self, contact_locale: object) -> str:
        return i18n.negotiate(override=self.lang, contact_locale=contact_locale, accept_language=self.accept_language)

    @property
    def query(self) -> str:
        """The query the page's forms post to: the token, and ``lang`` when one was asked for."""
        chosen = i18n.language_of(self.lang)
        return "?" + urlencode({"token": self.token} | ({"lang": chosen} if chosen else {}))


def _in_language(choice: preferences.Choice, policy: config.Policy, language: str) -> preferences.Choice:
    """A topic's line with the policy's label and description in ``language``, where it has them."""
    topic = policy.topics.get(choice.key)
    if topic is None:
        return choice
    label, description = topic.words(language)
    return replace(choice, label=label, description=description)


def _preference_centre(visit: _Visit, parsed: UnsubscribeToken, saved: bool = False) -> HTMLResponse:
    policy = config.load_policy()
    with get_engine(state_url()).connect() as conn:
        prefs = preferences.read_preferences(conn, parsed, policy)
        language = visit.language(preferences.contact_locale(conn, parsed.contact_id))
    query = html.escape(visit.query)
    topic = policy.topics.get(prefs.topic) if prefs.topic else None
    channel = i18n.channel_name(language, parsed.channel)
    what = (
        i18n.text(language, "one_click_topic", topic=topic.words(language)[0])
        if topic
        else i18n.text(language, "one_click_channel", channel=channel)
    )
    body = f'<p role="status">{html.escape(i18n.text(language, "preferences_saved"))}</p>' if saved else ""
    body += (
        f'<form method="post" action="{query}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        f"<p>{html.escape(what)}</p>"
        f'<button type="submit" class="secondary">{html.escape(i18n.text(language, "unsubscribe_button"))}</button>'
        "</form>"
        f'<form method="post" action="{html.escape(PREFERENCES_PATH)}{query}">'
        f"<p>{html.escape(i18n.text(language, 'choose'))}</p>"
    )
    if prefs.topics:
        body += f"<fieldset><legend>{html.escape(i18n.text(language, 'topics_legend'))}</legend>"
        topics = [_in_language(c, policy, language) for c in prefs.topics]
        body += "".join(_choice_html("topic", c, language) for c in topics) + "</fieldset>"
    body += f"<fieldset><legend>{html.escape(i18n.text(language, 'channels_legend'))}</legend>"
    body += "".join(_choice_html("channel", c, language) for c in prefs.channels)
    body += f'</fieldset><button type="submit">{html.escape(i18n.text(language, "save_button"))}</button></form>'
    return page(i18n.text(language, "preferences_title"), body, language=language)


@router.get(UNSUBSCRIBE_PATH, response_class=HTMLResponse)
def unsubscribe_page(request: Request, token: str = "", lang: str = "") -> HTMLResponse:
    """The preference centre an unsubscribe link opens; nothing changes until a form is sent."""
    visit = _Visit.of(request, token, lang)
    parsed = _verify_token(token, visit.fallback)
    if isinstance(parsed, HTMLResponse):
        return parsed
    return _preference_centre(visit, parsed)


@router.post(PREFERENCES_PATH, response_class=HTMLResponse)
async def save_preferences(request: Request, token: str = "", lang: str = "") -> HTMLResponse:
    """The preference centre's form: every topic and channel whose box changed is opted out of or
    back into, each with its own row (source ``preference_centre``, the link as proof)."""
    visit = _Visit.of(request, token, lang)
    parsed = _verify_token(token, visit.fallback)
    if isinstance(parsed, HTMLResponse):
        return parsed
    try:
        body = (await read_bounded(request, PREFERENCES_MAX_BODY)).decode("utf-8", errors="replace")
    except BodyTooLarge:
        return text_page(visit.fallback, "form_too_large_title", "form_too_large", 413)
    form = parse_qsl(body, keep_blank_values=True, max_num_fields=200)
    return await run_in_threadpool(_save_preferences, visit, parsed, form)


def _save_preferences(visit: _Visit, parsed: UnsubscribeToken, form: list[tuple[str, str]]) -> HTMLResponse:
    policy = config.load_policy()
    now = datetime.now(UTC)
    with get_engine(state_url()).connect() as conn:
        prefs = preferences.read_preferences(conn, parsed, policy)
    topics_on = {value for name, value in form if name == "topic"}
    channels_on = {value for name, value in form if name == "channel"}
    events = preferences.changes(prefs, parsed, topics_on, channels_on, now)
    _record(events, now)
    log.info("Preference centre: contact %s changed %d preferences", parsed.contact_id, len(events))
    return _preference_centre(visit, parsed, saved=True)


@router.post(UNSUBSCRIBE_PATH, response_class=HTMLResponse)
def unsubscribe_one_click(request: Request, token: str = "", lang: str = "") -> HTMLResponse:
    """One-click unsubscribe (RFC 8058 ``List-Unsubscribe=One-Click``, or the page's button): from
    the message's topic when its program has one, else from the channel's marketing."""
    visit = _Visit.of(request, token, lang)
    parsed = _verify_token(token, visit.fallback)
    if isinstance(parsed, HTMLResponse):
        return parsed
    now = datetime.now(UTC)
    policy = config.load_policy()
    with get_engine(state_url()).connect() as conn:
        topic = preferences.message_topic(conn, parsed.message_id, policy)
        language = visit.language(preferences.contact_locale(conn, parsed.contact_id))
    _record([unsubscribe_event(parsed, now, topic)], now)
    log.info(
        "Unsubscribed contact %s from %s (message %s)", parsed.contact_id, topic or parsed.channel, parsed.message_id
    )
    done = (
        i18n.text(language, "unsubscribed_topic", topic=policy.topics[topic].words(language)[0])
        if topic
        else i18n.text(language, "unsubscribed_channel", channel=i18n.channel_name(language, parsed.channel))
    )
    return page(i18n.text(language, "unsubscribed_title"), f"<p>{html.escape(done)}</p>", language=language)
