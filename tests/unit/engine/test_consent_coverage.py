"""Consent coverage in the data-hygiene figures and the digest: per region and channel, the share of
contacts marketing may reach under the region's rule; per topic, the share not opted out."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert, select

from lifecycle import config
from lifecycle.engine import hygiene
from lifecycle.model import schema
from lifecycle.reporting.digest import build_digest
from tests.conftest import AS_OF

RUN = "manual__coverage"
EXPLICIT = {"email": {"marketing": "explicit"}, "sms": {"marketing": "explicit"}}


def policy() -> config.Policy:
    shipped = config.load_policy()
    return config.Policy.model_validate(
        shipped.model_dump()
        | {
            "regions": {
                "eu": {"countries": ["DE", "FR"], "legal_basis": EXPLICIT},
                "us": {
                    "countries": ["US"],
                    "legal_basis": {"email": {"marketing": "implied"}, **{"sms": EXPLICIT["sms"]}},
                },
                "uk": {"countries": ["GB"], "legal_basis": EXPLICIT},
            }
        }
    )


def build(crm) -> None:
    """Three EU contacts (one with both consents, one with email only, one with none), three US
    (no consent rows, email denied, email withdrawn), one without a country; two opt-outs of
    offers, one opt-out and a later opt-in of education."""
    crm.contact("eu1", country="DE")
    crm.contact("eu2", country="fr", consent={"email": "granted"})
    crm.contact("eu3", country="DE", consent={})
    crm.contact("us1", consent={})
    crm.contact("us2", consent={"email": "denied"})
    crm.contact("us3", consent={"email": "withdrawn", "sms": "granted"})
    crm.contact("nowhere", country=None, consent={"email": "granted"})
    p = schema.topic_preferences
    rows = [
        ("eu1", "offers", "withdrawn", 3),
        ("us1", "offers", "withdrawn", 3),
        ("eu2", "education", "withdrawn", 5),
        ("eu2", "education", "granted", 2),
        ("us2", "account_billing", "withdrawn", 1),
    ]
    with crm.engine.begin() as conn:
        conn.execute(
            insert(p),
            [
                {"contact_id": c, "topic": t, "status": s, "source": "test", "captured_at": AS_OF - timedelta(days=d)}
                for c, t, s, d in rows
            ],
        )


def stored(engine) -> dict[tuple[str, str], float]:
    dq = schema.data_quality
    with engine.connect() as conn:
        rows = conn.execute(
            select(dq.c.metric, dq.c.dimension, dq.c.value).where(dq.c.run_id == RUN, dq.c.dimension != "")
        )
        return {(metric, part): value for metric, part, value in rows}


def run(engine, rules: config.Policy) -> dict[tuple[str, str], float]:
    hygiene.normalise_and_validate(engine, RUN, AS_OF)
    hygiene.compute_figures(engine, RUN, AS_OF, rules)
    return stored(engine)


def test_coverage_per_region_and_topic_equals_a_direct_count(crm):
    engine, builder = crm
    build(builder)
    figures = run(engine, policy())
    eu, us, uk = "region:eu", "region:us", "region:uk"
    unknown, elsewhere = "region:unknown_country", "region:*"
    assert {k: v for k, v in figures.items() if k[0] == "contacts"} == {
        ("contacts", eu): 3,
        ("contacts", us): 3,
        ("contacts", uk): 0,
        ("contacts", unknown): 1,
        ("contacts", elsewhere): 0,
    }
    # EU explicit: eu1 both, eu2 email. US email implied: us1 (no row) only; us2 denied, us3 withdrawn.
    # US sms explicit: us3 granted. Unknown country: the strictest (explicit), email granted.
    assert figures[("reachable_email", eu)] == 2 and figures[("reachable_rate_email", eu)] == 2 / 3
    assert figures[("reachable_sms", eu)] == 1 and figures[("reachable_rate_sms", eu)] == 1 / 3
    assert figures[("reachable_email", us)] == 1 and figures[("reachable_rate_email", us)] == 1 / 3
    assert figures[("reachable_sms", us)] == 1 and figures[("reachable_rate_sms", us)] == 1 / 3
    assert figures[("reachable_rate_email", unknown)] == 1.0 and figures[("reachable_rate_sms", unknown)] == 0.0
    # No contacts in the UK: its rates are not measured, not 0%.
    assert ("reachable_rate_email", uk) not in figures and ("reachable_rate_sms", elsewhere) not in figures
    # offers: two of seven opted out; education's newest row is an opt-in again; account_billing is not optional.
    assert figures[("opted_out", "topic:offers")] == 2 and figures[("subscribed_rate", "topic:offers")] == 5 / 7
    assert figures[("subscribed_rate", "topic:education")] == 1.0
    assert figures[("subscribed_rate", "topic:account_billing")] == 1.0
    assert figures[("subscribed_rate", "topic:product_news")] == 1.0


def test_without_regions_every_contact_follows_the_legal_basis(crm):
    engine, builder = crm
    build(builder)
    figures = run(engine, config.load_policy())
    assert figures[("contacts", "region:*")] == 7
    # Shipped legal_basis: marketing explicit; granted email: eu1, eu2, nowhere; granted sms: eu1, us3.
    assert figures[("reachable_rate_email", "region:*")] == 3 / 7
    assert figures[("reachable_rate_sms", "region:*")] == 2 / 7


def test_the_digest_shows_coverage_with_not_measured_apart_from_zero(crm):
    engine, builder = crm
    build(builder)
    rules = policy()
    run(engine, rules)
    digest = build_digest(engine, {}, rules, AS_OF + timedelta(hours=1))
    html = digest.html.split("Consent coverage")[1]
    assert "EU" in html and "66.7%" in html and "33.3%" in html and "not measured" in html
    assert "Unknown country" in html and "100.0%" in html and "0.0%" in html
    assert rules.topics["offers"].label in html and "71.4%" in html
    assert "- UK (0 contacts): email not measured, sms not measured" in digest.text
    assert "- EU (3 contacts): email 66.7%, sms 33.3%" in digest.text
