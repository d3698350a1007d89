"""Custom attributes: extra contact and event fields declared in config/sources.yml, copied by the sync
stage and read by segments (``{attribute: custom.<name>, ...}``) and templates (``contact.custom.<name>``)."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import null, select, text

from lifecycle import config
from lifecycle.config import segments as seg
from lifecycle.config.sources import load_sources
from lifecycle.engine import sync
from lifecycle.engine.sync import SourceError
from lifecycle.messages.context import MessageData, crm_columns, read_crm, template_context
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate, source_engine
from tests.conftest import ROOT
from tests.support.warehouse import WAREHOUSE_MAPPING

AS_OF = datetime(2026, 11, 16, 12)
USERS = [
    # id, fav_plan, seats, beta, trial_ends (text), stage
    ("u1", "pro", 12, 1, "2026-11-20", "customer_active"),
    ("u2", "starter", 3, 0, "2026-12-30", "customer_active"),
    ("u3", None, None, None, None, "lead"),
]
MAPPING = """
contacts:
  table: users
  columns: {contact_id: id, lifecycle_stage: stage}
  values: {lifecycle_stage: {customer: customer_active, lead: lead}}
  custom:
    preferred_plan: fav_plan                      # text, the short form
    seats: {type: number, source: seats}
    beta: {type: boolean, source: beta}
    trial_ends: {type: timestamp, source: trial_ends}
    seats_band: {type: text, source: "CASE WHEN seats >= 10 THEN 'large' ELSE 'small' END"}
events:
  table: tracks
  columns: {event_id: id, contact_id: user_id, event_type: event, occurred_at: at}
  custom:
    device: {type: text, source: device}
"""


def _warehouse(path: Path, seats_type: str = "INTEGER") -> str:
    url = f"sqlite:///{path}"
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS users"))
        conn.execute(
            text(
                f"CREATE TABLE users (id TEXT, fav_plan TEXT, seats {seats_type}, beta INTEGER, "
                "trial_ends TEXT, stage TEXT)"
            )
        )
        conn.execute(
            text("INSERT INTO users VALUES (:i, :p, :s, :b, :t, :st)"),
            [dict(zip(("i", "p", "s", "b", "t", "st"), u, strict=True)) for u in USERS],
        )
        conn.execute(
            text("CREATE TABLE IF NOT EXISTS tracks (id TEXT, user_id TEXT, event TEXT, at TEXT, device TEXT)")
        )
        conn.execute(text("INSERT INTO tracks VALUES ('e1', 'u1', 'feature_used', '2026-11-15 10:00:00', 'ios')"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def mapped(request, tmp_path: Path, monkeypatch):
    cfg = tmp_path / "config"
    shutil.copytree(ROOT / "config", cfg)
    (cfg / "sources.yml").write_text(MAPPING)
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(cfg))
    source = source_engine(_warehouse(tmp_path / "warehouse.db"))
    if request.param == "postgresql":
        state = get_engine(request.getfixturevalue("postgres_url"))
    else:
        state = get_engine(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(state)
    sync.sync(source, state, load_sources(), ["contacts", "events"], shared=False)
    return state, cfg


def _audience(state, expr) -> list[str]:
    query = seg.audience_query(seg.parse(expr), AS_OF, {})
    with state.connect() as conn:
        return sorted(conn.execute(query).scalars())


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ({"attribute": "custom.preferred_plan", "eq": "pro"}, ["u1"]),
        ({"attribute": "custom.preferred_plan", "ne": "pro"}, ["u2", "u3"]),
        ({"attribute": "custom.preferred_plan", "is_null": True}, ["u3"]),
        ({"attribute": "custom.seats", "gte": 10}, ["u1"]),
        ({"attribute": "custom.seats", "in": [3, 4]}, ["u2"]),
        ({"attribute": "custom.beta", "eq": True}, ["u1"]),
        ({"attribute": "custom.trial_ends", "within_next": "7d"}, ["u1"]),
        ({"attribute": "custom.trial_ends", "older_than": "1d"}, []),
        ({"attribute": "custom.seats_band", "eq": "small"}, ["u2", "u3"]),
        (
            {
                "all": [
                    {"attribute": "lifecycle_stage", "eq": "customer"},
                    {"not": {"attribute": "custom.beta", "eq": True}},
                ]
            },
            ["u2"],
        ),
        ({"event": "feature_used", "where": {"device": "ios"}}, ["u1"]),
    ],
)
def test_segments_read_custom_attributes(mapped, expr, expected) -> None:
    state, _cfg = mapped
    assert _audience(state, expr) == expected


def test_custom_values_are_bound_parameters(mapped) -> None:
    state, _cfg = mapped
    clause = seg.audience_query(seg.parse({"attribute": "custom.preferred_plan", "eq": "x' OR 1=1 --"}), AS_OF, {})
    assert "OR 1=1" not in str(clause.compile(state))
    assert _audience(state, {"attribute": "custom.preferred_plan", "eq": "x' OR 1=1 --"}) == []


def test_templates_see_contact_custom(mapped) -> None:
    state, _cfg = mapped
    c, a = schema.contacts, schema.accounts
    query = select(*crm_columns(c, a, null())).select_from(c.outerjoin(a, a.c.account_id == c.c.account_id))
    with state.connect() as conn:
        row = conn.execute(query.where(c.c.contact_id == "u1")).mappings().one()
    contact, account, trigger, problem = read_crm(row)
    assert problem is None
    context = template_context(MessageData("upsell", "offer", None, contact, account, trigger), {}, {})
    rendered = (
        SandboxedEnvironment()
        .from_string(
            "{{ contact.custom.preferred_plan }} {{ contact.custom.seats|int }} {{ contact.custom.beta }} "
            "{{ contact.custom.trial_ends.strftime('%d %b') }}"
        )
        .render(context)
    )
    assert rendered == "pro 12 True 20 Nov"


def test_a_program_reading_an_undeclared_attribute_breaks_alone(mapped) -> None:
    _state, cfg = mapped
    (cfg / "sources.yml").write_text(
        WAREHOUSE_MAPPING.replace(
            "  table: users\n", "  table: users\n  custom:\n    seats: {type: number, source: mrr}\n", 1
        )
    )
    upsell = cfg / "programs" / "upsell.yml"
    upsell.write_text(
        upsell.read_text().replace(
            "      - {segment: stage_customer}\n",
            "      - {segment: stage_customer}\n"
            "      - {attribute: custom.favourite_colour, eq: blue}\n"
            "      - {attribute: custom.seats, within_last: 3d}\n",
            1,
        )
    )
    programs, errors = config.load_all_programs()
    assert "upsell" not in programs and "welcome" in programs
    problems = "\n".join(errors["upsell"].problems)
    assert "audience.segment.all[1]: custom.favourite_colour is not a custom attribute of contacts" in problems
    assert "declare it under contacts.custom in sources.yml" in problems
    assert "within_last needs a timestamp, and custom.seats is number" in problems


def test_a_custom_attribute_of_the_wrong_type_names_the_entry(tmp_path: Path) -> None:
    (tmp_path / "sources.yml").write_text(
        MAPPING.replace("beta: {type: boolean, source: beta}", "beta: {type: timestamp, source: fav_plan}")
    )
    source = source_engine(_warehouse(tmp_path / "warehouse.db"))
    state = get_engine(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(state)
    with pytest.raises(SourceError) as caught:
        sync.sync(source, state, load_sources(tmp_path / "sources.yml"), ["contacts"], shared=False)
    assert "contacts.custom.beta: 'fav_plan' gives values that are not timestamp" in str(caught.value)
    assert "fix: declare the type the column holds" in str(caught.value)


def test_a_bad_declaration_names_the_field(tmp_path: Path) -> None:
    bad = MAPPING.replace("seats: {type: number, source: seats}", "Seats: {type: integer, source: seats}")
    (tmp_path / "sources.yml").write_text(bad)
    sources = load_sources(tmp_path / "sources.yml")
    assert sources is not None
    problems = "\n".join(sources.errors["contacts"])
    assert "contacts.custom.Seats" in problems
    assert "'integer' is not one of ['text', 'number', 'boolean', 'timestamp']" in problems
