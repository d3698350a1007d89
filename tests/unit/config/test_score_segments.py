"""Predictive scores in the segment language: ``{score: churn_risk, gte: 0.7}`` and deciles; a contact
with no score never matches; a wrong score name or operator is named with the fix."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from lifecycle.config import segments
from lifecycle.model import schema
from tests.conftest import AS_OF
from tests.unit.config.test_segments import members


@pytest.fixture
def crm_db(db_url):
    """A CRM in a migrated state database (where lifecycle_scores lives)."""
    from lifecycle.model.db import get_engine, migrate
    from tests.support.crm_builder import CrmBuilder

    engine = get_engine(db_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    return engine, CrmBuilder(engine, AS_OF)


def _score(engine, contact_id: str, name: str, value: float, decile: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.scores).values(
                contact_id=contact_id, score=name, value=value, decile=decile, model_version="v1", as_of=AS_OF
            )
        )


def test_score_values_and_deciles_select_the_right_contacts(crm_db):
    engine, crm = crm_db
    for cid in ("high", "mid", "low", "unscored"):
        crm.contact(cid, lifecycle_stage="customer")
    _score(engine, "high", "churn_risk", 0.82, 10)
    _score(engine, "mid", "churn_risk", 0.7, 8)
    _score(engine, "low", "churn_risk", 0.05, 1)
    _score(engine, "low", "purchase_propensity", 0.9, 10)
    _score(engine, "unscored", "purchase_propensity", 0.2, 4)  # scored for the other score only

    assert members(engine, {"score": "churn_risk", "gte": 0.7}) == {"high", "mid"}
    assert members(engine, {"score": "churn_risk", "gt": 0.7}) == {"high"}
    assert members(engine, {"score": "churn_risk", "lt": 0.7}) == {"low"}
    assert members(engine, {"score": "churn_risk", "lte": 0.7}) == {"mid", "low"}
    assert members(engine, {"score": "churn_risk", "decile_gte": 8}) == {"high", "mid"}
    assert members(engine, {"score": "churn_risk", "decile": [9, 10]}) == {"high"}
    assert members(engine, {"score": "churn_risk", "decile": 1}) == {"low"}
    assert members(engine, {"score": "churn_risk", "decile_lt": 8}) == {"low"}
    # No score, no match, however low the bar; "not" is where the unscored come in.
    assert members(engine, {"score": "churn_risk", "gte": 0.0}) == {"high", "mid", "low"}
    assert members(engine, {"not": {"score": "churn_risk", "gte": 0.7}}) == {"low", "unscored"}
    assert members(
        engine,
        {"all": [{"score": "purchase_propensity", "decile_gte": 9}, {"score": "churn_risk", "lt": 0.5}]},
    ) == {"low"}


@pytest.mark.parametrize(
    ("expr", "path", "words"),
    [
        (
            {"score": "clv", "gte": 0.5},
            "segment.score",
            "unknown score 'clv'; use one of ['churn_risk', 'purchase_propensity']",
        ),
        ({"score": "churn_risk"}, "segment", "give the score one operator"),
        ({"score": "churn_risk", "gte": 0.5, "lte": 0.9}, "segment", "give the score one operator"),
        ({"score": "churn_risk", "eq": 0.5}, "segment", "{score: churn_risk, gte: 0.7}"),
        ({"score": "churn_risk", "gte": 70}, "segment.gte", "a number from 0 to 1, not 70"),
        ({"score": "churn_risk", "gte": "high"}, "segment.gte", "a number from 0 to 1"),
        ({"score": "churn_risk", "decile_gte": 11}, "segment.decile_gte", "from 1 (lowest) to 10 (highest)"),
        ({"score": "churn_risk", "decile": []}, "segment.decile", "from 1 (lowest) to 10"),
        ({"score": "churn_risk", "decile": [9, 0.5]}, "segment.decile", "from 1 (lowest) to 10"),
    ],
)
def test_score_errors_name_the_path_and_the_fix(expr, path, words):
    with pytest.raises(segments.SegmentError) as err:
        segments.parse(expr)
    assert err.value.path == path and words in str(err.value)


def test_a_score_reads_no_crm_table_and_no_journey():
    node = segments.parse({"score": "churn_risk", "gte": 0.7})
    assert segments.tables_used(node, {}) == set()
    assert not segments.uses_journey(node)
