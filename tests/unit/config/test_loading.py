"""Program and policy files: every mistake gives the file, the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lifecycle import config
from tests.conftest import FIXTURES

GOOD = yaml.safe_load((FIXTURES / "config" / "programs" / "alpha.yml").read_text())


@pytest.fixture(autouse=True)
def fixture_templates(monkeypatch):
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(FIXTURES / "config"))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(FIXTURES / "templates"))


def write(tmp_path: Path, data, name: str = "demo.yml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def load(path: Path):
    return config.load_program(path, config.load_segments())


def test_good_program_loads(tmp_path):
    program = load(write(tmp_path, GOOD))
    assert program.id == "demo" and program.steps[0].channel == "email"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"priority": "high"}, "priority: Input should be a valid integer"),
        ({"priority": 5000}, "priority: Input should be less than or equal to 1000"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted — fix: remove it or fix its spelling"),
        ({"steps": []}, "steps: List should have at least 1 item"),
        ({"steps": [{"id": "a", "channel": "fax", "template": "simple/hello"}]}, "steps[0].channel"),
        (
            {"steps": [{"id": "a", "channel": "email", "template": "simple/missing"}]},
            "steps[0].template: simple/missing.subject.txt not found",
        ),
        ({"steps": [{"id": "a", "channel": "email", "template": "simple/hello", "delay": "soon"}]}, "steps[0].delay"),
        ({"audience": {"segment": {"segment": "nobody"}}}, "audience.segment: unknown named segment 'nobody'"),
        ({"audience": {"segment": {"attribute": "shoe_size", "eq": 9}}}, "unknown column 'shoe_size'"),
        ({"id": "other"}, "id: 'other' differs from the file name"),
        ({"owner": None}, "owner: Input should be a valid string"),
    ],
)
def test_each_wrong_field_is_named(tmp_path, change, expected):
    with pytest.raises(config.ConfigError) as err:
        load(write(tmp_path, GOOD | change))
    assert str(err.value).startswith(str(tmp_path / "demo.yml")) and expected in str(err.value)


def test_missing_field_says_add_it(tmp_path):
    data = {k: v for k, v in GOOD.items() if k != "kpi"}
    with pytest.raises(config.ConfigError, match="kpi: Field required — fix: add this field"):
        load(write(tmp_path, data))


def test_broken_yaml_names_the_line(tmp_path):
    with pytest.raises(config.ConfigError, match=r"not valid YAML at line 3, column 1: expected ',' or ']'"):
        load(write(tmp_path, "name: a\nsteps: [oops\n"))


def test_policy_errors_name_the_field(tmp_path):
    policy = yaml.safe_load((FIXTURES / "config" / "policy.yml").read_text())
    policy["caps"]["email"]["max"] = -1
    path = write(tmp_path, policy, "policy.yml")
    with pytest.raises(config.ConfigError, match=r"caps.email.max: Input should be greater than or equal to 0"):
        config.load_policy(path)


def test_segment_cycles_are_reported(tmp_path):
    path = write(
        tmp_path,
        {
            "segments": {
                "a": {"axis": "stage", "description": "a", "definition": {"segment": "b"}},
                "b": {"axis": "stage", "description": "b", "definition": {"segment": "a"}},
            }
        },
        "segments.yml",
    )
    with pytest.raises(config.ConfigError, match="refers to itself"):
        config.load_segments(path)


def test_shipped_config_is_valid(monkeypatch):
    monkeypatch.delenv("LIFECYCLE_CONFIG_DIR")
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR")
    programs, errors = config.load_all_programs()
    assert errors == {} and "welcome" in programs
    config.load_policy()
