"""### Predictive scores

Trains and applies the predictive scores on features computed in SQL from the canonical CRM
tables (``contacts``, ``accounts``, the events through :func:`~lifecycle.model.schema.all_events`,
``tickets`` and ``opportunities``), and publishes a score only when its model beats a simple
baseline on a later window than the one it learned from.

**Scores.** ``churn_risk``: the probability that a contact churns in the next 30 days, i.e. that
its ``churned_at`` (the CRM contract's churn date; a ``lifecycle_stage`` of ``churned`` alone
carries no date) falls in the horizon. ``purchase_propensity``: the probability of a ``purchase``
event in the next 30 days. A contact is scored when it exists at the as-of time and has not
churned by then.

**Features** (each read as of the as-of time ``t``: nothing that happened after ``t`` counts):
recency (days since the last event), frequency (events in the last 30 and 90 days), monetary
value (purchases ever and their amount, won opportunities' amount), feature usage (uses and
distinct features in 90 days, plan limits reached, milestones, activation), intent (abandoned
carts, demo requests and quotes in 90 days), support (tickets opened in 90 days, tickets open at
``t``), tenure (days since ``created_at``), the plan and the account's size. The plan and the
account's size are read as they are now: the CRM keeps no history of them.

**Time-based split.** With ``H`` the horizon: the model learns from the features as of
``t - 2H`` labelled by what happened in ``(t - 2H, t - H]``, and is validated on the features as
of ``t - H`` labelled by ``(t - H, t]``. Its validation figures (AUC, Brier score, calibration by
band of predicted probability) are recorded in ``lifecycle_score_models``. The **baseline** is a
logistic regression on recency alone, trained and validated the same way. A model is
**published** only when, on 200 bootstrap resamples of the validation contacts, its AUC beats the
baseline's in 95% of them and beats chance (0.5) in 95% of them; otherwise it is recorded with
``published = false`` and the reason in words, and the last published scores stay. A published
model is refitted on both windows and applied to the features as of ``t``: each scored contact's
row in ``lifecycle_scores`` is replaced (value, decile 1..10 among the scored contacts, model
version, as-of). The same CRM, as-of time and seed always give the same models and scores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.sql.expression import ColumnElement

from lifecycle.model import schema
from lifecycle.model.db import json_number, json_value

if TYPE_CHECKING:  # scikit-learn is imported where a model is trained, not when a DAG file is parsed
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

log = logging.getLogger(__name__)

SCORE_NAMES = schema.SCORE_NAMES
"""Every score the engine computes, in the order it computes them."""
ENTITIES = ("contacts", "accounts", "events", "tickets", "opportunities")
"""The CRM entities the features and labels read (what the scoring DAG copies from a mapped source)."""
HORIZON = timedelta(days=30)
"""How far ahead a score predicts; also the length of each window of the time-based split."""
SHORT = timedelta(days=30)
LONG = timedelta(days=90)
RECENCY_CAP_DAYS = 365.0
"""A contact with no event (or none for longer) counts as this many days since the last one."""
BANDS = 10
BOOTSTRAP = 200
MIN_POSITIVES = 5
"""Fewer positive contacts than this in a window: nothing to learn or to validate on."""
ALGORITHM = "hist_gradient_boosting"
BASELINE = "recency-only logistic regression"
BASELINE_FEATURE = "recency_days"

NUMERIC_FEATURES = (
    "recency_days",
    "events_30d",
    "events_90d",
    "feature_uses_90d",
    "features_used_90d",
    "plan_limits_90d",
    "milestones",
    "activated",
    "purchases",
    "purchases_90d",
    "purchase_amount",
    "carts_90d",
    "sales_touches_90d",
    "tickets_90d",
    "open_tickets",
    "won_amount",
    "open_opportunities",
    "tenure_days",
    "account_employees",
)
"""The features every model reads, before one indicator per plan."""


@dataclass(frozen=True)
class ModelReport:
    """One trained model: its validation figures and whether its scores were published."""

    score: str
    model_version: str
    as_of: datetime
    algorithm: str
    features: tuple[str, ...]
    n_train: int
    n_valid: int
    positives_train: int
    positives_valid: int
    auc: float | None
    baseline_auc: float | None
    brier: float | None
    calibration: list[dict[str, float]] = field(default_factory=list)
    published: bool = False
    reason: str | None = None
    scored: int = 0
    """Contacts whose score was written (0 when not published)."""


# --- features and labels in SQL -------------------------------------------------------------


def _eligible(as_of: datetime) -> ColumnElement[bool]:
    """Contacts that exist at ``as_of`` and have not churned by then."""
    c = schema.contacts
    return and_(c.c.created_at <= as_of, or_(c.c.churned_at.is_(None), c.c.churned_at > as_of))


def _count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


def _event_features(as_of: datetime) -> Any:
    ev = schema.all_events("score_ev", lambda t: (t.c.occurred_at <= as_of,))
    kind, at = ev.c.event_type, ev.c.occurred_at
    recent, short = at > as_of - LONG, at > as_of - SHORT
    feature = json_value(ev.c.properties, "feature")
    return (
        select(
            ev.c.contact_id,
            func.max(at).label("last_event_at"),
            _count(short).label("events_30d"),
            _count(recent).label("events_90d"),
            _count(and_(recent, kind == "feature_used")).label("feature_uses_90d"),
            func.count(func.distinct(case((and_(recent, kind == "feature_used"), feature)))).label("features_used_90d"),
            _count(and_(recent, kind == "plan_limit_reached")).label("plan_limits_90d"),
            _count(kind == "milestone_completed").label("milestones"),
            func.max(case((kind == "activated", 1), else_=0)).label("activated"),
            _count(kind == "purchase").label("purchases"),
            _count(and_(recent, kind == "purchase")).label("purchases_90d"),
            func.sum(case((kind == "purchase", json_number(ev.c.properties, "amount")), else_=0.0)).label(
                "purchase_amount"
            ),
            _count(and_(recent, kind == "cart_abandoned")).label("carts_90d"),
            _count(and_(recent, kind.in_(("demo_requested", "quote_sent", "quote_accepted")))).label(
                "sales_touches_90d"
            ),
        )
        .group_by(ev.c.contact_id)
        .subquery("score_events")
    )


def _ticket_features(as_of: datetime) -> Any:
    t = schema.tickets
    return (
        select(
            t.c.contact_id,
            _count(t.c.opened_at > as_of - LONG).label("tickets_90d"),
            _count(or_(t.c.closed_at.is_(None), t.c.closed_at > as_of)).label("open_tickets"),
        )
        .where(t.c.opened_at <= as_of, t.c.contact_id.is_not(None))
        .group_by(t.c.contact_id)
        .subquery("score_tickets")
    )


def _opportunity_features(as_of: datetime) -> Any:
    o = schema.opportunities
    return (
        select(
            o.c.contact_id,
            func.sum(case((o.c.stage == "closed_won", o.c.amount), else_=0.0)).label("won_amount"),
            _count(o.c.stage.not_in(("closed_won", "closed_lost"))).label("open_opportunities"),
        )
        .where(o.c.updated_at <= as_of, o.c.contact_id.is_not(None))
        .group_by(o.c.contact_id)
        .subquery("score_opportunities")
    )


def feature_frame(conn: Connection, as_of: datetime) -> pd.DataFrame:
    """One row per contact scored as of ``as_of`` (sorted by id): its raw features, nothing read
    from after ``as_of`` (but the plan and the account's size, which the CRM keeps no history of)."""
    c, a = schema.contacts, schema.accounts
    ev, tk, op = _event_features(as_of), _ticket_features(as_of), _opportunity_features(as_of)
    counts = [col for sub in (ev, tk, op) for col in sub.c if col.name not in ("contact_id", "last_event_at")]
    stmt = (
        select(
            c.c.contact_id,
            c.c.created_at,
            c.c.plan,
            a.c.employees.label("account_employees"),
            ev.c.last_event_at,
            *(func.coalesce(col, 0).label(col.name) for col in counts),
        )
        .select_from(
            c.outerjoin(a, a.c.account_id == c.c.account_id)
            .outerjoin(ev, ev.c.contact_id == c.c.contact_id)
            .outerjoin(tk, tk.c.contact_id == c.c.contact_id)
            .outerjoin(op, op.c.contact_id == c.c.contact_id)
        )
        .where(_eligible(as_of))
        .order_by(c.c.contact_id)
    )
    rows = conn.execute(stmt).all()
    frame = pd.DataFrame(rows, columns=[col.name for col in stmt.selected_columns])
    if frame.empty:
        return frame
    day = timedelta(days=1)
    created = pd.to_datetime(frame["created_at"])
    last = pd.to_datetime(frame["last_event_at"])
    frame["tenure_days"] = ((as_of - created) / day).astype(float)
    frame["recency_days"] = ((as_of - last) / day).astype(float).fillna(RECENCY_CAP_DAYS).clip(upper=RECENCY_CAP_DAYS)
    frame["account_employees"] = pd.to_numeric(frame["account_employees"], errors="coerce").fillna(0.0)
    frame["plan"] = frame["plan"].fillna("")
    for name in NUMERIC_FEATURES:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").fillna(0.0).astype(float)
    return frame.drop(columns=["created_at", "last_event_at"])


def label_ids(conn: Connection, name: str, start: datetime, end: datetime) -> set[str]:
    """The contacts for whom score ``name``'s outcome happened in ``(start, end]``."""
    if name == "churn_risk":
        c = schema.contacts
        stmt = select(c.c.contact_id).where(c.c.churned_at > start, c.c.churned_at <= end)
    elif name == "purchase_propensity":
        ev = schema.all_events(
            "label_ev",
            lambda t: (t.c.event_type == "purchase", t.c.occurred_at > start, t.c.occurred_at <= end),
        )
        stmt = select(ev.c.contact_id).distinct()
    else:
        raise ValueError(f"unknown score {name!r}: the scores are {', '.join(SCORE_NAMES)}")
    return {row[0] for row in conn.execute(stmt)}


# --- training, validation, publication ------------------------------------------------------


def _matrix(frame: pd.DataFrame, plans: Sequence[str]) -> np.ndarray:
    numeric = frame[list(NUMERIC_FEATURES)].to_numpy(dtype=float)
    indicators = np.column_stack([(frame["plan"] == plan).to_numpy(dtype=float) for plan in plans]) if plans else None
    return numeric if indicators is None else np.hstack([numeric, indicators])


def _model(seed: int) -> HistGradientBoostingClassifier:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=150,
        learning_rate=0.05,
        max_depth=3,
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )


def _baseline() -> LogisticRegression:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression()


def _recency(frame: pd.DataFrame) -> np.ndarray:
    values: np.ndarray = np.log1p(frame[[BASELINE_FEATURE]].to_numpy(dtype=float))
    return values


def calibration_bands(y: np.ndarray, p: np.ndarray, bands: int = BANDS) -> list[dict[str, float]]:
    """The validation contacts in ``bands`` equal bands of predicted probability (by rank): each
    band's mean prediction, observed rate and size."""
    order = np.argsort(p, kind="stable")
    table = []
    for band, rows in enumerate(np.array_split(order, bands), start=1):
        if len(rows):
            table.append(
                {
                    "band": band,
                    "predicted": round(float(p[rows].mean()), 4),
                    "observed": round(float(y[rows].mean()), 4),
                    "n": len(rows),
                }
            )
    return table


def deciles(values: np.ndarray) -> np.ndarray:
    """1 (lowest) .. 10 (highest): a value's decile is set by how many values are strictly smaller,
    so equal values share a decile and a higher value never has a lower decile."""
    if not len(values):
        return np.zeros(0, dtype=int)
    below = np.searchsorted(np.sort(values), values, side="left")
    return (below * 10 // len(values) + 1).astype(int)


def _bootstrap(y: np.ndarray, p: np.ndarray, base: np.ndarray, seed: int) -> tuple[float, float]:
    """Shares of bootstrap resamples where the model's AUC beats the baseline's, and beats 0.5."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    beats_baseline = beats_chance = total = 0
    for _ in range(BOOTSTRAP):
        rows = rng.integers(0, len(y), size=len(y))
        sample = y[rows]
        if sample.min() == sample.max():
            continue
        auc = roc_auc_score(sample, p[rows])
        total += 1
        beats_baseline += auc > roc_auc_score(sample, base[rows])
        beats_chance += auc > 0.5
    return (beats_baseline / total, beats_chance / total) if total else (0.0, 0.0)


def model_version(as_of: datetime, seed: int) -> str:
    return f"{as_of:%Y%m%dT%H%M%S}-s{seed}"


def train(
    conn: Connection, name: str, as_of: datetime, *, seed: int = 0, horizon: timedelta = HORIZON
) -> tuple[ModelReport, pd.DataFrame | None]:
    """Train and validate score ``name`` as of ``as_of``; returns its report and, when it may be
    published, the scored contacts (``contact_id``, ``value``, ``decile``) as of ``as_of``."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    if name not in SCORE_NAMES:
        raise ValueError(f"unknown score {name!r}: the scores are {', '.join(SCORE_NAMES)}")
    train_at, valid_at = as_of - 2 * horizon, as_of - horizon
    train_x = feature_frame(conn, train_at)
    valid_x = feature_frame(conn, valid_at)
    plans = sorted(p for p in set(train_x["plan"]) if p) if len(train_x) else []
    features = (*NUMERIC_FEATURES, *(f"plan={plan}" for plan in plans))
    train_ids = label_ids(conn, name, train_at, valid_at)
    valid_ids = label_ids(conn, name, valid_at, as_of)
    y_train = train_x["contact_id"].isin(train_ids).to_numpy(dtype=int) if len(train_x) else np.zeros(0, int)
    y_valid = valid_x["contact_id"].isin(valid_ids).to_numpy(dtype=int) if len(valid_x) else np.zeros(0, int)
    report: dict[str, Any] = {
        "score": name,
        "model_version": model_version(as_of, seed),
        "as_of": as_of,
        "algorithm": ALGORITHM,
        "features": features,
        "n_train": len(y_train),
        "n_valid": len(y_valid),
        "positives_train": int(y_train.sum()),
        "positives_valid": int(y_valid.sum()),
        "auc": None,
        "baseline_auc": None,
        "brier": None,
    }
    outcome = _outcome(name)
    for window, y, start, end in (("training", y_train, train_at, valid_at), ("validation", y_valid, valid_at, as_of)):
        positives = int(y.sum())
        if positives < MIN_POSITIVES or positives > len(y) - MIN_POSITIVES:
            reason = (
                f"the {window} window ({start:%Y-%m-%d} to {end:%Y-%m-%d}) has {positives} of {len(y)} contacts "
                f"who {outcome}: at least {MIN_POSITIVES} of each outcome are needed to learn and to validate"
            )
            return ModelReport(**report, published=False, reason=reason), None
    model = _model(seed).fit(_matrix(train_x, plans), y_train)
    p_valid = model.predict_proba(_matrix(valid_x, plans))[:, 1]
    base = _baseline().fit(_recency(train_x), y_train)
    b_valid = base.predict_proba(_recency(valid_x))[:, 1]
    auc, baseline_auc = float(roc_auc_score(y_valid, p_valid)), float(roc_auc_score(y_valid, b_valid))
    report.update(
        auc=round(auc, 4),
        baseline_auc=round(baseline_auc, 4),
        brier=round(float(brier_score_loss(y_valid, p_valid)), 5),
        calibration=calibration_bands(y_valid, p_valid),
    )
    over_baseline, over_chance = _bootstrap(y_valid, p_valid, b_valid, seed)
    if over_chance < 0.95:
        reason = (
            f"validation AUC {auc:.3f} is not reliably better than chance (above 0.5 in {over_chance:.0%} of "
            f"{BOOTSTRAP} bootstrap resamples, 95% needed): whether a contact will {outcome} is not learnable "
            "from these features"
        )
        return ModelReport(**report, published=False, reason=reason), None
    if over_baseline < 0.95:
        reason = (
            f"validation AUC {auc:.3f} does not beat the baseline ({BASELINE}: {baseline_auc:.3f}) reliably "
            f"(above it in {over_baseline:.0%} of {BOOTSTRAP} bootstrap resamples, 95% needed)"
        )
        return ModelReport(**report, published=False, reason=reason), None
    full_x = pd.concat([train_x, valid_x], ignore_index=True)
    final = _model(seed).fit(_matrix(full_x, plans), np.concatenate([y_train, y_valid]))
    now_x = feature_frame(conn, as_of)
    if now_x.empty:
        return ModelReport(**report, published=False, reason="no contact to score as of the run"), None
    values = final.predict_proba(_matrix(now_x, plans))[:, 1].round(6)
    scored = pd.DataFrame({"contact_id": now_x["contact_id"], "value": values, "decile": deciles(values)})
    return ModelReport(**report, published=True, scored=len(scored)), scored


def _outcome(name: str) -> str:
    return {"churn_risk": "churn", "purchase_propensity": "purchase"}[name]


def _record(conn: Connection, report: ModelReport, trained_at: datetime) -> None:
    m = schema.score_models
    key = (m.c.score == report.score, m.c.model_version == report.model_version)
    conn.execute(delete(m).where(*key))
    conn.execute(
        insert(m).values(
            score=report.score,
            model_version=report.model_version,
            trained_at=trained_at,
            as_of=report.as_of,
            algorithm=report.algorithm,
            features=list(report.features),
            n_train=report.n_train,
            n_valid=report.n_valid,
            auc=report.auc,
            baseline_auc=report.baseline_auc,
            brier=report.brier,
            calibration=report.calibration or None,
            published=report.published,
            reason=report.reason,
        )
    )


def _publish(conn: Connection, report: ModelReport, scored: pd.DataFrame) -> None:
    s = schema.scores
    conn.execute(delete(s).where(s.c.score == report.score))
    rows = [
        {
            "contact_id": contact_id,
            "score": report.score,
            "value": float(value),
            "decile": int(decile),
            "model_version": report.model_version,
            "as_of": report.as_of,
        }
        for contact_id, value, decile in scored.itertuples(index=False)
    ]
    for start in range(0, len(rows), 5_000):
        conn.execute(insert(s), rows[start : start + 5_000])
    m = schema.score_models
    conn.execute(
        update(m)
        .where(m.c.score == report.score, m.c.model_version == report.model_version)
        .values(distribution=distribution(scored["value"].to_numpy(), scored["decile"].to_numpy()))
    )


def distribution(values: np.ndarray, deciles: np.ndarray) -> dict[str, list[Any]]:
    """What the Campaigns page shows of published scores, computed once as they are published:
    per decile the contacts and the lowest, highest and mean value; per band of probability
    (``[k/10, (k+1)/10)``, the last closed) the contacts."""
    per_decile = []
    for decile in sorted({int(d) for d in deciles}):
        chosen = values[deciles == decile]
        per_decile.append(
            {
                "decile": decile,
                "contacts": int(chosen.size),
                "low": float(chosen.min()),
                "high": float(chosen.max()),
                "mean": float(chosen.mean()),
            }
        )
    edges = [(b + 1) / schema.SCORE_BANDS for b in range(schema.SCORE_BANDS - 1)]
    bands = np.bincount(np.searchsorted(edges, values, side="right"), minlength=schema.SCORE_BANDS)
    return {"deciles": per_decile, "bands": [int(n) for n in bands]}


def run_scoring(
    conn: Connection,
    as_of: datetime,
    *,
    names: Sequence[str] = SCORE_NAMES,
    seed: int = 0,
    horizon: timedelta = HORIZON,
    trained_at: datetime | None = None,
) -> list[ModelReport]:
    """Train, validate and (when it beats the baseline) publish each score in ``names`` as of
    ``as_of`` (naive UTC), on ``conn`` (the caller commits). Returns one report per score."""
    unknown = [name for name in names if name not in SCORE_NAMES]
    if unknown:
        raise ValueError(f"unknown score {', '.join(map(repr, unknown))}: the scores are {', '.join(SCORE_NAMES)}")
    reports = []
    for name in names:
        report, scored = train(conn, name, as_of, seed=seed, horizon=horizon)
        _record(conn, report, trained_at or as_of)
        if report.published and scored is not None:
            _publish(conn, report, scored)
        log.info(
            "score %s as of %s: AUC %s (baseline %s), published %s%s",
            name,
            as_of.isoformat(),
            report.auc,
            report.baseline_auc,
            report.published,
            f" ({report.reason})" if report.reason else "",
        )
        reports.append(report)
    return reports


def report_table(reports: Sequence[ModelReport]) -> str:
    """The reports as a text table: one line per model with its validation figures."""
    lines = [
        f"{'score':<20} {'train':>6} {'pos':>4} {'valid':>6} {'pos':>4} {'AUC':>6} {'base':>6} {'Brier':>7} "
        f"{'scored':>7}  published"
    ]
    for r in reports:
        auc, base = ("–" if v is None else f"{v:.3f}" for v in (r.auc, r.baseline_auc))
        brier = "–" if r.brier is None else f"{r.brier:.4f}"
        lines.append(
            f"{r.score:<20} {r.n_train:>6} {r.positives_train:>4} {r.n_valid:>6} {r.positives_valid:>4} {auc:>6} "
            f"{base:>6} {brier:>7} {r.scored:>7}  {'yes' if r.published else 'no: ' + (r.reason or '')}"
        )
    return "\n".join(lines)


__all__ = [
    "SCORE_NAMES",
    "ModelReport",
    "deciles",
    "feature_frame",
    "label_ids",
    "model_version",
    "report_table",
    "run_scoring",
    "train",
]
