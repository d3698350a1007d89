"""The contact's published predictive scores in the template context: ``{{ scores.churn_risk }}``
and ``{{ score_deciles.churn_risk }}``, None for a contact with no score."""

from __future__ import annotations

from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import insert, null, select

from lifecycle.messages.context import MessageData, crm_columns, read_crm, template_context
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate
from tests.conftest import AS_OF
from tests.support.crm_builder import CrmBuilder

TEMPLATE = (
    "{% if scores.churn_risk is not none and scores.churn_risk >= 0.7 %}we miss you{% else %}hello{% endif %} "
    "{{ '%.2f'|format(scores.churn_risk or 0) }} {{ score_deciles.churn_risk }} {{ scores.purchase_propensity }}"
)


def _context(engine, contact_id: str) -> dict:
    c, a = schema.contacts, schema.accounts
    query = select(*crm_columns(c, a, null())).select_from(c.outerjoin(a, a.c.account_id == c.c.account_id))
    with engine.connect() as conn:
        row = conn.execute(query.where(c.c.contact_id == contact_id)).mappings().one()
    contact, account, trigger, problem = read_crm(row)
    assert problem is None
    return template_context(MessageData("winback", "offer", None, contact, account, trigger), {}, {})


def test_templates_see_the_contacts_scores(sqlite_url):
    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    crm = CrmBuilder(engine, AS_OF)
    crm.contact("risky")
    crm.contact("new")
    rows = [
        ("risky", "churn_risk", 0.83, 10),
        ("risky", "purchase_propensity", 0.12, 6),
        ("new", "purchase_propensity", 0.4, 9),
    ]
    with engine.begin() as conn:
        conn.execute(
            insert(schema.scores),
            [
                {
                    "contact_id": cid,
                    "score": name,
                    "value": value,
                    "decile": decile,
                    "model_version": "v1",
                    "as_of": AS_OF,
                }
                for cid, name, value, decile in rows
            ],
        )
    env = SandboxedEnvironment()
    risky = _context(engine, "risky")
    assert risky["scores"] == {"churn_risk": 0.83, "purchase_propensity": 0.12}
    assert risky["score_deciles"] == {"churn_risk": 10, "purchase_propensity": 6}
    assert env.from_string(TEMPLATE).render(risky) == "we miss you 0.83 10 0.12"
    new = _context(engine, "new")
    assert new["scores"] == {"churn_risk": None, "purchase_propensity": 0.4}
    assert env.from_string(TEMPLATE).render(new) == "hello 0.00 None 0.4"
