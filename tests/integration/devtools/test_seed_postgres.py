"""The synthetic CRM generator on PostgreSQL: COPY loads exactly what SQLite gets, indexed and queryable."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, inspect, select

from lifecycle.devtools.seed import seed_crm
from lifecycle.model import schema

pytestmark = pytest.mark.postgres

AS_OF = datetime(2026, 11, 16, 15, 0)
CONTACTS = 2_000


def crm_rows(url: str) -> dict[str, list[tuple]]:
    """Every CRM table's rows through SQLAlchemy (typed values, parsed JSON), in primary-key order."""
    engine = create_engine(url)
    tables = {}
    with engine.connect() as conn:
        for name, table in schema.CRM_TABLES.items():
            order = list(table.primary_key.columns) or [
                table.c.contact_id,
                table.c.channel,
                table.c.purpose,
                table.c.captured_at,
            ]
            tables[name] = [tuple(row) for row in conn.execute(select(table).order_by(*order))]
    engine.dispose()
    return tables


def test_postgres_holds_the_same_crm_as_sqlite(postgres_url: str, tmp_path: Path):
    sqlite_url = f"sqlite:///{tmp_path / 'crm.db'}"
    on_sqlite = seed_crm(sqlite_url, CONTACTS, AS_OF, seed=21)
    on_postgres = seed_crm(postgres_url, CONTACTS, AS_OF, seed=21, chunk=1_000)
    assert on_postgres.rows == on_sqlite.rows and on_postgres.planted == on_sqlite.planted
    postgres_rows, sqlite_rows = crm_rows(postgres_url), crm_rows(sqlite_url)
    for name in schema.CRM_TABLES:
        assert len(postgres_rows[name]) == on_postgres.rows[name], name
        assert postgres_rows[name] == sqlite_rows[name], name


def test_postgres_crm_is_indexed_queryable_and_reseedable(postgres_url: str):
    first = seed_crm(postgres_url, 500, AS_OF, seed=3)
    report = seed_crm(postgres_url, 500, AS_OF, seed=3)
    assert report.rows == first.rows
    engine = create_engine(postgres_url)
    inspector = inspect(engine)
    for name, table in schema.CRM_TABLES.items():
        assert {index["name"] for index in inspector.get_indexes(name)} == {i.name for i in table.indexes}
    events = schema.events
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.contacts)).scalar() == 500
        carts = conn.execute(
            select(func.count()).where(events.c.properties["cart_id"].as_string().is_not(None))
        ).scalar()
        assert carts == conn.execute(select(func.count()).where(events.c.event_type == "cart_abandoned")).scalar() > 0
        padded = conn.execute(
            select(func.count()).where(schema.contacts.c.email != func.btrim(schema.contacts.c.email))
        ).scalar()
        assert padded > 0
    engine.dispose()
