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
