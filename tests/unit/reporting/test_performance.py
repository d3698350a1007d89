"""The funnel's outcomes: every ledger status lands in exactly one, so a funnel always adds up."""

from __future__ import annotations

from lifecycle.model.ledger import Status
from lifecycle.reporting.performance import OUTCOME_OF, OUTCOMES, Funnel


def test_every_status_has_exactly_one_outcome():
    placed = [status for outcome in OUTCOMES for status in outcome.statuses]
    assert sorted(placed) == sorted(Status) and len(placed) == len(set(placed))


def test_a_funnel_adds_up_to_what_was_planned_and_keeps_the_reasons():
    funnel = Funnel()
    for status, reason, n in (
        (Status.SKIPPED, "step_late", 4),
        (Status.SUPPRESSED, "no_consent", 3),
        (Status.SUPPRESSED, "unsubscribed", 1),
        (Status.DELIVERED, None, 5),
        (Status.BOUNCED, "hard bounce", 1),
        (Status.UNKNOWN, "outcome unknown", 2),
    ):
        funnel.add(status, reason, n)
    assert funnel.planned == 16 == sum(funnel.outcomes.values())
    assert funnel.outcomes[Status.SENT] == 6 and funnel.outcomes[OUTCOME_OF[Status.UNKNOWN]] == 2
    assert funnel.reasons[Status.SUPPRESSED] == {"no_consent": 3, "unsubscribed": 1}
    assert Status.SENT not in funnel.reasons
