"""The ledger vocabulary (``lifecycle.model.ledger``): one home for every status and reason, and
what its groups mean.

Two kinds of test:

- the groups' meaning, as properties of the vocabulary rather than copies of its lists;
- why the names are ``StrEnum`` members: they bind, compare and serialise as their values on
  SQLite and PostgreSQL, in JSON and in Airflow XCom.
"""

from __future__ import annotations

import json
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import get_args

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, case, create_engine, insert, literal, select, update
from sqlalchemy import bindparam as bind

import lifecycle
from lifecycle import config
from lifecycle.engine import feedback
from lifecycle.model import ledger, schema
from lifecycle.model.ledger import (
    DELIVERED_OR_LATER,
    FEEDBACK_RANK,
    FINAL,
    IN_FLIGHT,
    MESSAGED,
    NOT_GONE_OUT,
    OPENED_OR_LATER,
    POLICY_RULES,
    PROGRESSION,
    SLOT_HOLDING,
    STILL_CLAIMED,
    WENT_OUT,
    WITHHELD,
    EnrollmentState,
    ExitReason,
    OutcomeReason,
    Status,
    SuppressionReason,
)
from lifecycle.paths import PROJECT_ROOT

PACKAGE = Path(lifecycle.__file__).parent
FAMILIES = [
    value
    for value in vars(ledger).values()
    if isinstance(value, type) and issubclass(value, StrEnum) and value.__module__ == ledger.__name__
    if list(value)
]
VOCABULARY = {member.value for family in FAMILIES for member in family}
# --- one home --------------------------------------------------------------------------------


def test_every_family_is_covered_and_no_value_is_an_alias():
    assert {f.__name__ for f in FAMILIES} >= {"Status", "SuppressionReason", "OutcomeReason", "ExitReason"}
    for family in FAMILIES:
        assert len(family.__members__) == len(family), f"{family.__name__} repeats a value (an enum alias)"


def test_every_stored_value_fits_its_column():
    m, e = schema.messages.c, schema.enrollments.c
    assert max(len(s) for s in Status) <= m.status.type.length
    assert max(len(s) for s in EnrollmentState) <= e.state.type.length
    assert max(len(r) for r in ExitReason) <= e.exit_reason.type.length
    assert max(len(r) for r in SuppressionReason) <= schema.suppressions.c.reason.type.length
    assert max(len(r) for family in FAMILIES if family not in (Status, EnrollmentState) for r in family) <= (
        m.reason.type.length
    )


def test_the_policy_keys_are_the_reasons_they_record():
    (key_type, _rule) = get_args(config.Policy.model_fields["suppressions"].annotation)
    assert set(get_args(key_type)) == set(POLICY_RULES) <= set(SuppressionReason)
    shipped = config.load_policy(PROJECT_ROOT / "config" / "policy.yml")
    assert set(shipped.suppressions) == set(POLICY_RULES)


# --- what the groups mean --------------------------------------------------------------------


def test_every_status_is_at_exactly_one_stage():
    stages = [(Status.PLANNED,), WITHHELD, IN_FLIGHT, WENT_OUT, (Status.FAILED,), (Status.DRY_RUN,)]
    assert sorted(s for stage in stages for s in stage) == sorted(Status)


def test_what_went_out_holds_a_cap_slot_and_is_messaged():
    assert set(WENT_OUT) <= set(MESSAGED) <= set(SLOT_HOLDING)
    assert set(DELIVERED_OR_LATER) | set(OPENED_OR_LATER) <= set(WENT_OUT)


def test_a_message_went_out_or_says_why_not():
    assert set(WENT_OUT).isdisjoint(NOT_GONE_OUT)
    assert set(MESSAGED).isdisjoint(NOT_GONE_OUT)
    for status in (Status.HELD_OUT, Status.SUPPRESSED, Status.SKIPPED, Status.CAPPED, Status.FAILED):
        assert status in NOT_GONE_OUT and status not in MESSAGED


def test_a_dry_run_is_messaged_and_holds_a_slot_but_never_went_out():
    assert Status.DRY_RUN in MESSAGED and Status.DRY_RUN in SLOT_HOLDING and Status.DRY_RUN not in WENT_OUT


def test_only_a_deferred_message_keeps_its_slot_without_going_out():
    assert set(SLOT_HOLDING) & set(NOT_GONE_OUT) == {Status.DEFERRED}


def test_a_claim_is_still_held_only_in_flight_and_only_with_the_stale_claim_reason_when_unknown():
    assert set(STILL_CLAIMED) <= set(IN_FLIGHT) <= set(SLOT_HOLDING)
    assert Status.READY not in STILL_CLAIMED
    assert STILL_CLAIMED[Status.UNKNOWN] == OutcomeReason.STALE_CLAIM


def test_provider_events_only_move_a_message_forward():
    ranks = [FEEDBACK_RANK[s] for s in PROGRESSION]
    assert ranks == sorted(set(ranks)), "each step of the progression ranks above the one before"
    assert {FEEDBACK_RANK[s] for s in FINAL} == {max(FEEDBACK_RANK.values())}
    assert all(FEEDBACK_RANK[s] < min(ranks) for s in STILL_CLAIMED), "an event settles a claimed message"
    untouched = {Status.PLANNED, Status.READY, Status.DRY_RUN, *WITHHELD}
    assert untouched.isdisjoint(FEEDBACK_RANK), "no event touches a message that was never sent"


def test_every_status_a_provider_event_sets_is_ours_and_ranked():
    targets = {*feedback._SENDGRID_STATUS.values(), *feedback._TWILIO_STATUS.values()}
    assert all(isinstance(t, Status) for t in targets)
    assert targets | set(FINAL) <= set(FEEDBACK_RANK)
    assert set(FEEDBACK_RANK) - set(IN_FLIGHT) <= set(WENT_OUT) | set(FINAL)


# --- why StrEnum ------------------------------------------------------------------------------


def test_a_name_is_its_value():
    assert Status.SENT == "sent" and Status.SENT == "sent" and hash(Status.SENT) == hash("sent")
    assert f"{Status.SENT}" == str(Status.SENT) == f"{Status.SENT}" == "sent"
    assert repr(Status.SENT) == "'sent'" and repr({Status.SENT: 1}) == "{'sent': 1}"
    assert {Status.SENT: 1} == {"sent": 1} and Counter(["sent", Status.SENT]) == {"sent": 2}
    assert "delivered" in WENT_OUT and json.loads(json.dumps({Status.SENT: [Status.FAILED]})) == {"sent": ["failed"]}


def test_names_go_through_airflow_xcom_as_their_values():
    from airflow.sdk.serde import deserialize, serialize

    returned = {"counts": Counter({Status.SENT: 2, SuppressionReason.NO_CONSENT: 1}), "status": Status.DRY_RUN}
    assert deserialize(json.loads(json.dumps(serialize(returned)))) == {
        "counts": {"sent": 2, "no_consent": 1},
        "status": "dry_run",
    }


def test_names_bind_and_compare_as_their_values_on_each_database(db_url):
    engine = create_engine(db_url)
    table = Table("ledger_words", MetaData(), Column("id", Integer, primary_key=True), Column("status", String(20)))
    table.create(engine)
    try:
        with engine.begin() as conn:
            conn.execute(insert(table).values(id=1, status=Status.PLANNED))
            conn.execute(insert(table), [{"id": 2, "status": Status.READY}])
            chosen = case((literal(True), Status.HELD_OUT), else_=Status.PLANNED)
            conn.execute(insert(table).from_select(["id", "status"], select(literal(3), chosen)))
            conn.execute(insert(table).from_select(["id", "status"], select(literal(4), literal(Status.DRY_RUN))))
            conn.execute(
                update(table).where(table.c.id == bind("i")).values(status=bind("s")), [{"i": 2, "s": Status.SENT}]
            )
            rows = conn.execute(select(table.c.id, table.c.status).order_by(table.c.id)).all()
            went_out = conn.execute(select(table.c.id).where(table.c.status.in_(WENT_OUT))).scalars().all()
            held = conn.execute(select(table.c.id).where(table.c.status == Status.HELD_OUT)).scalars().all()
    finally:
        table.drop(engine)
        engine.dispose()
    assert rows == [(1, "planned"), (2, "sent"), (3, "held_out"), (4, "dry_run")]
    assert all(type(status) is str for _id, status in rows)
    assert [Status(status) for _id, status in rows] == [Status.PLANNED, Status.SENT, Status.HELD_OUT, Status.DRY_RUN]
    assert went_out == [2] and held == [3]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.__name__)
def test_values_read_back_as_plain_strings_still_match(family):
    for member in family:
        plain = str.__str__(member)
        assert type(plain) is str and plain == member and plain in {member} and family(plain) is member
