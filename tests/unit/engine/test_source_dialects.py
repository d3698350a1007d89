"""What runs on a source is the sync stage's SELECTs (the mapping's tables, queries, columns and
expressions); every stage's SQL, segments included, runs on the state (SQLite or PostgreSQL). So:
every SELECT the shipped warehouse mapping makes compiles with each source dialect the tests run
(PostgreSQL, MariaDB, SQLite, DuckDB), and every shipped segment compiles with both state dialects.
Snowflake's, BigQuery's and Redshift's dialects compile them in test_warehouse_dialects.py."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import create_engine
from sqlalchemy.dialects import mysql, postgresql, sqlite

from lifecycle import config
from lifecycle.config import segments as seg
from lifecycle.config.sources import load_sources
from lifecycle.devtools.warehouse import EXAMPLE_MAPPING
from lifecycle.engine.sync import _Part
from lifecycle.model import schema

AS_OF = datetime(2026, 11, 16, 15)


def _dialects() -> dict[str, object]:
    found = {"postgresql": postgresql.dialect(), "mysql": mysql.dialect(), "sqlite": sqlite.dialect()}
    found["duckdb"] = create_engine("duckdb:///:memory:").dialect
    return found


DIALECTS = _dialects()


def _parts() -> list[_Part]:
    sources = load_sources(EXAMPLE_MAPPING)
    assert sources is not None and not sources.errors
    return [
        _Part(entity, f"{entity}[{i}]", mapping, sources.file, strict=True)
        for entity, mappings in sources.entities.items()
        for i, mapping in enumerate(mappings)
    ]


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_every_sync_select_of_the_example_mapping_compiles(dialect: str) -> None:
    compiled = 0
    for part in _parts():
        for stmt in (part.select(), part.select(since=AS_OF), part.count(), part.select(limit=500)):
            sql = str(stmt.compile(dialect=DIALECTS[dialect]))
            assert sql.startswith("SELECT") and not any(t in sql for t in schema.engine_metadata.tables)
            compiled += 1
    assert compiled == 4 * len(_parts())


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_every_shipped_segment_compiles_on_the_state_dialects(dialect: str) -> None:
    catalog = config.load_segments()
    programs, errors = config.load_all_programs()
    assert not errors
    expressions = [(name, d.definition.parsed) for name, d in catalog.segments.items()]
    expressions += [
        (f"{pid}.{where}", expr.parsed) for pid, p in programs.items() for where, expr in config._program_segments(p)
    ]
    for name, parsed in expressions:
        if seg.uses_journey(parsed, catalog.parsed):
            continue  # compiled inside a journey (exit goals, step conditions): the program tests run them
        query = seg.audience_query(parsed, AS_OF, catalog.parsed)
        assert "SELECT" in str(query.compile(dialect=DIALECTS[dialect])), name
    assert len(expressions) > 20
