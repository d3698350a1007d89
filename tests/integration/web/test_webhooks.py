"""The webhook receiver and unsubscribe page: signatures, idempotency and what events change.

Signature checks post through FastAPI's TestClient with a test key pair; the end-to-end tests
run the receiver on a local port and let the provider sandbox post its own signed webhooks.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select
from twilio.request_validator import RequestValidator

from lifecycle.channels.base import OutboundEmail, OutboundSms
from lifecycle.channels.providers import ProviderTransport
from lifecycle.channels.sendgrid import SendGridHook
from lifecycle.channels.twilio import TwilioHook
from lifecycle.devtools.local import connection_json
from lifecycle.engine.dispatch import record_results
from lifecycle.engine.feedback import sms_keyword
from lifecycle.messages.links import make_unsubscribe_url
from lifecycle.model import schema
from lifecycle.model.addresses import to_e164
from lifecycle.sandbox import DEFAULT_TWILIO_TOKEN, SandboxServer
from lifecycle.web import create_app
from tests.conftest import AS_OF
from tests.support.twilio_forms import inbound_form, message_sid, status_form
from tests.unit.channels.test_hooks import FAST, LINK_SECRET, connect_to_sandbox

PUBLIC_BASE = "http://lifecycle.test/lifecycle"
_keys = itertools.count(1)
OUR_GROUP = 42  # sendgrid_default's unsubscribe group
_contact_of: dict[int, str] = {}  # message id -> its contact, for events that name the contact's address


def add_message(engine, contact_id: str, channel: str = "email", status: str = "sent", **fields) -> int:
    """A ledger message as dispatch leaves it after handing it to a transport; by default of a
    program with no topic, so its one-click link unsubscribes from the channel's marketing."""
    row = {
        "idempotency_key": f"k{next(_keys):08d}",
        "program": "broadcast",
        "enrollment_id": 1,
        "entry": 1,
        "step": "hello",
        "step_index": 0,
        "contact_id": contact_id,
        "channel": channel,
        "planned_channel": channel,
        "template": "welcome/hello",
        "status": status,
        "due_at": AS_OF,
        "run_id": "manual__test",
        "planned_at": AS_OF,
    } | fields
    with engine.begin() as conn:
        message_id = conn.execute(insert(schema.messages).values(row)).inserted_primary_key[0]
    _contact_of[message_id] = contact_id
    return message_id


def status_of(engine, message_id: int) -> tuple[str, str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            select(schema.messages.c.status, schema.messages.c.reason).where(schema.messages.c.message_id == message_id)
        ).one()
    return row.status, row.reason


def rows(engine, table, **where) -> list:
    query = select(table).where(*[table.c[name] == value for name, value in where.items()])
    with engine.connect() as conn:
        return list(conn.execute(query).mappings())


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def latest_consent(engine, contact_id: str, channel: str):
    query = (
        select(schema.consents)
        .where(schema.consents.c.contact_id == contact_id, schema.consents.c.channel == channel)
        .order_by(schema.consents.c.captured_at.desc())
    )
    with engine.connect() as conn:
        return conn.execute(query).mappings().first()


class EventSigner:
    """Signs SendGrid Event Webhook bodies the way SendGrid does, with a test key pair."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key(self) -> str:
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def headers(self, body: str, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.key.sign((stamp + body).encode(), ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            "Content-Type": "application/json",
        }


@pytest.fixture
def ledger(crm, db_url, monkeypatch):
    """(engine, CrmBuilder) with the receiver reading that database."""
    monkeypatch.setenv("LIFECYCLE_CRM_URL", db_url)
    return crm


@pytest.fixture
def signer(monkeypatch) -> EventSigner:
    signer = EventSigner()
    connections = {
        "SENDGRID_DEFAULT": connection_json(
            "generic", password="SG.unused", extra={"webhook_public_key": signer.public_key, "asm_group_id": OUR_GROUP}
        ),
        "TWILIO_DEFAULT": connection_json("generic", login="ACtest", password=DEFAULT_TWILIO_TOKEN),
        "LIFECYCLE_DEFAULT": connection_json("generic", host=PUBLIC_BASE, password=LINK_SECRET),
    }
    for conn_id, value in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", value)
    return signer


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        yield test_client


def sg_event(message_id: int, event: str, at: int, **fields) -> dict:
    """A SendGrid event about a message made by :func:`add_message`, at its contact's address
    (the test CRM's ``<contact id>@example.com``)."""
    return {
        "email": f"{_contact_of.get(message_id, 'nobody')}@example.com",
        "timestamp": at,
        "event": event,
        "sg_event_id": f"ev-{message_id}-{event}-{at}",
        "sg_message_id": "xmsg.filterdrecv.0",
        "lifecycle_message_id": str(message_id),
        **fields,
    }


def post_events(client: TestClient, signer: EventSigner, events: list[dict], timestamp: int | None = None):
    body = json.dumps(events)
    return client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body, timestamp))


# --- SendGrid signatures --------------------------------------------------------------------


def test_signed_events_are_recorded_and_move_the_ledger(ledger, signer, client):
    engine, crm = ledger
    contact = crm.contact()
    message = add_message(engine, contact)
    now = int(time.time())

    response = post_events(client, signer, [sg_event(message, "delivered", now), sg_event(message, "open", now)])

    assert response.status_code == 200 and response.json() == {"received": 2, "new": 2, "unreadable": 0}
    assert status_of(engine, message) == ("opened", None)
    [event, _] = rows(engine, schema.provider_events, message_id=message)
    assert event["contact_id"] == contact and event["provider"] == "sendgrid"
    assert "email" not in event["payload"]


@pytest.mark.parametrize("attack", ["forged", "tampered", "stale", "unsigned"])
def test_unverified_sendgrid_requests_are_rejected_and_record_nothing(ledger, signer, client, attack):
    engine, crm = ledger
    contact = crm.contact()
    message = add_message(engine, contact)
    body = json.dumps([sg_event(message, "unsubscribe", int(time.time()))])
    headers = signer.headers(body)
    if attack == "forged":
        headers = EventSigner().headers(body)
    elif attack == "tampered":
        body = body.replace('"unsubscribe"', '"spamreport"')
    elif attack == "stale":
        headers = signer.headers(body, int(time.time()) - 11 * 60)
    else:
        headers = {"Content-Type": "application/json"}

    response = client.post("/webhooks/sendgrid", content=body, headers=headers)

    assert response.status_code == 403
    assert count(engine, schema.provider_events) == 0
    assert count(engine, schema.suppressions) == 0
    assert latest_consent(engine, contact, "email")["status"] == "granted"
    assert status_of(engine, message) == ("sent", None)


def test_duplicate_events_change_nothing_the_second_time(ledger, signer, client):
    engine, crm = ledger
    contact = crm.contact()
    message = add_message(engine, contact)
    events = [sg_event(message, "unsubscribe", int(time.time()))]

    first = post_events(client, signer, events)
    again = post_events(client, signer, events)

    assert first.json()["new"] == 1 and again.json()["new"] == 0
    assert count(engine, schema.provider_events) == 1
    assert len(rows(engine, schema.suppressions, contact_id=contact)) == 1
    assert len(rows(engine, schema.consents, contact_id=contact, channel="email", status="withdrawn")) == 1


def test_an_older_event_arriving_late_never_moves_the_status_back(ledger, signer, client):
    engine, crm = ledger
    message = add_message(engine, crm.contact())
    now = int(time.time())

    post_events(client, signer, [sg_event(message, "open", now)])
    post_events(client, signer, [sg_event(message, "delivered", now - 60), sg_event(message, "processed", now - 90)])
    assert status_of(engine, message) == ("opened", None)

    post_events(client, signer, [sg_event(message, "click", now + 5)])
    assert status_of(engine, message) == ("clicked", None)


def test_bounce_is_final_and_suppresses_the_address(ledger, signer, client):
    engine, crm = ledger
    contact = crm.contact()
    message = add_message(engine, contact)
    now = int(time.time())

    post_events(client, signer, [sg_event(message, "bounce", now, type="bounce", reason="550 <ada@example.com>")])
    post_events(client, signer, [sg_event(message, "delivered", now + 1)])

    assert status_of(engine, message) == ("bounced", "hard bounce")
    [suppression] = rows(engine, schema.suppressions, contact_id=contact)
    assert (suppression["channel"], suppression["reason"]) == ("email", "hard_bounce")
    [event] = rows(engine, schema.provider_events, event_type="bounce")
    assert "ada@example.com" not in json.dumps(event["payload"])
    assert latest_consent(engine, contact, "email")["status"] == "granted"


def test_blocked_bounce_does_not_suppress(ledger, signer, client):
    engine, crm = ledger
    message = add_message(engine, crm.contact())
    post_events(client, signer, [sg_event(message, "bounce", int(time.time()), type="blocked")])
    assert status_of(engine, message) == ("bounced", "blocked")
    assert count(engine, schema.suppressions) == 0


@pytest.mark.parametrize(
    "event, reason, source",
    [
        ("spamreport", "spam_report", "sendgrid_spamreport"),
        ("unsubscribe", "unsubscribed", "sendgrid_unsubscribe"),
    ],
)
def test_opt_outs_suppress_and_withdraw_consent_with_proof(ledger, signer, client, event, reason, source):
    engine, crm = ledger
    contact = crm.contact()
    message = add_message(engine, contact, status="delivered")
    at = int(time.time())

    post_events(client, signer, [sg_event(message, event, at)])

    [suppression] = rows(engine, schema.suppressions, contact_id=contact)
    assert (suppression["channel"], suppression["reason"], suppression["source"]) == ("email", reason, source)
    consent = latest_consent(engine, contact, "email")
    assert (consent["status"], consent["source"], consent["purpose"]) == ("withdrawn", source, "marketing")
    assert consent["proof"] == f"sendgrid:ev-{message}-{event}-{at}"
    assert consent["captured_at"] == datetime.fromtimestamp(at, UTC).replace(tzinfo=None)
    assert status_of(engine, message) == ("delivered", None)


def test_events_without_a_message_id_find_the_contact_by_address(ledger, signer, client):
    engine, crm = ledger
    contact = crm.contact(email="Grace@Example.com")
    event = {
        "email": "grace@example.com",
        "timestamp": int(time.time()),
        "event": "unsubscribe",
        "sg_event_id": "e1",
    }

    post_events(client, signer, [event])

    assert [s["reason"] for s in rows(engine, schema.suppressions, contact_id=contact)] == ["unsubscribed"]


# --- Twilio signatures ----------------------------------------------------------------------


def twilio_post(
    client: TestClient,
    path: str,
    params: dict[str, str],
    token: str = DEFAULT_TWILIO_TOKEN,
    query: str = "",
    signed_params: dict[str, str] | None = None,
):
    url = f"{PUBLIC_BASE}{path}" + (f"?{query}" if query else "")
    signature = RequestValidator(token).compute_signature(url, signed_params or params)
    return client.post(
        path + (f"?{query}" if query else ""),
        content=urlencode(params),
        headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
    )


def test_twilio_status_callback_moves_the_message(ledger, signer, client):
    engine, crm = ledger
    message = add_message(engine, crm.contact(), channel="sms", status="unknown")
    params = status_form(message_sid("one"), "delivered")

    response = twilio_post(client, "/webhooks/twilio/status", params, query=f"lifecycle_message_id={message}")

    assert response.status_code == 204
    assert status_of(engine, message) == ("delivered", None)
    with engine.connect() as conn:
        provider_id = conn.execute(
            select(schema.messages.c.provider_message_id).where(schema.messages.c.message_id == message)
        ).scalar_one()
    assert provider_id == message_sid("one")


def test_a_canceled_text_is_failed_with_twilios_word(ledger, signer, client):
    engine, crm = ledger
    message = add_message(engine, crm.contact(), channel="sms", status="unknown")
    params = status_form(message_sid("gone"), "canceled")

    response = twilio_post(client, "/webhooks/twilio/status", params, query=f"lifecycle_message_id={message}")

    assert response.status_code == 204
    assert status_of(engine, message) == ("failed", "twilio canceled")


@pytest.mark.parametrize("attack", ["wrong_token", "tampered", "other_message"])
def test_unverified_twilio_requests_are_rejected_and_record_nothing(ledger, signer, client, attack):
    engine, crm = ledger
    contact = crm.contact(phone="+14155550142")
    message = add_message(engine, contact, channel="sms")
    inbound = inbound_form("+14155550142", "STOP")
    if attack == "wrong_token":
        response = twilio_post(client, "/webhooks/twilio/inbound", inbound, token="not-the-token")
    elif attack == "tampered":
        response = twilio_post(client, "/webhooks/twilio/inbound", inbound, signed_params={**inbound, "Body": "hello"})
    else:
        params = status_form(message_sid("nine"), "failed")
        url = f"{PUBLIC_BASE}/webhooks/twilio/status?lifecycle_message_id=999"
        signature = RequestValidator(DEFAULT_TWILIO_TOKEN).compute_signature(url, params)
        response = client.post(
            f"/webhooks/twilio/status?lifecycle_message_id={message}",
            content=urlencode(params),
            headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
        )

    assert response.status_code == 403
    assert count(engine, schema.provider_events) == 0
    assert count(engine, schema.suppressions) == 0
    assert status_of(engine, message) == ("sent", None)


def test_stop_then_start_from_a_number(ledger, signer, client):
    engine, crm = ledger
    contact = crm.contact(phone="(415) 555-0142", country="US")
    other = crm.contact(phone="+14155550143")

    stop = twilio_post(client, "/webhooks/twilio/inbound", inbound_form("+14155550142", " stop ", "a"))

    assert stop.status_code == 200 and "<Response" in stop.text
    [suppression] = rows(engine, schema.suppressions, contact_id=contact)
    assert (suppression["channel"], suppression["reason"], suppression["source"]) == (
        "sms",
        "sms_stop",
        "twilio_stop",
    )
    consent = latest_consent(engine, contact, "sms")
    assert (consent["status"], consent["source"], consent["proof"]) == (
        "withdrawn",
        "twilio_stop",
        f"twilio:{message_sid('a')}",
    )
    assert latest_consent(engine, contact, "email")["status"] == "granted"
    assert rows(engine, schema.suppressions, contact_id=other) == []
    [event] = rows(engine, schema.provider_events, event_id=message_sid("a"))
    assert "4155550142" not in json.dumps(event["payload"])

    twilio_post(client, "/webhooks/twilio/inbound", inbound_form("+14155550142", "START", "b"))
    assert rows(engine, schema.suppressions, contact_id=contact) == []
    assert latest_consent(engine, contact, "sms")["status"] == "granted"


# --- Provider connections not configured ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "conn_id"),
    [
        ("/webhooks/sendgrid", "sendgrid_default"),
        ("/webhooks/twilio/status", "twilio_default"),
        ("/webhooks/twilio/inbound", "twilio_default"),
    ],
)
def test_a_route_whose_provider_connection_is_missing_answers_503_and_names_it(
    ledger, signer, client, monkeypatch, caplog, path, conn_id
):
    engine, crm = ledger
    message = add_message(engine, crm.contact(), channel="email" if "sendgrid" in path else "sms")
    monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id.upper()}")
    if "sendgrid" in path:
        response = post_events(client, signer, [sg_event(message, "delivered", int(time.time()))])
    else:
        params = (
            status_form(message_sid("one"), "delivered") if "status" in path else inbound_form("+14155550100", "STOP")
        )
        response = twilio_post(client, path, params, query=f"lifecycle_message_id={message}")

    assert response.status_code == 503
    assert conn_id in response.json()["detail"]
    assert f"connection {conn_id} is not configured" in caplog.text
    assert count(engine, schema.provider_events) == 0
    assert status_of(engine, message) == ("sent", None)


# --- Unsubscribe page -----------------------------------------------------------------------


def unsubscribe_path(message_id: int, contact_id: str, secret: str = LINK_SECRET) -> str:
    parts = urlsplit(make_unsubscribe_url(PUBLIC_BASE, secret, message_id, contact_id, "email"))
    return f"/unsubscribe?{parts.query}"


def test_unsubscribe_page_confirms_before_changing_anything(ledger, signer, client):
    engine, crm = ledger
    contact = crm.contact()
    path = unsubscribe_path(add_message(engine, contact), contact)

    page = client.get(path)

    assert page.status_code == 200
    assert '<form method="post" action="?token=' in page.text
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert count(engine, schema.suppressions) == 0


def test_one_click_unsubscribe_suppresses_and_withdraws_once(ledger, signer, client):
    engine, crm = ledger
    contact = crm.contact()
    message = add_message(engine, contact)
    path = unsubscribe_path(message, contact)

    first = client.post(
        path,
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    again = client.post(
        path,
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert first.status_code == 200 and again.status_code == 200
    [suppression] = rows(engine, schema.suppressions, contact_id=contact)
    assert (suppression["channel"], suppression["reason"], suppression["source"]) == (
        "email",
        "unsubscribed",
        "one_click_unsubscribe",
    )
    withdrawn = rows(engine, schema.consents, contact_id=contact, status="withdrawn")
    assert len(withdrawn) == 1 and withdrawn[0]["channel"] == "email"
    assert latest_consent(engine, contact, "email")["status"] == "withdrawn"


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_test_copys_unsubscribe_link_says_so_and_unsubscribes_no_one(ledger, signer, client, method):
    engine, crm = ledger
    crm.contact()
    consents = count(engine, schema.consents)
    page = getattr(client, method)(
        "/unsubscribe/test-copy",
        **({"content": "List-Unsubscribe=One-Click"} if method == "post" else {}),
    )
    assert page.status_code == 200
    assert "test copy" in page.text and "no one has been unsubscribed" in page.text
    assert count(engine, schema.suppressions) == 0 and count(engine, schema.consents) == consents


@pytest.mark.parametrize("method", ["get", "post"])
def test_tampered_unsubscribe_links_are_refused(ledger, signer, client, method):
    engine, crm = ledger
    contact = crm.contact()
    forged = unsubscribe_path(add_message(engine, contact), contact, secret="guessed-secret")

    for path in (forged, "/unsubscribe?token=%3Cscript%3Ealert(1)%3C/script%3E", "/unsubscribe"):
        response = getattr(client, method)(path)
        assert response.status_code == 400
        assert "<script>" not in response.text
    assert count(engine, schema.suppressions) == 0
    assert count(engine, schema.provider_events) == 0


# --- End to end with the sandbox's own signed webhooks -----------------------------------


@pytest.fixture
def receiver() -> Iterator[str]:
    """The web app served on a local port, so the sandbox can post to it."""
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def live(ledger, receiver, monkeypatch):
    """(engine, CrmBuilder, sandbox, transport) with the sandbox posting webhooks to the receiver."""
    with SandboxServer(
        sendgrid_webhook_url=f"{receiver}/webhooks/sendgrid",
        twilio_inbound_url=f"{receiver}/webhooks/twilio/inbound",
    ) as sandbox:
        connect_to_sandbox(monkeypatch, sandbox, public_base_url=receiver)
        transport = ProviderTransport(SendGridHook(retry_policy=FAST), TwilioHook(retry_policy=FAST))
        yield (*ledger, sandbox, transport)


def email_for(message_id: int, contact_id: str, address: str) -> OutboundEmail:
    return OutboundEmail(message_id, f"k{message_id}", contact_id, address, None, "Hi", "<p>Hi</p>", "Hi")


def test_sandbox_email_events_reach_the_ledger(live):
    engine, crm, sandbox, transport = live
    ada = crm.contact(email="ada@example.com")
    bob, cy = crm.contact(email="bob@bounce.test"), crm.contact(email="cy@spam.test")
    delivered, bounced, spam = (add_message(engine, c, status="sending") for c in (ada, bob, cy))

    results = list(
        transport.send(
            "email",
            [
                email_for(delivered, ada, "ada@example.com"),
                email_for(bounced, bob, "bob@bounce.test"),
                email_for(spam, cy, "cy@spam.test"),
            ],
        )
    )
    assert {r.status for r in results} == {"sent"}
    sandbox.flush()

    assert status_of(engine, delivered) == ("delivered", None)
    assert status_of(engine, bounced) == ("bounced", "hard bounce")
    assert status_of(engine, spam)[0] == "delivered"
    assert [s["reason"] for s in rows(engine, schema.suppressions, contact_id=bob)] == ["hard_bounce"]
    assert [s["reason"] for s in rows(engine, schema.suppressions, contact_id=cy)] == ["spam_report"]
    assert latest_consent(engine, cy, "email")["source"] == "sendgrid_spamreport"
    assert rows(engine, schema.suppressions, contact_id=ada) == []
    assert all(w["state"] == "delivered" for w in sandbox.webhooks("sendgrid"))


def test_an_unknown_email_is_settled_by_its_events(live):
    engine, crm, sandbox, transport = live
    contact = crm.contact(email="ada@example.com")
    message = add_message(engine, contact, status="sending")
    sandbox.add_fault("sendgrid", "drop_after_accept")

    [result] = list(transport.send("email", [email_for(message, contact, "ada@example.com")]))
    assert result.status == "unknown"
    # The dispatcher records the outcome; the sandbox's events may already have moved the message
    # on, and the recorded ``unknown`` must not overwrite them.
    record_results(engine, [result], simulate=False)
    sandbox.flush()

    assert status_of(engine, message) == ("delivered", None)
    [record] = sandbox.sendgrid_messages()
    with engine.connect() as conn:
        provider_id = conn.execute(
            select(schema.messages.c.provider_message_id).where(schema.messages.c.message_id == message)
        ).scalar_one()
    assert provider_id == record["x_message_id"]


def test_sandbox_sms_callbacks_and_stop_reach_the_ledger(live):
    engine, crm, sandbox, transport = live
    ok_contact = crm.contact(phone="+1 (415) 555-0150", country="US")
    dead_contact = crm.contact(phone="+14155550000")
    ok, dead = (
        add_message(engine, ok_contact, "sms", "sending"),
        add_message(engine, dead_contact, "sms", "sending"),
    )

    results = list(
        transport.send(
            "sms",
            [
                OutboundSms(ok, f"k{ok}", ok_contact, "+14155550150", "Your trial ends soon"),
                OutboundSms(dead, f"k{dead}", dead_contact, "+14155550000", "Your trial ends soon"),
            ],
        )
    )
    assert [r.status for r in results] == ["sent", "sent"]
    sandbox.flush()
    assert status_of(engine, ok) == ("delivered", None)
    assert status_of(engine, dead) == ("failed", "twilio 30003 undelivered")

    sandbox.inbound_sms("+14155550150", "STOP")
    sandbox.flush()
    assert [s["reason"] for s in rows(engine, schema.suppressions, contact_id=ok_contact)] == ["sms_stop"]
    assert latest_consent(engine, ok_contact, "sms")["status"] == "withdrawn"
    [again] = list(transport.send("sms", [OutboundSms(ok + 100, "k-again", ok_contact, "+14155550150", "Hello?")]))
    assert (again.status, again.reason) == (
        "failed",
        "twilio 21610 Attempt to send to unsubscribed recipient",
    )


def test_list_unsubscribe_header_unsubscribes_the_right_contact(live):
    engine, crm, sandbox, transport = live
    ada, bob = crm.contact(), crm.contact()
    first, second = add_message(engine, ada), add_message(engine, bob)
    list(transport.send("email", [email_for(first, ada, "ada@example.com"), email_for(second, bob, "bob@example.com")]))

    record = sandbox.sendgrid_messages(to="bob@example.com")[0]
    assert record["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = record["headers"]["List-Unsubscribe"].strip("<>")
    response = httpx.post(
        url,
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert [s["reason"] for s in rows(engine, schema.suppressions, contact_id=bob)] == ["unsubscribed"]
    assert rows(engine, schema.suppressions, contact_id=ada) == []


def test_stale_limit_is_ten_minutes(ledger, signer, client):
    engine, crm = ledger
    message = add_message(engine, crm.contact())
    fresh = int((datetime.now(UTC) - timedelta(minutes=9)).timestamp())
    response = post_events(client, signer, [sg_event(message, "delivered", fresh)], timestamp=fresh)
    assert response.status_code == 200
    assert status_of(engine, message)[0] == "delivered"


@pytest.mark.parametrize(
    "body, opt_out_type, expected",
    [
        ("STOP", None, "STOP"),
        ("  stop all ", None, "STOP"),
        ("Unsubscribe", None, "STOP"),
        ("start", None, "START"),
        ("please stop texting", None, "STOP"),
        ("I can't stop smiling", None, None),
        ("hello", "STOP", "STOP"),
        ("HELP", "HELP", None),
        ("", None, None),
    ],
)
def test_sms_keywords(body, opt_out_type, expected):
    assert sms_keyword(body, opt_out_type) == expected


@pytest.mark.parametrize(
    "raw, country, expected",
    [
        ("+14155550142", None, "+14155550142"),
        ("(415) 555-0142", "US", "+14155550142"),
        ("06 12 34 56 78", "fr", "+33612345678"),
        ("555-0142", None, None),
        ("", "US", None),
        ("12", "US", None),
    ],
)
def test_phone_numbers_normalise_to_e164(raw, country, expected):
    assert to_e164(raw, country) == expected


# --- Opt-out wording, START, and who a STOP reaches ------------------------------------------

OPT_OUT_WORDINGS = [
    "STOP",
    "stop",
    " Stop ",
    "Stop.",
    "STOP!",
    "stop!!!",
    "STOP ALL",
    "stopall",
    "opt out",
    "opt-out",
    "OPTOUT",
    "Unsubscribe",
    "unsubscribe me",
    "cancel",
    "END",
    "quit",
    "revoke",
    "ARRET",
    "Arrêt",
    "stop please",
    "please stop",
    "Stop texting me",
    "remove me from this list",
    "don't text me",
    "no more messages",
    "S\u200bT\u200dOP",
    "\ufeffstop",
    "ＳＴＯＰ",
    "STOP 🛑",
]
NOT_OPT_OUTS = ["I can't stop smiling, thanks!", "When does the sale end?", "Cancel my order 42", "hello", "HELP"]


@pytest.mark.parametrize("body", OPT_OUT_WORDINGS)
def test_every_reasonable_opt_out_wording_is_a_stop(body):
    assert sms_keyword(body) == "STOP"


@pytest.mark.parametrize("body", NOT_OPT_OUTS)
def test_a_message_that_only_uses_an_opt_out_word_is_not_a_stop(body):
    assert sms_keyword(body) is None


def _consents(engine, contact_id: str, channel: str = "sms") -> list[tuple[str, str]]:
    query = (
        select(schema.consents.c.status, schema.consents.c.source)
        .where(schema.consents.c.contact_id == contact_id, schema.consents.c.channel == channel)
        .order_by(schema.consents.c.captured_at)
    )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def test_a_yes_reply_grants_no_consent_the_contact_never_gave(ledger, signer, client):
    engine, crm = ledger
    surveyed = crm.contact(phone="+14155550161", consent={"email": "granted"})

    response = twilio_post(client, "/webhooks/twilio/inbound", inbound_form("+14155550161", "Yes"))

    assert response.status_code == 200
    assert _consents(engine, surveyed) == []
    assert latest_consent(engine, surveyed, "email")["status"] == "granted"


def test_start_gives_back_only_what_the_stop_took(ledger, signer, client):
    engine, crm = ledger
    never = crm.contact(phone="+14155550162", consent={})
    withdrawn_in_crm = crm.contact(phone="+14155550163", consent={"sms": "withdrawn"})
    granted = crm.contact(phone="+14155550164")

    for contact, number in ((never, "+14155550162"), (withdrawn_in_crm, "+14155550163"), (granted, "+14155550164")):
        twilio_post(client, "/webhooks/twilio/inbound", inbound_form(number, "STOP", f"stop-{contact}"))
        twilio_post(client, "/webhooks/twilio/inbound", inbound_form(number, "START", f"start-{contact}"))

    assert latest_consent(engine, never, "sms")["status"] == "withdrawn"
    assert latest_consent(engine, withdrawn_in_crm, "sms")["status"] == "withdrawn"
    assert latest_consent(engine, granted, "sms")["status"] == "granted"
    assert count(engine, schema.suppressions) == 0


def test_start_does_not_undo_a_later_withdrawal_from_another_source(ledger, signer, client):
    engine, crm = ledger
    contact = crm.contact(phone="+14155550165")
    twilio_post(client, "/webhooks/twilio/inbound", inbound_form("+14155550165", "STOP", "s"))
    crm.consent(contact, "sms", "withdrawn", at=datetime.now(UTC).replace(tzinfo=None))

    twilio_post(client, "/webhooks/twilio/inbound", inbound_form("+14155550165", "START", "t"))

    assert latest_consent(engine, contact, "sms")["source"] == "test"
    assert latest_consent(engine, contact, "sms")["status"] == "withdrawn"


def test_stop_reaches_every_contact_texted_at_the_number(ledger, signer, client):
    """Contacts whose CRM phone or country is written loosely are texted at the normalised number
    (data hygiene's); a STOP from that number reaches each of them, checked or not."""
    from lifecycle.engine.hygiene import quality_row

    engine, crm = ledger
    loose = " us" if engine.dialect.name == "sqlite" else "us"  # PostgreSQL: country is varchar(2)
    spaced_country = crm.contact(phone="(415) 555-0199", country=loose)
    full_width = crm.contact(phone="４１５５５５０１９９", country="US")
    checked = crm.contact(phone="４１５-５５５-０１９９", country=loose)
    other = crm.contact(phone="+14155550198")
    with engine.begin() as conn:
        row = conn.execute(select(schema.contacts).where(schema.contacts.c.contact_id == checked)).mappings().one()
        conn.execute(insert(schema.contact_quality).values(quality_row(row, "hygiene", AS_OF)))
    assert to_e164("４１５５５５０１９９", "US") == to_e164("(415) 555-0199", " us") == "+14155550199"

    twilio_post(client, "/webhooks/twilio/inbound", inbound_form("+14155550199", "STOP"))

    for contact in (spaced_country, full_width, checked):
        assert [s["reason"] for s in rows(engine, schema.suppressions, contact_id=contact)] == ["sms_stop"], contact
        assert latest_consent(engine, contact, "sms")["status"] == "withdrawn"
    assert rows(engine, schema.suppressions, contact_id=other) == []


# --- Unsubscribes after a resubscribe ---------------------------------------------------------


def test_the_same_unsubscribe_link_works_again_after_a_resubscribe(ledger, signer, client):
    engine, crm = ledger
    contact = crm.contact()
    message = add_message(engine, contact)
    path = unsubscribe_path(message, contact)
    form = {"content": "List-Unsubscribe=One-Click", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}

    client.post(path, **form)
    time.sleep(1.1)  # SendGrid stamps events in whole seconds: the resubscribe comes after the press
    post_events(client, signer, [sg_event(message, "group_resubscribe", int(time.time()), asm_group_id=OUR_GROUP)])
    assert rows(engine, schema.suppressions, contact_id=contact) == []
    assert latest_consent(engine, contact, "email")["status"] == "granted"

    assert client.post(path, **form).status_code == 200

    assert [s["reason"] for s in rows(engine, schema.suppressions, contact_id=contact)] == ["unsubscribed"]
    assert latest_consent(engine, contact, "email")["status"] == "withdrawn"


def test_a_resubscribe_to_another_group_never_lifts_our_unsubscribe(ledger, signer, client):
    engine, crm = ledger
    contact = crm.contact()
    message = add_message(engine, contact)
    client.post(unsubscribe_path(message, contact))

    post_events(client, signer, [sg_event(message, "group_resubscribe", int(time.time()), asm_group_id=7)])

    assert [s["reason"] for s in rows(engine, schema.suppressions, contact_id=contact)] == ["unsubscribed"]
    assert latest_consent(engine, contact, "email")["status"] == "withdrawn"


# --- Twilio forms re-cut under the same signature ---------------------------------------------


def recut(params: dict[str, str], name: str, into: str) -> dict[str, str]:
    """``params`` with parameter ``name`` folded into the value of ``into`` (the name just before it
    in sorted order): Twilio's signature, over the sorted names and values run together, is unchanged."""
    folded = {key: value for key, value in params.items() if key != name}
    folded[into] = params[into] + name + params[name]
    return folded


def test_a_recut_start_cannot_undo_a_later_stop(ledger, signer, client):
    engine, crm = ledger
    contact = crm.contact(phone="+14155550170")
    start = inbound_form("+14155550170", "START", "captured")
    twilio_post(client, "/webhooks/twilio/inbound", start)
    twilio_post(client, "/webhooks/twilio/inbound", inbound_form("+14155550170", "STOP", "later"))
    forged = recut(start, "NumMedia", "MessageSid")
    url = f"{PUBLIC_BASE}/webhooks/twilio/inbound"
    validator = RequestValidator(DEFAULT_TWILIO_TOKEN)
    assert validator.compute_signature(url, forged) == validator.compute_signature(url, start)

    recut_answer = twilio_post(client, "/webhooks/twilio/inbound", forged)
    replay_answer = twilio_post(client, "/webhooks/twilio/inbound", start)

    assert recut_answer.status_code == 403 and replay_answer.status_code == 200
    assert [s["reason"] for s in rows(engine, schema.suppressions, contact_id=contact)] == ["sms_stop"]
    assert latest_consent(engine, contact, "sms")["status"] == "withdrawn"


@pytest.mark.parametrize(
    "change",
    [
        {"MessageSid": "SM1"},
        {"MessageSid": "SM" + "A" * 32},
        {"AccountSid": "ACnot-an-account"},
        {"From": "4155550170"},
        {"SmsSid": message_sid("another")},
        {"Unexpected": "x"},
        {"Body": "x" * 1601},
    ],
    ids=["short-sid", "uppercase-sid", "account", "from-not-e164", "sms-sid-differs", "unknown-name", "long-body"],
)
def test_a_signed_twilio_form_twilio_would_not_send_is_refused(ledger, signer, client, change):
    engine, crm = ledger
    crm.contact(phone="+14155550171")
    response = twilio_post(client, "/webhooks/twilio/inbound", inbound_form("+14155550171", "STOP") | change)
    assert response.status_code == 403
    assert count(engine, schema.provider_events) == count(engine, schema.suppressions) == 0


def test_a_status_callback_must_name_the_messages_own_sid(ledger, signer, client):
    engine, crm = ledger
    ours, theirs = crm.contact(), crm.contact()
    message = add_message(engine, ours, channel="sms", provider_message_id=message_sid("ours"))
    other = add_message(engine, theirs, channel="sms", provider_message_id=message_sid("theirs"))
    unsent = add_message(engine, ours, channel="sms", status="unknown")

    for target, sid in ((message, "theirs"), (unsent, "theirs"), (message, "never-sent")):
        response = twilio_post(
            client,
            "/webhooks/twilio/status",
            status_form(message_sid(sid), "failed", ErrorCode="30003"),
            query=f"lifecycle_message_id={target}",
        )
        assert response.status_code == 204

    assert status_of(engine, message) == status_of(engine, other) == ("sent", None)
    assert status_of(engine, unsent) == ("unknown", None)
    assert count(engine, schema.provider_events) == 0


# --- Bodies bounded before they are read ------------------------------------------------------


def test_requests_without_signature_headers_are_refused_unread(ledger, signer, client):
    big = b"x" * (8 * 1024 * 1024)
    for path in ("/webhooks/sendgrid", "/webhooks/twilio/inbound", "/webhooks/twilio/status"):
        assert client.post(path, content=big).status_code == 403, path


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_bodies_over_the_limit_get_413(ledger, signer, client, chunked):
    def body(size: int):
        data = b"x" * size
        return (data[i : i + 65536] for i in range(0, size, 65536)) if chunked else data

    sendgrid = {"X-Twilio-Email-Event-Webhook-Signature": "c2ln", "X-Twilio-Email-Event-Webhook-Timestamp": "1"}
    twilio = {"X-Twilio-Signature": "c2ln"}
    assert client.post("/webhooks/sendgrid", content=body(6 * 1024 * 1024), headers=sendgrid).status_code == 413
    for path in ("/webhooks/twilio/inbound", "/webhooks/twilio/status"):
        assert client.post(path, content=body(2 * 1024 * 1024), headers=twilio).status_code == 413, path
    assert count(engine := ledger[0], schema.provider_events) == 0 and engine


def test_a_form_with_too_many_fields_is_refused(ledger, signer, client):
    params = inbound_form("+14155550172", "STOP") | {f"MediaUrl{i % 10}x{i}": "u" for i in range(200)}
    assert twilio_post(client, "/webhooks/twilio/inbound", params).status_code == 403


# --- SendGrid events cross-checked, one by one ------------------------------------------------


def test_an_event_naming_a_message_with_another_address_changes_nothing(ledger, signer, client):
    engine, crm = ledger
    victim = crm.contact()
    message = add_message(engine, victim)

    response = post_events(
        client, signer, [sg_event(message, "spamreport", int(time.time()), email="attacker@example.net")]
    )

    assert response.status_code == 200 and response.json()["new"] == 0
    assert rows(engine, schema.suppressions) == []
    assert latest_consent(engine, victim, "email")["status"] == "granted"
    assert status_of(engine, message) == ("sent", None)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "delivered",
        [1, 2],
        {"timestamp": None},
        {"timestamp": "1.5"},
        {"timestamp": 1.5},
        {"timestamp": [1]},
        {"timestamp": {"t": 1}},
        {"timestamp": True},
        {"timestamp": 10**20},
        {"event": None},
        {"event": 5},
        {"email": None},
        {"email": ["a@example.com"]},
        {"lifecycle_message_id": "x1"},
        {"lifecycle_message_id": {"id": 1}},
        {"asm_group_id": "group"},
        {"sg_event_id": 12},
    ],
)
def test_one_unreadable_event_costs_its_batch_nothing(ledger, signer, client, caplog, bad):
    engine, crm = ledger
    good, spoiled = add_message(engine, crm.contact()), add_message(engine, crm.contact())
    now = int(time.time())
    event = sg_event(spoiled, "delivered", now) | bad if isinstance(bad, dict) else bad

    response = post_events(client, signer, [sg_event(good, "delivered", now), event, sg_event(good, "open", now)])

    assert response.status_code == 200
    assert response.json() == {"received": 3, "new": 2, "unreadable": 1}
    assert status_of(engine, good) == ("opened", None)
    assert status_of(engine, spoiled) == ("sent", None)
    assert "event 1:" in caplog.text and "@example" not in caplog.text
