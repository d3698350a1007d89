"""The synthetic CRM generator: deterministic, realistic enough for every program, dirty in known amounts."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import email_validator
import pandas as pd
import phonenumbers
import pytest
from sqlalchemy import create_engine, inspect, select

from lifecycle.devtools import seed as seed_module
from lifecycle.devtools.seed import (
    B2B_SHARE,
    CONSENT_MIX,
    CONSENT_OUTCOMES,
    DUPLICATE_RATE,
    EVENT_TYPES,
    EVENT_WINDOW_DAYS,
    HISTORY_DAYS,
    INVALID_EMAIL_RATE,
    INVALID_PHONE_RATE,
    MISSING_EMAIL_RATE,
    MISSING_LOCATION_RATE,
    MISSING_PHONE_RATE,
    REFERENCE_DIR,
    SeedReport,
    main,
    seed_crm,
)
from lifecycle.model import schema

AS_OF = datetime(2026, 11, 16, 15, 0)
CONTACTS = 2_000
EMAIL_SYNTAX = re.compile(r"[^@\s]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[str, SeedReport]:
    url = f"sqlite:///{tmp_path_factory.mktemp('seed') / 'crm.db'}"
    return url, seed_crm(url, CONTACTS, AS_OF, seed=11)


@pytest.fixture(scope="module")
def crm(seeded) -> dict[str, pd.DataFrame]:
    """Every CRM table as a DataFrame, read back through SQLAlchemy (typed timestamps, parsed JSON)."""
    engine = create_engine(seeded[0])
    with engine.connect() as conn:
        frames = {
            name: pd.DataFrame(conn.execute(select(table)).mappings().all(), columns=table.columns.keys())
            for name, table in schema.CRM_TABLES.items()
        }
    engine.dispose()
    for frame in frames.values():
        for column in frame.columns[frame.dtypes.map(pd.api.types.is_string_dtype)]:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frames


@pytest.fixture(scope="module")
def planted(seeded) -> dict[str, int]:
    return dict(seeded[1].planted)


def table_digest(url: str) -> dict[str, str]:
    """A hash of every CRM table's full content, rows in a fixed order."""
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    digests = {}
    for name, table in schema.CRM_TABLES.items():
        columns = ", ".join(table.columns.keys())
        rows = conn.execute(f"SELECT {columns} FROM {name} ORDER BY {columns}").fetchall()
        digests[name] = hashlib.sha256(repr(rows).encode()).hexdigest()
    conn.close()
    return digests


def email_is_valid(email: str) -> bool:
    try:
        email_validator.validate_email(email.strip(), check_deliverability=False)
    except email_validator.EmailNotValidError:
        return False
    return True


def parsed_phone(phone: str, country: str | None) -> phonenumbers.PhoneNumber | None:
    """The number when it is a valid one for the contact's country, else None."""
    try:
        number = phonenumbers.parse(phone, country)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def present(series: pd.Series) -> pd.Series:
    return series[series.notna()]


@pytest.mark.slow
def test_report_matches_the_tables(seeded, crm):
    report = seeded[1]
    assert report.contacts == CONTACTS and report.as_of == AS_OF and report.seed == 11
    assert dict(report.rows) == {name: len(frame) for name, frame in crm.items()}
    assert 8 <= report.rows["events"] / CONTACTS <= 12
    assert json.loads(json.dumps(report.to_dict()))["rows"]["contacts"] == CONTACTS
    assert report.elapsed_seconds > 0


@pytest.mark.slow
def test_same_seed_gives_the_same_rows_whatever_the_chunk(tmp_path: Path, seeded, monkeypatch):
    monkeypatch.setattr(seed_module, "BLOCK", 400)
    first, second, other = (f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db", "c.db"))
    seed_crm(first, 1_000, AS_OF, seed=5, chunk=400)
    seed_crm(second, 1_000, AS_OF, seed=5, chunk=50_000)
    assert table_digest(first) == table_digest(second)
    monkeypatch.undo()
    seed_crm(other, CONTACTS, AS_OF, seed=12)
    before = table_digest(seeded[0])
    assert {name for name, digest in table_digest(other).items() if before[name] != digest} == set(schema.CRM_TABLES)


@pytest.mark.slow
def test_planted_rates_follow_the_module_constants(planted):
    expected = {
        "duplicate_contacts": DUPLICATE_RATE,
        "invalid_email": INVALID_EMAIL_RATE,
        "missing_email": MISSING_EMAIL_RATE,
        "invalid_phone": INVALID_PHONE_RATE,
        "email_marketing_no_row": CONSENT_MIX["email", "marketing"]["no_row"],
        "email_marketing_withdrawn": CONSENT_MIX["email", "marketing"]["withdrawn"],
        "email_marketing_denied": CONSENT_MIX["email", "marketing"]["denied"],
    }
    for key, rate in expected.items():
        assert planted[key] == round(rate * CONTACTS), key
    assert abs(planted["missing_phone"] / CONTACTS - MISSING_PHONE_RATE) < 0.01
    assert planted["missing_location"] == round(MISSING_LOCATION_RATE * CONTACTS)


@pytest.mark.slow
def test_invalid_and_missing_emails_are_exactly_the_planted_ones(crm, planted):
    emails = crm["contacts"]["email"]
    syntax_ok = present(emails).map(lambda email: bool(EMAIL_SYNTAX.fullmatch(email.strip())))
    assert (~syntax_ok).sum() == planted["invalid_email"]
    assert emails.isna().sum() == planted["missing_email"]
    assert (present(emails).map(email_is_valid) == syntax_ok).all()


@pytest.mark.slow
def test_invalid_and_missing_phones_are_exactly_the_planted_ones(crm, planted):
    contacts = crm["contacts"]
    with_phone = contacts[contacts["phone"].notna()]
    numbers = [parsed_phone(row.phone, row.country) for row in with_phone.itertuples()]
    assert sum(number is None for number in numbers) == planted["invalid_phone"]
    assert contacts["phone"].isna().sum() == planted["missing_phone"]
    e164 = with_phone["phone"].str.fullmatch(r"\+[1-9]\d{7,14}")
    reformatted = sum(number is not None and not ok for number, ok in zip(numbers, e164, strict=True))
    assert reformatted == planted["duplicate_phone_variants"]
    for row, number in zip(with_phone.itertuples(), numbers, strict=True):
        if number is not None and row.country is not None:
            assert phonenumbers.region_code_for_number(number) == row.country, row.contact_id
            assert phonenumbers.number_type(number) in (
                phonenumbers.PhoneNumberType.MOBILE,
                phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
            )


@pytest.mark.slow
def test_duplicates_are_found_by_normalised_email_or_phone(crm, planted):
    contacts = crm["contacts"].reset_index(drop=True)
    parent = list(range(len(contacts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    groups: dict[str, dict[str, list[int]]] = {"email": {}, "phone": {}}
    for i, row in enumerate(contacts.itertuples()):
        if row.email is not None and email_is_valid(row.email):
            groups["email"].setdefault(row.email.strip().lower(), []).append(i)
        number = parsed_phone(row.phone, row.country) if row.phone is not None else None
        if number is not None:
            key = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            groups["phone"].setdefault(key, []).append(i)
    for members in [*groups["email"].values(), *groups["phone"].values()]:
        for other in members[1:]:
            parent[root(other)] = root(members[0])
    assert len(contacts) - len({root(i) for i in range(len(contacts))}) == planted["duplicate_contacts"]
    assert planted["duplicate_contacts"] == round(DUPLICATE_RATE * CONTACTS)
    for kind in ("email", "phone"):
        extra = sum(len(members) - 1 for members in groups[kind].values())
        assert extra == planted[f"duplicate_{kind}_variants"], kind
    email_variants = [contacts.loc[m, "email"].tolist() for m in groups["email"].values() if len(m) > 1]
    assert all(len(set(variants)) == len(variants) for variants in email_variants)


@pytest.mark.slow
def test_missing_country_and_timezone_are_the_planted_ones(crm, planted):
    contacts = crm["contacts"]
    assert contacts["country"].isna().sum() == planted["missing_country"]
    assert contacts["timezone"].isna().sum() == planted["missing_timezone"]
    assert (contacts["country"].isna() | contacts["timezone"].isna()).sum() == planted["missing_location"]
    assert (contacts["country"].isna() & contacts["timezone"].isna()).sum() > 0


@pytest.mark.slow
def test_newest_consent_row_gives_the_planted_statuses(crm, planted):
    consents = crm["consents"].sort_values("captured_at")
    newest = consents.groupby(["contact_id", "channel", "purpose"]).tail(1)
    assert not consents.duplicated(["contact_id", "channel", "purpose", "captured_at"]).any()
    for channel, purpose in CONSENT_MIX:
        rows = newest[(newest["channel"] == channel) & (newest["purpose"] == purpose)]
        counts = rows["status"].value_counts().to_dict()
        for outcome in CONSENT_OUTCOMES[:-1]:
            assert counts.get(outcome, 0) == planted[f"{channel}_{purpose}_{outcome}"], (
                channel,
                purpose,
                outcome,
            )
        assert CONTACTS - len(rows) == planted[f"{channel}_{purpose}_no_row"]
    history = consents.groupby(["contact_id", "channel", "purpose"])["status"].agg(tuple)
    withdrawn = planted["email_marketing_withdrawn"] + planted["sms_marketing_withdrawn"]
    assert (history == ("granted", "withdrawn")).sum() == withdrawn
    assert (history == ("denied", "granted")).sum() > 0
    assert set(consents["source"]) == {"signup_form", "checkout", "import", "preference_center"}
    assert consents["proof"].notna().all()
    sms = newest[newest["channel"] == "sms"].merge(crm["contacts"], on="contact_id")
    assert not ((sms["status"] == "granted") & sms["phone"].isna()).any()


@pytest.mark.slow
def test_every_reference_resolves(crm):
    contact_ids = set(crm["contacts"]["contact_id"])
    account_ids = set(crm["accounts"]["account_id"])
    for name in ("events", "consents", "subscriptions", "opportunities", "tickets"):
        assert set(crm[name]["contact_id"]) <= contact_ids, name
    for name in ("contacts", "subscriptions", "opportunities"):
        assert set(present(crm[name]["account_id"])) <= account_ids, name
    assert set(present(crm["contacts"]["account_id"])) == account_ids
    assert crm["contacts"]["contact_id"].str.fullmatch(r"c\d{7}").all()
    assert crm["accounts"]["account_id"].str.fullmatch(r"a\d{6}").all()


@pytest.mark.slow
def test_events_stay_in_their_window_and_before_last_activity(crm):
    events = crm["events"].merge(crm["contacts"], on="contact_id")
    assert (events["occurred_at"] <= AS_OF).all()
    assert (events["occurred_at"] >= AS_OF - timedelta(days=HISTORY_DAYS)).all()
    behaviour = events[~events["event_type"].isin(["signed_up", "activated"])]
    assert (behaviour["occurred_at"] >= AS_OF - timedelta(days=EVENT_WINDOW_DAYS)).all()
    assert (events["occurred_at"] <= events["last_active_at"]).all()
    assert (events["occurred_at"] >= events["created_at"]).all()
    signups = events[events["event_type"] == "signed_up"]
    assert len(signups) == CONTACTS and (signups["occurred_at"] == signups["created_at"]).all()
    assert not events.duplicated(["contact_id", "event_type"]).loc[events["event_type"] == "activated"].any()
    assert set(events["event_type"]) == set(EVENT_TYPES)


@pytest.mark.slow
def test_event_properties_are_json_objects_with_their_fields(crm):
    required = {
        "feature_used": {"feature"},
        "milestone_completed": {"milestone"},
        "page_viewed": {"path"},
        "content_engaged": {"topic"},
        "cart_abandoned": {"cart_id", "product", "value"},
        "quote_sent": {"quote_id", "product", "value"},
        "quote_accepted": {"quote_id"},
        "purchase": {"order_id", "product", "amount"},
        "plan_limit_reached": {"limit"},
    }
    events = crm["events"]
    assert events["properties"].map(lambda value: isinstance(value, dict)).all()
    for kind, fields in required.items():
        rows = events.loc[events["event_type"] == kind, "properties"]
        assert len(rows) > 0 and rows.map(lambda value, fields=fields: fields <= set(value)).all(), kind
    sent = {
        (row.contact_id, row.properties["quote_id"]): row.occurred_at
        for row in events[events["event_type"] == "quote_sent"].itertuples()
    }
    for row in events[events["event_type"] == "quote_accepted"].itertuples():
        assert sent[row.contact_id, row.properties["quote_id"]] <= row.occurred_at
    for kind, field in (("cart_abandoned", "cart_id"), ("purchase", "order_id"), ("quote_sent", "quote_id")):
        ids = events.loc[events["event_type"] == kind, "properties"].map(lambda value, field=field: value[field])
        assert ids.is_unique, kind


@pytest.mark.slow
def test_every_program_finds_an_audience(crm):
    contacts, events = crm["contacts"], crm["events"]
    day = timedelta(days=1)
    recent = contacts[contacts["created_at"] >= AS_OF - 2 * day]
    activated = set(events.loc[events["event_type"] == "activated", "contact_id"])
    assert len(recent) >= 20 and recent["contact_id"].isin(activated).mean() < 0.3
    last_purchase = events[events["event_type"] == "purchase"].groupby("contact_id")["occurred_at"].max()
    carts = events[(events["event_type"] == "cart_abandoned") & (events["occurred_at"] >= AS_OF - 2 * day)]
    unrecovered = carts[~(carts["contact_id"].map(last_purchase) > carts["occurred_at"])]
    assert len(unrecovered) >= 20
    accepted = set(events.loc[events["event_type"] == "quote_accepted", "contact_id"])
    open_quotes = events[
        (events["event_type"] == "quote_sent")
        & (events["occurred_at"] >= AS_OF - 7 * day)
        & ~events["contact_id"].isin(accepted)
    ]
    assert len(open_quotes) > 0
    living = contacts[contacts["lifecycle_stage"] != "churned"]
    idle = AS_OF - living["last_active_at"]
    assert ((idle >= 30 * day) & (idle <= 120 * day)).sum() >= 0.1 * len(living)
    active = crm["subscriptions"][crm["subscriptions"]["status"] == "active"]
    for days in (1, 7, 30):
        window = active["renews_at"].between(AS_OF + days * day, AS_OF + (days + 1) * day)
        assert window.sum() > 0, days
    assert set(active["billing_status"]) == {"ok", "card_expiring", "failed"}
    customers = set(contacts.loc[contacts["lifecycle_stage"] == "customer", "contact_id"])
    limited = set(events.loc[events["event_type"] == "plan_limit_reached", "contact_id"])
    assert len(customers & limited) > 10
    milestones = events[events["event_type"] == "milestone_completed"].groupby("contact_id").size()
    assert (milestones[milestones.index.isin(customers)] < 7).sum() > 0
    churned = contacts[contacts["lifecycle_stage"] == "churned"]
    assert (churned["churned_at"] >= AS_OF - 90 * day).sum() > 10
    b2b_leads = contacts[(contacts["lifecycle_stage"] == "lead") & contacts["account_id"].notna()]
    engaged = set(events.loc[events["event_type"] == "content_engaged", "contact_id"])
    assert b2b_leads["contact_id"].isin(engaged).sum() > 10
    assert set(crm["opportunities"]["stage"]) == set(schema.OPPORTUNITY_STAGES)
    assert (crm["tickets"]["status"] == "open").sum() > 0


@pytest.mark.slow
def test_contacts_are_consistent_people(crm):
    contacts = crm["contacts"]
    countries = json.loads((REFERENCE_DIR / "countries.json").read_text(encoding="utf-8"))
    zones = {code: {region["timezone"] for region in spec["regions"]} for code, spec in countries.items()}
    located = contacts[contacts["country"].notna() & contacts["timezone"].notna()]
    assert located.apply(lambda row: row["timezone"] in zones[row["country"]], axis=1).all()
    assert all(ZoneInfo(zone) for zone in set(present(contacts["timezone"])))
    assert set(present(contacts["country"])) == set(countries)
    assert (present(contacts["country"]) == contacts.loc[contacts["country"].notna(), "locale"].str[-2:]).all()
    names = "".join(contacts["first_name"] + contacts["last_name"])
    for letters in ("é", "ü", "ñ", "佐"):
        assert any(letter in names for letter in letters), letters
    b2b = contacts["account_id"].notna()
    assert abs(b2b.mean() - B2B_SHARE) < 0.02
    assert contacts.loc[b2b, ["role", "industry", "owner"]].notna().all().all()
    assert contacts.loc[~b2b, ["role", "industry", "owner"]].isna().all().all()
    customers = contacts[contacts["lifecycle_stage"] == "customer"]
    assert customers["plan"].isin(["starter", "growth", "pro", "enterprise"]).all()
    assert ((customers["mrr"] > 0) & (customers["ltv"] > 0)).all()
    churned = contacts["lifecycle_stage"] == "churned"
    assert contacts.loc[churned, "churn_reason"].isin(schema.CHURN_REASONS).all()
    assert (contacts.loc[churned, "churned_at"] > contacts.loc[churned, "created_at"]).all()
    assert contacts.loc[~churned, ["churned_at", "churn_reason"]].isna().all().all()
    assert (contacts["last_active_at"] >= contacts["created_at"]).all()
    assert set(contacts["lifecycle_stage"]) == set(schema.LIFECYCLE_STAGES)
    trials = crm["subscriptions"].merge(contacts[contacts["lifecycle_stage"] == "trial"], on="contact_id")
    assert (trials["status"] == "trialing").all() and len(trials) == (contacts["lifecycle_stage"] == "trial").sum()
    assert set(crm["accounts"]["tier"]) == {"smb", "mid", "enterprise"}


def test_reseeding_replaces_only_the_crm_tables(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = create_engine(url)
    schema.engine_metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            schema.kpis.insert().values(
                program="welcome", run_id="r1", as_of=AS_OF, metric="sent", dimension="", value=3.0
            )
        )
    first = seed_crm(url, 300, AS_OF)
    second = seed_crm(url, 300, AS_OF)
    assert first.rows == second.rows
    with engine.connect() as conn:
        assert conn.execute(select(schema.kpis.c.value)).scalars().all() == [3.0]
        assert conn.execute(select(schema.contacts.c.contact_id)).scalars().all()[-1] == "c0000300"
    indexes = {index["name"] for name in schema.CRM_TABLES for index in inspect(engine).get_indexes(name)}
    assert indexes == {index.name for table in schema.CRM_TABLES.values() for index in table.indexes}
    engine.dispose()


@pytest.mark.parametrize("contacts", [1, 7, 60])
def test_tiny_crms_still_hold_together(tmp_path: Path, contacts: int):
    report = seed_crm(f"sqlite:///{tmp_path / 'crm.db'}", contacts, AS_OF)
    assert report.rows["contacts"] == contacts
    assert report.rows["events"] >= contacts


def test_contact_count_is_checked(tmp_path: Path):
    with pytest.raises(ValueError, match="contacts must be between"):
        seed_crm(f"sqlite:///{tmp_path / 'crm.db'}", 0, AS_OF)


def test_command_line_prints_the_report(tmp_path: Path, capsys):
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    assert main(["--url", url, "--contacts", "150", "--as-of", "2026-11-16", "--seed", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"]["contacts"] == 150 and report["as_of"] == "2026-11-16T00:00:00"
    assert report["planted"]["invalid_email"] == round(150 * INVALID_EMAIL_RATE)
