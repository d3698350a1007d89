"""Signed webhooks: SendGrid events checked with sendgrid's EventWebhook, Twilio with RequestValidator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from sendgrid.helpers.mail import Category, CustomArg, Mail, Personalization, To
from twilio.request_validator import RequestValidator

from lifecycle.sandbox import DEFAULT_TWILIO_TOKEN, SandboxServer
from tests.support.sandbox_clients import Received, WebhookReceiver, sendgrid_client, twilio_client

SENDER = "+15017122661"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def sandbox(receiver: WebhookReceiver) -> Iterator[SandboxServer]:
    with SandboxServer(
        sendgrid_webhook_url=receiver.url("/webhooks/sendgrid"),
        twilio_inbound_url=receiver.url("/webhooks/twilio/inbound"),
    ) as server:
        yield server


def send_mail(sandbox: SandboxServer, *addresses: str) -> str:
    mail = Mail(from_email="news@lifecycle.example", subject="Hi", plain_text_content="Hello")
    for address in addresses:
        personalization = Personalization()
        personalization.add_to(To(address))
        personalization.add_custom_arg(CustomArg("lc_message_id", f"id-{address}"))
        mail.add_personalization(personalization)
    mail.category = Category("welcome")
    mail.custom_arg = CustomArg("lc_program", "welcome")
    return sendgrid_client(sandbox).send(mail).headers["X-Message-Id"]


def sendgrid_events(received: list[Received]) -> list[dict[str, Any]]:
    return [event for post in received if post.path == "/webhooks/sendgrid" for event in json.loads(post.text)]


def verify_sendgrid(sandbox: SandboxServer, post: Received, payload: str | None = None) -> bool:
    return EventWebhook(sandbox.public_key).verify_signature(
        post.text if payload is None else payload,
        post.headers[EventWebhookHeader.SIGNATURE],
        post.headers[EventWebhookHeader.TIMESTAMP],
    )


def test_sendgrid_events_are_signed_as_sendgrid_signs(sandbox: SandboxServer, receiver: WebhookReceiver) -> None:
    send_mail(sandbox, "ada@example.com")
    sandbox.flush()

    post = receiver.wait_for(1)[0]
    tampered = post.text.replace("delivered", "bounce")

    assert post.headers["Content-Type"] == "application/json"
    assert verify_sendgrid(sandbox, post)
    assert not verify_sendgrid(sandbox, post, tampered)
    assert not EventWebhook(SandboxServer().public_key).verify_signature(
        post.text, post.headers[EventWebhookHeader.SIGNATURE], post.headers[EventWebhookHeader.TIMESTAMP]
    )


def test_public_key_over_the_control_api(sandbox: SandboxServer) -> None:
    response = requests.get(f"{sandbox.url}/_sandbox/sendgrid/public_key", timeout=10)

    assert response.json() == {"public_key": sandbox.public_key}


def test_sendgrid_events_carry_sendgrid_fields(sandbox: SandboxServer, receiver: WebhookReceiver) -> None:
    message_id = send_mail(sandbox, "ada@example.com", "bob@bounce.test", "eve@spam.test")
    counts = sandbox.flush()

    events = sendgrid_events(receiver.wait_for(1))
    by_address: dict[str, list[str]] = {}
    for event in events:
        by_address.setdefault(event["email"], []).append(event["event"])
    processed = next(event for event in events if event["email"] == "ada@example.com")
    bounce = next(event for event in events if event["event"] == "bounce")

    assert by_address == {
        "ada@example.com": ["processed", "delivered"],
        "bob@bounce.test": ["processed", "bounce"],
        "eve@spam.test": ["processed", "delivered", "spamreport"],
    }
    assert counts["delivered"] == len(events) == 7
    assert counts["pending"] == 0
    assert processed["sg_message_id"].startswith(message_id + ".")
    assert processed["smtp-id"].startswith(f"<{message_id}@")
    assert processed["category"] == ["welcome"]
    assert processed["lc_program"] == "welcome"
    assert processed["lc_message_id"] == "id-ada@example.com"
    assert isinstance(processed["timestamp"], int)
    assert bounce["type"] == "bounce"
    assert bounce["status"].startswith("5.")
    assert len({event["sg_event_id"] for event in events}) == 7


def test_control_api_posts_an_event_for_a_recorded_email(sandbox: SandboxServer, receiver: WebhookReceiver) -> None:
    send_mail(sandbox, "ada@example.com")
    sandbox.flush()
    sg_message_id = sandbox.sendgrid_messages()[0]["sg_message_id"]

    response = requests.post(
        f"{sandbox.url}/_sandbox/sendgrid/events",
        json={"sg_message_id": sg_message_id, "event": "bounce", "type": "blocked"},
        timeout=10,
    )
    unknown = requests.post(
        f"{sandbox.url}/_sandbox/sendgrid/events", json={"sg_message_id": "nope", "event": "open"}, timeout=10
    )
    bad_event = requests.post(
        f"{sandbox.url}/_sandbox/sendgrid/events",
        json={"sg_message_id": sg_message_id, "event": "x"},
        timeout=10,
    )
    flushed = requests.post(f"{sandbox.url}/_sandbox/flush", json={}, timeout=30).json()

    last_post = receiver.wait_for(2)[-1]
    assert response.status_code == 200
    assert [event["type"] for event in response.json()["events"]] == ["blocked"]
    assert json.loads(last_post.text)[0]["event"] == "bounce"
    assert verify_sendgrid(sandbox, last_post)
    assert (unknown.status_code, bad_event.status_code) == (404, 400)
    assert flushed["pending"] == 0
    assert sandbox.sendgrid_messages()[0]["events"] == ["processed", "delivered", "bounce"]


def test_twilio_status_callbacks_validate_with_request_validator(
    sandbox: SandboxServer, receiver: WebhookReceiver
) -> None:
    callback = receiver.url("/webhooks/twilio/status?message=42")
    client = twilio_client(sandbox)
    delivered = client.messages.create(to="+15558675310", from_=SENDER, body="Hi", status_callback=callback)
    undelivered = client.messages.create(to="+15558670000", from_=SENDER, body="Hi", status_callback=callback)
    sandbox.flush()

    posts = receiver.wait_for(4)
    validator = RequestValidator(DEFAULT_TWILIO_TOKEN)
    statuses = {(post.form["MessageSid"], post.form["MessageStatus"]): post.form for post in posts}

    assert all(validator.validate(callback, post.form, post.headers["X-Twilio-Signature"]) for post in posts)
    assert not RequestValidator("other-token").validate(callback, posts[0].form, posts[0].headers["X-Twilio-Signature"])
    assert [post.form["MessageStatus"] for post in posts if post.form["MessageSid"] == delivered.sid] == [
        "sent",
        "delivered",
    ]
    assert statuses[(undelivered.sid, "undelivered")]["ErrorCode"] == "30003"
    assert "ErrorCode" not in statuses[(delivered.sid, "delivered")]
    sent = statuses[(delivered.sid, "sent")]
    assert (sent["To"], sent["From"], sent["AccountSid"]) == ("+15558675310", SENDER, delivered.account_sid)


def test_inbound_stop_is_posted_signed_and_opts_out(sandbox: SandboxServer, receiver: WebhookReceiver) -> None:
    response = requests.post(
        f"{sandbox.url}/_sandbox/twilio/inbound", json={"from": "+15558675310", "body": "STOP"}, timeout=10
    )
    bad = requests.post(f"{sandbox.url}/_sandbox/twilio/inbound", json={"from": "555", "body": "STOP"}, timeout=10)
    sandbox.flush()

    post = receiver.wait_for(1)[0]
    url = receiver.url("/webhooks/twilio/inbound")
    assert response.json()["stopped"] is True
    assert response.json()["opt_out_type"] == "STOP"
    assert bad.status_code == 400
    assert post.path == "/webhooks/twilio/inbound"
    assert RequestValidator(DEFAULT_TWILIO_TOKEN).validate(url, post.form, post.headers["X-Twilio-Signature"])
    assert post.form["OptOutType"] == "STOP"
    assert (post.form["From"], post.form["Body"]) == ("+15558675310", "STOP")
    assert post.form["MessageSid"] == response.json()["message_sid"]


def test_failed_posts_are_retried_until_the_receiver_answers() -> None:
    with (
        WebhookReceiver(fail_first=2) as receiver,
        SandboxServer(sendgrid_webhook_url=receiver.url("/webhooks/sendgrid")) as sandbox,
    ):
        send_mail(sandbox, "ada@example.com")
        counts = sandbox.flush()

        assert receiver.answered_503 == 2
        assert len(sendgrid_events(receiver.received)) == 2
        assert counts["delivered"] == 2
        assert counts["failed"] == 0
        assert sandbox.webhooks("sendgrid")[0]["attempts"] == 3


@pytest.mark.slow
def test_unreachable_receiver_fails_after_retries_without_blocking_sends() -> None:
    with SandboxServer(sendgrid_webhook_url="http://127.0.0.1:9/nowhere") as sandbox:
        assert (
            sendgrid_client(sandbox)
            .send(Mail("news@lifecycle.example", "ada@example.com", "Hi", plain_text_content="Hello"))
            .status_code
            == 202
        )
        counts = sandbox.flush()

    assert (counts["failed"], counts["delivered"], counts["pending"]) == (2, 0, 0)


def test_without_urls_webhooks_are_logged_not_posted() -> None:
    with SandboxServer() as sandbox:
        send_mail(sandbox, "ada@example.com")
        twilio_client(sandbox).messages.create(to="+15558675310", from_=SENDER, body="Hi")
        counts = sandbox.flush()
        log = requests.get(f"{sandbox.url}/_sandbox/webhooks", params={"provider": "twilio"}, timeout=10).json()

    assert counts["unposted"] == 4
    assert counts["posts"] == 0
    assert [entry["payload"]["MessageStatus"] for entry in log["webhooks"]] == ["sent", "delivered"]
    assert {entry["state"] for entry in log["webhooks"]} == {"unposted"}
