"""Property-based: for one as-of, the messages that go out do not depend on the order the programs
run in. A program of higher priority takes the last slots of a cap whether it runs before or after
the others, and only with messages it would actually send (its holdout, suppressions, consent,
lists and fallbacks have their say), so the lower-priority programs never lose a slot to a message
that never goes.

Hypothesis draws a small CRM (leads for alpha/beta, trials for texts and guide, customers for promo
and guide): consents, open tickets, deals in negotiation, purchases, opt-outs, messages already
sent this week and the promo holdout. Every program runs once the day before, in priority order,
so later steps and fallbacks are due; then all of them run for the as-of in several orders, each on
its own copy of the database, through the pipeline's stages up to capping: what is ``ready``
then is what goes out.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, text

from lifecycle.config import Program
from lifecycle.engine import pipeline
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate
from lifecycle.model.ledger import SuppressionReason
from tests.conftest import AS_OF
from tests.support.crm_builder import CrmBuilder
from tests.support.journey import earlier_messages

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("test_config")]
M = schema.messages
PROGRAMS = ("beta", "texts", "promo", "guide", "alpha")  # by priority, highest first
DAY_BEFORE = AS_OF - timedelta(days=1)
STAGES = ("lead", "trial", "customer")
# Each example runs 20 program runs: shrinking a failure is worth a few minutes, not unbounded ones.
PHASES = [Phase.explicit, Phase.generate, Phase.target, Phase.shrink, Phase.explain]

contacts = st.lists(
    st.fixed_dictionaries(
        {
            "stage": st.sampled_from(STAGES),
            "new": st.booleans(),
            "email": st.sampled_from(["granted", "granted", "withdrawn", None]),
            "sms": st.sampled_from(["granted", "granted", "withdrawn", None]),
            "unsubscribed": st.sampled_from([None, None, "email", "sms"]),
            "ticket": st.booleans(),
            "negotiation": st.booleans(),
            "purchase": st.booleans(),
            "emails_sent": st.integers(0, 3),
            "sms_sent": st.integers(0, 2),
        }
    ),
    min_size=2,
    max_size=5,
)


@pytest.fixture
def workdir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="priority-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _build(url: str, drawn: list[dict], *, new: bool) -> None:
    """The drawn contacts that are ``new`` (or not): a new contact enters the CRM after the
    day-before run, so the programs meet it first at the as-of. Tickets and purchases are news."""
    engine = get_engine(url)
    if not new:
        schema.crm_metadata.create_all(engine)
        migrate(engine)
    crm = CrmBuilder(engine, DAY_BEFORE)
    news = AS_OF - timedelta(hours=12)  # after the day-before run, before the as-of
    earlier = []
    for n, c in enumerate(drawn):
        cid = f"c{n}"
        if c["new"] == new:
            consent = {ch: c[ch] for ch in ("email", "sms") if c[ch] is not None}
            crm.contact(cid, consent=consent, lifecycle_stage=c["stage"], phone=f"+14155550{n:03d}", account_id=f"a{n}")
            if c["unsubscribed"]:
                listed = {"contact_id": cid, "channel": c["unsubscribed"], "reason": SuppressionReason.UNSUBSCRIBED}
                with engine.begin() as conn:
                    conn.execute(insert(schema.suppressions), [listed | {"source": "test", "created_at": DAY_BEFORE}])
            earlier += earlier_messages(cid, "email", c["emails_sent"], first_day=2) + earlier_messages(
                cid, "sms", c["sms_sent"], first_day=2
            )
            if c["negotiation"]:
                crm.row(
                    "opportunities", opportunity_id=f"op{n}", contact_id=cid, account_id=f"a{n}", stage="negotiation"
                )
        if new and c["ticket"]:
            crm.row("tickets", ticket_id=f"tk{n}", contact_id=cid, status="open", opened_at=news)
        if new and c["purchase"]:
            crm.event(cid, "purchase", news, order_id=f"o{n}", amount=10.0)
    if earlier:
        with engine.begin() as conn:
            conn.execute(insert(M), earlier)


def _run_all(url: str, programs: dict[str, Program], order: tuple[str, ...], as_of: datetime) -> None:
    engine = get_engine(url)
    base, _all = pipeline.load_scope("alpha", "x", as_of)
    for program_id in order:
        scope = replace(base, program=programs[program_id], run_id=f"{program_id}__{as_of.isoformat()}")
        # The stages that decide; what is ``ready`` after capping is what goes out (and holds its slot).
        pipeline.evaluate(engine, scope)
        pipeline.enroll_and_exit(engine, scope)
        pipeline.plan(engine, scope)
        pipeline.suppress(engine, scope)
        pipeline.cap(engine, scope, programs)


def _outcome(url: str) -> set[tuple]:
    with get_engine(url).connect() as conn:
        rows = conn.execute(
            select(M.c.program, M.c.contact_id, M.c.step, M.c.channel, M.c.status, M.c.reason).where(
                M.c.due_at == AS_OF, M.c.program != "earlier"
            )
        )
        return {tuple(r) for r in rows}


@settings(max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck), phases=PHASES)
@given(
    drawn=contacts,
    promo_holdout=st.sampled_from([0, 50]),
    drawn_order=st.permutations(PROGRAMS),
)
def test_the_messages_sent_do_not_depend_on_the_run_order(workdir, drawn, promo_holdout, drawn_order):
    example = Path(tempfile.mkdtemp(dir=workdir))
    _base, loaded = pipeline.load_scope("alpha", "x", AS_OF)
    programs = dict(loaded)
    programs["promo"] = programs["promo"].model_copy(update={"holdout_percent": promo_holdout})
    start = f"sqlite:///{example / 'start.db'}"
    _build(start, drawn, new=False)
    _run_all(start, programs, PROGRAMS, DAY_BEFORE)
    _build(start, drawn, new=True)
    outcomes = {}
    for n, order in enumerate([PROGRAMS, tuple(reversed(PROGRAMS)), tuple(drawn_order)]):
        copy = example / f"order{n}.db"
        with get_engine(start).connect() as conn:
            conn.execute(text(f"VACUUM INTO '{copy}'"))
        url = f"sqlite:///{copy}"
        _run_all(url, programs, order, AS_OF)
        outcomes[order] = _outcome(url)
        get_engine(url).dispose()
    get_engine(start).dispose()
    expected = outcomes[PROGRAMS]
    for order, got in outcomes.items():
        assert got == expected, f"run order {order}: {sorted(got ^ expected)}"
