"""DAG-folder policy: every DAG loads, is documented and owned, and a broken program file breaks
only its own DAG, with an error that names the file, the field and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lifecycle.airflow.pools import DEFAULT_SEND_SLOTS, SEND_POOL, SLOTS_VARIABLE, pool_set_args, send_pool_slots
from tests.conftest import FIXTURES
from tests.support.dagrun import load_dags

ALLOWED_TAGS = {
    "lifecycle",
    "program",
    "invalid",
    "onboarding",
    "nurture",
    "ecommerce",
    "retention",
    "renewal",
    "expansion",
    "education",
    "winback",
    "reporting",
    "data-quality",
    "tools",
    "sms",
    "email",
    "due-steps",
    "scoring",
}

REALTIME = {"welcome"}


@pytest.fixture
def shipped_config(monkeypatch):
    monkeypatch.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)


def test_shipped_dags_load_documented_and_owned(shipped_config):
    bag = load_dags()
    assert bag.import_errors == {}
    assert "welcome" in bag.dags
    for dag_id, dag in bag.dags.items():
        assert "invalid" not in dag.tags, f"{dag_id} comes from an invalid program file"
        assert set(dag.tags) <= ALLOWED_TAGS, f"{dag_id} has tags outside the allowlist: {set(dag.tags) - ALLOWED_TAGS}"
        assert dag.doc_md and dag.max_active_runs == 1
        assert all(task.owner and task.owner != "airflow" for task in dag.tasks), dag_id
        # check_run fails a run whose task failed, and that task has alerted: one alert per failure.
        alerting = [task for task in dag.tasks if task.task_id != "check_run"]
        assert all(task.on_failure_callback for task in alerting), f"{dag_id} has a task without an owner alert"
        assert all(not task.on_failure_callback for task in dag.tasks if task.task_id == "check_run"), dag_id
        if "program" in dag.tags:
            # A realtime program runs on its cron or its trigger events; every other program on its cron.
            kind = type(dag.timetable).__name__
            assert kind == ("AssetOrTimeSchedule" if dag_id in REALTIME else "CronTriggerTimetable"), (dag_id, kind)
    assert {"lifecycle_test_send", "lifecycle_dry_run", "lifecycle_due_steps"} <= set(bag.dags)


def test_every_send_task_runs_in_the_send_pool(shipped_config):
    """One Airflow pool bounds the batches sending at once across every program, the due-steps
    sweep and every worker; each DAG still sends at most 4 of its batches at once."""
    bag = load_dags()
    sends = [
        (dag_id, task)
        for dag_id, dag in bag.dags.items()
        for task in dag.tasks
        if task.task_id == "send" or task.task_id.endswith(".send")
    ]
    programs = {dag_id for dag_id, dag in bag.dags.items() if "program" in dag.tags}
    assert programs and programs <= {dag_id for dag_id, _task in sends}
    swept = {task.task_id for dag_id, task in sends if dag_id == "lifecycle_due_steps"}
    assert swept >= {f"{program}.send" for program in programs}
    for dag_id, task in sends:
        assert task.pool == SEND_POOL, (dag_id, task.task_id, task.pool)
        assert task.max_active_tis_per_dag == 4, (dag_id, task.task_id)
    others = [t for dag in bag.dags.values() for t in dag.tasks if t.task_id.split(".")[-1] != "send"]
    assert others and all(t.pool != SEND_POOL for t in others), "only send tasks take the pool's slots"


def test_the_send_pool_exists_in_the_tests_airflow_database_with_its_slots(airflow_db):
    from airflow.models.pool import Pool

    pool = Pool.get_pool(SEND_POOL)
    assert pool is not None and pool.slots == send_pool_slots() == DEFAULT_SEND_SLOTS


@pytest.mark.parametrize(("value", "slots"), [("", DEFAULT_SEND_SLOTS), ("16", 16), (" 3 ", 3)])
def test_the_send_pool_slots_come_from_the_environment(value, slots):
    assert send_pool_slots({SLOTS_VARIABLE: value}) == slots
    assert pool_set_args(slots)[:4] == ["pools", "set", SEND_POOL, str(slots)]


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_a_send_pool_of_no_slots_is_refused_naming_the_variable(value):
    with pytest.raises(ValueError, match=SLOTS_VARIABLE):
        send_pool_slots({SLOTS_VARIABLE: value})


def test_broken_program_file_breaks_only_its_own_dag(tmp_path: Path, monkeypatch):
    config = tmp_path / "config"
    shutil.copytree(FIXTURES / "config", config)
    (config / "programs" / "broken.yml").write_text(
        (config / "programs" / "alpha.yml").read_text().replace("priority: 10", "priority: high")
    )
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(config))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(FIXTURES / "templates"))
    bag = load_dags()
    assert bag.import_errors == {}
    assert {"alpha", "beta", "texts"} <= set(bag.dags)
    assert "invalid" not in bag.dags["alpha"].tags
    broken = bag.dags["broken"]
    assert "invalid" in broken.tags and [t.task_id for t in broken.tasks] == ["invalid_program_file"]
    error = broken.tasks[0].error
    assert "broken.yml" in error and "priority" in error and "fix: write a whole number" in error
    # The due-steps sweep skips it with the same error and sweeps the others.
    sweep = {t.task_id: t for t in bag.dags["lifecycle_due_steps"].tasks}
    assert sweep["broken.invalid_program_file"].error == error
    assert {"alpha.sweep", "alpha.send", "beta.sweep"} <= set(sweep)


def test_unparseable_yaml_names_the_line(tmp_path: Path, monkeypatch):
    config = tmp_path / "config"
    shutil.copytree(FIXTURES / "config", config)
    (config / "programs" / "garbled.yml").write_text("name: x\nsteps: [unclosed\n")
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(config))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(FIXTURES / "templates"))
    bag = load_dags()
    error = bag.dags["garbled"].tasks[0].error
    assert "garbled.yml" in error and "not valid YAML at line" in error
    assert "invalid" not in bag.dags["beta"].tags
