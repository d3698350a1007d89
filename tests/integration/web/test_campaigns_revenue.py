"""Revenue where a program has a ``kpi.value_property``: in the policy's currency, per group and per
recipient, treatment against holdout with its interval, on the Campaigns page and in the digest,
equal to the purchases the CRM's events hold."""

from __future__ import annotations

import html
import shutil
from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from lifecycle import config
from lifecycle.model import schema
from lifecycle.model.ledger import EnrollmentState
from lifecycle.paths import PROJECT_ROOT
from lifecycle.reporting import measurement
from lifecycle.reporting.digest import build_digest, money
from lifecycle.web.campaigns import campaigns_page
from tests.conftest import AS_OF

PROGRAM = "abandoned_cart"
ENROLLED = AS_OF - timedelta(days=12)
WINDOW = timedelta(days=7)
# contact -> (group, purchases as (days after enrolling, amount))
STORY = {
    "t1": ("treatment", [(1, 120.0)]),
    "t2": ("treatment", [(2, 30.5), (3, 10.0)]),
    "t3": ("treatment", [(9, 500.0)]),  # after the 7-day window: not this program's revenue
    "t4": ("treatment", []),
    "h1": ("holdout", [(1, 40.0)]),
    "h2": ("holdout", []),
    "h3": ("holdout", []),
}


@pytest.fixture
def euro_config(tmp_path, monkeypatch):
    copy = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", copy)
    policy = copy / "policy.yml"
    policy.write_text(policy.read_text().replace("currency: USD", "currency: eur"))
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(copy))
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)


@pytest.fixture
def carts(crm, euro_config):
    engine, crm_rows = crm
    for n, (contact, (group, purchases)) in enumerate(STORY.items(), start=1):
        crm_rows.contact(contact, lifecycle_stage="customer")
        crm_rows.event(contact, "cart_abandoned", ENROLLED - timedelta(hours=1), cart_id=f"k{n}", value=99.0)
        for days, amount in purchases:
            crm_rows.event(contact, "purchase", ENROLLED + timedelta(days=days), order_id=f"o{n}{days}", amount=amount)
        with engine.begin() as conn:
            conn.execute(
                insert(schema.enrollments).values(
                    program=PROGRAM,
                    contact_id=contact,
                    entry=1,
                    state=EnrollmentState.ACTIVE,
                    enrolled_at=ENROLLED,
                    next_step=0,
                    group=group,
                    trigger={"value": 99.0},
                )
            )
    return engine


def _revenue_from_events(engine) -> dict[str, list[float]]:
    """Per group, each member's purchases within the window after enrolling, read back from the CRM."""
    e, ev = schema.enrollments, schema.events
    query = select(e.c.group, e.c.contact_id, ev.c.occurred_at, ev.c.properties).outerjoin(
        ev, (ev.c.contact_id == e.c.contact_id) & (ev.c.event_type == "purchase")
    )
    members: dict[str, dict[str, float]] = {}
    with engine.connect() as conn:
        for group, contact, at, properties in conn.execute(query.where(e.c.program == PROGRAM)):
            total = members.setdefault(group, {}).setdefault(contact, 0.0)
            if at is not None and ENROLLED <= at <= ENROLLED + WINDOW:
                members[group][contact] = total + properties["amount"]
    return {group: list(values.values()) for group, values in members.items()}


def test_revenue_per_group_and_per_recipient_equals_the_purchases(carts):
    engine = carts
    policy = config.load_policy()
    assert policy.currency == "EUR"
    expected = _revenue_from_events(engine)
    assert sum(expected["treatment"]) == 160.5 and sum(expected["holdout"]) == 40.0
    programs, _errors = config.load_all_programs()
    [row] = measurement.program_kpis(engine, {PROGRAM: programs[PROGRAM]}, AS_OF).to_dict("records")
    diff = sum(expected["treatment"]) / 4 - sum(expected["holdout"]) / 3
    assert row["treatment_value"] == pytest.approx(160.5)
    assert row["holdout_value_per_enrollment"] == pytest.approx(40.0 / 3)
    assert row["value_lift_vs_holdout"] == pytest.approx(diff)
    assert row["value_lift_vs_holdout_ci_low"] < diff < row["value_lift_vs_holdout_ci_high"]

    page = html.unescape(campaigns_page(engine, as_of=AS_OF))
    card = page[page.index(f'<div class="panel" id="{PROGRAM}">') :]
    card = card[: card.find('<div class="panel" id=', 1)]
    digest = build_digest(engine, {PROGRAM: programs[PROGRAM]}, policy, AS_OF)
    mail = html.unescape(digest.html)
    for group, values in expected.items():
        total, per = money(sum(values), "EUR"), money(sum(values) / len(values), "EUR")
        assert f'data-revenue="{group}">revenue <b>{total}</b><br><span class="muted">{per} per recipient' in card
        assert f'data-revenue="{group}">revenue {total}<br>{per} per recipient' in mail
        assert f"{group} {total} ({per} per recipient)" in digest.text
    shown = f'Revenue per recipient vs holdout: <span class="">{money(diff, "EUR", signed=True)}</span>'
    assert shown in card and "not enough data yet" in card
    assert "€160.50" in card and "in EUR" in card
    assert f"Revenue per recipient vs holdout: {money(diff, 'EUR', signed=True)}" in digest.text


def test_the_currency_is_an_iso_4217_code():
    policy = config.load_policy().model_dump()
    assert config.Policy.model_validate(policy | {"currency": "gbp"}).currency == "GBP"
    with pytest.raises(ValueError, match="'dollars' is not an ISO 4217 currency code — fix"):
        config.Policy.model_validate(policy | {"currency": "dollars"})
