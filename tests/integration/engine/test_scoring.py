"""Predictive scores on the seeded demo CRM: the models beat their baseline on a later window and
publish; a label the features cannot explain is refused; nothing after the as-of time is read;
the same CRM and seed give the same scores."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import delete, func, insert, select, update

from lifecycle.devtools import seed
from lifecycle.engine import scoring
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate
from tests.conftest import AS_OF

M, S = schema.score_models, schema.scores


@pytest.fixture
def seeded(sqlite_url):
    """A 3,000-contact synthetic CRM with the engine tables."""
    seed.seed_crm(sqlite_url, 3_000, AS_OF)
    engine = get_engine(sqlite_url)
    migrate(engine)
    return engine


def _scores(engine) -> dict[tuple[str, str], tuple]:
    with engine.connect() as conn:
        rows = conn.execute(select(S.c.contact_id, S.c.score, S.c.value, S.c.decile, S.c.model_version, S.c.as_of))
        return {(r.contact_id, r.score): tuple(r)[2:] for r in rows}


def test_models_beat_the_baseline_and_publish(seeded):
    with seeded.begin() as conn:
        reports = scoring.run_scoring(conn, AS_OF)
    assert [r.score for r in reports] == list(scoring.SCORE_NAMES)
    with seeded.connect() as conn:
        eligible = conn.execute(
            select(func.count())
            .select_from(schema.contacts)
            .where(
                schema.contacts.c.created_at <= AS_OF,
                (schema.contacts.c.churned_at.is_(None)) | (schema.contacts.c.churned_at > AS_OF),
            )
        ).scalar_one()
        models = {r.score: r for r in conn.execute(select(M))}
    for report in reports:
        assert report.published, report.reason
        assert report.auc is not None and report.baseline_auc is not None and report.brier is not None
        assert report.auc > report.baseline_auc + 0.05, report
        assert 0 < report.brier < 0.25
        assert report.positives_valid >= scoring.MIN_POSITIVES
        assert report.scored == eligible
        row = models[report.score]
        assert row.published and row.reason is None
        assert (row.auc, row.baseline_auc, row.brier) == (report.auc, report.baseline_auc, report.brier)
        assert row.n_train == report.n_train and row.n_valid == report.n_valid
        assert row.features == list(report.features) and row.as_of == AS_OF
        bands = row.calibration
        assert [b["band"] for b in bands] == list(range(1, 11))
        assert sum(b["n"] for b in bands) == report.n_valid
        observed = sum(b["observed"] * b["n"] for b in bands)
        assert observed == pytest.approx(report.positives_valid, abs=0.1)  # rates rounded to 4 places
        # calibrated enough: the top band's observed rate is far above the bottom band's
        assert bands[-1]["observed"] > bands[0]["observed"] + 0.1
    scores = _scores(seeded)
    for name in scoring.SCORE_NAMES:
        mine = [v for (_, score), v in scores.items() if score == name]
        assert len(mine) == eligible
        assert {decile for _, decile, _, _ in mine} == set(range(1, 11))
        assert all(0.0 <= value <= 1.0 for value, *_ in mine)
        assert {(version, as_of) for _, _, version, as_of in mine} == {(scoring.model_version(AS_OF, 0), AS_OF)}


def test_the_outcome_raises_with_the_score(seeded):
    """On the validation window, the contacts in the top decile churn (buy) far more than the rest."""
    with seeded.begin() as conn:
        scoring.run_scoring(conn, AS_OF - scoring.HORIZON, names=["purchase_propensity"])
        buyers = scoring.label_ids(conn, "purchase_propensity", AS_OF - scoring.HORIZON, AS_OF)
    scores = _scores(seeded)
    top = [cid for (cid, _), (_, decile, _, _) in scores.items() if decile == 10]
    rest = [cid for (cid, _), (_, decile, _, _) in scores.items() if decile <= 5]
    top_rate = np.mean([cid in buyers for cid in top])
    rest_rate = np.mean([cid in buyers for cid in rest])
    assert top_rate > 5 * max(rest_rate, 0.01), (top_rate, rest_rate)


def test_same_crm_and_seed_give_the_same_scores(seeded):
    with seeded.begin() as conn:
        first = scoring.run_scoring(conn, AS_OF)
    before = _scores(seeded)
    with seeded.begin() as conn:
        again = scoring.run_scoring(conn, AS_OF)
    assert again == first
    assert _scores(seeded) == before
    with seeded.connect() as conn:
        assert conn.execute(select(func.count()).select_from(M)).scalar_one() == len(scoring.SCORE_NAMES)


def test_a_random_label_is_refused_and_the_last_scores_stay(seeded):
    with seeded.begin() as conn:
        scoring.run_scoring(conn, AS_OF, names=["purchase_propensity"])
    published = _scores(seeded)
    # Purchases in the two label windows go to contacts drawn at random: nothing before explains them.
    start = AS_OF - 2 * scoring.HORIZON
    e = schema.events
    rng = np.random.default_rng(3)
    with seeded.begin() as conn:
        conn.execute(delete(e).where(e.c.event_type == "purchase", e.c.occurred_at > start))
        ids = [r[0] for r in conn.execute(select(schema.contacts.c.contact_id).order_by(schema.contacts.c.contact_id))]
        rows = []
        for n, contact_id in enumerate(rng.choice(ids, size=500, replace=False)):
            at = start + timedelta(seconds=int(rng.integers(1, int(2 * scoring.HORIZON.total_seconds()))))
            rows.append(
                {"event_id": f"rand{n}", "contact_id": str(contact_id), "event_type": "purchase", "occurred_at": at}
            )
        conn.execute(insert(e), rows)
        (report,) = scoring.run_scoring(conn, AS_OF + timedelta(hours=1), names=["purchase_propensity"])
    assert not report.published
    assert report.reason is not None and "not reliably better than chance" in report.reason, report.reason
    assert report.scored == 0
    with seeded.connect() as conn:
        row = conn.execute(select(M).where(M.c.model_version == report.model_version)).one()
    assert not row.published and row.reason == report.reason and row.auc == report.auc
    assert _scores(seeded) == published  # a refused model leaves the last published scores


def test_too_few_outcomes_is_refused_in_words(seeded):
    with seeded.begin() as conn:
        conn.execute(update(schema.contacts).values(churned_at=None))
        (report,) = scoring.run_scoring(conn, AS_OF, names=["churn_risk"])
    assert not report.published and report.auc is None
    assert report.reason is not None
    assert "training window" in report.reason and "0 of" in report.reason and "churn" in report.reason


def test_features_read_nothing_after_their_as_of(seeded):
    """Rows dated after the as-of time (events, tickets, opportunities, a churn) change no feature."""
    at = AS_OF - scoring.HORIZON
    with seeded.connect() as conn:
        before = scoring.feature_frame(conn, at)
    later = at + timedelta(hours=1)
    some = list(before["contact_id"][:50])
    with seeded.begin() as conn:
        conn.execute(
            insert(schema.events),
            [
                {
                    "event_id": f"late{n}_{kind}",
                    "contact_id": cid,
                    "event_type": kind,
                    "occurred_at": later,
                    "properties": {"amount": 99.0, "feature": "late"},
                }
                for n, cid in enumerate(some)
                for kind in ("purchase", "feature_used", "cart_abandoned", "activated", "milestone_completed")
            ],
        )
        conn.execute(
            insert(schema.tickets),
            [
                {"ticket_id": f"late{n}", "contact_id": cid, "status": "open", "opened_at": later}
                for n, cid in enumerate(some)
            ],
        )
        conn.execute(
            insert(schema.opportunities),
            [
                {
                    "opportunity_id": f"late{n}",
                    "contact_id": cid,
                    "stage": "closed_won",
                    "amount": 5e4,
                    "updated_at": later,
                }
                for n, cid in enumerate(some)
            ],
        )
        c = schema.contacts
        conn.execute(update(c).where(c.c.contact_id.in_(some[25:])).values(churned_at=later, lifecycle_stage="churned"))
        after = scoring.feature_frame(conn, at)
    assert after.equals(before)
    with seeded.connect() as conn:
        moved = scoring.feature_frame(conn, later)
    assert some[25] not in set(moved["contact_id"])  # churned by then: not scored
    assert not moved.set_index("contact_id").loc[some[0]].equals(before.set_index("contact_id").loc[some[0]])


def test_an_unknown_score_is_named():
    with pytest.raises(ValueError, match=r"unknown score 'clv': the scores are churn_risk, purchase_propensity"):
        scoring.run_scoring(None, AS_OF, names=["clv"])  # type: ignore[arg-type]


def test_the_score_command_prints_the_figures(seeded, capsys):
    from lifecycle.devtools.cli import main

    url = seeded.url.render_as_string(hide_password=False)
    assert main(["score", "--url", url, "--as-of", AS_OF.isoformat(), "--score", "purchase_propensity"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:6] == ["score", "train", "pos", "valid", "pos", "AUC"]
    (row,) = lines[1:]
    with seeded.connect() as conn:
        model = conn.execute(select(M)).one()
    assert row.startswith("purchase_propensity") and row.endswith("yes")
    assert f"{model.auc:.3f}" in row and f"{model.baseline_auc:.3f}" in row


def test_an_empty_crm_is_refused_in_words(sqlite_url):
    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    with engine.begin() as conn:
        reports = scoring.run_scoring(conn, AS_OF)
    for report in reports:
        assert not report.published and report.n_train == 0 and report.scored == 0
        assert report.reason is not None and "has 0 of 0 contacts" in report.reason
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(M)).scalar_one() == len(scoring.SCORE_NAMES)
        assert conn.execute(select(func.count()).select_from(S)).scalar_one() == 0


def test_a_program_enters_the_top_decile_of_churn_risk(seeded, tmp_path, monkeypatch, test_config):
    """A real program run whose entry segment is a score condition takes exactly the contacts whose
    published score meets it: none without a score, none below."""
    import shutil

    from tests.support.journey import enrollments, run_program

    cfg = tmp_path / "config"
    shutil.copytree(test_config, cfg)
    (cfg / "programs" / "save.yml").write_text(
        "name: Save the risky\n"
        "owner: tests\n"
        "priority: 50\n"
        "schedule: null\n"
        "audience:\n"
        "  segment: {all: [{score: churn_risk, decile_gte: 10}, {score: churn_risk, gte: 0.05}]}\n"
        "steps:\n"
        "  - {id: hello, channel: email, template: simple/hello}\n"
        "holdout_percent: 0\n"
        "kpi:\n"
        "  primary: conversion\n"
        "  label: Conversion\n"
        "  conversion: {event: purchase, since: enrollment}\n"
    )
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(cfg))
    with seeded.begin() as conn:
        scoring.run_scoring(conn, AS_OF, names=["churn_risk"])
    with seeded.connect() as conn:
        expected = set(
            conn.execute(
                select(S.c.contact_id).where(S.c.score == "churn_risk", S.c.decile >= 10, S.c.value >= 0.05)
            ).scalars()
        )
        audience = set(
            conn.execute(select(schema.audience.c.contact_id).where(schema.audience.c.program == "save")).scalars()
        )
    assert audience == set()
    run_program(seeded, "save", AS_OF)
    with seeded.connect() as conn:
        audience = set(
            conn.execute(select(schema.audience.c.contact_id).where(schema.audience.c.program == "save")).scalars()
        )
    assert 0 < len(expected) < 300 and audience == expected
    enrolled = {e["contact_id"] for e in enrollments(seeded, "save")}
    assert enrolled and enrolled <= expected
