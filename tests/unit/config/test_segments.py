"""The segment language: parsing errors that name the path, and SQL that selects the right contacts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from lifecycle.config import segments
from lifecycle.model import schema
from tests.conftest import AS_OF


@pytest.fixture
def crm_sqlite(sqlite_url):
    """A CRM in a migrated state database: segments read the tracked events' inbox too."""
    from lifecycle.model.db import get_engine, migrate
    from tests.support.crm_builder import CrmBuilder

    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    return engine, CrmBuilder(engine, AS_OF)


def members(engine, expr, catalog=None) -> set[str]:
    parsed_catalog = {k: segments.parse(v) for k, v in (catalog or {}).items()}
    query = segments.audience_query(segments.parse(expr), AS_OF, parsed_catalog)
    with engine.connect() as conn:
        return set(conn.execute(query).scalars())


@pytest.mark.parametrize(
    ("expr", "path", "words"),
    [
        ({"attribute": "favourite_colour", "eq": "red"}, "segment", "unknown column 'favourite_colour'"),
        ({"attribute": "plan", "like": "pro"}, "segment", "unknown operator 'like'"),
        ({"event": "signed_up", "within_last": "soon"}, "segment.within_last", "is not a duration"),
        ({"all": []}, "segment.all", "non-empty list"),
        ({"any": [{"attribute": "plan"}]}, "segment.any[0]", "one operator"),
        ({"related": "invoices"}, "segment.related", "unknown table 'invoices'"),
        ({"attribute": "plan", "within_last": "3d"}, "segment", "needs a timestamp column"),
        ({"event": "purchase", "count": {"gte": -1}}, "segment.count", "integer >= 0"),
        ({"attribute": "plan", "eq": "x", "event": "y"}, "segment", "exactly one of"),
    ],
)
def test_parse_errors_name_the_path_and_the_fix(expr, path, words):
    with pytest.raises(segments.SegmentError) as err:
        segments.parse(expr)
    assert err.value.path == path and words in str(err.value)


def test_attributes_events_related_and_logic_select_the_right_contacts(crm_sqlite):
    engine, crm = crm_sqlite
    lead = crm.contact("lead", lifecycle_stage="lead", mrr=0)
    rich = crm.contact("rich", lifecycle_stage="customer", mrr=500)
    crm.contact("poor", lifecycle_stage="customer", mrr=20)
    crm.event(lead, "content_engaged", AS_OF - timedelta(days=2), topic="pricing")
    crm.event(rich, "purchase", AS_OF - timedelta(days=40), amount=90.0)
    crm.event(rich, "purchase", AS_OF - timedelta(days=10), amount=120.0)
    crm.event(rich, "purchase", AS_OF + timedelta(days=1), amount=5.0)  # after as-of: unknown yet
    crm.row(
        "subscriptions",
        subscription_id="s1",
        contact_id=rich,
        status="active",
        renews_at=AS_OF + timedelta(days=6),
        billing_status="card_expiring",
        mrr=500,
    )
    crm.row("tickets", ticket_id="t1", contact_id="poor", status="open", opened_at=AS_OF - timedelta(days=1))

    assert members(engine, {"attribute": "lifecycle_stage", "eq": "customer"}) == {"rich", "poor"}
    assert members(engine, {"attribute": "mrr", "gte": 100}) == {"rich"}
    assert members(engine, {"event": "content_engaged", "within_last": "7d", "where": {"topic": "pricing"}}) == {"lead"}
    assert members(engine, {"event": "content_engaged", "where": {"topic": "security"}}) == set()
    assert members(engine, {"event": "purchase", "count": {"gte": 2}}) == {"rich"}
    assert members(engine, {"event": "purchase", "count": {"gte": 3}}) == set()
    assert members(engine, {"event": "purchase", "within_last": "30d", "where": {"amount": {"gt": 100}}}) == {"rich"}
    assert members(
        engine,
        {"related": "subscriptions", "where": {"renews_at": {"within_next": "7d"}, "billing_status": "card_expiring"}},
    ) == {"rich"}
    assert members(engine, {"related": "tickets", "where": {"status": "open"}}) == {"poor"}
    assert members(
        engine,
        {
            "all": [
                {"attribute": "lifecycle_stage", "eq": "customer"},
                {"not": {"related": "tickets", "where": {"status": "open"}}},
            ]
        },
    ) == {"rich"}
    assert members(
        engine, {"any": [{"attribute": "mrr", "gte": 100}, {"attribute": "lifecycle_stage", "eq": "lead"}]}
    ) == {"rich", "lead"}
    catalog = {"paying": {"attribute": "lifecycle_stage", "eq": "customer"}}
    assert members(engine, {"segment": "paying"}, catalog) == {"rich", "poor"}


def test_values_are_bound_parameters_never_sql_text():
    hostile = "x'; DROP TABLE contacts; --"
    query = segments.audience_query(segments.parse({"attribute": "plan", "eq": hostile}), AS_OF, {})
    compiled = query.compile()
    assert hostile not in str(compiled) and hostile in compiled.params.values()


def test_injection_through_values_selects_nothing_and_drops_nothing(crm_sqlite):
    engine, crm = crm_sqlite
    crm.contact("c1", plan="pro")
    assert members(engine, {"attribute": "plan", "in": ["pro' OR '1'='1", "x"]}) == set()
    with engine.connect() as conn:
        assert conn.execute(select(schema.contacts.c.contact_id)).scalars().all() == ["c1"]


def test_journey_forms_only_inside_journeys():
    node = segments.parse({"event": "activated", "since": "enrollment"})
    assert segments.uses_journey(node)
    with pytest.raises(segments.SegmentError, match="only works inside a journey"):
        segments.audience_query(node, AS_OF, {})
