"""Shared fixtures: databases (SQLite always, PostgreSQL where reachable), Airflow settings."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from lifecycle.devtools import local
from lifecycle.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT
FIXTURES = ROOT / "tests" / "fixtures"
AIRFLOW_WORK = Path(tempfile.mkdtemp(prefix="lifecycle-tests-"))
# Airflow reads its settings once, at import: point it at a throwaway home before any test imports it.
local.apply(local.airflow_env(AIRFLOW_WORK, AIRFLOW_WORK / "crm.db") | {"AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"})
PG_ADMIN_URL = os.environ.get("LIFECYCLE_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
MARIADB_ADMIN_URL = os.environ.get("LIFECYCLE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
AS_OF = datetime(2026, 11, 16, 15, 0)


def _postgres_reachable() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def require_postgres() -> None:
    """Skip with the reason when PostgreSQL is down; under CI it must be up, so fail instead."""
    problem = _postgres_reachable()
    if problem is None:
        return
    message = (
        f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({problem}); start it with "
        "'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message + " — CI=true, so PostgreSQL tests must run")
    pytest.skip(message)


REDIS_URL = os.environ.get("LIFECYCLE_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def require_redis() -> None:
    """Skip with the reason when Redis is down; under CI it must be up, so fail instead."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        message = (
            f"Redis is not reachable at {REDIS_URL} ({type(exc).__name__}: {exc}); start it with "
            "'redis-server --daemonize yes'"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message + " — CI=true, so Redis tests must run")
        pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    require_postgres()
    name = f"lifecycle_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    from lifecycle.model.db import get_engine

    get_engine(url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh MariaDB database for one test, dropped afterwards (skipped when MariaDB is down; under
    CI it must be up, so it fails instead)."""
    admin = create_engine(MARIADB_ADMIN_URL, connect_args={"connect_timeout": 3})
    name = f"lifecycle_t_{uuid.uuid4().hex[:10]}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}`"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        message = f"MariaDB is not reachable at {MARIADB_ADMIN_URL} ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " — CI=true, so MariaDB tests must run")
        pytest.skip(message)
    yield MARIADB_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


# Quiet hours are read again when a message goes out, on the wall clock. Tests pin that clock to a
# moment when the test contacts' zones (New York, the default; Los Angeles; London) are awake, so what
# a test sends does not depend on the hour it runs; tests of the send-time check pin their own.
SEND_CLOCK = datetime(2026, 11, 16, 17, 0)


@pytest.fixture(autouse=True)
def _pinned_send_clock(monkeypatch) -> None:
    from lifecycle.engine import dispatch

    monkeypatch.setattr(dispatch, "quiet_hours_clock", lambda: SEND_CLOCK)


@pytest.fixture(autouse=True)
def _no_engine_outlives_its_test() -> Iterator[None]:
    """Forget the engines a test made (``get_engine`` keeps one per URL per process): each keeps a
    pool and a statement cache, and a session of thousands of per-test databases would otherwise
    hold every one of them to the end."""
    yield
    from lifecycle.model.db import get_engine

    get_engine.cache_clear()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'crm.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def db_url(request, tmp_path: Path) -> str:
    """Each test using this runs on SQLite and on PostgreSQL (slow: a database created per test)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crm.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def crm(db_url: str):
    """An empty CRM with the engine tables migrated; yields (engine, CrmBuilder)."""
    from lifecycle.model import schema
    from lifecycle.model.db import get_engine, migrate
    from tests.support.crm_builder import CrmBuilder

    engine = get_engine(db_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    return engine, CrmBuilder(engine, AS_OF)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's metadata database, created once per test session."""
    from airflow.utils.db import initdb

    from lifecycle.airflow.pools import ensure_send_pool

    initdb()
    ensure_send_pool()  # every send task runs in it: a task in a missing pool is never run


@pytest.fixture
def test_config(monkeypatch) -> Path:
    """Use the small test programs and templates under tests/fixtures."""
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(FIXTURES / "config"))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(FIXTURES / "templates"))
    return FIXTURES / "config"


@pytest.fixture
def shipped_config(monkeypatch) -> None:
    """Read the project's own config/ and include/templates/, whatever the environment says."""
    monkeypatch.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)


@pytest.fixture
def shipped_crm(sqlite_url, shipped_config):
    """An empty SQLite CRM with the engine tables migrated; yields (engine, CrmBuilder)."""
    from lifecycle.model import schema
    from lifecycle.model.db import get_engine, migrate
    from tests.support.crm_builder import CrmBuilder

    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    return engine, CrmBuilder(engine, AS_OF)
