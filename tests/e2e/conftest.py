"""The end-to-end cluster: docker-compose.yml's topology on this machine's PostgreSQL and Redis.

One session fixture creates fresh databases (Airflow metadata + CRM), seeds a small CRM, starts
the provider sandbox, then ``airflow api-server``, ``scheduler``, ``dag-processor``, ``triggerer``
(the realtime programs' event watchers) and ``celery worker`` as real processes sharing one JWT
secret and Fernet key, and logs in to the REST API. Teardown stops every process it started,
drops the databases and flushes the Redis database it used. Without PostgreSQL or Redis the suite
is skipped; under CI=true it fails.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from lifecycle.airflow.pools import pool_set_args
from lifecycle.paths import PROJECT_ROOT
from tests.conftest import FIXTURES, PG_ADMIN_URL, REDIS_URL, require_postgres, require_redis
from tests.support.cluster import (
    ApiClient,
    ClusterError,
    Service,
    Topology,
    airflow_argv,
    free_port,
    sandbox_url,
    start_sandbox,
    stop_all,
    wait_for,
)

# The runs' as-of is the session's own time (a minute back, off any cron tick of the programs), and
# every contact lives where it is early afternoon then: SMS quiet hours are read at planning (the
# as-of) and again when a text goes out (the wall clock), so both fall in the day whatever the hour
# the suite runs.
E2E_AS_OF = datetime.now(UTC).replace(tzinfo=None, second=17, microsecond=0) - timedelta(minutes=1)


def afternoon_zone(moment: datetime) -> str:
    """A fixed-offset zone where ``moment`` (naive UTC) is between 13:00 and 14:00."""
    offset = 13 - moment.hour  # from -10 (at 23:00 UTC) to +13 (at 00:00 UTC): every one is an Etc zone
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


REDIS_CLAIM_KEY = "lifecycle:e2e:claimed-by"
SEED_CONTACTS = 300
PROGRAMS = {
    "welcome": PROJECT_ROOT / "config" / "programs" / "welcome.yml",
    "texts": FIXTURES / "config" / "programs" / "texts.yml",
}
TEMPLATE_DIRS = (PROJECT_ROOT / "include" / "templates", FIXTURES / "templates")
SANDBOX_TIMEOUT = 30
STARTUP_TIMEOUT = 150
MIGRATE_TIMEOUT = 240


def claim_redis_db(owner: str) -> int:
    """An empty Redis database number, marked as ours so a concurrent run picks another."""
    for number in range(15, 0, -1):
        db = redis.Redis.from_url(f"{REDIS_URL}/{number}")
        try:
            if db.dbsize() == 0 and db.set(REDIS_CLAIM_KEY, owner, nx=True, ex=3600):
                return number
        finally:
            db.close()
    raise ClusterError(f"no empty Redis database at {REDIS_URL} (tried 15 down to 1)")


@dataclass(frozen=True)
class Cluster:
    """A running cluster: where everything lives, its long-running processes and a logged-in REST client."""

    topology: Topology
    services: dict[str, Service]
    api: ApiClient
    sandbox_url: str

    def logs(self) -> str:
        """The tail of every process log, for failure messages."""
        return "\n".join(service.tail() for service in self.services.values())


def _create_databases(names: list[str]) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def _drop_databases(names: list[str]) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _prepare_crm(url: str) -> None:
    """Seed the CRM as of the runs' logical date and create the engine tables (``lifecycle migrate``)."""
    from lifecycle.devtools.seed import seed_crm
    from lifecycle.model.db import get_engine, migrate

    seed_crm(url, contacts=SEED_CONTACTS, as_of=E2E_AS_OF)
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE contacts SET timezone = :zone"), {"zone": afternoon_zone(E2E_AS_OF)})
    migrate(engine)
    engine.dispose()


def _start_airflow(topology: Topology, env: dict[str, str], logs: Path) -> dict[str, Service]:
    commands = {
        "api-server": ("api-server", "--host", "127.0.0.1", "--port", str(topology.api_port)),
        "scheduler": ("scheduler",),
        "dag-processor": ("dag-processor",),
        "celery-worker": ("celery", "worker", "--concurrency", "2", "--queues", "default"),
        "triggerer": ("triggerer",),
    }
    return {name: Service.start(name, airflow_argv(*argv), env, logs) for name, argv in commands.items()}


def _start_cluster(topology: Topology, api: ApiClient, started: list[Service]) -> Cluster:
    """Bring the cluster up, appending every process to ``started`` as soon as it runs."""
    logs = topology.work / "logs"
    logs.mkdir()
    topology.write_files(PROGRAMS, TEMPLATE_DIRS)
    _create_databases([topology.metadata_db, topology.crm_db])
    sandbox = start_sandbox(topology.airflow_env(os.environ, {}), logs, topology.public_url)
    started.append(sandbox)
    url = wait_for("the provider sandbox", lambda: sandbox_url(sandbox), SANDBOX_TIMEOUT, [sandbox], 0.2)
    public_key = api.http.get(f"{url}/_sandbox/sendgrid/public_key").json()["public_key"]
    env = topology.airflow_env(os.environ, topology.connections(url, public_key))
    migrate = Service.start("db-migrate", airflow_argv("db", "migrate"), env, logs)
    started.append(migrate)
    _prepare_crm(topology.crm_url)
    if wait_for("airflow db migrate", migrate.process.poll, MIGRATE_TIMEOUT, [], 0.5) != 0:
        raise ClusterError("airflow db migrate failed")
    pools = Service.start("send-pool", airflow_argv(*pool_set_args()), env, logs)
    started.append(pools)
    if wait_for("airflow pools set", pools.process.poll, MIGRATE_TIMEOUT, [], 0.5) != 0:
        raise ClusterError("airflow pools set (the send tasks' pool) failed")
    airflow = _start_airflow(topology, env, logs)
    started.extend(airflow.values())
    services = {"provider-sandbox": sandbox} | airflow
    running = list(services.values())
    wait_for("a healthy api-server, scheduler, dag-processor and triggerer", api.health, STARTUP_TIMEOUT, running)
    api.login("admin", topology.admin_password)
    for dag_id in PROGRAMS:
        wait_for(f"DAG {dag_id} to be parsed", lambda d=dag_id: api.dag_loaded(d), STARTUP_TIMEOUT, running)
    return Cluster(topology, services, api, url)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    """The whole distributed cluster, up and logged in; stopped and cleaned up after the session."""
    require_postgres()
    require_redis()
    run = uuid.uuid4().hex[:10]
    topology = Topology(
        work=tmp_path_factory.mktemp("e2e"),
        postgres=make_url(PG_ADMIN_URL),
        metadata_db=f"lifecycle_e2e_{run}_airflow",
        crm_db=f"lifecycle_e2e_{run}_crm",
        broker_url=f"{REDIS_URL}/{claim_redis_db(run)}",
        api_port=free_port(),
        log_server_port=free_port(),
        jwt_secret=secrets.token_urlsafe(32),
        fernet_key=Fernet.generate_key().decode(),
        link_secret=secrets.token_urlsafe(24),
        write_key=secrets.token_urlsafe(24),
        admin_password=secrets.token_urlsafe(12),
    )
    started: list[Service] = []
    api = ApiClient(topology.api_url)
    try:
        try:
            cluster = _start_cluster(topology, api, started)
        except ClusterError as exc:
            pytest.fail(f"{exc}\n" + "\n".join(service.tail() for service in started))
        yield cluster
    finally:
        api.close()
        stop_all(started)
        _drop_databases([topology.metadata_db, topology.crm_db])
        redis.Redis.from_url(topology.broker_url).flushdb()
