"""Dry runs (engine/rehearsal.py): the whole run at an as-of time, rolled back, with what it would
send and every template failure."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import select

from lifecycle.engine import pipeline
from lifecycle.engine.rehearsal import rehearse
from lifecycle.model import schema
from tests.conftest import AS_OF, FIXTURES

pytestmark = pytest.mark.usefixtures("test_config")
TABLES = (schema.messages, schema.enrollments, schema.kpis, schema.audience, schema.campaign_figures)


def _tables(engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))] for t in TABLES}


@pytest.fixture
def dividing_template(test_config, tmp_path, monkeypatch):
    """alpha's email divides by the contact's MRR: it fails for a contact whose MRR is 0."""
    templates = tmp_path / "templates"
    shutil.copytree(FIXTURES / "templates", templates)
    (templates / "simple" / "hello.html.j2").write_text("<p>{{ 100 / contact.mrr }}</p>")
    monkeypatch.setenv("LIFECYCLE_TEMPLATES_DIR", str(templates))


@pytest.mark.usefixtures("dividing_template")
def test_a_dry_run_reports_template_failures_by_message_and_contact_and_keeps_nothing(crm):
    engine, crm_rows = crm
    good = [crm_rows.contact(mrr=10.0) for _ in range(2)]
    broken = crm_rows.contact(mrr=0.0)
    before = _tables(engine)
    scope, programs = pipeline.load_scope("alpha", "dry__1", AS_OF)

    report = rehearse(engine, scope, programs)

    assert _tables(engine) == before
    assert report.funnel()["would_send"] == {"email": len(good)}
    assert report.funnel()["would_fail"] == {"email": 1}
    [failure] = report.failures
    assert failure.contact_id == broken and failure.step == "hello"
    assert "ZeroDivisionError" in failure.error and "simple/hello.html.j2" in failure.error
    assert "would fail" in report.table() and f"contact {broken}" in report.table()


@pytest.mark.usefixtures("dividing_template")
def test_a_dry_run_renders_up_to_its_bound_and_says_so(crm):
    engine, crm_rows = crm
    for _ in range(3):
        crm_rows.contact(mrr=10.0)
    scope, programs = pipeline.load_scope("alpha", "dry__1", AS_OF)

    bounded = rehearse(engine, scope, programs, bound=2)
    unrendered = rehearse(engine, scope, programs, render=False)

    assert (bounded.rendered, bounded.not_rendered) == (2, 1)
    assert "Rendered the first 2 messages; 1 more were not rendered." in bounded.table()
    assert bounded.funnel()["would_send"] == unrendered.funnel()["would_send"] == {"email": 3}
    assert unrendered.rendered == 0 and bounded.summary()["render_failures"] == []
