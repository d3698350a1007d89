"""Compile what Lifecycle runs on a warehouse with Snowflake's, BigQuery's and Redshift's own dialects.

Run by ``tests/unit/engine/test_warehouse_dialects.py`` with the python of ``.venv-dialects``
(``make dialects``; see requirements-dialects.txt) and ``PYTHONPATH=plugins``, so it compiles this
checkout's code. A warehouse only ever runs the sync's SELECTs and ``lifecycle sources check``'s
(segments run on the state's mirror), so for every mapping part of every mapping given it compiles:
``full`` (the whole part), ``incremental_<mark>`` (rows at or past each given watermark), ``count``,
``sample`` (``lifecycle sources check``'s first rows) and ``header`` (its column check).

stdin: ``{"marks": {name: ISO timestamp}, "sample_rows": int, "mappings": {name: sources.yml path,
or null for the canonical tables}}``. stdout: ``{"versions": {...}, "sql": {dialect: {mapping:
{part: {statement: {"executed": SQL as the driver receives it, "literal": SQL with the values
written in, or null when the dialect cannot write one}}}}}}``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from snowflake.sqlalchemy.snowdialect import SnowflakeDialect
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import CompileError
from sqlalchemy_bigquery import BigQueryDialect
from sqlalchemy_redshift.dialect import RedshiftDialect_psycopg2

from lifecycle.config.sources import ENTITIES, load_sources
from lifecycle.engine.sync import entity_parts

DISTRIBUTIONS = ("SQLAlchemy", "snowflake-sqlalchemy", "sqlalchemy-bigquery", "sqlalchemy-redshift")


def dialects() -> dict[str, Dialect]:
    """Each dialect as an engine would make it, with its driver's parameter style (nothing connects;
    Redshift's driver, psycopg2, is not needed to compile: pyformat is its dialect's default)."""
    return {
        "snowflake": SnowflakeDialect(dbapi=SnowflakeDialect.import_dbapi()),
        "bigquery": BigQueryDialect(dbapi=BigQueryDialect.import_dbapi()),
        "redshift": RedshiftDialect_psycopg2(),
    }


def compiled(stmt: Any, dialect: Dialect) -> dict[str, str | None]:
    try:
        literal: str | None = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    except (CompileError, NotImplementedError):  # the dialect cannot write the value inline
        literal = None
    return {"executed": str(stmt.compile(dialect=dialect)), "literal": literal}


def statements(mapping: str | None, marks: dict[str, datetime], sample_rows: int) -> dict[str, dict[str, Any]]:
    """Per mapping part, the statements a warehouse is sent."""
    sources = load_sources(Path(mapping)) if mapping else None
    if sources is not None and sources.errors:
        raise SystemExit(f"{mapping}: {sources.errors}")
    entities = list(sources.entities) if sources is not None else list(ENTITIES)
    out: dict[str, dict[str, Any]] = {}
    for entity in entities:
        for part in entity_parts(entity, sources, Path("sources.yml")):
            out[part.where] = {
                "full": part.select(),
                **{f"incremental_{name}": part.select(since=mark) for name, mark in marks.items()},
                "count": part.count(),
                "sample": part.select(limit=sample_rows),
                "header": part.header(),
            }
    return out


def main() -> None:
    request = json.load(sys.stdin)
    marks = {name: datetime.fromisoformat(mark) for name, mark in request["marks"].items()}
    parts = {name: statements(path, marks, request["sample_rows"]) for name, path in request["mappings"].items()}
    sql = {
        dialect_name: {
            name: {where: {kind: compiled(stmt, dialect) for kind, stmt in kinds.items()} for where, kinds in p.items()}
            for name, p in parts.items()
        }
        for dialect_name, dialect in dialects().items()
    }
    json.dump({"versions": {d: version(d) for d in DISTRIBUTIONS}, "sql": sql}, sys.stdout)


if __name__ == "__main__":
    main()
