"""Every template of every shipped program renders for a contact with every optional field empty
and for one with every field filled, on every channel a step can use and for every A/B variant
and trigger: no error, no "None", escaped CRM values, a text part that carries the HTML's links,
and SMS that fit one GSM-7 segment and end with the opt-out line."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator

import pytest

from lifecycle import config, paths
from lifecycle.messages.context import CONTACT_FIELDS
from lifecycle.messages.rendering import Rendered
from lifecycle.model.schema import CHURN_REASONS
from tests.support.copy_checks import copy_problems, glued, visible_html
from tests.support.programs import STOP, UNSUBSCRIBE, render_step

TRIGGER_PROPERTIES = {
    "signed_up": {"source": "webinar"},
    "content_engaged": {"topic": "best_practices"},
    "cart_abandoned": {"cart_id": "cart-0001234-01", "product": "Analytics Add-on", "value": 158.0},
    "quote_sent": {"quote_id": "q-0001234-0", "product": "Enterprise plan (annual)", "value": 96_000.0},
    "feature_used": {"feature": "team_inbox"},
    "page_viewed": {"path": "/docs/getting-started"},
    "plan_limit_reached": {"limit": "api_calls"},
    "purchase": {"order_id": "ord-0001234-00", "product": "Training Session", "amount": 249.0},
}
FILLED = {
    "contact_id": "c-filled",
    "first_name": "Alexandra",
    "last_name": "Fitzgerald",
    "country": "GB",
    "region": "England",
    "timezone": "Europe/London",
    "locale": "en-GB",
    "role": "Customer Success Manager",
    "industry": "Professional Services",
    "lifecycle_stage": "customer",
    "plan": "growth",
    "mrr": 1_470.0,
    "ltv": 24_500.0,
    "owner": "priya.shah",
    "churn_reason": "price",
    "created_at": None,
    "last_active_at": None,
}
ACCOUNT = {"name": "Meridian Partners", "industry": "Professional Services", "tier": "mid"}
HOSTILE = {"first_name": "<script>x</script>", "role": "<b>CTO</b>", "industry": "R&D <labs>", "plan": "<pro>"}
ALLOWED_TAGS = {
    "!doctype",
    "html",
    "head",
    "meta",
    "title",
    "body",
    "table",
    "tr",
    "td",
    "a",
    "p",
    "strong",
    "ol",
    "ul",
    "li",
    "br",
}
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)


PROGRAM_IDS = sorted(path.stem for path in (paths.PROJECT_ROOT / "config" / "programs").glob("*.yml"))


def _program(program_id: str) -> config.Program:
    return config.load_program(paths.config_dir() / "programs" / f"{program_id}.yml")


def _cases(program: config.Program, contact: dict, account: dict | None, triggers: list[dict]) -> Iterator[tuple]:
    variants = [None] + [v.name for v in program.ab_test.variants] if program.ab_test else [None]
    for step in program.steps:
        for channel in step.reach:
            for variant in variants:
                for trigger in triggers:
                    rendered = render_step(
                        program.id, step.id, contact, channel=channel, trigger=trigger, variant=variant, account=account
                    )
                    yield f"{program.id}/{step.id}.{channel} variant={variant} trigger={trigger}", channel, rendered


def _check(label: str, channel: str, rendered: Rendered, support_url: str) -> None:
    parts = [rendered.text] + ([rendered.subject, rendered.html] if channel == "email" else [])
    for part in parts:
        assert part and part.strip(), f"{label}: an empty part"
        assert "None" not in part, f"{label}: 'None' in {part!r}"
        assert "@" not in part, f"{label}: an address-like '@' in {part!r}"
    if channel == "sms":
        assert rendered.text.endswith(STOP), f"{label}: {rendered.text!r}"
        return
    assert "\n" not in rendered.subject and len(rendered.subject) <= 100, f"{label}: subject {rendered.subject!r}"
    assert UNSUBSCRIBE in rendered.html and UNSUBSCRIBE in rendered.text, label
    links = {html.unescape(href) for href in re.findall(r'href="([^"]+)"', rendered.html)} - {support_url}
    missing = {link for link in links if link not in rendered.text}
    assert not missing, f"{label}: the text part lacks the HTML's links {missing}"


@pytest.mark.parametrize("program_id", PROGRAM_IDS)
def test_every_template_renders_for_a_contact_with_every_optional_field_empty(program_id, shipped_config):
    program, support_url = _program(program_id), config.load_policy().brand.support_url
    nulls = [{k: None for k in TRIGGER_PROPERTIES[t]} for t in program.audience.trigger_event]
    for label, channel, rendered in _cases(program, {"contact_id": "c-empty"}, None, [{}, *nulls]):
        _check(label, channel, rendered, support_url)
        assert rendered.text.startswith("Northwind Cloud: Hi," if channel == "sms" else "Hi there,"), label


@pytest.mark.parametrize("program_id", PROGRAM_IDS)
@pytest.mark.parametrize("churn_reason", CHURN_REASONS)
def test_every_template_renders_for_a_contact_with_every_field_filled(program_id, churn_reason, shipped_config):
    program, support_url = _program(program_id), config.load_policy().brand.support_url
    assert set(FILLED) == set(CONTACT_FIELDS)
    contact = FILLED | {"churn_reason": churn_reason}
    triggers = [TRIGGER_PROPERTIES[t] for t in program.audience.trigger_event] or [{}]
    for label, channel, rendered in _cases(program, contact, ACCOUNT, triggers):
        _check(label, channel, rendered, support_url)
        assert "Alexandra" in rendered.text, label
        if channel == "sms":
            assert len(rendered.text) <= 160 and set(rendered.text) <= GSM7, f"{label}: {rendered.text!r}"


@pytest.mark.parametrize("program_id", PROGRAM_IDS)
def test_crm_values_are_escaped_in_html(program_id, shipped_config):
    program = _program(program_id)
    contact = FILLED | HOSTILE
    account = {"name": "<i>A&B</i>", "industry": "R&D <labs>", "tier": "smb"}
    triggers = [
        {k: "<img src=x>" if k in ("product", "topic", "limit") else v for k, v in TRIGGER_PROPERTIES[t].items()}
        for t in program.audience.trigger_event
    ] or [{}]
    for label, channel, rendered in _cases(program, contact, account, triggers):
        if channel == "email":
            tags = {t.lower() for t in re.findall(r"<\s*/?\s*([!a-zA-Z0-9]+)", rendered.html)}
            assert tags <= ALLOWED_TAGS, f"{label}: unescaped markup {tags - ALLOWED_TAGS}"


def _catalog_values(key: str) -> list[str]:
    catalog = json.loads((paths.INCLUDE_DIR / "crm_reference" / "catalog.json").read_text(encoding="utf-8"))
    return [entry[0] if isinstance(entry, list) else entry for entry in catalog[key]]


def _spread() -> list[tuple[dict, dict | None]]:
    """Synthetic contacts that between them take every role, industry, plan and churn reason, some
    with empty names and no account, plus one with every optional field empty."""
    roles, industries, plans = _catalog_values("roles"), _catalog_values("industries"), _catalog_values("plans")
    reasons = [*CHURN_REASONS, None]
    contacts: list[tuple[dict, dict | None]] = [({"contact_id": "c-empty"}, None)]
    for i in range(max(len(roles), len(industries))):
        contact = FILLED | {
            "contact_id": f"c-{i}",
            "first_name": None if i % 4 == 3 else FILLED["first_name"],
            "role": roles[i % len(roles)],
            "industry": industries[i % len(industries)],
            "plan": plans[i % len(plans)],
            "churn_reason": reasons[i % len(reasons)],
        }
        contacts.append((contact, None if i % 3 == 2 else ACCOUNT | {"industry": industries[i % len(industries)]}))
    return contacts


def _visible_parts(channel: str, rendered: Rendered) -> list[str]:
    if channel == "sms":
        return [rendered.text]
    return [rendered.subject or "", rendered.text, visible_html(rendered.html or "")]


@pytest.mark.parametrize("program_id", PROGRAM_IDS)
def test_every_template_reads_well_for_every_role_industry_plan_and_churn_reason(program_id, shipped_config):
    program = _program(program_id)
    triggers = [TRIGGER_PROPERTIES[t] for t in program.audience.trigger_event] or [{}]
    problems = []
    for contact, account in _spread():
        for label, channel, rendered in _cases(program, contact, account, triggers):
            problems += [
                f"{label} {contact['contact_id']}: {p}"
                for part in _visible_parts(channel, rendered)
                for p in copy_problems(part)
            ]
    assert not problems, "\n".join(problems[:20])


SENTINELS = {"first_name": "Firstqx", "role": "Roleqx", "industry": "Industryqx", "plan": "planqx"}


@pytest.mark.parametrize("program_id", PROGRAM_IDS)
def test_no_field_value_runs_into_the_next_word(program_id, shipped_config):
    program = _program(program_id)
    contact = FILLED | SENTINELS
    account = ACCOUNT | {"name": "Accountqx", "industry": "Industryqx"}
    triggers = [
        {k: f"{k}qx" if k in ("product", "topic") else v for k, v in TRIGGER_PROPERTIES[t].items()}
        for t in program.audience.trigger_event
    ] or [{}]
    values = [*SENTINELS.values(), "Accountqx", "productqx", "topicqx"]
    problems = []
    for label, channel, rendered in _cases(program, contact, account, triggers):
        problems += [f"{label}: {p}" for part in _visible_parts(channel, rendered) for p in glued(part, values)]
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("What Northwind can do for a engineeris to finish one thing.", ["'a' before a vowel"]),
        ("Hi  Ada, welcome.", ["doubled space"]),
        ("Welcome , Ada.", ["space before punctuation"]),
        ("Your plan is ready..", ["doubled punctuation"]),
        ("We built this for a .", ["empty sentence"]),
        ("It takes an minute.", ["'an' before a consonant"]),
    ],
)
def test_the_copy_checks_catch_what_a_reader_would(text, found):
    problems = copy_problems(text)
    for what in found:
        assert any(what in p for p in problems), (what, problems)


def test_the_copy_checks_pass_good_copy_and_catch_a_glued_value():
    good = "Hi Ada, an hour a week is all it takes: a unique, one-time offer for an SMS user... Thanks!"
    assert copy_problems(good) == []
    assert glued("can do for an roleqxis to finish", ["roleqx"]) and not glued("for a roleqx, is", ["roleqx"])
    assert visible_html("<p>Hi <strong>Ada</strong>,</p><p>Next</p>") == "Hi Ada,\nNext"
