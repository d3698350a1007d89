"""A channel added in one module (the test-only pager channel, plus its stand-in provider hook)
goes through every engine rule unchanged: consent per channel and purpose, its own suppression
lists, missing and invalid addresses, its per-channel cap and the all-channels cap, priority
between programs, holdouts, and the outbox guarantee — on SQLite and PostgreSQL, through the
provider transport, and unregistered again after each test."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import insert, select

from lifecycle import config, paths
from lifecycle.channels import registry
from lifecycle.channels.providers import ProviderTransport
from lifecycle.engine import dispatch, pipeline
from lifecycle.engine.test_copies import send_test_copies
from lifecycle.messages.links import PublicLinks
from lifecycle.messages.preview import preview
from lifecycle.model import schema
from lifecycle.model.db import bucket_of
from tests.conftest import AS_OF, FIXTURES
from tests.support.invariants import WorkerDied, stage_run
from tests.support.journey import messages, messages_already_sent, treatment_contact
from tests.support.pager import NAME, PagerChannel, PagerHook, registered

M = schema.messages
LINKS = PublicLinks("https://app.test/lifecycle", "test-secret")
CAPS = {"email": {"max": 3, "per": "7d"}, "sms": {"max": 2, "per": "7d"}, "all": {"max": 3, "per": "7d"}}
POLICY = {
    "quiet_hours": {"sms": {"start": "21:00", "end": "08:00"}},
    "control_group": {"percent": 0, "salt": "test-control"},
    "send_batch_size": 50,
}
KPI = {"primary": "conversion", "label": "Conversion", "conversion": {"event": "purchase", "since": "enrollment"}}
PROGRAMS = {
    "pages": {
        "name": "Pages (low priority)",
        "priority": 20,
        "audience": {"segment": {"segment": "leads"}},
        "steps": [{"id": "hello", "template": "simple/hello"}],
        "holdout_percent": 30,
    },
    "urgent": {
        "name": "Urgent pages (high priority)",
        "priority": 90,
        "audience": {"segment": {"attribute": "industry", "eq": "Logistics"}},
        "steps": [{"id": "alert", "template": "simple/hello"}],
        "holdout_percent": 0,
    },
}
PAGE_TEMPLATE = "{{ brand.name }} page:\n  hello   {{ contact.first_name }}\n"


class NotReconcilable(PagerChannel):
    """The pager channel as it would be if its provider could not be asked about a page."""

    reconcilable = False


class NamedLikeAColumn(PagerChannel):
    """The pager channel under a name the ledger also gives a column."""

    name = "channel"


class NamedAtLength(PagerChannel):
    """The pager channel under a long name (the ledger's channel columns hold 32 characters)."""

    name = "paid_audience"


@pytest.fixture
def pager(request):
    """The pager channel (or the variant a test parametrizes), registered for this test only."""
    with registered(getattr(request, "param", PagerChannel)()) as channel:
        yield channel
    assert registry.names() == ("email", "sms", "whatsapp", "webhook", "sales_task")


@pytest.fixture
def pager_config(tmp_path: Path, monkeypatch, pager) -> Path:
    """A config folder whose programs page (a cap of 1 page a week), and templates with a pager part."""
    root = tmp_path / "config"
    (root / "programs").mkdir(parents=True)
    (root / "segments.yml").write_text((FIXTURES / "config" / "segments.yml").read_text())
    caps = CAPS | {pager.name: {"max": 1, "per": "7d"}}
    (root / "policy.yml").write_text(yaml.safe_dump(POLICY | {"caps": caps}))
    for program, fields in PROGRAMS.items():
        steps = [step | {"channel": pager.name} for step in fields["steps"]]
        (root / "programs" / f"{program}.yml").write_text(
            yaml.safe_dump({"owner": "tests", "schedule": None, "kpi": KPI} | fields | {"steps": steps})
        )
    templates = tmp_path / "templates" / "simple"
    templates.mkdir(parents=True)
    for template in (FIXTURES / "templates" / "simple").iterdir():
        (templates / template.name).write_text(template.read_text())
    (templates / "hello.pager.j2").write_text(PAGE_TEMPLATE)
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(root))
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(tmp_path / "templates"))
    return root


def _links(message_id: int, contact_id: str, channel: str) -> dict[str, str]:
    return {"unsubscribe": LINKS.unsubscribe_url(message_id, contact_id, channel)}


def _run(engine, program: str, hook: PagerHook, as_of: datetime = AS_OF) -> None:
    scope, programs = pipeline.load_scope(program, f"{program}__{as_of.isoformat()}", as_of)
    pipeline.run_program(engine, scope, programs, ProviderTransport(hook, links=LINKS), links=_links)


def _outcomes(engine, program: str) -> dict[str, tuple[str, str | None]]:
    return {m["contact_id"]: (m["status"], m["reason"]) for m in messages(engine, program)}


def _pager_contact(c, program: str = "pages", channel: str = NAME, **fields) -> str:
    """A treatment contact of ``program`` with marketing consent for the pager (and email, SMS)."""
    consent = {"email": "granted", "sms": "granted", channel: "granted"}
    return treatment_contact(c, program, **({"consent": consent} | fields))


def _holdout_contact(c) -> str:
    program = config.load_program(paths.config_dir() / "programs" / "pages.yml")
    cid = next(
        f"held{i:04d}"
        for i in range(10_000)
        if bucket_of(f"{program.salt}:{program.id}:held{i:04d}") < program.holdout_percent * 100
    )
    return c.contact(cid, consent={NAME: "granted"})


def _listed(engine, contact_id: str, channel: str, reason: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.suppressions).values(
                contact_id=contact_id, channel=channel, reason=reason, source="test", created_at=AS_OF
            )
        )


def test_pages_go_only_where_consent_lists_and_addresses_allow(crm, pager_config):
    engine, c = crm
    paged = _pager_contact(c, phone=" +1 (415) 555-2671 ", first_name="Ada")
    other_lists = _pager_contact(c)
    _listed(engine, other_lists, "sms", "sms_stop")
    _listed(engine, other_lists, "email", "unsubscribed")
    _listed(engine, other_lists, "sms", "pager_stop")
    expected = {paged: ("sent", None), other_lists: ("sent", None)}
    for reason in ("pager_stop", "unsubscribed", "duplicate_contact"):
        cid = _pager_contact(c)
        _listed(engine, cid, NAME, reason)
        expected[cid] = ("suppressed", reason)
    expected[_pager_contact(c, phone=None)] = ("suppressed", "missing_address")
    expected[_pager_contact(c, phone="12")] = ("suppressed", "invalid_address")
    expected[treatment_contact(c, "pages")] = ("suppressed", "no_consent")  # email and SMS consent only
    transactional = treatment_contact(c, "pages", consent={})
    c.consent(transactional, NAME, "granted", purpose="transactional")
    expected[transactional] = ("suppressed", "no_consent")  # the program asks for marketing consent
    withdrawn = _pager_contact(c)
    c.consent(withdrawn, NAME, "withdrawn", at=AS_OF - timedelta(days=2))
    expected[withdrawn] = ("suppressed", "consent_withdrawn")
    expected[_holdout_contact(c)] = ("held_out", "program_holdout")
    hook = PagerHook()

    _run(engine, "pages", hook)

    assert _outcomes(engine, "pages") == expected
    pages = {page.contact_id: page for _pid, page in hook.accepted}
    assert sorted(pages) == sorted([paged, other_lists]) and len(hook.accepted) == 2
    assert pages[paged].number == "+14155552671"  # the normalised address suppression checked
    assert pages[paged].text == "Lifecycle page: hello Ada"  # its template part, laid out on one line
    sent = {m["contact_id"]: m for m in messages(engine, "pages") if m["status"] == "sent"}
    assert {m["channel"] for m in sent.values()} == {NAME}
    assert {sent[cid]["provider_message_id"] for cid in pages} == {pid for pid, _page in hook.accepted}


@pytest.mark.parametrize(
    "pager", [PagerChannel, NamedLikeAColumn, NamedAtLength], indirect=True, ids=["pager", "channel", "long-name"]
)
def test_the_pager_cap_and_the_all_channels_cap_both_hold(crm, pager_config, pager):
    engine, c = crm
    paged_this_week = _pager_contact(c, channel=pager.name)
    messages_already_sent(engine, paged_this_week, 1, channel=pager.name)
    busy = _pager_contact(c, channel=pager.name)
    messages_already_sent(engine, busy, 3, channel="email")
    texted = _pager_contact(c, channel=pager.name)
    messages_already_sent(engine, texted, 2, channel="sms")

    _run(engine, "pages", PagerHook())

    assert _outcomes(engine, "pages") == {
        paged_this_week: ("capped", f"frequency_cap_{pager.name}: 1 per 7d"),
        busy: ("capped", "frequency_cap_all: 3 per 7d"),
        texted: ("sent", None),
    }


@pytest.mark.parametrize("first", ["pages", "urgent"])
def test_the_higher_priority_program_gets_the_last_pager_slot_whichever_runs_first(crm, pager_config, first):
    engine, c = crm
    contact = _pager_contact(c, industry="Logistics")
    hook = PagerHook()

    for program in (first, *({"pages", "urgent"} - {first})):
        _run(engine, program, hook)

    assert _outcomes(engine, "urgent") == {contact: ("sent", None)}
    assert _outcomes(engine, "pages") == {contact: ("capped", "frequency_cap_pager: 1 per 7d")}
    assert [page.idempotency_key.split(":")[0] for _pid, page in hook.accepted] == ["urgent"]


def _status_now(engine):
    def status(page) -> str:
        with engine.connect() as conn:
            return conn.execute(select(M.c.status).where(M.c.message_id == page.message_id)).scalar_one()

    return status


@pytest.mark.parametrize(
    ("pager", "settled"),
    [(PagerChannel, ("sent", "sent", "sent")), (NotReconcilable, ("unknown", "unknown", "unknown"))],
    indirect=["pager"],
    ids=["reconcilable", "not-reconcilable"],
)
def test_a_retry_after_a_crash_sends_no_page_twice(crm, pager_config, monkeypatch, pager, settled):
    engine, c = crm
    contacts = [_pager_contact(c) for _ in range(3)]
    run_id = "pages__crash"
    (batch,) = stage_run(engine, "pages", run_id, AS_OF)
    brand = config.load_policy().brand.model_dump()
    monkeypatch.setattr(dispatch, "CLAIM_LEASE", timedelta(0))  # the dead worker's requests are long over
    hook = PagerHook(observe=_status_now(engine), die_after=2)

    with pytest.raises(WorkerDied):
        dispatch.send_batch(engine, run_id, batch, ProviderTransport(hook, links=LINKS), links=_links, brand=brand)
    assert [status for status, _reason in _outcomes(engine, "pages").values()] == ["sending"] * 3
    hook.die_after = None
    dispatch.send_batch(engine, run_id, batch, ProviderTransport(hook, links=LINKS), links=_links, brand=brand)

    ledger = {m["contact_id"]: m for m in messages(engine, "pages")}
    # Reconciled: the two pages the provider holds are sent, the third (never taken) goes once.
    # Not reconcilable: all three stay unknown, and the one never taken is not sent blindly.
    assert tuple(ledger[cid]["status"] for cid in contacts) == settled
    per_message = Counter(page.message_id for _pid, page in hook.accepted)
    assert set(per_message.values()) == {1}
    assert len(per_message) == (3 if pager.reconcilable else 2)
    assert set(hook.observed) == {"sending"}  # every page was claimed, and committed, before the request
    assert hook.claim_checks == list(per_message)  # the claim was renewed before every attempt
    if pager.reconcilable:
        assert {ledger[cid]["provider_message_id"] for cid in contacts} == {pid for pid, _page in hook.accepted}


def test_test_copies_and_previews_of_a_pager_step(crm, pager_config):
    engine, c = crm
    contact = _pager_contact(c, first_name="Grace")
    scope, _programs = pipeline.load_scope("pages", "pages__copies", AS_OF)
    hook = PagerHook()

    transport = ProviderTransport(hook, links=LINKS)
    unsubscribe = LINKS.url("/unsubscribe/test-copy")

    report = send_test_copies(engine, scope, contact, ["pager:+14155550111"], transport, unsubscribe_url=unsubscribe)

    assert report.sent == {"hello": 1} and report.not_sent == {}
    [(_pid, page)] = hook.accepted
    assert (page.message_id, page.number) == (0, "+14155550111") and page.text.startswith("[TEST] ")
    with pytest.raises(
        ValueError,
        match=r"\(webhook:webhook_default\) or sales task connections \(webhook:sales_tasks_default\) or pager",
    ):
        send_test_copies(engine, scope, contact, ["someone"], transport, unsubscribe_url=unsubscribe)
    shown = preview(str(engine.url), "pages", contact, step=None, as_of=AS_OF)
    assert shown == "PAGE Lifecycle page: hello Grace"
