"""Fault injection: what clients (the real SDKs) see, and what the sandbox records meanwhile."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests
from python_http_client.exceptions import HTTPError, TooManyRequestsError
from sendgrid.helpers.mail import Mail
from twilio.base.exceptions import TwilioRestException

from lifecycle.sandbox import SandboxServer
from tests.support.sandbox_clients import sendgrid_client, twilio_client

SENDER = "+15017122661"


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


def mail() -> Mail:
    return Mail("news@lifecycle.example", "ada@example.com", "Hi", plain_text_content="Hello")


def send_sms(sandbox: SandboxServer, timeout: float | None = 10) -> object:
    return twilio_client(sandbox, timeout=timeout).messages.create(to="+15558675310", from_=SENDER, body="Hi")


def test_sendgrid_429_carries_retry_after_then_recovers(sandbox: SandboxServer) -> None:
    sandbox.add_fault("sendgrid", "429", count=2, retry_after=7)
    client = sendgrid_client(sandbox)

    for _ in range(2):
        with pytest.raises(TooManyRequestsError) as limited:
            client.send(mail())
        assert limited.value.headers["Retry-After"] == "7"
        assert int(limited.value.headers["X-RateLimit-Reset"]) >= int(time.time()) + 6
        assert json.loads(limited.value.body)["errors"][0]["message"] == "too many requests"
    accepted = client.send(mail())

    assert accepted.status_code == 202
    assert len(sandbox.sendgrid_messages()) == 1
    assert sandbox.stats()["endpoints"]["sendgrid.mail_send"]["faults"] == {"429": 2}


def test_twilio_429_carries_retry_after(sandbox: SandboxServer) -> None:
    sandbox.add_fault("twilio", "429", retry_after=3)

    with pytest.raises(TwilioRestException) as limited:
        send_sms(sandbox)

    assert (limited.value.status, limited.value.code) == (429, 20429)
    assert sandbox.twilio_messages() == []


@pytest.mark.parametrize("status", ["500", "503"])
def test_server_errors_use_provider_error_bodies(sandbox: SandboxServer, status: str) -> None:
    sandbox.add_fault("all", status)

    with pytest.raises(HTTPError) as sendgrid_failure:
        sendgrid_client(sandbox).send(mail())
    with pytest.raises(TwilioRestException) as twilio_failure:
        send_sms(sandbox)

    assert sendgrid_failure.value.status_code == int(status)
    assert json.loads(sendgrid_failure.value.body)["errors"][0]["message"]
    assert twilio_failure.value.status == int(status)
    assert twilio_failure.value.code == 20000 + int(status)
    assert sandbox.sendgrid_messages() == [] and sandbox.twilio_messages() == []


def test_drop_closes_the_connection_without_recording(sandbox: SandboxServer) -> None:
    sandbox.add_fault("all", "drop")

    with pytest.raises(requests.ConnectionError):
        send_sms(sandbox)
    with pytest.raises(ConnectionError):
        sendgrid_client(sandbox).send(mail())

    assert sandbox.twilio_messages() == [] and sandbox.sendgrid_messages() == []
    assert send_sms(sandbox) is not None


def test_drop_after_accept_records_but_client_sees_an_error(sandbox: SandboxServer) -> None:
    sandbox.add_fault("all", "drop_after_accept")

    with pytest.raises(requests.ConnectionError):
        send_sms(sandbox)
    with pytest.raises(ConnectionError):
        sendgrid_client(sandbox).send(mail())

    assert len(sandbox.twilio_messages()) == 1
    assert len(sandbox.sendgrid_messages()) == 1
    reconciled = twilio_client(sandbox).messages.list(to="+15558675310")
    assert [message.sid for message in reconciled] == [sandbox.twilio_messages()[0]["sid"]]


def test_timeout_outlasts_the_client(sandbox: SandboxServer) -> None:
    sandbox.add_fault("twilio", "timeout", delay=2)
    started = time.monotonic()

    with pytest.raises(requests.exceptions.ReadTimeout):
        send_sms(sandbox, timeout=0.5)

    assert time.monotonic() - started < 1.5
    assert sandbox.twilio_messages() == []


def test_slow_answers_correctly_after_the_delay(sandbox: SandboxServer) -> None:
    sandbox.add_fault("sendgrid", "slow", delay=0.4)
    started = time.monotonic()

    response = sendgrid_client(sandbox).send(mail())

    assert response.status_code == 202
    assert time.monotonic() - started >= 0.4
    assert len(sandbox.sendgrid_messages()) == 1


def test_faults_target_one_provider_only(sandbox: SandboxServer) -> None:
    sandbox.add_fault("sendgrid", "500", count=3)

    assert send_sms(sandbox) is not None
    assert sandbox.app.faults.pending()["sendgrid"] == [{"kind": "500", "retry_after": 1, "delay": 2.0}] * 3


def test_faults_over_the_control_api_are_validated(sandbox: SandboxServer) -> None:
    post = f"{sandbox.url}/_sandbox/faults"

    bad_kind = requests.post(post, json={"target": "sendgrid", "kind": "404"}, timeout=10)
    bad_target = requests.post(post, json={"target": "smtp", "kind": "500"}, timeout=10)
    bad_count = requests.post(post, json={"target": "twilio", "kind": "500", "count": 0}, timeout=10)
    queued = requests.post(post, json={"target": "twilio", "kind": "503", "count": 2}, timeout=10)

    assert [bad_kind.status_code, bad_target.status_code, bad_count.status_code] == [400, 400, 400]
    assert queued.json()["pending"]["twilio"] == [{"kind": "503", "retry_after": 1, "delay": 2.0}] * 2
    reset = requests.post(f"{sandbox.url}/_sandbox/reset", timeout=10)
    assert reset.json() == {"reset": True}
    assert send_sms(sandbox) is not None
