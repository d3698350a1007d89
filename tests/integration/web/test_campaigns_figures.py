"""The Campaigns page's figures against the ledger: every funnel partitions its planned messages,
each program is shown as of its own newest run, per-step performance in journey order, zero told
apart from not measured, and the contact lookup ("why not sent?") — in the HTML and as headless
Chromium renders it at 800 and 1,400 px, light and dark."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, update

from lifecycle import config
from lifecycle.model import schema
from lifecycle.model.ledger import IN_FLIGHT, WENT_OUT, Status
from lifecycle.reporting import figures
from lifecycle.web.campaigns import campaigns_page
from tests.conftest import AS_OF
from tests.support.journey import run_program
from tests.support.kpi_crm import seed_with_runs

WELCOME_AGAIN = AS_OF + timedelta(hours=2)
DELIVERED, BOUNCED = 3, 1
M = schema.messages


def _bucket(status: str) -> str:
    if status in WENT_OUT:
        return "sent"
    if status in (Status.PLANNED, *IN_FLIGHT):
        return "in_progress"
    return status


@pytest.fixture(scope="module")
def crm(tmp_path_factory):
    """600 seeded contacts, two weekly runs of every shipped program, one more welcome run two
    hours later (welcome is hourly), and some welcome messages delivered, bounced and unsubscribed."""
    url = f"sqlite:///{tmp_path_factory.mktemp('campaigns') / 'crm.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        env.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
        engine = seed_with_runs(url, AS_OF, contacts=600, weeks=2)
        run_program(engine, "welcome", WELCOME_AGAIN)
    with engine.begin() as conn:
        ids = (
            conn.execute(
                select(M.c.message_id)
                .where(
                    M.c.program == "welcome", M.c.status == Status.DRY_RUN, M.c.planned_at > AS_OF - timedelta(weeks=1)
                )
                .order_by(M.c.message_id)
            )
            .scalars()
            .all()[: DELIVERED + BOUNCED]
        )
        assert len(ids) == DELIVERED + BOUNCED, "the seeded welcome run planned too few messages"
        conn.execute(update(M).where(M.c.message_id.in_(ids[:DELIVERED])).values(status=Status.DELIVERED))
        conn.execute(update(M).where(M.c.message_id.in_(ids[DELIVERED:])).values(status=Status.BOUNCED))
        conn.execute(
            insert(schema.provider_events),
            {
                "provider": "sendgrid",
                "event_id": "unsub-1",
                "event_type": "unsubscribe",
                "message_id": ids[0],
                "occurred_at": AS_OF + timedelta(minutes=5),
                "received_at": AS_OF + timedelta(minutes=5),
            },
        )
    # Provider feedback changed the figures after the runs stored them: refresh them as the
    # data_hygiene DAG's refresh_campaign_figures task does.
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        figures.refresh(engine, config.load_all_programs()[0])
    return engine


@pytest.fixture(scope="module")
def programs():
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        return config.load_all_programs()[0]


@pytest.fixture(scope="module")
def page(crm, programs) -> str:
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        env.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
        return campaigns_page(crm)


def card(page: str, program_id: str) -> str:
    start = page.index(f'<div class="panel" id="{program_id}">')
    following = page.find('<div class="panel" id=', start + 1)
    return page[start : following if following > 0 else len(page)]


def week_funnel(page: str, program_id: str) -> dict[str, int]:
    block = card(page, program_id).split('<div class="funnel"')[1].split('<div class="small muted"')[0]
    return {
        k: int(v.replace(",", ""))
        for k, v in re.findall(r'data-outcome="(\w+)"[^>]*><span[^>]*>[^<]*</span><b>([\d,]+)</b>', block)
    }


def steps_table(page: str, program_id: str) -> dict[tuple[str, str], dict[str, int]]:
    """``{(step, variant): {outcome or figure: count}}`` from the program's per-step table."""
    table = card(page, program_id).split('<table class="steps"')[1].split("</table>")[0]
    columns = re.findall(r'<th class="num step" data-step="([^"]*)" data-variant="([^"]*)"', table)
    figures: dict[tuple[str, str], dict[str, int]] = {column: {} for column in columns}
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)[1:]:
        cells = re.findall(r'data-(?:outcome|figure)="(\w+)">(?:<b>)?([\d,]+)', row)
        assert len(cells) == len(columns), row
        for column, (name, value) in zip(columns, cells, strict=True):
            figures[column][name] = int(value.replace(",", ""))
    return figures


def ledger(engine, program_id: str, start, end) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(M.c.status, func.count())
            .where(M.c.program == program_id, M.c.planned_at > start, M.c.planned_at <= end)
            .group_by(M.c.status)
        ).all()
    counts: dict[str, int] = {}
    for status, n in rows:
        counts[_bucket(status)] = counts.get(_bucket(status), 0) + n
    return counts


def test_every_programs_week_funnel_partitions_its_planned_messages(crm, programs, page):
    for pid in programs:
        shown = week_funnel(page, pid)
        as_of = WELCOME_AGAIN if pid == "welcome" else AS_OF
        expected = ledger(crm, pid, as_of - timedelta(weeks=1), as_of)
        planned = shown.pop("planned")
        assert planned == sum(shown.values()) == sum(expected.values()), pid
        assert {k: v for k, v in shown.items() if v} == expected, pid
        assert f"{planned:,} messages planned, {shown['sent']:,} sent" in html.unescape(card(page, pid))


def test_each_program_is_shown_as_of_its_own_newest_run(programs, page):
    for pid in programs:
        as_of = WELCOME_AGAIN if pid == "welcome" else AS_OF
        assert f'Figures as of its newest run, <b class="as-of">{as_of:%Y-%m-%d %H:%M} UTC</b>' in card(page, pid)
    assert "KPIs as of the newest program run" not in page


def test_per_step_figures_follow_the_journey_and_equal_the_ledger(crm, programs, page):
    for pid, program in programs.items():
        table = steps_table(page, pid)
        order = [step for step, _variant in table]
        assert order == sorted(order, key=[s.id for s in program.steps].index), pid
        as_of = WELCOME_AGAIN if pid == "welcome" else AS_OF
        with crm.connect() as conn:
            rows = conn.execute(
                select(M.c.step, M.c.variant, M.c.status, func.count())
                .where(M.c.program == pid, M.c.planned_at <= as_of)
                .group_by(M.c.step, M.c.variant, M.c.status)
            ).all()
        expected: dict[tuple[str, str], dict[str, int]] = {}
        for step, variant, status, n in rows:
            counts = expected.setdefault((step, variant or ""), {})
            counts[_bucket(status)] = counts.get(_bucket(status), 0) + n
        for column, shown in table.items():
            planned = shown.pop("planned")
            extras = {k: shown.pop(k) for k in ("delivered", "bounced", "unsubscribes", "converted_after")}
            assert planned == sum(shown.values()), (pid, column)
            assert {k: v for k, v in shown.items() if v} == expected.get(column, {}), (pid, column)
            assert extras["delivered"] + extras["bounced"] <= shown["sent"]
    welcome = steps_table(page, "welcome")
    assert sum(f["delivered"] for f in welcome.values()) == DELIVERED
    assert sum(f["bounced"] for f in welcome.values()) == BOUNCED
    assert sum(f["unsubscribes"] for f in welcome.values()) == 1
    assert "2d after enrollment" in card(page, "welcome") and "30d before the anchor date" in card(page, "renewal")


def test_a_service_program_has_no_global_control_card(programs, page):
    for pid, program in programs.items():
        shown = card(page, pid)
        assert ('data-group="control"' in shown) is not program.is_service, pid
        assert ("Lift vs control" in shown) is not program.is_service, pid


def test_not_measured_reads_differently_from_zero(page):
    welcome, renewal = card(page, "welcome"), card(page, "renewal")
    assert "Opens (directional) <b>not tracked</b>" in welcome and "Bounced <b>25.0%</b>" in welcome
    assert "Deliverability of 0 sent (nothing sent yet)" in renewal
    assert "Bounced <b>–</b>" in renewal and "Opens (directional) <b>–</b>" in renewal
    assert "No conversion recorded in any group yet" in renewal


def test_the_open_dag_link_stays_in_the_frame(programs, page):
    for pid in programs:
        assert f'<a class="small" href="../dags/{pid}">open DAG {pid}</a>' in page
    assert 'target="_top"' not in page


@pytest.fixture(scope="module")
def rendered(page, tmp_path_factory) -> Path:
    from tests.support.chromium import require_chromium

    require_chromium()
    path = tmp_path_factory.mktemp("campaigns-page") / "campaigns.html"
    path.write_text(page)
    return path


@pytest.mark.parametrize(("width", "dark"), [(800, False), (800, True), (1400, False), (1400, True)])
def test_chromium_shows_the_ledgers_figures_without_sideways_scrolling(crm, programs, rendered, width, dark):
    from tests.support.chromium import page_width, screenshot

    scroll_width, dom = page_width(rendered, width, dark=dark)
    assert scroll_width <= width, f"the page is {scroll_width} px wide in a {width} px window"
    background = re.search(r'data-background="([^"]+)"', dom).group(1)
    assert background == ("rgb(17, 20, 24)" if dark else "rgb(246, 247, 249)")
    for pid in programs:
        as_of = WELCOME_AGAIN if pid == "welcome" else AS_OF
        shown = week_funnel(dom, pid)
        assert shown.pop("planned") == sum(ledger(crm, pid, as_of - timedelta(weeks=1), as_of).values())
    if not dark:
        png = screenshot(rendered.as_uri(), rendered.with_name(f"campaigns-{width}.png"), (width, 1600))
        assert png.stat().st_size > 0
