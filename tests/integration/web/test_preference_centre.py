"""The preference centre an unsubscribe link opens: topics and channels as they stand, a plain form
that changes them (each change a row with source and proof), one-click still unsubscribing from the
message's topic, SendGrid's topic groups, refused links; the page in the contact's language; and the
page in headless Chromium, walked with the keyboard only, in English and in German."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select

from lifecycle.devtools.local import connection_json
from lifecycle.messages.links import make_unsubscribe_url
from lifecycle.model import schema
from lifecycle.web import create_app
from tests.integration.web.test_webhooks import EventSigner, add_message, sg_event
from tests.support.consent import write_consent_config
from tests.unit.channels.test_hooks import LINK_SECRET

PUBLIC_BASE = "http://lifecycle.test/lifecycle"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = {"content": "List-Unsubscribe=One-Click", "headers": FORM}


@pytest.fixture
def centre(crm, db_url, test_config, tmp_path, monkeypatch) -> Iterator[tuple]:
    """(engine, CrmBuilder, client, signer) with topics in the policy and the app reading that database."""
    monkeypatch.setenv("LIFECYCLE_CRM_URL", db_url)
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(write_consent_config(test_config, tmp_path / "config")))
    signer = EventSigner()
    for conn_id, value in {
        "SENDGRID_DEFAULT": connection_json(
            "generic", password="SG.unused", extra={"webhook_public_key": signer.public_key, "asm_group_id": 42}
        ),
        "LIFECYCLE_DEFAULT": connection_json("generic", host=PUBLIC_BASE, password=LINK_SECRET),
    }.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", value)
    with TestClient(create_app()) as client:
        yield (*crm, client, signer)


def link(message_id: int, contact_id: str, secret: str = LINK_SECRET) -> str:
    return "/unsubscribe?" + urlsplit(make_unsubscribe_url(PUBLIC_BASE, secret, message_id, contact_id, "email")).query


def topic_rows(engine, contact_id: str) -> list[tuple[str, str, str]]:
    p = schema.topic_preferences
    with engine.connect() as conn:
        found = conn.execute(
            select(p.c.topic, p.c.status, p.c.source, p.c.proof)
            .where(p.c.contact_id == contact_id)
            .order_by(p.c.preference_id)
        )
        return [(topic, status, source) for topic, status, source, proof in found if proof]


def channel_state(engine, contact_id: str, channel: str = "email") -> tuple[list[str], str | None]:
    s, k = schema.suppressions, schema.consents
    with engine.connect() as conn:
        listed = conn.execute(select(s.c.reason).where(s.c.contact_id == contact_id, s.c.channel == channel))
        newest = conn.execute(
            select(k.c.status, k.c.source)
            .where(k.c.contact_id == contact_id, k.c.channel == channel)
            .order_by(k.c.captured_at.desc())
        ).first()
        return list(listed.scalars()), (newest.source if newest else None)


def checked(page: str) -> dict[str, bool]:
    """Each checkbox of the page (``topic:offers``) and whether it is checked."""
    boxes = re.findall(r'<input type="checkbox" id="[^"]+" name="(\w+)" value="(\w+)"([^>]*)>', page)
    return {f"{name}:{value}": " checked" in rest for name, value, rest in boxes}


def test_the_page_shows_topics_and_channels_with_labels_and_changes_nothing(centre):
    engine, crm, client, _ = centre
    contact = crm.contact()
    page = client.get(link(add_message(engine, contact, program="promo"), contact))

    assert page.status_code == 200
    assert checked(page.text) == {
        "topic:offers": True,
        "topic:education": True,
        "topic:account_billing": True,
        "channel:email": True,
        "channel:sms": True,
        "channel:whatsapp": True,
    }
    for box in ("topic-offers", "topic-education", "channel-email"):
        assert f'<label for="{box}">' in page.text
    assert 'aria-describedby="topic-offers-hint"' in page.text
    assert re.search(r'id="topic-account_billing"[^>]* disabled', page.text)
    assert "Unsubscribe from “Offers and discounts” messages at once" in page.text
    assert '<form method="post" action="/preferences?token=' in page.text
    assert topic_rows(engine, contact) == [] and channel_state(engine, contact) == ([], "test")


def test_the_form_changes_topics_and_channels_each_with_source_and_proof(centre):
    engine, crm, client, _ = centre
    contact = crm.contact()
    path = link(add_message(engine, contact, program="guide"), contact).replace("/unsubscribe", "/preferences")

    # Offers unticked, email unticked; education, sms and whatsapp kept.
    saved = client.post(path, content="topic=education&channel=sms&channel=whatsapp", headers=FORM)

    assert saved.status_code == 200 and "Your preferences are saved" in saved.text
    assert topic_rows(engine, contact) == [("offers", "withdrawn", "preference_centre")]
    assert channel_state(engine, contact) == (["unsubscribed"], "preference_centre")
    assert checked(saved.text) == {
        "topic:offers": False,
        "topic:education": True,
        "topic:account_billing": True,
        "channel:email": False,
        "channel:sms": True,
        "channel:whatsapp": True,
    }

    # The same form again changes nothing; ticking them back opts back in.
    client.post(path, content="topic=education&channel=sms&channel=whatsapp", headers=FORM)
    assert len(topic_rows(engine, contact)) == 1
    client.post(path, content="topic=offers&topic=education&channel=email&channel=sms&channel=whatsapp", headers=FORM)
    assert topic_rows(engine, contact)[-1] == ("offers", "granted", "preference_centre")
    assert channel_state(engine, contact) == ([], "preference_centre")


def test_a_topic_that_must_be_sent_cannot_be_turned_off_by_a_handmade_form(centre):
    engine, crm, client, _ = centre
    contact = crm.contact()
    path = link(add_message(engine, contact, program="guide"), contact).replace("/unsubscribe", "/preferences")

    client.post(path, content="topic=offers&topic=education&channel=email&channel=sms", headers=FORM)

    assert topic_rows(engine, contact) == []


def test_one_click_unsubscribes_from_the_messages_topic_only(centre):
    engine, crm, client, _ = centre
    contact = crm.contact()
    promo = add_message(engine, contact, program="promo")

    first = client.post(link(promo, contact), **ONE_CLICK)
    again = client.post(link(promo, contact), **ONE_CLICK)

    assert first.status_code == again.status_code == 200
    assert "no more “Offers and discounts” messages" in first.text
    assert topic_rows(engine, contact) == [("offers", "withdrawn", "one_click_unsubscribe")]
    assert channel_state(engine, contact) == ([], "test")  # email marketing otherwise untouched


def test_one_click_from_a_program_without_a_topic_still_unsubscribes_the_channel(centre):
    engine, crm, client, _ = centre
    contact = crm.contact()

    client.post(link(add_message(engine, contact, program="alpha"), contact), **ONE_CLICK)

    assert topic_rows(engine, contact) == []
    assert channel_state(engine, contact) == (["unsubscribed"], "one_click_unsubscribe")


@pytest.mark.parametrize("path", ["/unsubscribe", "/preferences"])
def test_forged_links_are_refused_and_change_nothing(centre, path):
    engine, crm, client, _ = centre
    contact = crm.contact()
    forged = link(add_message(engine, contact, program="promo"), contact, secret="guessed").replace(
        "/unsubscribe", path
    )
    for attempt in (forged, f"{path}?token=%3Cscript%3E", path):
        response = client.post(attempt, content="channel=sms", headers=FORM)
        assert response.status_code == 400 and "<script>" not in response.text
    assert client.get(forged.replace(path, "/unsubscribe")).status_code == 400
    assert topic_rows(engine, contact) == [] and channel_state(engine, contact) == ([], "test")


def test_a_german_contact_sees_the_centre_in_german_and_saving_records_the_same_rows(centre):
    engine, crm, client, _ = centre
    german, english = crm.contact(locale="de-DE"), crm.contact()
    pages = {
        who: client.get(link(add_message(engine, who, program="guide"), who), headers={"Accept-Language": "fr"})
        for who in (german, english)
    }

    page = pages[german].text
    assert '<html lang="de">' in page and pages[german].headers["content-language"] == "de"
    assert "<title>Ihre Abonnement-Einstellungen</title>" in page
    assert "<legend>Themen</legend>" in page and "<legend>Kanäle</legend>" in page
    assert '<button type="submit">Einstellungen speichern</button>' in page
    assert '<button type="submit" class="secondary">Abmelden</button>' in page
    # A topic's label in German where the policy has one (education), else as written (offers).
    assert "Sofort von Nachrichten zu „Tipps und Anleitungen“ abmelden:" in page
    assert '<label for="topic-education">Tipps und Anleitungen</label>' in page
    assert '<label for="topic-offers">Offers and discounts<span class="hint"' in page
    assert "Tips and guides" not in page
    assert '<label for="channel-email">Marketing per E-Mail</label>' in page
    assert "Wird immer gesendet: Wir sind verpflichtet, Sie zu informieren." in page
    # The contact's locale wins over the browser's (French here), for the en-US contact too.
    assert '<html lang="en">' in pages[english].text and "Save preferences" in pages[english].text
    assert checked(page) == checked(pages[english].text)

    form = "topic=education&channel=sms&channel=whatsapp"  # offers and email unticked
    saved = {
        who: client.post(
            link(add_message(engine, who, program="guide"), who).replace("/unsubscribe", "/preferences"),
            content=form,
            headers=FORM,
        )
        for who in (german, english)
    }
    assert saved[german].status_code == saved[english].status_code == 200
    assert '<html lang="de">' in saved[german].text
    assert "Ihre Einstellungen sind gespeichert. Sie gelten ab unserem nächsten Versand." in saved[german].text
    assert checked(saved[german].text) == checked(saved[english].text)
    assert topic_rows(engine, german) == topic_rows(engine, english) == [("offers", "withdrawn", "preference_centre")]
    assert channel_state(engine, german) == channel_state(engine, english) == (["unsubscribed"], "preference_centre")


@pytest.mark.parametrize(
    ("locale", "query", "header", "language", "says"),
    [
        ("fr_FR", "", None, "fr", "Vos préférences d’abonnement"),
        ("pt-BR", "", "de", "pt", "Suas preferências de inscrição"),
        ("nl-BE", "", None, "nl", "Uw abonnementsvoorkeuren"),
        ("it-IT", "", None, "it", "Preferenze di iscrizione"),
        ("es-ES", "", None, "es", "Sus preferencias de suscripción"),
        ("de-DE", "&lang=en", None, "en", "Your subscription preferences"),
        ("xx-YY", "", None, "en", "Your subscription preferences"),
        ("hi-IN", "", "es-MX;q=0.7, en;q=0.2", "es", "Sus preferencias de suscripción"),
        (None, "", ";;q=garbage,,", "en", "Your subscription preferences"),
        ("", "&lang=%3Cscript%3E", None, "en", "Your subscription preferences"),
    ],
)
def test_the_centres_language_comes_from_the_locale_then_the_browser_then_english(
    centre, locale, query, header, language, says
):
    engine, crm, client, _ = centre
    contact = crm.contact(locale=locale)
    headers = {"Accept-Language": header} if header is not None else {}
    page = client.get(link(add_message(engine, contact, program="promo"), contact) + query, headers=headers)
    assert page.status_code == 200 and f'<html lang="{language}">' in page.text and says in page.text
    assert "<script>" not in page.text
    if query == "&lang=en":  # the forms keep the chosen language
        assert "&amp;lang=en" in page.text


def test_one_click_and_a_forged_link_answer_in_the_contacts_or_browsers_language(centre):
    engine, crm, client, _ = centre
    contact = crm.contact(locale="de_DE")
    done = client.post(link(add_message(engine, contact, program="promo"), contact), **ONE_CLICK)
    assert done.status_code == 200 and '<html lang="de">' in done.text
    assert "Sie erhalten keine Nachrichten zu „Offers and discounts“ mehr." in done.text
    assert topic_rows(engine, contact) == [("offers", "withdrawn", "one_click_unsubscribe")]
    channel = client.post(link(add_message(engine, contact, program="alpha"), contact), **ONE_CLICK)
    assert "Sie erhalten keine Marketing-Nachrichten per E-Mail mehr." in channel.text

    forged = client.get("/unsubscribe?token=forged", headers={"Accept-Language": "nl-NL, en;q=0.5"})
    assert forged.status_code == 400 and '<html lang="nl">' in forged.text
    assert "Deze afmeldlink is niet geldig." in forged.text


def test_sendgrid_group_unsubscribes_and_resubscribes_change_the_matching_topic(centre):
    engine, crm, client, signer = centre
    contact = crm.contact()
    message = add_message(engine, contact, program="promo")

    def post(event: str, group: int) -> None:
        body = json.dumps([sg_event(message, event, int(time.time()), asm_group_id=group)])
        assert client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body)).status_code == 200

    post("group_unsubscribe", 102)
    time.sleep(1.1)  # SendGrid stamps events in whole seconds
    post("group_resubscribe", 102)

    assert topic_rows(engine, contact) == [
        ("education", "withdrawn", "sendgrid_group_unsubscribe"),
        ("education", "granted", "sendgrid_group_resubscribe"),
    ]
    assert channel_state(engine, contact) == ([], "test")


def test_the_preference_centre_in_chromium_walked_with_the_keyboard(centre, tmp_path: Path):
    from tests.support.chromium import keyboard_walk, require_chromium

    require_chromium()
    engine, crm, _client, _ = centre
    contact = crm.contact()
    message = add_message(engine, contact, program="promo")
    german = crm.contact(locale="de-DE")
    german_message = add_message(engine, german, program="promo")
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.02)
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        # Tab past the one-click button to the first topic, Space unticks it, Enter sends the form.
        walk = keyboard_walk(
            base + link(message, contact),
            ["Tab", "Tab", "Space", "Enter"],
            before=tmp_path / "preference-centre.png",
            after=tmp_path / "preference-centre-saved.png",
        )
        # The same walk on a German contact's page (locale de-DE), as rendered.
        german_walk = keyboard_walk(
            base + link(german_message, german),
            ["Tab", "Tab", "Space", "Enter"],
            before=tmp_path / "preference-centre-de.png",
            after=tmp_path / "preference-centre-de-saved.png",
        )
    finally:
        server.should_exit = True
        thread.join(5)

    assert walk.focused == ["Unsubscribe", "topic-offers"]
    assert "Your preferences are saved" in walk.final_text
    assert (tmp_path / "preference-centre.png").stat().st_size > 0
    assert (tmp_path / "preference-centre-saved.png").stat().st_size > 0
    assert topic_rows(engine, contact) == [("offers", "withdrawn", "preference_centre")]

    assert german_walk.focused == ["Abmelden", "topic-offers"]
    for shown in (
        "Ihre Abonnement-Einstellungen",
        "Themen",
        "Tipps und Anleitungen",
        "Kanäle",
        "Marketing per E-Mail",
        "Einstellungen speichern",
    ):
        assert shown in german_walk.final_text
    assert "Ihre Einstellungen sind gespeichert" in german_walk.final_text
    assert (tmp_path / "preference-centre-de.png").stat().st_size > 0
    assert topic_rows(engine, german) == [("offers", "withdrawn", "preference_centre")]
