"""The due-steps sweep: a step goes out at the first sweep after its due time (not at the program's
next run, and never before), quiet hours and caps hold in a sweep, and sweeps interleaved with the
program's runs, in any order, never send a step twice."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from lifecycle.channels.base import ClaimCheck, Outbound, SendResult
from lifecycle.channels.simulated import SimulatedTransport
from lifecycle.engine import pipeline
from lifecycle.engine.scope import sweep_run_id
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate
from lifecycle.model.ledger import WENT_OUT, CapReason, ExitReason, Status
from tests.conftest import AS_OF
from tests.support.crm_builder import CrmBuilder
from tests.support.journey import earlier_messages, messages, run_program, run_sweep, treatment_contact

M = schema.messages
MINUTES = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SWEEP = 5 * MINUTES
GONE = {*WENT_OUT, Status.DRY_RUN}


def _sent(engine, program_id: str) -> list[tuple[str, str, datetime]]:
    """(contact, step, as-of of the run that planned it) of the program's messages that went out."""
    return [(m["contact_id"], m["step"], m["planned_at"]) for m in messages(engine, program_id) if m["status"] in GONE]


def test_the_one_hour_cart_reminder_goes_at_the_first_sweep_after_the_hour_not_before(shipped_crm):
    engine, crm = shipped_crm
    cid = treatment_contact(crm, "abandoned_cart")
    abandoned = AS_OF - 28 * MINUTES  # 14:32: the reminder is due at 15:32
    crm.event(cid, "cart_abandoned", abandoned, cart_id="c-1", product="Template Pack", value=87.0)
    run_program(engine, "abandoned_cart", AS_OF)  # enrolls; nothing due yet
    assert messages(engine, "abandoned_cart") == []
    for n in range(1, 7):  # sweeps at 15:05 ... 15:30
        run_sweep(engine, "abandoned_cart", AS_OF + n * SWEEP)
    assert messages(engine, "abandoned_cart") == []
    run_sweep(engine, "abandoned_cart", AS_OF + 7 * SWEEP)  # 15:35, three minutes after it was due
    (reminder,) = messages(engine, "abandoned_cart")
    assert (reminder["step"], reminder["status"], reminder["planned_at"]) == (
        "reminder",
        Status.DRY_RUN,
        AS_OF + 35 * MINUTES,
    )
    assert (
        reminder["run_id"]
        == reminder["send_run_id"]
        == sweep_run_id("abandoned_cart", f"test__{AS_OF + 35 * MINUTES:%Y-%m-%dT%H:%M:%S}")
    )
    # The program's next hourly run (15:30 as of, executing late) and later sweeps add nothing.
    run_program(engine, "abandoned_cart", AS_OF + 30 * MINUTES)
    run_sweep(engine, "abandoned_cart", AS_OF + 40 * MINUTES)
    run_program(engine, "abandoned_cart", AS_OF + 90 * MINUTES)
    assert _sent(engine, "abandoned_cart") == [(cid, "reminder", AS_OF + 35 * MINUTES)]


def test_a_sweep_exits_a_shopper_who_bought_before_the_reminder_was_due(shipped_crm):
    engine, crm = shipped_crm
    cid = treatment_contact(crm, "abandoned_cart")
    crm.event(cid, "cart_abandoned", AS_OF - 28 * MINUTES, cart_id="c-1", product="Template Pack", value=87.0)
    run_program(engine, "abandoned_cart", AS_OF)
    crm.event(cid, "purchase", AS_OF + 20 * MINUTES, order_id="o-1", product="Template Pack", amount=87.0)
    run_sweep(engine, "abandoned_cart", AS_OF + 35 * MINUTES)
    assert messages(engine, "abandoned_cart") == []
    e = schema.enrollments
    with engine.connect() as conn:
        state, reason = conn.execute(select(e.c.state, e.c.exit_reason).where(e.c.contact_id == cid)).one()
    assert (state, reason) == ("exited", "converted")


@pytest.mark.usefixtures("test_config")
def test_quiet_hours_hold_in_a_sweep_and_the_text_goes_at_the_first_sweep_after_them(sqlite_url):
    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    evening = datetime(2026, 11, 16, 20, 50)
    crm = CrmBuilder(engine, evening)
    cid = crm.contact("t1", lifecycle_stage="trial", timezone="UTC")
    run_program(engine, "texts", evening)  # ping goes at once; follow_up is due at 20:50 tomorrow
    assert _sent(engine, "texts") == [(cid, "ping", evening)]
    tomorrow = evening + DAY
    for at in (tomorrow - SWEEP, tomorrow, tomorrow + 15 * MINUTES):
        run_sweep(engine, "texts", at)
    follow_up = messages(engine, "texts")[-1]
    # Planned at the first sweep at its due time (20:50 is not quiet yet: sent)...
    assert (follow_up["step"], follow_up["status"]) == ("follow_up", Status.DRY_RUN)
    # ...while a step due inside the quiet hours waits for their end and goes at the next sweep.
    crm.contact("t2", lifecycle_stage="trial", timezone="UTC")
    night = datetime(2026, 11, 17, 22, 0)
    run_program(engine, "texts", night)
    waiting = messages(engine, "texts")[-1]
    assert (waiting["contact_id"], waiting["status"], waiting["reason"]) == (
        "t2",
        Status.DEFERRED,
        CapReason.QUIET_HOURS,
    )
    run_sweep(engine, "texts", datetime(2026, 11, 18, 7, 55))
    assert messages(engine, "texts")[-1]["status"] == Status.DEFERRED
    run_sweep(engine, "texts", datetime(2026, 11, 18, 8, 0))
    assert messages(engine, "texts")[-1]["status"] == Status.DRY_RUN


@pytest.mark.usefixtures("test_config")
@pytest.mark.parametrize("sweep_first", [True, False], ids=["sweep-then-late-run", "run-then-sweep"])
def test_caps_and_priority_hold_across_a_sweep_and_a_program_run(sqlite_url, sweep_first):
    """A customer has one email this week; promo (priority 40) sends its offer, and its reminder is
    due a day later, the third and last email slot. Guide (priority 30) wants the same customer that
    day, in a run whose as-of is before the sweep's. Whichever goes first, the reminder takes the
    slot and guide's email is capped: a sweep is seen by a run that executes after it, and a run
    reserves the slot for promo's due step before the sweep plans it."""
    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    crm = CrmBuilder(engine, AS_OF)
    cid = crm.contact("c1", lifecycle_stage="customer")
    with engine.begin() as conn:
        conn.execute(insert(M), earlier_messages(cid, "email", 1))
    run_program(engine, "promo", AS_OF)
    next_day = AS_OF + DAY
    steps = [lambda: run_sweep(engine, "promo", next_day + SWEEP), lambda: run_program(engine, "guide", next_day)]
    for step in steps if sweep_first else reversed(steps):
        step()
    assert [s for _c, s, _at in _sent(engine, "promo")] == ["offer", "reminder"]
    (hello,) = messages(engine, "guide")
    assert (hello["status"], hello["reason"]) == (Status.CAPPED, "frequency_cap_email: 3 per 7d")


# --- interleaving, property-based ------------------------------------------------------------


class RecordingTransport(SimulatedTransport):
    """Accepts every message and counts what reached it, by idempotency key."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()

    def send(
        self, channel: str, batch: Sequence[Outbound], still_claimed: ClaimCheck | None = None
    ) -> list[SendResult]:
        self.received.update(m.idempotency_key for m in batch)
        return super().send(channel, batch, still_claimed)


def _links(message_id: int, contact_id: str, channel: str) -> dict[str, str]:
    return {"unsubscribe": f"https://example.invalid/unsubscribe/{message_id}"}


@pytest.fixture
def workdir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="sweeps-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


PROGRAMS = ("promo", "texts", "guide")  # customers and trials, steps at once and a day later
# (is a program run, program, minutes after AS_OF): runs hourly, sweeps every five minutes.
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just(True), st.sampled_from(PROGRAMS), st.integers(0, 30).map(lambda h: h * 60)),
        st.tuples(st.just(False), st.sampled_from(PROGRAMS), st.integers(0, 30 * 12).map(lambda n: n * 5)),
    ),
    min_size=4,
    max_size=14,
)


@settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)
@given(
    stages=st.lists(st.sampled_from(["customer", "trial"]), min_size=1, max_size=4),
    emails_sent=st.integers(0, 3),
    operations=OPERATIONS,
)
@pytest.mark.slow
@pytest.mark.usefixtures("test_config")
def test_sweeps_and_runs_interleaved_in_any_order_never_send_a_step_twice_nor_past_a_cap(
    workdir, stages, emails_sent, operations
):
    url = f"sqlite:///{tempfile.mkdtemp(dir=workdir)}/crm.db"
    engine = get_engine(url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    crm = CrmBuilder(engine, AS_OF)
    for n, stage in enumerate(stages):
        cid = crm.contact(f"c{n}", lifecycle_stage=stage, phone=f"+14155550{n:03d}", timezone="UTC")
        if emails_sent:
            with engine.begin() as conn:
                conn.execute(insert(M), earlier_messages(cid, "email", emails_sent))
    transport = RecordingTransport()
    for is_run, program_id, minutes in operations:  # in the drawn order: as-of times go back and forth
        at = AS_OF + minutes * MINUTES
        run_id = f"test__{at.isoformat()}"
        scope, programs = pipeline.load_scope(program_id, run_id if is_run else sweep_run_id(program_id, run_id), at)
        if is_run:
            pipeline.run_program(engine, scope, programs, transport, links=_links, simulate=True)
        else:
            pipeline.run_sweep(engine, scope, programs, transport, links=_links, simulate=True)
    assert all(n == 1 for n in transport.received.values()), transport.received
    with engine.connect() as conn:
        rows = conn.execute(select(M.c.program, M.c.contact_id, M.c.channel, M.c.due_at, M.c.status)).all()
    gone = [r for r in rows if r.status in GONE]  # the emails sent before AS_OF among them
    assert sum(r.program != "earlier" for r in gone) == sum(transport.received.values())
    # No 7-day window holds more emails than the cap (3) or more messages than the all-channels cap (5).
    for contact in {r.contact_id for r in gone}:
        mine = sorted(r.due_at for r in gone if r.contact_id == contact)
        emails = sorted(r.due_at for r in gone if r.contact_id == contact and r.channel == "email")
        for times, cap in ((emails, 3), (mine, 5)):
            for start in times:
                assert sum(start <= t < start + 7 * DAY for t in times) <= cap, (contact, times)
    get_engine(url).dispose()


@pytest.mark.usefixtures("test_config")
def test_a_sweep_exits_a_contact_who_left_the_segment_of_a_program_that_exits_on_leaving(sqlite_url):
    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    crm = CrmBuilder(engine, AS_OF)
    crm.contact("stays", lifecycle_stage="trial")
    crm.contact("leaves", lifecycle_stage="trial")

    def sweep_or_run(at: datetime, *, sweep: bool) -> None:
        run_id = f"test__{at.isoformat()}"
        scope, programs = pipeline.load_scope("texts", sweep_run_id("texts", run_id) if sweep else run_id, at)
        texts = scope.program.model_copy(
            update={"exit": scope.program.exit.model_copy(update={"on_segment_leave": True})}
        )
        run = replace(scope, program=texts)
        if sweep:
            pipeline.run_sweep(engine, run, programs, SimulatedTransport(), links=_links, simulate=True)
        else:
            pipeline.run_program(engine, run, programs, SimulatedTransport(), links=_links, simulate=True)

    sweep_or_run(AS_OF, sweep=False)  # both get the ping; the follow-up is due a day later
    with engine.begin() as conn:
        conn.execute(
            schema.contacts.update().where(schema.contacts.c.contact_id == "leaves").values(lifecycle_stage="customer")
        )
    sweep_or_run(AS_OF + DAY, sweep=True)
    assert {(c, s) for c, s, _at in _sent(engine, "texts")} == {
        ("stays", "ping"),
        ("leaves", "ping"),
        ("stays", "follow_up"),
    }
    e = schema.enrollments
    with engine.connect() as conn:
        left = conn.execute(select(e.c.state, e.c.exit_reason).where(e.c.contact_id == "leaves")).one()
    assert tuple(left) == ("exited", ExitReason.LEFT_SEGMENT)
