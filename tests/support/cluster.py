"""docker-compose.yml's topology as local processes: real Airflow components and the provider sandbox.

Each process runs in its own process group with its output in a log file, so a test can stop
everything it started (children included) and show the tail of every log when something fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from sqlalchemy.engine import URL

from lifecycle.devtools.local import SANDBOX_MPS, airflow_env, connection_json
from lifecycle.paths import PROJECT_ROOT

T = TypeVar("T")
BIN = Path(sys.executable).parent
STOP_GRACE_SECONDS = 20.0
SANDBOX_URL_LINE = re.compile(r"Provider sandbox listening on (\S+)")
SENDER_NUMBER = "+15005550006"
SCHEDULE_LINE = re.compile(r'^schedule: "[^"\n]*"$', re.MULTILINE)
NEVER_DURING_TESTS = "0 0 29 2 *"
"""The cron the cluster's programs get: leap days only. Its last tick (2024-02-29) is before the
programs' start date, so unpausing a DAG creates no run for it (as it would for the latest tick of a
usual cron), and the next one is in 2028."""


class ClusterError(RuntimeError):
    """A process of the cluster died or did not become ready in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    """One started process (and its process group) with its log file."""

    name: str
    process: subprocess.Popen
    log: Path
    argv: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None

    @classmethod
    def start(cls, name: str, argv: Sequence[str], env: Mapping[str, str], logs: Path) -> Service:
        """Start ``argv`` in a new session (its own process group), output appended to ``logs/name.log``."""
        log = logs / f"{name}.log"
        return cls(name, _spawn(argv, env, log), log, tuple(argv), dict(env))

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash: nothing gets to clean up) and reap the process."""
        self.signal_group(signal.SIGKILL)
        self.process.wait(10)

    def restart(self) -> None:
        """Start the same command again, in place (whoever holds this object stops the new process),
        its output appended to the same log."""
        if self.alive:
            raise ClusterError(f"{self.name} is still running; kill it before restarting it")
        self.process = _spawn(self.argv, self.env or {}, self.log)

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def text(self) -> str:
        """Everything the process has written so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log, under a header naming the process and its state."""
        state = "running" if self.alive else f"exited with {self.process.returncode}"
        body = "\n".join(self.text().splitlines()[-lines:])
        return f"----- {self.name} ({state}), {self.log} -----\n{body}"

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the whole process group (a no-op once it is gone)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)


def _spawn(argv: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_all(services: Sequence[Service], grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop every service: SIGTERM to all groups at once, then SIGKILL whatever outlives ``grace``."""
    for service in services:
        service.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for service in services:
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.process.wait(max(deadline - time.monotonic(), 0.1))
    for service in services:
        service.signal_group(signal.SIGKILL)
        service.process.wait(5)


def wait_for(
    what: str,
    check: Callable[[], T | None],
    timeout: float,
    services: Sequence[Service],
    interval: float = 1.0,
) -> T:
    """Poll ``check`` until it returns something other than None; fail early if a service dies."""
    deadline = time.monotonic() + timeout
    while True:
        dead = [s for s in services if not s.alive]
        if dead:
            raise ClusterError(f"{', '.join(s.name for s in dead)} stopped while waiting for {what}")
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def metadata_healthy(url: str) -> bool | None:
    """True once the api-server at ``url`` answers its health check with a healthy metadata
    database, else None (for :func:`wait_for`; the scheduler need not run)."""
    try:
        response = httpx.get(f"{url}/api/v2/monitor/health", timeout=5)
    except httpx.TransportError:
        return None
    healthy = response.status_code == 200 and response.json()["metadatabase"]["status"] == "healthy"
    return True if healthy else None


@dataclass(frozen=True)
class Topology:
    """Where every piece of one cluster lives and the secrets its processes share."""

    work: Path
    postgres: URL
    metadata_db: str
    crm_db: str
    broker_url: str
    api_port: int
    log_server_port: int
    jwt_secret: str
    fernet_key: str
    link_secret: str
    write_key: str
    admin_password: str
    events_poll_seconds: float = 10.0
    """The realtime watchers' safety-net look: the track endpoint wakes them through the events queue
    (the broker's Redis) on channels under :attr:`events_channel_prefix`."""

    @property
    def events_channel_prefix(self) -> str:
        """This cluster's own channels (pub/sub channels are shared by every Redis database)."""
        return f"lifecycle.e2e.{self.crm_db}."

    @property
    def api_url(self) -> str:
        """Base URL of the api-server (REST API, execution API, and the Lifecycle web app)."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def public_url(self) -> str:
        """The Lifecycle web app's public base URL (``lifecycle_default`` host)."""
        from lifecycle_plugin import URL_PREFIX

        return self.api_url + URL_PREFIX

    @property
    def metadata_url(self) -> str:
        """SQLAlchemy URL of Airflow's metadata database."""
        return self.postgres.set(database=self.metadata_db).render_as_string(hide_password=False)

    @property
    def crm_url(self) -> str:
        """SQLAlchemy URL of the CRM database."""
        return self.postgres.set(database=self.crm_db).render_as_string(hide_password=False)

    @property
    def config_dir(self) -> Path:
        """The program config folder the processes read (LIFECYCLE_CONFIG_DIR)."""
        return self.work / "config"

    @property
    def templates_dir(self) -> Path:
        """The templates folder the processes read (LIFECYCLE_TEMPLATES_DIR)."""
        return self.work / "templates"

    @property
    def passwords_file(self) -> Path:
        """SimpleAuthManager's passwords file, written before the api-server starts."""
        return self.work / "airflow" / "simple_auth_manager_passwords.json.generated"

    def connections(self, sandbox_url: str, sendgrid_public_key: str) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables for the CRM, both providers (the sandbox), the web app and the
        track endpoint's write key."""
        from lifecycle.sandbox import DEFAULT_SENDGRID_KEY, DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN

        return {
            "AIRFLOW_CONN_CRM_DEFAULT": connection_json(
                "postgres",
                host=self.postgres.host,
                port=self.postgres.port,
                login=self.postgres.username,
                password=self.postgres.password,
                schema=self.crm_db,
            ),
            "AIRFLOW_CONN_SENDGRID_DEFAULT": connection_json(
                "generic",
                password=DEFAULT_SENDGRID_KEY,
                host=sandbox_url,
                extra={
                    "from_email": "news@northwind.example",
                    "from_name": "Northwind Cloud",
                    "webhook_public_key": sendgrid_public_key,
                },
            ),
            "AIRFLOW_CONN_TWILIO_DEFAULT": connection_json(
                "generic",
                login=DEFAULT_TWILIO_SID,
                password=DEFAULT_TWILIO_TOKEN,
                host=sandbox_url,
                extra={"from_number": SENDER_NUMBER, "mps": SANDBOX_MPS},
            ),
            "AIRFLOW_CONN_LIFECYCLE_DEFAULT": connection_json(
                "generic", host=self.public_url, password=self.link_secret
            ),
            "AIRFLOW_CONN_LIFECYCLE_TRACK": connection_json("generic", password=self.write_key),
            "AIRFLOW_CONN_LIFECYCLE_EVENTS_QUEUE": self.broker_url,
        }

    def airflow_env(self, base: Mapping[str, str], connections: Mapping[str, str]) -> dict[str, str]:
        """The environment every Airflow process gets: the local setup's settings with the
        distributed pieces (PostgreSQL, CeleryExecutor on Redis, shared secrets) swapped in."""
        clean = {k: v for k, v in base.items() if not k.startswith(("AIRFLOW", "LIFECYCLE_"))}
        return (
            clean
            | airflow_env(self.work, self.work / "unused-crm.db")
            | {
                "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}",
                "PYTHONPATH": str(PROJECT_ROOT / "plugins"),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_url,
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.metadata_url}",
                "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_server_port),
                # An unpaused realtime program's watcher is registered at the DAG file's next parse.
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
                "LIFECYCLE_CONFIG_DIR": str(self.config_dir),
                "LIFECYCLE_TEMPLATES_DIR": str(self.templates_dir),
            }
            | dict(connections)
        )

    def write_files(self, programs: Mapping[str, Path], template_dirs: Sequence[Path]) -> None:
        """The Airflow home, the passwords file, and config/templates folders holding ``programs``
        (id -> program file, its cron replaced by :data:`NEVER_DURING_TESTS`) with the project's policy
        (plus the events queue), segments and the given template folders."""
        (self.config_dir / "programs").mkdir(parents=True)
        (self.config_dir / "segments.yml").symlink_to(PROJECT_ROOT / "config" / "segments.yml")
        policy = yaml.safe_load((PROJECT_ROOT / "config" / "policy.yml").read_text())
        policy["events_queue"] = {
            "conn_id": "lifecycle_events_queue",
            "channel_prefix": self.events_channel_prefix,
            "poll_seconds": self.events_poll_seconds,
        }
        (self.config_dir / "policy.yml").write_text(yaml.safe_dump(policy, allow_unicode=True, sort_keys=False))
        for program_id, path in programs.items():
            # The scheduler creates runs (asset-triggered ones need it), so no program's cron may come
            # due while the suite runs: the tests trigger the runs they check.
            text = SCHEDULE_LINE.sub(f'schedule: "{NEVER_DURING_TESTS}"', path.read_text())
            (self.config_dir / "programs" / f"{program_id}.yml").write_text(text)
        self.templates_dir.mkdir()
        for folder in template_dirs:
            for entry in sorted(folder.iterdir()):
                (self.templates_dir / entry.name).symlink_to(entry)
        self.passwords_file.parent.mkdir(parents=True)
        self.passwords_file.write_text(json.dumps({"admin": self.admin_password}) + "\n")


def airflow_argv(*args: str) -> list[str]:
    """The ``airflow`` command of this virtualenv with ``args``."""
    return [str(BIN / "airflow"), *args]


def start_sandbox(env: Mapping[str, str], logs: Path, public_url: str) -> Service:
    """Start ``python -m lifecycle.sandbox`` on a free port, posting webhooks to the web app."""
    from lifecycle.messages.links import SENDGRID_EVENTS_PATH, TWILIO_INBOUND_PATH

    argv = [
        sys.executable,
        "-m",
        "lifecycle.sandbox",
        "--port",
        "0",
        "--sendgrid-webhook-url",
        public_url + SENDGRID_EVENTS_PATH,
        "--twilio-inbound-url",
        public_url + TWILIO_INBOUND_PATH,
    ]
    return Service.start("provider-sandbox", argv, env, logs)


def sandbox_url(sandbox: Service) -> str | None:
    """The URL the sandbox printed once it listens, else None (for :func:`wait_for`)."""
    match = SANDBOX_URL_LINE.search(sandbox.text())
    return match.group(1) if match else None


class ApiClient:
    """The Airflow REST API v2 with a JWT from ``POST /auth/token``."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()

    def health(self) -> dict[str, Any] | None:
        """``/api/v2/monitor/health`` once metadata DB, scheduler, dag-processor and triggerer are healthy."""
        try:
            response = self.http.get("/api/v2/monitor/health")
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        body = response.json()
        parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
        healthy = all((body.get(part) or {}).get("status") == "healthy" for part in parts)
        return body if healthy else None

    def login(self, username: str, password: str) -> None:
        """Get a JWT and send it with every later request."""
        response = self.http.post("/auth/token", json={"username": username, "password": password})
        response.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call; raises on an error status, returns the JSON body."""
        response = self.http.request(method, f"/api/v2{path}", **kwargs)
        if response.is_error:
            raise ClusterError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    def dag_loaded(self, dag_id: str) -> bool | None:
        """True once the dag-processor has serialized ``dag_id``, else None (for :func:`wait_for`)."""
        response = self.http.get(f"/api/v2/dags/{dag_id}")
        return True if response.status_code == 200 else None
