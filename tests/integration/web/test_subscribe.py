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


GERMAN = {"Accept-Language": "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7"}


def test_the_form_follows_accept_language_and_says_which(signup):
    _engine, _c, client, _sandbox = signup
    german = client.get("/subscribe", params={"form": "newsletter"}, headers=GERMAN)
    assert german.status_code == 200 and '<html lang="de">' in german.text
    assert '<label for="email">E-Mail-Adresse</label>' in german.text
    assert '<button type="submit">Abonnieren</button>' in german.text
    assert 'name="lang" value="de"' in german.text  # sent back, for the confirmation email
    # The operator's words (the consent text) are shown as configured.
    assert "Send me Northwind&#x27;s offers" in german.text
    assert german.headers["content-language"] == "de"

    french_first = client.get(
        "/subscribe", params={"form": "newsletter"}, headers={"Accept-Language": "da, fr;q=0.9, de;q=0.5"}
    )
    assert '<html lang="fr">' in french_first.text and "Adresse e-mail" in french_first.text
    chosen = client.get("/subscribe", params={"form": "newsletter", "lang": "nl"}, headers=GERMAN)
    assert '<html lang="nl">' in chosen.text and "E-mailadres" in chosen.text
    for header in ("", "tlh, x-pig-latin;q=0.5", ";;q=;,*", "de;q=0"):
        plain = client.get("/subscribe", params={"form": "newsletter"}, headers={"Accept-Language": header})
        assert plain.status_code == 200 and '<html lang="en">' in plain.text and "Email address" in plain.text
    missing = client.get("/subscribe", params={"form": "nope"}, headers={"Accept-Language": "es"})
    assert missing.status_code == 404 and "No existe ningún formulario" in missing.text


def test_a_subscription_in_german_gets_a_german_email_and_german_confirmation_pages(signup):
    engine, _c, client, sandbox = signup
    answer = client.post(
        "/subscribe",
        data={"email": "grete@example.com", "form": "newsletter", "version": "3", "consent": "yes", "lang": "de"},
    )
    assert answer.status_code == 200 and '<html lang="de">' in answer.text
    assert "Bitte prüfen Sie Ihr Postfach" in answer.text
    (mail,) = sandbox.sendgrid_messages(to="grete@example.com")
    assert mail["subject"] == "Bestätigen Sie Ihr Abonnement bei Lifecycle"
    assert "Bitte bestätigen Sie, dass Sie E-Mails von Lifecycle erhalten möchten." in mail["text"]
    assert "Sie haben zugestimmt: Send me Northwind's offers" in mail["text"]
    assert '<div lang="de">' in mail["html"] and ">Mein Abonnement bestätigen</a>" in mail["html"]
    url = re.search(r"Bestätigen: (\S+)", mail["text"]).group(1)
    assert url.startswith(f"{PUBLIC_BASE}/subscribe/confirm?token=") and url.endswith("&lang=de")
    path = url.removeprefix(PUBLIC_BASE)

    # The link carries the form's language, whatever the browser that opens it says.
    shown = client.get(path, headers={"Accept-Language": "fr"})
    assert shown.status_code == 200 and '<html lang="de">' in shown.text
    assert ">Mein Abonnement bestätigen</button>" in shown.text and "lang=de" in shown.text
    confirmed = client.post(path)
    assert confirmed.status_code == 200 and "Vielen Dank: Ihr Abonnement ist bestätigt." in confirmed.text
    again = client.post(path)
    assert again.status_code == 409 and "bereits verwendet" in again.text
    assert [row["status"] for row in captures(engine)] == ["granted"]


def test_the_confirmation_pages_follow_accept_language_when_the_link_names_no_language(signup):
    engine, _c, client, sandbox = signup
    subscribe(client, "pierre@example.com")
    (mail,) = sandbox.sendgrid_messages(to="pierre@example.com")
    assert mail["subject"] == "Confirm your subscription to Lifecycle"  # no language asked: English
    path = confirmation_path(sandbox, "pierre@example.com")
    assert "lang=" not in path
    french = {"Accept-Language": "fr-FR,fr;q=0.9"}
    shown = client.get(path, headers=french)
    assert '<html lang="fr">' in shown.text and ">Confirmer mon abonnement</button>" in shown.text
    assert "Merci : votre abonnement est confirmé." in client.post(path, headers=french).text
    forged = client.get(path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB"), headers={"Accept-Language": "it"})
    assert forged.status_code == 400 and "Questo link di conferma non è valido" in forged.text
    expired = make_confirmation_token(LINK_SECRET, captures(engine)[0]["capture_id"], datetime(2020, 1, 1))
    answer = client.get("/subscribe/confirm", params={"token": expired}, headers={"Accept-Language": "pt-BR"})
    assert answer.status_code == 410 and "Este link de confirmação expirou" in answer.text


def test_refusals_and_json_answers_are_in_the_requests_language(signup):
    engine, _c, client, _sandbox = signup
    refused = client.post(
        "/subscribe",
        data={"email": "x@example.com", "form": "newsletter", "version": "3", "lang": "es"},
    )
    assert refused.status_code == 400 and '<html lang="es">' in refused.text
    assert "Marque la casilla" in refused.text
    as_json = client.post(
        "/subscribe",
        json={"email": "json@example.com", "form": "newsletter", "version": "3", "consent": True},
        headers={"Accept-Language": "it-IT"},
    )
    assert as_json.status_code == 202 and as_json.json()["detail"].startswith("Se l’indirizzo")
    assert [row["status"] for row in captures(engine)] == ["pending"]


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
