"""Security: forged and replayed webhooks, tampered unsubscribe links, SQL injection through program
files and CRM data, template sandbox escapes, and what a program run writes to its task logs.

Webhooks and unsubscribe links go over HTTP to the real app on loopback (``lifecycle.devtools.local.WebApp``).
The task-log check runs the shipped welcome program through real Airflow on a seeded CRM, sending
through the provider sandbox, with Airflow's own task-log pipeline (JSON, secrets masker) writing
to a file under ``$AIRFLOW_HOME/logs``: ``dag.test()`` runs tasks in-process and writes no per-task
files itself, so the test points that pipeline at one, at INFO level.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import yaml
from markupsafe import escape
from sqlalchemy import func, insert, inspect, select
from sqlalchemy.exc import DBAPIError
from twilio.request_validator import RequestValidator

from lifecycle import config, paths
from lifecycle.channels.providers import ProviderTransport, links_from_connection
from lifecycle.devtools.local import WebApp, connection_json
from lifecycle.devtools.seed import seed_crm
from lifecycle.engine import pipeline
from lifecycle.messages.links import make_unsubscribe_token
from lifecycle.model import schema
from lifecycle.model.addresses import to_e164
from lifecycle.model.db import get_engine, migrate
from lifecycle.reporting.digest import build_digest
from lifecycle.sandbox import DEFAULT_SENDGRID_KEY, DEFAULT_TWILIO_TOKEN
from lifecycle.web.campaigns import campaigns_page
from tests.conftest import AS_OF, FIXTURES
from tests.integration.engine.test_pipeline_bad_input import (
    email_program,
    outcomes,
    provider_sandbox,
    run_probes,
    with_programs,
)
from tests.integration.web.test_webhooks import OPT_OUT_WORDINGS, EventSigner, add_message, recut, sg_event
from tests.support.dagrun import run_dag
from tests.support.journey import run_program
from tests.support.task_log import task_log_file
from tests.support.twilio_forms import inbound_form, message_sid, status_form

pytestmark = pytest.mark.usefixtures("test_config")
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
LINK_SECRET = "security-suite-link-secret"
DROP = "'); DROP TABLE contacts;--"


def counts(engine) -> dict[str, int]:
    """Rows per table, CRM and engine: what an attack must not change."""
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (*schema.crm_metadata.sorted_tables, *schema.engine_metadata.sorted_tables)
        }


def ledger(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(schema.messages.c.message_id, schema.messages.c.status))]


@pytest.fixture
def app(crm, db_url, monkeypatch) -> Iterator[tuple]:
    """(engine, CrmBuilder, signer, HTTP client, public base URL): the web app on loopback."""
    signer = EventSigner()
    web = WebApp().start()
    monkeypatch.setenv("LIFECYCLE_CRM_URL", db_url)
    connections = {
        "SENDGRID_DEFAULT": connection_json(
            "generic", password="SG.security", extra={"webhook_public_key": signer.public_key}
        ),
        "TWILIO_DEFAULT": connection_json("generic", login="ACsecurity", password=DEFAULT_TWILIO_TOKEN),
        "LIFECYCLE_DEFAULT": connection_json("generic", host=web.base_url, password=LINK_SECRET),
    }
    for conn_id, value in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", value)
    with httpx.Client(base_url=web.base_url, timeout=10) as http:
        yield crm[0], crm[1], signer, http, web.base_url
    web.stop()


def twilio_request(
    base_url: str,
    path: str,
    params: dict[str, str],
    token: str = DEFAULT_TWILIO_TOKEN,
    signed_url: str | None = None,
    signed_params: dict[str, str] | None = None,
) -> dict:
    """Keyword arguments for ``http.post``: a form signed the way Twilio signs it (or forged)."""
    signature = RequestValidator(token).compute_signature(signed_url or base_url + path, signed_params or params)
    return {
        "url": path,
        "content": urlencode(params),
        "headers": {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
    }


# --- webhooks -------------------------------------------------------------------------------


@SQLITE_ONLY
def test_forged_tampered_and_stale_webhooks_change_nothing(app):
    engine, crm_rows, signer, http, base_url = app
    ada = crm_rows.contact(phone="+14155550142")
    message = add_message(engine, ada)
    now = int(time.time())
    body = json.dumps([sg_event(message, "unsubscribe", now)])
    good = signer.headers(body)
    spam = body.replace('"unsubscribe"', '"spamreport"')
    stop = inbound_form("+14155550142", "STOP", "forged")
    before = counts(engine), ledger(engine)
    sendgrid = {
        "modified body": (spam, good),
        "event appended": (body[:-1] + ', {"event": "bounce", "email": "ada@example.com"}]', good),
        "body re-serialised": (json.dumps(json.loads(body), indent=1), good),
        "another key": (body, EventSigner().headers(body)),
        "timestamp header changed": (body, good | {"X-Twilio-Email-Event-Webhook-Timestamp": str(now + 1)}),
        "stale": (body, signer.headers(body, now - 11 * 60)),
        "from the future": (body, signer.headers(body, now + 11 * 60)),
        "garbage signature": (body, good | {"X-Twilio-Email-Event-Webhook-Signature": "bm90IGEgc2lnbmF0dXJl"}),
        "not base64": (body, good | {"X-Twilio-Email-Event-Webhook-Signature": "%%%"}),
        "unsigned": (body, {"Content-Type": "application/json"}),
    }
    for attack, (content, headers) in sendgrid.items():
        assert http.post("/webhooks/sendgrid", content=content, headers=headers).status_code == 403, attack
    twilio = {
        "wrong token": twilio_request(base_url, "/webhooks/twilio/inbound", stop, token="guessed"),
        "tampered": twilio_request(base_url, "/webhooks/twilio/inbound", stop, signed_params=stop | {"Body": "hi"}),
        "other url": twilio_request(
            base_url, "/webhooks/twilio/inbound", stop, signed_url=base_url + "/webhooks/twilio/status"
        ),
        "status forged": twilio_request(
            base_url,
            f"/webhooks/twilio/status?lifecycle_message_id={message}",
            status_form(message_sid("one"), "failed"),
            token="guessed",
        ),
    }
    for attack, request in twilio.items():
        assert http.post(**request).status_code == 403, attack
    assert (counts(engine), ledger(engine)) == before


@SQLITE_ONLY
def test_recut_and_oversized_webhooks_change_nothing(app):
    """Signed Twilio forms re-cut between names and values (the signature holds) and bodies over
    the limits, declared or streamed, signed or not: refused, and nothing recorded."""
    engine, crm_rows, signer, http, base_url = app
    crm_rows.contact(phone="+14155550180")
    message = add_message(engine, crm_rows.contact(), channel="sms", provider_message_id=message_sid("sent"))
    inbound = inbound_form("+14155550180", "START", "captured")
    status = status_form(message_sid("sent"), "failed", ErrorCode="30003")
    names = sorted(inbound)
    recuts = [
        twilio_request(base_url, "/webhooks/twilio/inbound", recut(inbound, name, into), signed_params=inbound)
        for into, name in zip(names, names[1:], strict=False)
    ] + [
        twilio_request(
            base_url,
            f"/webhooks/twilio/status?lifecycle_message_id={message}",
            recut(status, name, into),
            signed_url=f"{base_url}/webhooks/twilio/status?lifecycle_message_id={message}",
            signed_params=status,
        )
        for into, name in zip(sorted(status), sorted(status)[1:], strict=False)
    ]
    validator = RequestValidator(DEFAULT_TWILIO_TOKEN)
    for request in recuts:
        form = dict(parse_qsl(request["content"], keep_blank_values=True))
        url = base_url + request["url"]
        assert validator.validate(url, form, request["headers"]["X-Twilio-Signature"]), request
    sendgrid_headers = signer.headers("[]")
    big, huge = b"[" + b" " * (6 * 1024 * 1024) + b"]", b"x" * (64 * 1024 * 1024)
    oversized = [
        ("/webhooks/sendgrid", big, sendgrid_headers, 413),
        ("/webhooks/sendgrid", iter([big[i : i + 65536] for i in range(0, len(big), 65536)]), sendgrid_headers, 413),
        ("/webhooks/sendgrid", huge, {}, 403),
        ("/webhooks/twilio/inbound", b"Body=" + b"x" * (2 * 1024 * 1024), {"X-Twilio-Signature": "c2ln"}, 413),
        ("/webhooks/twilio/status", iter([b"x" * 65536] * 40), {"X-Twilio-Signature": "c2ln"}, 413),
        ("/webhooks/twilio/inbound", huge, {}, 403),
    ]
    before = counts(engine), ledger(engine)

    for request in recuts:
        assert http.post(**request).status_code == 403, request["content"]
    for path, content, headers, expected in oversized:
        assert http.post(path, content=content, headers=headers).status_code == expected, path

    assert (counts(engine), ledger(engine)) == before
    assert (len(recuts), len(oversized)) == (18, 6)  # the README's Security row


@SQLITE_ONLY
def test_every_opt_out_wording_withdraws_consent(app):
    engine, crm_rows, _signer, http, base_url = app
    numbers = {f"+1415555{2000 + n:04d}": body for n, body in enumerate(OPT_OUT_WORDINGS)}
    contacts = {number: crm_rows.contact(phone=number) for number in numbers}

    for number, body in numbers.items():
        request = twilio_request(base_url, "/webhooks/twilio/inbound", inbound_form(number, body))
        assert http.post(**request).status_code == 200, body

    with engine.connect() as conn:
        stopped = set(
            conn.execute(
                select(schema.suppressions.c.contact_id).where(schema.suppressions.c.reason == "sms_stop")
            ).scalars()
        )
    assert stopped == set(contacts.values())
    assert len(OPT_OUT_WORDINGS) == 29  # the README's Security row


def test_a_replayed_signed_batch_is_recorded_once(app):
    engine, crm_rows, signer, http, base_url = app
    ada, bob, cy = crm_rows.contact(), crm_rows.contact(), crm_rows.contact(phone="+14155550143")
    first, second = add_message(engine, ada), add_message(engine, bob)
    now = int(time.time())
    body = json.dumps(
        [
            sg_event(first, "delivered", now),
            sg_event(first, "open", now + 1),
            sg_event(second, "bounce", now, type="bounce"),
            sg_event(second, "unsubscribe", now + 2),
        ]
    )
    headers = signer.headers(body)
    stop = twilio_request(base_url, "/webhooks/twilio/inbound", inbound_form("+14155550143", "STOP", "stop"))
    answers = [http.post("/webhooks/sendgrid", content=body, headers=headers).json() for _ in range(3)]
    stops = [http.post(**stop).status_code for _ in range(3)]
    assert [a["new"] for a in answers] == [4, 0, 0] and stops == [200, 200, 200]
    after_first = counts(engine), ledger(engine)
    http.post("/webhooks/sendgrid", content=body, headers=headers)
    http.post(**stop)
    assert (counts(engine), ledger(engine)) == after_first
    events = schema.provider_events
    with engine.connect() as conn:
        recorded = conn.execute(select(events.c.event_id, func.count()).group_by(events.c.event_id)).all()
        suppressed = conn.execute(select(schema.suppressions.c.contact_id, schema.suppressions.c.reason)).all()
        withdrawn = (
            conn.execute(select(schema.consents.c.contact_id).where(schema.consents.c.status == "withdrawn"))
            .scalars()
            .all()
        )
    assert sorted(n for _id, n in recorded) == [1] * 5
    assert sorted(suppressed) == sorted([(bob, "hard_bounce"), (bob, "unsubscribed"), (cy, "sms_stop")])
    assert sorted(withdrawn) == sorted([bob, cy])


# --- unsubscribe links ----------------------------------------------------------------------


def _swap(token: str, **changes) -> str:
    """The token with its payload changed and its signature kept."""
    payload, mac = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))) | changes
    forged = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{forged}.{mac}"


@SQLITE_ONLY
def test_tampered_unsubscribe_tokens_are_refused_and_record_nothing(app):
    engine, crm_rows, _signer, http, _base_url = app
    ada, bob = crm_rows.contact(), crm_rows.contact()
    message = add_message(engine, ada)
    token = make_unsubscribe_token(LINK_SECRET, message, ada, "email")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    flipped = [
        token[:i] + alphabet[(alphabet.index(c) + 1) % 64] + token[i + 1 :] for i, c in enumerate(token) if c != "."
    ]
    forged = [
        *flipped,
        _swap(token, c=bob),
        _swap(token, ch="sms"),
        _swap(token, m=message + 1),
        make_unsubscribe_token("guessed-secret", message, ada, "email"),
        make_unsubscribe_token(LINK_SECRET + " ", message, ada, "email"),
        token + "=",
        token + "!!",
        token[:-1],
        token.replace(".", ".."),
        "",
        "null",
        "%00",
    ]
    before = counts(engine), ledger(engine)
    for bad in forged:
        for method in ("GET", "POST"):
            response = http.request(method, f"/unsubscribe?{urlencode({'token': bad})}")
            assert response.status_code == 400, (method, bad)
            assert "not valid" in response.text
    assert (counts(engine), ledger(engine)) == before
    assert http.post(f"/unsubscribe?{urlencode({'token': token})}").status_code == 200
    with engine.connect() as conn:
        assert conn.execute(select(schema.suppressions.c.contact_id)).scalars().all() == [ada]


# --- SQL injection ----------------------------------------------------------------------------


INJECTED = [DROP, "x' OR '1'='1", "1; DELETE FROM events; --", "o' OR 1=1", "\\'; DROP TABLE tickets; --"]


def test_injection_through_program_values_is_plain_data(crm, tmp_path, monkeypatch):
    """Segment values, event property values, related-table values, trigger event names and salts
    reach the database as bound parameters: they match only themselves and drop nothing."""
    engine, crm_rows = crm
    programs = {
        "by_name": email_program({"attribute": "first_name", "in": INJECTED}, holdout_salt=DROP),
        "by_stage": email_program({"attribute": "lifecycle_stage", "eq": INJECTED[1]}),
        "by_product": email_program({"event": "purchase", "within_last": "7d", "where": {"product": INJECTED[2]}}),
        "by_ticket": email_program({"related": "tickets", "where": {"status": INJECTED[3]}}),
    }
    programs["by_product"]["audience"]["trigger_event"] = INJECTED
    programs["by_name"]["ab_test"] = {
        "name": "t",
        "variable": "subject",
        "salt": DROP,
        "variants": [{"name": "A", "weight": 1}, {"name": "B", "weight": 1}],
    }
    with_programs(tmp_path, monkeypatch, programs)
    named = crm_rows.contact(first_name=DROP)
    crm_rows.contact(lifecycle_stage="lead")
    buyer = crm_rows.contact()
    crm_rows.event(buyer, "purchase", AS_OF, product=INJECTED[2])
    crm_rows.event(crm_rows.contact(), "purchase", AS_OF, product="Pro")
    ticketed = crm_rows.contact()
    crm_rows.row("tickets", ticket_id="t1", contact_id=ticketed, status=INJECTED[3], opened_at=AS_OF)
    crm_rows.row("tickets", ticket_id="t2", contact_id=crm_rows.contact(), status="open", opened_at=AS_OF)
    before = counts(engine)

    for program in programs:
        run_program(engine, program, AS_OF)

    assert {p: set(outcomes(engine, p)) for p in programs} == {
        "by_name": {named},
        "by_stage": set(),
        "by_product": {buyer},
        "by_ticket": {ticketed},
    }
    after = counts(engine)
    assert {t: after[t] for t in schema.crm_metadata.tables} == {t: before[t] for t in schema.crm_metadata.tables}
    assert set(inspect(engine).get_table_names()) >= set(schema.crm_metadata.tables)


@pytest.mark.parametrize(
    ("segment", "field"),
    [
        ({"segment": DROP}, "audience.segment: unknown named segment"),
        ({"event": "purchase", "where": {DROP: "x"}}, "audience.segment: segment.where"),
        ({"attribute": DROP, "eq": "x"}, "audience.segment: segment: unknown column"),
        ({"related": f"tickets{DROP}"}, "audience.segment: segment.related: unknown table"),
    ],
)
def test_injection_in_names_is_a_config_error(tmp_path, segment, field):
    """Names (of segments, properties, columns, tables) never reach SQL unchecked."""
    path = tmp_path / "evil.yml"
    path.write_text(yaml.safe_dump(email_program(segment)))
    with pytest.raises(config.ConfigError) as err:
        config.load_program(path, config.load_segments())
    assert str(err.value).startswith(f"{path}: {field}")


def test_crm_data_full_of_payloads_is_sent_as_text(sandbox_crm):
    """A contact named like an SQL injection, with markup and template syntax around it, gets the
    message with the name as written (escaped in HTML), and every table is intact."""
    engine, crm_rows, server = sandbox_crm
    names = {
        "sql": DROP,
        "html": "<script>alert('x')</script>",
        "template": "{{ 7 * 7 }}{% raw %}",
        "quote": 'Ada "the" O\'Neil',
    }
    ids = {kind: crm_rows.contact(first_name=name, account_id=f"acct-{kind}") for kind, name in names.items()}
    for kind in names:
        crm_rows.row("accounts", account_id=f"acct-{kind}", name=DROP, industry="<b>x</b>", tier="{{ 1 }}")
    before = counts(engine)

    scope, programs = pipeline.load_scope("alpha", "security", AS_OF)
    pipeline.run_program(engine, scope, programs, ProviderTransport(), links=links_from_connection())

    received = {m["to"]: m for m in server.sendgrid_messages()}
    for kind, name in names.items():
        email = received[f"{ids[kind]}@example.com"]
        assert email["subject"] == f"Hello {name} from alpha"
        assert email["text"].startswith(f"Hello {name}\n")
        assert f"<p>Hello {escape(name)}</p>" in email["html"]
    assert "<p>Hello &#39;); DROP TABLE contacts;--</p>" in received[f"{ids['sql']}@example.com"]["html"]
    assert {t: n for t, n in counts(engine).items() if t in schema.crm_metadata.tables} == {
        t: n for t, n in before.items() if t in schema.crm_metadata.tables
    }


@pytest.fixture
def sandbox_crm(crm, db_url, monkeypatch):
    """(engine, CrmBuilder, sandbox)."""
    with provider_sandbox(db_url, monkeypatch, LINK_SECRET) as server:
        yield crm[0], crm[1], server


# --- template sandbox --------------------------------------------------------------------------


ESCAPES = {
    "mro": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "SecurityError: access to attribute '__class__'"),
    "globals": ("{{ cycler.__init__.__globals__.os }}", "SecurityError: access to attribute '__init__'"),
    "self": ("{{ self.__init__.__globals__ }}", "SecurityError: access to attribute '__init__'"),
    "lipsum": ("{{ lipsum.__globals__['os'].popen('id').read() }}", "SecurityError: access to attribute '__globals__'"),
    "range": ("{{ range.__globals__ }}", "SecurityError: access to attribute '__globals__'"),
    "private": ("{{ contact.__class__ }}", "SecurityError: access to attribute '__class__'"),
    "attr-filter": ("{{ contact|attr('__class__') }}", "SecurityError: access to attribute '__class__'"),
    "format": ("{{ '{0.__class__}'.format(contact) }}", "SecurityError: access to attribute '__class__'"),
    "mutate": ("{{ contact.update({'first_name': 'x'}) }}", "SecurityError: access to attribute 'update'"),
    "include-abs": ("{% include '/etc/passwd' %}", "TemplateNotFound: '/etc/passwd' not found"),
    "include-up": ("{% include '../../../../etc/passwd' %}", "TemplateNotFound: ../../../../etc/passwd"),
    "import-os": ("{% import 'os' as os %}", "TemplateNotFound: 'os' not found"),
    "config": ("{{ config.items() }}", "UndefinedError: 'config' is undefined"),
    "request": ("{{ request.environ }}", "UndefinedError: 'request' is undefined"),
}


@SQLITE_ONLY
@pytest.mark.timeout(60)
def test_template_sandbox_escapes_fail_only_their_message(crm, tmp_path, monkeypatch):
    engine, crm_rows = crm
    bodies = {case: body for case, (body, _expected) in ESCAPES.items()}
    result = run_probes(tmp_path, monkeypatch, engine, crm_rows, bodies)
    for case, (_body, expected) in ESCAPES.items():
        status, reason = result[case]
        assert status == "failed" and reason.startswith(f"template probe/t.html.j2: {expected}"), (case, reason)


# --- pages for people --------------------------------------------------------------------------


@SQLITE_ONLY
def test_campaigns_page_and_digest_escape_what_they_show(crm, tmp_path, monkeypatch):
    """Program names, labels and the error of a broken program file are escaped; CRM strings do not
    appear at all (both show figures only)."""
    engine, crm_rows = crm
    config_dir, templates = tmp_path / "config", tmp_path / "templates"
    shutil.copytree(FIXTURES / "config", config_dir)
    shutil.copytree(FIXTURES / "templates", templates)
    for pages in ("_web", "_digest"):
        shutil.copytree(paths.PROJECT_ROOT / "include" / "templates" / pages, templates / pages)
    alpha = yaml.safe_load((config_dir / "programs" / "alpha.yml").read_text())
    alpha |= {"name": "Alpha <script>alert(1)</script>", "owner": "<img src=x onerror=alert(2)>"}
    alpha["kpi"]["label"] = "Rate <iframe src=//evil>"
    (config_dir / "programs" / "alpha.yml").write_text(yaml.safe_dump(alpha))
    (config_dir / "programs" / "broken.yml").write_text("id: '<svg onload=alert(3)>'\n")
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(templates))
    crm_rows.contact(first_name="<script>crm()</script>", email="crm-name@example.com")
    run_program(engine, "alpha", AS_OF)
    programs, errors = config.load_all_programs()

    page = campaigns_page(engine, AS_OF)
    digest = build_digest(engine, programs, config.load_policy(), AS_OF, errors).html

    for html in (page, digest):
        assert "<script>" not in html and "<svg" not in html and "<iframe" not in html
        assert "&lt;svg onload=alert(3)&gt;" in html
        assert "crm()" not in html and "crm-name@example.com" not in html
    assert "Alpha &lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "Rate &lt;iframe src=//evil&gt;" in digest


# --- task logs ---------------------------------------------------------------------------------


def _addresses(engine) -> set[str]:
    """Every email and phone of the CRM as written, as normalised, and phones as E.164 and digits."""
    with engine.connect() as conn:
        rows = conn.execute(select(schema.contacts.c.email, schema.contacts.c.phone, schema.contacts.c.country))
        found = set()
        for email, phone, country in rows:
            if email and email.strip():
                found |= {email.strip().lower()}
            if phone and phone.strip():
                e164 = to_e164(phone, country)
                found |= {phone.strip().lower(), *([e164, e164[1:]] if e164 else [])}
    return {value for value in found if len(value) >= 6}


def test_a_database_error_shows_no_address(crm, caplog):
    """A failed statement's error (what a task log prints) says what failed, never the emails or
    phone numbers it carried: engines hide statement parameters."""
    engine, crm_rows = crm
    taken = crm_rows.contact(email="leak.me@example.com", phone="+14155550177")
    row = {"contact_id": taken, "email": "leak.me@example.com", "phone": "+14155550177", "lifecycle_stage": "lead"}

    with pytest.raises(DBAPIError) as failed, engine.begin() as conn:
        conn.execute(insert(schema.contacts).values(row))
    logging.getLogger("lifecycle.test").exception("insert failed")

    text = f"{failed.value}\n{failed.value!r}\n{caplog.text}"
    assert "INSERT INTO contacts" in text
    assert "leak.me@example.com" not in text and "4155550177" not in text


@pytest.fixture
def task_log(monkeypatch) -> Iterator[Path]:
    """Airflow's task-log pipeline (JSON lines, secrets masker) writing INFO and up to a file under
    ``$AIRFLOW_HOME/logs``, as the task supervisor does for every task it runs."""
    with task_log_file("welcome", "security") as path:
        yield path


@pytest.mark.airflow
@pytest.mark.usefixtures("airflow_db")
def test_task_logs_hold_no_address_and_no_secret(sqlite_url, monkeypatch, task_log):
    monkeypatch.delenv("LIFECYCLE_CONFIG_DIR")
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR")
    seed_crm(sqlite_url, 300, AS_OF)
    engine = get_engine(sqlite_url)
    migrate(engine)
    with provider_sandbox(sqlite_url, monkeypatch, LINK_SECRET, web_process=True) as server:
        assert run_dag(monkeypatch, sqlite_url, "welcome", datetime(2026, 11, 16, 15, tzinfo=UTC)) == "success"
        sent = [m["to"] for m in server.sendgrid_messages()] + [m["to"] for m in server.twilio_messages()]

    logs = {
        p: p.read_text(errors="replace") for p in (Path(os.environ["AIRFLOW_HOME"]) / "logs").rglob("*") if p.is_file()
    }
    text = "\n".join(logs.values()).lower()
    assert sent and task_log in logs
    for task in ("evaluate_segment", "enroll_and_exit", "plan_due_steps", "suppress", "cap", "send", "log_kpis"):
        assert re.search(rf'"{task} welcome as of 2026-11-16t15:00:00', text), task
    addresses = _addresses(engine)
    assert len(addresses) > 300
    leaked = sorted(a for a in addresses if a in text)
    assert leaked == [], f"{len(leaked)} CRM addresses in task logs, e.g. {leaked[:3]}"
    for secret in (DEFAULT_SENDGRID_KEY, DEFAULT_TWILIO_TOKEN, LINK_SECRET):
        assert secret.lower() not in text
