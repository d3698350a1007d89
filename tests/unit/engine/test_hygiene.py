"""Data hygiene on hand-made contacts: normalisation, validation, survivor rules, suppressions and
figures, on SQLite and PostgreSQL — and not one CRM row changed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select, update

from lifecycle import config
from lifecycle.engine import hygiene
from lifecycle.model import schema
from tests.conftest import AS_OF

RUN = "manual__hygiene"
Q = schema.contact_quality
S = schema.suppressions


def run_hygiene(engine, run_id: str = RUN, as_of=AS_OF) -> dict[str, float]:
    """The four steps of the data_hygiene DAG in order; returns the figures."""
    hygiene.normalise_and_validate(engine, run_id, as_of, chunk=3)
    hygiene.resolve_duplicates(engine, run_id, as_of, chunk=3)
    hygiene.flag_suppressions(engine, run_id, as_of)
    return hygiene.compute_figures(engine, run_id, as_of, config.load_policy())


def quality(engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r["contact_id"]: dict(r) for r in conn.execute(select(Q)).mappings()}


def suppression_list(engine) -> set[tuple]:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(select(S.c.contact_id, S.c.channel, S.c.reason, S.c.source, S.c.proof))}


def crm_dump(engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {
            name: sorted(map(tuple, conn.execute(select(table))), key=repr) for name, table in schema.CRM_TABLES.items()
        }


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("  Ada.Lovelace@Example.COM ", "ada.lovelace@example.com"),
        ("o'brien+news@mail.example.org", "o'brien+news@mail.example.org"),
    ],
)
def test_valid_emails_are_trimmed_and_lowercased(raw, normalized):
    assert hygiene.check_email(raw) == hygiene.AddressCheck(normalized, True)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("no-at-sign.example.com", "must have an @-sign"),
        ("ada@example", "should have a period"),
        ("ada@example..com", "two periods in a row"),
        ("ada lovelace@example.com", "SPACE"),
        ("ada@@example.com", "'@'"),
    ],
)
def test_invalid_emails_say_why(raw, problem):
    check = hygiene.check_email(raw)
    assert check.valid is False and problem in check.problem
    assert check.value == raw.lower()


@pytest.mark.parametrize(
    ("raw", "country", "e164"),
    [
        ("(415) 555-2671", "US", "+14155552671"),
        ("+1.415.555.2671", None, "+14155552671"),
        ("020 7946 0018", "gb", "+442079460018"),
        ("00 44 20 7946 0018", "FR", "+442079460018"),
        ("+44 (0)20 7946 0018", "US", "+442079460018"),
    ],
)
def test_valid_phones_become_e164_read_in_the_contacts_country(raw, country, e164):
    assert hygiene.check_phone(raw, country) == hygiene.AddressCheck(e164, True)


@pytest.mark.parametrize(
    ("raw", "country", "problem"),
    [
        ("n/a", "US", "not a phone number"),
        ("4155552671", None, "no valid country code, and no usable contact country"),
        ("+1415", "US", "too short"),
        ("+1 415 555 2671 4444", "US", "too long"),
        ("+1 200 555 0100", "US", "not a number in its country's numbering plan"),
        ("020 7946 0018", "US", "too long"),
    ],
)
def test_invalid_phones_say_why(raw, country, problem):
    assert hygiene.check_phone(raw, country) == hygiene.AddressCheck(None, False, problem)


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_an_absent_address_is_missing_not_invalid(raw):
    assert hygiene.check_email(raw) == hygiene.NO_ADDRESS == hygiene.check_phone(raw, "US")
    assert hygiene.NO_ADDRESS.valid is None


def test_missing_fields_need_email_or_phone_and_the_rest():
    full = {
        "email": "a@b.co",
        "phone": None,
        "country": "US",
        "timezone": "UTC",
        "lifecycle_stage": "lead",
        "created_at": AS_OF,
    }
    assert hygiene.missing_fields(full) == []
    assert hygiene.missing_fields(full | {"email": " "}) == ["email_or_phone"]
    assert hygiene.missing_fields(full | {"country": None, "created_at": None}) == ["country", "created_at"]


def test_transitive_links_make_one_group_with_one_survivor():
    def candidate(cid: str, days: int) -> hygiene.Candidate:
        return hygiene.Candidate(cid, False, AS_OF - timedelta(days=days), AS_OF - timedelta(days=100))

    a, b, c, d = candidate("a", 3), candidate("b", 1), candidate("c", 2), candidate("d", 0)
    members = [
        ("email:x@y.co", a),
        ("email:x@y.co", b),
        ("phone:+14155552671", b),
        ("phone:+14155552671", c),
        ("email:lone@y.co", d),
    ]
    assert hygiene.resolve_identities(members) == [
        hygiene.Resolution("a", "b", "email:x@y.co"),
        hygiene.Resolution("b", None, "email:x@y.co"),
        hygiene.Resolution("c", "b", "phone:+14155552671"),
        hygiene.Resolution("d", None, "email:lone@y.co"),
    ]


SURVIVOR_CASES = {
    "granted consent beats recent activity": (
        "k1",
        {"consent": {"email": "withdrawn"}, "last_active_at": AS_OF - timedelta(hours=1)},
        "k2",
        {"consent": {"sms": "granted"}, "last_active_at": AS_OF - timedelta(days=90)},
    ),
    "then the most recent activity": (
        "k1",
        {"last_active_at": AS_OF - timedelta(days=9), "created_at": AS_OF - timedelta(days=50)},
        "k2",
        {"last_active_at": AS_OF - timedelta(days=2), "created_at": AS_OF - timedelta(days=5)},
    ),
    "unknown activity loses": (
        "k1",
        {"last_active_at": None, "created_at": AS_OF - timedelta(days=500)},
        "k2",
        {"last_active_at": AS_OF - timedelta(days=300)},
    ),
    "then the earliest creation": (
        "k1",
        {"created_at": AS_OF - timedelta(days=5)},
        "k2",
        {"created_at": AS_OF - timedelta(days=50)},
    ),
    "then the smallest contact id": ("k2", {}, "k1", {}),
}


@pytest.mark.parametrize(
    ("loser_id", "loser", "winner_id", "winner"), SURVIVOR_CASES.values(), ids=SURVIVOR_CASES.keys()
)
def test_survivor_rules(crm, loser_id, loser, winner_id, winner):
    engine, c = crm
    same = {"last_active_at": AS_OF - timedelta(days=1), "created_at": AS_OF - timedelta(days=20)}
    lose = c.contact(loser_id, email="Ada@Example.com", phone=None, **(same | loser))
    win = c.contact(winner_id, email=" ada@example.com", phone=None, **(same | winner))
    run_hygiene(engine)
    rows = quality(engine)
    assert rows[lose]["survivor_id"] == win and rows[win]["survivor_id"] is None
    assert rows[lose]["duplicate_key"] == rows[win]["duplicate_key"] == "email:ada@example.com"


def test_consent_in_force_is_the_newest_row_as_of_the_run(crm):
    engine, c = crm
    withdrawn = c.contact("k1", email="ada@example.com", phone=None, last_active_at=AS_OF)
    c.consent(withdrawn, "email", "withdrawn", at=AS_OF - timedelta(days=1))
    c.consent(withdrawn, "sms", "withdrawn", at=AS_OF - timedelta(days=1))
    granted_later = c.contact(
        "k2", email="ADA@example.com", phone=None, consent={}, last_active_at=AS_OF - timedelta(days=9)
    )
    c.consent(granted_later, "email", "granted", at=AS_OF + timedelta(hours=1))
    granted = c.contact(
        "k3",
        email="ada@EXAMPLE.com",
        phone=None,
        consent={"email": "granted"},
        last_active_at=AS_OF - timedelta(days=30),
    )
    tie = c.contact("k4", email="grace@example.com", phone=None, consent={})
    c.consent(tie, "email", "granted", at=AS_OF - timedelta(days=3))
    c.consent(tie, "email", "denied", at=AS_OF - timedelta(days=3))
    figures = run_hygiene(engine)
    assert {cid: row["survivor_id"] for cid, row in quality(engine).items()} == {
        withdrawn: granted,
        granted_later: granted,
        granted: None,
        tie: None,
    }
    assert figures["consent_granted_email"] == 1 and figures["consent_granted_sms"] == 0


def test_duplicates_by_phone_in_any_format(crm):
    engine, c = crm
    first = c.contact("k1", email="ada@example.com", phone="+1 (415) 555-2671", country="US")
    second = c.contact("k2", email="lovelace@example.org", phone="415.555.2671", country="US")
    elsewhere = c.contact("k3", email="ada@example.net", phone="415.555.2671", country="GB")
    run_hygiene(engine)
    rows = quality(engine)
    assert rows[first]["phone_e164"] == rows[second]["phone_e164"] == "+14155552671"
    assert rows[second]["survivor_id"] == first and rows[second]["duplicate_key"] == "phone:+14155552671"
    assert rows[elsewhere]["phone_valid"] is False and rows[elsewhere]["survivor_id"] is None


def test_suppressions_follow_the_snapshot_and_crm_rows_never_change(crm):
    engine, c = crm
    fine = c.contact("k1", email="ada@example.com", phone="+14155552671")
    bad_email = c.contact("k2", email="ada.example.com", phone="+14155552672")
    bad_phone = c.contact("k3", email="grace@example.com", phone="call office")
    duplicate = c.contact("k4", email="ADA@example.com", phone=None, last_active_at=AS_OF - timedelta(days=40))
    other_source = c.contact("k5", email="alan@example.com", phone=None)
    with engine.begin() as conn:
        conn.execute(
            insert(S).values(
                contact_id=other_source,
                channel="email",
                reason="invalid_address",
                source="sendgrid",
                proof="bounce",
                created_at=AS_OF,
            )
        )
    before = crm_dump(engine)
    run_hygiene(engine)
    assert crm_dump(engine) == before
    flagged = suppression_list(engine)
    assert flagged == {
        (bad_email, "email", "invalid_address", "data_hygiene", "An email address must have an @-sign."),
        (bad_phone, "sms", "invalid_address", "data_hygiene", "not a phone number"),
        (bad_phone, "whatsapp", "invalid_address", "data_hygiene", "not a phone number"),
        (duplicate, "email", "duplicate_contact", "data_hygiene", f"duplicate of {fine}"),
        (duplicate, "sms", "duplicate_contact", "data_hygiene", f"duplicate of {fine}"),
        (duplicate, "whatsapp", "duplicate_contact", "data_hygiene", f"duplicate of {fine}"),
        (duplicate, "webhook", "duplicate_contact", "data_hygiene", f"duplicate of {fine}"),
        (duplicate, "sales_task", "duplicate_contact", "data_hygiene", f"duplicate of {fine}"),
        (other_source, "email", "invalid_address", "sendgrid", "bounce"),
    }
    assert hygiene.flag_suppressions(engine, RUN, AS_OF) == {
        "lifted": 0,
        "invalid_address_email": 0,
        "invalid_address_sms": 0,
        "invalid_address_whatsapp": 0,
        "duplicate_contact_email": 0,
        "duplicate_contact_sms": 0,
        "duplicate_contact_whatsapp": 0,
        "duplicate_contact_webhook": 0,
        "duplicate_contact_sales_task": 0,
    }
    assert suppression_list(engine) == flagged
    with engine.begin() as conn:
        conn.execute(
            update(schema.contacts).where(schema.contacts.c.contact_id == bad_email).values(email="ada@example.co.uk")
        )
        conn.execute(
            update(schema.contacts).where(schema.contacts.c.contact_id == duplicate).values(last_active_at=AS_OF)
        )
    run_hygiene(engine, "manual__next", AS_OF + timedelta(days=1))
    assert suppression_list(engine) == {
        (bad_phone, "sms", "invalid_address", "data_hygiene", "not a phone number"),
        (bad_phone, "whatsapp", "invalid_address", "data_hygiene", "not a phone number"),
        (fine, "email", "duplicate_contact", "data_hygiene", f"duplicate of {duplicate}"),
        (fine, "sms", "duplicate_contact", "data_hygiene", f"duplicate of {duplicate}"),
        (fine, "whatsapp", "duplicate_contact", "data_hygiene", f"duplicate of {duplicate}"),
        (fine, "webhook", "duplicate_contact", "data_hygiene", f"duplicate of {duplicate}"),
        (fine, "sales_task", "duplicate_contact", "data_hygiene", f"duplicate of {duplicate}"),
        (other_source, "email", "invalid_address", "sendgrid", "bounce"),
    }


def test_a_contact_gone_from_the_crm_leaves_the_snapshot(crm):
    engine, c = crm
    kept = c.contact("k1")
    gone = c.contact("k2", email="not-an-address", phone=None)
    run_hygiene(engine)
    with engine.begin() as conn:
        conn.execute(schema.contacts.delete().where(schema.contacts.c.contact_id == gone))
    run_hygiene(engine, "manual__next")
    assert set(quality(engine)) == {kept}
    assert suppression_list(engine) == set()


def _message(i: int, status: str, sent_at) -> dict:
    return {
        "idempotency_key": f"k{i}",
        "program": "p",
        "enrollment_id": i,
        "entry": 1,
        "step": "s",
        "step_index": 0,
        "contact_id": f"c{i}",
        "channel": "email",
        "planned_channel": "email",
        "template": "t",
        "status": status,
        "due_at": AS_OF,
        "run_id": "r",
        "planned_at": AS_OF,
        "sent_at": sent_at,
    }


def test_figures_count_every_defect_once_and_rerun_replaces_them(crm):
    engine, c = crm
    c.contact("k1", email="ada@example.com", phone="+14155552671")
    c.contact("k2", email="ADA@example.com", phone=None, consent={"email": "denied"})
    c.contact("k3", email="bad@", phone="12", country=None, consent={})
    c.contact("k4", email=None, phone=None, timezone=None, lifecycle_stage=None, consent={"sms": "granted"})
    sent = AS_OF - timedelta(days=1)
    rows = [
        _message(1, "delivered", sent),
        _message(2, "bounced", sent),
        _message(3, "opened", sent),
        _message(4, "failed", None),
        _message(5, "bounced", AS_OF + timedelta(hours=1)),
        _message(6, "clicked", sent),
    ]
    with engine.begin() as conn:
        conn.execute(insert(schema.messages), rows)
    figures = run_hygiene(engine)
    expected_counts = {
        "contacts": 4,
        "required_fields_filled": 2,
        "missing_email": 1,
        "missing_phone": 2,
        "missing_email_or_phone": 1,
        "missing_country": 1,
        "missing_timezone": 1,
        "missing_lifecycle_stage": 1,
        "missing_created_at": 0,
        "invalid_email": 1,
        "invalid_phone": 1,
        "duplicate_contacts": 1,
        "duplicate_groups": 1,
        "consent_granted_email": 1,
        "consent_granted_sms": 2,
        "messages_out": 4,
        "bounced": 1,
    }
    assert {k: figures[k] for k in expected_counts} == expected_counts
    assert figures["required_fields_filled_rate"] == 0.5 and figures["duplicate_rate"] == 0.25
    assert figures["invalid_email_rate"] == figures["invalid_phone_rate"] == 0.25
    assert figures["consent_coverage_email"] == 0.25 and figures["consent_coverage_sms"] == 0.5
    assert figures["bounce_rate"] == 0.25
    dq = schema.data_quality
    assert hygiene.compute_figures(engine, RUN, AS_OF, config.load_policy()) == figures
    with engine.connect() as conn:
        whole = select(dq.c.metric, dq.c.value).where(dq.c.run_id == RUN, dq.c.dimension == "")
        stored = dict(conn.execute(whole).all())
    assert stored == figures


def test_no_contacts_and_no_messages_give_zero_rates(crm):
    engine, _ = crm
    figures = run_hygiene(engine)
    assert figures["contacts"] == 0 and figures["bounce_rate"] == figures["duplicate_rate"] == 0.0


def test_a_text_timestamp_in_the_crm_is_an_unknown_date_not_a_crash(tmp_path):
    from sqlalchemy import text

    from lifecycle.engine import hygiene
    from lifecycle.model import schema
    from lifecycle.model.db import get_engine, migrate
    from tests.support.crm_builder import CrmBuilder

    engine = get_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    crm = CrmBuilder(engine, AS_OF)
    crm.contact("keeps", email="same@example.com")
    crm.contact("broken", email="SAME@example.com")
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE contacts SET created_at = 'last tuesday', last_active_at = 'soon' WHERE contact_id = 'broken'")
        )
    hygiene.normalise_and_validate(engine, "r1", AS_OF)
    hygiene.resolve_duplicates(engine, "r1", AS_OF)
    with engine.connect() as conn:
        survivors = dict(conn.execute(text("SELECT contact_id, survivor_id FROM lifecycle_contact_quality")).all())
    assert survivors == {"keeps": None, "broken": "keeps"}
