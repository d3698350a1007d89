"""The sandbox's Twilio Messages API, driven through the real twilio SDK."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from twilio.base.exceptions import TwilioRestException

from lifecycle.sandbox import DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN, SandboxServer
from lifecycle.sandbox.sms_segments import count_segments
from tests.support.sandbox_clients import twilio_client

SENDER = "+15017122661"
SERVICE = "MG" + "ab" * 16


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


def refusal(sandbox: SandboxServer, **params: object) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as refused:
        twilio_client(sandbox).messages.create(**params)
    return refused.value


def raw_create(sandbox: SandboxServer, form: dict[str, str]) -> requests.Response:
    return requests.post(
        f"{sandbox.url}/2010-04-01/Accounts/{DEFAULT_TWILIO_SID}/Messages.json",
        data=form,
        auth=(DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN),
        timeout=10,
    )


def test_accepted_message_is_queued_and_recorded(sandbox: SandboxServer) -> None:
    message = twilio_client(sandbox).messages.create(to="+15558675310", from_=SENDER, body="Your trial ends soon")

    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid)
    assert message.status == "queued"
    assert (message.to, message.from_, message.body) == ("+15558675310", SENDER, "Your trial ends soon")
    assert message.num_segments == "1"
    assert message.account_sid == DEFAULT_TWILIO_SID
    assert message.direction == "outbound-api"
    assert message.date_created is not None
    assert message.uri == f"/2010-04-01/Accounts/{DEFAULT_TWILIO_SID}/Messages/{message.sid}.json"
    recorded = sandbox.twilio_messages()
    assert [item["sid"] for item in recorded] == [message.sid]
    assert recorded[0]["status"] == "delivered"


def test_messaging_service_sender(sandbox: SandboxServer) -> None:
    message = twilio_client(sandbox).messages.create(to="+15558675310", messaging_service_sid=SERVICE, body="Hi")

    assert message.messaging_service_sid == SERVICE
    assert message.from_ is None
    assert sandbox.twilio_messages()[0]["from"]


def test_fetch_shows_progress_and_unknown_sid_is_20404(sandbox: SandboxServer) -> None:
    client = twilio_client(sandbox)
    sent = client.messages.create(to="+15558670000", from_=SENDER, body="Hi")

    fetched = client.messages(sent.sid).fetch()
    with pytest.raises(TwilioRestException) as missing:
        client.messages("SM" + "0" * 32).fetch()

    assert fetched.status == "undelivered"
    assert fetched.error_code == 30003
    assert fetched.date_sent is not None
    assert (missing.value.status, missing.value.code) == (404, 20404)


def test_list_filters_by_recipient_and_date_sent(sandbox: SandboxServer) -> None:
    client = twilio_client(sandbox)
    first = client.messages.create(to="+15558675310", from_=SENDER, body="one")
    second = client.messages.create(to="+15558675310", from_=SENDER, body="two")
    client.messages.create(to="+15558675311", from_=SENDER, body="other")
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)

    listed = client.messages.list(to="+15558675310", date_sent_after=an_hour_ago)
    future = client.messages.list(to="+15558675310", date_sent_after=datetime.now(UTC) + timedelta(hours=1))
    paged = client.messages.list(page_size=2)

    assert [message.sid for message in listed] == [second.sid, first.sid]
    assert future == []
    assert len(paged) == 3


def test_list_page_shape(sandbox: SandboxServer) -> None:
    twilio_client(sandbox).messages.create(to="+15558675310", from_=SENDER, body="one")

    page = requests.get(
        f"{sandbox.url}/2010-04-01/Accounts/{DEFAULT_TWILIO_SID}/Messages.json",
        params={"To": "+15558675310", "DateSent>": "2020-01-01"},
        auth=(DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN),
        timeout=10,
    ).json()

    assert len(page["messages"]) == 1
    assert (page["page"], page["page_size"], page["start"], page["end"]) == (0, 50, 0, 0)
    assert page["next_page_uri"] is None
    assert page["previous_page_uri"] is None
    assert page["uri"].startswith(f"/2010-04-01/Accounts/{DEFAULT_TWILIO_SID}/Messages.json?")


@pytest.mark.parametrize("to", ["5558675310", "+0123456789", "+1555867531012345", "+1 555 867 5310", "whatsapp:+1"])
def test_invalid_to_number_is_21211(sandbox: SandboxServer, to: str) -> None:
    error = refusal(sandbox, to=to, from_=SENDER, body="Hi")

    assert (error.status, error.code) == (400, 21211)
    assert sandbox.twilio_messages() == []


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"From": SENDER, "Body": "Hi"}, 21604),
        ({"To": "+15558675310", "Body": "Hi"}, 21603),
        ({"To": "+15558675310", "From": SENDER}, 21602),
        ({"To": "+15558675310", "From": SENDER, "Body": "x" * 1601}, 21617),
        ({"To": "+15558675310", "From": "not a number!", "Body": "Hi"}, 21212),
        ({"To": "+15558675310", "MessagingServiceSid": "MG123", "Body": "Hi"}, 21705),
        ({"To": "+15558675310", "From": SENDER, "Body": "Hi", "StatusCallback": "not a url"}, 21609),
        ({"To": "+15558675310", "From": "+15558675310", "Body": "Hi"}, 21266),
        ({"To": "+15558675310", "From": SENDER, "Body": "Hi", "ValidityPeriod": "soon"}, 20001),
        ({"To": "+15558675310", "From": SENDER, "Body": "Hi", "ContentRetention": "forever"}, 20001),
    ],
)
def test_invalid_create_requests_get_twilio_error_codes(
    sandbox: SandboxServer, form: dict[str, str], code: int
) -> None:
    response = raw_create(sandbox, form)

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == code
    assert body["status"] == 400
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert body["message"]
    assert sandbox.twilio_messages() == []


def test_body_of_exactly_1600_characters_is_accepted(sandbox: SandboxServer) -> None:
    message = twilio_client(sandbox).messages.create(to="+15558675310", from_=SENDER, body="x" * 1600)

    assert message.num_segments == str(count_segments("x" * 1600))


def test_media_without_body_is_accepted(sandbox: SandboxServer) -> None:
    message = twilio_client(sandbox).messages.create(
        to="+15558675310", from_=SENDER, media_url=["https://lifecycle.example/a.png"]
    )

    assert message.num_media == "1"


def test_stop_then_send_is_21610_and_start_opts_back_in(sandbox: SandboxServer) -> None:
    client = twilio_client(sandbox)
    sandbox.inbound_sms("+15558675310", "  stop ")

    error = refusal(sandbox, to="+15558675310", from_=SENDER, body="Hi")
    other = client.messages.create(to="+15558675311", from_=SENDER, body="Hi")
    sandbox.inbound_sms("+15558675310", "START")
    again = client.messages.create(to="+15558675310", from_=SENDER, body="Hi")

    assert (error.status, error.code) == (400, 21610)
    assert error.msg.endswith("Attempt to send to unsubscribed recipient")
    assert [message["sid"] for message in sandbox.twilio_messages()] == [other.sid, again.sid]


@pytest.mark.parametrize("keyword", ["STOP", "stopall", "Unsubscribe", "CANCEL", "end", "QUIT"])
def test_every_opt_out_keyword_stops(sandbox: SandboxServer, keyword: str) -> None:
    assert sandbox.inbound_sms("+15558675310", keyword)["stopped"] is True
    assert sandbox.inbound_sms("+15558675311", f"{keyword} please")["stopped"] is False


def test_wrong_auth_token_is_20003(sandbox: SandboxServer) -> None:
    with pytest.raises(TwilioRestException) as refused:
        twilio_client(sandbox, token="wrong").messages.create(to="+15558675310", from_=SENDER, body="Hi")

    assert (refused.value.status, refused.value.code) == (401, 20003)
    assert sandbox.twilio_messages() == []


def test_account_in_path_must_match_credentials(sandbox: SandboxServer) -> None:
    other_account = "AC" + "f" * 32
    response = requests.post(
        f"{sandbox.url}/2010-04-01/Accounts/{other_account}/Messages.json",
        data={"To": "+15558675310", "From": SENDER, "Body": "Hi"},
        auth=(DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN),
        timeout=10,
    )

    assert response.status_code == 404
    assert response.json()["code"] == 20404


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),
        ("€" * 81, 2),
        ("a" * 152 + "€", 1),
        ("a" * 159 + "€", 2),
        ("é" * 160, 1),
        ("ñ" + "ç" * 69, 1),
        ("ç" * 71, 2),
        ("😀" * 35, 1),
        ("😀" * 36, 2),
        ("a" * 66 + "😀", 1),
        ("a" * 66 + "😀" + "a" * 66, 3),
        ("ç" * 134, 2),
        ("ç" * 135, 3),
    ],
)
def test_segment_counting_gsm7_and_ucs2(body: str, segments: int) -> None:
    assert count_segments(body) == segments
