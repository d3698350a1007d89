"""Next-best-action (policy ``decision.mode: next_best_action``) decides the same whatever order
the programs run in, and never lets marketing out-bid a service message.

Hypothesis draws the small CRM of the priority property test, plus what next-best-action reads:
each program's past treatment and holdout enrollments per score band with their conversions (some
programs with too little evidence), each contact's published churn-risk decile (or none), and the
evidence threshold. Every program runs the day before in priority order, then all of them run for
the as-of in several orders, each on its own copy of the database, up to capping: the messages
``ready`` then, and the reasons of those capped (which name the expected values), must be the same.
"""

from __future__ import annotations

import html
import tempfile
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, text

from lifecycle.config import Decision, Policy, Program
from lifecycle.engine import pipeline
from lifecycle.model import schema
from lifecycle.model.db import get_engine
from lifecycle.model.ledger import EnrollmentState, Status
from lifecycle.web.campaigns import contact_page
from tests.conftest import AS_OF
from tests.integration.engine.test_priority_properties import (
    DAY_BEFORE,
    PHASES,
    PROGRAMS,
    _build,
    _outcome,
    contacts,
    workdir,  # noqa: F401 (a fixture)
)
from tests.support.journey import earlier_messages, messages, messages_already_sent, run_program
from tests.support.service import SERVICE, service_config

pytestmark = [pytest.mark.usefixtures("test_config")]
BANDS = 2
PER_GROUP = 20  # past enrollments per group and band of a program with evidence

# Per program: None (no past enrollments), "thin" (a few), or the treatment conversions per band
# (out of PER_GROUP; the holdout converts 5 of PER_GROUP in each band).
history = st.fixed_dictionaries(
    {
        pid: st.one_of(st.none(), st.just("thin"), st.tuples(*[st.integers(0, PER_GROUP) for _ in range(BANDS)]))
        for pid in PROGRAMS
    }
)


def _nba_policy(policy: Policy, min_evidence: int) -> Policy:
    decision = Decision(mode="next_best_action", bands=BANDS, min_evidence=min_evidence, value={"promo": 2.0})
    return policy.model_copy(update={"decision": decision})


_ids = iter(range(1_000_000, 10_000_000))


def _past_group(program: str, group: str, n: int, conversions: int, decile: int | None, rows: dict) -> None:
    """``n`` past enrollments of made-up contacts in ``group`` of ``program`` (each treatment one
    messaged), ``conversions`` of them with a purchase, and their scores (``decile``, or none)."""
    enrolled = DAY_BEFORE - timedelta(days=20)
    for k in range(n):
        eid = next(_ids)
        cid = f"past-{eid}"
        rows[schema.enrollments].append(
            {"enrollment_id": eid, "program": program, "contact_id": cid, "entry": 1}
            | {"state": EnrollmentState.COMPLETED, "enrolled_at": enrolled, "next_step": 99, "group": group}
        )
        if group == "treatment":
            message = earlier_messages(cid, count=1)[0] | {"idempotency_key": f"past:{eid}", "program": program}
            rows[schema.messages].append(message | {"enrollment_id": eid, "planned_at": enrolled, "due_at": enrolled})
        if k < conversions:
            rows[schema.events].append(
                {"event_id": f"e-{eid}", "contact_id": cid, "event_type": "purchase"}
                | {"occurred_at": enrolled + timedelta(days=2), "properties": {"amount": 10.0}}
            )
        if decile is not None:
            rows[schema.scores].append(_score(cid, decile))


def _score(contact_id: str, decile: int) -> dict:
    return {"contact_id": contact_id, "score": "churn_risk", "value": decile / 10, "decile": decile} | {
        "model_version": "t",
        "as_of": DAY_BEFORE,
    }


def _insert(engine, rows: dict) -> None:
    with engine.begin() as conn:
        for table, values in rows.items():
            if values:
                conn.execute(insert(table), values)


def _past(url: str, drawn_history: dict, deciles: list[int | None]) -> None:
    """Past enrollments of made-up contacts (with their messages, purchases and scores) and the
    drawn contacts' scores, all before the as-of."""
    rows: dict = {schema.enrollments: [], schema.messages: [], schema.events: [], schema.scores: []}
    rows[schema.scores] += [_score(f"c{n}", d) for n, d in enumerate(deciles) if d is not None]
    for pid, drawn in drawn_history.items():
        if drawn is None:
            continue
        per_band = [(1, 0, 1)] * BANDS if drawn == "thin" else [(PER_GROUP, conv, 5) for conv in drawn]
        for band, (n, treated_conversions, held_conversions) in enumerate(per_band, start=1):
            decile = band * 10 // BANDS
            _past_group(pid, "treatment", n, treated_conversions, decile, rows)
            _past_group(pid, "holdout", n, held_conversions, decile, rows)
    _insert(get_engine(url), rows)


def _run_all(url: str, programs: dict[str, Program], policy: Policy, order: tuple[str, ...], as_of: datetime) -> None:
    engine = get_engine(url)
    base, _all = pipeline.load_scope("alpha", "x", as_of)
    for program_id in order:
        scope = replace(base, program=programs[program_id], policy=policy, run_id=f"{program_id}__{as_of.isoformat()}")
        pipeline.evaluate(engine, scope)
        pipeline.enroll_and_exit(engine, scope)
        pipeline.plan(engine, scope)
        pipeline.suppress(engine, scope)
        pipeline.cap(engine, scope, programs)


@pytest.mark.slow
@settings(max_examples=6, deadline=None, database=None, suppress_health_check=list(HealthCheck), phases=PHASES)
@given(
    drawn=contacts,
    drawn_history=history,
    deciles=st.lists(st.one_of(st.none(), st.integers(1, 10)), min_size=5, max_size=5),
    min_evidence=st.sampled_from([10, 1000]),
    drawn_order=st.permutations(PROGRAMS),
)
def test_the_next_best_action_winners_do_not_depend_on_the_run_order(
    workdir,  # noqa: F811
    drawn,
    drawn_history,
    deciles,
    min_evidence,
    drawn_order,
):
    example = Path(tempfile.mkdtemp(dir=workdir))
    base, loaded = pipeline.load_scope("alpha", "x", AS_OF)
    programs = dict(loaded)
    policy = _nba_policy(base.policy, min_evidence)
    start = f"sqlite:///{example / 'start.db'}"
    _build(start, drawn, new=False)
    _past(start, drawn_history, deciles)
    _run_all(start, programs, policy, PROGRAMS, DAY_BEFORE)
    _build(start, drawn, new=True)
    outcomes = {}
    for n, order in enumerate([PROGRAMS, tuple(reversed(PROGRAMS)), tuple(drawn_order)]):
        copy = example / f"order{n}.db"
        with get_engine(start).connect() as conn:
            conn.execute(text(f"VACUUM INTO '{copy}'"))
        url = f"sqlite:///{copy}"
        _run_all(url, programs, policy, order, AS_OF)
        outcomes[order] = _outcome(url)
        get_engine(url).dispose()
    get_engine(start).dispose()
    expected = outcomes[PROGRAMS]
    for order, got in outcomes.items():
        assert got == expected, f"run order {order}: {sorted(got ^ expected)}"


def _lead(c, engine, already_sent: int) -> str:
    """A lead with marketing and transactional email consent, ``already_sent`` marketing emails this week."""
    cid = c.contact()
    c.consent(cid, "email", "granted", purpose="transactional")
    messages_already_sent(engine, cid, count=already_sent)
    return cid


def _evidence(engine, program: str, treated: int, held: int, n: int = 50) -> None:
    """``n`` past treatment and ``n`` holdout enrollments of ``program``, ``treated`` and ``held`` of them converted."""
    rows: dict = {schema.enrollments: [], schema.messages: [], schema.events: [], schema.scores: []}
    _past_group(program, "treatment", n, treated, None, rows)
    _past_group(program, "holdout", n, held, None, rows)
    _insert(engine, rows)


@pytest.mark.parametrize("order", [("alpha", "beta"), ("beta", "alpha")])
def test_a_lower_priority_program_with_the_higher_expected_value_takes_the_last_slot(crm, tmp_path, monkeypatch, order):
    service_config(tmp_path, monkeypatch, decision={"mode": "next_best_action", "min_evidence": 20})
    engine, c = crm
    contested = _lead(c, engine, already_sent=2)  # one email slot left
    _evidence(engine, "alpha", treated=30, held=5)  # +50 points
    _evidence(engine, "beta", treated=10, held=5)  # +10 points
    for program in order:
        run_program(engine, program, AS_OF)
    alpha = {m["contact_id"]: (m["status"], m["reason"]) for m in messages(engine, "alpha")}
    beta = {m["contact_id"]: (m["status"], m["reason"]) for m in messages(engine, "beta")}
    assert alpha[contested] == (Status.DRY_RUN, None)
    status, reason = beta[contested]
    assert status == Status.CAPPED
    assert reason == "frequency_cap_email: 3 per 7d; next-best-action: alpha (EV 0.5) over beta (EV 0.1), unscored"
    # The funnel counts it under its cap, without the detail.
    with engine.connect() as conn:
        capped = conn.execute(
            select(schema.kpis.c.dimension, schema.kpis.c.value).where(
                schema.kpis.c.program == "beta", schema.kpis.c.metric == Status.CAPPED
            )
        ).all()
    assert [(dimension, int(value)) for dimension, value in capped] == [("frequency_cap_email: 3 per 7d", 1)]
    # The operator's contact lookup shows why (the page's templates are the shipped ones).
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR")
    page = html.unescape(contact_page(engine, contested))
    assert "next-best-action: alpha (EV 0.5) over beta (EV 0.1), unscored" in page


@pytest.mark.parametrize("order", [(SERVICE, "alpha"), ("alpha", SERVICE)])
def test_a_service_message_is_never_out_bid(crm, tmp_path, monkeypatch, order):
    # The service program ranks below the marketing one, the contact's marketing slots are full,
    # and the marketing program's evidence is overwhelming: the notice still goes, alpha does not.
    service_config(
        tmp_path,
        monkeypatch,
        decision={"mode": "next_best_action", "min_evidence": 20, "value": {"alpha": 1000.0}},
        service_caps={"email": {"max": 1, "per": "7d"}},
    )
    notices = tmp_path / "service-config" / "programs" / f"{SERVICE}.yml"
    notices.write_text(notices.read_text().replace("priority: 95", "priority: 1"))
    engine, c = crm
    contested = _lead(c, engine, already_sent=3)
    _evidence(engine, "alpha", treated=40, held=0)
    for program in order:
        run_program(engine, program, AS_OF)
    with engine.connect() as conn:
        got = dict(
            conn.execute(
                select(schema.messages.c.program, schema.messages.c.status).where(
                    schema.messages.c.contact_id == contested, schema.messages.c.program.in_([SERVICE, "alpha"])
                )
            ).all()
        )
    assert got == {SERVICE: Status.DRY_RUN, "alpha": Status.CAPPED}
