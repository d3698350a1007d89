"""The ledger vocabulary (``lifecycle.model.ledger``): one home for every status and reason, and
what its groups mean.

Three kinds of test:

- a guard: no runtime module spells a status or a reason name as a bare string; they use the
  names. Provider, CRM and display vocabularies that happen to share a word are allowed, each
  spot listed below with why;
- the groups' meaning, as properties of the vocabulary rather than copies of its lists;
- why the names are ``StrEnum`` members: they bind, compare and serialise as their values on
  SQLite and PostgreSQL, in JSON and in Airflow XCom.
"""

from __future__ import annotations

import ast
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
    CapReason,
    ChannelReason,
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
# Reasons recorded as ``<name>: <detail>`` or ``frequency_cap_<scope>: ...``: a string starting so spells one too.
PREFIXES = (
    f"{OutcomeReason.UNREADABLE_CRM_DATA}:",
    f"{OutcomeReason.DROPPED}:",
    f"{CapReason.FREQUENCY_CAP}_",
    f"{ChannelReason.FALLBACK}:",
)

# (module, enclosing function / class / module-level name, string) -> why that string is not ours.
ALLOWED = {
    # Provider vocabularies: the words in SendGrid's and Twilio's payloads, mapped to ours right there.
    ("engine/feedback.py", "_SENDGRID_STATUS", "delivered"): "SendGrid's event name",
    ("engine/feedback.py", "_TWILIO_STATUS", "sent"): "Twilio's MessageStatus value",
    ("engine/feedback.py", "_TWILIO_STATUS", "delivered"): "Twilio's MessageStatus value",
    ("engine/feedback.py", "sendgrid_event", "blocked"): "SendGrid's bounce type",
    ("engine/feedback.py", "sendgrid_event", "dropped"): "SendGrid's event name",
    ("channels/twilio.py", "TWILIO_FAILED", "failed"): "Twilio's MessageStatus value",
    # The CRM's own vocabulary (DESIGN.md's input model), not the ledger's.
    ("model/schema.py", "SUBSCRIPTION_STATUSES", "active"): "subscriptions.status",
    ("model/schema.py", "BILLING_STATUSES", "failed"): "subscriptions.billing_status",
    ("reporting/measurement.py", "_revenue_query", "active"): "subscriptions.status",
    ("devtools/seed.py", "_INVALID_PHONE_TEXT", "unknown"): "junk the synthetic CRM plants in phone columns",
    ("devtools/warehouse.py", "SUBSCRIPTION_STATES", "active"): "the example warehouse's subscription states",
    ("devtools/warehouse.py", "CARD_STATES", "failed"): "the example warehouse's card states",
    # Other names that share a word with a status.
    ("airflow/operators.py", "RETIRED_OPTIONS", "dry_run"): "the retired program-run option it refuses",
    ("engine/dispatch.py", "record_results", "sent"): "the bind parameter for sent_at",
    ("reporting/measurement.py", "outcomes_from_rows", "converted"): "the outcomes column (KPI met)",
    ("reporting/measurement.py", "_group_counts", "converted"): "the outcomes column (KPI met)",
    ("reporting/measurement.py", "kpi_summary", "converted"): "the outcomes column (KPI met)",
    ("devtools/simulation.py", "_measure", "converted"): "the outcomes column (KPI met)",
    ("reporting/digest.py", "program_view", "sent"): "the view field the digest templates read as p.sent",
    ("web/campaigns.py", "policy_view", "quiet_hours"): "the view field named after the policy's quiet_hours",
    ("reporting/figures.py", "funnel_chart", "planned"): "a chart legend's text",
    ("airflow/notifications.py", "text", "unknown"): "alert text for a run id or try number Airflow did not give",
    ("engine/capture.py", "Confirmation", "unknown"): "a confirmation link's outcome (no such capture), not a status",
    ("devtools/demo.py", "_run_dags", "unknown"): "printed when a DAG run has no state",
    # A step's fallback field and what reads it share a word with ChannelReason.FALLBACK.
    ("config/__init__.py", "Step", "fallback"): "the step's fallback field, validated",
    ("engine/suppression.py", "suppress", "fallback"): "the count of messages moved to their fallback",
    ("web/campaigns.py", "journey_steps", "fallback"): "the view field named after the step's fallback",
    ("engine/suppression.py", "PREFERRED_CHANNEL_ATTRIBUTE", "preferred_channel"): "the custom attribute's name",
}


def runtime_modules() -> list[Path]:
    """Every module of the package but the sandbox (a stand-in for the providers, with their
    vocabulary) and the ledger itself."""
    return sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0] != "sandbox" and path != PACKAGE / "model" / "ledger.py"
    )


class _Strings(ast.NodeVisitor):
    """String constants in code (docstrings left out), each with its innermost def / class, or the
    module-level name it is assigned to."""

    def __init__(self) -> None:
        self.scope: list[str] = []
        self.found: list[tuple[str, str, int]] = []
        self.docstrings: set[int] = set()

    def _body(self, node: ast.AST) -> None:
        body = getattr(node, "body", [])
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            self.docstrings.add(id(body[0].value))

    def _scoped(self, name: str, node: ast.AST) -> None:
        self._body(node)
        self.scope.append(name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_Module(self, node: ast.Module) -> None:
        self._body(node)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped(node.name, node)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node.name, node)

    def _assigned(self, node: ast.Assign | ast.AnnAssign, targets: list[ast.expr]) -> None:
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if self.scope or not names:
            self.generic_visit(node)
        else:
            self._scoped(names[0], node)

    def visit_Assign(self, node: ast.Assign) -> None:
        self._assigned(node, node.targets)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._assigned(node, [node.target])

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and id(node) not in self.docstrings:
            self.found.append((self.scope[-1] if self.scope else "<module>", node.value, node.lineno))


def spelled_out(root: Path = PACKAGE) -> tuple[list[str], set[tuple[str, str, str]]]:
    """Bare ledger strings in the runtime modules under ``root``: the ones not allowed (as
    ``file:line``) and the allowed spots that were seen."""
    problems, seen = [], set()
    for path in runtime_modules() if root == PACKAGE else sorted(root.rglob("*.py")):
        module = path.relative_to(root).as_posix()
        visitor = _Strings()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        for scope, value, line in visitor.found:
            if value not in VOCABULARY and not value.startswith(PREFIXES):
                continue
            if (module, scope, value) in ALLOWED:
                seen.add((module, scope, value))
            else:
                problems.append(f"{module}:{line} ({scope}): {value!r}")
    return problems, seen


# --- one home --------------------------------------------------------------------------------


def test_no_runtime_module_spells_a_status_or_reason_as_a_bare_string():
    problems, _seen = spelled_out()
    assert problems == [], "use the names in lifecycle.model.ledger:\n" + "\n".join(problems)


def test_every_allowed_spot_still_exists():
    _problems, seen = spelled_out()
    assert set(ALLOWED) - seen == set(), "remove allowlist entries the code no longer has"


def test_the_guard_sees_strings_in_code_but_not_docstrings(tmp_path):
    (tmp_path / "module.py").write_text(
        '"""Messages end ``sent`` or ``failed``."""\n'
        "def record(status):\n"
        '    """Mark it sent."""\n'
        '    return status == "sent" or f"dropped: {status}"\n'
    )
    problems, _seen = spelled_out(tmp_path)
    assert problems == ["module.py:4 (record): 'sent'", "module.py:4 (record): 'dropped: '"]


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
