"""Next-best-action: which marketing program a capped slot goes to, by expected incremental value.

With the policy's ``decision.mode: next_best_action``, marketing programs that want the same
contact at the same as-of are ordered, for that contact, by expected incremental value: the
program's lift (treatment vs holdout conversion rate, intent to treat) in the contact's score band
times the value of one of its conversions. A band's lift is shrunk toward the program's overall
lift by empirical Bayes (the bands' spread beyond their sampling noise is the prior's variance), so
a thin band says little. A program with too little evidence (fewer than ``min_evidence`` holdout
enrollments) keeps its place in priority order; the others are ordered by expected value among the
places they hold, ties by priority then program id. Service programs never enter the contest.

Everything is read from stored state that a run at the as-of does not change: enrollments made
before the as-of, the CRM (the conversion segment at the as-of) and the published scores as of
then; so every program's run computes the same order, whichever runs first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, case, func, select

from lifecycle.config import Decision, Program, segments
from lifecycle.engine.scope import RunScope
from lifecycle.model import schema
from lifecycle.model.ledger import IN_FLIGHT, MESSAGED, NEXT_BEST_ACTION_DETAIL, Status

E = schema.enrollments
M = schema.messages
S = schema.scores
CHOSEN = (*MESSAGED, *IN_FLIGHT, Status.DEFERRED, Status.PLANNED)
"""A message the program chose to send (or still may): it went, is on its way, or waits; not one
held out, skipped, suppressed or capped when it was decided."""
UNSCORED = 0
"""The band of a contact without a published score (as of the run): the program's overall lift applies."""


@dataclass(frozen=True)
class Counts:
    """Enrollments and conversions of a program's treatment and holdout groups (in one band, or
    all), and how many treatment enrollments a message was chosen for (``treatment_messaged``)."""

    treatment_n: int = 0
    treatment_conversions: int = 0
    holdout_n: int = 0
    holdout_conversions: int = 0
    treatment_messaged: int | None = None  # None: every treatment enrollment

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.treatment_n + other.treatment_n,
            self.treatment_conversions + other.treatment_conversions,
            self.holdout_n + other.holdout_n,
            self.holdout_conversions + other.holdout_conversions,
            self.messaged + other.messaged,
        )

    @property
    def messaged(self) -> int:
        """Treatment enrollments a message was chosen for."""
        return self.treatment_n if self.treatment_messaged is None else self.treatment_messaged

    @property
    def exposure(self) -> float:
        """The share of the treatment group a message was chosen for."""
        return self.messaged / self.treatment_n if self.treatment_n else 0.0

    @property
    def measured(self) -> bool:
        """Both groups have members and the treatment was messaged, so a lift is defined."""
        return self.treatment_n > 0 and self.holdout_n > 0 and self.messaged > 0

    @property
    def lift(self) -> float:
        """The effect of a message: treatment rate minus holdout rate (intent to treat), divided by
        the exposure (NaN when it is not measured)."""
        if not self.measured:
            return math.nan
        itt = self.treatment_conversions / self.treatment_n - self.holdout_conversions / self.holdout_n
        return itt / self.exposure

    @property
    def variance(self) -> float:
        """The lift's sampling variance, with the rates smoothed (+0.5 / +1) so that 0 or 1 is not certain."""
        if not self.measured:
            return math.inf
        pt = (self.treatment_conversions + 0.5) / (self.treatment_n + 1)
        ph = (self.holdout_conversions + 0.5) / (self.holdout_n + 1)
        return (pt * (1 - pt) / self.treatment_n + ph * (1 - ph) / self.holdout_n) / self.exposure**2


@dataclass(frozen=True)
class Estimate:
    """A program's overall lift and its shrunk lift per score band, with the evidence behind them."""

    program: str
    overall: float
    bands: Mapping[int, float] = field(default_factory=dict)
    evidence: int = 0  # holdout enrollments

    def lift_in(self, band: int) -> float:
        """The lift to expect in ``band``: the band's shrunk lift, else the overall one."""
        return self.bands.get(band, self.overall)


def shrink(program_id: str, per_band: Mapping[int, Counts]) -> Estimate:
    """Empirical-Bayes band lifts: each band's raw lift pulled toward the overall lift by
    ``tau2 / (tau2 + v_band)``, where ``v_band`` is its sampling variance and ``tau2`` the
    variance of the true band lifts, estimated from the bands' spread beyond their noise
    (DerSimonian-Laird; 0 when the bands differ no more than noise, and every band then gets the
    overall lift). A thin band has a large ``v_band`` and so stays near the overall lift."""
    total = sum(per_band.values(), Counts())
    overall = total.lift if total.measured else 0.0
    raw = {band: (c.lift, c.variance) for band, c in sorted(per_band.items()) if c.measured and band != UNSCORED}
    tau2 = 0.0
    if len(raw) >= 2:
        weights = {band: 1 / v for band, (_, v) in raw.items()}
        total_weight = sum(weights.values())
        mean = sum(weights[band] * lift for band, (lift, _) in raw.items()) / total_weight
        q = sum(weights[band] * (lift - mean) ** 2 for band, (lift, _) in raw.items())
        scale = total_weight - sum(w * w for w in weights.values()) / total_weight
        tau2 = max(0.0, (q - (len(raw) - 1)) / scale) if scale > 0 else 0.0
    bands = {band: overall + tau2 / (tau2 + v) * (lift - overall) for band, (lift, v) in raw.items()}
    return Estimate(program_id, overall, bands, total.holdout_n)


def band_of(decile: int | None, bands: int) -> int:
    """The score band (1 lowest .. ``bands``) of a decile (1..10), or :data:`UNSCORED`."""
    if decile is None:
        return UNSCORED
    return max(1, min(bands, math.ceil(int(decile) * bands / 10)))


def expected_value(estimate: Estimate | None, decision: Decision, band: int) -> float | None:
    """Expected incremental value of one message of the estimate's program to a contact in ``band``."""
    if estimate is None:
        return None
    return decision.value_of(estimate.program) * estimate.lift_in(band)


def ranking(
    programs: Iterable[Program], estimates: Mapping[str, Estimate | None], decision: Decision, band: int
) -> list[str]:
    """The order (first wins) of ``programs`` for a contact in ``band``: priority order, with the
    programs that have an estimate re-ordered by expected value (then priority, then id) among the
    places they hold. A pure function of its arguments."""
    by_priority = sorted(programs, key=lambda p: (-p.priority, p.id))
    places = [i for i, p in enumerate(by_priority) if estimates.get(p.id) is not None]
    evidenced = sorted(
        (by_priority[i] for i in places),
        key=lambda p: (-(expected_value(estimates[p.id], decision, band) or 0.0), -p.priority, p.id),
    )
    order = [p.id for p in by_priority]
    for place, program in zip(places, evidenced, strict=True):
        order[place] = program.id
    return order


def band_counts(conn: Connection, run: RunScope, program: Program) -> dict[int, Counts]:
    """Per score band: the program's treatment and holdout enrollments made before the as-of,
    those whose ``kpi.conversion`` holds at the as-of (in the enrollment's journey context), and
    the treatment enrollments with a message planned before the as-of that the program chose to
    send (:data:`CHOSEN`): exposure, so that a program that lost slots is not judged diluted."""
    decision = run.policy.decision
    ctx = segments.Context(
        as_of=run.as_of,
        contact_id=E.c.contact_id,
        contacts_in_scope=False,
        catalog=run.catalog,
        enrolled_at=E.c.enrolled_at,
        anchor_at=E.c.anchor_at,
    )
    met = segments.compile_segment(program.kpi.conversion.parsed, ctx)
    chosen = (
        select(M.c.enrollment_id)
        .where(M.c.program == program.id, M.c.planned_at < run.as_of, M.c.status.in_(CHOSEN))
        .distinct()
        .subquery()
    )
    scored = and_(S.c.contact_id == E.c.contact_id, S.c.score == decision.score, S.c.as_of <= run.as_of)
    rows = conn.execute(
        select(
            S.c.decile,
            E.c.group,
            func.count(),
            func.sum(case((met, 1), else_=0)),
            func.count(chosen.c.enrollment_id),
        )
        .select_from(E.outerjoin(S, scored).outerjoin(chosen, chosen.c.enrollment_id == E.c.enrollment_id))
        .where(E.c.program == program.id, E.c.enrolled_at < run.as_of, E.c.group.in_(("treatment", "holdout")))
        .group_by(S.c.decile, E.c.group)
    ).all()
    per_band: dict[int, Counts] = {}
    for decile, group, n, conversions, messaged in rows:
        band = band_of(decile, decision.bands)
        converted = int(conversions or 0)
        add = Counts(n, converted, 0, 0, int(messaged)) if group == "treatment" else Counts(0, 0, n, converted, 0)
        per_band[band] = per_band.get(band, Counts()) + add
    return per_band


def estimates(conn: Connection, run: RunScope, programs: Iterable[Program]) -> dict[str, Estimate | None]:
    """Each program's estimate, or ``None`` when its holdout has fewer than ``min_evidence`` enrollments."""
    found: dict[str, Estimate | None] = {}
    for program in sorted(programs, key=lambda p: p.id):
        estimate = shrink(program.id, band_counts(conn, run, program))
        found[program.id] = estimate if estimate.evidence >= run.policy.decision.min_evidence else None
    return found


def contact_bands(conn: Connection, run: RunScope, targets: Any) -> dict[str, int]:
    """The score band of each contact in ``targets`` (a subquery of contact ids) with a score published by the as-of."""
    decision = run.policy.decision
    rows = conn.execute(
        select(S.c.contact_id, S.c.decile).where(
            S.c.score == decision.score, S.c.as_of <= run.as_of, S.c.contact_id.in_(targets)
        )
    ).all()
    return {contact_id: band_of(decile, decision.bands) for contact_id, decile in rows}


def why(winner: str, loser: str, values: Mapping[str, float | None], band: int) -> str:
    """Why ``loser`` yielded to ``winner``, to follow its cap reason in the ledger: their expected
    values (or ``priority`` when a program has too little evidence) and the contact's band."""

    def shown(program_id: str) -> str:
        value = values.get(program_id)
        return "priority" if value is None else f"EV {value:.4g}"

    band_text = "unscored" if band == UNSCORED else f"band {band}"
    return f"{NEXT_BEST_ACTION_DETAIL}{winner} ({shown(winner)}) over {loser} ({shown(loser)}), {band_text}"
