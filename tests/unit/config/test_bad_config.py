"""Every field of a program and a policy file set wrong in turn, generated from the pydantic models.

For each field of :class:`config.Program` and :class:`config.Policy` (nested models, list items and
mapping entries included) the file gets, in turn, a value of the wrong type, the field left out,
and an unknown key beside it. Every mistake must be a :class:`config.ConfigError` that starts with
the file and names the field's path (``steps[0].channel``); leaving out an optional field must
load. A model field that the complete examples below do not set fails the test, so a new field
is covered the day it is added. Mistakes the models cannot see by type (durations too large,
files that are not UTF-8, unknown columns and property names) follow.
"""

from __future__ import annotations

import copy
import shutil
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from lifecycle import config
from tests.conftest import FIXTURES

pytestmark = pytest.mark.usefixtures("test_config")

Path_ = tuple[str | int, ...]
UNKNOWN_KEY = "colour"

FULL_PROGRAM: dict[str, Any] = {
    "id": "demo",
    "name": "Every field set",
    "description": "A program that sets every field of the schema.",
    "owner": "tests",
    "priority": 50,
    "schedule": "@daily",
    "tags": ["onboarding"],
    "classes": ["promotional"],
    "consent_purpose": "marketing",
    "audience": {
        "segment": {"segment": "leads"},
        "trigger_event": ["signed_up"],
        "timed_from": "trigger_event",
        "realtime": True,
        "anchor": {"table": "subscriptions", "column": "renews_at", "pick": "next"},
    },
    "re_entry": {"allowed": True, "cooldown": "30d"},
    "exit": {
        "goal": {"event": "purchase", "since": "enrollment"},
        "rules": [{"reason": "churned", "segment": {"attribute": "lifecycle_stage", "eq": "churned"}}],
        "on_segment_leave": True,
    },
    "steps": [
        {
            "id": "hello",
            "channel": "email",
            "fallback": "sales_task",
            "delay": "1d",
            "relative_to": "enrollment",
            "template": "simple/hello",
            "when": {"not": {"event": "purchase", "since": "enrollment"}},
            "late_after": "12h",
            "holdout": False,
            "due_within": "24h",
        },
        {
            "id": "nudge",
            "channel": "sms",
            "channels": ["sms", "email", "sales_task"],
            "choose_by": "preferred_channel",
            "delay": "2d",
            "relative_to": "previous",
            "template": "simple/hello",
            "when": {"not": {"event": "purchase", "since": "enrollment"}},
            "late_after": "12h",
            "holdout": True,
            "due_within": "48h",
        },
    ],
    "late_after": "24h",
    "holdout_percent": 10,
    "holdout_salt": "demo-2026",
    "ab_test": {
        "name": "subject_line",
        "variable": "subject",
        "variants": [{"name": "A", "weight": 1}, {"name": "B", "weight": 1}],
        "salt": "demo-ab",
    },
    "kpi": {
        "primary": "conversion",
        "label": "Conversion",
        "conversion": {"event": "purchase", "since": "enrollment"},
        "attribution_window": "14d",
        "value_property": "amount",
    },
    "topic": "offers",
    "audience_sync": {
        "platform": "meta",
        "audience": "23851234567890",
        "conn_id": "ads_default",
        "members": "enrolled",
        "identifiers": ["email", "phone"],
        "batch_size": 5000,
    },
}

FULL_POLICY: dict[str, Any] = yaml.safe_load((FIXTURES / "config" / "policy.yml").read_text()) | {
    "quiet_hours": {
        "sms": {"start": "21:00", "end": "08:00", "default_timezone": "UTC"},
        "email": {"start": "23:00", "end": "06:00", "default_timezone": "Europe/London"},
    },
    "suppressions": {
        "open_support_ticket": {"applies_to": ["promotional"], "within": "30d"},
        "in_sales_negotiation": {"applies_to": ["generic_promo"], "within": "90d"},
        "recent_purchase": {"applies_to": ["promotional"], "within": "3d"},
    },
    "service_caps": {"email": {"max": 4, "per": "7d"}, "all": {"max": 6, "per": "7d"}},
    "legal_basis": {"marketing": "explicit", "transactional": "implied"},
    "stakeholders": [{"name": "Growth", "email": "growth@example.com"}],
    "owners": {"tests": "owners@example.com"},
    "sms_max_segments": 6,
    "brand": {
        "name": "Northwind",
        "app_url": "https://app.example.com",
        "support_url": "https://app.example.com/help",
        "postal_address": "1 Harbour Street",
    },
    "topics": {
        "offers": {
            "label": "Offers",
            "description": "Discounts and deals",
            "sendgrid_group": 101,
            "optional": True,
            "translations": {"de": {"label": "Angebote", "description": "Rabatte und Aktionen"}},
        }
    },
    "regions": {"eu": {"countries": ["DE", "FR"], "legal_basis": {"email": {"marketing": "explicit"}}}},
    "unknown_country": "default",
    "currency": "EUR",
    "decision": {
        "mode": "next_best_action",
        "score": "churn_risk",
        "bands": 4,
        "min_evidence": 100,
        "value": {"winback": 40.0},
    },
    "capture": {
        "forms": {"newsletter": {"version": "3", "consent_text": "Yes, send me news", "label": "Sign up"}},
        "confirm_within": "2d",
        "record_ip": False,
        "per_ip": {"max": 10, "per": "1h"},
        "per_address": {"max": 3, "per": "1h"},
    },
    "events_queue": {
        "scheme": "redis+pubsub",
        "conn_id": "lifecycle_events_queue",
        "channel_prefix": "lifecycle.events.",
        "poll_seconds": 30,
    },
    "write_back": {"connection": "crm_activities_default", "channels": ["email", "sms"], "within": "3d"},
}


@dataclass(frozen=True)
class Spot:
    """A place in a file where a value goes: a model field, or an item of a list or mapping of models."""

    path: Path_
    annotation: Any
    required: bool
    is_field: bool


def display(path: Path_) -> str:
    """A path as ConfigError writes it: ``steps[0].channel``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _members(annotation: Any) -> list[Any]:
    """The non-None members of an optional or union annotation, else the annotation itself."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation is not config.SegmentExpr


def spots(model: type[BaseModel], data: Mapping[str, Any], path: Path_ = ()) -> Iterator[Spot]:
    """Every field of ``model`` and, recursively, of the models inside the example ``data``."""
    for name, info in model.model_fields.items():
        here = (*path, name)
        yield Spot(here, info.annotation, info.is_required(), True)
        value = data.get(name)
        for member in _members(info.annotation):
            origin, args = get_origin(member), get_args(member)
            if _is_model(member) and isinstance(value, Mapping):
                yield from spots(member, value, here)
            elif origin is list and args and _is_model(args[0]) and isinstance(value, list):
                for index, item in enumerate(value):
                    yield Spot((*here, index), args[0], False, False)
                    yield from spots(args[0], item, (*here, index))
            elif origin is dict and _is_model(args[1]) and isinstance(value, Mapping):
                for key, item in value.items():
                    yield Spot((*here, key), args[1], False, False)
                    yield from spots(args[1], item, (*here, key))


def wrong_value(annotation: Any) -> Any:
    """A value of the wrong type for a field: text where a number belongs, a list where text does..."""
    member = _members(annotation)[0]
    origin = get_origin(member)
    if member is bool:
        return "perhaps"
    if member in (int, float):
        return "lots"
    if member is time:
        return "teatime"
    if member is str or origin is Literal or member in (config.Duration, config.SegmentExpr):
        return ["not", "this"]
    if origin in (list, dict) or _is_model(member):
        return 12345 if origin is list else "text instead of a mapping"
    raise AssertionError(f"no wrong value known for {annotation!r}: teach wrong_value() this type")


def _get(data: Any, path: Path_) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: dict, path: Path_, value: Any) -> dict:
    changed = copy.deepcopy(data)
    _get(changed, path[:-1])[path[-1]] = value
    return changed


def _remove(data: dict, path: Path_) -> dict:
    changed = copy.deepcopy(data)
    del _get(changed, path[:-1])[path[-1]]
    return changed


def _add_unknown(data: dict, path: Path_) -> dict:
    changed = copy.deepcopy(data)
    _get(changed, path)[UNKNOWN_KEY] = "blue"
    return changed


@dataclass(frozen=True)
class Case:
    """One broken file: its content and the field path its error must name (None: it must load)."""

    id: str
    data: dict
    names: str | None


def cases(
    model: type[BaseModel],
    full: dict,
    loader_fills: frozenset[Path_] = frozenset(),
    needed_by: Mapping[Path_, str] | None = None,
) -> list[Case]:
    """Wrong type, left out and unknown key beside it, for every spot of ``model`` in ``full``.
    ``needed_by``: optional fields another field set in ``full`` needs (left out, the error names that one)."""
    found = [Case("unknown-key:(top level)", _add_unknown(full, ()), UNKNOWN_KEY)]
    for spot in spots(model, full):
        where = display(spot.path)
        found.append(Case(f"wrong-type:{where}", _set(full, spot.path, wrong_value(spot.annotation)), where))
        if spot.is_field and spot.path[-1] in _get(full, spot.path[:-1]):
            must_fail = spot.required and spot.path not in loader_fills
            names = (needed_by or {}).get(spot.path, where if must_fail else None)
            found.append(Case(f"left-out:{where}", _remove(full, spot.path), names))
        if _is_model(_members(spot.annotation)[0]) and isinstance(_get(full, spot.path), Mapping):
            unknown = f"{where}.{UNKNOWN_KEY}"
            found.append(Case(f"unknown-key:{where}", _add_unknown(full, spot.path), unknown))
        args = get_args(spot.annotation)
        if get_origin(spot.annotation) is dict and args and get_origin(args[0]) is Literal:
            found.append(Case(f"unknown-entry:{where}", _set(full, (*spot.path, "weekly"), {}), f"{where}.weekly"))
    return found


# realtime: true needs the trigger events: without them the error names the audience (and the fix).
# due_within needs a channel that creates tasks: the step's fallback is its sales_task, or one of its channels.
# A step that lists channels has them instead of a fallback; its channel, when left out, is the first of them.
PROGRAM_CASES = cases(
    config.Program,
    FULL_PROGRAM,
    loader_fills=frozenset({("id",), ("steps", 1, "channel")}),
    needed_by={
        ("audience", "trigger_event"): "audience",
        ("steps", 0, "fallback"): "steps[0]",
        ("steps", 1, "channels"): "steps[1]",
    },
)
POLICY_CASES = cases(config.Policy, FULL_POLICY)


def write(tmp_path: Path, data: Any, name: str = "demo.yml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True))
    return path


def load_program(path: Path) -> config.Program:
    return config.load_program(path, config.load_segments())


def assert_names(error: config.ConfigError, path: Path, field: str) -> None:
    """The error starts with the file and one of its problems starts with the field path."""
    assert str(error).startswith(f"{path}: "), str(error)
    assert error.file == str(path)
    assert any(problem.startswith(field) for problem in error.problems), (field, error.problems)


def _every_field_is_set(model: type[BaseModel], full: dict) -> list[str]:
    """The fields no item sets: a field of a list's items counts as set when one item sets it (a step
    has either a fallback or channels to choose from, so no one step sets both)."""

    def shape(path: Path_) -> Path_:
        return tuple("*" if isinstance(part, int) else part for part in path)

    spotted = [s for s in spots(model, full) if s.is_field]
    given = {shape(s.path) for s in spotted if s.path[-1] in _get(full, s.path[:-1])}
    return [display(s.path) for s in spotted if shape(s.path) not in given]


def test_the_complete_examples_load_and_set_every_field(tmp_path):
    assert load_program(write(tmp_path, FULL_PROGRAM)).ab_test is not None
    assert config.load_policy(write(tmp_path, FULL_POLICY, "policy.yml")).brand.name == "Northwind"
    assert _every_field_is_set(config.Program, FULL_PROGRAM) == []
    assert _every_field_is_set(config.Policy, FULL_POLICY) == []


def test_the_generated_corpus_covers_every_kind_of_mistake():
    kinds = {"wrong-type", "left-out", "unknown-key"}
    assert {case.id.split(":")[0] for case in PROGRAM_CASES} == kinds
    assert {case.id.split(":")[0] for case in POLICY_CASES} == kinds | {"unknown-entry"}


@pytest.mark.parametrize("case", PROGRAM_CASES, ids=lambda c: c.id)
def test_each_program_mistake_names_the_file_and_field(tmp_path, case):
    path = write(tmp_path, case.data)
    if case.names is None:
        load_program(path)
        return
    with pytest.raises(config.ConfigError) as err:
        load_program(path)
    assert_names(err.value, path, case.names)


@pytest.mark.parametrize("case", POLICY_CASES, ids=lambda c: c.id)
def test_each_policy_mistake_names_the_file_and_field(tmp_path, case):
    path = write(tmp_path, case.data, "policy.yml")
    if case.names is None:
        config.load_policy(path)
        return
    with pytest.raises(config.ConfigError) as err:
        config.load_policy(path)
    assert_names(err.value, path, case.names)


def _step(**fields: Any) -> dict:
    return {"steps": [{"id": "hello", "channel": "email", "template": "simple/hello"} | fields]}


def _segment(expr: dict) -> dict:
    return {"audience": {"segment": expr}}


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        (_step(delay="99999999999d"), "steps[0].delay", "is not a duration"),
        (_step(delay={"days": 10**12}), "steps[0].delay", "is not a duration"),
        ({"re_entry": {"allowed": True, "cooldown": "-99999999999999m"}}, "re_entry.cooldown", "is not a duration"),
        (_segment({"event": "signed_up", "within_last": "99999999999d"}), "audience.segment", "within_last"),
        (_segment({"event": "purchase", "where": {"product": {"in": "Pro"}}}), "audience.segment", "non-empty list"),
        (_segment({"event": "purchase", "where": {"product": {"not_in": []}}}), "audience.segment", "non-empty list"),
        (_segment({"event": "purchase", "where": {"gift": {"is_null": "yes"}}}), "audience.segment", "true or false"),
        (
            _segment({"event": "purchase", "where": {'a"); DROP TABLE contacts;--': 1}}),
            "audience.segment",
            "property name",
        ),
        (_segment({"event": "purchase", "where": {"": 1}}), "audience.segment", "property name"),
        (
            {
                "audience": {
                    "segment": {"segment": "leads"},
                    "anchor": {"table": "subscriptions", "column": "renews_at; DROP TABLE x"},
                }
            },
            "audience.anchor.column",
            "unknown column",
        ),
        (
            {"audience": {"segment": {"segment": "leads"}, "anchor": {"table": "contacts", "column": "email"}}},
            "audience.anchor.column",
            "not a timestamp",
        ),
        (
            {"exit": {"rules": [{"reason": "converted", "segment": {"segment": "leads"}}]}},
            "exit.rules[0].reason",
            "put a conversion in exit.goal",
        ),
        (
            {"exit": {"rules": [{"reason": "completed", "segment": {"segment": "leads"}}]}},
            "exit.rules[0].reason",
            "a reason the engine records itself",
        ),
    ],
)
def test_values_the_types_allow_but_the_engine_cannot_use(tmp_path, change, field, expected):
    path = write(tmp_path, copy.deepcopy(FULL_PROGRAM) | change)
    with pytest.raises(config.ConfigError) as err:
        load_program(path)
    assert_names(err.value, path, field)
    assert expected in str(err.value)


@pytest.mark.parametrize("loader", ["program", "policy"])
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("name: caf\xe9\n".encode("latin-1"), "not UTF-8 text"),
        (b"\xff\xfe\x00n\x00a\x00m\x00e", "not UTF-8 text"),
        (b"- a\n- list\n", "must hold a mapping"),
        (b"just text", "must hold a mapping"),
        (b"", "must hold a mapping"),
        (b"name: [unclosed\n", "not valid YAML"),
    ],
)
def test_unreadable_files_are_config_errors(tmp_path, loader, raw, expected):
    path = tmp_path / ("demo.yml" if loader == "program" else "policy.yml")
    path.write_bytes(raw)
    with pytest.raises(config.ConfigError, match=expected) as err:
        load_program(path) if loader == "program" else config.load_policy(path)
    assert err.value.file == str(path)


def test_one_unreadable_program_file_breaks_only_its_own_dag(tmp_path, monkeypatch):
    programs = tmp_path / "config" / "programs"
    programs.mkdir(parents=True)
    for name in ("segments.yml", "policy.yml"):
        (tmp_path / "config" / name).write_text((FIXTURES / "config" / name).read_text())
    (programs / "alpha.yml").write_text((FIXTURES / "config" / "programs" / "alpha.yml").read_text())
    (programs / "broken.yml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    huge = {key: value for key, value in FULL_PROGRAM.items() if key != "id"} | _step(delay="99999999999d")
    (programs / "huge.yml").write_text(yaml.safe_dump(huge))
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(tmp_path / "config"))

    loaded, errors = config.load_all_programs()

    assert list(loaded) == ["alpha"]
    assert sorted(errors) == ["broken", "huge"]
    assert "not UTF-8 text" in str(errors["broken"]) and "steps[0].delay" in str(errors["huge"])


@pytest.mark.parametrize(
    ("old", "new"), [("open_ticket", "open_support_ticket"), ("sales_negotiation", "in_sales_negotiation")]
)
def test_a_renamed_policy_key_fails_validate_naming_the_file_and_the_new_key(tmp_path, monkeypatch, capsys, old, new):
    from lifecycle.devtools.cli import main

    configs = tmp_path / "config"
    shutil.copytree(FIXTURES / "config", configs)
    policy = yaml.safe_load((configs / "policy.yml").read_text())
    policy["suppressions"][old] = policy["suppressions"].pop(new)
    (configs / "policy.yml").write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(configs))

    with pytest.raises(config.ConfigError) as err:
        config.load_policy()
    assert_names(err.value, configs / "policy.yml", "suppressions")
    assert main(["validate"]) == 1
    invalid = [line for line in capsys.readouterr().out.splitlines() if line.startswith("INVALID")]
    assert invalid == [f"INVALID {err.value}"]
    assert str(configs / "policy.yml") in invalid[0] and f"rename {old} to {new}" in invalid[0]


def test_a_decision_value_for_an_unknown_program_fails_validate_naming_it(tmp_path, monkeypatch, capsys):
    from lifecycle.devtools.cli import main

    configs = tmp_path / "config"
    shutil.copytree(FIXTURES / "config", configs)
    policy = yaml.safe_load((configs / "policy.yml").read_text())
    policy["decision"] = {"mode": "next_best_action", "value": {"alpha": 3, "alhpa": 5}}
    (configs / "policy.yml").write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(configs))

    assert main(["validate"]) == 1
    invalid = [line for line in capsys.readouterr().out.splitlines() if line.startswith("INVALID")]
    assert len(invalid) == 1 and "decision.value names no program: ['alhpa']" in invalid[0], invalid
    assert str(configs / "policy.yml") in invalid[0] and "'alpha'" in invalid[0]


@pytest.mark.parametrize(
    ("legal_basis", "field", "expected"),
    [
        ({"promotions": "explicit"}, "legal_basis.promotions", "is not a consent purpose — fix: use one of"),
        ({"transactional": "assumed"}, "legal_basis.transactional", "is not a legal basis — fix: use explicit"),
        ("implied", "legal_basis", "write a mapping"),
    ],
)
def test_an_unknown_purpose_or_legal_basis_names_the_field_and_the_fix(tmp_path, legal_basis, field, expected):
    path = write(tmp_path, FULL_POLICY | {"legal_basis": legal_basis}, "policy.yml")
    with pytest.raises(config.ConfigError) as err:
        config.load_policy(path)
    assert_names(err.value, path, field)
    assert expected in str(err.value)


def test_a_purpose_left_out_of_legal_basis_keeps_its_default(tmp_path):
    path = write(tmp_path, FULL_POLICY | {"legal_basis": {"marketing": "implied"}}, "policy.yml")
    assert config.load_policy(path).legal_basis == {"marketing": "implied", "transactional": "implied"}
    left_out = {key: value for key, value in FULL_POLICY.items() if key != "legal_basis"}
    policy = config.load_policy(write(tmp_path, left_out, "policy.yml"))
    assert policy.legal_basis == {"marketing": "explicit", "transactional": "implied"}


def test_topic_translations_are_by_language_code_and_fall_back_to_the_words_as_written(tmp_path):
    offers = FULL_POLICY["topics"]["offers"]
    policy = config.load_policy(write(tmp_path, FULL_POLICY, "policy.yml"))
    assert policy.topics["offers"].words("de") == ("Angebote", "Rabatte und Aktionen")
    assert policy.topics["offers"].words("fr") == ("Offers", "Discounts and deals")
    label_only = FULL_POLICY | {"topics": {"offers": offers | {"translations": {"nl": {"label": "Aanbiedingen"}}}}}
    policy = config.load_policy(write(tmp_path, label_only, "policy.yml"))
    assert policy.topics["offers"].words("nl") == ("Aanbiedingen", "Discounts and deals")
    german = FULL_POLICY | {"topics": {"offers": offers | {"translations": {"German": {"label": "Angebote"}}}}}
    path = write(tmp_path, german, "policy.yml")
    with pytest.raises(config.ConfigError) as err:
        config.load_policy(path)
    assert_names(err.value, path, "topics.offers.translations.German")


def test_two_topics_with_one_sendgrid_group_name_both_and_the_fix(tmp_path):
    topics = {"offers": {"label": "Offers", "sendgrid_group": 101}, "news": {"label": "News", "asm_group_id": 101}}
    path = write(tmp_path, FULL_POLICY | {"topics": topics}, "policy.yml")
    with pytest.raises(config.ConfigError, match="offers and news both name SendGrid group 101 — fix: give each"):
        config.load_policy(path)


def test_more_topic_groups_than_an_email_can_show_is_an_error(tmp_path):
    topics = {f"t{n}": {"label": f"Topic {n}", "sendgrid_group": n} for n in range(1, 27)}
    path = write(tmp_path, FULL_POLICY | {"topics": topics}, "policy.yml")
    with pytest.raises(config.ConfigError, match="26 topics name a SendGrid group; an email can show at most 25"):
        config.load_policy(path)


def test_a_topic_group_may_be_written_under_sendgrids_name_and_emails_show_the_optional_ones(tmp_path):
    topics = {
        "offers": {"label": "Offers", "asm_group_id": 101},
        "news": {"label": "News", "sendgrid_group": 102},
        "billing": {"label": "Billing", "sendgrid_group": 103, "optional": False},
    }
    policy = config.load_policy(write(tmp_path, FULL_POLICY | {"topics": topics}, "policy.yml"))
    assert policy.topic_groups() == {101: "offers", 102: "news", 103: "billing"}
    renewal = load_program(write(tmp_path, FULL_PROGRAM | {"topic": "billing"}))
    shown = policy.groups_to_display(renewal)
    assert (shown[0], sorted(shown[1:])) == (103, [101, 102])


def test_the_decision_mode_is_priority_unless_set_and_an_unknown_score_is_refused(tmp_path):
    left_out = {key: value for key, value in FULL_POLICY.items() if key != "decision"}
    decision = config.load_policy(write(tmp_path, left_out, "policy.yml")).decision
    assert decision.mode == "priority" and not decision.next_best_action and decision.value_of("winback") == 1.0
    path = write(tmp_path, FULL_POLICY | {"decision": {"mode": "next_best_action", "score": "churn"}}, "policy.yml")
    with pytest.raises(config.ConfigError) as err:
        config.load_policy(path)
    assert_names(err.value, path, "decision.score")
    assert "unknown score 'churn'" in str(err.value) and "churn_risk" in str(err.value)
    path = write(tmp_path, FULL_POLICY | {"decision": {"mode": "best"}}, "policy.yml")
    with pytest.raises(config.ConfigError) as err:
        config.load_policy(path)
    assert_names(err.value, path, "decision.mode")
