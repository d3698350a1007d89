"""The sandbox's SendGrid Mail Send, driven through the real sendgrid SDK."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from python_http_client.exceptions import BadRequestsError, UnauthorizedError
from sendgrid.helpers.mail import (
    Asm,
    Category,
    Content,
    CustomArg,
    Email,
    GroupId,
    Header,
    Mail,
    MailSettings,
    Personalization,
    SandBoxMode,
    To,
)

from lifecycle.sandbox import DEFAULT_SENDGRID_KEY, SandboxServer
from tests.support.sandbox_clients import sendgrid_client


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


def campaign_mail(*addresses: str) -> Mail:
    """A mail like the Lifecycle email hook sends: one personalization per contact."""
    mail = Mail(from_email=Email("news@lifecycle.example", "Lifecycle"), subject="Welcome aboard")
    for number, address in enumerate(addresses):
        personalization = Personalization()
        personalization.add_to(To(address, f"Contact {number}"))
        personalization.add_custom_arg(CustomArg("lc_message_id", str(100 + number)))
        mail.add_personalization(personalization)
    mail.add_content(Content("text/plain", "Hello"))
    mail.add_content(Content("text/html", "<p>Hello</p>"))
    mail.category = Category("welcome")
    mail.custom_arg = CustomArg("lc_program", "welcome")
    mail.header = Header("List-Unsubscribe", "<https://lifecycle.example/u/abc>")
    mail.asm = Asm(GroupId(42))
    return mail


def errors_of(error: Exception) -> list[dict[str, Any]]:
    return json.loads(error.body)["errors"]  # type: ignore[attr-defined]


def post_raw(sandbox: SandboxServer, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{sandbox.url}/v3/mail/send",
        json=body,
        headers={"Authorization": f"Bearer {DEFAULT_SENDGRID_KEY}"},
        timeout=10,
    )


def valid_body(**changes: Any) -> dict[str, Any]:
    body = {
        "personalizations": [{"to": [{"email": "ada@example.com"}]}],
        "from": {"email": "news@lifecycle.example"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Hello"}],
    }
    body.update(changes)
    return body


def test_accepted_send_is_recorded_per_recipient(sandbox: SandboxServer) -> None:
    response = sendgrid_client(sandbox).send(campaign_mail("ada@example.com", "bob@example.com"))

    assert response.status_code == 202
    assert response.body == b""
    message_id = response.headers["X-Message-Id"]
    emails = {email["to"]: email for email in sandbox.sendgrid_messages()}
    assert sorted(emails) == ["ada@example.com", "bob@example.com"]
    first = emails["ada@example.com"]
    assert first["x_message_id"] == message_id
    assert first["sg_message_id"].startswith(message_id + ".")
    assert len({email["sg_message_id"] for email in emails.values()}) == 2
    assert first["to_name"] == "Contact 0"
    assert first["subject"] == "Welcome aboard"
    assert first["from"] == "news@lifecycle.example"
    assert first["categories"] == ["welcome"]
    assert first["custom_args"] == {"lc_program": "welcome", "lc_message_id": "100"}
    assert emails["bob@example.com"]["custom_args"]["lc_message_id"] == "101"
    assert first["headers"]["List-Unsubscribe"] == "<https://lifecycle.example/u/abc>"
    assert first["asm"] == {"group_id": 42}
    assert (first["text"], first["html"]) == ("Hello", "<p>Hello</p>")
    assert first["events"] == ["processed", "delivered"]


def test_wrong_api_key_is_refused_with_sendgrid_error_shape(sandbox: SandboxServer) -> None:
    with pytest.raises(UnauthorizedError) as refused:
        sendgrid_client(sandbox, api_key="SG.wrong").send(campaign_mail("ada@example.com"))

    assert errors_of(refused.value)[0]["message"]
    assert set(errors_of(refused.value)[0]) == {"message", "field", "help"}
    assert sandbox.sendgrid_messages() == []


def test_missing_authorization_is_refused(sandbox: SandboxServer) -> None:
    response = requests.post(f"{sandbox.url}/v3/mail/send", json=valid_body(), timeout=10)

    assert response.status_code == 401
    assert response.json()["errors"][0]["message"] == "authorization required"


def test_thousand_personalizations_accepted_but_not_one_more(sandbox: SandboxServer) -> None:
    client = sendgrid_client(sandbox)
    assert client.send(campaign_mail(*[f"c{n}@example.com" for n in range(1000)])).status_code == 202

    with pytest.raises(BadRequestsError) as refused:
        client.send(campaign_mail(*[f"d{n}@example.com" for n in range(1001)]))

    assert [error["field"] for error in errors_of(refused.value)] == ["personalizations"]
    assert "1000" in errors_of(refused.value)[0]["message"]
    assert len(sandbox.sendgrid_messages()) == 1000


def test_duplicate_recipient_anywhere_in_the_request_is_refused(sandbox: SandboxServer) -> None:
    mail = campaign_mail("ada@example.com", "bob@example.com")
    mail.personalizations[1].add_bcc(Email("ADA@example.com"))

    with pytest.raises(BadRequestsError) as refused:
        sendgrid_client(sandbox).send(mail)

    error = errors_of(refused.value)[0]
    assert error["message"].startswith(
        "Each email address in the personalization block should be unique between to, cc, and bcc"
    )
    assert error["field"] == "personalizations.1.bcc"
    assert sandbox.sendgrid_messages() == []


@pytest.mark.parametrize(
    ("body", "field", "message_start"),
    [
        (valid_body(personalizations=[]), "personalizations", "The personalizations field is required"),
        (valid_body(personalizations=[{"to": []}]), "personalizations.0.to", "The to array is required"),
        (
            valid_body(personalizations=[{"cc": [{"email": "a@example.com"}]}]),
            "personalizations.0.to",
            "The to",
        ),
        (
            valid_body(personalizations=[{"to": [{"email": "not-an-address"}]}]),
            "personalizations.0.to.0.email",
            "Does not contain a valid address",
        ),
        (valid_body(**{"from": {"email": "news@"}}), "from.email", "The from email does not contain"),
        (valid_body(subject=None), "subject", "Invalid type"),
        (valid_body(content=[{"type": "text/html", "value": ""}]), "content.0.value", "The content value"),
        (valid_body(categories=["a"] * 2), "categories", "Array items must be unique"),
        (valid_body(categories=[f"c{n}" for n in range(11)]), "categories", "Array must have at most 10"),
        (valid_body(categories=["x" * 256]), "categories.0", "String length"),
        (valid_body(asm={"groups_to_display": [1]}), "asm.group_id", "group_id is required"),
        (valid_body(headers={"Subject": "x"}), "headers.Subject", "The Subject header is reserved"),
        (valid_body(custom_args={"n": 1}), "custom_args.n", "Invalid type. Expected: string"),
        (
            valid_body(personalizations=[{"to": [{"email": "a@example.com"}], "custom_args": {"n": 1}}]),
            "personalizations.0.custom_args.n",
            "Invalid type. Expected: string",
        ),
        (
            valid_body(content=[{"type": "text/html", "value": "h"}, {"type": "text/plain", "value": "t"}]),
            "content",
            "The text/plain content type must be first",
        ),
        (
            valid_body(reply_to={"email": "r@example.com"}, reply_to_list=[{"email": "s@example.com"}]),
            "reply_to_list",
            "You can use either",
        ),
        (valid_body(send_at=4102444800), "send_at", "The send_at parameter"),
    ],
)
def test_invalid_requests_are_refused_naming_the_field(
    sandbox: SandboxServer, body: dict[str, Any], field: str, message_start: str
) -> None:
    response = post_raw(sandbox, body)

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert field in [error["field"] for error in errors]
    assert any(error["message"].startswith(message_start) for error in errors if error["field"] == field)
    assert all(error["help"] is None for error in errors)
    assert sandbox.sendgrid_messages() == []


def test_subject_may_come_from_every_personalization_or_a_template(sandbox: SandboxServer) -> None:
    without_subject = {name: value for name, value in valid_body().items() if name != "subject"}
    refused = post_raw(sandbox, without_subject)
    per_personalization = dict(
        without_subject, personalizations=[{"to": [{"email": "a@example.com"}], "subject": "Yours"}]
    )
    templated = {
        "personalizations": [{"to": [{"email": "b@example.com"}]}],
        "from": {"email": "news@lifecycle.example"},
        "template_id": "d-123",
    }

    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "subject"
    assert post_raw(sandbox, per_personalization).status_code == 202
    assert post_raw(sandbox, templated).status_code == 202
    assert [email["subject"] for email in sandbox.sendgrid_messages()] == ["Yours", None]


def test_content_is_required_without_a_template(sandbox: SandboxServer) -> None:
    response = post_raw(sandbox, valid_body(content=[]))

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "content"


def test_sandbox_mode_validates_without_recording(sandbox: SandboxServer) -> None:
    mail = campaign_mail("ada@example.com")
    mail.mail_settings = MailSettings(sandbox_mode=SandBoxMode(True))

    response = sendgrid_client(sandbox).send(mail)

    assert response.status_code == 200
    assert sandbox.sendgrid_messages() == []


def test_gzip_compressed_body_is_accepted(sandbox: SandboxServer) -> None:
    response = requests.post(
        f"{sandbox.url}/v3/mail/send",
        data=gzip.compress(json.dumps(valid_body()).encode()),
        headers={
            "Authorization": f"Bearer {DEFAULT_SENDGRID_KEY}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
        timeout=10,
    )

    assert response.status_code == 202
    assert sandbox.sendgrid_messages()[0]["to"] == "ada@example.com"


def test_malformed_json_is_a_bad_request(sandbox: SandboxServer) -> None:
    response = requests.post(
        f"{sandbox.url}/v3/mail/send",
        data=b"{not json",
        headers={"Authorization": f"Bearer {DEFAULT_SENDGRID_KEY}"},
        timeout=10,
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] is None
