"""The weekly KPI digest: what every program did, as one email for people who never open Airflow.

For each program: its primary KPI for treatment, holdout and global control, the lift with its
95% confidence interval, the A/B verdict, this week's funnel and deliverability, and the
week-over-week trend as a chart. Then business outcomes, the newest data-quality figures, and
a short "what changed" list generated from the numbers (biggest movers, significant lifts, A/B
tests without a winner, deliverability alerts).

Figures come from :mod:`lifecycle.reporting.measurement` (KPIs, lift, funnel history, business metrics)
and ``lifecycle_data_quality``; the as-of time is the run's data interval end, never the clock.
The HTML and text parts are rendered by the sandboxed, autoescaping Jinja2 environment from
``include/templates/_digest/``; charts are PNGs referenced as ``cid:`` inline images. Sending is
:mod:`lifecycle.airflow.digest_operators`' job. The view helpers here also feed the Campaigns page.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import pandas as pd
from babel.numbers import format_currency
from sqlalchemy import Engine, inspect, select

from lifecycle import config, paths
from lifecycle.channels import registry
from lifecycle.config import Policy, Program
from lifecycle.engine import ad_audiences, hygiene
from lifecycle.messages.rendering import environment
from lifecycle.model import schema
from lifecycle.model.db import utc_naive
from lifecycle.model.ledger import UNKNOWN_COUNTRY, EnrollmentState, Status
from lifecycle.reporting import charts, display, measurement, performance

WEEK = timedelta(days=7)
TREND_WEEKS = 8
CHART_SIZE = (420, 360)
OVERVIEW_SIZE = (420, 300)
MOVERS = 3
DELIVERABILITY_LIMITS = {"bounce_rate": 0.02, "spam_report_rate": 0.001, "unsubscribe_rate": 0.01}
DELIVERABILITY_LABELS = {
    "bounce_rate": "bounce rate",
    "spam_report_rate": "spam-report rate",
    "unsubscribe_rate": "unsubscribe rate",
}
TREND_METRICS = ("enrolled", EnrollmentState.EXITED, Status.PLANNED, Status.SUPPRESSED, Status.CAPPED, Status.SENT)
LAST_OF_PERIOD = ("audience", "kpi_rate_treatment", "kpi_rate_holdout", "kpi_rate_control")
QUALITY_RATES = {
    "required_fields_filled_rate": "Required fields filled",
    "duplicate_rate": "Duplicate contacts",
    "invalid_email_rate": "Invalid email addresses",
    "invalid_phone_rate": "Invalid phone numbers",
    "consent_coverage_email": "Email marketing consent",
    "consent_coverage_sms": "SMS marketing consent",
    "bounce_rate": "Bounce rate",
}
RATE_BASES = {"bounce_rate": "messages_out"}
"""Data-quality rates and the count they divide: a rate over nothing is shown as a dash, not 0%."""
BUSINESS = (
    ("repeat_purchase_rate", "Repeat purchase rate", "percent"),
    ("first_to_second_conversion", "First-to-second purchase within 90 days", "percent"),
    ("median_days_to_second_purchase", "Median days to second purchase", "number"),
    ("new_contacts_4w", "New contacts, last 4 weeks", "count"),
    ("contact_growth_4w", "Contact growth, last 4 weeks", "percent"),
    ("net_revenue_retention", "Net revenue retention, 12 months", "percent"),
)
DASH = "–"
NOT_TRACKED = "not tracked"
NOT_MEASURED = "not measured"
MONEY_LOCALE = "en_US"
"""How amounts are written (the digest and the page are in English); the currency is the policy's."""
_T = TypeVar("_T")


# --- formatting --------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _present(value: _T | None) -> _T | None:
    """``value``, or None where a DataFrame left NaN for "nothing" (a program without an A/B test)."""
    return None if _missing(value) else value


def percent(value: float | None, digits: int = 1) -> str:
    """``0.1234`` as ``12.3%``; a dash when undefined."""
    value = _present(value)
    return DASH if value is None else f"{value * 100:.{digits}f}%"


def points(value: float | None) -> str:
    """A difference of proportions in percentage points, signed: ``+4.2 pts``."""
    value = _present(value)
    return DASH if value is None else f"{value * 100:+.1f} pts"


def interval(low: float | None, high: float | None) -> str:
    """A confidence interval of a difference, in points: ``-1.0 to +7.4 pts``."""
    low, high = _present(low), _present(high)
    if low is None or high is None:
        return DASH
    return f"{low * 100:+.1f} to {high * 100:+.1f} pts"


def count(value: float | None) -> str:
    """A whole number with thousands separators."""
    value = _present(value)
    return DASH if value is None else f"{round(value):,}"


def number(value: float | None) -> str:
    """A figure with one decimal."""
    value = _present(value)
    return DASH if value is None else f"{value:,.1f}"


def money(value: float | None, currency: str, signed: bool = False) -> str:
    """An amount in ``currency`` (ISO 4217): ``$1,234.50``; signed for a difference: ``+$3.20``."""
    value = _present(value)
    if value is None:
        return DASH
    if not signed:
        return format_currency(value, currency, locale=MONEY_LOCALE)
    sign = "+" if value > 0 else "-" if value < 0 else ""
    return sign + format_currency(abs(value), currency, locale=MONEY_LOCALE)


def change(now: float, before: float) -> str:
    """How a count moved: ``+118%``, ``new`` from zero, ``0%`` when flat."""
    if before == 0:
        return "new" if now else "0%"
    return f"{(now - before) / before * 100:+.0f}%"


FORMATS = {"percent": percent, "count": count, "number": number}


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``frame``'s rows as dicts by column name (the frames here all have string column names)."""
    return cast(list[dict[str, Any]], frame.to_dict("records"))


# --- figures -----------------------------------------------------------------------------------


def period_trend(
    history: pd.DataFrame,
    programs: Iterable[str],
    as_of: datetime,
    periods: int = TREND_WEEKS,
    length: timedelta = WEEK,
) -> pd.DataFrame:
    """One row per (program, period) for ``programs`` and the ``periods`` periods ending at
    ``as_of``, oldest first; ``history`` is :func:`measurement.funnel_history`.

    Period ``k`` back covers ``(as_of - (k+1)*length, as_of - k*length]`` and is labelled by its
    end (``period_end``). Funnel counts are summed over the period's runs (every metric of
    :data:`TREND_METRICS` is there, 0 when never logged); the audience and the logged KPI rates
    are the period's last run's (NaN when it had no run); ``messages`` is what went out (``sent``:
    never the developer tools' simulated sends).
    """
    as_of = utc_naive(as_of)
    ends = [as_of - length * k for k in range(periods - 1, -1, -1)]
    programs = list(programs)
    grid = pd.MultiIndex.from_product([programs, ends], names=["program", "period_end"])
    if history.empty:
        history = pd.DataFrame({"program": [], "run_id": [], "as_of": pd.Series(dtype="datetime64[us]")})
    runs = history[
        history["program"].isin(programs) & (history["as_of"] <= as_of) & (history["as_of"] > as_of - length * periods)
    ]
    run_times: pd.Series[pd.Timestamp] = runs["as_of"]
    back = ((as_of - run_times) // length).astype(int)
    runs = runs.assign(period_end=as_of - back * length).sort_values("as_of")
    counted = [c for c in runs.columns if c not in ("program", "run_id", "as_of", "period_end", *LAST_OF_PERIOD)]
    grouped = runs.groupby(["program", "period_end"])
    table = grouped[counted].sum().join(grouped[[c for c in LAST_OF_PERIOD if c in runs.columns]].last())
    table = table.reindex(grid)
    table[counted] = table[counted].fillna(0.0)
    for column in [*TREND_METRICS, *LAST_OF_PERIOD]:
        if column not in table.columns:
            table[column] = math.nan if column in LAST_OF_PERIOD else 0.0
    table["messages"] = table[Status.SENT]
    return table.reset_index()


def _hygiene_runs(engine: Engine, as_of: datetime) -> list[tuple[str, datetime]]:
    """The newest two data-hygiene runs at or before ``as_of``, newest first."""
    dq = schema.data_quality
    if not inspect(engine).has_table(dq.name):
        return []
    with engine.connect() as conn:
        runs = conn.execute(
            select(dq.c.run_id, dq.c.as_of)
            .where(dq.c.as_of <= utc_naive(as_of))
            .group_by(dq.c.run_id, dq.c.as_of)
            .order_by(dq.c.as_of.desc())
            .limit(2)
        ).all()
    return [(run_id, run_as_of) for run_id, run_as_of in runs]


def data_quality(engine: Engine, as_of: datetime) -> list[dict[str, Any]]:
    """The newest data-hygiene figures of the whole CRM at or before ``as_of``, labelled rates
    first, each with its change since the hygiene run before; empty when the hygiene job has not
    run yet."""
    dq = schema.data_quality
    runs = _hygiene_runs(engine, as_of)
    if not runs:
        return []
    with engine.connect() as conn:
        values = {
            run_id: dict(
                conn.execute(select(dq.c.metric, dq.c.value).where(dq.c.run_id == run_id, dq.c.dimension == "")).all()
            )
            for run_id, _ in runs
        }
    latest, previous = values[runs[0][0]], values[runs[1][0]] if len(runs) > 1 else {}
    order = [m for m in QUALITY_RATES if m in latest] + sorted(m for m in latest if m not in QUALITY_RATES)
    figures = []
    for metric in order:
        rate = metric in QUALITY_RATES or metric.endswith("_rate")
        moved = latest[metric] - previous[metric] if metric in previous else None
        undefined = metric in RATE_BASES and latest.get(RATE_BASES[metric]) == 0
        if undefined or (moved is not None and previous.get(RATE_BASES.get(metric, "")) == 0):
            moved = None
        figures.append(
            {
                "metric": metric,
                "label": QUALITY_RATES.get(metric, metric.replace("_", " ")),
                "value": DASH if undefined else (percent if rate else count)(latest[metric]),
                "change": points(moved) if rate else (DASH if moved is None else f"{moved:+,.0f}"),
                "headline": rate,
                "checked_at": runs[0][1],
            }
        )
    return figures


def _region_label(region: str, regions: Mapping[str, Any]) -> str:
    if region == hygiene.ELSEWHERE:
        return "Other countries" if regions else "All contacts"
    return "Unknown country" if region == UNKNOWN_COUNTRY else region.upper()


def consent_coverage(engine: Engine, as_of: datetime, policy: Policy) -> dict[str, Any]:
    """Consent coverage from the newest data-hygiene run at or before ``as_of``: per region, its
    contacts and the share reachable for marketing on each channel under its rule; per topic, the
    share not opted out. A share over no contacts is "not measured", never 0%. Empty when the
    hygiene job has not measured coverage."""
    dq = schema.data_quality
    runs = _hygiene_runs(engine, as_of)
    if not runs:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(dq.c.metric, dq.c.dimension, dq.c.value).where(dq.c.run_id == runs[0][0], dq.c.dimension != "")
        ).all()
    values = {(metric, part): value for metric, part, value in rows}
    prefix = {kind: f"{kind}:" for kind in (hygiene.REGION, hygiene.TOPIC)}
    regions = sorted(
        (part.removeprefix(prefix[hygiene.REGION]) for metric, part in values if metric == "contacts"),
        key=lambda r: (r in (hygiene.ELSEWHERE, UNKNOWN_COUNTRY), r == hygiene.ELSEWHERE, r),
    )
    measured = {m.removeprefix("reachable_") for m, _ in values if m.startswith("reachable_") and "_rate_" not in m}
    channels = [c for c in registry.names() if c in measured] + sorted(measured - set(registry.names()))

    def share(metric: str, part: str) -> str:
        value = values.get((metric, part))
        return NOT_MEASURED if value is None else percent(value)

    if not regions and not any(part.startswith(prefix[hygiene.TOPIC]) for _, part in values):
        return {}
    return {
        "channels": channels,
        "regions": [
            {
                "label": _region_label(region, policy.regions),
                "contacts": count(values[("contacts", hygiene.dimension(hygiene.REGION, region))]),
                "shares": [share(f"reachable_rate_{c}", hygiene.dimension(hygiene.REGION, region)) for c in channels],
            }
            for region in regions
        ],
        "topics": [
            {
                "label": policy.topics[topic].label if topic in policy.topics else topic,
                "share": share("subscribed_rate", hygiene.dimension(hygiene.TOPIC, topic)),
            }
            for topic in sorted(
                part.removeprefix(prefix[hygiene.TOPIC]) for metric, part in values if metric == "opted_out"
            )
        ],
    }


def business_figures(engine: Engine, as_of: datetime) -> list[dict[str, str]]:
    """The business outcomes of :func:`measurement.business_metrics`, now and a week before."""
    now = measurement.business_metrics(engine, as_of)
    before = measurement.business_metrics(engine, utc_naive(as_of) - WEEK)
    return [
        {"label": label, "value": FORMATS[kind](now.get(key)), "week_before": FORMATS[kind](before.get(key))}
        for key, label, kind in BUSINESS
    ]


# --- views -------------------------------------------------------------------------------------


def _verdict(row: Mapping[str, Any], prefix: str) -> tuple[bool, str]:
    significant = bool(row[f"{prefix}_significant"])
    if row[f"{prefix}_insufficient_data"]:
        return significant, f"not enough data yet (under {measurement.MIN_SAMPLE} per group)"
    return significant, "significant" if significant else "not significant yet"


def _lift_view(row: Mapping[str, Any], other: str) -> dict[str, Any]:
    prefix = f"lift_vs_{other}"
    significant, verdict = _verdict(row, prefix)
    return {
        "against": other,
        "value": points(row[prefix]),
        "ci": interval(row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"]),
        "significant": significant,
        "verdict": verdict,
    }


def _value_lift_view(row: Mapping[str, Any], other: str, currency: str) -> dict[str, Any]:
    prefix = f"value_lift_vs_{other}"
    significant, verdict = _verdict(row, prefix)
    low, high = (money(row[f"{prefix}_{end}"], currency, signed=True) for end in ("ci_low", "ci_high"))
    return {
        "against": other,
        "value": money(row[prefix], currency, signed=True),
        "ci": DASH if DASH in (low, high) else f"{low} to {high}",
        "significant": significant,
        "verdict": verdict,
    }


def program_facts(program: Program) -> dict[str, Any]:
    """Who and what a program is: id, name, owner, priority, schedule, channels, KPI and A/B test."""
    return {
        "id": program.id,
        "name": program.name,
        "owner": program.owner,
        "priority": program.priority,
        "schedule": program.schedule or "manual",
        "channels": sorted({c for s in program.steps for c in s.reach}),
        "kpi_label": program.kpi.label,
        "ab_test": program.ab_test.name if program.ab_test else None,
    }


def _groups(program: Program) -> tuple[str, ...]:
    """The groups a program is compared with: a service program is never in the global control group."""
    return tuple(g for g in measurement.GROUPS if not (program.is_service and g == "control"))


def _duration(hours: float | None) -> str:
    hours = _present(hours)
    return DASH if hours is None else display.duration(timedelta(hours=hours))


def state_tables(program: Program, catalog: Mapping[str, Any] | None = None) -> list[str]:
    """The CRM tables whose state the program's conversion is read from (an opportunity's stage,
    a renewed subscription) when no event marks it; empty when events do. Such a conversion
    counts when the state holds at the as-of time: it has no time, so no time to convert.
    ``catalog``: the named segments (read from the config when not given)."""
    catalog = config.load_segments().parsed if catalog is None else catalog
    if measurement.conversion_events(program, catalog):
        return []
    return list(dict.fromkeys(leaf.table for leaf in measurement.conversion_states(program, catalog)))


def funnel_view(funnel: performance.Funnel) -> list[dict[str, str]]:
    """A funnel's outcomes as display items (label, count, the reasons behind it); simulated sends
    only when there are any. The items add up to the planned messages."""
    return [
        {
            "key": o.key,
            "label": o.label,
            "value": count(funnel.outcomes[o.key]),
            "reasons": display.reasons(funnel.reasons.get(o.key, {})),
        }
        for o in performance.OUTCOMES
        if o.key != performance.SIMULATED or funnel.outcomes[o.key]
    ]


def _deliverability_view(row: Mapping[str, Any]) -> list[dict[str, str]]:
    sent = row.get(Status.SENT, 0)

    def rate(metric: str, digits: int = 1, untracked: str = DASH) -> str:
        if not sent:
            return DASH
        return untracked if _missing(row.get(metric)) else percent(row.get(metric), digits)

    return [
        {"label": "Delivered", "value": rate("delivered_rate")},
        {"label": "Bounced", "value": rate("bounce_rate")},
        {"label": "Unsubscribed", "value": rate("unsubscribe_rate")},
        {"label": "Spam reports", "value": rate("spam_report_rate", 2)},
        {"label": "Opens (directional)", "value": rate("open_rate_directional", untracked=NOT_TRACKED)},
        {"label": "Clicks (directional)", "value": rate("click_rate_directional", untracked=NOT_TRACKED)},
    ]


def program_view(
    program: Program,
    row: Mapping[str, Any],
    trend: pd.DataFrame,
    week: performance.Funnel,
    week_before: performance.Funnel,
    currency: str,
    catalog: Mapping[str, Any] | None = None,
    channels: Sequence[performance.ChannelFigures] = (),
    audiences: Sequence[ad_audiences.AudienceStatus] = (),
    audience_week: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Everything shown about one program, as display strings: its facts, KPI per group (no global
    control for a service program), lifts, time to convert, A/B verdict, the week's funnel of
    planned messages by outcome, deliverability, the week-over-week movement of the messages
    that went out, ``channels``' figures per channel and ``audiences`` (its ad audiences as last
    synced, with ``audience_week``'s adds and removes per audience when given). Where the program has a
    ``kpi.value_property``: revenue per group and per recipient in ``currency``, and the
    difference per recipient vs each comparison group."""
    weeks = program_weeks(trend, program.id)
    this_week = weeks.iloc[-1] if len(weeks) else pd.Series(dtype=float)
    variants = [
        {"name": name, "rate": percent(v["rate"]), "n": count(v["n"]), "conversions": count(v["conversions"])}
        for name, v in (_present(row.get("variants")) or {}).items()
    ]
    groups = _groups(program)
    states = state_tables(program, catalog)
    sent_now, sent_before = week.outcomes[Status.SENT], week_before.outcomes[Status.SENT]
    nobody_converted = all(row[f"{g}_conversions"] == 0 for g in groups) and any(row[f"{g}_n"] for g in groups)
    return program_facts(program) | {
        "groups": [
            {
                "group": group,
                "rate": percent(row[f"{group}_rate"]),
                "n": count(row[f"{group}_n"]),
                "conversions": count(row[f"{group}_conversions"]),
                "value": money(row[f"{group}_value"], currency),
                "value_per_enrollment": money(row[f"{group}_value_per_enrollment"], currency),
            }
            for group in groups
        ],
        "currency": currency,
        "value_lifts": [_value_lift_view(row, other, currency) for other in groups if other != "treatment"]
        if program.kpi.value_property
        else [],
        "no_conversions": nobody_converted,
        "treatment_rate": percent(row["treatment_rate"]),
        "lifts": [_lift_view(row, other) for other in groups if other != "treatment"],
        "verdict": _present(row.get("verdict")),
        "variants": variants,
        "value_property": program.kpi.value_property,
        "time_to_convert": NOT_MEASURED if states else _duration(row.get("median_time_to_convert_hours")),
        "measured_from": states,
        Status.PLANNED: count(week.planned),
        "funnel": funnel_view(week),
        "enrolled": count(this_week.get("enrolled", 0.0)),
        EnrollmentState.EXITED: count(this_week.get(EnrollmentState.EXITED, 0.0)),
        "messages_week": count(sent_now),
        "messages_change": change(sent_now, sent_before),
        "sent": count(row.get(Status.SENT, 0)),
        "deliverability": _deliverability_view(row),
        "per_channel": channel_view(channels),
        "audiences": audience_view(program, audiences, audience_week),
    }


def channel_view(channels: Sequence[performance.ChannelFigures]) -> list[dict[str, str]]:
    """One row per channel as display strings, the figures in :data:`performance.CHANNEL_FIGURES`'s
    order (``simulated`` left out when no channel has one)."""
    shown = [f for f in performance.CHANNEL_FIGURES if f != "simulated" or any(c.simulated for c in channels)]
    return [{"channel": c.channel} | {f: count(getattr(c, f)) for f in shown} for c in channels]


def audience_view(
    program: Program,
    audiences: Sequence[ad_audiences.AudienceStatus],
    week: Mapping[str, tuple[int, int]] | None = None,
) -> list[dict[str, str]]:
    """One row per ad audience of the program as display strings: its id and platform, its size,
    when it was last synced and that sync's adds and removes (and, given ``week``, the adds and
    removes of the period). The configured audience shows as never synced before its first sync;
    one synced before but no longer configured still shows what the platform holds."""
    sync = program.audience_sync
    shown = {a.audience: a for a in audiences}
    if sync is not None and sync.audience not in shown:
        shown[sync.audience] = ad_audiences.AudienceStatus(sync.audience, 0, None, 0, 0)
    rows = []
    for audience, status in sorted(shown.items()):
        platform = sync.platform if sync is not None and sync.audience == audience else "no longer synced"
        row = {
            "audience": audience,
            "platform": platform,
            "size": count(status.size),
            "last_synced": f"{status.last_synced_at:%Y-%m-%d %H:%M} UTC" if status.last_synced_at else "never",
            "last_added": count(status.last_added),
            "last_removed": count(status.last_removed),
        }
        if week is not None:
            added, removed = week.get(audience, (0, 0))
            row |= {"week_added": count(added), "week_removed": count(removed)}
        rows.append(row)
    return rows


def _item(kind: str, text: str) -> dict[str, str]:
    return {"kind": kind, "text": text}


def _deliverability_alerts(programs: Mapping[str, Program], rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        _item(
            "alert",
            f"{programs[row['program']].name}: {DELIVERABILITY_LABELS[metric]} {percent(row[metric], 2)} "
            f"is above {percent(limit)}",
        )
        for row in rows
        for metric, limit in DELIVERABILITY_LIMITS.items()
        if row.get(Status.SENT, 0) and not _missing(row.get(metric)) and row[metric] > limit
    ]


def _lifts(programs: Mapping[str, Program], rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    items = []
    for row in rows:
        program = programs[row["program"]]
        for other in _groups(program)[1:]:
            lift = f"lift_vs_{other}"
            if row[f"{lift}_significant"]:
                verb = "lifts" if row[lift] > 0 else "lowers"
                ci = interval(row[f"{lift}_ci_low"], row[f"{lift}_ci_high"])
                items.append(
                    _item(
                        "lift",
                        f"{program.name} {verb} {program.kpi.label} by {points(row[lift])} vs {other} (95% CI {ci})",
                    )
                )
    if rows and not items:
        items.append(_item("lift", "No program shows a significant lift yet: every 95% CI includes zero."))
    return items


def _ab_tests(programs: Mapping[str, Program], rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    items = []
    for row in rows:
        if _present(row.get("verdict")):
            rates = ", ".join(f"{name} {percent(v['rate'])} (n={count(v['n'])})" for name, v in row["variants"].items())
            name = programs[row["program"]].name
            items.append(_item("ab", f"A/B test {row['ab_test']} ({name}): {row['verdict']} — {rates}"))
    return items


def _movers(
    programs: Mapping[str, Program],
    trend: pd.DataFrame,
    weeks: Mapping[str, tuple[performance.Funnel, performance.Funnel]],
) -> list[dict[str, str]]:
    """The biggest week-over-week moves: messages sent (relative change) and KPI rate (points)."""
    found: list[tuple[float, str]] = []
    for program_id, program in programs.items():
        if program_id in weeks:
            now, before = (funnel.outcomes[Status.SENT] for funnel in weeks[program_id])
            if now != before:
                found.append(
                    (
                        abs(now - before) / max(before, 1),
                        f"{program.name}: {count(now)} messages sent this week, {count(before)} the week before "
                        f"({change(now, before)})",
                    )
                )
        rates = program_weeks(trend, program_id)
        if len(rates) < 2:
            continue
        moved = rates.iloc[-1]["kpi_rate_treatment"] - rates.iloc[-2]["kpi_rate_treatment"]
        if not _missing(moved) and abs(moved) >= 0.005:
            found.append(
                (
                    abs(moved) * 10,
                    f"{program.name}: {program.kpi.label} "
                    f"{percent(rates.iloc[-1]['kpi_rate_treatment'])} ({points(moved)} week over week)",
                )
            )
    return [_item("mover", text) for _size, text in sorted(found, key=lambda item: -item[0])[:MOVERS]]


def what_changed(
    programs: Mapping[str, Program],
    kpis: pd.DataFrame,
    trend: pd.DataFrame,
    errors: Mapping[str, Any] | None = None,
    weeks: Mapping[str, tuple[performance.Funnel, performance.Funnel]] | None = None,
) -> list[dict[str, str]]:
    """The week in a few lines, generated from the numbers and naming programs by name:
    ``{"kind", "text"}`` items where kind is ``alert`` (an invalid program file, deliverability
    above its limit), ``lift`` (a significant lift, or the note that there is none), ``ab`` (A/B
    verdicts) or ``mover``. ``weeks`` holds each program's funnel this week and the week before."""
    rows = [r for r in records(kpis) if r["program"] in programs]
    invalid = [
        _item("alert", f"{pid}: the program file is invalid, so it did not run ({error})")
        for pid, error in sorted((errors or {}).items())
    ]
    return (
        invalid
        + _deliverability_alerts(programs, rows)
        + _lifts(programs, rows)
        + _ab_tests(programs, rows)
        + _movers(programs, trend, weeks or {})
    )


def weekly_funnels(
    engine: Engine, as_of: Mapping[str, datetime]
) -> dict[str, tuple[performance.Funnel, performance.Funnel]]:
    """Per program, the funnel of the week to its as-of time and of the week before."""
    now = performance.funnels(engine, {pid: (at - WEEK, at) for pid, at in as_of.items()})
    before = performance.funnels(engine, {pid: (at - 2 * WEEK, at - WEEK) for pid, at in as_of.items()})
    return {pid: (now[pid], before[pid]) for pid in as_of}


def program_weeks(trend: pd.DataFrame, program_id: str) -> pd.DataFrame:
    """One program's rows of :func:`period_trend`, oldest first."""
    return trend[trend["program"] == program_id].sort_values("period_end")


def week_labels(weeks: pd.DataFrame) -> list[str]:
    """Chart labels for period ends: ``16 Nov``."""
    return [f"{end:%d %b}" for end in weeks["period_end"]]


def kpi_panel(weeks: pd.DataFrame) -> charts.Panel:
    """The logged KPI rate per period, treatment against holdout."""
    return charts.Panel(
        "KPI rate",
        [
            charts.Series("treatment", list(weeks["kpi_rate_treatment"])),
            charts.Series("holdout", list(weeks["kpi_rate_holdout"]), dashed=True),
        ],
        percent=True,
    )


def trend_chart(program_id: str, trend: pd.DataFrame) -> bytes:
    """One program's weeks for the digest: messages per week, and its KPI rate vs holdout."""
    weeks = program_weeks(trend, program_id)
    messages = charts.Panel("Messages sent per week", [charts.Series(Status.SENT, list(weeks["messages"]), "bar")])
    return charts.render(week_labels(weeks), [messages, kpi_panel(weeks)], CHART_SIZE, stacked=True)


def overview_chart(program_ids: Sequence[str], trend: pd.DataFrame) -> bytes:
    """Messages per week, stacked by program."""
    series = [charts.Series(pid, list(program_weeks(trend, pid)["messages"]), "bar") for pid in program_ids]
    return charts.render(
        week_labels(program_weeks(trend, program_ids[0])),
        [charts.Panel("Messages sent per week, all programs", series)],
        OVERVIEW_SIZE,
    )


# --- the digest --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InlineImage:
    """A PNG shown in the HTML part as ``<img src="cid:{content_id}">``."""

    content_id: str
    filename: str
    data: bytes


@dataclass(frozen=True)
class Digest:
    """A rendered digest: subject, HTML and text parts, and the inline images the HTML references."""

    as_of: datetime
    subject: str
    html: str
    text: str
    images: tuple[InlineImage, ...]
    programs: tuple[str, ...]


def ordered(programs: Mapping[str, Program] | Iterable[Program]) -> dict[str, Program]:
    """Programs by priority, highest first (the order the digest and the Campaigns page use)."""
    chosen = programs.values() if isinstance(programs, Mapping) else programs
    return {p.id: p for p in sorted(chosen, key=lambda p: (-p.priority, p.id))}


def build_digest(
    engine: Engine,
    programs: Mapping[str, Program],
    policy: Policy,
    as_of: datetime,
    errors: Mapping[str, Any] | None = None,
) -> Digest:
    """Measure every program as of ``as_of`` and render the digest email."""
    as_of = utc_naive(as_of)
    programs = ordered(programs)
    kpis = measurement.program_kpis(engine, programs, as_of)
    trend = period_trend(measurement.funnel_history(engine), programs, as_of)
    rows = {r["program"]: r for r in records(kpis)}
    weeks = weekly_funnels(engine, dict.fromkeys(programs, as_of))
    per_channel = performance.channel_figures(engine, dict.fromkeys(programs, (as_of - WEEK, as_of)))
    views = [
        program_view(
            p,
            rows[pid],
            trend,
            *weeks[pid],
            currency=policy.currency,
            channels=per_channel[pid],
            audiences=ad_audiences.audience_status(engine, pid),
            audience_week=ad_audiences.sync_totals(engine, pid, as_of - WEEK, as_of),
        )
        | {"chart": f"trend-{pid}"}
        for pid, p in programs.items()
    ]
    images = [InlineImage("overview", "overview.png", overview_chart(list(programs), trend))] if programs else []
    images += [InlineImage(f"trend-{pid}", f"trend-{pid}.png", trend_chart(pid, trend)) for pid in programs]
    context = {
        "brand": policy.brand.model_dump(),
        "as_of": as_of,
        "week_start": as_of - WEEK,
        "programs": views,
        "changes": what_changed(programs, kpis, trend, errors, weeks),
        "quality": data_quality(engine, as_of),
        "coverage": consent_coverage(engine, as_of, policy),
        "business": business_figures(engine, as_of),
        "limits": {DELIVERABILITY_LABELS[k]: percent(v, 1) for k, v in DELIVERABILITY_LIMITS.items()},
    }
    env = environment(str(paths.templates_dir() / "_digest"))
    return Digest(
        as_of=as_of,
        subject=f"{policy.brand.name} lifecycle KPIs: week to {as_of:%d %b %Y}",
        html=env.get_template("digest.html.j2").render(context),
        text=env.get_template("digest.txt.j2").render(context),
        images=tuple(images),
        programs=tuple(programs),
    )
