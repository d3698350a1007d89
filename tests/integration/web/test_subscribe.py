"""Subscription capture with double opt-in: a pending subscription is recorded with its proof and
never messaged; only its signed confirmation link (sent through the real SendGrid SDK to the
provider sandbox) makes it messageable; forged, expired and used links are refused; the answer does
not tell whether an address is known; requests are rate limited; paper forms import once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from lifecycle.devtools.cli import main as cli
from lifecycle.messages.links import make_confirmation_token
from lifecycle.model import schema
from lifecycle.sandbox import SandboxServer
from lifecycle.web import create_app
from tests.conftest import AS_OF
from tests.support.consent import write_consent_config
from tests.support.journey import messages, run_program
from tests.unit.channels.test_hooks import LINK_SECRET, connect_to_sandbox

PUBLIC_BASE = "http://lifecycle.test/lifecycle"
FORM = """
capture:
  forms:
    newsletter:
      version: "3"
      consent_text: "Send me Northwind's offers and news by email. I can unsubscribe at any time."
  per_address: {max: 2, per: 1h}
  per_ip: {max: 5, per: 1h}
"""
K = schema.consent_captures


@pytest.fixture
def signup(crm, sqlite_url, test_config: Path, tmp_path: Path, monkeypatch) -> Iterator[tuple]:
    """(engine, CrmBuilder, client, sandbox): the consent config with a newsletter form, the app
    reading the test database, SendGrid pointed at the sandbox."""
    folder = write_consent_config(test_config, tmp_path / "config")
    with (folder / "policy.yml").open("a", encoding="utf-8") as policy:
        policy.write(FORM)
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(folder))
    monkeypatch.setenv("LIFECYCLE_CRM_URL", sqlite_url)
    with SandboxServer() as sandbox:
        connect_to_sandbox(monkeypatch, sandbox, public_base_url=PUBLIC_BASE)
        with TestClient(create_app()) as client:
            yield (*crm, client, sandbox)


@pytest.fixture
def crm(sqlite_url):
    from lifecycle.model.db import get_engine, migrate
    from tests.support.crm_builder import CrmBuilder

    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    return engine, CrmBuilder(engine, AS_OF)


def subscribe(client: TestClient, email: str, **fields) -> object:
    data = {"email": email, "form": "newsletter", "version": "3", "consent": "yes"} | fields
    return client.post("/subscribe", data=data)


def confirmation_path(sandbox: SandboxServer, email: str) -> str:
    (mail,) = sandbox.sendgrid_messages(to=email)
    url = re.search(r"Confirm: (\S+)", mail["text"]).group(1)
    assert url.startswith(f"{PUBLIC_BASE}/subscribe/confirm?token=")
    return url.removeprefix(PUBLIC_BASE)


def captures(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(K).order_by(K.c.capture_id)).mappings()]


def test_the_form_is_plain_html_with_labels(signup):
    _engine, _c, client, _sandbox = signup
    page = client.get("/subscribe", params={"form": "newsletter"})
    assert page.status_code == 200
    assert "<script" not in page.text
    assert '<label for="email">Email address</label>' in page.text
    assert '<label for="consent">Send me Northwind&#x27;s offers and news by email.' in page.text
    assert 'name="version" value="3"' in page.text
    assert client.get("/subscribe", params={"form": "nope"}).status_code == 404


def test_a_pending_subscriber_is_never_messaged_until_the_link_is_used(signup, monkeypatch):
    engine, c, client, sandbox = signup
    contact = c.contact(email="Ada@Example.com", country="DE", consent={}, lifecycle_stage="customer")

    answer = subscribe(client, " ada@example.com ")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    (pending,) = captures(engine)
    assert pending["status"] == "pending" and pending["confirmed_at"] is None
    assert (pending["address"], pending["form_id"], pending["form_version"], pending["source"]) == (
        "ada@example.com",
        "newsletter",
        "3",
        "web_form",
    )
    assert pending["consent_text"].startswith("Send me Northwind's offers")
    assert pending["ip_address"] is None  # the policy does not record it
    (mail,) = sandbox.sendgrid_messages(to="ada@example.com")
    assert "asm" not in mail or mail["asm"] is None  # a service email: no unsubscribe group

    run_program(engine, "promo", AS_OF + timedelta(days=400))
    (offer,) = [m for m in messages(engine, "promo") if m["contact_id"] == contact]
    assert (offer["status"], offer["reason"]) == ("suppressed", "no_consent: eu")

    path = confirmation_path(sandbox, "ada@example.com")
    shown = client.get(path)
    assert shown.status_code == 200 and "Confirm my subscription" in shown.text
    assert captures(engine)[0]["status"] == "pending"  # opening the page (a link scanner) confirms nothing
    confirmed = client.post(path)
    assert confirmed.status_code == 200 and "subscription is confirmed" in confirmed.text
    (granted,) = captures(engine)
    assert granted["status"] == "granted" and granted["contact_id"] == contact

    assert client.post(path).status_code == 409  # replayed

    run_program(engine, "promo", AS_OF + timedelta(days=401))
    reminder = [m for m in messages(engine, "promo") if m["contact_id"] == contact and m["step"] == "reminder"]
    assert [m["status"] for m in reminder] == ["dry_run"]


def test_forged_and_expired_links_are_refused_and_change_nothing(signup):
    engine, _c, client, sandbox = signup
    subscribe(client, "bob@example.com")
    path = confirmation_path(sandbox, "bob@example.com")
    forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert client.post(forged).status_code == 400
    assert "not valid" in client.get(forged).text
    capture_id = captures(engine)[0]["capture_id"]
    other_secret = make_confirmation_token("another-secret", capture_id, datetime(2099, 1, 1))
    assert client.post("/subscribe/confirm", params={"token": other_secret}).status_code == 400
    expired = make_confirmation_token(LINK_SECRET, capture_id, datetime(2020, 1, 1))
    answer = client.post("/subscribe/confirm", params={"token": expired})
    assert answer.status_code == 410 and "expired" in answer.text
    unsubscribe_token = urlsplit(path).query  # a confirmation token is no unsubscribe token either
    assert client.get(f"/unsubscribe?{unsubscribe_token}").status_code == 400
    assert [row["status"] for row in captures(engine)] == ["pending"]


def test_the_answer_is_the_same_for_a_known_and_an_unknown_address_and_json_works(signup):
    _engine, c, client, sandbox = signup
    c.contact(email="known@example.com")
    known = subscribe(client, "known@example.com")
    unknown = subscribe(client, "stranger@example.com")
    assert (known.status_code, known.text) == (unknown.status_code, unknown.text)
    as_json = client.post(
        "/subscribe",
        json={"email": "json@example.com", "form": "newsletter", "version": "3", "consent": True},
    )
    assert as_json.status_code == 202 and as_json.json()["status"] == "pending"
    assert {m["to"] for m in sandbox.sendgrid_messages()} == {
        "known@example.com",
        "stranger@example.com",
        "json@example.com",
    }


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"consent": ""}, 400, "Tick the box"),
        ({"version": "2"}, 409, "reload it"),
        ({"email": "not-an-address"}, 400, "valid email address"),
        ({"form": "other"}, 404, "no signup form"),
    ],
)
def test_bad_requests_are_refused_with_what_to_do(signup, fields, status, says):
    engine, _c, client, sandbox = signup
    answer = subscribe(client, fields.pop("email", "carol@example.com"), **fields)
    assert answer.status_code == status and says in answer.text
    assert captures(engine) == [] and sandbox.sendgrid_messages() == []


def test_requests_are_rate_limited_per_address_and_per_ip(signup):
    engine, _c, client, _sandbox = signup
    assert [subscribe(client, "dan@example.com").status_code for _ in range(3)] == [200, 200, 429]
    assert [subscribe(client, f"u{n}@example.com").status_code for n in range(4)] == [200, 200, 200, 429]
    assert len(captures(engine)) == 5


PAPER = """email,form_id,form_version,consent_text,captured_at,source
eve@example.com,fair-2026,1,"Yes, email me offers.",2026-03-01T10:00:00Z,paper
frank@example.com,fair-2026,1,"Yes, email me offers.",2026-03-01,paper
"""


def test_paper_forms_import_once_and_bad_rows_are_named_with_their_fix(signup, tmp_path, capsys, monkeypatch):
    engine, c, _client, _sandbox = signup
    monkeypatch.setenv("LIFECYCLE_STATE_URL", str(engine.url))
    eve = c.contact(email="eve@example.com", consent={})
    bad = tmp_path / "bad.csv"
    bad.write_text(
        PAPER + "not-an-email,fair-2026,1,Yes,2026-03-01,paper\ngina@example.com,fair-2026,1,Yes,yesterday,web\n",
        encoding="utf-8",
    )
    assert cli(["consents", "import", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "line 4: email 'not-an-email' is not an email address — fix:" in out
    assert "line 5: captured_at 'yesterday' is not a date-time — fix: write ISO 8601" in out
    assert "line 5: source 'web' is not paper — fix: write paper" in out
    assert "nothing imported" in out and captures(engine) == []

    good = tmp_path / "paper.csv"
    good.write_text(PAPER, encoding="utf-8")
    assert cli(["consents", "import", str(good)]) == 0
    assert "2 consent(s) imported, 0 already imported" in capsys.readouterr().out
    assert cli(["consents", "import", str(good)]) == 0
    assert "0 consent(s) imported, 2 already imported" in capsys.readouterr().out
    rows = captures(engine)
    assert [(r["address"], r["status"], r["source"], r["contact_id"]) for r in rows] == [
        ("eve@example.com", "granted", "paper", eve),
        ("frank@example.com", "granted", "paper", None),
    ]
    assert rows[0]["confirmed_at"] == rows[0]["captured_at"] == datetime(2026, 3, 1, 10, 0)
