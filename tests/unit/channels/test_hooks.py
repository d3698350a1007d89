"""SendGridHook and TwilioHook through the real SDKs against the provider sandbox."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from lifecycle.channels.base import Subscription
from lifecycle.channels.retry import ClaimLost, OutcomeUnknown, Rejected, Retryable, RetryPolicy
from lifecycle.channels.sendgrid import Recipient, SendGridHook
from lifecycle.channels.twilio import TwilioHook
from lifecycle.devtools.local import SANDBOX_MPS, connection_json
from lifecycle.sandbox import DEFAULT_SENDGRID_KEY, DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN, SandboxServer

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)
LINK_SECRET = "link-signing-secret-for-tests"
SENDER = "+15005550006"
WHATSAPP_SENDER = "+14155238886"


def connect_to_sandbox(monkeypatch, sandbox: SandboxServer, public_base_url: str = "http://127.0.0.1:9") -> None:
    """Point ``sendgrid_default``, ``twilio_default`` and ``lifecycle_default`` at the sandbox."""
    connections = {
        "SENDGRID_DEFAULT": connection_json(
            "generic",
            password=DEFAULT_SENDGRID_KEY,
            host=sandbox.url,
            extra={
                "from_email": "news@lifecycle.test",
                "from_name": "Lifecycle News",
                "reply_to": "help@lifecycle.test",
                "asm_group_id": 4242,
                "categories": ["lifecycle"],
                "webhook_public_key": sandbox.public_key,
            },
        ),
        "TWILIO_DEFAULT": connection_json(
            "generic",
            login=DEFAULT_TWILIO_SID,
            password=DEFAULT_TWILIO_TOKEN,
            host=sandbox.url,
            extra={"from_number": SENDER, "whatsapp_from": WHATSAPP_SENDER, "mps": SANDBOX_MPS},
        ),
        "LIFECYCLE_DEFAULT": connection_json("generic", host=public_base_url, password=LINK_SECRET),
        "WEBHOOK_DEFAULT": connection_json("http", host=sandbox.webhook_url(), password=sandbox.webhook_secret),
    }
    for conn_id, value in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", value)


@pytest.fixture
def sandbox(monkeypatch) -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        connect_to_sandbox(monkeypatch, server)
        yield server


def _mail(hook: SendGridHook, *recipients: Recipient):
    return hook.build_mail(subject="Welcome", html="<p>Hello</p>", text="Hello", recipients=recipients)


# --- SendGrid -------------------------------------------------------------------------------


def test_sendgrid_sends_one_request_with_the_connection_settings(sandbox):
    hook = SendGridHook(retry_policy=FAST)
    recipients = [
        Recipient("ada@example.com", "Ada", {"lifecycle_message_id": "1"}, {"List-Unsubscribe": "<http://u/1>"}),
        Recipient("bob@example.com", None, {"lifecycle_message_id": "2"}, {"List-Unsubscribe": "<http://u/2>"}),
    ]
    message_id = hook.send(
        hook.build_mail(
            subject="Welcome",
            html="<p>Hello</p>",
            text="Hello",
            recipients=recipients,
            categories=["welcome"],
        )
    )

    records = {r["to"]: r for r in sandbox.sendgrid_messages()}
    assert set(records) == {"ada@example.com", "bob@example.com"}
    ada = records["ada@example.com"]
    assert ada["x_message_id"] == message_id
    assert (ada["from"], ada["from_name"], ada["reply_to"]) == (
        "news@lifecycle.test",
        "Lifecycle News",
        "help@lifecycle.test",
    )
    assert ada["asm"] == {"group_id": 4242}
    assert sorted(ada["categories"]) == ["lifecycle", "welcome"]
    assert ada["custom_args"] == {"lifecycle_message_id": "1"}
    assert ada["headers"] == {"List-Unsubscribe": "<http://u/1>"}
    assert (ada["html"], ada["text"]) == ("<p>Hello</p>", "Hello")
    assert records["bob@example.com"]["custom_args"] == {"lifecycle_message_id": "2"}
    assert sandbox.stats()["endpoints"]["sendgrid.mail_send"]["requests"] == 1


@pytest.mark.parametrize(
    ("subscription", "asm"),
    [
        (Subscription(), {"group_id": 4242}),
        (Subscription(True, 101, (101, 102)), {"group_id": 101, "groups_to_display": [101, 102]}),
        (Subscription(True, 102, (101, 102)), {"group_id": 102, "groups_to_display": [102, 101]}),
        (Subscription(True, None, (101, 102)), {"group_id": 4242, "groups_to_display": [4242, 101, 102]}),
        (Subscription(False, None, (101,)), None),
        (Subscription(False, 103, (103, 101)), {"group_id": 103, "groups_to_display": [103, 101]}),
    ],
    ids=["no-topic", "topic", "topic-listed-second", "marketing-without-group", "service", "service-with-group"],
)
def test_sendgrid_unsubscribe_group_follows_the_topic_and_the_spec(sandbox, subscription, asm):
    hook = SendGridHook(retry_policy=FAST)
    mail = hook.build_mail(
        subject="Hi", html="<p>Hi</p>", text="Hi", recipients=[Recipient("ada@example.com")], subscription=subscription
    )
    hook.send(mail)  # the sandbox validates the request against SendGrid's published Mail Send schema

    (record,) = sandbox.sendgrid_messages()
    assert record["asm"] == asm


def test_sendgrid_hook_arguments_override_the_connection(sandbox):
    hook = SendGridHook(from_email="promo@lifecycle.test", from_name="Promo", categories=[], retry_policy=FAST)
    hook.send(_mail(hook, Recipient("ada@example.com")))
    record = sandbox.sendgrid_messages()[0]
    assert (record["from"], record["from_name"]) == ("promo@lifecycle.test", "Promo")
    assert not record["categories"]


def test_sendgrid_refuses_more_than_1000_recipients(sandbox):
    hook = SendGridHook()
    with pytest.raises(ValueError, match="1000"):
        _mail(hook, *[Recipient(f"u{n}@example.com") for n in range(1001)])


def test_sendgrid_bad_key_is_rejected_once_and_reported(sandbox, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SENDGRID_BAD",
        connection_json("generic", password="SG.wrong", host=sandbox.url, extra={"from_email": "news@lifecycle.test"}),
    )
    hook = SendGridHook("sendgrid_bad", retry_policy=FAST)
    with pytest.raises(Rejected) as caught:
        hook.send(_mail(hook, Recipient("ada@example.com")))
    assert caught.value.status == 401 and caught.value.reason.startswith("sendgrid 401")
    assert sandbox.stats()["endpoints"]["sendgrid.mail_send"]["requests"] == 1
    assert hook.test_connection()[0] is False
    assert SendGridHook().test_connection() == (True, "SendGrid accepted the API key and sender")
    assert sandbox.sendgrid_messages() == []


@pytest.mark.slow
def test_sendgrid_honours_retry_after_up_to_the_cap(sandbox):
    sandbox.add_fault("sendgrid", "429", count=1, retry_after=1)
    hook = SendGridHook(retry_policy=RetryPolicy(attempts=3, base_delay=0.01, max_delay=5))
    started = time.monotonic()
    hook.send(_mail(hook, Recipient("ada@example.com")))
    assert time.monotonic() - started >= 1.0

    sandbox.add_fault("sendgrid", "429", count=1, retry_after=30)
    capped = SendGridHook(retry_policy=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.2))
    started = time.monotonic()
    capped.send(_mail(capped, Recipient("bob@example.com")))
    assert 0.2 <= time.monotonic() - started < 1.0
    assert len(sandbox.sendgrid_messages()) == 2


def test_sendgrid_5xx_until_retries_run_out_may_have_reached(sandbox):
    sandbox.add_fault("sendgrid", "500", count=FAST.attempts)
    hook = SendGridHook(retry_policy=FAST)
    with pytest.raises(Retryable) as caught:
        hook.send(_mail(hook, Recipient("ada@example.com")))
    assert caught.value.may_have_reached and caught.value.status == 500
    assert sandbox.stats()["endpoints"]["sendgrid.mail_send"]["requests"] == FAST.attempts


@pytest.mark.parametrize("kind", ["drop_after_accept", pytest.param("timeout", marks=pytest.mark.slow)])
def test_sendgrid_lost_answer_is_unknown_and_not_retried(sandbox, kind):
    sandbox.add_fault("sendgrid", kind, delay=1.0)
    hook = SendGridHook(timeout=0.3, retry_policy=FAST)
    with pytest.raises(OutcomeUnknown):
        hook.send(_mail(hook, Recipient("ada@example.com")))
    if kind == "timeout":
        time.sleep(1.2)
    assert sandbox.stats()["endpoints"]["sendgrid.mail_send"]["requests"] == 1


# --- Twilio ---------------------------------------------------------------------------------


def test_twilio_sends_from_the_connection_sender_with_a_status_callback(sandbox):
    hook = TwilioHook(retry_policy=FAST)
    receipt = hook.send_sms("+14155550123", "Your trial ends soon", "http://127.0.0.1:9/cb?lifecycle_message_id=3")
    [record] = sandbox.twilio_messages()
    assert receipt.sid == record["sid"] and receipt.segments == 1
    assert (record["to"], record["from"], record["body"]) == ("+14155550123", SENDER, "Your trial ends soon")
    assert record["status_callback"] == "http://127.0.0.1:9/cb?lifecycle_message_id=3"
    assert hook.fetch_message(receipt.sid).sid == receipt.sid
    assert [r.sid for r in hook.recent_messages("+14155550123")] == [receipt.sid]


def test_twilio_messaging_service_and_long_bodies(sandbox):
    hook = TwilioHook(messaging_service_sid="MG0123456789abcdef0123456789abcdef", retry_policy=FAST)
    receipt = hook.send_sms("+14155550123", "x" * 200)
    [record] = sandbox.twilio_messages()
    assert record["messaging_service_sid"] == "MG0123456789abcdef0123456789abcdef"
    assert receipt.segments == 2


def test_twilio_needs_a_sender(sandbox, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_TWILIO_NOSENDER",
        connection_json("generic", login=DEFAULT_TWILIO_SID, password=DEFAULT_TWILIO_TOKEN, host=sandbox.url),
    )
    with pytest.raises(ValueError, match="messaging_service_sid or from_number"):
        TwilioHook("twilio_nosender").send_sms("+14155550123", "hi")


def test_twilio_opted_out_recipient_is_rejected_with_its_code(sandbox):
    sandbox.inbound_sms("+14155550124", "STOP")
    with pytest.raises(Rejected) as caught:
        TwilioHook(retry_policy=FAST).send_sms("+14155550124", "hi")
    assert caught.value.reason == "twilio 21610 Attempt to send to unsubscribed recipient"
    assert sandbox.stats()["endpoints"]["twilio.create_message"]["requests"] == 1


def test_twilio_invalid_number_is_rejected_once(sandbox):
    with pytest.raises(Rejected) as caught:
        TwilioHook(retry_policy=FAST).send_sms("+1 415 555 0100", "hi")
    assert caught.value.status == 400
    assert caught.value.reason == "twilio 21211 Invalid 'To' Phone Number"
    assert sandbox.stats()["endpoints"]["twilio.create_message"]["requests"] == 1


def test_twilio_retries_429_and_5xx(sandbox):
    sandbox.add_fault("twilio", "429", count=1, retry_after=0)
    sandbox.add_fault("twilio", "503", count=2)
    TwilioHook(retry_policy=FAST).send_sms("+14155550123", "hi")
    assert len(sandbox.twilio_messages()) == 1
    assert sandbox.stats()["endpoints"]["twilio.create_message"]["requests"] == 4


def test_twilio_asks_before_every_attempt_and_stops_when_the_claim_is_gone(sandbox):
    sandbox.add_fault("twilio", "503", count=2)
    answers = iter([True, True, False])
    asked = []

    def still_claimed() -> bool:
        asked.append(True)
        return next(answers)

    with pytest.raises(ClaimLost):
        TwilioHook(retry_policy=FAST).send_sms("+14155550123", "hi", before_attempt=still_claimed)
    assert len(asked) == 3, "asked before the first attempt and before each retry"
    assert sandbox.twilio_messages() == []
    assert sandbox.stats()["endpoints"]["twilio.create_message"]["requests"] == 2


def test_twilio_lost_answer_is_unknown_and_not_resent(sandbox):
    hook = TwilioHook(retry_policy=FAST)
    sandbox.add_fault("twilio", "drop_after_accept")
    with pytest.raises(OutcomeUnknown):
        hook.send_sms("+14155550123", "hi")
    assert len(sandbox.twilio_messages()) == 1
    assert sandbox.stats()["endpoints"]["twilio.create_message"]["requests"] == 1


def test_twilio_bad_token_fails_the_connection_test(sandbox, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_TWILIO_BAD",
        connection_json("generic", login=DEFAULT_TWILIO_SID, password="wrong-token", host=sandbox.url),
    )
    ok, reason = TwilioHook("twilio_bad", retry_policy=FAST).test_connection()
    assert not ok and reason.startswith("twilio 20003")
    assert TwilioHook(retry_policy=FAST).test_connection()[0]


def test_twilio_logs_name_no_phone_number(sandbox, caplog):
    hook = TwilioHook(retry_policy=FAST)
    with caplog.at_level(logging.INFO):
        hook.send_sms("+14155550199", "hi")
        hook.recent_messages("+14155550199")
    assert "Messages.json" in caplog.text
    assert "4155550199" not in caplog.text
