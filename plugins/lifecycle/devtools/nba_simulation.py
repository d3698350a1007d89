"""The next-best-action proof: fixed priority against next-best-action on the same synthetic CRM,
the same days and the same caps, with a planted heterogeneous response.

The CRM is seeded, then a **planted churn** is written into its history: each contact has a latent
risk ``h`` (from 0 to 1, falling with its tenure, a feature the scorer reads), and in each of the
two 30-day windows before the start it churns with probability ``CHURN_LOW + (CHURN_HIGH -
CHURN_LOW) * h`` (``churned_at`` set, stage ``churned``). The real scorer
(:func:`lifecycle.engine.scoring.run_scoring`) then learns churn risk from that history; its AUC
against the simulated truth (a fresh draw of the next window's churn from the same latent risk,
among the contacts it scored) is reported.

Two marketing programs want the same contacts at the same time, under an email cap of one a week:
each simulated day a cohort of contacts has a ``nba_moment`` event and enters both. ``retain``
(priority 60) converts (a ``retained`` event) with ``BASE_RATE`` plus ``UPLIFT * h`` when its
message went out; ``upsell`` (priority 40) with ``BASE_RATE`` plus ``UPLIFT * (1 - h)``. Each has a
20% holdout. Under fixed priority ``retain`` takes every contested slot; under next-best-action
(``decision.mode: next_best_action`` on the churn-risk score, in 5 bands) the program with the
higher measured lift in the contact's band does, once each has the evidence. Both arms draw the
same cohorts and the same random numbers per contact, program and day.

The figure compared is the incremental conversions the messages sent caused, from the planted
truth: the sum over messages that went out of their planted uplift probability. Its difference
between the arms comes with a 95% bootstrap interval over contacts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.metrics import roc_auc_score
from sqlalchemy import Engine, delete, insert, select, update

from lifecycle.channels.simulated import SimulatedTransport
from lifecycle.devtools.seed import seed_crm
from lifecycle.engine import pipeline, scoring
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate, utc_naive
from lifecycle.model.ledger import MESSAGED
from lifecycle.paths import PROJECT_ROOT

C, M, E = schema.contacts, schema.messages, schema.enrollments
DAY = timedelta(days=1)
RETAIN, UPSELL = "retain", "upsell"
PROGRAMS = (RETAIN, UPSELL)
CONVERSION = {RETAIN: "retained", UPSELL: "upgraded"}
MOMENT = "nba_moment"
BASE_RATE = 0.05
UPLIFT = 0.30
CHURN_LOW, CHURN_HIGH = 0.01, 0.25
TENURE_SCALE_DAYS = 365.0
SCORE = "churn_risk"
MODES = ("priority", "next_best_action")


# --- the experiment's config ---------------------------------------------------------------------


def _program(name: str, priority: int) -> dict[str, Any]:
    return {
        "name": f"{name.title()} (next-best-action experiment)",
        "owner": "simulation",
        "priority": priority,
        "schedule": None,
        "audience": {"segment": {"event": MOMENT, "within_last": "1d"}},
        "re_entry": {"allowed": True, "cooldown": "7d"},
        "steps": [{"id": "offer", "channel": "email", "delay": "0m", "template": "education/first_report"}],
        "holdout_percent": 20,
        "holdout_salt": f"nba-{name}",
        "kpi": {
            "primary": "conversion",
            "label": f"{CONVERSION[name]} rate",
            "conversion": {"event": CONVERSION[name], "since": "enrollment"},
        },
    }


def write_config(root: Path, min_evidence: int) -> Path:
    """The experiment's config folder: the shipped policy with an email (and all-channel) cap of
    one a week and next-best-action's settings (mode ``priority``; each arm sets its own), the
    shipped segments, and the two programs."""
    shipped = PROJECT_ROOT / "config"
    root.mkdir(parents=True, exist_ok=True)
    policy = yaml.safe_load((shipped / "policy.yml").read_text())
    policy |= {
        "caps": {"email": {"max": 1, "per": "7d"}, "all": {"max": 1, "per": "7d"}},
        "decision": {"mode": "priority", "score": SCORE, "bands": 5, "min_evidence": min_evidence},
    }
    (root / "policy.yml").write_text(yaml.safe_dump(policy))
    shutil.copy(shipped / "segments.yml", root / "segments.yml")
    (root / "programs").mkdir(exist_ok=True)
    for name, priority in ((RETAIN, 60), (UPSELL, 40)):
        (root / "programs" / f"{name}.yml").write_text(yaml.safe_dump(_program(name, priority)))
    return root


# --- the planted truth -------------------------------------------------------------------------


def latent_risk(tenure_days: np.ndarray) -> np.ndarray:
    """The planted churn risk ``h`` in [0, 1]: 1 for a brand-new contact, falling with tenure."""
    return np.exp(-np.maximum(tenure_days, 0.0) / TENURE_SCALE_DAYS)


def churn_probability(h: np.ndarray) -> np.ndarray:
    """The probability of churning in a 30-day window, for latent risk ``h``."""
    return CHURN_LOW + (CHURN_HIGH - CHURN_LOW) * h


def plant_churn(engine: Engine, start: datetime, rng: np.random.Generator) -> None:
    """Churn contacts in each of the two horizon windows before ``start`` by their latent risk
    (as of the window's start), so the scorer has a churn history to learn it from."""
    horizon = scoring.HORIZON
    with engine.begin() as conn:
        rows = conn.execute(
            select(C.c.contact_id, C.c.created_at).where(C.c.churned_at.is_(None)).order_by(C.c.contact_id)
        ).all()
        alive = {cid: created for cid, created in rows}
        for window_start in (start - 2 * horizon, start - horizon):
            ids = sorted(cid for cid, created in alive.items() if created is not None and created <= window_start)
            tenure = np.array([(window_start - alive[cid]).days for cid in ids], dtype=float)
            churned = rng.random(len(ids)) < churn_probability(latent_risk(tenure))
            offsets = rng.uniform(0, horizon.total_seconds(), size=len(ids))
            updates = [
                {"cid": cid, "at": window_start + timedelta(seconds=float(offset))}
                for cid, offset, hit in zip(ids, offsets, churned, strict=True)
                if hit
            ]
            for u in updates:
                conn.execute(
                    update(C).where(C.c.contact_id == u["cid"]).values(churned_at=u["at"], lifecycle_stage="churned")
                )
                alive.pop(u["cid"])


# --- one arm -----------------------------------------------------------------------------------


@dataclass
class Arm:
    """What one arm sent: per program and contact, the planted uplift of each message that went out."""

    mode: str
    sent: dict[str, int]
    incremental: dict[str, float]  # per contact: the sum of the planted uplift of its messages
    conversions: int
    elapsed_seconds: float


def _uniform(seed: int, day: int, program: str, contact_id: str) -> float:
    """One uniform number per (seed, day, program, contact): the same in both arms."""
    key = zlib.crc32(f"{seed}:{day}:{program}:{contact_id}".encode())
    return float(np.random.default_rng(key).random())


def _uplift(program: str, h: float) -> float:
    return UPLIFT * h if program == RETAIN else UPLIFT * (1 - h)


def play(url: str, mode: str, days: int, start: datetime, cohort: int, risk: dict[str, float], seed: int) -> Arm:
    """Play ``days`` days of both programs in ``mode`` on the scored CRM at ``url``."""
    started = time.perf_counter()
    engine = get_engine(url)
    loaded = {pid: pipeline.load_scope(pid, "nba", start) for pid in PROGRAMS}
    programs = loaded[RETAIN][1]
    transport = SimulatedTransport()
    ids = sorted(risk)
    sent = dict.fromkeys(PROGRAMS, 0)
    incremental: dict[str, float] = {}
    conversions = 0
    for day in range(days):
        as_of = start + day * DAY
        picked = np.random.default_rng([seed, day]).choice(len(ids), size=min(cohort, len(ids)), replace=False)
        moments = [
            {
                "event_id": f"moment-{day}-{ids[i]}",
                "contact_id": ids[i],
                "event_type": MOMENT,
                "occurred_at": as_of - timedelta(hours=1),
                "properties": {},
            }
            for i in sorted(picked)
        ]
        with engine.begin() as conn:
            conn.execute(insert(schema.events), moments)
        run_id = f"nba__{as_of.isoformat()}"
        for pid in PROGRAMS:
            scope = loaded[pid][0]
            policy = scope.policy.model_copy(
                update={"decision": scope.policy.decision.model_copy(update={"mode": mode})}
            )
            run = replace(scope, run_id=run_id, as_of=as_of, policy=policy)
            pipeline.run_program(engine, run, programs, transport, links=_links, simulate=True)
        with engine.connect() as conn:
            settled = conn.execute(
                select(M.c.program, M.c.contact_id, M.c.status).where(M.c.run_id == run_id).order_by(M.c.message_id)
            ).all()
        events = []
        for pid, contact_id, status in settled:
            messaged = status in MESSAGED
            lift = _uplift(pid, risk.get(contact_id, 0.0)) if messaged else 0.0
            if messaged:
                sent[pid] += 1
                incremental[contact_id] = incremental.get(contact_id, 0.0) + lift
            if _uniform(seed, day, pid, contact_id) < BASE_RATE + lift:
                conversions += 1
                events.append(
                    {
                        "event_id": f"{CONVERSION[pid]}-{day}-{contact_id}",
                        "contact_id": contact_id,
                        "event_type": CONVERSION[pid],
                        "occurred_at": as_of + timedelta(hours=2),
                        "properties": {},
                    }
                )
        if events:
            with engine.begin() as conn:
                conn.execute(insert(schema.events), events)
    return Arm(mode, sent, incremental, conversions, time.perf_counter() - started)


def _links(message_id: int, contact_id: str, channel: str) -> dict[str, str]:
    return {"unsubscribe": f"https://simulation.invalid/unsubscribe/{message_id}"}


# --- the comparison ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Both arms, the difference in incremental conversions with its 95% interval, and the scorer's AUC."""

    contacts: int
    days: int
    cohort: int
    seed: int
    priority: Arm
    nba: Arm
    difference: float
    ci_low: float
    ci_high: float
    auc: float
    oracle_auc: float
    model_auc: float | None
    elapsed_seconds: float

    def render(self) -> str:
        """The report as text."""
        lines = [
            f"Next-best-action vs fixed priority: {self.contacts:,} contacts, {self.days} days, "
            f"{self.cohort} contacts a day in both programs, email cap 1 a week, seed {self.seed}, "
            f"{self.elapsed_seconds:.0f}s",
            f"churn_risk scorer: AUC {self.auc:.3f} on the simulated truth (the planted risk itself: "
            f"{self.oracle_auc:.3f}; the model's validation AUC: {_figure(self.model_auc)})",
            "",
            f"{'mode':<18}{'retain sent':>12}{'upsell sent':>12}{'incremental conv.':>19}{'conversions':>13}",
        ]
        for arm in (self.priority, self.nba):
            lines.append(
                f"{arm.mode:<18}{arm.sent[RETAIN]:>12}{arm.sent[UPSELL]:>12}"
                f"{sum(arm.incremental.values()):>19.1f}{arm.conversions:>13}"
            )
        base = sum(self.priority.incremental.values())
        lines.append(
            f"\nnext-best-action - priority: {self.difference:+.1f} incremental conversions "
            f"({self.difference / base:+.0%}), 95% CI [{self.ci_low:+.1f}, {self.ci_high:+.1f}]"
            if base
            else f"\nnext-best-action - priority: {self.difference:+.1f}"
        )
        return "\n".join(lines)


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def bootstrap_difference(
    ids: Sequence[str], nba: dict[str, float], priority: dict[str, float], seed: int, resamples: int = 2000
) -> tuple[float, float, float]:
    """The total difference over ``ids`` and its 95% percentile interval, resampling contacts."""
    diff = np.array([nba.get(c, 0.0) - priority.get(c, 0.0) for c in ids])
    rng = np.random.default_rng(seed)
    totals = np.array([diff[rng.integers(0, len(diff), len(diff))].sum() for _ in range(resamples)])
    return float(diff.sum()), float(np.percentile(totals, 2.5)), float(np.percentile(totals, 97.5))


def _scored_risk(engine: Engine, start: datetime) -> tuple[dict[str, float], dict[str, float]]:
    """Per contact the scorer scored: the planted latent risk ``h`` at ``start`` and its churn_risk score."""
    s = schema.scores
    with engine.connect() as conn:
        rows = conn.execute(
            select(s.c.contact_id, s.c.value, C.c.created_at)
            .join(C, C.c.contact_id == s.c.contact_id)
            .where(s.c.score == SCORE)
            .order_by(s.c.contact_id)
        ).all()
    risk = {cid: float(latent_risk(np.array([(start - created).days], dtype=float))[0]) for cid, _, created in rows}
    return risk, {cid: float(value) for cid, value, _ in rows}


def compare(
    contacts: int = 3_000,
    days: int = 10,
    cohort: int = 300,
    seed: int = 7,
    start: datetime = datetime(2026, 11, 16, 15, 0),
    min_evidence: int = 60,
    workdir: Path | None = None,
) -> Comparison:
    """Seed, plant churn, score, then play both arms from copies of the same scored CRM."""
    started = time.perf_counter()
    start = utc_naive(start)
    folder = workdir or Path(tempfile.mkdtemp(prefix="lifecycle-nba-"))
    base = folder / "scored.db"
    base.unlink(missing_ok=True)
    url = f"sqlite:///{base}"
    seed_crm(url, contacts, start, seed=seed)
    engine = get_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        for table in reversed(schema.engine_metadata.sorted_tables):
            conn.execute(delete(table))
    rng = np.random.default_rng(seed)
    plant_churn(engine, start, rng)
    with engine.begin() as conn:
        reports = scoring.run_scoring(conn, start, names=(SCORE,), seed=seed)
    risk, scores = _scored_risk(engine, start)
    if not scores:
        raise RuntimeError(f"the churn_risk model was not published: {reports[0].reason}")
    ids = sorted(risk)
    truth = rng.random(len(ids)) < churn_probability(np.array([risk[c] for c in ids]))
    auc = float(roc_auc_score(truth, [scores[c] for c in ids]))
    oracle_auc = float(roc_auc_score(truth, [risk[c] for c in ids]))
    engine.dispose()
    config_dir = write_config(folder / "config", min_evidence)
    arms = {}
    with _config_env(config_dir):
        for mode in MODES:
            copy = folder / f"{mode}.db"
            shutil.copy(base, copy)
            arms[mode] = play(f"sqlite:///{copy}", mode, days, start, cohort, risk, seed)
            get_engine(f"sqlite:///{copy}").dispose()
    difference, low, high = bootstrap_difference(
        ids, arms["next_best_action"].incremental, arms["priority"].incremental, seed
    )
    return Comparison(
        contacts,
        days,
        cohort,
        seed,
        arms["priority"],
        arms["next_best_action"],
        difference,
        low,
        high,
        auc,
        oracle_auc,
        reports[0].auc,
        time.perf_counter() - started,
    )


@contextmanager
def _config_env(folder: Path) -> Iterator[None]:
    """Point the config loader at the experiment's folder (templates stay the shipped ones)."""
    saved = os.environ.get("LIFECYCLE_CONFIG_DIR")
    os.environ["LIFECYCLE_CONFIG_DIR"] = str(folder)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LIFECYCLE_CONFIG_DIR", None)
        else:
            os.environ["LIFECYCLE_CONFIG_DIR"] = saved


def main(argv: Sequence[str] | None = None) -> int:
    """``lifecycle simulate --next-best-action [--contacts N --days D --cohort K --seed S]``."""
    parser = argparse.ArgumentParser(prog="lifecycle simulate --next-best-action", description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--cohort", type=int, default=600, help="contacts with a moment each day")
    parser.add_argument("--min-evidence", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    report = compare(args.contacts, args.days, args.cohort, args.seed, min_evidence=args.min_evidence)
    print(report.render())
    return 0
