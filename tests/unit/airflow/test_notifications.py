"""OwnerAlert: a failure is logged as an error and emailed to the owner's address from the policy,
through the real SendGrid hook to the provider sandbox; the alert itself never raises."""

from __future__ import annotations

import logging
import shutil
from types import SimpleNamespace

import pytest

from lifecycle.airflow.notifications import Failure, OwnerAlert
from lifecycle.devtools.local import connection_json
from lifecycle.paths import PROJECT_ROOT
from lifecycle.sandbox import DEFAULT_SENDGRID_KEY, SandboxServer

ONCALL = "growth-oncall@example.com"


@pytest.fixture
def policy_with_owners(tmp_path, monkeypatch):
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    with (config / "policy.yml").open("a") as policy:
        policy.write(f"\nowners:\n  growth: {ONCALL}\n")
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(config))


@pytest.fixture
def sandbox(monkeypatch):
    with SandboxServer() as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_SENDGRID_DEFAULT",
            connection_json(
                "generic",
                password=DEFAULT_SENDGRID_KEY,
                host=server.url,
                extra={"from_email": "alerts@example.com"},
            ),
        )
        yield server


def _task_context(owner: str, error: Exception) -> dict:
    """A failure callback's context with a real DAG and task; the task instance carries its ids."""
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    with DAG("welcome", schedule=None) as dag:
        send = EmptyOperator(task_id="send", owner=owner)
    ti = SimpleNamespace(
        task=send,
        task_id="send",
        dag_id="welcome",
        run_id="scheduled__2026-11-16T15:00:00+00:00",
        try_number=3,
        log_url="http://airflow.local/dags/welcome/runs/x/tasks/send",
    )
    return {"ti": ti, "dag": dag, "exception": error}


@pytest.mark.usefixtures("policy_with_owners")
def test_failure_is_logged_and_emailed_to_the_mapped_owner(sandbox, caplog):
    error = RuntimeError("sendgrid 400 for contact c42 at jane@example.org")
    with caplog.at_level(logging.INFO, logger="lifecycle.airflow.notifications"):
        OwnerAlert()(_task_context("growth", error))
    [email] = sandbox.sendgrid_messages()
    assert email["to"] == ONCALL and email["subject"] == "[Lifecycle] welcome.send failed"
    assert "Run: scheduled__2026-11-16T15:00:00+00:00" in email["text"] and "Try: 3" in email["text"]
    assert "RuntimeError: sendgrid 400 for contact c42 at <email>" in email["text"]
    assert "Log: http://airflow.local/dags/welcome/runs/x/tasks/send" in email["text"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "welcome.send" in errors[0].getMessage() and "c42" in errors[0].getMessage()
    assert "@" not in caplog.text.replace("<email>", "")


@pytest.mark.usefixtures("policy_with_owners")
def test_owner_without_an_address_is_only_logged(sandbox, caplog):
    with caplog.at_level(logging.INFO, logger="lifecycle.airflow.notifications"):
        OwnerAlert()(_task_context("retention", ValueError("boom")))
    assert sandbox.sendgrid_messages() == []
    assert any(r.levelno == logging.ERROR and "welcome.send" in r.getMessage() for r in caplog.records)
    assert "No address for owner retention" in caplog.text


@pytest.mark.slow
@pytest.mark.usefixtures("policy_with_owners")
def test_a_failing_alert_never_raises(sandbox, caplog, monkeypatch):
    sandbox.add_fault("sendgrid", "500", count=3)
    with caplog.at_level(logging.ERROR, logger="lifecycle.airflow.notifications"):
        OwnerAlert().notify(_task_context("growth", RuntimeError("boom")))
    assert sandbox.sendgrid_messages() == []
    assert "could not be completed: Retryable" in caplog.text
    monkeypatch.delenv("AIRFLOW_CONN_SENDGRID_DEFAULT")
    caplog.clear()
    OwnerAlert().notify(_task_context("growth", RuntimeError("boom")))
    assert "could not be completed" in caplog.text and ONCALL not in caplog.text


def test_dag_level_failure_reads_the_dag_and_reason():
    failure = Failure.from_context(
        {
            "dag": SimpleNamespace(dag_id="kpi_digest", owner="lifecycle-ops, growth"),
            "dag_run": SimpleNamespace(run_id="manual__1"),
            "reason": "task_failure",
        }
    )
    assert failure.where == "kpi_digest" and failure.run_id == "manual__1"
    assert failure.owners == ("lifecycle-ops", "growth") and failure.error == "task_failure"
    assert "Task: (whole run)" in failure.text()
