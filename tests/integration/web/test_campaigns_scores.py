"""The Campaigns page shows each predictive score's newest model (validation AUC against the
baseline's, Brier score, calibration by band, published or why not) and the published scores'
distribution, as the scoring run recorded them."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import func, select, update

from lifecycle.devtools import seed
from lifecycle.engine import scoring
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate
from lifecycle.web.campaigns import campaigns_page
from tests.conftest import AS_OF


@pytest.fixture
def seeded(db_url, shipped_config):
    seed.seed_crm(db_url, 3_000, AS_OF)
    engine = get_engine(db_url)
    migrate(engine)
    return engine


def _section(page: str, name: str) -> str:
    match = re.search(rf'<section class="score" data-score="{name}">(.*?)</section>', page, re.S)
    assert match, f"no section for {name}"
    return match.group(1)


def test_no_scores_section_before_the_first_training(seeded):
    assert 'id="scores"' not in campaigns_page(seeded)


def test_the_page_shows_each_models_figures_and_the_distribution(seeded):
    with seeded.begin() as conn:
        reports = {r.score: r for r in scoring.run_scoring(conn, AS_OF)}
        conn.execute(update(schema.contacts).values(churned_at=None))  # no churn left to learn from
        (refused,) = scoring.run_scoring(conn, AS_OF.replace(hour=16), names=["churn_risk"])
    page = html.unescape(campaigns_page(seeded))
    assert 'id="scores"' in page
    with seeded.connect() as conn:
        per_decile = dict(
            conn.execute(
                select(schema.scores.c.decile, func.count())
                .where(schema.scores.c.score == "purchase_propensity")
                .group_by(schema.scores.c.decile)
            ).all()
        )

    buy = _section(page, "purchase_propensity")
    report = reports["purchase_propensity"]
    assert f'<b data-figure="auc">{report.auc:.3f}</b>' in buy
    assert f'<b data-figure="baseline_auc">{report.baseline_auc:.3f}</b>' in buy
    assert f'<b data-figure="brier">{report.brier:.4f}</b>' in buy
    assert 'data-figure="published">published<' in buy
    top = report.calibration[-1]
    assert f'data-band="10" data-kind="observed">{top["observed"]:.1%}<' in buy
    assert f'data-band="10" data-kind="predicted">{top["predicted"]:.1%}<' in buy
    for decile, n in per_decile.items():
        assert f'<td class="num" data-decile="{decile}">{n}</td>' in buy
    assert f"{report.scored} contacts scored by <code>{report.model_version}</code>" in buy
    bands = [int(n) for n in re.findall(r'<td class="num" data-band="\d+–\d+%">(\d+)</td>', buy)]
    assert len(bands) == 10 and sum(bands) == report.scored

    churn = _section(page, "churn_risk")
    assert not refused.published and refused.reason
    assert f"<code>{refused.model_version}</code>" in churn  # the newest model is the refused one
    assert 'data-figure="published">not published<' in churn
    assert f'<span class="why" data-figure="reason">{refused.reason}</span>' in churn
    # ...and the scores contacts carry are still the last published model's.
    assert f"contacts scored by <code>{reports['churn_risk'].model_version}</code>" in churn
