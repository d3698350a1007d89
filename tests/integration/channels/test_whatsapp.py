"""The WhatsApp channel through the engine and the provider sandbox (Twilio's Messages API, real
SDK): WhatsApp consent, its own STOP list, caps; free-form only inside the contact's 24-hour
window, the approved content template outside it, and a failure with its reason when a step has
no template; 429/5xx answers, a worker dying mid-batch and duplicate callbacks with no message
sent twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from lifecycle import config
from lifecycle.channels.providers import ProviderTransport, links_from_connection
from lifecycle.channels.twilio import TwilioHook
from lifecycle.devtools.local import WebApp, provider_connections
from lifecycle.engine import dispatch, feedback, pipeline
from lifecycle.messages.links import PublicLinks
from lifecycle.model import schema
from lifecycle.sandbox import SandboxServer
from tests.conftest import AS_OF
from tests.support.invariants import DyingTransport, WorkerDied, deliveries, stage_run
from tests.support.journey import messages, messages_already_sent
from tests.support.local_crm import use_crm
from tests.support.whatsapp import (
    OUTSIDE_WINDOW,
    TEMPLATE_SID,
    TEMPLATE_TEXT,
    outbound,
    phone_of,
    use_whatsapp_programs,
    whatsapp_contact,
    wrote,
)
from tests.unit.channels.test_hooks import FAST, WHATSAPP_SENDER, connect_to_sandbox

LINKS = PublicLinks("https://app.test/lifecycle", "test-secret")


@pytest.fixture
def sandbox(monkeypatch) -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        connect_to_sandbox(monkeypatch, server, public_base_url="https://app.test/lifecycle")
        server.approve_content(TEMPLATE_SID, TEMPLATE_TEXT)
        yield server


@pytest.fixture
def whatsapp_config(tmp_path: Path, monkeypatch) -> Path:
    return use_whatsapp_programs(tmp_path, monkeypatch)


def _links(message_id: int, contact_id: str, channel: str) -> dict[str, str]:
    return {"unsubscribe": LINKS.unsubscribe_url(message_id, contact_id, channel)}


def _run(engine, program: str, as_of: datetime = AS_OF) -> None:
    scope, programs = pipeline.load_scope(program, f"{program}__{as_of.isoformat()}", as_of)
    transport = ProviderTransport(TwilioHook(retry_policy=FAST), links=LINKS)
    pipeline.run_program(engine, scope, programs, transport, links=_links)


def _outcomes(engine, program: str) -> dict[str, tuple[str, str | None]]:
    return {m["contact_id"]: (m["status"], m["reason"]) for m in messages(engine, program)}


def test_whatsapp_goes_only_with_whatsapp_consent_and_off_its_stop_list(crm, whatsapp_config, sandbox):
    engine, c = crm
    written = whatsapp_contact(c, first_name="Ada")
    sms_only = whatsapp_contact(c, consent={"sms": "granted", "email": "granted"})
    withdrawn = whatsapp_contact(c)
    c.consent(withdrawn, "whatsapp", "withdrawn", at=AS_OF - timedelta(days=2))
    stopped = whatsapp_contact(c)
    with engine.begin() as conn:
        conn.execute(
            insert(schema.suppressions).values(
                contact_id=stopped, channel="whatsapp", reason="whatsapp_stop", source="test", created_at=AS_OF
            )
        )
    sms_stopped = whatsapp_contact(c)
    with engine.begin() as conn:
        conn.execute(
            insert(schema.suppressions).values(
                contact_id=sms_stopped, channel="sms", reason="sms_stop", source="test", created_at=AS_OF
            )
        )

    _run(engine, "chats")

    assert _outcomes(engine, "chats") == {
        written: ("sent", None),
        sms_only: ("suppressed", "no_consent"),
        withdrawn: ("suppressed", "consent_withdrawn"),
        stopped: ("suppressed", "whatsapp_stop"),
        sms_stopped: ("sent", None),
    }
    sent = outbound(sandbox)
    assert sorted(sent) == sorted(phone_of(engine, cid) for cid in (written, sms_stopped))
    assert {m["from"] for m in sent.values()} == {f"whatsapp:{WHATSAPP_SENDER}"}


def test_free_form_inside_the_window_the_template_outside_it_and_without_one_a_failure(crm, whatsapp_config, sandbox):
    engine, c = crm
    inside = whatsapp_contact(c, first_name="Ada")
    wrote(sandbox, engine, inside, timedelta(hours=1))
    outside = whatsapp_contact(c, first_name="Grace")
    wrote(sandbox, engine, outside, timedelta(hours=25))
    never = whatsapp_contact(c, first_name="Linus")
    note_inside = whatsapp_contact(c, "notes", first_name="Barbara")
    wrote(sandbox, engine, note_inside, timedelta(hours=23))
    note_outside = whatsapp_contact(c, "notes", first_name="Edsger")
    wrote(sandbox, engine, note_outside, timedelta(days=3))

    _run(engine, "chats")
    _run(engine, "notes")

    assert _outcomes(engine, "chats") == {inside: ("sent", None), outside: ("sent", None), never: ("sent", None)}
    assert _outcomes(engine, "notes") == {
        note_inside: ("sent", None),
        note_outside: ("failed", OUTSIDE_WINDOW),
    }
    sent = outbound(sandbox)
    phone = {cid: phone_of(engine, cid) for cid in (inside, outside, never, note_inside, note_outside)}
    assert sent[phone[inside]]["body"] == "Lifecycle: hi Ada, thanks for writing to us."
    assert sent[phone[note_inside]]["body"] == "Lifecycle: hi Barbara, thanks for writing to us."
    assert sent[phone[outside]]["body"] == "Hi Grace, news from Lifecycle is waiting for you."
    assert sent[phone[never]]["body"] == "Hi Linus, news from Lifecycle is waiting for you."
    assert phone[note_outside] not in sent


def test_the_sandbox_refuses_free_form_outside_the_window_and_unknown_templates(sandbox):
    hook = TwilioHook(retry_policy=FAST)

    with pytest.raises(Exception, match="twilio 63016"):
        hook.send_whatsapp("+14155550177", body="Hello")
    with pytest.raises(Exception, match="twilio 21655"):
        hook.send_whatsapp("+14155550177", content_sid="HX" + "b" * 32, content_variables={"1": "Ada"})
    sandbox.inbound_sms("whatsapp:+14155550177", "hello?")
    assert hook.send_whatsapp("+14155550177", body="Hello").status == "queued"


def test_whatsapp_cap_and_all_channels_cap_hold(crm, whatsapp_config, sandbox):
    engine, c = crm
    written_this_week = whatsapp_contact(c)
    messages_already_sent(engine, written_this_week, 1, channel="whatsapp")
    busy = whatsapp_contact(c)
    messages_already_sent(engine, busy, 3, channel="email")
    fresh = whatsapp_contact(c)

    _run(engine, "chats")

    assert _outcomes(engine, "chats") == {
        written_this_week: ("capped", "frequency_cap_whatsapp: 1 per 7d"),
        busy: ("capped", "frequency_cap_all: 3 per 7d"),
        fresh: ("sent", None),
    }


def _inbound(phone: str, body: str, sid: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": f"whatsapp:{phone}",
        "To": f"whatsapp:{WHATSAPP_SENDER}",
        "Body": body,
    }


def test_an_inbound_whatsapp_stop_lists_the_contact_and_is_recorded(crm, whatsapp_config, sandbox):
    engine, c = crm
    stopping = whatsapp_contact(c)
    chatting = whatsapp_contact(c)
    now = datetime(2026, 11, 16, 12, 0)
    events = [
        feedback.twilio_inbound_event(_inbound(phone_of(engine, stopping), "STOP", "SM" + "1" * 32), now),
        feedback.twilio_inbound_event(_inbound(phone_of(engine, chatting), "Where is my order?", "SM" + "2" * 32), now),
    ]
    with engine.begin() as conn:
        assert feedback.apply_events(conn, events, now) == 2
        assert feedback.apply_events(conn, events, now) == 0  # a duplicate webhook changes nothing

    _run(engine, "chats")

    assert _outcomes(engine, "chats") == {stopping: ("suppressed", "whatsapp_stop"), chatting: ("sent", None)}
    with engine.connect() as conn:
        recorded = conn.execute(select(schema.provider_events.c.contact_id, schema.provider_events.c.event_type))
        assert sorted(recorded) == sorted([(stopping, "whatsapp_inbound_stop"), (chatting, "whatsapp_inbound_message")])
        listed = conn.execute(select(schema.suppressions.c.channel, schema.suppressions.c.reason)).all()
    assert listed == [("whatsapp", "whatsapp_stop")]


@pytest.mark.parametrize("fault", ["429", "500", "503"])
def test_provider_429_and_5xx_are_retried_with_no_message_sent_twice(crm, whatsapp_config, sandbox, fault):
    engine, c = crm
    contacts = [whatsapp_contact(c) for _ in range(3)]
    sandbox.add_fault("twilio", fault, count=2, retry_after=0)

    _run(engine, "chats")

    assert {cid: status for cid, (status, _reason) in _outcomes(engine, "chats").items()} == dict.fromkeys(
        contacts, "sent"
    )
    assert set(deliveries(sandbox).values()) == {1} and len(deliveries(sandbox)) == 3


def test_a_worker_dying_mid_batch_then_retried_sends_no_message_twice(crm, whatsapp_config, sandbox, monkeypatch):
    engine, c = crm
    contacts = [whatsapp_contact(c) for _ in range(3)]
    run_id = "chats__crash"
    (batch,) = stage_run(engine, "chats", run_id, AS_OF)
    brand = config.load_policy().brand.model_dump()
    monkeypatch.setattr(dispatch, "CLAIM_LEASE", timedelta(0))  # the dead worker's requests are long over

    with pytest.raises(WorkerDied):
        dispatch.send_batch(engine, run_id, batch, DyingTransport(survivors=2), links=_links, brand=brand)
    transport = ProviderTransport(TwilioHook(retry_policy=FAST), links=LINKS)
    dispatch.send_batch(engine, run_id, batch, transport, links=_links, brand=brand)

    # WhatsApp cannot be looked up (a template's text is Twilio's), so what the dead worker left
    # unsettled stays unknown and is never sent blindly.
    accepted = deliveries(sandbox)
    assert set(accepted.values()) == {1} and len(accepted) == 2
    assert {cid: status for cid, (status, _reason) in _outcomes(engine, "chats").items()} == dict.fromkeys(
        contacts, "unknown"
    )


def test_duplicate_status_callbacks_move_a_message_once(crm, whatsapp_config, sandbox):
    engine, c = crm
    contact = whatsapp_contact(c)
    _run(engine, "chats")
    [message] = messages(engine, "chats")
    callback = {
        "MessageSid": message["provider_message_id"],
        "MessageStatus": "delivered",
        "AccountSid": "AC" + "0" * 32,
        "To": f"whatsapp:{phone_of(engine, contact)}",
        "From": f"whatsapp:{WHATSAPP_SENDER}",
    }
    now = datetime(2026, 11, 16, 12, 0)
    event = feedback.twilio_status_event(callback, now, message["message_id"])
    with engine.begin() as conn:
        applied = [feedback.apply_events(conn, [event], now) for _ in range(3)]

    assert applied == [1, 0, 0]
    assert _outcomes(engine, "chats") == {contact: ("delivered", None)}
    assert Counter(deliveries(sandbox).values()) == {1: 1}


@pytest.fixture
def loop(crm, db_url, monkeypatch, whatsapp_config):
    """The webhook app on loopback, and the sandbox posting signed inbound messages and status
    callbacks to it."""
    use_crm(monkeypatch, db_url)
    web = WebApp().start()
    with SandboxServer(twilio_inbound_url=f"{web.base_url}/webhooks/twilio/inbound") as server:
        for key, value in provider_connections(server, web.base_url, "loop-secret").items():
            monkeypatch.setenv(key, value)
        server.approve_content(TEMPLATE_SID, TEMPLATE_TEXT)
        yield crm[0], crm[1], server
    web.stop()


def test_signed_inbound_messages_and_status_callbacks_reach_the_ledger(loop):
    engine, c, sandbox = loop
    stopping, chatting = whatsapp_contact(c), whatsapp_contact(c, first_name="Ada")
    sandbox.inbound_sms(f"whatsapp:{phone_of(engine, stopping)}", "Stop please")
    sandbox.inbound_sms(f"whatsapp:{phone_of(engine, chatting)}", "Is my order on its way?")
    sandbox.flush()

    scope, programs = pipeline.load_scope("chats", "chats__loop", AS_OF)
    pipeline.run_program(engine, scope, programs, ProviderTransport(), links=links_from_connection())
    sandbox.flush()

    assert _outcomes(engine, "chats") == {stopping: ("suppressed", "whatsapp_stop"), chatting: ("delivered", None)}
    assert outbound(sandbox)[phone_of(engine, chatting)]["body"] == "Lifecycle: hi Ada, thanks for writing to us."
    with engine.connect() as conn:
        events = Counter(conn.execute(select(schema.provider_events.c.event_type)).scalars())
    assert events == {
        "whatsapp_inbound_stop": 1,
        "whatsapp_inbound_message": 1,
        "status_sent": 1,
        "status_delivered": 1,
    }
