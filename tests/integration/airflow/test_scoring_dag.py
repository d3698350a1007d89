"""The lifecycle_scoring DAG through real Airflow on the seeded demo CRM: it records each model with
its validation figures and writes every eligible contact's published scores, as of the run."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from lifecycle.devtools import seed
from lifecycle.engine import scoring
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate
from tests.conftest import AS_OF
from tests.support.dagrun import dag_run

pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("airflow_db", "test_config")]
M, S = schema.score_models, schema.scores


def test_scoring_dag_records_models_and_writes_scores(db_url, monkeypatch):
    seed.seed_crm(db_url, 3_000, AS_OF)
    engine = get_engine(db_url)
    migrate(engine)
    run = dag_run(monkeypatch, db_url, "lifecycle_scoring", AS_OF)
    assert str(run.state) == "success"
    tasks = {ti.task_id: ti for ti in run.get_task_instances()}
    assert set(tasks) == {"sync_source", *(f"score_{name}" for name in scoring.SCORE_NAMES)}
    with engine.connect() as conn:
        models = {row.score: row for row in conn.execute(select(M))}
        eligible = conn.execute(
            select(func.count())
            .select_from(schema.contacts)
            .where(
                schema.contacts.c.created_at <= AS_OF,
                schema.contacts.c.churned_at.is_(None) | (schema.contacts.c.churned_at > AS_OF),
            )
        ).scalar_one()
        written = dict(conn.execute(select(S.c.score, func.count()).group_by(S.c.score)).all())
        stamps = set(conn.execute(select(S.c.model_version, S.c.as_of).distinct()).all())
    assert set(models) == set(scoring.SCORE_NAMES)
    for name, model in models.items():
        assert model.as_of == AS_OF and model.published, (name, model.reason)
        assert model.auc > model.baseline_auc, name
        assert model.brier is not None and len(model.calibration) == scoring.BANDS
        assert model.n_train > 0 and model.n_valid > 0 and model.algorithm == scoring.ALGORITHM
        assert written[name] == eligible
    assert stamps == {(scoring.model_version(AS_OF, 0), AS_OF)}
    # A second run as of the same time replaces the same rows: nothing doubles.
    assert str(dag_run(monkeypatch, db_url, "lifecycle_scoring", AS_OF).state) == "success"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(M)).scalar_one() == len(scoring.SCORE_NAMES)
        assert conn.execute(select(func.count()).select_from(S)).scalar_one() == eligible * len(scoring.SCORE_NAMES)
