"""The SQL a Snowflake, BigQuery or Redshift source is sent, compiled with those warehouses' own
SQLAlchemy dialects (snowflake-sqlalchemy, sqlalchemy-bigquery, sqlalchemy-redshift).

A warehouse only runs the sync's SELECTs and ``lifecycle sources check``'s (segments run on the
state's mirror). The dialects live in ``.venv-dialects`` (``make dialects``, part of ``make
test``: Snowflake's connector cannot share the runtime's protobuf), so this test runs
``tests/support/compile_warehouse_sql.py`` there on this checkout's code and checks what each
dialect makes of the shipped example mapping, the canonical tables (no ``sources.yml``) and
mappings with every form a mapping takes, among them JSON read in each warehouse's own SQL."""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

import pytest
import sqlalchemy

from lifecycle.config.sources import ENTITIES, load_sources
from lifecycle.devtools.sources_check import CHECKED_ROWS
from lifecycle.devtools.warehouse import EXAMPLE_MAPPING
from lifecycle.model import schema
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

PYTHON = ROOT / ".venv-dialects" / "bin" / "python"
WAREHOUSES = ("snowflake", "bigquery", "redshift")
MARKS = {"aware": "2026-11-16T15:00:00+00:00", "naive": "2026-11-16T15:00:00"}
"""The last copy's watermark as the source gave it: a TIMESTAMP (BigQuery), TIMESTAMP_TZ
(Snowflake) or TIMESTAMPTZ column gives an aware datetime; DATETIME, TIMESTAMP_NTZ or TIMESTAMP a naive one."""

EVERY_FORM = """
contacts:
  table: crm.people                    # schema.table
  watermark: "coalesce(updated_at, created)"
  columns:
    contact_id: person_id
    email: "lower(trim(mail))"
    lifecycle_stage: "CASE WHEN paying THEN 'customer' ELSE 'lead' END"
    country: "'DE'"
  custom:
    preferred_plan: fav_plan
    seats: {type: number, source: seat_count}
    beta: {type: boolean, source: is_beta}
    trial_ends: {type: timestamp, source: trial_end}
    free_mail: {type: boolean, source: "mail LIKE '%@gmail.com'"}
consents:
  query: "SELECT person_id, opted_in, opted_at FROM crm.people WHERE opted_in IS NOT NULL AND mail NOT LIKE '%test%'"
  columns: {contact_id: person_id, channel: "'email'", purpose: "'marketing'", status: opted_in, captured_at: opted_at}
  values: {status: {granted: true, withdrawn: false}}
events:
  table: orders
  watermark: ordered_at
  columns:
    event_id: order_id
    contact_id: person_id
    event_type: "'purchase'"
    occurred_at: ordered_at
    properties: {order_id: order_ref, amount: "amount_cents / 100.0"}
"""

JSON_ACCESS = {
    "snowflake": ("properties:plan::string", "traits:plan::string"),
    "bigquery": ("JSON_VALUE(properties, '$.plan')", "JSON_VALUE(traits, '$.plan')"),
    "redshift": ("JSON_EXTRACT_PATH_TEXT(properties, 'plan')", "JSON_EXTRACT_PATH_TEXT(traits, 'plan')"),
}
"""How each warehouse reads a JSON field: a mapping's expressions are written in the source's own SQL."""

QUALIFIED = {
    "snowflake": "analytics.segment.tracks",
    "bigquery": "my-project.segment.tracks",
    "redshift": "segment.tracks",
}
"""A table as each warehouse names one across databases (projects) and schemas (datasets)."""


def _json_mapping(dialect: str) -> str:
    column, query_column = JSON_ACCESS[dialect]
    return f"""
contacts:
  query: "SELECT id, {query_column} AS plan FROM identifies"
  columns: {{contact_id: id, plan: plan}}
events:
  table: {QUALIFIED[dialect]}
  columns:
    {{event_id: message_id, contact_id: user_id, event_type: event, occurred_at: timestamp, properties: properties}}
  custom:
    plan: "{column}"
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not PYTHON.exists():
        pytest.fail(f"{PYTHON} is missing — fix: make dialects (make test runs it)")
    folder = tmp_path_factory.mktemp("mappings")
    mappings: dict[str, str | None] = {"example": str(EXAMPLE_MAPPING), "canonical": None}
    for name, text in {"every_form": EVERY_FORM, **{f"json_{d}": _json_mapping(d) for d in WAREHOUSES}}.items():
        (folder / f"{name}.yml").write_text(text)
        read = load_sources(folder / f"{name}.yml")
        assert read is not None and not read.errors, name
        mappings[name] = str(folder / f"{name}.yml")
    request = {"marks": MARKS, "sample_rows": CHECKED_ROWS, "mappings": mappings}
    result = subprocess.run(
        [str(PYTHON), str(ROOT / "tests" / "support" / "compile_warehouse_sql.py")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _one_line(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def _sql(compiled: dict[str, Any], dialect: str, mapping: str, part: str, kind: str, form: str = "literal") -> str:
    return _one_line(compiled["sql"][dialect][mapping][part][kind][form])


def test_the_dialects_compile_with_the_runtime_sqlalchemy(compiled) -> None:
    assert compiled["versions"]["SQLAlchemy"] == sqlalchemy.__version__
    assert set(compiled["sql"]) == set(WAREHOUSES)
    example = load_sources(EXAMPLE_MAPPING)
    assert example is not None
    assert set(compiled["sql"]["snowflake"]["example"]) == {
        f"{entity}[{i}]" if len(parts) > 1 else entity
        for entity, parts in example.entities.items()
        for i in range(len(parts))
    }
    assert set(compiled["sql"]["snowflake"]["canonical"]) == set(ENTITIES)


@pytest.mark.parametrize("dialect", WAREHOUSES)
def test_every_statement_is_a_select_of_the_source_with_its_values_written_in(compiled, dialect: str) -> None:
    for mapping, parts in compiled["sql"][dialect].items():
        for part, kinds in parts.items():
            for kind, forms in kinds.items():
                sql = forms["literal"]
                assert sql is not None, f"{dialect} cannot write the values of {mapping} {part} {kind} inline"
                assert _one_line(sql).startswith("SELECT "), (mapping, part, kind)
                assert not any(re.search(rf"\b{t}\b", sql) for t in schema.engine_metadata.tables), (mapping, part)
            assert _sql(compiled, dialect, mapping, part, "count").startswith("SELECT count(*)")
            assert _sql(compiled, dialect, mapping, part, "sample").endswith(f"LIMIT {CHECKED_ROWS}")
            assert _sql(compiled, dialect, mapping, part, "header").endswith("LIMIT 0")


def test_bigquery_quotes_every_name_with_backticks_and_types_the_watermark(compiled) -> None:
    sql = _sql(compiled, "bigquery", "example", "events[0]", "incremental_aware")
    assert sql == (
        "SELECT `message_id` AS `c__event_id`, `user_id` AS `c__contact_id`, `event` AS `c__event_type`, "
        "`timestamp` AS `c__occurred_at`, `properties` AS `c__properties`, `timestamp` AS `w__` FROM `tracks` "
        "WHERE `timestamp` >= TIMESTAMP '2026-11-16 15:00:00+00:00'"
    )
    # BigQuery compares a TIMESTAMP column only with a TIMESTAMP, a DATETIME with a DATETIME: the
    # parameter is typed by the watermark the source gave.
    assert _sql(compiled, "bigquery", "example", "events[0]", "incremental_aware", "executed").endswith(
        "WHERE `timestamp` >= %(since:TIMESTAMP)s"
    )
    assert _sql(compiled, "bigquery", "example", "events[0]", "incremental_naive", "executed").endswith(
        "WHERE `timestamp` >= %(since:DATETIME)s"
    )
    assert _sql(compiled, "bigquery", "example", "contacts", "sample", "executed").endswith("LIMIT %(param_1:INT64)s")
    assert "FROM `crm`.`people`" in _sql(compiled, "bigquery", "every_form", "contacts", "full")
    assert _sql(compiled, "bigquery", "json_bigquery", "events", "full").endswith("FROM `my-project.segment`.`tracks`")


def test_snowflake_leaves_lower_case_names_unquoted_so_they_match_its_upper_case_ones(compiled) -> None:
    sql = _sql(compiled, "snowflake", "example", "events[0]", "incremental_aware")
    assert sql == (
        "SELECT message_id AS c__event_id, user_id AS c__contact_id, event AS c__event_type, "
        "timestamp AS c__occurred_at, properties AS c__properties, timestamp AS w__ FROM tracks "
        "WHERE timestamp >= '2026-11-16 15:00:00.000000+00:00'"
    )
    assert _sql(compiled, "snowflake", "example", "events[0]", "incremental_aware", "executed").endswith(
        "WHERE timestamp >= %(since)s"
    )
    assert "FROM crm.people" in _sql(compiled, "snowflake", "every_form", "contacts", "full")
    assert _sql(compiled, "snowflake", "json_snowflake", "events", "full").endswith("FROM analytics.segment.tracks")


def test_redshift_quotes_its_reserved_words(compiled) -> None:
    sql = _sql(compiled, "redshift", "example", "events[0]", "incremental_aware")
    assert sql == (
        "SELECT message_id AS c__event_id, user_id AS c__contact_id, event AS c__event_type, "
        '"timestamp" AS c__occurred_at, properties AS c__properties, "timestamp" AS w__ FROM tracks '
        "WHERE \"timestamp\" >= '2026-11-16 15:00:00+00:00'"
    )
    assert _sql(compiled, "redshift", "json_redshift", "events", "full").endswith("FROM segment.tracks")


@pytest.mark.parametrize("dialect", WAREHOUSES)
def test_expressions_and_queries_reach_the_warehouse_as_written(compiled, dialect: str) -> None:
    # Each in parentheses, unchanged but for % doubled: all three drivers take pyformat parameters
    # (%(name)s) and read %% as %.
    contacts = _sql(compiled, dialect, "every_form", "contacts", "incremental_aware", "executed")
    for expression in (
        "(lower(trim(mail))) AS",
        "(CASE WHEN paying THEN 'customer' ELSE 'lead' END) AS",
        "('DE') AS",
        "(mail LIKE '%%@gmail.com') AS",
        "WHERE (coalesce(updated_at, created)) >= %(since",
    ):
        assert expression in contacts, (dialect, expression)
    assert (
        "FROM (SELECT person_id, opted_in, opted_at FROM crm.people WHERE opted_in IS NOT NULL AND mail NOT LIKE "
        "'%%test%%') AS lifecycle_source"
    ) in _sql(compiled, dialect, "every_form", "consents", "full", "executed")
    assert "(amount_cents / 100.0) AS" in _sql(compiled, dialect, "every_form", "events", "full")


@pytest.mark.parametrize("dialect", WAREHOUSES)
def test_json_is_read_in_the_warehouses_own_sql(compiled, dialect: str) -> None:
    column, query_column = JSON_ACCESS[dialect]
    events = _sql(compiled, dialect, f"json_{dialect}", "events", "full", "executed")
    assert f"({column}) AS " in events
    contacts = _sql(compiled, dialect, f"json_{dialect}", "contacts", "full", "executed")
    assert f"FROM (SELECT id, {query_column} AS plan FROM identifies) AS lifecycle_source" in contacts
    # A JSON column mapped whole (the example's tracks.properties) is read as it is, parsed by the sync.
    assert re.search(
        r"[`\"]?properties[`\"]? AS [`\"]?c__properties", _sql(compiled, dialect, "example", "events[0]", "full")
    )


def test_a_part_without_a_watermark_reads_everything_every_time(compiled) -> None:
    for dialect in WAREHOUSES:
        for part in ENTITIES:
            full = _sql(compiled, dialect, "canonical", part, "full")
            assert _sql(compiled, dialect, "canonical", part, "incremental_aware") == full
            assert "WHERE" not in full
