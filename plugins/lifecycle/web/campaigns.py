"""The Campaigns page (``GET /lifecycle/campaigns``), shown inside the Airflow UI.

The journey catalog (every program's name, priority, schedule, channels, steps, owner, holdout
and A/B test, which programs are service programs, with the policy's caps, service caps and legal
basis per consent purpose) next to each program's KPIs, the week's planned messages by outcome,
the journey's per-step performance, its event lag and its funnel over time as a small
server-rendered PNG chart (no script, nothing loaded from elsewhere), read from the figures the
runs precomputed (:mod:`lifecycle.reporting.figures`, ``lifecycle_campaign_figures``; computed
here only where none of the program's newest run are stored), with its trigger and a realtime
program's backlog read live (:mod:`lifecycle.reporting.realtime`), and the predictive scores'
models and distributions (:mod:`lifecycle.reporting.scores`). Each program's figures are
as of its own newest logged run, so a program that ran an hour ago and one that runs daily both
show their latest week. Every string from the config or
the CRM is escaped by the sandboxed, autoescaping template environment. Only a signed-in Airflow
user sees the page (a browser without a session is sent to Airflow's login page).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from lifecycle import config, paths
from lifecycle.config import Cap, Policy, Program
from lifecycle.messages.rendering import environment
from lifecycle.model.db import get_engine, state_url, utc_naive
from lifecycle.model.ledger import Status
from lifecycle.reporting import digest, display, figures, measurement, performance, realtime, scores, timeline
from lifecycle.reporting.display import duration, segment, step_timing
from lifecycle.web import actions
from lifecycle.web.signin import SignedIn, signed_in_page

CAMPAIGNS_PATH = "/campaigns"
CONTACT_PATH = "/campaigns/contact"
router = APIRouter()


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


def journey_steps(program: Program) -> list[dict[str, Any]]:
    """The program's steps as configured, in order, as display fields."""
    return [
        {
            "id": s.id,
            "position": position,
            "channel": s.channel,
            "fallback": s.fallback,
            "channels": list(s.channels or ()),
            "choose_by": str(s.rule) if s.channels else None,
            "when": step_timing(s),
            "template": s.template,
            "conditional": s.when is not None,
            "to_holdout_too": not s.holdout,
        }
        for position, s in enumerate(program.steps, start=1)
    ]


def catalog_view(program: Program) -> dict[str, Any]:
    """One program's journey as configured: description, consent purpose (and whether it is a
    service program), steps, holdout, A/B test and KPI."""
    return {
        "description": program.description,
        "purpose": program.consent_purpose,
        "service": SERVICE_NOTE if program.is_service else None,
        "holdout": f"{program.holdout_percent:g}%",
        "steps": journey_steps(program),
        "ab_variants": [f"{v.name} ({v.weight})" for v in program.ab_test.variants] if program.ab_test else [],
        "segment": segment(program.audience.segment.raw),
        "goal": segment(program.exit.goal.raw if program.exit.goal else None),
        "ab_variable": program.ab_test.variable if program.ab_test else None,
        "attribution_window": duration(program.kpi.attribution_window),
    }


def _step_row(figures: performance.StepFigures, step: dict[str, Any] | None) -> dict[str, Any]:
    funnel = figures.funnel
    return {
        "id": figures.step,
        "variant": figures.variant,
        "config": step,
        Status.PLANNED: digest.count(funnel.planned),
        "outcomes": {key: digest.count(n) for key, n in funnel.outcomes.items()},
        Status.DELIVERED: digest.count(figures.delivered),
        Status.BOUNCED: digest.count(figures.bounced),
        "unsubscribes": digest.count(figures.unsubscribed),
        "converted_after": digest.count(figures.converted_after),
        "why": {key: display.reasons(counts) for key, counts in funnel.reasons.items() if counts},
    }


def steps_view(program: Program, figures: list[performance.StepFigures]) -> list[dict[str, Any]]:
    """The journey in order with its figures: one row per step and A/B variant (a step without a
    planned message yet gets a row of zeros; a step no longer in the program file comes last)."""
    configured = {s["id"]: s for s in journey_steps(program)}
    seen = {f.step for f in figures}
    rows = [_step_row(f, configured.get(f.step)) for f in figures]
    for position, step in enumerate(program.steps):
        if step.id not in seen:
            rows.insert(position, _step_row(performance.StepFigures(step.id, None), configured[step.id]))
    order = {s.id: i for i, s in enumerate(program.steps)}
    return sorted(rows, key=lambda r: (order.get(r["id"], len(order)), r["id"], r["variant"] or ""))


def _measured_view(
    program: Program, stored: figures.Stored, currency: str, catalog: Mapping[str, Any]
) -> dict[str, Any]:
    """One program's card from its figures (stored, or just computed: the same payload)."""
    payload = stored.payload
    steps = figures.steps_of(payload)
    return (
        digest.program_view(
            program,
            payload["kpis"],
            figures.trend_of(payload),
            figures.funnel_of(payload["week"]),
            figures.funnel_of(payload["week_before"]),
            currency=currency,
            catalog=catalog,
            channels=figures.channels_of(payload),
            audiences=figures.audiences_of(payload),
        )
        | catalog_view(program)
        | {
            "as_of": stored.as_of,
            "computed_at": stored.computed_at,
            "chart": payload["chart"],
            "performance": steps_view(program, steps),
            "simulated": any(f.funnel.outcomes[performance.SIMULATED] for f in steps),
        }
    )


def notice(done: str, program_id: str, run_id: str, paused: Mapping[str, bool]) -> dict[str, Any] | None:
    """What the action the user just took did (from the query of the redirect after it), or None
    when the query names no known action and program."""
    programs, _errors = config.load_all_programs()
    if done not in actions.DONE or program_id not in programs:
        return None
    run = run_id if actions.RUN_ID.fullmatch(run_id) else None
    return {
        "program": programs[program_id].name,
        "text": actions.DONE[done],
        "dag": actions.TEST_SEND_DAG if done == actions.TEST_SEND else program_id,
        "run": run,
        "waits": done == actions.TEST_SEND and paused.get(actions.TEST_SEND_DAG, False),
    }


def campaigns_page(
    engine: Engine,
    as_of: datetime | None = None,
    paused: Mapping[str, bool] | None = None,
    done: Mapping[str, Any] | None = None,
) -> str:
    """The page's HTML: catalog, KPIs, funnels and per-step figures of every program as of its own
    newest run (or all as of ``as_of``); a program that never ran shows its catalog only.

    ``paused`` says which DAGs are paused (as Airflow's API told the user; a program missing from
    it offers both pause and resume), ``done`` what the user's last action did (:func:`notice`)."""
    programs, errors = config.load_all_programs()
    programs = digest.ordered(programs)
    policy = config.load_policy()
    now = utc_naive(datetime.now(UTC))
    if as_of is None:
        found = figures.current(engine, programs)
    else:
        at = utc_naive(as_of)
        payloads = figures.compute(engine, programs, dict.fromkeys(programs, at))
        found = {
            pid: figures.Stored(pid, at, "", now.replace(microsecond=0), figures.VERSION, payload)
            for pid, payload in payloads.items()
        }
    catalog = config.load_segments().parsed
    views = []
    for pid, program in programs.items():
        if pid in found:
            view = _measured_view(program, found[pid], policy.currency, catalog)
            lag = figures.lag_of(found[pid].payload)
        else:
            view = digest.program_facts(program) | catalog_view(program) | {"as_of": None}
            lag = None
        backlog = realtime.backlog(engine, pid, now) if program.audience.realtime else None
        views.append(view | realtime.realtime_view(program, lag, backlog, now))
    measured = bool(found)
    env = environment(str(paths.templates_dir() / "_web"))
    return env.get_template("campaigns.html.j2").render(
        {
            "rendered_at": now,
            "measured": measured,
            "policy": policy_view(policy),
            "brand": policy.brand.model_dump(),
            "programs": views,
            "outcomes": [o for o in performance.OUTCOMES if o.key != performance.SIMULATED],
            "errors": {pid: str(err) for pid, err in sorted(errors.items())},
            "min_sample": measurement.MIN_SAMPLE,
            "paused": dict(paused or {}),
            "done": done,
            "test_send_dag": actions.TEST_SEND_DAG,
            "scores": scores.score_views(engine),
        }
    )


def contact_page(engine: Engine, contact_id: str) -> str:
    """The contact lookup's HTML: the contact's timeline across every program (see
    :func:`lifecycle.reporting.timeline.contact_timeline`), or a note that no such contact exists."""
    policy = config.load_policy()
    programs, _errors = config.load_all_programs()
    found = timeline.contact_timeline(engine, contact_id, programs) if contact_id else None
    env = environment(str(paths.templates_dir() / "_web"))
    return env.get_template("contact.html.j2").render(
        {
            "brand": policy.brand.model_dump(),
            "contact_id": contact_id,
            "timeline": found,
            "rendered_at": utc_naive(datetime.now(UTC)),
        }
    )


@router.get(CAMPAIGNS_PATH, response_class=HTMLResponse)
async def campaigns(
    request: Request,
    signed_in: Annotated[SignedIn, Depends(signed_in_page)],
    done: Annotated[str, Query(max_length=32)] = "",
    program: Annotated[str, Query(max_length=64)] = "",
    run: Annotated[str, Query(max_length=250)] = "",
) -> HTMLResponse:
    """The Campaigns page, for signed-in Airflow users (the UI's session cookie or a bearer token);
    a browser without a valid session is sent to the login page. Which DAGs are paused is asked of
    Airflow's API as the user."""
    paused = await actions.api_for(request, signed_in).paused()
    html = await run_in_threadpool(
        lambda: campaigns_page(get_engine(state_url()), paused=paused, done=notice(done, program, run, paused))
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get(CONTACT_PATH, response_class=HTMLResponse, dependencies=[Depends(signed_in_page)])
async def contact(contact_id: str = Query("", max_length=64)) -> HTMLResponse:
    """Why a contact did or did not get a message: its timeline across every program, for
    signed-in Airflow users. Looked up by contact id only; addresses are shown masked."""
    html = await run_in_threadpool(lambda: contact_page(get_engine(state_url()), contact_id.strip()))
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
