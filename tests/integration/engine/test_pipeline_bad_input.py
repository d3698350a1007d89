"""The bad-input corpus: what a real CRM holds, and broken templates, through whole program runs.

The CRM tables are the user's, so the bad rows go in with raw SQL wherever the column type lets
them: SQLite keeps almost anything (text in a timestamp column, broken JSON), PostgreSQL only
what its types allow, so some cases run on SQLite alone. Each case checks the same three
things: the run finishes, the bad row ends as a suppressed or failed message with a reason that
says why (or is not eligible at all), and every other message goes out.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from lifecycle.channels.email import MAX_SUBJECT
from lifecycle.channels.providers import ProviderTransport, links_from_connection
from lifecycle.channels.sms import sms_segments
from lifecycle.devtools.local import WebApp, provider_connections
from lifecycle.engine import pipeline
from lifecycle.model import schema
from lifecycle.model.ledger import WENT_OUT
from lifecycle.sandbox import SandboxServer
from tests.conftest import AS_OF, FIXTURES
from tests.support.crm_builder import CrmBuilder
from tests.support.journey import enrollments, messages, run_program
from tests.support.local_crm import use_crm

pytestmark = pytest.mark.usefixtures("test_config")
SIMPLE_KPI = {
    "primary": "conversion",
    "label": "Conversion",
    "conversion": {"event": "purchase", "since": "enrollment"},
}


def outcomes(engine, program: str) -> dict[str, tuple[str, str | None]]:
    """``{contact_id: (status, reason)}`` of a program's ledger (one message per contact here)."""
    rows = messages(engine, program)
    assert len({m["contact_id"] for m in rows}) == len(rows), "a contact got two messages"
    return {m["contact_id"]: (m["status"], m["reason"]) for m in rows}


def raw(engine, sql: str, **params) -> None:
    """Write the CRM the way a user's own tooling might: plain SQL, no model in between."""
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def with_programs(tmp_path: Path, monkeypatch, programs: dict[str, dict], templates: dict[str, str] | None = None):
    """Use the fixture policy and segments with ``programs`` (id -> file content) and the fixture
    templates plus ``templates`` (relative path -> text)."""
    config_dir, templates_dir = tmp_path / "config", tmp_path / "templates"
    (config_dir / "programs").mkdir(parents=True)
    for name in ("policy.yml", "segments.yml"):
        shutil.copy(FIXTURES / "config" / name, config_dir / name)
    for program_id, program in programs.items():
        (config_dir / "programs" / f"{program_id}.yml").write_text(yaml.safe_dump(program))
    shutil.copytree(FIXTURES / "templates", templates_dir)
    for relative, body in (templates or {}).items():
        (templates_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (templates_dir / relative).write_text(body)
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(templates_dir))


def email_program(segment: dict, template: str = "simple/hello", **fields) -> dict:
    """A one-step email program for ``segment``."""
    return {
        "name": "Probe",
        "owner": "tests",
        "priority": 30,
        "schedule": None,
        "audience": {"segment": segment},
        "steps": [{"id": "hello", "channel": "email", "template": template}],
        "holdout_percent": 0,
        "kpi": SIMPLE_KPI,
    } | fields


@pytest.fixture
def sqlite_crm(sqlite_url):
    """An empty SQLite CRM, for the inputs only SQLite can hold."""
    from lifecycle.model.db import get_engine, migrate

    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    return engine, CrmBuilder(engine, AS_OF)


# --- ids -------------------------------------------------------------------------------------


def test_a_contacts_view_with_repeated_and_missing_ids(crm):
    """``contacts`` may be a view over the user's warehouse, which guarantees no key."""
    engine, crm_rows = crm
    first, twin, last = crm_rows.contact(), crm_rows.contact(), crm_rows.contact()
    raw(engine, "ALTER TABLE contacts RENAME TO contacts_base")
    raw(engine, "CREATE TABLE contacts_extra AS SELECT * FROM contacts_base WHERE 1 = 0")
    raw(engine, "CREATE VIEW contacts AS SELECT * FROM contacts_base UNION ALL SELECT * FROM contacts_extra")
    raw(engine, "INSERT INTO contacts_extra SELECT * FROM contacts_base WHERE contact_id = :id", id=twin)
    raw(engine, "UPDATE contacts_extra SET email = 'someone.else@example.com'")
    raw(
        engine,
        "INSERT INTO contacts_extra (contact_id, email, lifecycle_stage) VALUES (NULL, 'no.id@example.com', 'lead')",
    )

    run_program(engine, "alpha", AS_OF)

    result = outcomes(engine, "alpha")
    assert result[first] == result[last] == ("dry_run", None)
    assert result[twin] == ("failed", "ambiguous CRM data: the contact id is on more than one row of contacts")
    assert None not in {e["contact_id"] for e in enrollments(engine, "alpha")}


def test_null_contact_ids_in_related_tables_block_nobody(crm):
    engine, crm_rows = crm
    customer = crm_rows.contact(lifecycle_stage="customer")
    raw(
        engine,
        "INSERT INTO tickets (ticket_id, contact_id, status, opened_at) VALUES ('t1', NULL, 'open', :at)",
        at=AS_OF - timedelta(days=1),
    )
    raw(
        engine,
        "INSERT INTO opportunities (opportunity_id, contact_id, account_id, stage) "
        "VALUES ('o1', NULL, NULL, 'negotiation')",
    )
    raw(engine, "INSERT INTO subscriptions (subscription_id, contact_id, status) VALUES ('s1', NULL, 'active')")
    run_program(engine, "promo", AS_OF)
    assert outcomes(engine, "promo") == {customer: ("dry_run", None)}


def test_consent_rows_recorded_at_the_same_moment_never_favour_sending(crm):
    """Two rows at the same ``captured_at`` (an import that repeats a row with a new status): the
    non-granted one wins in whichever order the rows were written, as data_hygiene counts it."""
    engine, crm_rows = crm
    at = AS_OF - timedelta(days=3)
    ties = {}
    for first, second in [("withdrawn", "granted"), ("granted", "withdrawn"), ("denied", "granted")]:
        contact = crm_rows.contact(consent={})
        crm_rows.consent(contact, "email", first, at=at)
        crm_rows.consent(contact, "email", second, at=at)
        ties[contact] = {first, second} - {"granted"}
    run_program(engine, "alpha", AS_OF)
    reasons = {"withdrawn": "consent_withdrawn", "denied": "no_consent"}
    assert outcomes(engine, "alpha") == {c: ("suppressed", reasons[s.pop()]) for c, s in ties.items()}


# --- timestamps and JSON ----------------------------------------------------------------------


def test_text_in_timestamp_columns_fails_only_that_contacts_message(sqlite_crm):
    engine, crm_rows = sqlite_crm
    before, garbled, after = crm_rows.contact(), crm_rows.contact(), crm_rows.contact()
    raw(
        engine,
        "UPDATE contacts SET created_at = 'not a date', last_active_at = '2026-13-45 99:99:99', "
        "churned_at = 'yesterday' WHERE contact_id = :id",
        id=garbled,
    )
    undated_consent = crm_rows.contact(consent={})
    raw(
        engine,
        "INSERT INTO consents VALUES (:id, 'email', 'marketing', 'granted', 'import', 'last spring', NULL)",
        id=undated_consent,
    )
    raw(engine, "INSERT INTO events VALUES ('e-when', :id, 'purchase', 'some day', '{}')", id=before)

    run_program(engine, "alpha", AS_OF)

    result = outcomes(engine, "alpha")
    assert result[before] == result[after] == ("dry_run", None)
    assert result[garbled] == (
        "failed",
        "unreadable CRM data: contacts.created_at is not a timestamp; "
        "contacts.last_active_at is not a timestamp; "
        "contacts.churned_at is not a timestamp",
    )
    assert result[undated_consent] == ("suppressed", "no_consent")


def _buyers(tmp_path, monkeypatch) -> None:
    program = email_program({"event": "purchase", "within_last": "7d", "where": {"product": "Pro"}})
    program["audience"]["trigger_event"] = "purchase"
    with_programs(tmp_path, monkeypatch, {"buyers": program})


def _purchase(engine, contact: str, properties: str, hours_ago: float) -> None:
    raw(
        engine,
        "INSERT INTO events VALUES (:eid, :id, 'purchase', :at, :props)",
        eid=f"e-{contact}-{hours_ago}",
        id=contact,
        at=AS_OF - timedelta(hours=hours_ago),
        props=properties,
    )


def test_broken_json_properties_neither_stop_segments_nor_reach_templates(sqlite_crm, tmp_path, monkeypatch):
    _buyers(tmp_path, monkeypatch)
    engine, crm_rows = sqlite_crm
    good, broken_only, broken_trigger = crm_rows.contact(), crm_rows.contact(), crm_rows.contact()
    _purchase(engine, good, '{"product": "Pro"}', 3)
    _purchase(engine, broken_only, '{"product": "Pro"', 3)
    _purchase(engine, broken_trigger, '{"product": "Pro"}', 5)
    _purchase(engine, broken_trigger, "{'product': 'Pro'}", 1)

    run_program(engine, "buyers", AS_OF)

    assert outcomes(engine, "buyers") == {
        good: ("dry_run", None),
        broken_trigger: ("failed", "unreadable CRM data: the trigger event's properties are not a JSON object"),
    }


def test_trigger_properties_that_are_json_but_not_an_object(crm, tmp_path, monkeypatch):
    _buyers(tmp_path, monkeypatch)
    engine, crm_rows = crm
    good = crm_rows.contact()
    _purchase(engine, good, '{"product": "Pro"}', 3)
    odd = []
    for properties in ("[1, 2]", '"Pro"', "42", "true"):
        odd.append(crm_rows.contact())
        _purchase(engine, odd[-1], '{"product": "Pro"}', 5)
        _purchase(engine, odd[-1], properties, 1)
    run_program(engine, "buyers", AS_OF)
    not_an_object = ("failed", "unreadable CRM data: the trigger event's properties are not a JSON object")
    assert outcomes(engine, "buyers") == {good: ("dry_run", None)} | dict.fromkeys(odd, not_an_object)


def test_property_values_of_the_wrong_json_type_are_no_match(crm, tmp_path, monkeypatch):
    """A numeric filter meets ``"amount": "lots"`` (PostgreSQL's cast used to fail the statement)."""
    segment = {"event": "purchase", "within_last": "7d", "where": {"amount": {"gte": 100}, "gift": False}}
    with_programs(tmp_path, monkeypatch, {"spenders": email_program(segment)})
    engine, crm_rows = crm
    big, wordy, flagged = crm_rows.contact(), crm_rows.contact(), crm_rows.contact()
    _purchase(engine, big, json.dumps({"amount": 250, "gift": False}), 2)
    _purchase(engine, wordy, json.dumps({"amount": "lots", "gift": False}), 2)
    _purchase(engine, flagged, json.dumps({"amount": 500, "gift": "no"}), 2)
    run_program(engine, "spenders", AS_OF)
    assert outcomes(engine, "spenders") == {big: ("dry_run", None)}


# --- values ------------------------------------------------------------------------------------


UNKNOWN_STAGES = ["LEAD", "Lead", " lead", "lead\n", "prospect", "", "leads", "🚀"]


def test_unknown_lifecycle_stages_enter_nothing(crm):
    engine, crm_rows = crm
    lead = crm_rows.contact()
    for stage in UNKNOWN_STAGES:
        crm_rows.contact(lifecycle_stage=stage)
    run_program(engine, "alpha", AS_OF)
    assert outcomes(engine, "alpha") == {lead: ("dry_run", None)}
    assert [e["contact_id"] for e in enrollments(engine, "alpha")] == [lead]


BAD_EMAILS = [
    "plainaddress",
    "@example.com",
    "ada@",
    "ada@example",
    "ada@@example.com",
    "ada lovelace@example.com",
    "ada@example..com",
    "ada@.example.com",
    "ada\t@example.com",
    "ada@example.com\r\nBcc: eve@example.org",
    "ada@example.com\nX-Injected: 1",
    "ada@exa\u00a0mple.com ",
    " ",
]


def test_whitespace_inside_an_email_is_invalid_on_every_database(crm):
    """Tabs and line breaks (header injection) are caught by the SQL check on SQLite as on
    PostgreSQL, so even a dry run reports them."""
    engine, crm_rows = crm
    broken = [
        crm_rows.contact(email=value)
        for value in (
            "ada\t@example.com",
            "ada@example.com\nBcc:eve@example.org",
            "ada@exam\rple.com",
            "ada@\x0bexample.com",
        )
    ]
    run_program(engine, "alpha", AS_OF)
    assert outcomes(engine, "alpha") == dict.fromkeys(broken, ("suppressed", "invalid_address"))


BAD_PHONES = [
    "12345",
    "415-555-0100",
    "+0 415 555 0100",
    "+14155550100123456",
    "phone",
    "+1415555O100",
    "+14155550100\n",
    "+",
    "tel:+14155550100",
]


def test_unknown_time_zones_fall_back_to_the_phone_numbers_zone(crm):
    """At 05:00 UTC it is 21:00 in San Francisco: SMS quiet hours (21:00-08:00) hold every contact
    whose zone cannot be read but whose number is a San Francisco one, until 08:00 there (16:00
    UTC), not the policy's UTC default (where 05:00 is quiet only until 08:00 UTC); a known zone where
    it is afternoon goes now."""
    engine, crm_rows = crm
    night = datetime(2026, 11, 17, 5, 0)
    sqlite = engine.dialect.name == "sqlite"
    zones = [
        "Mars/Olympus",
        "",
        "../../../etc/passwd",
        "utc+1",
        None,
        "a" * (10_000 if sqlite else 64),
        *(["UTC\x00"] if sqlite else []),
    ]
    unknown = [crm_rows.contact(lifecycle_stage="trial", timezone=zone, phone="+14155550100") for zone in zones]
    tokyo = crm_rows.contact(lifecycle_stage="trial", timezone="Asia/Tokyo")
    # A zone name with stray spaces is still read (05:00 in London: quiet until 08:00 there).
    london = crm_rows.contact(lifecycle_stage="trial", timezone=" Europe/London ", phone="+14155550100")
    run_program(engine, "texts", night)
    result = outcomes(engine, "texts")
    assert result.pop(tokyo) == ("dry_run", None)
    assert result == dict.fromkeys([*unknown, london], ("deferred", "quiet_hours"))
    send_after = {m["contact_id"]: m["send_after"] for m in messages(engine, "texts") if m["contact_id"] != tokyo}
    assert send_after == {**dict.fromkeys(unknown, datetime(2026, 11, 17, 16, 0)), london: datetime(2026, 11, 17, 8, 0)}


# --- long, emoji and right-to-left text, through the provider sandbox ------------------------


@contextmanager
def provider_sandbox(
    crm_url: str, monkeypatch, link_secret: str, *, web_process: bool = False
) -> Iterator[SandboxServer]:
    """The provider sandbox, and the web app its webhooks go to, wired up as Airflow connections
    (``crm_default`` at ``crm_url``): the real SDKs send to the sandbox. With ``web_process`` the
    app runs in a process of its own, as it must beside DAG tasks run in this process (dag.test)."""
    use_crm(monkeypatch, crm_url)
    web = WebApp(process=web_process)
    try:
        with SandboxServer(sendgrid_webhook_url=f"{web.base_url}/webhooks/sendgrid") as server:
            for key, value in provider_connections(server, web.base_url, link_secret).items():
                monkeypatch.setenv(key, value)
            web.start()
            yield server
    finally:
        web.stop()


@pytest.fixture
def sandbox(crm, db_url, monkeypatch):
    """(engine, CrmBuilder, sandbox)."""
    with provider_sandbox(db_url, monkeypatch, "bad-input-secret") as server:
        yield crm[0], crm[1], server


def _send(engine, program: str) -> dict[str, tuple[str, str | None]]:
    scope, programs = pipeline.load_scope(program, "bad_input", AS_OF)
    pipeline.run_program(engine, scope, programs, ProviderTransport(), links=links_from_connection())
    return outcomes(engine, program)


def test_invalid_addresses_never_reach_the_provider(sandbox):
    """Each is suppressed (``invalid_address``) by the SQL check, or, where only a full parser can
    tell (a no-break space inside a domain), failed by the transport before the API call."""
    engine, crm_rows, server = sandbox
    good_email, good_phone = crm_rows.contact(), crm_rows.contact(lifecycle_stage="trial", timezone="UTC")
    emails = {crm_rows.contact(email=value): value for value in BAD_EMAILS}
    phones = {crm_rows.contact(lifecycle_stage="trial", timezone="UTC", phone=value): value for value in BAD_PHONES}
    caught = {("suppressed", "invalid_address"), ("failed", "invalid email address")}
    for program, good, bad in (("alpha", good_email, emails), ("texts", good_phone, phones)):
        result = _send(engine, program)
        assert result.pop(good)[0] in WENT_OUT
        assert {bad[c]: r for c, r in result.items() if r not in caught} == {}
        assert set(result) == set(bad)
    assert [m["to"] for m in server.sendgrid_messages()] == [f"{good_email}@example.com"]
    assert len(server.twilio_messages()) == 1


def test_long_emoji_and_right_to_left_names_are_sent_intact(sandbox):
    engine, crm_rows, server = sandbox
    longest = 10_000 if engine.dialect.name == "sqlite" else 200  # PostgreSQL: first_name is varchar(200)
    names = {"long": "A" * longest, "emoji": "Zoë 👩🏽‍💻🚀", "rtl": "\u202eمرحبا שלום", "plain": "Ada"}
    ids = {
        kind: [crm_rows.contact(first_name=name, lifecycle_stage=stage, timezone="UTC") for stage in ("lead", "trial")]
        for kind, name in names.items()
    }
    emails, sms = _send(engine, "alpha"), _send(engine, "texts")
    assert set(emails) == {lead for lead, _trial in ids.values()}
    assert all(status in WENT_OUT for status, _reason in emails.values())
    subjects = {m["to"]: m["subject"] for m in server.sendgrid_messages()}
    for kind, (lead, _trial) in ids.items():
        subject = f"Hello {names[kind]} from alpha"
        if len(subject) > MAX_SUBJECT:
            subject = subject[: MAX_SUBJECT - 1] + "…"
        assert subjects[f"{lead}@example.com"] == subject
    bodies = [m["body"] for m in server.twilio_messages()]
    for kind, (_lead, trial) in ids.items():
        body = f"Lifecycle: hi {names[kind]}. Reply STOP to opt out."
        if sms_segments(body) > 10:
            assert sms[trial] == (
                "failed",
                f"too many segments: {sms_segments(body)} over the policy's sms_max_segments of 10",
            )
            assert body not in bodies
        else:
            assert sms[trial][0] in WENT_OUT and body in bodies


HEADER_NAMES = {
    "crlf": ("Ada\r\nBcc: victim@example.net", "Ada Bcc: victim@example.net"),
    "address": ("Ada <ceo@evil.example>", "Ada"),
    "quotes": ('Ada "the boss" \\', "Ada the boss"),
    "controls": ("Ada\x07\x1b[2J\u2028", "Ada [2J"),
}


def test_crm_text_bound_for_headers_and_sms_is_bounded(sandbox):
    """Names with line breaks, addresses, quotes or control characters become a plain one-line
    display name; a subject over the limit is cut with an ellipsis; an SMS longer than the policy's
    segment limit (a name of 600 emoji: 19 segments) fails with the limit's name, and nothing of
    it reaches Twilio."""
    engine, crm_rows, server = sandbox
    sqlite = engine.dialect.name == "sqlite"
    ids = {kind: crm_rows.contact(first_name=name, last_name=None) for kind, (name, _shown) in HEADER_NAMES.items()}
    long_subject = crm_rows.contact(first_name="B" * (1_200 if sqlite else 200), last_name=None)
    emoji = "😀" * (600 if sqlite else 50)
    texted = crm_rows.contact(first_name=emoji, lifecycle_stage="trial", timezone="UTC")

    emails, sms = _send(engine, "alpha"), _send(engine, "texts")

    received = {m["to"]: m for m in server.sendgrid_messages()}
    for kind, (_name, shown) in HEADER_NAMES.items():
        assert emails[ids[kind]][0] in WENT_OUT
        assert received[f"{ids[kind]}@example.com"]["to_name"] == shown, kind
    subject = received[f"{long_subject}@example.com"]["subject"]
    assert len(subject) <= MAX_SUBJECT and "\r" not in subject and "\n" not in subject
    if sqlite:
        assert subject.endswith("…")
        assert sms[texted] == ("failed", "too many segments: 19 over the policy's sms_max_segments of 10")
        assert server.twilio_messages() == []
    else:
        assert sms[texted][0] in WENT_OUT


# --- templates ------------------------------------------------------------------------------


def run_probes(
    tmp_path, monkeypatch, engine, crm_rows, bodies: dict[str, str], extra: dict[str, str] | None = None
) -> dict[str, tuple[str, str | None]]:
    """Run one program whose HTML part runs ``bodies[case]`` for the contact whose role is
    ``case``; each such contact shares its send batch (of two) with an ordinary contact, who must
    get the message. Returns each case's (status, reason)."""
    branches = "".join(f'{{% elif contact.role == "{case}" %}}{body}' for case, body in bodies.items())
    templates = {
        "probe/t.subject.txt": "Hi {{ contact.first_name }}",
        "probe/t.html.j2": "Hello {{ contact.first_name }}{% if false %}" + branches + "{% endif %}",
        "probe/t.txt.j2": "Hello {{ contact.first_name }}",
    }
    with_programs(
        tmp_path, monkeypatch, {"probe": email_program({"segment": "leads"}, "probe/t")}, templates | (extra or {})
    )
    ordinary, probes = [], {}
    for case in bodies:
        ordinary.append(crm_rows.contact())
        probes[crm_rows.contact(role=case, mrr=0)] = case
    run_program(engine, "probe", AS_OF)
    result = outcomes(engine, "probe")
    assert {c: result[c] for c in ordinary} == dict.fromkeys(ordinary, ("dry_run", None))
    batches = {m["contact_id"]: m["batch"] for m in messages(engine, "probe")}
    assert all(batches[o] == batches[p] for o, p in zip(ordinary, probes, strict=True))
    return {case: result[contact] for contact, case in probes.items()}


FAILING_TEMPLATES = {
    "syntax": ("{% include 'probe/broken.j2' %}", "TemplateSyntaxError (line 1 of probe/broken.j2): "),
    "undefined": ("{{ contact.nickname }}", "UndefinedError: 'dict object' has no attribute 'nickname'"),
    "undefined-trigger": ("{{ trigger.discount.percent }}", "UndefinedError: 'dict object' has no attribute"),
    "zero-division": ("{{ 100 / contact.mrr }}", "ZeroDivisionError: float division by zero"),
    "type": ("{{ contact.first_name + 1 }}", "TypeError: can only concatenate str"),
    "float-overflow": ("{{ 10.0 ** 400 }}", "OverflowError"),
    "huge-range": ("{% for i in range(10 ** 9) %}x{% endfor %}", "OverflowError: Range too big"),
    "nested-loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "SecurityError: range() loops may run at most 100,000 times",
    ),
    "recursion": ("{% macro again() %}{{ again() }}{% endmacro %}{{ again() }}", "RecursionError"),
    "string-repeat": ("{{ contact.role * 10 ** 9 }}", "SecurityError: a repeated string or list's length may be"),
    "int-power": ("{{ 7 ** 100000000 }}", "SecurityError: an integer power's size in bits may be at most 4,096"),
    "format-width": ("{{ '{:>999999999}'.format(contact.role) }}", "SecurityError: a format width may be at most"),
    "printf-width": ("{{ '%999999999s' % contact.role }}", "SecurityError: a format width may be at most 10,000"),
    "padding": ("{{ contact.role|center(999999999) }}", "SecurityError: a width or count may be at most 10,000"),
    "replace-blowup": (
        "{{ ('x' * 100000)|replace('x', contact.role * 1000) }}",
        "SecurityError: a replacement's result length may be at most 1,000,000",
    ),
}


@pytest.mark.timeout(120)
def test_a_template_failing_for_one_contact_fails_only_that_message(sqlite_crm, tmp_path, monkeypatch):
    engine, crm_rows = sqlite_crm
    bodies = {case: body for case, (body, _expected) in FAILING_TEMPLATES.items()}
    result = run_probes(tmp_path, monkeypatch, engine, crm_rows, bodies, {"probe/broken.j2": "{% if %}"})
    for case, (_body, expected) in FAILING_TEMPLATES.items():
        status, reason = result[case]
        assert status == "failed" and reason.startswith(f"template probe/t.html.j2: {expected}"), (case, reason)
