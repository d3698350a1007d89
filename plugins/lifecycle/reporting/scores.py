"""The predictive scores as the Campaigns page shows them: each score's newest model with its
validation figures (AUC against the baseline's, Brier score, calibration by band, published or
why not) and the distribution of the published scores (contacts and value range per decile, and
per band of probability). One small read of ``lifecycle_score_models``: the distribution is the one
the scoring DAG stored as it published (``lifecycle.engine.scoring.distribution``), so a view
never scans ``lifecycle_scores``; nothing is trained or computed here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from lifecycle.model import schema

BANDS = schema.SCORE_BANDS


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _figure(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def score_views(engine: Engine) -> list[dict[str, Any]]:
    """One view per known score (in :data:`~lifecycle.model.schema.SCORE_NAMES` order): ``model`` is
    None until the scoring DAG has trained it; ``deciles`` and ``bands`` are empty until a model
    has been published."""
    m = schema.score_models
    with engine.connect() as conn:
        models = conn.execute(select(m).order_by(m.c.score, m.c.trained_at.desc(), m.c.as_of.desc())).all()
    newest: dict[str, Any] = {}
    current: dict[str, Any] = {}  # the newest published model: the one whose scores are in force
    for found in models:
        newest.setdefault(found.score, found)
        if found.published and found.distribution is not None:
            current.setdefault(found.score, found)
    views = []
    for name in schema.SCORE_NAMES:
        row = newest.get(name)
        published = current.get(name)
        shown = published.distribution if published is not None else {"deciles": [], "bands": []}
        deciles = [
            {
                "decile": d["decile"],
                "contacts": d["contacts"],
                "low": _percent(d["low"]),
                "high": _percent(d["high"]),
                "mean": _percent(d["mean"]),
            }
            for d in shown["deciles"]
        ]
        total = sum(d["contacts"] for d in deciles)
        bands = [
            {"band": f"{b * 100 // BANDS}–{(b + 1) * 100 // BANDS}%", "contacts": n}
            for b, n in enumerate(shown["bands"] or [0] * BANDS)
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
                "current_version": published.model_version if published is not None else None,
                "deciles": deciles,
                "bands": bands if total else [],
            }
        )
    return views
