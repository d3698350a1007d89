"""The predictive scores as the Campaigns page shows them: each score's newest model with its
validation figures (AUC against the baseline's, Brier score, calibration by band, published or
why not) and the distribution of the published scores (contacts and value range per decile, and
per band of probability). Two small reads: the newest row of ``lifecycle_score_models`` per score
and a grouped count of ``lifecycle_scores``; nothing is trained or computed here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, case, func, select

from lifecycle.model import schema

BANDS = 10


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _figure(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def score_views(engine: Engine) -> list[dict[str, Any]]:
    """One view per known score (in :data:`~lifecycle.model.schema.SCORE_NAMES` order): ``model`` is
    None until the scoring DAG has trained it; ``deciles`` and ``bands`` are empty until a model
    has been published."""
    m, s = schema.score_models, schema.scores
    with engine.connect() as conn:
        models = conn.execute(select(m).order_by(m.c.score, m.c.trained_at.desc(), m.c.as_of.desc())).all()
        by_decile = conn.execute(
            select(s.c.score, s.c.decile, func.count(), func.min(s.c.value), func.max(s.c.value), func.avg(s.c.value))
            .group_by(s.c.score, s.c.decile)
            .order_by(s.c.score, s.c.decile)
        ).all()
        band = case(*((s.c.value < (b + 1) / BANDS, b) for b in range(BANDS - 1)), else_=BANDS - 1)
        by_band = dict(
            ((score, int(b)), n)
            for score, b, n in conn.execute(select(s.c.score, band, func.count()).group_by(s.c.score, band))
        )
        current = dict(conn.execute(select(s.c.score, func.max(s.c.model_version)).group_by(s.c.score)).all())
    newest: dict[str, Any] = {}
    for found in models:
        newest.setdefault(found.score, found)
    views = []
    for name in schema.SCORE_NAMES:
        row = newest.get(name)
        deciles = [
            {
                "decile": decile,
                "contacts": n,
                "low": _percent(low),
                "high": _percent(high),
                "mean": _percent(mean),
            }
            for score, decile, n, low, high, mean in by_decile
            if score == name
        ]
        total = sum(d["contacts"] for d in deciles)
        bands = [
            {"band": f"{b * 100 // BANDS}–{(b + 1) * 100 // BANDS}%", "contacts": by_band.get((name, b), 0)}
            for b in range(BANDS)
        ]
        peak = max((b["contacts"] for b in bands), default=0)
        for b in bands:
            b["width"] = round(100 * b["contacts"] / peak) if peak else 0
        model = None
        if row is not None:
            model = {
                "version": row.model_version,
                "as_of": row.as_of,
                "trained_at": row.trained_at,
                "algorithm": row.algorithm,
                "features": len(row.features or []),
                "n_train": row.n_train,
                "n_valid": row.n_valid,
                "auc": _figure(row.auc),
                "baseline_auc": _figure(row.baseline_auc),
                "brier": _figure(row.brier, 4),
                "published": bool(row.published),
                "reason": row.reason,
                "calibration": [
                    {
                        "band": c["band"],
                        "predicted": _percent(c["predicted"]),
                        "observed": _percent(c["observed"]),
                        "n": c["n"],
                    }
                    for c in (row.calibration or [])
                ],
            }
        views.append(
            {
                "name": name,
                "model": model,
                "scored": total,
                "current_version": current.get(name),
                "deciles": deciles,
                "bands": bands if total else [],
            }
        )
    return views
