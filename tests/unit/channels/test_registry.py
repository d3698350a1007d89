"""Channels are registered descriptors: program files, the policy and rendering read the registry,
so a channel registered by its module is usable everywhere and an unknown one is a config error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lifecycle import config
from lifecycle.channels import registry
from lifecycle.channels.base import Channel
from lifecycle.messages.rendering import render
from lifecycle.model.channels import UnknownChannel
from tests.conftest import FIXTURES
from tests.support.pager import PagerChannel, registered


@pytest.fixture
def pager():
    with registered() as channel:
        yield channel


@pytest.fixture
def templates(tmp_path: Path, monkeypatch) -> Path:
    """The fixture templates plus a pager part for ``simple/hello``."""
    root = tmp_path / "templates"
    (root / "simple").mkdir(parents=True)
    for template in (FIXTURES / "templates" / "simple").iterdir():
        (root / "simple" / template.name).write_text(template.read_text())
    (root / "simple" / "hello.pager.j2").write_text("{{ brand.name }}:\n  hello   {{ contact.first_name }}\n")
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(root))
    return root


def _program(tmp_path: Path, **step: str) -> Path:
    data = yaml.safe_load((FIXTURES / "config" / "programs" / "alpha.yml").read_text())
    data["steps"] = [{"id": "hello", "template": "simple/hello", **step}]
    path = tmp_path / "alpha.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def _policy(tmp_path: Path, **changes: object) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(yaml.safe_dump(yaml.safe_load((FIXTURES / "config" / "policy.yml").read_text()) | changes))
    return path


def _load(path: Path) -> config.Program:
    return config.load_program(path, config.load_segments(FIXTURES / "config" / "segments.yml"))


def test_email_sms_whatsapp_webhook_and_sales_task_ship_registered():
    assert registry.names() == ("email", "sms", "whatsapp", "webhook", "sales_task")
    assert registry.get("sms").reconcilable and not registry.get("email").reconcilable
    assert not registry.get("whatsapp").reconcilable and registry.get("whatsapp").renews_claim


@pytest.mark.parametrize("name", ["all", "Pager", "pager_with_a_name_of_thirty_three", "9lives", ""])
def test_a_channel_name_must_fit_the_ledger(name):
    odd = type("Odd", (PagerChannel,), {"name": name})()
    with pytest.raises(ValueError, match="channel name"):
        registry.register(odd)
    assert name not in registry.names()


def test_a_channel_must_set_every_fact():
    said = {fact: getattr(PagerChannel, fact) for fact in Channel.__annotations__ if fact != "quiet_hours"}
    behaviour = {name: getattr(PagerChannel, name) for name in Channel.__abstractmethods__}
    vague = type("Vague", (Channel,), said | behaviour)()
    with pytest.raises(TypeError, match=r"does not set \['quiet_hours'\]"):
        registry.register(vague)
    assert "pager" not in registry.names()


def test_a_name_is_registered_once(pager):
    with pytest.raises(ValueError, match="already registered"):
        registry.register(PagerChannel())
    assert registry.get("pager") is pager


def test_an_unknown_channel_is_named_with_the_registered_ones():
    with pytest.raises(UnknownChannel, match=r"'fax'.*\['email', 'sms', 'whatsapp', 'webhook', 'sales_task'\]"):
        registry.get("fax")


@pytest.mark.parametrize("field", ["channel", "fallback"])
def test_a_step_on_an_unregistered_channel_names_the_file_the_field_and_the_channels(tmp_path, field):
    step = {"channel": "email", field: "pager"} if field == "fallback" else {"channel": "pager"}
    path = _program(tmp_path, **step)
    with pytest.raises(config.ConfigError) as err:
        _load(path)
    assert err.value.file == str(path)
    assert err.value.problems == [
        f"steps[0].{field}: 'pager' is not a registered channel — fix: use one of "
        "['email', 'sms', 'whatsapp', 'webhook', 'sales_task']"
    ]


def test_a_registered_channel_is_a_step_channel_and_needs_its_own_template_parts(tmp_path, pager, templates):
    program = _load(_program(tmp_path, channel="pager", fallback="sms"))
    assert (program.steps[0].channel, program.steps[0].fallback) == ("pager", "sms")

    (templates / "simple" / "hello.pager.j2").unlink()
    with pytest.raises(config.ConfigError, match=r"steps\[0\].template: simple/hello.pager.j2 not found"):
        _load(_program(tmp_path, channel="pager"))


def test_policy_caps_accept_any_registered_channel(tmp_path, pager):
    caps = {"pager": {"max": 1, "per": "1d"}, "all": {"max": 5, "per": "7d"}}
    assert set(config.load_policy(_policy(tmp_path, caps=caps)).caps) == {"pager", "all"}

    registry.unregister("pager")
    with pytest.raises(config.ConfigError) as err:
        config.load_policy(_policy(tmp_path, caps=caps))
    assert err.value.problems == [
        "caps.pager[key]: 'pager' is not a registered channel or 'all' — fix: use one of "
        "['email', 'sms', 'whatsapp', 'webhook', 'sales_task', 'all']"
    ]


def test_quiet_hours_only_for_channels_that_have_them(tmp_path, pager):
    window = {"start": "21:00", "end": "08:00"}
    assert set(config.load_policy(_policy(tmp_path, quiet_hours={"email": window, "sms": window})).quiet_hours) == {
        "email",
        "sms",
    }
    with pytest.raises(config.ConfigError) as err:
        config.load_policy(_policy(tmp_path, quiet_hours={"pager": window}))
    assert err.value.problems == [
        "quiet_hours.pager[key]: 'pager' is not a registered channel with quiet hours — fix: use one of "
        "['email', 'sms', 'whatsapp']"  # the webhook channel has no quiet hours
    ]


def test_a_channel_renders_its_parts_laid_out_as_it_says(pager, templates):
    rendered = render("simple/hello", "pager", {"brand": {"name": "Northwind"}, "contact": {"first_name": "Ada"}})
    assert rendered.parts == {"text": "Northwind: hello Ada"}
    assert registry.get("pager").describe(rendered.parts) == "PAGE Northwind: hello Ada"
