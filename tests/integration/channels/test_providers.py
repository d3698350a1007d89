"""ProviderTransport through the real SDKs against the provider sandbox: batching, outcomes, faults."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from lifecycle.channels.base import OutboundEmail, OutboundSms
from lifecycle.channels.providers import ProviderTransport, links_from_connection
from lifecycle.channels.retry import RetryPolicy
from lifecycle.channels.sendgrid import SendGridHook
from lifecycle.channels.twilio import TwilioHook
from lifecycle.messages.links import UnsubscribeToken, verify_unsubscribe_token
from lifecycle.sandbox import SandboxServer
from tests.unit.channels.test_hooks import FAST, LINK_SECRET, connect_to_sandbox


@pytest.fixture
def sandbox(monkeypatch) -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        connect_to_sandbox(monkeypatch, server, public_base_url="http://lifecycle.test/lifecycle")
        yield server


@pytest.fixture
def transport(sandbox) -> ProviderTransport:
    return ProviderTransport(SendGridHook(retry_policy=FAST), TwilioHook(retry_policy=FAST))


def email(message_id: int, subject: str = "Welcome", **fields) -> OutboundEmail:
    values = {
        "message_id": message_id,
        "idempotency_key": f"key-{message_id}",
        "contact_id": f"c{message_id}",
        "to_email": f"user{message_id}@example.com",
        "to_name": None,
        "subject": subject,
        "html": "<p>Hello</p>",
        "text": "Hello",
    } | fields
    return OutboundEmail(**values)


def sms(message_id: int, to: str = "+14155550123", body: str = "Your trial ends soon") -> OutboundSms:
    return OutboundSms(message_id, f"key-{message_id}", f"c{message_id}", to, body)


def mail_requests(sandbox: SandboxServer) -> int:
    return sandbox.stats()["endpoints"]["sendgrid.mail_send"]["responses"].get("202", 0)


def test_1500_identical_emails_go_in_two_requests(sandbox, transport):
    results = list(transport.send("email", [email(n) for n in range(1500)]))

    assert mail_requests(sandbox) == 2
    assert Counter(r.status for r in results) == {"sent": 1500}
    records = sandbox.sendgrid_messages()
    assert sorted(int(r["custom_args"]["lifecycle_message_id"]) for r in records) == list(range(1500))
    by_request = Counter(r["x_message_id"] for r in records)
    assert sorted(by_request.values()) == [500, 1000]
    provider_ids = {r.message_id: r.provider_message_id for r in results}
    assert all(provider_ids[int(r["custom_args"]["lifecycle_message_id"])] == r["x_message_id"] for r in records)


def test_each_personalization_gets_its_own_signed_list_unsubscribe(sandbox, transport):
    list(transport.send("email", [email(1), email(2)]))

    for record in sandbox.sendgrid_messages():
        headers = record["headers"]
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = urlsplit(headers["List-Unsubscribe"].strip("<>"))
        assert f"{url.scheme}://{url.netloc}{url.path}" == "http://lifecycle.test/lifecycle/unsubscribe"
        message_id = int(record["custom_args"]["lifecycle_message_id"])
        token = parse_qs(url.query)["token"][0]
        assert verify_unsubscribe_token(LINK_SECRET, token) == UnsubscribeToken(message_id, f"c{message_id}", "email")


def test_dispatch_unsubscribe_url_and_custom_args_are_kept(sandbox, transport):
    list(transport.send("email", [email(1, unsubscribe_url="https://x.test/u/1", custom_args={"program": "welcome"})]))
    [record] = sandbox.sendgrid_messages()
    assert record["headers"]["List-Unsubscribe"] == "<https://x.test/u/1>"
    assert record["custom_args"] == {"program": "welcome", "lifecycle_message_id": "1"}


def test_different_content_goes_in_different_requests(sandbox, transport):
    results = list(
        transport.send("email", [email(1, "A"), email(2, "B"), email(3, "A"), email(4, "A", html="<p>x</p>")])
    )
    assert mail_requests(sandbox) == 3
    by_id = {r.message_id: r.provider_message_id for r in results}
    assert by_id[1] == by_id[3] != by_id[2]
    assert by_id[4] not in {by_id[1], by_id[2]}


def test_a_repeated_address_goes_in_a_separate_request(sandbox, transport):
    results = list(transport.send("email", [email(1), email(2, to_email="USER1@example.com"), email(3)]))
    assert [r.status for r in results] == ["sent"] * 3
    assert mail_requests(sandbox) == 2


def test_an_invalid_address_fails_alone(sandbox, transport):
    results = {r.message_id: r for r in list(transport.send("email", [email(1), email(2, to_email="not-an-address")]))}
    assert (results[2].status, results[2].reason) == ("failed", "invalid email address")
    assert results[1].status == "sent"
    assert [r["to"] for r in sandbox.sendgrid_messages()] == ["user1@example.com"]


def test_a_refused_personalization_is_isolated_and_the_rest_sent(sandbox, transport):
    batch = [email(n) for n in range(8)]
    batch[5] = email(5, custom_args={"blob": "x" * 11_000})

    results = {r.message_id: r for r in list(transport.send("email", batch))}

    assert results[5].status == "failed"
    assert results[5].reason.startswith("sendgrid 400 The custom_args may not exceed")
    assert all(results[n].status == "sent" for n in range(8) if n != 5)
    assert len(sandbox.sendgrid_messages()) == 7


def test_a_burst_of_429s_and_500s_ends_with_every_message_sent_once(sandbox):
    patient = RetryPolicy(attempts=8, base_delay=0.01, max_delay=0.05)
    transport = ProviderTransport(SendGridHook(retry_policy=patient), TwilioHook(retry_policy=patient))
    sandbox.add_fault("all", "429", count=3, retry_after=1)
    sandbox.add_fault("all", "500", count=3)

    emails = list(transport.send("email", [email(n, subject=f"S{n % 4}") for n in range(12)]))
    texts = list(transport.send("sms", [sms(100 + n, to=f"+1415555{n + 1:04d}") for n in range(5)]))

    assert {r.status for r in emails + texts} == {"sent"}
    sent_emails = Counter(r["custom_args"]["lifecycle_message_id"] for r in sandbox.sendgrid_messages())
    assert sent_emails == {str(n): 1 for n in range(12)}
    assert Counter(m["sid"] for m in sandbox.twilio_messages()).most_common(1)[0][1] == 1
    assert len(sandbox.twilio_messages()) == 5
    assert {t.provider_message_id for t in texts} == {m["sid"] for m in sandbox.twilio_messages()}


def test_5xx_outlasting_retries_is_unknown_but_429_is_failed(sandbox, transport):
    sandbox.add_fault("sendgrid", "503", count=FAST.attempts)
    [unknown] = list(transport.send("email", [email(1)]))
    sandbox.add_fault("sendgrid", "429", count=FAST.attempts, retry_after=0)
    [throttled] = list(transport.send("email", [email(2)]))

    assert (unknown.status, unknown.reason) == ("unknown", "sendgrid 503 service unavailable")
    assert throttled.status == "failed" and throttled.reason.startswith("sendgrid 429")
    assert sandbox.sendgrid_messages() == []


def test_sms_result_carries_sid_segments_and_a_callback_naming_the_message(sandbox, transport):
    [result] = list(transport.send("sms", [sms(7, body="x" * 161)]))
    [record] = sandbox.twilio_messages()
    assert (result.status, result.provider_message_id, result.segments) == ("sent", record["sid"], 2)
    assert record["status_callback"] == "http://lifecycle.test/lifecycle/webhooks/twilio/status?lifecycle_message_id=7"


def test_sms_refusals_fail_with_the_provider_reason(sandbox, transport):
    sandbox.inbound_sms("+14155550124", "STOP")
    results = {r.message_id: r for r in list(transport.send("sms", [sms(1, "+14155550124"), sms(2, "(415) 555-0125")]))}
    assert (results[1].status, results[1].reason) == (
        "failed",
        "twilio 21610 Attempt to send to unsubscribed recipient",
    )
    assert (results[2].status, results[2].reason) == ("failed", "phone number is not in E.164 form")
    assert sandbox.stats()["endpoints"]["twilio.create_message"]["requests"] == 1


def test_drop_after_accept_is_unknown_and_reconcile_finds_the_message(sandbox, transport):
    since = datetime.now(UTC)
    sandbox.add_fault("twilio", "drop_after_accept")
    message = sms(9, body="Your code is ready")

    [result] = list(transport.send("sms", [message]))
    assert result.status == "unknown" and result.provider_message_id is None

    [settled] = transport.reconcile("sms", [message], since)
    [record] = sandbox.twilio_messages()
    assert (settled.status, settled.provider_message_id, settled.segments) == ("sent", record["sid"], 1)
    assert sandbox.stats()["endpoints"]["twilio.create_message"]["requests"] == 1


def test_reconcile_reports_a_message_twilio_never_took(sandbox, transport):
    since = datetime.now(UTC)
    list(transport.send("sms", [sms(1, body="An older, different text")]))
    sandbox.add_fault("twilio", "drop")
    message = sms(2, body="Never arrived")

    [result] = list(transport.send("sms", [message]))
    [settled] = transport.reconcile("sms", [message], since)

    assert result.status == "unknown"
    assert (settled.status, settled.reason) == ("failed", "not found at twilio")


def test_reconcile_sees_twilio_failures(sandbox, transport):
    since = datetime.now(UTC).replace(tzinfo=None)
    sandbox.add_fault("twilio", "drop_after_accept")
    message = sms(3, to="+14155550000")
    list(transport.send("sms", [message]))
    [settled] = transport.reconcile("sms", [message], since)
    assert (settled.status, settled.reason) == ("failed", "twilio 30003 undelivered")


def test_dispatch_links_are_signed_with_the_lifecycle_connection(sandbox):
    url = urlsplit(links_from_connection()(12, "c12", "email")["unsubscribe"])
    assert url.netloc == "lifecycle.test" and url.path == "/lifecycle/unsubscribe"
    token = parse_qs(url.query)["token"][0]
    assert verify_unsubscribe_token(LINK_SECRET, token) == UnsubscribeToken(12, "c12", "email")


def test_connections_are_read_in_the_sending_thread_only(sandbox, monkeypatch):
    """Airflow's task SDK reads a connection over its supervisor channel, which one thread at a time
    may use (in-process runs lose the channel when two threads use it at once): the senders read
    every connection before their requests go out on their own threads."""
    import threading

    from airflow.sdk import BaseHook

    from lifecycle.messages import links

    readers: list[str] = []
    read_connection, load_links = BaseHook.get_connection, links.PublicLinks.load

    def recording_read(cls, conn_id):
        readers.append(threading.current_thread().name)
        return read_connection.__func__(cls, conn_id)

    def recording_load(*args, **kwargs):
        readers.append(threading.current_thread().name)
        return load_links(*args, **kwargs)

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(recording_read))
    monkeypatch.setattr(links.PublicLinks, "load", staticmethod(recording_load))
    transport = ProviderTransport(SendGridHook(retry_policy=FAST), TwilioHook(retry_policy=FAST))
    emails = [email(n, subject=f"Subject {n}") for n in range(40)]
    texts = [sms(100 + n, to=f"+1415555{n + 1:04d}") for n in range(40)]

    results = list(transport.send("email", emails)) + list(transport.send("sms", texts))

    assert Counter(r.status for r in results) == {"sent": 80}
    assert readers and set(readers) == {threading.main_thread().name}
