"""The Campaigns page from its precomputed figures (``lifecycle_campaign_figures``): the page built
from the stored figures is the page computed live, a run (and a sweep that sends) refreshes them,
a page view without a new run computes nothing, and stale or missing figures are computed once."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, select, update

from lifecycle import config
from lifecycle.engine.scope import sweep_run_id
from lifecycle.model import schema
from lifecycle.reporting import figures
from lifecycle.web.campaigns import campaigns_page
from tests.conftest import AS_OF
from tests.support.journey import run_program, run_sweep
from tests.support.kpi_crm import seed_with_runs

F = schema.campaign_figures
STAMPS = (
    re.compile(r'<span class="computed-at"[^>]*>computed [^<]*</span>'),
    re.compile(r"page rendered \d{4}-\d\d-\d\d \d\d:\d\d UTC"),
)


@pytest.fixture
def shipped(monkeypatch):
    monkeypatch.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)


@pytest.fixture(scope="module")
def crm(tmp_path_factory):
    """300 seeded contacts and two weekly runs of every shipped program (each stores its figures)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('stored') / 'crm.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        env.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
        return seed_with_runs(url, AS_OF, contacts=300, weeks=2)


def _without_stamps(page: str) -> str:
    for stamp in STAMPS:
        page = stamp.sub("", page)
    return page


def _stored(engine) -> dict[str, figures.Stored]:
    return figures.load(engine)


def _no_compute(monkeypatch) -> None:
    def refuse(*_args, **_kwargs):
        raise AssertionError("the page recomputed figures it had stored")

    monkeypatch.setattr(figures, "compute", refuse)


@pytest.mark.usefixtures("shipped")
def test_the_page_from_stored_figures_is_the_page_computed_live(crm, monkeypatch):
    programs = config.load_all_programs()[0]
    stored = _stored(crm)
    assert set(stored) == set(programs), "every program's run stored its figures"
    assert {s.as_of for s in stored.values()} == {AS_OF}
    assert all(s.version == figures.VERSION for s in stored.values())
    live = campaigns_page(crm, as_of=AS_OF)
    _no_compute(monkeypatch)
    from_table = campaigns_page(crm)
    assert from_table.count('class="computed-at"') == len(programs)
    assert _without_stamps(from_table) == _without_stamps(live)
    # The stamps are the only difference: a figure the page shows is there in both.
    assert 'data-outcome="planned"' in from_table


@pytest.mark.usefixtures("shipped")
def test_a_sweep_that_sends_refreshes_and_one_that_sends_nothing_does_not(crm, monkeypatch):
    calls: list[str] = []
    refresh = figures.refresh_run

    def counted(engine, run):
        calls.append(run.program.id)
        return refresh(engine, run)

    monkeypatch.setattr(figures, "refresh_run", counted)
    sent = []
    for at in (AS_OF + timedelta(days=2, hours=1), AS_OF + timedelta(days=2, hours=1, minutes=5)):
        run_sweep(crm, "welcome", at)
        with crm.connect() as conn:
            sent.append(
                conn.execute(
                    select(func.count()).where(
                        schema.messages.c.send_run_id == sweep_run_id("welcome", f"test__{at.isoformat()}")
                    )
                ).scalar_one()
            )
    assert sent[0] > 0 and sent[1] == 0, sent
    assert calls == ["welcome"]


@pytest.mark.usefixtures("shipped")
def test_a_run_refreshes_its_programs_figures_and_a_view_computes_nothing(crm, monkeypatch):
    before = _stored(crm)
    later = AS_OF + timedelta(days=6)  # after the sweep above: the tips step falls due
    run_program(crm, "welcome", later)
    after = _stored(crm)
    assert after["welcome"].as_of == later
    assert after["welcome"].computed_at >= before["welcome"].computed_at
    with crm.connect() as conn:
        planned = conn.execute(
            select(func.count()).where(
                schema.messages.c.program == "welcome",
                schema.messages.c.planned_at > later - timedelta(weeks=1),
                schema.messages.c.planned_at <= later,
            )
        ).scalar_one()
    shown = after["welcome"].payload["week"]["outcomes"]
    assert sum(shown.values()) == planned
    assert planned > sum(before["welcome"].payload["week"]["outcomes"].values()), "the new run planned messages"
    assert {pid: s.payload for pid, s in after.items() if pid != "welcome"} == {
        pid: s.payload for pid, s in before.items() if pid != "welcome"
    }, "another program's figures are untouched"

    _no_compute(monkeypatch)
    page = campaigns_page(crm)
    assert f"{later:%Y-%m-%d %H:%M} UTC" in page
    assert _stored(crm) == after, "a page view wrote nothing"


@pytest.mark.usefixtures("shipped")
def test_missing_or_stale_figures_are_computed_once_and_stored(crm, monkeypatch):
    with crm.begin() as conn:
        conn.execute(delete(F).where(F.c.program == "renewal"))
        conn.execute(update(F).where(F.c.program == "winback").values(version=figures.VERSION - 1))
    first = campaigns_page(crm)
    stored = _stored(crm)
    assert "renewal" in stored and stored["winback"].version == figures.VERSION
    _no_compute(monkeypatch)
    assert _without_stamps(campaigns_page(crm)) == _without_stamps(first)
