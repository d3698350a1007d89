"""The Campaigns page's settings: legal basis per purpose, service caps beside the caps, and
which programs are service programs."""

from __future__ import annotations

import html

import pytest

from lifecycle.web.campaigns import SERVICE_NOTE, campaigns_page


@pytest.fixture
def empty_crm(sqlite_url, shipped_config):
    from lifecycle.model import schema
    from lifecycle.model.db import get_engine, migrate

    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    return engine


def test_the_page_shows_the_legal_basis_the_service_caps_and_the_service_programs(empty_crm):
    page = html.unescape(campaigns_page(empty_crm))
    assert (
        'legal basis <span class="pill">marketing explicit</span><span class="pill">transactional implied</span>'
        in page
    )
    assert 'service caps <span class="pill">none (uncapped)</span>' in page
    start = page.index('<div class="panel" id="renewal">')
    end = page.find('<div class="panel" id=', start + 1)
    renewal = page[start : end if end > 0 else None]
    assert f"<tr><td>Service program</td><td>{SERVICE_NOTE}</td></tr>" in renewal
    assert "transactional purpose" in renewal and "(sent to the holdout too)" in renewal
    assert page.count(SERVICE_NOTE) == 2  # renewal's catalog row and its settings, nobody else's


def _panel(page: str, program_id: str) -> str:
    start = page.index(f'<div class="panel" id="{program_id}">')
    end = page.find('<div class="panel" id=', start + 1)
    return page[start : end if end > 0 else None]


def test_the_page_shows_each_programs_trigger_its_event_lag_and_the_watchers_backlog(empty_crm):
    from datetime import UTC, datetime, timedelta

    from lifecycle.model import schema
    from lifecycle.model.db import utc_naive

    now = utc_naive(datetime.now(UTC))
    signed_up = [now - timedelta(minutes=30 + i) for i in range(4)]
    with empty_crm.begin() as conn:
        for i, at in enumerate(signed_up):
            conn.execute(
                schema.enrollments.insert().values(
                    enrollment_id=i + 1,
                    program="welcome",
                    contact_id=f"c{i}",
                    entry=1,
                    state="active",
                    enrolled_at=at + timedelta(seconds=10 * (i + 1)),
                    next_step=1,
                    group="treatment",
                    triggered_at=at,
                    run_id="r",
                )
            )
            conn.execute(
                schema.messages.insert().values(
                    idempotency_key=f"welcome:c{i}:1:welcome",
                    program="welcome",
                    enrollment_id=i + 1,
                    entry=1,
                    step="welcome",
                    step_index=0,
                    contact_id=f"c{i}",
                    channel="email",
                    planned_channel="email",
                    template="welcome/welcome",
                    status="sent",
                    due_at=at,
                    run_id="r",
                    planned_at=at,
                    sent_at=at + timedelta(seconds=30 * (i + 1)),
                )
            )
        conn.execute(schema.kpis.insert().values(program="welcome", run_id="r", as_of=now, metric="audience", value=4))
        conn.execute(
            schema.event_watch.insert().values(
                program="welcome",
                mapping="canonical",
                marks={},
                started_at=now - timedelta(hours=1),
                checked_at=now - timedelta(seconds=2),
                waiting=3,
                oldest_waiting=now - timedelta(seconds=75),
            )
        )
    page = html.unescape(campaigns_page(empty_crm))
    welcome, renewal, cart = _panel(page, "welcome"), _panel(page, "renewal"), _panel(page, "abandoned_cart")
    assert (
        "realtime on signed_up (the triggerer's watcher, within seconds), and the schedule 0 * * * * (UTC)" in welcome
    )
    assert "event → enrolled p50 <b>20s</b>, p95 <b>40s</b> (4 enrolled)" in welcome
    assert "event → sent p50 <b>1m 00s</b>, p95 <b>2m 00s</b> (4 sent)" in welcome
    assert 'class="backlog">3 events waiting for a run, the oldest for 1m 1' in welcome
    with empty_crm.begin() as conn:
        conn.execute(schema.event_watch.update().values(oldest_waiting=now - timedelta(minutes=9)))
    welcome = _panel(html.unescape(campaigns_page(empty_crm)), "welcome")
    assert 'class="backlog bad">3 events waiting for a run, the oldest for 9m 0' in welcome
    assert '<td>Trigger</td><td class="trigger">schedule 0 9 * * * (UTC)</td>' in renewal
    assert "cart_abandoned, quote_sent events are taken by the scheduled runs" in cart
    assert "Backlog" not in cart
