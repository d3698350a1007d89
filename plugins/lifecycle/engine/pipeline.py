"""The stages of one program run over a database, without Airflow.

The DAG's operators, the dry run, the simulation and the benchmark all call these, so every path
runs the same code. Each stage is one transaction (sending commits per claimed chunk) and is
idempotent; :func:`decide` runs the deciding stages on one connection, in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from lifecycle import config, paths
from lifecycle.channels import registry
from lifecycle.channels.base import Subscription, Transport
from lifecycle.channels.sms import SMS_CHANNEL
from lifecycle.engine import ad_audiences, capping, dispatch, funnel, journeys, suppression
from lifecycle.engine import write_back as activities
from lifecycle.engine.scope import RunScope
from lifecycle.messages.links import LinkBuilder
from lifecycle.model.db import utc_naive
from lifecycle.model.ledger import Status

AfterRun = Callable[[Engine, RunScope], object]
"""What an in-process run does after its last stage (e.g. store the Campaigns page's figures)."""


def load_scope(program_id: str, run_id: str, as_of: datetime) -> tuple[RunScope, dict[str, config.Program]]:
    """Read the program, the policy and named segments; returns the run scope and every valid
    program (capping needs the others' priorities and journeys)."""
    catalog = config.load_segments()
    programs, _errors = config.load_all_programs()
    program = programs.get(program_id) or config.load_program(
        paths.config_dir() / "programs" / f"{program_id}.yml", catalog
    )
    scope = RunScope(
        program=program, policy=config.load_policy(), catalog=catalog.parsed, run_id=run_id, as_of=utc_naive(as_of)
    )
    return scope, programs


def decide(conn: Connection, run: RunScope, programs: Mapping[str, config.Program]) -> None:
    """Every stage before sending, in order, on ``conn``: evaluate the segment, enroll and exit,
    plan due steps, suppress, cap. What is left ``ready`` is what the run would send."""
    journeys.evaluate_segment(conn, run)
    journeys.run_enrollment(conn, run)
    journeys.plan_due_steps(conn, run)
    suppression.suppress(conn, run)
    capping.cap(conn, run, programs)


def sweep(engine: Engine, run: RunScope, programs: Mapping[str, config.Program]) -> dict[str, int]:
    """The due-steps sweep of one program at ``run.as_of``, in one transaction: the deciding stages
    for the enrollments that have a step due, without the entry segment. Exits (goal, exit rules,
    leaving the segment) are checked for those enrollments only; then planning, suppression (which
    also releases deferrals whose quiet hours are over) and caps run unchanged, since each reads
    only the program's planned messages. What is left ``ready`` is sent by :func:`prepare`
    (``adopt=False``) and :func:`send` under the sweep's run id (:func:`~lifecycle.engine.scope.sweep_run_id`)."""
    with engine.begin() as conn:
        exited = journeys.exit_enrollments(conn, run, among=journeys.any_step_due(run.program, run.as_of))
        planned = journeys.plan_due_steps(conn, run)
        suppressed = suppression.suppress(conn, run)
        capped = capping.cap(conn, run, programs)
    return {
        **{f"exited_{reason}": n for reason, n in exited.items()},
        Status.PLANNED: planned,
        "released": suppressed.get("released", 0),
        **capped,
    }


def evaluate(engine: Engine, run: RunScope) -> int:
    with engine.begin() as conn:
        return journeys.evaluate_segment(conn, run)


def enroll_and_exit(engine: Engine, run: RunScope) -> dict[str, int]:
    with engine.begin() as conn:
        return journeys.run_enrollment(conn, run)


def plan(engine: Engine, run: RunScope) -> int:
    with engine.begin() as conn:
        return journeys.plan_due_steps(conn, run)


def suppress(engine: Engine, run: RunScope) -> dict[str, int]:
    with engine.begin() as conn:
        return suppression.suppress(conn, run)


def cap(engine: Engine, run: RunScope, programs: Mapping[str, config.Program]) -> dict[str, int]:
    with engine.begin() as conn:
        return capping.cap(conn, run, programs)


def prepare(engine: Engine, run: RunScope, limit: int | None = None, *, adopt: bool = True) -> list[int]:
    return dispatch.prepare_batches(engine, run.program.id, run.run_id, run.policy.send_batch_size, limit, adopt=adopt)


def send(
    engine: Engine,
    run: RunScope,
    batch: int,
    transport: Transport,
    *,
    links: LinkBuilder,
    simulate: bool = False,
) -> dict[str, int]:
    brand = run.policy.brand.model_dump()
    service = (run.program.id,) if run.program.is_service else ()
    purpose = run.program.consent_purpose
    return dispatch.send_batch(
        engine,
        run.run_id,
        batch,
        transport,
        links=links,
        brand=brand,
        simulate=simulate,
        service_programs=service,
        rules=dispatch.SendRules(
            purpose,
            run.policy.basis_for(purpose),
            run.policy.quiet_hours,
            at=run.as_of if simulate else None,
            regions={channel: run.policy.region_bases(channel, purpose) for channel in registry.names()},
            topic=suppression.opted_out_topic(run),
        ),
        max_segments={SMS_CHANNEL.name: run.policy.sms_max_segments},
        subscription=Subscription.of(run.policy, run.program),
        program=run.program.id,
    )


def log_kpis(engine: Engine, run: RunScope) -> dict[str, float]:
    with engine.begin() as conn:
        return funnel.summarize(funnel.log_funnel(conn, run))


def write_back(engine: Engine, run: RunScope, post: activities.Post) -> dict[str, int]:
    """Post the program's sent touches as CRM activities under the policy's ``write_back`` (nothing
    without one); see :mod:`lifecycle.engine.write_back`."""
    rule = run.policy.write_back
    if rule is None:
        return {}
    program = run.program
    return activities.write_back(engine, program.id, program.name, rule.channels, run.as_of, rule.within, post)


def sync_audience(engine: Engine, run: RunScope, upload: ad_audiences.Upload) -> dict[str, int]:
    """Bring the program's ad audience (``audience_sync``) to its eligible members (nothing without
    one); see :mod:`lifecycle.engine.ad_audiences`."""
    return ad_audiences.sync_audience(engine, run, upload)


def run_program(
    engine: Engine,
    run: RunScope,
    programs: Mapping[str, config.Program],
    transport: Transport,
    *,
    links: LinkBuilder,
    simulate: bool = False,
    then: AfterRun | None = None,
) -> dict[str, Any]:
    """Every stage of one run in order, in-process (simulation, benchmark). ``simulate`` records
    what the transport accepted as ``dry_run`` (the developer tools' simulated sends); ``then`` runs
    after ``log_kpis`` (the DAG's ``log_kpis`` task then stores the program's Campaigns page figures:
    pass :func:`lifecycle.reporting.figures.refresh_run` to do the same; the engine does not reach
    up into reporting)."""
    with engine.begin() as conn:
        decide(conn, run, programs)
    _send_prepared(engine, run, transport, links=links, simulate=simulate, adopt=True)
    logged = log_kpis(engine, run)
    if then is not None:
        then(engine, run)
    return logged


def run_sweep(
    engine: Engine,
    run: RunScope,
    programs: Mapping[str, config.Program],
    transport: Transport,
    *,
    links: LinkBuilder,
    simulate: bool = False,
    then: AfterRun | None = None,
) -> dict[str, int]:
    """One program's due-steps sweep in-process (tests, benchmark): :func:`sweep`, then the batches
    it prepares sent as its DAG's ``send`` tasks would, then ``then`` when it sent any (as the DAG's
    ``refresh_figures`` task). ``run.run_id`` is the sweep's ledger run id."""
    decided = sweep(engine, run, programs)
    if _send_prepared(engine, run, transport, links=links, simulate=simulate, adopt=False) and then is not None:
        then(engine, run)
    return decided


def _send_prepared(
    engine: Engine, run: RunScope, transport: Transport, *, links: LinkBuilder, simulate: bool, adopt: bool
) -> int:
    """Prepare the run's batches and send each, as the DAG's ``send`` tasks would; returns how
    many batches were sent."""
    batches = prepare(engine, run, adopt=adopt)
    for batch in batches:
        send(engine, run, batch, transport, links=links, simulate=simulate)
    return len(batches)
