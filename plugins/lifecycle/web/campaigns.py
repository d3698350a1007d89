"""The Campaigns page (``GET /lifecycle/campaigns``), shown inside the Airflow UI.

The journey catalog (every program's name, priority, schedule, channels, steps, owner, holdout
and A/B test, which programs are service programs, with the policy's caps, service caps and legal
basis per consent purpose) next to each program's live KPIs from
:func:`lifecycle.reporting.measurement.program_kpis` and its funnel over time from ``lifecycle_kpis``, as
small server-rendered PNG charts: no script, nothing loaded from elsewhere. Figures are as of
the newest logged program run. Every string from the config or the CRM is escaped by the
sandboxed, autoescaping template environment. Only a signed-in Airflow user sees the page.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from airflow.api_fastapi.core_api.security import requires_authenticated
from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine, func, inspect, select
from starlette.concurrency import run_in_threadpool

from lifecycle import config, paths
from lifecycle.config import Cap, Policy, Program, Step
from lifecycle.messages.rendering import environment
from lifecycle.model import schema
from lifecycle.model.db import get_engine, state_url, utc_naive
from lifecycle.model.ledger import Status
from lifecycle.reporting import charts, digest, measurement

CAMPAIGNS_PATH = "/campaigns"
TREND_WEEKS = 12
CHART_SIZE = (560, 170)
router = APIRouter()


RELATIVE_TO = {"enrollment": "enrollment", "previous": "the previous step", "anchor": "the anchor date"}


def duration(value: timedelta) -> str:
    """A length of time as program files write it: ``2d``, ``1d 12h``, ``30m``; ``0m`` for none."""
    minutes = abs(int(value.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return " ".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n) or "0m"


def step_timing(step: Step) -> str:
    """When a step is due: ``2d after enrollment``, ``30d before the anchor date``, ``at enrollment``."""
    anchor = RELATIVE_TO[step.relative_to]
    if not step.delay:
        return f"at {anchor}"
    return f"{duration(step.delay)} {'before' if step.delay < timedelta(0) else 'after'} {anchor}"


def latest_run(engine: Engine) -> datetime | None:
    """The as-of time of the newest logged program run, or None before the first run."""
    if not inspect(engine).has_table(schema.kpis.name):
        return None
    with engine.connect() as conn:
        return conn.execute(select(func.max(schema.kpis.c.as_of))).scalar_one()


SERVICE_NOTE = "service message: not counted by marketing caps, not stopped by a marketing unsubscribe"


def _caps(caps: Mapping[str, Cap]) -> list[str]:
    return [f"{channel} {cap.max} per {duration(cap.per)}" for channel, cap in caps.items()]


def policy_view(policy: Policy) -> dict[str, Any]:
    """The shared rules every program obeys, as display strings."""
    return {
        "caps": _caps(policy.caps),
        "service_caps": _caps(policy.service_caps) or ["none (uncapped)"],
        "legal_basis": [f"{purpose} {basis}" for purpose, basis in policy.legal_basis.items()],
        "quiet_hours": [
            f"{channel} {q.start:%H:%M}–{q.end:%H:%M} ({q.default_timezone} when unknown)"
            for channel, q in policy.quiet_hours.items()
        ],
        "control_group": f"{policy.control_group.percent:g}%",
    }


def catalog_view(program: Program) -> dict[str, Any]:
    """One program's journey as configured: description, consent purpose (and whether it is a
    service program), steps, holdout, A/B test and KPI."""
    return {
        "description": program.description,
        "purpose": program.consent_purpose,
        "service": SERVICE_NOTE if program.is_service else None,
        "holdout": f"{program.holdout_percent:g}%",
        "steps": [
            {
                "id": s.id,
                "channel": s.channel,
                "fallback": s.fallback,
                "when": step_timing(s),
                "template": s.template,
                "conditional": s.when is not None,
                "to_holdout_too": not s.holdout,
            }
            for s in program.steps
        ],
        "ab_variants": [f"{v.name} ({v.weight})" for v in program.ab_test.variants] if program.ab_test else [],
        "ab_variable": program.ab_test.variable if program.ab_test else None,
        "attribution_window": duration(program.kpi.attribution_window),
    }


def funnel_chart(program_id: str, trend: pd.DataFrame) -> str:
    """The program's funnel per week (entered, planned, blocked, messages) and its KPI rate vs
    holdout, as a PNG data URI."""
    weeks = digest.program_weeks(trend, program_id)
    funnel = charts.Panel(
        "Funnel per week",
        [
            charts.Series("enrolled", list(weeks["enrolled"])),
            charts.Series("planned", list(weeks[Status.PLANNED])),
            charts.Series("suppressed or capped", list(weeks[Status.SUPPRESSED] + weeks[Status.CAPPED]), dashed=True),
            charts.Series("messages", list(weeks["messages"])),
        ],
    )
    png = charts.render(digest.week_labels(weeks), [funnel, digest.kpi_panel(weeks)], CHART_SIZE)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def campaigns_page(engine: Engine, as_of: datetime | None = None) -> str:
    """The page's HTML: catalog, KPIs and funnel charts as of ``as_of`` (default: the newest run)."""
    programs, errors = config.load_all_programs()
    programs = digest.ordered(programs)
    policy = config.load_policy()
    measured_at = utc_naive(as_of) if as_of else latest_run(engine)
    views = []
    if measured_at is not None:
        kpis = {r["program"]: r for r in digest.records(measurement.program_kpis(engine, programs, measured_at))}
        trend = digest.period_trend(measurement.funnel_history(engine), programs, measured_at, TREND_WEEKS)
        for pid, program in programs.items():
            views.append(
                digest.program_view(program, kpis[pid], trend)
                | catalog_view(program)
                | {"chart": funnel_chart(pid, trend)}
            )
    else:
        views = [digest.program_facts(p) | catalog_view(p) for p in programs.values()]
    env = environment(str(paths.templates_dir() / "_web"))
    return env.get_template("campaigns.html.j2").render(
        {
            "as_of": measured_at,
            "rendered_at": utc_naive(datetime.now(UTC)),
            "measured": measured_at is not None,
            "policy": policy_view(policy),
            "brand": policy.brand.model_dump(),
            "programs": views,
            "errors": {pid: str(err) for pid, err in sorted(errors.items())},
            "min_sample": measurement.MIN_SAMPLE,
        }
    )


@router.get(CAMPAIGNS_PATH, response_class=HTMLResponse, dependencies=[Depends(requires_authenticated())])
async def campaigns() -> HTMLResponse:
    """The Campaigns page, for signed-in Airflow users (the UI's session cookie or a bearer token)."""
    html = await run_in_threadpool(lambda: campaigns_page(get_engine(state_url())))
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
