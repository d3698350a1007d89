"""The sandbox as a server: keep-alive, concurrency, control API, clean stop, and the CLI."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from lifecycle.paths import PROJECT_ROOT
from lifecycle.sandbox import DEFAULT_SENDGRID_KEY, DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN, SandboxServer

ROOT = PROJECT_ROOT


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


def mail_body(number: int) -> dict[str, object]:
    return {
        "personalizations": [{"to": [{"email": f"c{number}@example.com"}]}],
        "from": {"email": "news@lifecycle.example"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Hello"}],
    }


def test_keep_alive_serves_many_requests_on_one_connection(sandbox: SandboxServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=10)
    headers = {"Authorization": f"Bearer {DEFAULT_SENDGRID_KEY}", "Content-Type": "application/json"}
    statuses, sockets = [], set()
    for number in range(3):
        connection.request("POST", "/v3/mail/send", body=json.dumps(mail_body(number)), headers=headers)
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
        sockets.add(connection.sock)
    connection.close()

    assert statuses == [202, 202, 202]
    assert len(sockets) == 1


def test_concurrent_sends_are_all_recorded(sandbox: SandboxServer) -> None:
    def worker(offset: int) -> list[int]:
        with requests.Session() as session:
            statuses = []
            for number in range(offset, offset + 40):
                if number % 2:
                    response = session.post(
                        f"{sandbox.url}/2010-04-01/Accounts/{DEFAULT_TWILIO_SID}/Messages.json",
                        data={"To": f"+1555{number:07d}", "From": "+15017122661", "Body": "Hi"},
                        auth=(DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN),
                        timeout=10,
                    )
                else:
                    response = session.post(
                        f"{sandbox.url}/v3/mail/send",
                        json=mail_body(number),
                        headers={"Authorization": f"Bearer {DEFAULT_SENDGRID_KEY}"},
                        timeout=10,
                    )
                statuses.append(response.status_code)
            return statuses

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = [status for result in pool.map(worker, range(0, 320, 40)) for status in result]
    elapsed = time.monotonic() - started

    assert sorted(set(statuses)) == [201, 202]
    assert len(sandbox.sendgrid_messages()) == 160
    assert len({message["sid"] for message in sandbox.twilio_messages()}) == 160
    assert elapsed < 20, f"320 requests took {elapsed:.1f}s"


def test_stop_returns_promptly_with_idle_keep_alive_connections() -> None:
    sandbox = SandboxServer().start()
    session = requests.Session()
    assert session.get(f"{sandbox.url}/_sandbox/health", timeout=10).json() == {"status": "ok"}

    started = time.monotonic()
    sandbox.stop()
    session.close()

    assert time.monotonic() - started < 3
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{sandbox.url}/_sandbox/health", timeout=2)


def test_stats_count_requests_responses_and_faults(sandbox: SandboxServer) -> None:
    headers = {"Authorization": f"Bearer {DEFAULT_SENDGRID_KEY}"}
    sandbox.add_fault("sendgrid", "503")
    for _ in range(2):
        requests.post(f"{sandbox.url}/v3/mail/send", json=mail_body(1), headers=headers, timeout=10)
    requests.post(f"{sandbox.url}/v3/mail/send", json={}, headers=headers, timeout=10)

    stats = requests.get(f"{sandbox.url}/_sandbox/stats", timeout=10).json()

    assert stats["endpoints"]["sendgrid.mail_send"] == {
        "requests": 3,
        "responses": {"503": 1, "202": 1, "400": 1},
        "faults": {"503": 1},
    }
    assert stats["webhooks"]["queued"] == 2


def test_recordings_over_the_control_api_and_reset(sandbox: SandboxServer) -> None:
    headers = {"Authorization": f"Bearer {DEFAULT_SENDGRID_KEY}"}
    requests.post(f"{sandbox.url}/v3/mail/send", json=mail_body(1), headers=headers, timeout=10)
    sandbox.inbound_sms("+15558675310", "STOP")

    emails = requests.get(f"{sandbox.url}/_sandbox/sendgrid/messages", timeout=10).json()["messages"]
    filtered = requests.get(
        f"{sandbox.url}/_sandbox/sendgrid/messages", params={"to": "C1@example.com"}, timeout=10
    ).json()["messages"]
    nobody = requests.get(f"{sandbox.url}/_sandbox/sendgrid/messages", params={"to": "x@y.zz"}, timeout=10)
    requests.post(f"{sandbox.url}/_sandbox/reset", timeout=10)
    after_reset = requests.get(f"{sandbox.url}/_sandbox/sendgrid/messages", timeout=10).json()["messages"]
    sms = requests.post(
        f"{sandbox.url}/2010-04-01/Accounts/{DEFAULT_TWILIO_SID}/Messages.json",
        data={"To": "+15558675310", "From": "+15017122661", "Body": "Hi"},
        auth=(DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN),
        timeout=10,
    )
    twilio_records = requests.get(f"{sandbox.url}/_sandbox/twilio/messages", timeout=10).json()["messages"]

    assert [email["to"] for email in emails] == ["c1@example.com"]
    assert filtered == emails
    assert nobody.json()["messages"] == []
    assert after_reset == []
    assert sms.status_code == 201
    assert [record["sid"] for record in twilio_records] == [sms.json()["sid"]]
    assert twilio_records[0]["status_callback"] is None


def test_a_malformed_account_sid_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="account SID"):
        SandboxServer(twilio_account_sid="AC123")


def test_unknown_endpoints_are_404(sandbox: SandboxServer) -> None:
    assert requests.get(f"{sandbox.url}/v3/templates", timeout=10).status_code == 404
    assert requests.get(f"{sandbox.url}/_sandbox/nothing", timeout=10).status_code == 404
    assert requests.get(f"{sandbox.url}/v3/mail/send", timeout=10).status_code == 405
    messages = f"{sandbox.url}/2010-04-01/Accounts/{DEFAULT_TWILIO_SID}/Messages.json"
    assert requests.delete(messages, timeout=10).json()["code"] == 20004


def test_cli_prints_url_and_key_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins")}
    process = subprocess.Popen(
        [sys.executable, "-m", "lifecycle.sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        url_line = process.stdout.readline()
        process.stdout.readline()
        key_line = process.stdout.readline()
        url = url_line.rsplit(" ", 1)[1].strip()
        health = requests.get(f"{url}/_sandbox/health", timeout=10).json()
        key = requests.get(f"{url}/_sandbox/sendgrid/public_key", timeout=10).json()["public_key"]
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)

    assert url.startswith("http://127.0.0.1:")
    assert health == {"status": "ok"}
    assert key_line.strip().endswith(key)
    assert returncode == 0
