"""docker-compose.yml, Dockerfile and .env.example: the distributed topology, consistent with the local setup.

No container engine runs here, so the files are parsed and resolved the way Compose would (YAML
anchors and merge keys, ``${VAR:-default}`` / ``${VAR:?error}`` from .env.example) and checked
against what lifecycle reads: its connection ids, its local Airflow settings, the sandbox CLI.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from lifecycle.channels.sendgrid import SendGridHook
from lifecycle.channels.twilio import TwilioHook
from lifecycle.devtools import local
from lifecycle.messages.links import LIFECYCLE_CONN_ID, SENDGRID_EVENTS_PATH, TWILIO_INBOUND_PATH
from lifecycle.model.db import CRM_CONN_ID, url_from_connection
from lifecycle.paths import PROJECT_ROOT
from lifecycle.sandbox import DEFAULT_SENDGRID_KEY, DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN
from lifecycle.sandbox.cli import build_parser

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
COMMON = COMPOSE["x-airflow-common"]
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
    "flower",
)
AIRFLOW_HOME = "/opt/airflow"
MOUNTED = ("dags", "plugins", "include", "config", "logs")
VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _dotenv(path: Path) -> dict[str, str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


ENV_EXAMPLE = _dotenv(PROJECT_ROOT / ".env.example")


def resolve(value: str, env: Mapping[str, str] = ENV_EXAMPLE) -> str:
    """``value`` with Compose's variable substitution applied, variables taken from ``env``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        current = env.get(name)
        missing = not current if op and op.startswith(":") else current is None
        if op is None:
            return current or ""
        if op.endswith("-"):
            return arg if missing else current
        if missing:
            raise ValueError(f"{name} is required: {arg}")
        return current

    return VARIABLE.sub(substitute, value)


def _connection(name: str):
    from airflow.sdk import Connection

    conn_id = name.removeprefix("AIRFLOW_CONN_").lower()
    return Connection.from_json(resolve(COMMON["environment"][name]), conn_id=conn_id)


def test_every_service_of_the_topology_is_defined():
    assert {"postgres", "redis", "provider-sandbox", *AIRFLOW_SERVICES} <= set(SERVICES)
    assert SERVICES["postgres"]["image"] == "postgres:16"
    assert SERVICES["redis"]["image"].startswith("redis:7.2")
    assert SERVICES["flower"]["profiles"] == ["flower"]
    commands = {name: SERVICES[name].get("command") for name in AIRFLOW_SERVICES if name != "airflow-init"}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-worker": "celery worker",
        "airflow-triggerer": "triggerer",
        "flower": "celery flower",
    }


def test_airflow_services_share_one_image_environment_and_mounts():
    for name in AIRFLOW_SERVICES:
        service = SERVICES[name]
        assert (service["image"], service["build"]) == (COMMON["image"], COMMON["build"]), name
        assert service["volumes"] == COMMON["volumes"], name
        assert service["environment"].items() >= COMMON["environment"].items(), f"{name} overrides a common setting"
    assert SERVICES["provider-sandbox"]["image"] == COMMON["image"]
    assert COMMON["build"] == {"context": ".", "dockerfile": "Dockerfile"}


@pytest.mark.parametrize(
    "key",
    ["AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"],
)
def test_every_airflow_process_gets_the_same_shared_setting(key):
    values = {name: resolve(SERVICES[name]["environment"][key]) for name in AIRFLOW_SERVICES}
    assert len(set(values.values())) == 1, values


@pytest.mark.parametrize("key", ["AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY"])
def test_secrets_come_from_dot_env_and_are_required(key):
    variable = re.fullmatch(r"\$\{(\w+):\?[^}]+\}", COMMON["environment"][key])
    assert variable, f"{key} must be ${{VAR:?message}}, read from .env"
    assert ENV_EXAMPLE[variable.group(1)] == "change-me"
    with pytest.raises(ValueError, match=variable.group(1)):
        resolve(COMMON["environment"][key], {})


def test_dot_env_example_defines_every_variable_and_holds_no_secret():
    text = (PROJECT_ROOT / "docker-compose.yml").read_text()
    used = {m.group("name") for m in VARIABLE.finditer(text) if m.group("name")}
    assert used <= set(ENV_EXAMPLE) | {"LIFECYCLE_IMAGE"}, used - set(ENV_EXAMPLE)
    secrets = {k: v for k, v in ENV_EXAMPLE.items() if re.search("SECRET|PASSWORD|FERNET", k)}
    assert secrets and set(secrets.values()) == {"change-me"}


def test_celery_executor_on_redis_with_postgres_behind_it():
    env = {key: resolve(value) for key, value in COMMON["environment"].items()}
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
    for key, scheme in (
        ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2"),
        ("AIRFLOW__CELERY__RESULT_BACKEND", "db+postgresql"),
    ):
        url = urlsplit(env[key])
        assert (url.scheme, url.hostname, url.path) == (scheme, "postgres", "/airflow"), key
    assert SERVICES["postgres"]["environment"]["POSTGRES_DB"] == "airflow"


def test_execution_api_url_points_at_the_api_server():
    url = urlsplit(resolve(COMMON["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]))
    assert (url.hostname, url.path) == ("airflow-apiserver", "/execution/")
    assert f"{url.port}:{url.port}" in SERVICES["airflow-apiserver"]["ports"]


def test_project_folders_are_mounted_where_airflow_looks(tmp_path):
    assert [f"./{name}:{AIRFLOW_HOME}/{name}" for name in MOUNTED] == COMMON["volumes"]
    local_folders = {
        Path(value).relative_to(PROJECT_ROOT).as_posix()
        for value in local.airflow_env(tmp_path, tmp_path / "crm.db").values()
        if value.startswith(str(PROJECT_ROOT))
    }
    assert local_folders == {"dags", "plugins"} and local_folders <= set(MOUNTED)
    assert "lifecycle/" in (PROJECT_ROOT / "plugins" / ".airflowignore").read_text().splitlines()


ENGINE_ARGS = "AIRFLOW__DATABASE__SQL_ALCHEMY_ENGINE_ARGS"


def test_every_local_airflow_setting_has_a_compose_counterpart(tmp_path):
    local_env = local.airflow_env(tmp_path, tmp_path / "crm.db")
    compose_env = {key: resolve(value) for key, value in COMMON["environment"].items()}
    settings = {
        key: value
        for key, value in local_env.items()
        if not value.startswith((str(tmp_path), str(PROJECT_ROOT), "sqlite:"))
    }
    assert {"AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__LOAD_EXAMPLES", "AIRFLOW_CONN_CRM_DEFAULT"} <= set(settings)
    missing = set(settings) - set(compose_env)
    assert not missing, f"set by lifecycle.devtools.local.airflow_env but not in docker-compose.yml: {missing}"
    differs_by_design = {
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW_CONN_CRM_DEFAULT",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_ENGINE_ARGS",
    }
    for key in settings.keys() - differs_by_design:
        assert compose_env[key].lower() == settings[key].lower(), key


def test_airflows_own_engine_hides_bound_values_locally_and_in_compose(tmp_path):
    local_args = json.loads(
        local.airflow_env(tmp_path, tmp_path / "crm.db")["AIRFLOW__DATABASE__SQL_ALCHEMY_ENGINE_ARGS"]
    )
    compose_args = json.loads(resolve(COMMON["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_ENGINE_ARGS"]))
    assert local_args["hide_parameters"] is True and compose_args["hide_parameters"] is True


def test_connections_are_the_ones_lifecycle_reads():
    conn_ids = {
        key.removeprefix("AIRFLOW_CONN_").lower() for key in COMMON["environment"] if key.startswith("AIRFLOW_CONN_")
    }
    expected = {CRM_CONN_ID, SendGridHook.default_conn_name, TwilioHook.default_conn_name, LIFECYCLE_CONN_ID}
    assert conn_ids == expected == {"crm_default", "sendgrid_default", "twilio_default", "lifecycle_default"}


def test_crm_connection_is_the_database_init_creates_and_migrates():
    crm = _connection("AIRFLOW_CONN_CRM_DEFAULT")
    init_env = SERVICES["airflow-init"]["environment"]
    assert url_from_connection(crm) == resolve(init_env["LIFECYCLE_CRM_URL"])
    sql = (PROJECT_ROOT / "config" / "compose" / "create-crm-database.sql").read_text()
    assert re.findall(r"CREATE DATABASE (\w+);", sql) == [crm.schema]
    assert (
        "./config/compose/create-crm-database.sql:/docker-entrypoint-initdb.d/10-create-crm-database.sql:ro"
        in (SERVICES["postgres"]["volumes"])
    )


def test_provider_connections_point_at_the_sandbox_with_its_public_credentials():
    args = build_parser().parse_args(SERVICES["provider-sandbox"]["command"])
    sandbox_url = f"http://provider-sandbox:{args.port}"
    assert args.host == "0.0.0.0" and f"{args.port}:{args.port}" in SERVICES["provider-sandbox"]["ports"]
    sendgrid, twilio = (
        _connection("AIRFLOW_CONN_SENDGRID_DEFAULT"),
        _connection("AIRFLOW_CONN_TWILIO_DEFAULT"),
    )
    assert (sendgrid.host, sendgrid.password) == (sandbox_url, DEFAULT_SENDGRID_KEY)
    assert (twilio.host, twilio.login, twilio.password) == (
        sandbox_url,
        DEFAULT_TWILIO_SID,
        DEFAULT_TWILIO_TOKEN,
    )
    assert args.twilio_account_sid == twilio.login
    assert sendgrid.extra_dejson["from_email"] and re.fullmatch(r"\+[1-9]\d{6,14}", twilio.extra_dejson["from_number"])
    assert "webhook_public_key" in sendgrid.extra_dejson


@pytest.mark.slow
def test_sandbox_posts_webhooks_to_the_lifecycle_web_app():
    from lifecycle_plugin import URL_PREFIX  # builds the web app and Airflow's plugin manager: seconds

    args = build_parser().parse_args([resolve(arg) for arg in SERVICES["provider-sandbox"]["command"]])
    app = _connection("AIRFLOW_CONN_LIFECYCLE_DEFAULT")
    assert app.password and urlsplit(app.host).hostname == "airflow-apiserver"
    assert urlsplit(app.host).path == URL_PREFIX
    assert args.sendgrid_webhook_url == app.host + SENDGRID_EVENTS_PATH
    assert args.twilio_inbound_url == app.host + TWILIO_INBOUND_PATH


def test_init_migrates_both_databases_in_a_valid_script():
    init = SERVICES["airflow-init"]
    script = resolve(init["command"][1])
    assert init["entrypoint"] == "/bin/bash" and init["command"][0] == "-c"
    assert "airflow db migrate" in script and 'lifecycle migrate --url "${LIFECYCLE_CRM_URL}"' in script
    subprocess.run(["bash", "-n", "-c", script], check=True)


def test_long_running_services_have_healthchecks():
    for name, service in SERVICES.items():
        if name != "airflow-init":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert "http://localhost:8080/api/v2/monitor/health" in SERVICES["airflow-apiserver"]["healthcheck"]["test"]


def test_depends_on_names_defined_services_in_states_they_can_reach():
    for name, service in SERVICES.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} depends on undefined {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{name} waits for {dependency} to be healthy"
            else:
                assert (rule["condition"], dependency) == ("service_completed_successfully", "airflow-init")


def test_dockerfile_builds_the_pinned_airflow_with_the_project():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM apache/airflow:(?P<airflow>[\d.]+)-python(?P<python>[\d.]+)$", dockerfile, re.M)
    pins = dict(
        line.split("==", 1) for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines() if "==" in line
    )
    assert base and base["airflow"] == pins["apache-airflow"] == pins["apache-airflow-core"]
    requires_python = re.search(r'requires-python = "([^"]+)"', (PROJECT_ROOT / "pyproject.toml").read_text())[1]
    assert SpecifierSet(requires_python).contains(base["python"])
    assert "pip install --no-cache-dir -r /opt/airflow/requirements.txt" in dockerfile
    assert f"pip install --no-cache-dir --no-deps -e {AIRFLOW_HOME}" in dockerfile
    copied = re.findall(r"^COPY --chown=airflow:0 (\S+) ", dockerfile, re.M)
    assert {"requirements.txt", "pyproject.toml", "plugins", "dags", "include", "config"} == set(copied)
    assert all((PROJECT_ROOT / path).exists() for path in copied)
