"""Property-based: whatever the order of planning, sending, crashes, retries, killed runs, webhooks
(a duplicate contact's opt-out among them), consent changes (STOP in any wording among them) and
clock moves, the outbox invariants
hold after every step (tests/support/invariants.py), and
no message goes to a contact whose consent for its channel was not granted at its as-of.

Hypothesis drives a state machine over a small CRM (leads for alpha/beta, trials for texts,
customers for promo) on a fresh SQLite database per example, sending through the real SDKs to
the provider sandbox. Twilio's signed webhooks flow back to the webhook app as the sandbox posts
them; SendGrid's arrive when the machine's webhook step posts them (signed, sometimes twice), so
a worker can die before the ledger hears what became of its emails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from lifecycle.channels.providers import ProviderTransport, links_from_connection
from lifecycle.devtools.local import WebApp, provider_connections
from lifecycle.engine import dispatch, pipeline
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate
from lifecycle.sandbox import SandboxServer
from tests.conftest import AS_OF
from tests.support.crm_builder import CrmBuilder
from tests.support.invariants import (
    DyingTransport,
    WorkerDied,
    assert_outbox_invariants,
    post_sendgrid_events,
    stale_claims,
)
from tests.support.local_crm import crm_connection

PROGRAMS = ("alpha", "beta", "texts", "promo")
STEPS = 20
# Every as-of (at most STEPS clock moves of two days on) stays before the wall clock, so opt-outs
# arriving by webhook (stamped "now") never rewrite a past as-of's consent.
START = AS_OF - timedelta(days=2 * STEPS + 10)
CONTACTS = {
    "lead1": {"lifecycle_stage": "lead"},
    "lead2": {"lifecycle_stage": "lead", "email": "lead2@bounce.test"},
    "trial1": {"lifecycle_stage": "trial"},
    "trial2": {"lifecycle_stage": "trial", "phone": "+14155550000"},
    "cust1": {"lifecycle_stage": "customer"},
    "cust2": {"lifecycle_stage": "customer", "email": "cust2@spam.test"},
    # lead1 again, written another way: a duplicate row of the same person (one inbox).
    "lead1_dup": {"lifecycle_stage": "lead", "email": " Lead1@Example.com "},
}
PHONES = {cid: fields.get("phone", f"+141555501{n:02d}") for n, (cid, fields) in enumerate(CONTACTS.items())}
# Inbound replies: opt-outs as people write them (not only the keyword), and the opt-in keyword.
SMS_REPLIES = ("STOP", "Stop texting me", "ＳＴＯＰ", "opt-out", "please stop!", "START")
BATCH_SIZE, CLAIM_SIZE = 3, 2
SETTINGS = settings(
    max_examples=30,
    stateful_step_count=STEPS,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class Outbox(RuleBasedStateMachine):
    """One CRM, its ledger and the provider sandbox, driven step by step."""

    planned = Bundle("planned")

    sandbox: SandboxServer
    webhooks_url: str
    scopes: dict[str, pipeline.RunScope]
    programs: dict

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="outbox-"))
        url = f"sqlite:///{self.folder / 'crm.db'}"
        os.environ["AIRFLOW_CONN_CRM_DEFAULT"] = crm_connection(url)
        self.engine = get_engine(url)
        schema.crm_metadata.create_all(self.engine)
        migrate(self.engine)
        self.crm = CrmBuilder(self.engine, START)
        self.sandbox.reset()
        self.as_of = START
        self.runs: dict[str, str] = {}
        self.in_flight: dict[int, tuple[str, int]] = {}
        # Claims of killed runs, whose send tasks are never retried: the program's next run settles them.
        self.abandoned: dict[int, str] = {}
        self.cleared_at: dict[int, datetime] = {}
        self.posted = 0
        self.links = links_from_connection()
        self.brand = self.scopes["alpha"].policy.brand.model_dump()

    @initialize(
        consents=st.fixed_dictionaries(
            {
                (cid, channel): st.sampled_from(["granted", "granted", "granted", "withdrawn", None])
                for cid in CONTACTS
                for channel in ("email", "sms")
            }
        )
    )
    def populate(self, consents: dict) -> None:
        """The contacts, with the consents drawn for them (None: no consent row)."""
        for cid, fields in CONTACTS.items():
            given = {channel: status for (c, channel), status in consents.items() if c == cid and status}
            self.crm.contact(cid, consent=given, **{"phone": PHONES[cid]} | fields)

    def _statuses(self) -> dict[int, str]:
        m = schema.messages
        with self.engine.connect() as conn:
            return dict(conn.execute(select(m.c.message_id, m.c.status)).all())

    def _send_batch(self, run_id: str, batch: int, transport: ProviderTransport) -> None:
        self.in_flight = {mid: at for mid, at in self.in_flight.items() if at != (run_id, batch)}
        dispatch.send_batch(
            self.engine,
            run_id,
            batch,
            transport,
            links=self.links,
            brand=self.brand,
            claim_size=CLAIM_SIZE,
            rules=dispatch.SendRules("marketing", "explicit"),
        )

    @rule(target=planned, program=st.sampled_from(PROGRAMS))
    def plan(self, program: str) -> str:
        """A program run's stages up to cap at the current as-of (a rerun when it already ran).

        A program runs one DAG run at a time, so its previous run's crashed send tasks are retried
        (and the run finished) first, unless the run was killed.
        """
        for run_id, batch in sorted(set(self.in_flight.values())):
            if run_id == self.runs.get(program):
                self._send_batch(run_id, batch, ProviderTransport())
        self.sandbox.flush()
        run = replace(self.scopes[program], run_id=f"{program}__{self.as_of:%Y%m%dT%H}", as_of=self.as_of)
        before = self._statuses()
        pipeline.evaluate(self.engine, run)
        pipeline.enroll_and_exit(self.engine, run)
        pipeline.plan(self.engine, run)
        pipeline.suppress(self.engine, run)
        pipeline.cap(self.engine, run, self.programs)
        for mid, status in self._statuses().items():
            if status == "ready" and before.get(mid) != "ready":
                self.cleared_at[mid] = self.as_of
        self.runs[program] = run.run_id
        return program

    @rule(program=planned)
    def send(self, program: str) -> None:
        """The program's send tasks for its latest run: batches, then every batch. Whatever killed
        runs of the program left claimed is settled by them."""
        run_id = self.runs[program]
        for batch in dispatch.prepare_batches(self.engine, program, run_id, BATCH_SIZE):
            self._send_batch(run_id, batch, ProviderTransport())
        self.sandbox.flush()
        self.abandoned = {mid: p for mid, p in self.abandoned.items() if p != program}

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def kill_run(self, data: st.DataObject) -> None:
        """A run whose send task died is killed for good: its retries never come. The program's
        next run (a new run id) must settle what it left claimed."""
        run_id, _batch = data.draw(st.sampled_from(sorted(set(self.in_flight.values()))))
        program = run_id.split("__")[0]
        killed = [mid for mid, (run, _b) in self.in_flight.items() if run == run_id]
        self.abandoned |= dict.fromkeys(killed, program)
        self.in_flight = {mid: at for mid, at in self.in_flight.items() if at[0] != run_id}

    @rule(twice=st.booleans())
    def duplicate_opts_out(self, twice: bool) -> None:
        """The duplicate row's person unsubscribes from an email sent to the other row: the address
        is out for both."""
        emails = self.sandbox.sendgrid_messages("lead1@example.com")
        if emails:
            self.sandbox.sendgrid_event("unsubscribe", sg_message_id=emails[-1]["sg_message_id"])
            self._sendgrid_posts(twice)

    @rule(program=planned, survivors=st.integers(0, CLAIM_SIZE))
    def crash(self, program: str, survivors: int) -> None:
        """A send task for a batch with work left that dies in its first chunk after handing
        ``survivors`` messages over."""
        run_id = self.runs[program]
        dispatch.prepare_batches(self.engine, program, run_id, BATCH_SIZE)
        m = schema.messages
        with self.engine.connect() as conn:
            batch = conn.execute(
                select(func.min(m.c.batch)).where(m.c.send_run_id == run_id, m.c.status == "ready")
            ).scalar()
        if batch is None:
            return
        with contextlib.suppress(WorkerDied):
            self._send_batch(run_id, batch, DyingTransport(survivors))
        self.sandbox.flush()
        # What this task left claimed (not the claims of killed runs, which their programs' next run settles).
        claimed = stale_claims(self.engine) - self.in_flight.keys() - self.abandoned.keys()
        self.in_flight |= dict.fromkeys(claimed, (run_id, batch))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        """Airflow retries a send task whose worker died."""
        run_id, batch = data.draw(st.sampled_from(sorted(set(self.in_flight.values()))))
        self._send_batch(run_id, batch, ProviderTransport())
        self.sandbox.flush()

    @rule(
        event=st.sampled_from([None, "open", "click", "unsubscribe", "spamreport", "bounce"]),
        index=st.integers(0, 20),
        twice=st.booleans(),
    )
    def webhook(self, event: str | None, index: int, twice: bool) -> None:
        """SendGrid posts the events it holds, with a new one about an accepted email when drawn, as
        one signed batch, sometimes twice. Until then, the ledger has not heard of them."""
        if event and (emails := self.sandbox.sendgrid_messages()):
            self.sandbox.sendgrid_event(event, sg_message_id=emails[index % len(emails)]["sg_message_id"])
        self._sendgrid_posts(twice)

    def _sendgrid_posts(self, twice: bool = False) -> None:
        events = [hook["payload"] for hook in self.sandbox.webhooks("sendgrid")[self.posted :]]
        if events:
            post = post_sendgrid_events(self.sandbox, self.webhooks_url, events)
            for _ in range(1 + twice):
                assert post().is_success
        self.posted += len(events)

    @rule(
        contact=st.sampled_from(sorted(CONTACTS)),
        change=st.sampled_from(["withdrawn", "granted", *SMS_REPLIES]),
        channel=st.sampled_from(["email", "sms"]),
    )
    def consent_change(self, contact: str, change: str, channel: str) -> None:
        """A consent row the CRM records now (after the current as-of, so after planning saw the
        consent, and before sending: the claim must see it), or an inbound SMS: STOP in any wording
        a person would use, or START."""
        if change in SMS_REPLIES:
            self.sandbox.inbound_sms(PHONES[contact], change)
            self.sandbox.flush()
        else:
            # Recorded now, on the wall clock: after the as-of (every as-of here lies in the past),
            # and before any later claim, which must see it.
            self.crm.consent(contact, channel, change, at=datetime.now(UTC).replace(tzinfo=None))

    @rule(hours=st.sampled_from([6, 24, 48]))
    def advance_clock(self, hours: int) -> None:
        """The next run's as-of."""
        self.as_of += timedelta(hours=hours)

    @invariant()
    def outbox_invariants_hold(self) -> None:
        """After every step (claims of workers that died and were not retried yet may stay ``sending``)."""
        assert_outbox_invariants(
            self.engine,
            self.sandbox,
            in_flight=self.in_flight.keys() | self.abandoned.keys(),
            consent_as_of=self.cleared_at,
            consent_at_claim=True,
        )

    def teardown(self) -> None:
        """Retry what is left in flight, let the webhooks in, check once more, drop the database."""
        try:
            for run_id, batch in sorted(set(self.in_flight.values())):
                self._send_batch(run_id, batch, ProviderTransport())
            for program in sorted(set(self.abandoned.values())):
                for batch in dispatch.prepare_batches(self.engine, program, f"{program}__last", BATCH_SIZE):
                    self._send_batch(f"{program}__last", batch, ProviderTransport())
            self.sandbox.flush()
            self._sendgrid_posts()
            assert_outbox_invariants(self.engine, self.sandbox, consent_as_of=self.cleared_at, consent_at_claim=True)
        finally:
            self.engine.dispose()
            shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def feedback_loop(monkeypatch) -> Iterator[tuple[SandboxServer, str]]:
    """The webhook app on loopback, and the sandbox posting Twilio's webhooks to it (the machine
    posts SendGrid's)."""
    web = WebApp().start()
    with SandboxServer(twilio_inbound_url=f"{web.base_url}/webhooks/twilio/inbound") as sandbox:
        for key, value in provider_connections(sandbox, web.base_url, "property-secret").items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AIRFLOW_CONN_CRM_DEFAULT", "")
        yield sandbox, web.base_url
    web.stop()


@pytest.fixture
def hypothesis_home(tmp_path: Path) -> Iterator[None]:
    """Hypothesis keeps its caches in the test's temporary folder, not in the repository."""
    set_hypothesis_home_dir(tmp_path / "hypothesis")
    yield
    set_hypothesis_home_dir(None)


def test_outbox_invariants_hold_for_any_sequence_of_steps(test_config, feedback_loop, hypothesis_home, monkeypatch):
    # A crashed worker's requests ended with it, so reconciliation may resend an SMS Twilio never took at once.
    monkeypatch.setattr(dispatch, "CLAIM_LEASE", timedelta(0))
    loaded = {program: pipeline.load_scope(program, "property", START) for program in PROGRAMS}
    machine = type(
        "OutboxMachine",
        (Outbox,),
        {
            "sandbox": feedback_loop[0],
            "webhooks_url": feedback_loop[1],
            "scopes": {program: scope for program, (scope, _) in loaded.items()},
            "programs": loaded["alpha"][1],
        },
    )
    run_state_machine_as_test(machine, settings=SETTINGS)
