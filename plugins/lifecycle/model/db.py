"""Database access: the source and state engines, portable SQL helpers, migrations.

Two databases, which may be one: the **source** (``crm_default``), the user's CRM, only ever read;
and the **state** (``lifecycle_state``), where the engine's ``lifecycle_*`` tables live and every
stage runs. Where ``lifecycle_state`` is not configured the state is the source (the embedded
default: one SQLite file holds both).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Engine,
    Float,
    Insert,
    Integer,
    String,
    Table,
    create_engine,
    event,
    literal,
    make_url,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeEngine

from lifecycle.paths import PACKAGE_DIR

if TYPE_CHECKING:
    from airflow.sdk import Connection as AirflowConnection

CRM_CONN_ID = "crm_default"
STATE_CONN_ID = "lifecycle_state"
# A row as a stage reads it: a result row's mapping, or a plain dict built by hand (tests, previews).
Record: TypeAlias = RowMapping | Mapping[str, Any]
BUCKETS = 10_000


def url_from_connection(conn: AirflowConnection) -> str:
    """Build a SQLAlchemy URL from an Airflow Connection.

    ``extra.sqlalchemy_url`` wins; then the connection types this project runs on (sqlite, postgres,
    mysql through PyMySQL, duckdb); then the provider hook's own ``sqlalchemy_url`` (common-sql's
    ``DbApiHook``: Snowflake, BigQuery, Redshift... through their providers)."""
    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        url: str = extra["sqlalchemy_url"]
        return url
    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    if conn.conn_type == "duckdb":
        return f"duckdb:///{conn.host}"
    drivers = {"postgres": "postgresql+psycopg2", "postgresql": "postgresql+psycopg2", "mysql": "mysql+pymysql"}
    if conn.conn_type in drivers:
        auth = conn.login or ""
        if conn.password:
            auth += f":{conn.password}"
        netloc = f"{auth}@" if auth else ""
        port = f":{conn.port}" if conn.port else ""
        return f"{drivers[conn.conn_type]}://{netloc}{conn.host}{port}/{conn.schema}"
    hook_url = getattr(conn.get_hook(), "sqlalchemy_url", None)  # type: ignore[no-untyped-call]
    if hook_url is not None:
        return hook_url if isinstance(hook_url, str) else hook_url.render_as_string(hide_password=False)
    raise ValueError(
        f"Connection {conn.conn_id!r} has type {conn.conn_type!r}, whose hook yields no SQLAlchemy URL; "
        "use sqlite, postgres, mysql or duckdb, or set extra.sqlalchemy_url"
    )


def crm_url(conn_id: str = CRM_CONN_ID) -> str:
    """The source (CRM) database URL: LIFECYCLE_CRM_URL if set, else the Airflow connection."""
    if os.environ.get("LIFECYCLE_CRM_URL"):
        return os.environ["LIFECYCLE_CRM_URL"]
    from airflow.sdk import BaseHook

    return url_from_connection(BaseHook.get_connection(conn_id))


def state_url(conn_id: str = STATE_CONN_ID, crm_conn_id: str = CRM_CONN_ID) -> str:
    """The state database URL (the engine's tables, where every stage runs): LIFECYCLE_STATE_URL if
    set, else the ``lifecycle_state`` connection, else the source's URL (one database holds both)."""
    if os.environ.get("LIFECYCLE_STATE_URL"):
        return os.environ["LIFECYCLE_STATE_URL"]
    if not os.environ.get("LIFECYCLE_CRM_URL"):
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return url_from_connection(BaseHook.get_connection(conn_id))
        except AirflowNotFoundException:
            pass
    return crm_url(crm_conn_id)


async def aurls(crm_conn_id: str = CRM_CONN_ID, state_conn_id: str = STATE_CONN_ID) -> tuple[str, str]:
    """The source and state URLs as :func:`crm_url` and :func:`state_url` give them, for code on an
    event loop (the triggerer: a connection is fetched with ``aget_connection``, and read off the loop,
    since reading its extras masks them through the supervisor)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException
    from asgiref.sync import sync_to_async

    async def url(conn_id: str) -> str:
        return await sync_to_async(url_from_connection)(await BaseHook.aget_connection(conn_id))

    crm = os.environ.get("LIFECYCLE_CRM_URL") or await url(crm_conn_id)
    state = os.environ.get("LIFECYCLE_STATE_URL")
    if not state and not os.environ.get("LIFECYCLE_CRM_URL"):
        try:
            state = await url(state_conn_id)
        except AirflowNotFoundException:
            state = None
    return crm, state or crm


def _sqlite_bucket(key: str) -> int:
    return int(hashlib.md5(key.encode()).hexdigest()[:8], 16) % BUCKETS


def bucket_of(key: str) -> int:
    """Python twin of the SQL ``bucket`` expression: a stable number in [0, 10000)."""
    return _sqlite_bucket(key)


@cache
def get_engine(url: str) -> Engine:
    """One engine per URL per process: SQLite tuned for a concurrent local setup, PostgreSQL (psycopg2)
    without JIT and with batched executemany.

    Every engine hides statement parameters in its errors (``hide_parameters``): a failed INSERT or
    UPDATE would otherwise print the emails and phone numbers it carried into a task log."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _on_connect(  # pragma: no cover - driver callback
            dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry
        ) -> None:
            dbapi_conn.create_function("lifecycle_bucket", 1, _sqlite_bucket, deterministic=True)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    if make_url(url).get_driver_name() == "psycopg2":
        # JIT compiling the engine's large segment and cap statements costs seconds per statement
        # (thousands of expression functions) and saves nothing on their indexed lookups; batched
        # executemany sends a hundred per-message UPDATEs per round trip instead of one.
        return create_engine(
            url,
            pool_pre_ping=True,
            hide_parameters=True,
            executemany_mode="values_plus_batch",
            connect_args={"options": "-c jit=off"},
        )
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


@cache
def source_engine(url: str) -> Engine:
    """A read-only engine on the source (``crm_default``): every connection refuses writes where the
    driver can say so. SQLite opens the file with ``mode=ro`` (and sets no pragma: a read-only file
    takes none), PostgreSQL and MariaDB start read-only transactions, DuckDB opens read-only."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = parsed.database or ""
        target = path if path.startswith("file:") else f"file:{path}?mode=ro"
        return create_engine("sqlite://", creator=lambda: sqlite3.connect(target, uri=True), hide_parameters=True)
    if backend == "postgresql" and parsed.get_driver_name() == "psycopg2":
        options = "-c default_transaction_read_only=on"
        return create_engine(url, pool_pre_ping=True, hide_parameters=True, connect_args={"options": options})
    if backend == "duckdb":
        return create_engine(url, hide_parameters=True, connect_args={"read_only": True})
    engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
    if backend in {"mysql", "mariadb"}:

        @event.listens_for(engine, "connect")
        def _read_only(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:  # pragma: no cover - driver callback
            cur = dbapi_conn.cursor()
            cur.execute("SET SESSION TRANSACTION READ ONLY")
            cur.close()

    return engine


class bucket(FunctionElement):
    """``bucket(key)``: md5-based hash of a text key into [0, 10000), same on every dialect."""

    type = Integer()
    inherit_cache = True


@compiles(bucket, "sqlite")
def _bucket_sqlite(element: bucket, compiler: SQLCompiler, **kw: Any) -> str:
    return f"lifecycle_bucket({compiler.process(element.clauses, **kw)})"


@compiles(bucket, "postgresql")
def _bucket_postgres(element: bucket, compiler: SQLCompiler, **kw: Any) -> str:
    arg = compiler.process(element.clauses, **kw)
    return f"mod(('x' || substr(md5({arg}), 1, 8))::bit(32)::bigint, {BUCKETS})"


def insert_ignore(engine_or_conn: Engine | Connection, table: Table) -> Insert:
    """An INSERT that skips rows whose unique key already exists (idempotent writes)."""
    name = engine_or_conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    if name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).on_conflict_do_nothing()
    raise ValueError(f"Unsupported database dialect {name!r}: use SQLite or PostgreSQL")


def utc_naive(value: datetime) -> datetime:
    """Naive UTC plain ``datetime`` (never a pendulum subclass), the form every timestamp takes in
    the database and in the engine's time arithmetic."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond)


def concat(*parts: ColumnElement[Any] | str) -> ColumnElement[Any]:
    """String concatenation that works on every dialect."""
    from sqlalchemy import literal

    expr = parts[0] if isinstance(parts[0], ColumnElement) else literal(parts[0])
    for part in parts[1:]:
        expr = expr.op("||")(part if isinstance(part, ColumnElement) else literal(part))
    return expr


MIGRATIONS_DIR = PACKAGE_DIR / "migrations"


def migrate(engine: Engine) -> None:
    """Bring the engine's ``lifecycle_*`` tables to the newest schema (Alembic upgrade head)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


class json_value(FunctionElement):
    """``column -> key`` of a JSON column, read as ``kind`` (text, number or boolean).

    Never an error for a row: NULL where the row's JSON is malformed (SQLite does not check JSON
    on write) or where the value is not a number / boolean when one is asked for (PostgreSQL's
    cast would fail the whole statement). The key is a bound parameter.
    """

    inherit_cache = True
    kind = "text"
    type: TypeEngine[Any] = String()

    def __init__(self, column: ColumnElement, key: str) -> None:
        super().__init__(column, literal(key, String()))


class json_number(json_value):
    """:class:`json_value` as a number."""

    inherit_cache = True
    kind = "number"
    type = Float()


class json_boolean(json_value):
    """:class:`json_value` as a boolean."""

    inherit_cache = True
    kind = "boolean"
    type = Boolean()


class json_timestamp(json_value):
    """:class:`json_value` as a timestamp: text written as ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC), the
    form SQLite keeps timestamps in, so it compares with bound timestamps on both databases."""

    inherit_cache = True
    kind = "timestamp"
    type = DateTime()


@compiles(json_value, "sqlite")
def _json_value_sqlite(element: json_value, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = (compiler.process(c, **kw) for c in element.clauses)
    path = f"('$.\"' || {key} || '\"')"
    value = f"json_extract({column}, {path})"
    if element.kind not in ("text", "timestamp"):
        types = {"number": "'integer', 'real'", "boolean": "'true', 'false'"}[element.kind]
        value = f"CASE WHEN json_type({column}, {path}) IN ({types}) THEN {value} END"
    return f"CASE WHEN json_valid({column}) THEN {value} END"


@compiles(json_value, "postgresql")
def _json_value_postgres(element: json_value, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = (compiler.process(c, **kw) for c in element.clauses)
    if element.kind == "text":
        return f"({column} ->> {key})"
    if element.kind == "timestamp":
        return f"CAST({column} ->> {key} AS TIMESTAMP)"
    json_type, sql_type = {"number": ("number", "FLOAT"), "boolean": ("boolean", "BOOLEAN")}[element.kind]
    typed = f"json_typeof(({column} -> {key})::json) = '{json_type}'"
    return f"CASE WHEN {typed} THEN CAST({column} ->> {key} AS {sql_type}) END"


class valid_email(FunctionElement):
    """True when a column holds a plausible email address (one @, a dotted domain, no whitespace)."""

    type = Boolean()
    inherit_cache = True


class valid_e164(FunctionElement):
    """True when a column holds an E.164 phone number (+, country code, 7 to 15 digits)."""

    type = Boolean()
    inherit_cache = True


@compiles(valid_email, "sqlite")
def _valid_email_sqlite(element: valid_email, compiler: SQLCompiler, **kw: Any) -> str:
    c = compiler.process(element.clauses, **kw)
    return (
        f"({c} LIKE '_%@_%._%' AND {c} NOT LIKE '% %' AND {c} NOT LIKE '%@%@%' "
        f"AND {c} NOT LIKE '%..%' AND {c} NOT LIKE '%@.%' AND {c} NOT GLOB '*[' || char(9, 10, 11, 12, 13) || ']*')"
    )


@compiles(valid_email, "postgresql")
def _valid_email_postgres(element: valid_email, compiler: SQLCompiler, **kw: Any) -> str:
    c = compiler.process(element.clauses, **kw)
    return f"({c} ~ '^[^@\\s]+@[^@\\s.]+(\\.[^@\\s.]+)+$')"


@compiles(valid_e164, "sqlite")
def _valid_e164_sqlite(element: valid_e164, compiler: SQLCompiler, **kw: Any) -> str:
    c = compiler.process(element.clauses, **kw)
    return f"({c} GLOB '+[1-9]*' AND length({c}) BETWEEN 8 AND 16 AND substr({c}, 2) NOT GLOB '*[^0-9]*')"


@compiles(valid_e164, "postgresql")
def _valid_e164_postgres(element: valid_e164, compiler: SQLCompiler, **kw: Any) -> str:
    c = compiler.process(element.clauses, **kw)
    return f"({c} ~ '^\\+[1-9][0-9]{{6,14}}$')"
