"""The embedded local setup: Airflow settings for SQLite + LocalExecutor in a work folder.

Used by the demo and the tests. It must run before Airflow is imported, since Airflow reads
its configuration once at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle.paths import PROJECT_ROOT

if TYPE_CHECKING:
    import threading

    import uvicorn


def connection_json(conn_type: str, **fields) -> str:
    """An Airflow connection in the JSON form accepted by ``AIRFLOW_CONN_<ID>``."""
    return json.dumps({"conn_type": conn_type, **{k: v for k, v in fields.items() if v is not None}})


AIRFLOW_ENGINE_ARGS = {"hide_parameters": True}
"""Arguments for Airflow's own database engine: its errors never print bound values."""


def airflow_env(work: Path, crm_db: Path) -> dict[str, str]:
    """Environment for an Airflow home under ``work`` with the CRM in SQLite at ``crm_db``."""
    home = work / "airflow"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        # A failed statement prints no bound values (a test send's recipients are in its run's conf).
        "AIRFLOW__DATABASE__SQL_ALCHEMY_ENGINE_ARGS": json.dumps(AIRFLOW_ENGINE_ARGS),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW_CONN_CRM_DEFAULT": connection_json("sqlite", host=str(crm_db)),
    }


def apply(env: dict[str, str]) -> None:
    """Export ``env`` into this process (before Airflow is imported) and create the folders."""
    os.environ.update(env)
    if "AIRFLOW_HOME" in env:
        Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)


SANDBOX_MPS = 50
"""Messages a second the sandbox's Twilio sender is given (``mps`` in ``twilio_default``'s extra)."""


def provider_connections(sandbox, public_base_url: str, link_secret: str) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` values pointing SendGrid, Twilio, the webhook channel's endpoint and the
    CRM's task and activity APIs at a provider sandbox, and the public links (unsubscribe, status
    callbacks) at ``public_base_url``."""
    from lifecycle.sandbox import DEFAULT_SENDGRID_KEY, DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN

    return {
        "AIRFLOW_CONN_SENDGRID_DEFAULT": connection_json(
            "generic",
            password=DEFAULT_SENDGRID_KEY,
            host=sandbox.url,
            extra={
                "from_email": "hello@northwind.example",
                "from_name": "Northwind Cloud",
                "reply_to": "support@northwind.example",
                "webhook_public_key": sandbox.public_key,
            },
        ),
        "AIRFLOW_CONN_TWILIO_DEFAULT": connection_json(
            "generic",
            login=DEFAULT_TWILIO_SID,
            password=DEFAULT_TWILIO_TOKEN,
            host=sandbox.url,
            # The sandbox's test number has no carrier limit; a real long code sends 1 a second.
            extra={"from_number": "+15005550006", "whatsapp_from": "+14155238886", "mps": SANDBOX_MPS},
        ),
        "AIRFLOW_CONN_LIFECYCLE_DEFAULT": connection_json("generic", host=public_base_url, password=link_secret),
        "AIRFLOW_CONN_WEBHOOK_DEFAULT": connection_json(
            "http", host=sandbox.webhook_url(), password=sandbox.webhook_secret
        ),
        # The sandbox CRM's task and activity APIs (sales_task channel, policy write_back).
        "AIRFLOW_CONN_SALES_TASKS_DEFAULT": connection_json(
            "http", host=f"{sandbox.url}/sales/tasks", password=sandbox.webhook_secret
        ),
        "AIRFLOW_CONN_CRM_ACTIVITIES_DEFAULT": connection_json(
            "http", host=f"{sandbox.url}/sales/activities", password=sandbox.webhook_secret
        ),
        # The sandbox's ad platform (audience_sync): Meta's Graph API base URL and access token.
        "AIRFLOW_CONN_ADS_DEFAULT": connection_json("http", host=sandbox.ads_url(), password=sandbox.ads_token),
    }


def mounted_app() -> Any:
    """The plugin's FastAPI app mounted at ``/lifecycle``, as Airflow's api-server serves it."""
    from fastapi import FastAPI

    from lifecycle.web import create_app

    outer = FastAPI()
    outer.mount("/lifecycle", create_app())
    return outer


class WebApp:
    """The plugin's FastAPI app (webhooks, unsubscribe) served on loopback, mounted at
    ``/lifecycle`` as in Airflow's api-server, for the demo and tests that run no api-server.

    It runs in a thread of this process, or with ``process=True`` in a process of its own (reading
    the connections in the environment when it starts): the demo runs DAG tasks in this process
    (``dag.test``), and a request thread reading a connection there would share the running task's
    channel to Airflow, which one thread at a time may use.
    """

    def __init__(self, port: int = 0, *, process: bool = False) -> None:
        import socket

        if port == 0:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
        self.port = port
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}/lifecycle"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> WebApp:
        import threading
        import time

        import uvicorn

        deadline = time.monotonic() + 30
        if self.process:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "lifecycle.devtools.local:mounted_app", "--factory"]
                + ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
                env=os.environ.copy(),
            )
            while not self._listening():
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the web app did not start on port {self.port}")
                time.sleep(0.1)
            return self
        self._server = uvicorn.Server(
            uvicorn.Config(mounted_app(), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the web app did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        import socket

        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
