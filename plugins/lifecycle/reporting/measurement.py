"""KPIs and lift: what each program did to its primary KPI, measured against its holdouts.

Pure functions over pandas DataFrames do the arithmetic; thin loaders read the engine and CRM
tables with one SQL statement each. An enrollment's outcome is its program's ``kpi.conversion``
(a segment, compiled in the enrollment's journey context as exits are) met within the KPI's
attribution window after enrolling. Lift compares the treatment group with the program holdout
and with the global control group: a difference in proportions with a Newcombe (or Wald)
confidence interval and a two-sided z-test p-value. Holdout and control contacts are never
messaged, so lift is an intent-to-treat effect; :meth:`LiftResult.among_messaged` rescales it to
the contacts a message actually reached. A step with ``holdout: false`` (a billing-failure
notice) reaches them too: they stay in their group, so the lift measures the other steps, and
exposure counts only those.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Any, Literal, cast

import pandas as pd
from sqlalchemy import Engine, and_, case, func, literal, or_, select
from sqlalchemy.sql import Select

from lifecycle import config
from lifecycle.config import Program, segments
from lifecycle.model import schema
from lifecycle.model.db import utc_naive
from lifecycle.model.ledger import DELIVERED_OR_LATER, MESSAGED, OPENED_OR_LATER, WENT_OUT, Status

E = schema.enrollments
M = schema.messages
K = schema.kpis
GROUPS = ("treatment", "holdout", "control")
UNSUBSCRIBE_EVENTS = ("unsubscribe", "group_unsubscribe")
SPAM_EVENTS = ("spamreport",)
MIN_SAMPLE = 30
SECOND_PURCHASE_WINDOW = timedelta(days=90)
GROWTH_WINDOW = timedelta(days=28)
RETENTION_WINDOW = timedelta(days=365)
NO_WINNER = "no winner yet"
_NAN = float("nan")


# --- lift ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiftResult:
    """Treatment vs a comparison group: rates, absolute and relative lift, CI and p-value.

    Rates and lifts are proportions (0.1 is 10 points). ``relative`` is ``absolute`` divided by
    the comparison rate (NaN when that rate is 0). Undefined figures are NaN, never an error.
    ``insufficient_data`` is true when either group has fewer than ``min_n`` members: the
    figures are still given but no conclusion should be drawn.
    """

    treatment_conversions: int
    treatment_n: int
    control_conversions: int
    control_n: int
    treatment_rate: float
    control_rate: float
    absolute: float
    relative: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float
    method: str
    insufficient_data: bool

    @property
    def significant(self) -> bool:
        """Enough data, and the confidence interval of the difference excludes zero."""
        return not self.insufficient_data and (self.ci_low > 0 or self.ci_high < 0)

    def among_messaged(self, exposure: float) -> LiftResult:
        """The effect on the contacts actually messaged, given the share of the treatment group
        that was (Bloom's estimator): the comparison group is never messaged, so the
        intent-to-treat lift and its interval are divided by ``exposure``."""
        if not exposure > 0:
            return replace(self, absolute=_NAN, relative=_NAN, ci_low=_NAN, ci_high=_NAN, insufficient_data=True)
        scale = min(exposure, 1.0)
        return replace(
            self,
            absolute=self.absolute / scale,
            relative=self.relative / scale,
            ci_low=self.ci_low / scale,
            ci_high=self.ci_high / scale,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values, with ``significant``."""
        return asdict(self) | {"significant": self.significant}


def _wilson(conversions: int, n: int, z: float) -> tuple[float, float]:
    p = conversions / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def lift(
    treatment_conversions: int,
    treatment_n: int,
    control_conversions: int,
    control_n: int,
    confidence: float = 0.95,
    *,
    method: Literal["newcombe", "wald"] = "newcombe",
    min_n: int = MIN_SAMPLE,
) -> LiftResult:
    """Lift of the treatment conversion rate over the comparison (holdout or control) rate.

    The interval is for the difference in proportions: Newcombe's hybrid score interval (from
    the two Wilson intervals; sound with zero counts and small samples) or the Wald interval.
    The p-value is the two-sided pooled two-proportion z-test (1.0 when no one, or everyone,
    converted in both groups).
    """
    for name, conversions, n in (
        ("treatment", treatment_conversions, treatment_n),
        ("control", control_conversions, control_n),
    ):
        if n < 0 or not 0 <= conversions <= max(n, 0):
            raise ValueError(f"{name}: conversions must be between 0 and n ({conversions} of {n})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    insufficient = min(treatment_n, control_n) < max(min_n, 1)
    if treatment_n == 0 or control_n == 0:
        p1 = treatment_conversions / treatment_n if treatment_n else _NAN
        p2 = control_conversions / control_n if control_n else _NAN
        return LiftResult(
            treatment_conversions,
            treatment_n,
            control_conversions,
            control_n,
            p1,
            p2,
            _NAN,
            _NAN,
            _NAN,
            _NAN,
            _NAN,
            confidence,
            method,
            True,
        )
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p1, p2 = treatment_conversions / treatment_n, control_conversions / control_n
    diff = p1 - p2
    if method == "wald":
        half = z * math.sqrt(p1 * (1 - p1) / treatment_n + p2 * (1 - p2) / control_n)
        low, high = diff - half, diff + half
    else:
        l1, u1 = _wilson(treatment_conversions, treatment_n, z)
        l2, u2 = _wilson(control_conversions, control_n, z)
        low = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
        high = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    pooled = (treatment_conversions + control_conversions) / (treatment_n + control_n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / treatment_n + 1 / control_n))
    p_value = 2 * (1 - NormalDist().cdf(abs(diff) / se)) if se > 0 else 1.0
    relative = diff / p2 if p2 > 0 else _NAN
    return LiftResult(
        treatment_conversions,
        treatment_n,
        control_conversions,
        control_n,
        p1,
        p2,
        diff,
        relative,
        max(low, -1.0),
        min(high, 1.0),
        p_value,
        confidence,
        method,
        insufficient,
    )


@dataclass(frozen=True)
class ValueLift:
    """Treatment vs a comparison group in value per member (revenue per recipient): the difference
    of the means, with a normal-approximation interval from Welch's standard error. Values are in
    the CRM's currency; undefined figures are NaN."""

    treatment_per_member: float
    control_per_member: float
    difference: float
    ci_low: float
    ci_high: float
    confidence: float
    insufficient_data: bool

    @property
    def significant(self) -> bool:
        """Enough data, and the interval of the difference excludes zero."""
        return not self.insufficient_data and (self.ci_low > 0 or self.ci_high < 0)


def value_lift(
    treatment: Sequence[float], control: Sequence[float], confidence: float = 0.95, *, min_n: int = MIN_SAMPLE
) -> ValueLift:
    """Difference in mean value per member (every member counts, a non-converter as 0) between the
    treatment and a comparison group. Revenue per member is skewed (most are 0), so under
    ``min_n`` members per group the figures are given but marked insufficient."""
    t, c = pd.Series(treatment, dtype=float), pd.Series(control, dtype=float)
    insufficient = min(len(t), len(c)) < max(min_n, 2)
    t_mean = float(t.mean()) if len(t) else _NAN
    c_mean = float(c.mean()) if len(c) else _NAN
    if len(t) < 2 or len(c) < 2:
        return ValueLift(t_mean, c_mean, t_mean - c_mean, _NAN, _NAN, confidence, True)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * math.sqrt(float(t.var(ddof=1)) / len(t) + float(c.var(ddof=1)) / len(c))
    diff = t_mean - c_mean
    return ValueLift(t_mean, c_mean, diff, diff - half, diff + half, confidence, insufficient)


def ab_verdict(counts: Mapping[str, tuple[int, int]], confidence: float = 0.95) -> str:
    """``"no winner yet"`` until the interval of the difference between the best variant and the
    runner-up excludes zero, then ``"<best> wins (+x pts)"``. ``counts`` maps variant to
    ``(conversions, n)``; variants without enrollments are ignored."""
    rated = sorted(((c / n, name, c, n) for name, (c, n) in counts.items() if n > 0), key=lambda r: (-r[0], r[1]))
    if len(rated) < 2:
        return NO_WINNER
    (_, best, c1, n1), (_, _runner_up, c2, n2) = rated[0], rated[1]
    result = lift(c1, n1, c2, n2, confidence)
    return f"{best} wins (+{result.absolute * 100:.1f} pts)" if result.significant else NO_WINNER


# --- loading ---------------------------------------------------------------------------------


def _frame(engine: Engine, query: Select) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(query)
        return pd.DataFrame(result.all(), columns=list(result.keys()))


def _times(column: pd.Series) -> pd.Series[pd.Timestamp]:
    return pd.to_datetime(column, errors="coerce")


def _event_leaves(node: segments.Segment, catalog: Mapping[str, segments.Segment]) -> list[segments.Event]:
    if isinstance(node, segments.Event):
        return [node]
    if isinstance(node, segments.Combine):
        return [leaf for child in node.children for leaf in _event_leaves(child, catalog)]
    if isinstance(node, segments.Ref) and node.name in catalog:
        return _event_leaves(catalog[node.name], catalog)
    return []


def _related_leaves(node: segments.Segment, catalog: Mapping[str, segments.Segment]) -> list[segments.Related]:
    if isinstance(node, segments.Related):
        return [node]
    if isinstance(node, segments.Combine):
        return [leaf for child in node.children for leaf in _related_leaves(child, catalog)]
    if isinstance(node, segments.Ref) and node.name in catalog:
        return _related_leaves(catalog[node.name], catalog)
    return []


def conversion_states(
    program: Program, catalog: Mapping[str, segments.Segment] | None = None
) -> list[segments.Related]:
    """The CRM-state conditions (an opportunity's stage, a subscription renewed) that can meet the
    program's ``kpi.conversion``, in the order written (named segments followed, negated parts
    left out)."""
    catalog = config.load_segments().parsed if catalog is None else catalog
    return _related_leaves(program.kpi.conversion.parsed, catalog)


def conversion_events(program: Program, catalog: Mapping[str, segments.Segment] | None = None) -> list[segments.Event]:
    """The event conditions that can meet the program's ``kpi.conversion``, in the order written
    (named segments followed, negated parts left out); empty when the conversion is not about
    events (e.g. an opportunity stage)."""
    catalog = config.load_segments().parsed if catalog is None else catalog
    return _event_leaves(program.kpi.conversion.parsed, catalog)


def _outcome_rows_query(
    program: Program, as_of: datetime, catalog: Mapping[str, segments.Segment], types: list[str]
) -> Select:
    ctx = segments.Context(
        as_of=as_of,
        contact_id=E.c.contact_id,
        contacts_in_scope=False,
        catalog=catalog,
        enrolled_at=E.c.enrolled_at,
        anchor_at=E.c.anchor_at,
    )
    met = segments.compile_segment(program.kpi.conversion.parsed, ctx)
    measured = [M.c.program == program.id, M.c.status.in_(MESSAGED), func.coalesce(M.c.send_after, M.c.due_at) <= as_of]
    held_out_steps = [step.id for step in program.steps if step.holdout]
    if len(held_out_steps) < len(program.steps):
        # A step sent to the holdout too (``holdout: false``) is not what the comparison measures:
        # exposure counts only the steps the holdout does not get.
        measured.append(M.c.step.in_(held_out_steps))
    sent = (
        select(M.c.enrollment_id, func.count().label("messages_sent"))
        .where(*measured)
        .group_by(M.c.enrollment_id)
        .subquery()
    )
    prop = program.kpi.value_property
    source = E.outerjoin(sent, sent.c.enrollment_id == E.c.enrollment_id)
    if types:
        ev = schema.all_events("conversion_ev", lambda t: (t.c.event_type.in_(types), t.c.occurred_at <= as_of))
        source = source.outerjoin(ev, and_(ev.c.contact_id == E.c.contact_id, ev.c.occurred_at >= E.c.enrolled_at))
        event_columns = [
            ev.c.occurred_at.label("event_at"),
            (ev.c.properties[prop].as_float() if prop else literal(None)).label("event_value"),
        ]
    else:
        event_columns = [literal(None).label("event_at"), literal(None).label("event_value")]
    return (
        select(
            E.c.enrollment_id,
            E.c.contact_id,
            E.c.group,
            E.c.variant,
            E.c.enrolled_at,
            func.coalesce(sent.c.messages_sent, 0).label("messages_sent"),
            case((met, 1), else_=0).label("met"),
            (E.c.trigger[prop].as_float() if prop else literal(None)).label("trigger_value"),
            *event_columns,
        )
        .select_from(source)
        .where(E.c.program == program.id, E.c.enrolled_at <= as_of)
    )


def outcomes_from_rows(rows: pd.DataFrame, attribution_window: timedelta) -> pd.DataFrame:
    """One row per enrollment from (enrollment x conversion event) rows.

    An enrollment converted when its conversion segment is met (``met``) and, if events of the
    conversion's types followed the enrollment, the first of them came within the attribution
    window (so a conversion after the window does not count). ``converted_at`` is that first
    event's time; ``conversion_value`` sums the events' value property within the window, or
    takes the trigger's (the cart or quote value) when the events carry none.
    """
    columns = [
        "enrollment_id",
        "contact_id",
        "group",
        "variant",
        "enrolled_at",
        "messages_sent",
        "messaged",
        "converted",
        "converted_at",
        "time_to_convert",
        "conversion_value",
    ]
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    rows = rows.assign(enrolled_at=_times(rows["enrolled_at"]), event_at=_times(rows["event_at"]))
    in_window = rows["event_at"] <= rows["enrolled_at"] + attribution_window
    rows = rows.assign(
        window_event_at=rows["event_at"].where(in_window),
        window_value=pd.to_numeric(rows["event_value"], errors="coerce").where(in_window),
    )
    per = rows.groupby("enrollment_id", sort=True).agg(
        contact_id=("contact_id", "first"),
        group=("group", "first"),
        variant=("variant", "first"),
        enrolled_at=("enrolled_at", "first"),
        messages_sent=("messages_sent", "first"),
        met=("met", "max"),
        trigger_value=("trigger_value", "first"),
        any_event=("event_at", "count"),
        converted_at=("window_event_at", "min"),
        event_value=("window_value", "sum"),
        valued_events=("window_value", "count"),
    )
    converted = (per["met"] > 0) & ((per["any_event"] == 0) | per["converted_at"].notna())
    trigger_value = pd.to_numeric(per["trigger_value"], errors="coerce").fillna(0.0)
    value = per["event_value"].where(per["valued_events"] > 0, trigger_value)
    per = per.assign(
        messages_sent=per["messages_sent"].astype(int),
        messaged=per["messages_sent"] > 0,
        converted=converted,
        converted_at=per["converted_at"].where(converted),
        conversion_value=value.where(converted, 0.0).astype(float),
    )
    per["time_to_convert"] = per["converted_at"] - per["enrolled_at"]
    return per.reset_index()[columns]


def program_outcomes(
    engine: Engine,
    program: Program,
    as_of: datetime,
    catalog: Mapping[str, segments.Segment] | None = None,
) -> pd.DataFrame:
    """One row per enrollment of ``program`` enrolled at or before ``as_of``: ``group``,
    ``variant``, ``enrolled_at``, ``messages_sent`` / ``messaged`` (messages of the steps the
    holdout does not get that went out by ``as_of``), ``converted``, ``converted_at``,
    ``time_to_convert``, ``conversion_value``."""
    catalog = config.load_segments().parsed if catalog is None else catalog
    as_of = utc_naive(as_of)
    types = list(dict.fromkeys(t for leaf in conversion_events(program, catalog) for t in leaf.types))
    rows = _frame(engine, _outcome_rows_query(program, as_of, catalog, types))
    return outcomes_from_rows(rows, program.kpi.attribution_window)


# --- per-program KPIs ------------------------------------------------------------------------


def _group_counts(outcomes: pd.DataFrame, group: str) -> tuple[int, int]:
    members = outcomes[outcomes["group"] == group]
    return int(members["converted"].sum()), len(members)


def _lift_columns(prefix: str, result: LiftResult) -> dict[str, Any]:
    return {
        f"{prefix}": result.absolute,
        f"{prefix}_relative": result.relative,
        f"{prefix}_ci_low": result.ci_low,
        f"{prefix}_ci_high": result.ci_high,
        f"{prefix}_p_value": result.p_value,
        f"{prefix}_significant": result.significant,
        f"{prefix}_insufficient_data": result.insufficient_data,
    }


def kpi_summary(program: Program, outcomes: pd.DataFrame, confidence: float = 0.95) -> dict[str, Any]:
    """The program's primary KPI per group, lift vs holdout and vs global control, and the A/B
    test's per-variant rates and verdict (treatment group only)."""
    counts = {g: _group_counts(outcomes, g) for g in GROUPS}
    row: dict[str, Any] = {"program": program.id, "kpi": program.kpi.primary, "kpi_label": program.kpi.label}
    for group, (conversions, n) in counts.items():
        members = outcomes[(outcomes["group"] == group) & outcomes["converted"].astype(bool)]
        value = float(members["conversion_value"].sum())
        row |= {
            f"{group}_n": n,
            f"{group}_conversions": conversions,
            f"{group}_rate": conversions / n if n else _NAN,
            f"{group}_value": value,
            f"{group}_value_per_enrollment": value / n if n else _NAN,
        }
    treated = outcomes[outcomes["group"] == "treatment"]
    row["exposure"] = float(treated["messaged"].mean()) if len(treated) else _NAN
    for other in ("holdout", "control"):
        row |= _lift_columns(f"lift_vs_{other}", lift(*counts["treatment"], *counts[other], confidence))
        if program.kpi.value_property:
            values = value_lift(
                list(treated["conversion_value"]),
                list(outcomes.loc[outcomes["group"] == other, "conversion_value"]),
                confidence,
            )
            row |= {
                f"value_lift_vs_{other}": values.difference,
                f"value_lift_vs_{other}_ci_low": values.ci_low,
                f"value_lift_vs_{other}_ci_high": values.ci_high,
                f"value_lift_vs_{other}_significant": values.significant,
                f"value_lift_vs_{other}_insufficient_data": values.insufficient_data,
            }
    converted = treated[treated["converted"].astype(bool)]
    row["median_time_to_convert_hours"] = (
        cast("pd.Series[pd.Timedelta]", converted["time_to_convert"]).median() / pd.Timedelta(hours=1)
        if len(converted)
        else _NAN
    )
    variants: dict[str, dict[str, float]] = {}
    if program.ab_test is not None:
        for variant in program.ab_test.variants:
            members = treated[treated["variant"] == variant.name]
            n, c = len(members), int(members["converted"].sum())
            variants[variant.name] = {"n": n, "conversions": c, "rate": c / n if n else _NAN}
    row["ab_test"] = program.ab_test.name if program.ab_test else None
    row["variants"] = variants
    row["verdict"] = (
        ab_verdict({k: (int(v["conversions"]), int(v["n"])) for k, v in variants.items()}, confidence)
        if variants
        else None
    )
    return row


def _status_query(as_of: Mapping[str, datetime]) -> Select:
    due = func.coalesce(M.c.send_after, M.c.due_at)
    return (
        select(M.c.program, M.c.status, func.count().label("messages"))
        .where(or_(*(and_(M.c.program == pid, due <= at) for pid, at in as_of.items())))
        .group_by(M.c.program, M.c.status)
    )


def _provider_event_query(as_of: Mapping[str, datetime]) -> Select:
    pe = schema.provider_events
    return (
        select(M.c.program, pe.c.event_type, func.count(func.distinct(pe.c.message_id)).label("messages"))
        .select_from(pe.join(M, M.c.message_id == pe.c.message_id))
        .where(
            or_(*(and_(M.c.program == pid, pe.c.occurred_at <= at) for pid, at in as_of.items())),
            pe.c.event_type.in_(UNSUBSCRIBE_EVENTS + SPAM_EVENTS),
        )
        .group_by(M.c.program, pe.c.event_type)
    )


def deliverability(statuses: pd.DataFrame, provider_events: pd.DataFrame) -> pd.DataFrame:
    """Per program: messages that reached a provider (``sent``), ``dry_run`` messages, and the
    delivered, bounce, unsubscribe and spam-report rates over ``sent``. Open and click rates are
    named ``*_directional``: privacy proxies and link scanners inflate them, so they show a
    direction, never a KPI. Rates are NaN when nothing was sent; open and click rates are NaN too
    when no message of any program was ever opened or clicked (tracking is off, or no channel
    reports it), so "not tracked" never reads as 0%."""
    by_status = statuses.pivot_table(index="program", columns="status", values="messages", aggfunc="sum", fill_value=0)
    by_event = provider_events.pivot_table(
        index="program", columns="event_type", values="messages", aggfunc="sum", fill_value=0
    )
    programs = by_status.index.union(by_event.index)

    def total(table: pd.DataFrame, names: Iterable[str]) -> pd.Series:
        present = [n for n in names if n in table.columns]
        return table[present].sum(axis=1).reindex(programs, fill_value=0) if present else pd.Series(0, programs)

    sent = total(by_status, WENT_OUT)
    rate = sent.where(sent > 0)
    tracked = rate if total(by_status, OPENED_OR_LATER).sum() > 0 else rate * _NAN
    frame = pd.DataFrame(
        {
            Status.SENT: sent.astype(int),
            Status.DRY_RUN: total(by_status, (Status.DRY_RUN,)).astype(int),
            Status.FAILED: total(by_status, (Status.FAILED,)).astype(int),
            "delivered_rate": total(by_status, DELIVERED_OR_LATER) / rate,
            "bounce_rate": total(by_status, (Status.BOUNCED,)) / rate,
            "unsubscribe_rate": total(by_event, UNSUBSCRIBE_EVENTS) / rate,
            "spam_report_rate": total(by_event, SPAM_EVENTS) / rate,
            "open_rate_directional": total(by_status, OPENED_OR_LATER) / tracked,
            "click_rate_directional": total(by_status, (Status.CLICKED,)) / tracked,
        },
        index=programs,
    )
    frame.index.name = "program"
    return frame.reset_index()


def program_kpis(
    engine: Engine,
    programs: Mapping[str, Program] | Iterable[Program],
    as_of: datetime | Mapping[str, datetime],
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per program: treatment / holdout / control sizes, conversions, rates and converted
    value (``*_value``, ``*_value_per_enrollment``: revenue per recipient) of the primary KPI and,
    for a program with a ``kpi.value_property``, the difference in value per recipient vs holdout
    and vs control (``value_lift_vs_*`` with its interval, :func:`value_lift`); lift vs holdout and vs
    control (``lift_vs_*``, ``*_ci_low``, ``*_ci_high``, ``*_p_value``, ``*_significant``,
    ``*_insufficient_data``); ``exposure`` (share of treatment messaged); the median time to
    convert; the A/B ``variants`` and ``verdict``; and the deliverability diagnostics.

    ``as_of`` is one time for every program, or each program's own (the Campaigns page measures
    each program as of its newest run)."""
    chosen = list(programs.values()) if isinstance(programs, Mapping) else list(programs)
    times = {p.id: utc_naive(as_of[p.id] if isinstance(as_of, Mapping) else as_of) for p in chosen}
    catalog = config.load_segments().parsed
    rows = [kpi_summary(p, program_outcomes(engine, p, times[p.id], catalog), confidence) for p in chosen]
    summary = pd.DataFrame(rows, columns=None if rows else ["program"])
    diagnostics = deliverability(
        _frame(engine, _status_query(times)) if times else pd.DataFrame(columns=["program", "status", "messages"]),
        _frame(engine, _provider_event_query(times))
        if times
        else pd.DataFrame(columns=["program", "event_type", "messages"]),
    )
    merged = summary.merge(diagnostics, on="program", how="left")
    counts = [c for c in (Status.SENT, Status.DRY_RUN, Status.FAILED) if c in merged.columns]
    merged[counts] = merged[counts].fillna(0).astype(int)
    merged.insert(1, "as_of", [times[pid] for pid in merged["program"]] if len(merged) else [])
    return merged


# --- business metrics ------------------------------------------------------------------------


def _purchases_query(as_of: datetime) -> Select:
    ev = schema.all_events("purchase_ev", lambda t: (t.c.event_type == "purchase", t.c.occurred_at <= as_of))
    ranked = select(
        ev.c.contact_id,
        ev.c.occurred_at,
        func.row_number().over(partition_by=ev.c.contact_id, order_by=(ev.c.occurred_at, ev.c.event_id)).label("nth"),
    ).subquery()
    return select(
        ranked.c.contact_id,
        func.max(ranked.c.nth).label("purchases"),
        func.min(case((ranked.c.nth == 1, ranked.c.occurred_at))).label("first_at"),
        func.min(case((ranked.c.nth == 2, ranked.c.occurred_at))).label("second_at"),
    ).group_by(ranked.c.contact_id)


def purchase_metrics(buyers: pd.DataFrame, as_of: datetime) -> dict[str, float]:
    """From one row per buyer (``purchases``, ``first_at``, ``second_at``):

    - ``repeat_purchase_rate``: share of buyers with two purchases or more;
    - ``first_to_second_conversion``: of buyers whose first purchase is at least 90 days old,
      the share who bought again within 90 days of it (a mature cohort, so recent buyers do not
      drag it down);
    - ``median_days_to_second_purchase``: over buyers with a second purchase.
    """
    if buyers.empty:
        return {
            "buyers": 0,
            "repeat_purchase_rate": _NAN,
            "first_to_second_conversion": _NAN,
            "median_days_to_second_purchase": _NAN,
        }
    first, second = _times(buyers["first_at"]), _times(buyers["second_at"])
    gap = second - first
    mature = first <= as_of - SECOND_PURCHASE_WINDOW
    within = gap <= SECOND_PURCHASE_WINDOW
    return {
        "buyers": len(buyers),
        "repeat_purchase_rate": float((buyers["purchases"] >= 2).mean()),
        "first_to_second_conversion": float(within[mature].mean()) if mature.any() else _NAN,
        "median_days_to_second_purchase": float(gap.median() / pd.Timedelta(days=1)) if gap.notna().any() else _NAN,
    }


def _growth_query(as_of: datetime) -> Select:
    c = schema.contacts
    start = as_of - GROWTH_WINDOW
    return select(
        func.sum(case((and_(c.c.created_at > start, c.c.created_at <= as_of), 1), else_=0)).label("new"),
        func.sum(case((c.c.created_at <= start, 1), else_=0)).label("before"),
    )


def growth_metrics(counts: pd.DataFrame) -> dict[str, float]:
    """Contact-base growth: contacts created in the last 4 weeks (``new_contacts_4w``), those
    created before (``contacts_before_4w``) and ``contact_growth_4w`` = new / before."""
    new = int(counts["new"].fillna(0).iloc[0]) if len(counts) else 0
    before = int(counts["before"].fillna(0).iloc[0]) if len(counts) else 0
    return {
        "new_contacts_4w": new,
        "contacts_before_4w": before,
        "contact_growth_4w": new / before if before else _NAN,
    }


def _revenue_query(as_of: datetime) -> Select:
    c, s = schema.contacts, schema.subscriptions
    start = as_of - RETENTION_WINDOW
    churned_sub_mrr = select(func.max(s.c.mrr)).where(s.c.contact_id == c.c.contact_id).scalar_subquery()
    live_mrr = (
        select(func.sum(s.c.mrr))
        .where(s.c.contact_id == c.c.contact_id, s.c.status.in_(("active", "past_due")))
        .scalar_subquery()
    )
    churned = and_(c.c.churned_at > start, c.c.churned_at <= as_of)
    return select(
        case((churned, "churned"), else_="retained").label("cohort"),
        func.coalesce(case((churned, churned_sub_mrr), else_=live_mrr), 0.0).label("mrr"),
        c.c.mrr.label("contact_mrr"),
        c.c.ltv,
        c.c.created_at,
        c.c.churned_at,
    ).where(c.c.created_at <= start, func.coalesce(c.c.churned_at, as_of) > start)


def revenue_retention(base: pd.DataFrame) -> dict[str, float]:
    """Net revenue retention over the last 12 months, from subscriptions and churned contacts.

    The base is every contact created at least 12 months before ``as_of`` that had not churned
    by then. ``retained_mrr`` is today's MRR of the active and past-due subscriptions of the
    base contacts still there (so their expansion and contraction count; contacts created within
    the year do not). ``churned_mrr`` is what the base contacts who churned within the year paid
    a month: their subscription's MRR, else the contact's ``mrr``, else ``ltv`` spread over
    their tenure in months (for CRMs that zero MRR on churn). ``net_revenue_retention`` =
    retained / (retained + churned). The CRM keeps no MRR history, so the starting MRR is this
    reconstruction, not a snapshot from a year ago.
    """
    if base.empty:
        return {"retained_mrr": 0.0, "churned_mrr": 0.0, "net_revenue_retention": _NAN}
    churned = base[base["cohort"] == "churned"]
    tenure = (_times(churned["churned_at"]) - _times(churned["created_at"])) / pd.Timedelta(days=30.44)
    from_ltv = pd.to_numeric(churned["ltv"], errors="coerce") / tenure.where(tenure >= 1, 1.0)
    lost = (
        pd.to_numeric(churned["mrr"], errors="coerce")
        .where(lambda v: v > 0)
        .fillna(pd.to_numeric(churned["contact_mrr"], errors="coerce").where(lambda v: v > 0))
        .fillna(from_ltv)
        .fillna(0.0)
    )
    retained = float(pd.to_numeric(base.loc[base["cohort"] == "retained", "mrr"], errors="coerce").fillna(0).sum())
    churned_mrr = float(lost.sum())
    start = retained + churned_mrr
    return {
        "retained_mrr": round(retained, 2),
        "churned_mrr": round(churned_mrr, 2),
        "net_revenue_retention": retained / start if start > 0 else _NAN,
    }


def business_metrics(engine: Engine, as_of: datetime) -> dict[str, float]:
    """Business outcomes beyond single programs: :func:`purchase_metrics` (repeat purchase rate,
    first-to-second purchase conversion, median days to the second purchase),
    :func:`growth_metrics` (contact-base growth over 4 weeks) and :func:`revenue_retention` (net
    revenue retention over 12 months). Subscription status is the CRM's current snapshot."""
    as_of = utc_naive(as_of)
    return (
        purchase_metrics(_frame(engine, _purchases_query(as_of)), as_of)
        | growth_metrics(_frame(engine, _growth_query(as_of)))
        | revenue_retention(_frame(engine, _revenue_query(as_of)))
    )


# --- history ---------------------------------------------------------------------------------


def funnel_history(engine: Engine, program_id: str | None = None) -> pd.DataFrame:
    """The funnel of every logged run, oldest first, for charts: one row per (program, run_id,
    as_of), one column per funnel metric (dimensions summed), and the primary KPI's conversion
    rate per group as logged by the run (``kpi_rate_treatment``, ``kpi_rate_holdout``,
    ``kpi_rate_control``; NaN when the group is empty)."""
    query = select(K.c.program, K.c.run_id, K.c.as_of, K.c.metric, K.c.dimension, K.c.value)
    if program_id is not None:
        query = query.where(K.c.program == program_id)
    return funnel_table(_frame(engine, query))


def funnel_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Pivot ``lifecycle_kpis`` rows into the :func:`funnel_history` table."""
    keys = ["program", "run_id", "as_of"]
    if rows.empty:
        return pd.DataFrame(columns=keys)
    rows = rows.assign(as_of=_times(rows["as_of"]))
    kpi = rows["metric"].isin(("kpi_enrolled", "kpi_converted"))
    funnel = rows[~kpi].pivot_table(index=keys, columns="metric", values="value", aggfunc="sum", fill_value=0)
    per_group = rows[kpi].pivot_table(index=keys, columns=["metric", "dimension"], values="value", aggfunc="sum")
    table = funnel.reindex(funnel.index.union(per_group.index), fill_value=0)
    for group in GROUPS:
        enrolled = per_group.get(("kpi_enrolled", group))
        converted = per_group.get(("kpi_converted", group))
        if enrolled is None:
            table[f"kpi_rate_{group}"] = _NAN
            continue
        converted = converted if converted is not None else pd.Series(0.0, index=enrolled.index)
        table[f"kpi_rate_{group}"] = (converted.fillna(0) / enrolled.where(enrolled > 0)).reindex(table.index)
    table.columns.name = None
    return table.reset_index().sort_values(["as_of", "program", "run_id"], ignore_index=True)
